"""CuPy's contract, computed with NumPy: stand-ins for the `cupy` and `cupyx` modules that run tinymix's
CuPy path on a machine without a GPU. Test code, not a backend: it is as slow as NumPy plus a wrapper.

    with cupy_contract.installed():      # `import cupy` / `import cupyx` now give the stand-ins
        backend.set_backend("cupy")
        ...
    cupy_contract.LEDGER.transfers       # Counter: device-to-host transfers by kind

What it keeps of CuPy (CuPy's "Differences between CuPy and NumPy" page, and cupy/_core/core.pyx,
_kernel.pyx, _scalar.pyx and _routines_indexing.pyx of CuPy 14):
- a device array is a type of its own (`ndarray`), never a numpy.ndarray;
- no implicit conversion to NumPy: numpy.asarray(x), numpy.array(x), x.__array__() raise TypeError;
- arithmetic takes device arrays and Python or NumPy scalars; a numpy.ndarray operand is a TypeError
  (a 0-d one is allowed in comparisons, as in CuPy), and so is a list;
- reductions, single-element indexing and allclose/array_equal give 0-d device arrays, not scalars;
- an out-of-range integer index array wraps around (NumPy raises IndexError);
- `empty` is uninitialised memory: here filled with NaN, so code that reads it shows;
- the ndarray methods and module functions are the ones CuPy has (the lists below; a function
  CuPy lacks, e.g. Generator.permutation, is an AttributeError here too).
What it counts (LEDGER), and what cupy._core.syncdetect.allow_synchronize(False) refuses:
- device-to-host transfers: .get(), .item(), .tolist(), .tobytes(), float(), int(), complex(), bool(),
  printing (repr, str, format), cupy.asnumpy, pickling; and the hidden ones, where CuPy reads a count
  back to size its result: boolean-mask indexing, nonzero, argwhere, flatnonzero, unique, compress;
- host-to-device copies (asarray of host data, host index arrays) are counted apart, in `uploads`;
- explicit synchronize() calls, in `sync_marks`; every function and method call, in `calls`.
What it does not model: time, asynchrony, device memory limits, other summation orders, and the
device generator's numbers (NumPy's are drawn).
"""
import warnings
from collections import Counter

import numpy

from cupy_memory import POOL
from cupy_names import METHODS, RETURN_ARRAYS, SYNCING, UFUNCS


class Ledger:
    """What the program asked of the device since the last reset."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.transfers = Counter()   # device -> host, by kind
        self.uploads = Counter()     # host -> device, by kind
        self.sync_marks = []         # at each explicit synchronize(): the transfers counted so far
        self.calls = Counter()       # (name, positional count, keyword names) -> calls

    def total(self):
        return sum(self.transfers.values())


LEDGER = Ledger()
NAMESPACES = {"numpy": {}, "numpy.linalg": {}}   # the stand-in's functions, filled by cupy_standin.py
_SYNC = {"allowed": True}
_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")
_SCALARS = (int, float, bool, complex, numpy.generic)


class DeviceSynchronized(RuntimeError):
    """Raised by a transfer inside allow_synchronize(False), as CuPy's syncdetect does."""


def _transfer(kind):
    if not _SYNC["allowed"]:
        raise DeviceSynchronized(f"device synchronization was detected: {kind}")
    LEDGER.transfers[kind] += 1


def _record(name, args, kwargs):
    LEDGER.calls[(name, len(args), tuple(sorted(kwargs)))] += 1


# ---- the device array ------------------------------------------------------------------------------

def _root(array):
    while isinstance(array.base, numpy.ndarray):
        array = array.base
    return array


def _wrap(array, source=None):
    """A device array around a NumPy array. A view of `source` keeps it alive as its `base`, as a
    CuPy view does (a graph that keeps a view keeps the viewed array)."""
    out = object.__new__(ndarray)
    out._a, out._base = array, None
    if source is not None and array.base is not None and _root(array) is _root(source._a):
        out._base = source if source._base is None else source._base
    POOL._track(array)
    return out


def _result(value, name="", source=None):
    """NumPy's result as CuPy gives it: arrays on the device, scalars as 0-d arrays."""
    if isinstance(value, numpy.ndarray):
        return _wrap(value, source)
    if isinstance(value, numpy.generic) or (name in RETURN_ARRAYS and isinstance(value, bool)):
        return _wrap(numpy.asarray(value))
    if isinstance(value, tuple):
        return tuple(_result(v) for v in value)
    if isinstance(value, list) and value and isinstance(value[0], numpy.ndarray):
        return [_result(v) for v in value]
    return value


def _operand(value):
    """An argument of an elementwise kernel: a device array, or a Python or NumPy scalar."""
    if type(value) is ndarray:
        return value._a
    if isinstance(value, _SCALARS) or value is None:
        return value
    raise TypeError(f"Unsupported type {type(value)}")


