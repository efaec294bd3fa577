"""A1: autograd primitives and broadcasting gradients. Student file: lessons/assignments/a1_autograd.py."""
from ..backend import xp
from ..tensor import Tensor
from .checks import Compare, Verify, _shape, gradcheck_backward, leaf, rand


# ---- A1: autograd primitives and broadcasting gradients ---------------------------------------------

def unbroadcast(grad, shape):
    """Sum `grad` back to `shape`, the shape of an input that broadcasting stretched or extended.

    grad: array of the broadcast (output) shape; shape: a tuple that broadcasts to grad.shape.
    Returns an array of exactly `shape`: that input's gradient."""
    x = leaf(xp.zeros(shape, dtype=grad.dtype))
    (x + Tensor(xp.zeros(grad.shape, dtype=grad.dtype), dtype=grad.dtype)).backward(grad)
    return x.grad


def _unbroadcast_checks():
    cases = [((2, 3, 4), (3, 4)), ((2, 3, 4), (1, 4)), ((2, 3, 4), (3, 1)), ((2, 3, 4), (2, 1, 4)),
             ((2, 3, 4), ()), ((2, 3, 4), (1, 1, 1)), ((3, 4), (3, 4)), ((5, 4, 3), (4, 1))]
    checks = [Compare(f"grad {_shape(g)} -> shape {s}", lambda fn, g=g, s=s: fn(rand(g, i), s))
              for i, (g, s) in enumerate(cases)]
    checks.append(Verify("gradcheck of broadcast_to(x (3, 1), (2, 3, 4))", lambda fn: gradcheck_backward(
        lambda x: xp.broadcast_to(x, (2, 3, 4)) * 1.0, lambda g, x: fn(g, x.shape), x=rand((3, 1), 9))))
    return checks


def mul_backward(g, a, b):
    """Gradients of out = a * b (NumPy broadcasting) from the upstream gradient g = dL/dout.

    g: array of out's shape; a, b: the inputs. Returns (da, db) with the shapes of a and b."""
    A, B = leaf(a), leaf(b)
    (A * B).backward(g)
    return A.grad, B.grad


def _mul_checks():
    cases = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (3,)), ((2, 3), (1,))]
    checks = []
    for i, (sa, sb) in enumerate(cases):
        def run(fn, sa=sa, sb=sb, i=i):
            a, b = rand(sa, 10 * i), rand(sb, 10 * i + 1)
            return fn(rand((a * b).shape, 10 * i + 2), a, b)
        checks.append(Compare(f"a {_shape(sa)} * b {_shape(sb)}", run))
    for sa, sb in cases[1:3]:
        def run_gradcheck(fn, sa=sa, sb=sb):
            gradcheck_backward(lambda a, b: a * b, lambda g, a, b: fn(g, a, b), a=rand(sa, 3), b=rand(sb, 4))
        checks.append(Verify(f"gradcheck of a {_shape(sa)} * b {_shape(sb)}", run_gradcheck))
    return checks


def sum_backward(g, shape, axis=None, keepdims=False):
    """Gradient of out = x.sum(axis=axis, keepdims=keepdims) from g = dL/dout.

    shape: x's shape; axis: None (all axes), an int (may be negative) or a tuple of ints.
    Returns dx, an array of `shape`."""
    x = leaf(xp.zeros(shape, dtype=g.dtype))
    x.sum(axis=axis, keepdims=keepdims).backward(g)
    return x.grad


def _sum_checks():
    cases = [((3, 4), None, False), ((3, 4), 0, False), ((3, 4), -1, True), ((2, 3, 4), (0, 2), False),
             ((2, 3, 4), 1, True), ((2, 3, 4), None, True)]
    checks = []
    for i, (shape, axis, keepdims) in enumerate(cases):
        def run(fn, shape=shape, axis=axis, keepdims=keepdims, i=i):
            g = rand(xp.zeros(shape).sum(axis=axis, keepdims=keepdims).shape, i)
            return fn(g, shape, axis, keepdims)
        checks.append(Compare(f"x {_shape(shape)}, axis={axis}, keepdims={keepdims}", run))
    checks.append(Verify("gradcheck of x (2, 3, 4).sum(axis=(0, 2))", lambda fn: gradcheck_backward(
        lambda x: xp.asarray(x.sum(axis=(0, 2))), lambda g, x: fn(g, x.shape, (0, 2), False),
        x=rand((2, 3, 4), 5))))
    return checks


def matmul_backward(g, a, b):
    """Gradients of out = a @ b, where a (..., n, k) and b (..., k, m) may carry broadcast batch axes
    (a 2-D b is one weight shared by every batch element). g: (..., n, m).
    Returns (da, db) with the shapes of a and b."""
    A, B = leaf(a), leaf(b)
    (A @ B).backward(g)
    return A.grad, B.grad


def _matmul_checks():
    cases = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((3, 4), (2, 4, 5)),
             ((2, 1, 3, 4), (5, 4, 2))]
    checks = []
    for i, (sa, sb) in enumerate(cases):
        def run(fn, sa=sa, sb=sb, i=i):
            a, b = rand(sa, 10 * i), rand(sb, 10 * i + 1)
            return fn(rand((a @ b).shape, 10 * i + 2), a, b)
        checks.append(Compare(f"a {_shape(sa)} @ b {_shape(sb)}", run))
    checks.append(Verify("gradcheck of a (2, 3, 4) @ b (4, 2)", lambda fn: gradcheck_backward(
        lambda a, b: a @ b, lambda g, a, b: fn(g, a, b), a=rand((2, 3, 4), 7), b=rand((4, 2), 8))))
    return checks
