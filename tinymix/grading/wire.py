"""Values between the grader and a submission's process: JSON for structure, safetensors for arrays.

Nothing is pickled: unpickling runs code, and a submission's process is not trusted. A value becomes
a JSON tree in which every array is a reference into one safetensors blob (raw bytes, shape and
dtype), carried in the same JSON line as base64 text.

Inputs (grader -> submission) may hold arrays, `Leaf`s (arrays the function receives as Tensors
that require grad), `Generator`s (a NumPy generator's state), numbers, None and tuples, lists and
dicts of those. Outputs (submission -> grader) are decoded into `Array`, `Other` and `NoGrad`
objects, numbers, strings, None and containers: the grader only ever reads data.

This module runs in the submission's process too: it imports nothing of tinymix but the backend.
"""
import base64
import hashlib
import sys

import safetensors.numpy

from .. import backend

MAX_DEPTH = 12          # containers nested deeper than this are not followed
MAX_ITEMS = 100_000     # nor containers longer than this
TEXT = 200              # characters kept of a value that is no array, number or container
ANSWER_LIMIT = 16_000_000   # bytes of arrays one answer may hold


class TooLarge(ValueError):
    """An answer whose arrays hold more than ANSWER_LIMIT bytes: it is not sent."""


# ---- what travels --------------------------------------------------------------------------------------

class Leaf:
    """An input array that the function receives as a Tensor that requires grad; its gradient is
    part of the answer, under "d/d<name>"."""

    def __init__(self, array, name):
        self.array, self.name = array, name


class Generator:
    """An input numpy.random.Generator, sent as its bit generator's state (plain ints)."""

    def __init__(self, state):
        self.state = state


class NoGrad:
    """Stands for the gradient of an input that no gradient reached (`.grad` is None)."""

    def __init__(self, shape):
        self.shape = tuple(shape)


class Array:
    """An array as the grader received it: a host array, and what the function returned it as
    ("Tensor" or "array")."""

    def __init__(self, array, kind="array"):
        self.array, self.kind = array, kind

    @property
    def shape(self):
        return tuple(self.array.shape)


class Other:
    """A returned value of a type the grader does not read (a string, a module, a generator...):
    its type name and the start of its repr."""

    def __init__(self, type_name, text):
        self.type_name, self.text = type_name, text


# ---- encoding ------------------------------------------------------------------------------------------

def _tensor_type():
    """tinymix's Tensor class if this process has loaded it (A1 and A2 are graded without it)."""
    module = sys.modules.get("tinymix.tensor")
    return getattr(module, "Tensor", None)


def _is_array_like(value):
    return backend.is_array(value) or (hasattr(value, "dtype") and hasattr(value, "shape")
                                        and hasattr(value, "__array__"))


def _short_repr(value):
    try:
        text = repr(value)
    except BaseException:  # a submission's object may fail to print itself
        text = "<no repr>"
    return text if len(text) <= TEXT else text[:TEXT] + "..."


class _Encoder:
    def __init__(self):
        self.arrays = {}

    def array(self, value):
        host = backend.to_numpy_contiguous(value)
        if host.dtype.kind not in "biuf":
            return {"other": "array", "text": f"an array of dtype {host.dtype} and shape {tuple(host.shape)}"}
        key = str(len(self.arrays))
        self.arrays[key] = host
        return {"array": key}

    def value(self, value, depth=0):
        tensor = _tensor_type()
        if value is None or isinstance(value, bool):
            return value
        if type(value) in (int, float):           # numpy's float64 is a float subclass: an array below
            return value
        if type(value) is str:
            return {"str": value[:TEXT]}
        if isinstance(value, (Leaf, NoGrad, Generator)):
            return self.marker(value)
        if tensor is not None and isinstance(value, tensor):
            return {**self.array(value.data), "kind": "Tensor"}
        if depth >= MAX_DEPTH:
            return {"other": type(value).__name__, "text": "containers nested too deeply to read"}
        if type(value) in (list, tuple):
            if len(value) > MAX_ITEMS:
                return {"other": type(value).__name__, "text": f"{len(value)} items, too many to read"}
            return {type(value).__name__: [self.value(v, depth + 1) for v in value]}
        if type(value) is dict:
            if len(value) > MAX_ITEMS or not all(type(k) is str for k in value):
                return {"other": "dict", "text": _short_repr(value)}
            return {"dict": [[k, self.value(v, depth + 1)] for k, v in value.items()]}
        if _is_array_like(value):
            return {**self.array(value), "kind": "array"}
        return {"other": type(value).__name__, "text": _short_repr(value)}

    def marker(self, value):
        if isinstance(value, Leaf):
            return {**self.array(value.array), "leaf": value.name}
        if isinstance(value, NoGrad):
            return {"nograd": list(value.shape)}
        return {"generator": value.state}


