"""A2: softmax, cross-entropy and layer-norm backward. Student file:
lessons/assignments/a2_softmax_layernorm.py."""
from .. import functional as F
from ..backend import xp
from ..tensor import Tensor
from .checks import F64, Case, _shape, gradcheck_case, leaf


# ---- A2: softmax, cross-entropy and layer-norm backward ---------------------------------------------

def softmax_backward(g, y, axis=-1):
    """Gradient of y = softmax(x, axis) w.r.t. x, from g = dL/dy and the OUTPUT y (all a fused
    softmax keeps for its backward). g, y: arrays of one shape. Returns dx, of that shape."""
    # softmax(log y) = y, and the gradient ignores the constant by which log y differs from x
    x = leaf(xp.log(y))
    F.softmax(x, axis=axis).backward(g)
    return x.grad


def _softmax(x, axis=-1):
    return F.softmax(Tensor(x, dtype=x.dtype), axis=axis).data


def _softmax_cases(draw):
    shapes = [((5,), -1, 1.0), ((3, 7), -1, 1.0), ((2, 3, 4), 1, 1.0), ((4, 6), -1, 8.0)]
    checks = [Case(f"x {_shape(s)} (scale {scale}), axis={axis}",
                   (draw.rand(s, 2 * i + 1), _softmax(draw.rand(s, 2 * i, scale), axis), axis))
              for i, (s, axis, scale) in enumerate(shapes)]
    x, g = draw.rand((3, 4), 11), draw.rand((3, 4), 13)
    checks.append(gradcheck_case("gradcheck of softmax(x (3, 4))", (g, _softmax(x)), _softmax, g, {"x": x}))
    return checks


def cross_entropy_backward(logits, targets, label_smoothing=0.0):
    """Gradient of the mean cross-entropy loss w.r.t. the logits.

    logits: (N, C) array; targets: (N,) integer classes; label_smoothing eps in [0, 1): the target
    distribution puts 1 - eps on the class and spreads eps evenly over all C classes.
    Returns dloss/dlogits, (N, C)."""
    z = leaf(logits)
    F.cross_entropy(z, targets, label_smoothing=label_smoothing).backward()
    return z.grad


def _cross_entropy_cases(draw):
    shapes = [(5, 4, 0.0, 1.0), (3, 7, 0.1, 1.0), (1, 2, 0.0, 1.0), (6, 3, 0.2, 5.0)]
    checks = [Case(f"logits {n}x{c} (scale {scale}), label_smoothing={eps}",
                   (draw.rand((n, c), i, scale), draw.labels(n, c, 100 + i), eps))
              for i, (n, c, eps, scale) in enumerate(shapes)]
    z, t = draw.rand((4, 3), 12), draw.labels(4, 3, 7)
    for eps in (0.0, 0.1):
        checks.append(gradcheck_case(
            f"gradcheck of cross_entropy(logits 4x3), label_smoothing={eps}", (z, t, eps),
            lambda z, eps=eps: F.cross_entropy(Tensor(z, dtype=F64), t, label_smoothing=eps).data, 1.0, {"z": z}))
    return checks


def layer_norm_forward(x, weight, bias, eps=1e-5):
    """Layer norm over the last axis, returning what its backward needs.

    x: (..., C); weight, bias: (C,). With mean and var the mean and (biased) variance of x along the
    last axis, returns (out, xhat, rstd): rstd = 1 / sqrt(var + eps), shape (..., 1);
    xhat = (x - mean) * rstd, shape (..., C); out = xhat * weight + bias, shape (..., C)."""
    X = Tensor(x, dtype=x.dtype)
    out = F.layer_norm(X, Tensor(weight, dtype=x.dtype), Tensor(bias, dtype=x.dtype), eps)
    xhat = F.layer_norm(X, None, None, eps)
    rstd = 1.0 / xp.sqrt(x.var(axis=-1, keepdims=True) + eps)
    return out.data, xhat.data, rstd


def _layer_norm_inputs(draw):
    """(label, x, weight, bias, eps) on a few shapes, scales, offsets and a large eps."""
    shapes = [((4, 6), 1.0, 0.0, 1e-5), ((2, 3, 8), 3.0, 5.0, 1e-5), ((3, 5), 0.5, -2.0, 0.1)]
    for i, (shape, scale, offset, eps) in enumerate(shapes):
        C = shape[-1]
        yield (f"x {_shape(shape)} (scale {scale}, offset {offset}), eps={eps}", draw.rand(shape, 20 + i, scale)
               + offset, 1.0 + draw.rand((C,), 30 + i, 0.5), draw.rand((C,), 40 + i), eps)


def _layer_norm_forward_cases(draw):
    return [Case(label, (x, w, b, eps)) for label, x, w, b, eps in _layer_norm_inputs(draw)]


def layer_norm_backward(g, xhat, rstd, weight):
    """Backward of out = xhat * weight + bias, xhat = (x - mean) * rstd, from g = dL/dout (..., C)
    and the cache (xhat, rstd) that layer_norm_forward returns; weight: (C,).
    Returns (dx, dweight, dbias): dx (..., C), dweight (C,), dbias (C,)."""
    # dx depends on x only through (xhat, rstd): rebuild an x with this cache (x = xhat / rstd, mean 0,
    # and the eps for which 1 / sqrt(var + eps) = rstd) and let autograd run the library's layer norm.
    xhat, rstd = xhat.astype(F64), rstd.astype(F64)
    eps = float(((1.0 - (xhat * xhat).mean(axis=-1, keepdims=True)) / (rstd * rstd)).mean())
    x, w = leaf(xhat / rstd), leaf(weight.astype(F64))
    b = leaf(xp.zeros_like(w.data))
    F.layer_norm(x, w, b, eps).backward(g.astype(F64))
    return x.grad.astype(g.dtype), w.grad.astype(g.dtype), b.grad.astype(g.dtype)


def _layer_norm_backward_cases(draw):
    checks = []
    for i, (label, x, w, b, eps) in enumerate(_layer_norm_inputs(draw)):
        _, xhat, rstd = layer_norm_forward(x, w, b, eps)
        checks.append(Case(label, (draw.rand(x.shape, 50 + i), xhat, rstd, w)))
    x, w, b, g = draw.rand((3, 5), 60), 1.0 + draw.rand((5,), 61, 0.5), draw.rand((5,), 62), draw.rand((3, 5), 63)
    _, xhat, rstd = layer_norm_forward(x, w, b, 0.1)
    checks.append(gradcheck_case("gradcheck of layer_norm(x (3, 5), weight, bias), eps=0.1", (g, xhat, rstd, w),
                                 lambda x, weight, bias: layer_norm_forward(x, weight, bias, 0.1)[0], g,
                                 {"x": x, "weight": w, "bias": b}))
    return checks
