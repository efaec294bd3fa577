"""Lesson 04's exercises: RMS-norm backward, and the derivative of GELU's tanh approximation."""
import math

from exercises import Exercise, array


def _verify_rms_norm_backward(rms_norm_backward):
    from tinymix import Tensor, backend
    from tinymix.backend import xp
    rng = backend.host_generator(4)
    eps = 1e-5
    for shape in ((3, 8), (2, 5)):
        x = Tensor(rng.standard_normal(shape) + 0.5, requires_grad=True, dtype=xp.float64)
        weight = backend.from_numpy(rng.standard_normal(shape[-1]) + 1.0)
        g = backend.from_numpy(rng.standard_normal(shape))
        rms = ((x * x).mean(axis=-1, keepdims=True) + eps).sqrt()
        (x / rms * Tensor(weight, dtype=xp.float64)).backward(g)
        array(rms_norm_backward(x.data.copy(), weight, g, eps), x.grad, f"dx for a {shape} input",
              atol=1e-9, rtol=1e-7)


def _verify_gelu_tanh_grad(gelu_tanh_grad):
    from tinymix import Tensor
    from tinymix.backend import xp
    x = Tensor(xp.linspace(-4.0, 4.0, 33), requires_grad=True, dtype=xp.float64)
    k = math.sqrt(2.0 / math.pi)
    (x * 0.5 * ((x + x * x * x * 0.044715) * k).tanh() + x * 0.5).sum().backward()
    array(gelu_tanh_grad(x.data.copy()), x.grad, "d gelu / dx on [-4, 4]", atol=1e-9, rtol=1e-7)


EXERCISES = {
    "04.1": Exercise(
        task="rms_norm_backward(x, weight, g, eps) -> dx",
        verify=_verify_rms_norm_backward,
        hint="with a = g * weight and r = 1 / rms: dx = r * (a - xhat * mean(a * xhat)), xhat = x * r "
             "(layer norm's formula without the mean(a) term, because nothing is centred)"),
    "04.2": Exercise(
        task="gelu_tanh_grad(x) -> d gelu / dx",
        verify=_verify_gelu_tanh_grad,
        hint="product rule: 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2), t = tanh(k (x + 0.044715 x^3))"),
}
