"""Lesson 03's exercises: log-softmax backward, and cross-entropy's gradient with label smoothing."""
from exercises import Exercise, array


def _verify_log_softmax_backward(log_softmax_backward):
    from tinymix import Tensor, backend
    from tinymix import functional as F
    from tinymix.backend import xp
    rng = backend.host_generator(3)
    for shape in ((4, 5), (2, 3)):
        x = Tensor(rng.standard_normal(shape) * 2.0, requires_grad=True, dtype=xp.float64)
        g = backend.from_numpy(rng.standard_normal(shape))
        F.log_softmax(x).backward(g)
        y = F.softmax(Tensor(x.data, dtype=xp.float64)).data
        array(log_softmax_backward(y, g), x.grad, f"dx for a {shape} input", atol=1e-9, rtol=1e-7)


def _verify_smoothed_gradient(answer):
    from tinymix import Tensor
    from tinymix import functional as F
    from tinymix.backend import xp
    z = Tensor(xp.zeros((1, 5)), requires_grad=True, dtype=xp.float64)
    F.cross_entropy(z, [0], label_smoothing=0.2).backward()
    got = xp.asarray(answer, dtype=xp.float64).reshape(-1) if not hasattr(answer, "data") else answer
    array(got, z.grad[0], "dL/dz", atol=1e-6, rtol=0.0)


EXERCISES = {
    "03.1": Exercise(
        task="log_softmax_backward(y, g) -> dx",
        verify=_verify_log_softmax_backward,
        hint="d log_softmax_i / dx_j = delta_ij - y_j, so dx = g - y * (sum of g over the last axis, keepdims)"),
    "03.2": Exercise(
        task="dL/dz for five zero logits, target 0, label smoothing 0.2",
        verify=_verify_smoothed_gradient,
        hint="dL/dz = p - q with p = softmax(0) = 1/5 each and q = (1 - eps) onehot(0) + eps / C"),
}
