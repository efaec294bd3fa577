"""The machinery every task's checks share: what a task is (Task, Assignment, Compare, Verify), the
seeded inputs (rand, labels, leaf), and the ways a check reads a function's answer (differentiate,
gradcheck_backward). Inputs are float64 and drawn from host generators of their own: the package
docstring says why."""
import math
from dataclasses import dataclass
from typing import Callable

from .. import backend
from ..backend import xp
from ..gradcheck import gradcheck
from ..nn import Linear
from ..tensor import Tensor

F64 = xp.float64


# ---- the pieces of a task ---------------------------------------------------------------------------

class Mismatch(AssertionError):
    """A check failed; the message says where, with the expected and the actual values."""


@dataclass
class Compare:
    """`run(fn)` is called with the reference and with the student's function, on the same seed;
    the two results (arrays, tuples, dicts of output and gradients) must agree."""
    label: str
    run: Callable


@dataclass
class Verify:
    """`run(fn)` is called with the student's function alone and raises Mismatch if a property fails."""
    label: str
    run: Callable


@dataclass
class Task:
    id: str              # "A2.4": assignment A2, task 4
    reference: Callable  # the contract (def line + docstring) and the answer (the library)
    points: int
    todo: str            # what the stub's NotImplementedError says to do ...
    hint: str            # ... and how
    checks: Callable     # () -> [Compare | Verify, ...]
    outputs: tuple = ()  # names of the values a tuple-returning function gives, for failure messages

    @property
    def name(self):
        return self.reference.__name__

    @property
    def stub_message(self):
        return f"Task {self.id}: {self.todo} — hint: {self.hint}"


@dataclass
class Assignment:
    id: str
    title: str
    filename: str        # the student file in lessons/assignments/
    tasks: list

    @property
    def points(self):
        return sum(task.points for task in self.tasks)


# ---- inputs and outputs of checks -------------------------------------------------------------------

def rand(shape, seed, scale=1.0, dtype="float64"):
    """N(0, scale^2) of `shape`, from a host generator of its own (same values on every backend)."""
    values = backend.host_generator(seed).standard_normal(shape) * scale
    return backend.from_numpy(backend.to_numpy(values).astype(dtype))


def labels(n, classes, seed):
    """n integer class labels in [0, classes), from a host generator of its own."""
    return backend.from_numpy(backend.host_generator(seed).integers(classes, size=n))


def leaf(array):
    """A Tensor that requires grad and keeps the array's dtype (Tensor() alone makes float64 float32)."""
    return Tensor(array, requires_grad=True, dtype=array.dtype)


class NoGrad:
    """Stands for the gradient of an input that no gradient reached (`.grad` is None)."""

    def __init__(self, shape):
        self.shape = shape


def _projection(shape):
    """A fixed, non-trivial r: gradients are those of sum(out * r), so every output element counts."""
    size = math.prod(shape)
    return xp.cos(xp.arange(size, dtype=F64) * 1.3 + 0.5).reshape(shape)


def differentiate(out, **inputs):
    """{"output": out, "d/d<name>": gradient of sum(out * r) w.r.t. each named input Tensor}."""
    if not isinstance(out, Tensor):
        raise Mismatch(f"returned {type(out).__name__}, expected a Tensor: gradients flow only through "
                       "Tensor operations")
    if out.requires_grad:
        (out * Tensor(_projection(out.shape), dtype=F64)).sum().backward()
    result = {"output": out.data}
    for name, t in inputs.items():
        result[f"d/d{name}"] = t.grad if t.grad is not None else NoGrad(t.shape)
    return result


def gradcheck_backward(forward, backward, **inputs):
    """tinymix.gradcheck (central differences) on an op whose forward is the library's and whose
    backward is the function under test. forward(**arrays) -> array; backward(g, **arrays) -> one
    gradient per input, in the order given. The op is made as functional.py makes its fused ops."""
    names = list(inputs)

    def op(*tensors):
        arrays = dict(zip(names, (t.data for t in tensors)))

        def backward_fn(g):
            grads = backward(g, **arrays)
            grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
            if len(grads) != len(names):
                raise Mismatch(f"returned {len(grads)} gradients, expected {len(names)} ({', '.join(names)})")
            for name, t, grad in zip(names, tensors, grads):
                grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad)
                if grad.shape != t.shape:
                    raise Mismatch(f"the gradient of {name} has shape {grad.shape}, expected {t.shape}")
                t._accumulate(grad)
        return Tensor._make(xp.asarray(forward(**arrays)), tensors, backward_fn)

    try:
        gradcheck(op, *(leaf(array) for array in inputs.values()))
    except Mismatch:
        raise
    except AssertionError as error:
        message = str(error)
        for i, name in enumerate(names):
            message = message.replace(f"input {i} ", f"input {name} ")
        raise Mismatch(f"central differences disagree: {message}") from None


def _linear(weight, bias=None):
    """A library Linear that uses the given Tensors as its weight (out, in) and bias, so gradients
    reach them and float64 stays float64."""
    out_features, in_features = weight.shape
    layer = Linear(in_features, out_features, bias=bias is not None)
    layer.weight, layer.bias = weight, bias
    return layer


def _shape(shape):
    return str(tuple(shape))
