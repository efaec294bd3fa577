"""Comparing what a submission returned with what was expected, as data (wire.Array, NoGrad, Other,
numbers, containers), and saying where they first differ: the output's name, the index, the expected
and actual values, the largest difference, the tolerance; the dtype when it is the dtype that is
wrong; a clear word for a list where an array belongs."""
from .wire import Array, NoGrad, Other


class Mismatch(AssertionError):
    """A check failed; the message says where, with the expected and the actual values."""


def integer(value):
    """`value` as an int if it is one (a Python int or an integer array of shape ()), else None."""
    if type(value) is int:
        return value
    if isinstance(value, Array) and value.shape == () and value.array.dtype.kind in "iu":
        return int(value.array)
    return None


def describe(value):
    if isinstance(value, Array):
        what = "Tensor" if value.kind == "Tensor" else "array"
        return f"{what} of shape {value.shape} and dtype {value.array.dtype}"
    if isinstance(value, Other):
        return f"{value.text} ({value.type_name})"
    if isinstance(value, NoGrad):
        return "no gradient"
    if isinstance(value, (tuple, list)):
        return f"a Python {type(value).__name__} of {len(value)}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(value)}"
    return f"{value!r} ({type(value).__name__})"


def compare(expected, got, where="output", names=(), tolerance=(1e-6, 1e-5)):
    """Raise Mismatch naming the first place where `got` differs from `expected`. `names` name the
    values of a returned tuple ("dx", "dweight", ...)."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            raise Mismatch(f"{where}: expected a dict, got {describe(got)}")
        for key, value in expected.items():
            compare(value, got.get(key), key, tolerance=tolerance)
        return
    if isinstance(expected, (tuple, list)):
        _compare_sequence(expected, got, where, names, tolerance)
        return
    if expected is None:
        if got is not None:
            raise Mismatch(f"{where}: expected None, got {describe(got)}")
        return
    if isinstance(expected, NoGrad):
        if isinstance(got, NoGrad) or (isinstance(got, Array) and not got.array.any()):
            return
        expected = Array(got.array * 0 if isinstance(got, Array) else _zeros(expected.shape))
    if isinstance(got, NoGrad):
        if expected.array.any():
            raise Mismatch(f"{where}: no gradient reached this input. Did the computation leave the "
                           "graph (raw xp arrays or .data in the middle), or detach the wrong side?")
        return
    if type(expected) is int:
        if integer(got) != expected:
            raise Mismatch(f"{where}: expected the int {expected}, got {describe(got)}")
        return
    _compare_arrays(expected.array, _as_array(got, expected, where), where, tolerance)


def _compare_sequence(expected, got, where, names, tolerance):
    if not isinstance(got, (tuple, list)) or len(got) != len(expected):
        wanted = f" ({', '.join(names)})" if names else ""
        raise Mismatch(f"{where}: expected {len(expected)} values{wanted}, got {describe(got)}")
    for i, (e, g) in enumerate(zip(expected, got)):
        compare(e, g, names[i] if len(names) == len(expected) else f"{where}[{i}]", tolerance=tolerance)


def _zeros(shape):
    from .. import backend
    return backend.to_numpy(backend.xp.zeros(shape))


def _as_array(got, expected, where):
    """The host array of `got`, or a Mismatch that says what it is instead."""
    if isinstance(got, Array):
        return got.array
    if type(got) in (int, float) and expected.shape == ():
        return _number_array(got)
    if isinstance(got, (list, tuple)):
        raise Mismatch(f"{where}: expected an array of shape {expected.shape} ({expected.array.dtype}), got "
                       f"{describe(got)}. Return an xp array (e.g. xp.asarray(...), or the array your "
                       "operations made), not a Python list or tuple")
    raise Mismatch(f"{where}: expected an array of shape {expected.shape} ({expected.array.dtype}), "
                   f"got {describe(got)}")


def _number_array(number):
    from .. import backend
    return backend.to_numpy(number)


def _compare_arrays(expected, got, where, tolerance):
    if got.dtype.kind not in "biuf":
        raise Mismatch(f"{where}: expected numbers, got an array of dtype {got.dtype}")
    if expected.dtype.kind == "f" and got.dtype.kind in "biu":
        raise Mismatch(f"{where}: dtype {got.dtype}, expected {expected.dtype}: the result holds "
                       f"{'booleans' if got.dtype.kind == 'b' else 'integers'} where the answer has fractions "
                       "(an integer array made with zeros(..., dtype=int), astype, or a // division?)")
    if expected.dtype.kind in "iu" and got.dtype.kind not in "iu":
        raise Mismatch(f"{where}: dtype {got.dtype}, expected integers ({expected.dtype})")
    if got.shape != expected.shape:
        raise Mismatch(f"{where}: expected shape {expected.shape}, got shape {got.shape}")
    if expected.dtype.kind in "biu":
        wrong = (got != expected).reshape(-1)
        if wrong.any():
            i = int(wrong.argmax())
            raise Mismatch(f"{where}: expected {expected.reshape(-1)[i]}, got {got.reshape(-1)[i]} at "
                           f"{_index(i, expected.shape)} ({int(wrong.sum())} of {wrong.size} differ)")
        return
    atol, rtol = tolerance
    shape = expected.shape
    e, g = expected.astype("float64").reshape(-1), got.astype("float64").reshape(-1)
    # The absolute part counts at the scale of the expected values (an output of size 100 summed in
    # another order differs by more than one of size 1 at its near-zero entries), never below atol.
    atol = atol * max(1.0, float(abs(e).max(initial=0.0)))
    error = abs(g - e)
    error[g != g] = float("inf")                          # NaN
    excess = error - (atol + rtol * abs(e))
    if excess.size and excess.max() > 0:
        i = int(excess.argmax())
        at = f" at {_index(i, shape)}" if shape else ""
        note = (f"; your result is {got.dtype}, the expected {expected.dtype}: precision lost in a cast?"
                if got.dtype != expected.dtype else "")
        raise Mismatch(f"{where}: expected {e[i]:.8g}, got {g[i]:.8g}{at}; max |got - expected| = "
                       f"{float(error.max()):.3g} ({int((excess > 0).sum())} of {excess.size} values off by more "
                       f"than {atol:g} + {rtol:g} * |expected|){note}")


def _index(flat, shape):
    index, rest = [], flat
    for n in reversed(shape):
        index.append(rest % n)
        rest //= n
    return "index " + str(tuple(reversed(index)))