def encode(value):
    """A JSON-able dict {"value": tree, "arrays": base64 safetensors} for `value`."""
    encoder = _Encoder()
    tree = encoder.value(value)
    size = sum(a.nbytes for a in encoder.arrays.values())
    if size > ANSWER_LIMIT:
        raise TooLarge(f"returned {megabytes(size)} of arrays, more than the {megabytes(ANSWER_LIMIT)} an answer "
                       "may hold")
    blob = safetensors.numpy.save(encoder.arrays) if encoder.arrays else b""
    return {"value": tree, "arrays": base64.b64encode(blob).decode("ascii")}


def megabytes(size):
    return f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def _arrays(packed):
    blob = base64.b64decode(packed["arrays"], validate=True)
    return safetensors.numpy.load(blob) if blob else {}


# ---- decoding ------------------------------------------------------------------------------------------

def decode(packed):
    """What a submission returned, as the grader reads it: Array, NoGrad, Other, numbers, str,
    None and containers of those. It comes from an untrusted process: anything but a tree that
    `encode` makes (a wrong type anywhere, nesting deeper than MAX_DEPTH, an unreadable blob, an
    array reference that is not in it) raises ValueError."""
    if type(packed) is not dict or set(packed) != {"value", "arrays"} or type(packed["arrays"]) is not str:
        raise ValueError("an answer is {value, arrays}")
    try:
        arrays = _arrays(packed)
    except Exception as error:  # the blob is the submission's bytes: whatever the reader makes of them
        raise ValueError(f"unreadable arrays ({type(error).__name__})") from None

    def text(item):
        if type(item) is not str:
            raise ValueError(f"a string was expected, got {type(item).__name__}")
        return item[:TEXT]

    def items(tree, depth):
        if type(tree) is not list or len(tree) > MAX_ITEMS:
            raise ValueError("a list of items was expected")
        return [value(v, depth + 1) for v in tree]

    def value(tree, depth=0):
        if tree is None or type(tree) in (bool, int, float):
            return tree
        if depth > MAX_DEPTH + 1 or type(tree) is not dict or len(tree) == 0:
            raise ValueError(f"unreadable value {_short_repr(tree)[:60]}")
        keys = set(tree)
        if "array" in tree and keys <= {"array", "kind"}:
            if type(tree["array"]) is not str or tree["array"] not in arrays:
                raise ValueError("an array that is not in the blob")
            return Array(arrays[tree["array"]], "Tensor" if tree.get("kind") == "Tensor" else "array")
        if keys == {"nograd"} and type(tree["nograd"]) is list and len(tree["nograd"]) <= 32 \
                and all(type(n) is int and 0 <= n < 1 << 40 for n in tree["nograd"]):
            return NoGrad(tree["nograd"])
        if keys == {"other", "text"}:
            return Other(text(tree["other"]), text(tree["text"]))
        if keys == {"str"}:
            return text(tree["str"])
        if keys == {"list"}:
            return items(tree["list"], depth)
        if keys == {"tuple"}:
            return tuple(items(tree["tuple"], depth))
        if keys == {"dict"} and type(tree["dict"]) is list and len(tree["dict"]) <= MAX_ITEMS:
            if not all(type(pair) is list and len(pair) == 2 for pair in tree["dict"]):
                raise ValueError("a dict is a list of [key, value] pairs")
            return {text(k): value(v, depth + 1) for k, v in tree["dict"]}
        raise ValueError(f"unreadable value {_short_repr(tree)[:60]}")
    return value(packed["value"])


class Inputs:
    """Decoded inputs, ready for a call: `args`, the `leaves` [(name, Tensor)] whose gradients are
    part of the answer, and every array given (`given`, in encoding order) to detect mutation."""

    def __init__(self, args, leaves, given):
        self.args, self.leaves, self.given = args, leaves, given

    def digests(self):
        """A digest of each given array as it is now (a Tensor's current .data)."""
        return [digest(a.data if hasattr(a, "requires_grad") else a) for a in self.given]


def decode_inputs(packed):
    """Fresh, writable inputs on the active backend (a new copy at every call)."""
    arrays = _arrays(packed)
    leaves, given = [], []

    def value(tree):
        if tree is None or type(tree) in (bool, int, float):
            return tree
        if "array" in tree:
            array = backend.from_numpy(arrays[tree["array"]].copy())
            if "leaf" in tree:
                from ..tensor import Tensor           # only assignments with Tensor inputs load it
                array = Tensor(array, requires_grad=True, dtype=array.dtype)
                leaves.append((tree["leaf"], array))
            given.append(array)
            return array
        if "generator" in tree:
            generator = backend.host_generator(0)
            generator.bit_generator.state = tree["generator"]
            return generator
        if "str" in tree:
            return tree["str"]
        if "list" in tree:
            return [value(v) for v in tree["list"]]
        if "tuple" in tree:
            return tuple(value(v) for v in tree["tuple"])
        if "dict" in tree:
            return {k: value(v) for k, v in tree["dict"]}
        raise ValueError(f"unreadable input {_short_repr(tree)}")
    return Inputs(tuple(value(packed["value"])), leaves, given)


def digest(array):
    """A short hash of an array's dtype, shape and bytes."""
    host = backend.to_numpy_contiguous(array)
    header = f"{host.dtype.str}{tuple(host.shape)}".encode()
    return hashlib.sha256(header + host.tobytes()).hexdigest()[:24]
