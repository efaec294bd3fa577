"""A correct A2, written as a student would: tinymix.backend (xp) only. The grader's tests use it."""
from tinymix.backend import xp


def softmax_backward(g, y, axis=-1):
    return y * (g - (g * y).sum(axis=axis, keepdims=True))


def cross_entropy_backward(logits, targets, label_smoothing=0.0):
    N, C = logits.shape
    z = logits - logits.max(axis=-1, keepdims=True)
    p = xp.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    t = xp.full((N, C), label_smoothing / C)
    t[xp.arange(N), targets] += 1.0 - label_smoothing
    return (p - t) / N


def layer_norm_forward(x, weight, bias, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    rstd = 1.0 / xp.sqrt(var + eps)
    xhat = (x - mean) * rstd
    return xhat * weight + bias, xhat, rstd


def layer_norm_backward(g, xhat, rstd, weight):
    dxhat = g * weight
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    lead = tuple(range(g.ndim - 1))
    return dx, (g * xhat).sum(axis=lead), g.sum(axis=lead)
