"""Lesson 01's exercises: predicting gradients with two paths and with broadcasting."""
from exercises import Exercise, Wrong, array


def _autograd(values, make_loss):
    """Gradients of make_loss(*tensors) for float64 tensors holding `values`, from tinymix's engine."""
    from tinymix import Tensor
    from tinymix.backend import xp
    tensors = [Tensor(v, requires_grad=True, dtype=xp.float64) for v in values]
    make_loss(*tensors).backward()
    return [t.grad for t in tensors]


def _verify_two_paths(answer):
    (expected, _) = _autograd(([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]), lambda a, b: (a * b).sum() + a.sum())
    array(answer, expected, "dL/da")


def _verify_broadcast(answer):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong("answer with a pair (dL/da, dL/db)")
    da, db = _autograd(([[1.0], [2.0], [3.0]], [[1.0, 0.0, -1.0, 2.0]]), lambda a, b: (a * b).sum())
    array(answer[0], da, "dL/da")
    array(answer[1], db, "dL/db")


EXERCISES = {
    "01.1": Exercise(
        task="dL/da for L = sum(a * b) + sum(a)",
        verify=_verify_two_paths,
        hint="the product contributes b, the sum contributes 1 per entry, and the two ADD (+=)"),
    "01.2": Exercise(
        task="(dL/da, dL/db) for L = sum(a * b) with a (3, 1) and b (1, 4)",
        verify=_verify_broadcast,
        hint="dL/d(a*b) is all ones (3, 4); a was stretched along axis 1, so sum over axis 1 "
             "keeping it (shape (3, 1)) of ones * b; b was stretched along axis 0: sum over axis 0"),
}
