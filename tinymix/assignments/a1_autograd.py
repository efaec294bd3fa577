"""A1: autograd primitives and broadcasting gradients. Student file: lessons/assignments/a1_autograd.py."""
from ..backend import xp
from ..tensor import Tensor
from .checks import Case, _shape, gradcheck_case, leaf


# ---- A1: autograd primitives and broadcasting gradients ---------------------------------------------

def unbroadcast(grad, shape):
    """Sum `grad` back to `shape`, the shape of an input that broadcasting stretched or extended.

    grad: array of the broadcast (output) shape; shape: a tuple that broadcasts to grad.shape.
    Returns an array of exactly `shape`: that input's gradient."""
    x = leaf(xp.zeros(shape, dtype=grad.dtype))
    (x + Tensor(xp.zeros(grad.shape, dtype=grad.dtype), dtype=grad.dtype)).backward(grad)
    return x.grad


def _unbroadcast_cases(draw):
    cases = [((2, 3, 4), (3, 4)), ((2, 3, 4), (1, 4)), ((2, 3, 4), (3, 1)), ((2, 3, 4), (2, 1, 4)),
             ((2, 3, 4), ()), ((2, 3, 4), (1, 1, 1)), ((3, 4), (3, 4)), ((5, 4, 3), (4, 1))]
    checks = [Case(f"grad {_shape(g)} -> shape {s}", (draw.rand(g, i), s)) for i, (g, s) in enumerate(cases)]
    g = draw.rand((2, 3, 4), 19)
    checks.append(gradcheck_case("gradcheck of broadcast_to(x (3, 1), (2, 3, 4))", (g, (3, 1)),
                                 lambda x: xp.broadcast_to(x, (2, 3, 4)), g, {"x": draw.rand((3, 1), 9)}))
    return checks


def mul_backward(g, a, b):
    """Gradients of out = a * b (NumPy broadcasting) from the upstream gradient g = dL/dout.

    g: array of out's shape; a, b: the inputs. Returns (da, db) with the shapes of a and b."""
    A, B = leaf(a), leaf(b)
    (A * B).backward(g)
    return A.grad, B.grad


def _mul_cases(draw):
    shapes = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (3,)), ((2, 3), (1,))]
    checks = []
    for i, (sa, sb) in enumerate(shapes):
        a, b = draw.rand(sa, 10 * i), draw.rand(sb, 10 * i + 1)
        checks.append(Case(f"a {_shape(sa)} * b {_shape(sb)}", (draw.rand((a * b).shape, 10 * i + 2), a, b)))
    for i, (sa, sb) in enumerate(shapes[1:3]):
        a, b = draw.rand(sa, 3 + 10 * i), draw.rand(sb, 4 + 10 * i)
        g = draw.rand((a * b).shape, 5 + 10 * i)
        checks.append(gradcheck_case(f"gradcheck of a {_shape(sa)} * b {_shape(sb)}", (g, a, b),
                                     lambda a, b: a * b, g, {"a": a, "b": b}))
    return checks


def sum_backward(g, shape, axis=None, keepdims=False):
    """Gradient of out = x.sum(axis=axis, keepdims=keepdims) from g = dL/dout.

    shape: x's shape; axis: None (all axes), an int (may be negative) or a tuple of ints.
    Returns dx, an array of `shape`."""
    x = leaf(xp.zeros(shape, dtype=g.dtype))
    x.sum(axis=axis, keepdims=keepdims).backward(g)
    return x.grad


def _sum_cases(draw):
    shapes = [((3, 4), None, False), ((3, 4), 0, False), ((3, 4), -1, True), ((2, 3, 4), (0, 2), False),
              ((2, 3, 4), 1, True), ((2, 3, 4), None, True)]
    checks = []
    for i, (shape, axis, keepdims) in enumerate(shapes):
        g = draw.rand(xp.zeros(shape).sum(axis=axis, keepdims=keepdims).shape, i)
        checks.append(Case(f"x {_shape(shape)}, axis={axis}, keepdims={keepdims}", (g, shape, axis, keepdims)))
    g = draw.rand((3,), 15)
    checks.append(gradcheck_case("gradcheck of x (2, 3, 4).sum(axis=(0, 2))", (g, (2, 3, 4), (0, 2), False),
                                 lambda x: x.sum(axis=(0, 2)), g, {"x": draw.rand((2, 3, 4), 5)}))
    return checks


def matmul_backward(g, a, b):
    """Gradients of out = a @ b, where a (..., n, k) and b (..., k, m) may carry broadcast batch axes
    (a 2-D b is one weight shared by every batch element). g: (..., n, m).
    Returns (da, db) with the shapes of a and b."""
    A, B = leaf(a), leaf(b)
    (A @ B).backward(g)
    return A.grad, B.grad


def _matmul_cases(draw):
    shapes = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((3, 4), (2, 4, 5)),
              ((2, 1, 3, 4), (5, 4, 2))]
    checks = []
    for i, (sa, sb) in enumerate(shapes):
        a, b = draw.rand(sa, 10 * i), draw.rand(sb, 10 * i + 1)
        checks.append(Case(f"a {_shape(sa)} @ b {_shape(sb)}", (draw.rand((a @ b).shape, 10 * i + 2), a, b)))
    a, b = draw.rand((2, 3, 4), 7), draw.rand((4, 2), 8)
    g = draw.rand((2, 3, 2), 6)
    checks.append(gradcheck_case("gradcheck of a (2, 3, 4) @ b (4, 2)", (g, a, b), lambda a, b: a @ b, g,
                                 {"a": a, "b": b}))
    return checks
