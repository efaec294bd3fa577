"""The `cupy` and `cupyx` module objects of the CuPy stand-in (the arrays and the counting are in
cupy_contract.py, the names in cupy_names.py), and `installed()`, which puts them where `import cupy`
looks: tinymix's backend, and lesson 14's `import cupy`, then take the same CuPy path as on a GPU.

    with installed():
        backend.set_backend("cupy")
"""
import contextlib
import sys
import types

import numpy

import cupy_contract as contract
from cupy_contract import LEDGER, NAMESPACES, POOL, _argument, _operand, _record, _result, _transfer, ndarray
from cupy_names import (FUNCTIONS, HOST_INPUTS, LINALG, RANDOM_METHODS, SYNCING, TYPES, UFUNCS)

__version__ = "14.2.0+numpy-emulation"


def _function(name, fn, host_ok=False):
    """A CuPy function computed by NumPy's `fn`: device arrays in and out, host arrays refused (or
    uploaded, where CuPy's function copies them over), `out=` written in place."""
    kernel = isinstance(fn, numpy.ufunc)

    def call(*args, **kwargs):
        _record(name, args, kwargs)
        if name in SYNCING:
            _transfer(name)
        out = kwargs.get("out")
        source = next((a for a in args if isinstance(a, ndarray)), None)
        args = [_operand(a) for a in args] if kernel else [_argument(a, host_ok) for a in args]
        kwargs = {k: _argument(v, host_ok) for k, v in kwargs.items()}
        result = fn(*args, **kwargs)
        return out if isinstance(out, ndarray) else _result(result, name, source)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"cupy.{name}, computed by numpy.{getattr(fn, '__name__', name)}"
    return call


def _upload(x, dtype=None, copy=True):
    """Host data as a new device array; a (nested) sequence of device arrays of one shape is joined on
    the device, as CuPy does; anything that mixes them would need an implicit conversion."""
    if isinstance(x, ndarray):
        return x.astype(dtype, copy=copy) if dtype is not None else (x.copy() if copy else x)
    if isinstance(x, (list, tuple)) and x and _has_device(x):
        leaves = _flatten(x)
        if not all(isinstance(v, ndarray) for v in leaves) or len({v.shape for v in leaves}) != 1:
            raise TypeError(contract._IMPLICIT)
        joined = numpy.stack([v._a for v in leaves]).reshape(numpy.shape(_structure(x)) + leaves[0].shape)
        return contract._wrap(joined.astype(dtype, copy=False) if dtype is not None else joined)
    LEDGER.uploads["asarray" if isinstance(x, numpy.ndarray) else "asarray of Python data"] += 1
    return contract._wrap(numpy.array(x, dtype=dtype, copy=True))


def _has_device(x):
    return any(isinstance(v, ndarray) or (isinstance(v, (list, tuple)) and _has_device(v)) for v in x)


def _flatten(x):
    return [leaf for v in x for leaf in (_flatten(v) if isinstance(v, (list, tuple)) else [v])]


def _structure(x):
    return [_structure(v) if isinstance(v, (list, tuple)) else 0 for v in x]


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    _record("array", (obj,), {"dtype": dtype} if dtype is not None else {})
    out = _upload(obj, dtype, copy=True)
    return out if out.ndim >= ndmin else out.reshape((1,) * (ndmin - out.ndim) + out.shape)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    _record("asarray", (a,), {"dtype": dtype} if dtype is not None else {})
    if isinstance(a, ndarray) and (dtype is None or numpy.dtype(dtype) == a.dtype) and not copy:
        return a
    return _upload(a, dtype, copy=True)


def asanyarray(a, dtype=None, order=None, *, blocking=False):
    return asarray(a, dtype)


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    _record("asnumpy", (a,), {})
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return numpy.asarray(a, order=order)


def _empty(name, like):
    """Uninitialised device memory: NaN where the dtype can hold it, so that reading it shows."""
    def empty(*args, **kwargs):
        _record(name, args, kwargs)
        args = [_argument(a, False) for a in args]
        result = (numpy.empty_like if like else numpy.empty)(*args, **kwargs)
        if result.dtype.kind in "fc":
            result.fill(numpy.nan)
        return contract._wrap(result)
    empty.__name__ = empty.__qualname__ = name
    return empty