def _argument(value, host_ok):
    """An argument of a function: device arrays unwrapped, host arrays refused unless the function
    copies them over (then counted as an upload), anything else as it is."""
    if type(value) is ndarray:
        return value._a
    if isinstance(value, numpy.ndarray):
        if not host_ok:
            raise TypeError(f"Unsupported type {type(value)}: a host array where CuPy needs a device "
                            "array (move it with cupy.asarray)")
        LEDGER.uploads["host array argument"] += 1
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_argument(v, host_ok) for v in value)
    return value


def _method(name):
    def method(self, *args, **kwargs):
        _record(f"ndarray.{name}", args, kwargs)
        if name in SYNCING:
            _transfer(f"ndarray.{name}")
        result = getattr(self._a, name)(*[_argument(a, False) for a in args],
                                        **{k: _argument(v, False) for k, v in kwargs.items()})
        return self if result is self._a else _result(result, name, self)
    method.__name__ = method.__qualname__ = name
    return method


def _binary(ufunc, reflected=False, inplace=False):
    def op(self, other):
        if type(other) is ndarray or isinstance(other, _SCALARS):
            value = _operand(other)
        elif inplace or isinstance(other, numpy.ndarray):
            raise TypeError(f"Unsupported type {type(other)}")
        elif _should_use_rop(self, other):
            return NotImplemented
        else:  # NumPy asks __array_ufunc__, which turns down what CuPy does not take
            return ufunc(other, self) if reflected else ufunc(self, other)
        if inplace:
            ufunc(self._a, value, out=self._a)
            return self
        return _wrap(numpy.asarray(ufunc(value, self._a) if reflected else ufunc(self._a, value)))
    return op


def _compare(ufunc):
    def op(self, other):
        if isinstance(other, numpy.ndarray) and other.ndim == 0:
            other = other.item()      # CuPy takes a 0-d host array in a comparison
        if other is None or (type(other).__eq__ is object.__eq__ and not isinstance(other, ndarray)):
            if ufunc in (numpy.equal, numpy.not_equal):
                return _wrap(numpy.full(self._a.shape, ufunc is numpy.not_equal))
        return _binary(ufunc)(self, other)
    return op


def _should_use_rop(x, y):
    """CuPy's rule for an operand of another type: defer to it if it opted out of ufuncs, or has the
    higher __array_priority__ (a tie does NOT defer)."""
    marker = object()
    y_ufunc = getattr(y, "__array_ufunc__", marker)
    if y_ufunc is not marker:
        return y_ufunc is None
    return getattr(x, "__array_priority__", 0) < getattr(y, "__array_priority__", 0)


