"""What a task is and how its checks are made (instructor side): Task, Assignment, Case, Draw, and the
central differences that some checks compare with.

A check is a `Case`: inputs made here, in the grader's process. The submission's process receives
only the inputs (tinymix.grading.wire carries them); what its function returns comes back as data,
and the grader compares it here with the expected answer: by default the reference function's on the
same inputs, or a value the case gives (central differences, a library Mixture's routes), or a
property the case's `judge` checks.

Inputs are float64 (a wrong formula then differs by far more than the 1e-6 tolerance) and drawn from
host generators of their own (`Draw`), so a seed gives the same case on NumPy and on CuPy. An
instructor's secret seed draws other values of the same shapes: the hidden cases.
"""
from dataclasses import dataclass
from typing import Callable

from .. import backend
from ..backend import xp
from ..grading.compare import Mismatch
from ..grading.wire import Generator, Leaf, NoGrad
from ..nn import Linear
from ..tensor import Tensor

F64 = xp.float64
ATOL, RTOL = 1e-6, 1e-5                  # against the reference: rounding never fails a right answer
GRADCHECK_ATOL, GRADCHECK_RTOL = 1e-6, 1e-4   # against central differences (eps 1e-6, float64)
REFERENCE = "the reference"
ARRAYS = ("backend",)                                        # what A1 and A2 may import of tinymix
TENSORS = ("backend", "kernels", "tensor", "functional", "nn", "gradient_check")   # ... A3 to A5 (kernels: how functional computes on the CPU)

__all__ = ["F64", "ATOL", "RTOL", "REFERENCE", "ARRAYS", "TENSORS", "Mismatch", "Case", "Task",
           "Assignment", "Draw", "Leaf", "Generator", "NoGrad", "gradcheck_case", "central_differences",
           "leaf", "rand"]


@dataclass
class Case:
    """One check: call the function on `args` (arrays, Leaf, Generator, numbers, containers).
    gradients: the answer is the output and the gradients of the Leaf inputs (calling.call);
    repeat: call it this many times on the same args and collect the results;
    expected: REFERENCE (the reference function on the same args) or the expected value itself;
    judge: judge(expected, got) raises Mismatch, instead of comparing values;
    against: what a value mismatch is reported against ("central differences")."""
    label: str
    args: tuple
    gradients: bool = False
    repeat: int = 0
    expected: object = REFERENCE
    judge: Callable = None
    tolerance: tuple = (ATOL, RTOL)
    against: str = ""


@dataclass
class Task:
    id: str              # "A2.4": assignment A2, task 4
    reference: Callable  # the contract (def line + docstring) and the answer (the library)
    points: int
    todo: str            # what the stub's NotImplementedError says to do ...
    hint: str            # ... and how
    cases: Callable      # (Draw) -> [Case, ...]
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
    lessons: str         # the lessons that prepare for it
    library: tuple       # the tinymix modules a submission may import (ARRAYS or TENSORS)
    reason: str          # why the others are refused: they hold this assignment's answers
    withheld: tuple      # functions of those modules that are themselves answers ("functional.attention")
    tasks: list

    @property
    def points(self):
        return sum(task.points for task in self.tasks)

    @property
    def after(self):
        """"after lessons 01-02" / "after lesson 03": when to do it."""
        return f"after lesson{'s' * ('-' in self.lessons)} {self.lessons}"


# ---- inputs --------------------------------------------------------------------------------------------

class Draw:
    """Seeded inputs. seed None: the cases every student sees and can run; an instructor's secret
    seed: other values of the same shapes (hidden cases). Each input has its own stream `k`."""

    def __init__(self, seed=None):
        self.seed = seed

    def generator(self, k):
        return backend.host_generator(k if self.seed is None else [self.seed, k])

    def rand(self, shape, k, scale=1.0, dtype="float64"):
        """N(0, scale^2) of `shape` (the same values on every backend)."""
        values = self.generator(k).standard_normal(shape) * scale
        return backend.from_numpy(backend.to_numpy(values).astype(dtype))

    def labels(self, n, classes, k):
        """n integer class labels in [0, classes)."""
        return backend.from_numpy(self.generator(k).integers(classes, size=n))

    def state(self, k):
        """A Generator input: the state of generator `k`, sent as plain ints."""
        return Generator(self.generator(k).bit_generator.state)


def rand(shape, k, scale=1.0, dtype="float64"):
    """The visible cases' draw (Draw() with no seed)."""
    return Draw().rand(shape, k, scale, dtype)


def leaf(array):
    """A Tensor that requires grad and keeps the array's dtype (Tensor() alone makes float64 float32)."""
    return Tensor(array, requires_grad=True, dtype=array.dtype)


# ---- checks against central differences ----------------------------------------------------------------

def central_differences(forward, g, inputs, eps=1e-6):
    """The gradient of sum(g * forward(**inputs)) w.r.t. each input (float64 arrays), one element at
    a time: (L(x + eps e_i) - L(x - eps e_i)) / (2 eps). A tuple, in the order of `inputs`."""
    grads = []
    for name, array in inputs.items():
        grad = xp.zeros_like(array)
        for i in range(array.size):
            values = {k: v.copy() for k, v in inputs.items()}
            values[name].reshape(-1)[i] += eps
            plus = float((forward(**values) * g).sum())
            values[name].reshape(-1)[i] -= 2 * eps
            minus = float((forward(**values) * g).sum())
            grad.reshape(-1)[i] = (plus - minus) / (2 * eps)
        grads.append(grad)
    return tuple(grads)


def gradcheck_case(label, args, forward, g, inputs):
    """A case whose expected answer is central differences of sum(g * forward(**inputs)), not the
    reference: the function called on `args` must return one gradient per input, in that order."""
    grads = central_differences(forward, g, inputs)
    return Case(label, args, expected=grads[0] if len(grads) == 1 else grads,
                tolerance=(GRADCHECK_ATOL, GRADCHECK_RTOL), against="central differences")


def _linear(weight, bias=None):
    """A library Linear that uses the given Tensors as its weight (out, in) and bias, so gradients
    reach them and float64 stays float64."""
    out_features, in_features = weight.shape
    layer = Linear(in_features, out_features, bias=bias is not None)
    layer.weight, layer.bias = weight, bias
    return layer


def _shape(shape):
    return str(tuple(shape))