def get_array_module(*args):
    return cupy if any(isinstance(a, ndarray) for a in args) else numpy


def get_default_memory_pool():
    return POOL


# ---- cupy.random --------------------------------------------------------------------------------------

class Generator:
    """cupy.random.Generator with NumPy's bit generator: draws land on the device."""

    def __init__(self, seed=None):
        self._rng = numpy.random.default_rng(seed)


def _random_method(name):
    def method(self, *args, **kwargs):
        _record(f"random.Generator.{name}", args, kwargs)
        return _result(numpy.asarray(getattr(self._rng, name)(*args, **kwargs)))
    method.__name__ = method.__qualname__ = name
    return method


for _name in RANDOM_METHODS:
    setattr(Generator, _name, _random_method(_name))


def default_rng(seed=None):
    _record("random.default_rng", (seed,), {})
    return Generator(seed)


# ---- cupy.cuda, cupy._core.syncdetect, cupyx -------------------------------------------------------------

class _Synchronizing:
    def synchronize(self):
        LEDGER.sync_marks.append(LEDGER.total())


class Device(_Synchronizing):
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Stream(_Synchronizing):
    def __init__(self, null=False, non_blocking=False, ptds=False):
        pass


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def runtimeGetVersion():          # CUDA versions read as 0: no CUDA is behind the stand-in
        return 0

    @staticmethod
    def driverGetVersion():
        return 0

    @staticmethod
    def getDeviceProperties(device):
        return {"name": b"CuPy stand-in (NumPy on the CPU)"}


@contextlib.contextmanager
def allow_synchronize(allow):
    """Inside, a transfer raises DeviceSynchronized unless `allow` (CuPy's syncdetect)."""
    previous, contract._SYNC["allowed"] = contract._SYNC["allowed"], allow
    try:
        yield
    finally:
        contract._SYNC["allowed"] = previous


def scatter_add(a, slices, value):
    _record("cupyx.scatter_add", (a, slices, value), {})
    a.scatter_add(slices, value)


def _module(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _build():
    space = {name: getattr(numpy, name) for name in TYPES}
    for name in UFUNCS | FUNCTIONS:
        space[name] = _function(name, getattr(numpy, name), host_ok=name in HOST_INPUTS)
    space.update(take=_function("take", contract.take, host_ok=True), array=array, asarray=asarray,
                 asanyarray=asanyarray, asnumpy=asnumpy, empty=_empty("empty", False),
                 empty_like=_empty("empty_like", True), get_array_module=get_array_module,
                 get_default_memory_pool=get_default_memory_pool, ndarray=ndarray)
    linalg = {name: _function(f"linalg.{name}", getattr(numpy.linalg, name)) for name in LINALG}
    NAMESPACES["numpy"].update(space)
    NAMESPACES["numpy.linalg"].update(linalg)
    syncdetect = _module("cupy._core.syncdetect", allow_synchronize=allow_synchronize,
                         DeviceSynchronized=contract.DeviceSynchronized)
    cuda = _module("cupy.cuda", Device=Device, Stream=Stream, runtime=_Runtime(),
                   get_current_stream=lambda: Stream(), is_available=lambda: True)
    module = _module("cupy", __version__=__version__, **space, linalg=_module("cupy.linalg", **linalg),
                     random=_module("cupy.random", default_rng=default_rng, Generator=Generator),
                     cuda=cuda, _core=_module("cupy._core", syncdetect=syncdetect))
    extras = _module("cupyx", scatter_add=scatter_add, allow_synchronize=allow_synchronize)
    return module, extras


cupy, cupyx = _build()


def install():
    """From now on `import cupy` and `import cupyx` give the stand-ins."""
    sys.modules.update(cupy=cupy, cupyx=cupyx)


@contextlib.contextmanager
def installed():
    """`import cupy` and `import cupyx` give the stand-ins inside the block (the real ones, if any,
    come back after it)."""
    saved = {name: sys.modules.get(name) for name in ("cupy", "cupyx")}
    install()
    try:
        yield cupy
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
