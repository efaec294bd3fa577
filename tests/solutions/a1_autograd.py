"""A correct A1, written as a student would: tinymix.backend (xp) only. The grader's tests use it."""
from tinymix.backend import xp


def unbroadcast(grad, shape):
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def mul_backward(g, a, b):
    return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)


def sum_backward(g, shape, axis=None, keepdims=False):
    if axis is None:
        axis = tuple(range(len(shape)))
    elif isinstance(axis, int):
        axis = (axis,)
    axis = tuple(a % len(shape) for a in axis)
    if not keepdims:
        g = xp.expand_dims(g, axis)
    return xp.broadcast_to(g, shape).copy()


def matmul_backward(g, a, b):
    da = g @ xp.swapaxes(b, -1, -2)
    db = xp.swapaxes(a, -1, -2) @ g
    return unbroadcast(da, a.shape), unbroadcast(db, b.shape)