class ndarray:
    """A device array: a NumPy array that refuses to leave the device without being counted."""
    __slots__ = ("_a", "_base", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = numpy.full(shape, numpy.nan, dtype, order=order) if numpy.dtype(dtype).kind in "fc" \
            else numpy.empty(shape, dtype, order=order)
        self._base = None
        POOL._track(self._a)

    # ---- attributes -----------------------------------------------------------------------------
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T, self))
    mT = property(lambda self: _wrap(self._a.mT, self))
    real = property(lambda self: _wrap(self._a.real, self))
    imag = property(lambda self: _wrap(self._a.imag, self))
    base = property(lambda self: self._base)

    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    # ---- leaving the device: each one is a counted transfer ------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def get(self, stream=None, order="C", out=None, blocking=True):
        _transfer("get")
        if out is not None:
            out[...] = self._a
            return out
        return numpy.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        LEDGER.uploads["set"] += 1
        self._a[...] = arr

    def item(self):
        if self._a.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        _transfer("item")
        return self._a.item()

    def tolist(self):
        _transfer("tolist")
        return self._a.tolist()

    def tobytes(self, order="C"):
        _transfer("tobytes")
        return self._a.tobytes(order)

    def __float__(self):
        _transfer("float")
        return float(self._a)

    def __int__(self):
        _transfer("int")
        return int(self._a)

    def __complex__(self):
        _transfer("complex")
        return complex(self._a)

    def __bool__(self):
        if self._a.size == 0:
            warnings.warn("The truth value of an empty array is ambiguous. Returning False, but in "
                          "future this will result in an error.", DeprecationWarning, stacklevel=2)
            return False
        if self._a.size > 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous. "
                             "Use a.any() or a.all()")
        _transfer("bool")
        return bool(self._a)

    def __repr__(self):
        _transfer("repr")
        return repr(self._a)

    def __str__(self):
        _transfer("str")
        return str(self._a)

    def __format__(self, spec):
        _transfer("format")
        return format(self._a, spec)

    def __reduce__(self):
        _transfer("pickle")
        return _wrap, (self._a.copy(),)

    def __copy__(self):
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        return _wrap(self._a.copy())

    # ---- containers and indexing ----------------------------------------------------------------
    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def _index(self, index):
        """NumPy's index for a CuPy index: host arrays uploaded, integer arrays wrapped around,
        a boolean mask counted (CuPy reads the mask's count back), scalars kept as 0-d views."""
        parts = list(index) if isinstance(index, tuple) else [index]
        consumed = sum(0 if p is None or p is Ellipsis else
                       (p.ndim if getattr(p, "dtype", None) == bool else 1) for p in parts)
        axis, masked = 0, False
        for i, p in enumerate(parts):
            if type(p) is ndarray:
                p = p._a
            elif isinstance(p, (numpy.ndarray, list)):
                LEDGER.uploads["host index"] += 1
                p = numpy.asarray(p)
            if isinstance(p, numpy.ndarray) and p.dtype == bool:
                masked, axis = True, axis + p.ndim
            elif isinstance(p, numpy.ndarray) and p.dtype.kind in "iu":
                if axis < self._a.ndim and self._a.shape[axis] > 0:
                    p = p % self._a.shape[axis]       # CuPy wraps an out-of-range index around
                axis += 1
            elif p is Ellipsis:
                axis = self._a.ndim - (consumed - axis)
            elif p is not None:
                axis += 1
            parts[i] = p
        if masked:
            _transfer("boolean mask indexing")
        if not any(p is Ellipsis for p in parts):
            parts.append(Ellipsis)                    # an integer index gives a 0-d view, not a scalar
        return tuple(parts)

    def __getitem__(self, index):
        return _wrap(self._a[self._index(index)], self)

    def __setitem__(self, index, value):
        index = self._index(index)
        advanced = any(isinstance(p, numpy.ndarray) for p in index)
        if type(value) is ndarray:
            value = value._a
        elif isinstance(value, (numpy.ndarray, list, tuple)):
            value = numpy.asarray(value)
            if advanced:
                LEDGER.uploads["host values"] += 1
            elif value.ndim == 0:
                value = value[()]
            else:   # CuPy fills a basic slice from scalars only (gh-2079)
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        else:
            value = _operand(value)
        self._a[index] = value

    def scatter_add(self, slices, value):
        index = self._index(slices)
        if any(isinstance(p, numpy.ndarray) for p in index):
            value = _argument(value, True)
            numpy.add.at(self._a, index, value)
        else:
            self._a[index] += _operand(value)

    # ---- NumPy's protocols, answered as CuPy answers them ---------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__
        if name not in UFUNCS or method not in ("__call__", "reduce", "accumulate", "outer", "at"):
            return NotImplemented
        out = kwargs.get("out", ())
        for x in inputs + tuple(out):
            if not isinstance(x, (ndarray, numpy.ndarray) + _SCALARS):
                return NotImplemented
        _record(name if method == "__call__" else f"{name}.{method}", inputs, kwargs)
        if name in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal"):
            inputs = tuple(x.item() if isinstance(x, numpy.ndarray) and x.ndim == 0 else x for x in inputs)
        if out:
            kwargs["out"] = tuple(_operand(o) for o in out)
        result = getattr(ufunc, method)(*[_operand(x) for x in inputs], **kwargs)
        return out[0] if len(out) == 1 else _result(result)

    def __array_function__(self, func, types, args, kwargs):
        ours = NAMESPACES.get(func.__module__, {}).get(func.__name__)
        if ours is None or not all(issubclass(t, (ndarray, numpy.ndarray)) for t in types):
            return NotImplemented
        return ours(*args, **kwargs)


for _name in METHODS:
    setattr(ndarray, _name, _method(_name))


def _take_method(self, indices, axis=None, out=None):
    _record("ndarray.take", (indices,), {"axis": axis} if axis is not None else {})
    result = take(self._a, _argument(indices, True), axis, None if out is None else out._a)
    return out if out is not None else _result(result)


ndarray.take = _take_method
for _name, _ufunc in [("add", numpy.add), ("sub", numpy.subtract), ("mul", numpy.multiply),
                      ("truediv", numpy.true_divide), ("floordiv", numpy.floor_divide),
                      ("mod", numpy.remainder), ("pow", numpy.power), ("matmul", numpy.matmul),
                      ("and", numpy.bitwise_and), ("or", numpy.bitwise_or), ("xor", numpy.bitwise_xor),
                      ("lshift", numpy.left_shift), ("rshift", numpy.right_shift)]:
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_name}__", _binary(_ufunc, reflected=True))
    setattr(ndarray, f"__i{_name}__", _binary(_ufunc, inplace=True))
for _name, _ufunc in [("eq", numpy.equal), ("ne", numpy.not_equal), ("lt", numpy.less),
                      ("le", numpy.less_equal), ("gt", numpy.greater), ("ge", numpy.greater_equal)]:
    setattr(ndarray, f"__{_name}__", _compare(_ufunc))
for _name, _ufunc in [("neg", numpy.negative), ("pos", numpy.positive), ("abs", numpy.absolute),
                      ("invert", numpy.invert)]:
    setattr(ndarray, f"__{_name}__", lambda self, u=_ufunc: _wrap(numpy.asarray(u(self._a))))



def take(a, indices, axis=None, out=None):
    """CuPy's take, on NumPy arrays: an out-of-range index wraps around."""
    return numpy.take(a, indices, axis=axis, out=out, mode="wrap")
