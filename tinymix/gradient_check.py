"""Check an analytic gradient against central differences, in float64.

    dL/dx[i] ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

A non-scalar output is reduced to a scalar L = sum(out * r) with a fixed, non-trivial r, so every
output element matters. On failure the error names the input and the element, with both values.
"""
from .backend import xp
from .tensor import Tensor, no_grad


def _projection(shape, size):
    return xp.cos(xp.arange(size, dtype=xp.float64) * 1.3 + 0.5).reshape(shape)


def _scalar(out):
    if out.size == 1:
        return out.sum()
    return (out * Tensor(_projection(out.shape, out.size), dtype=xp.float64)).sum()


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-6, rtol=1e-4):
    """True if fn's gradient w.r.t. every input with requires_grad matches central differences.
    `fn` must be deterministic; integer inputs (labels, ids) are passed through unchanged."""
    inputs = [Tensor(t.data.astype(xp.float64), requires_grad=t.requires_grad, dtype=xp.float64)
              if isinstance(t, Tensor) and t.dtype.kind == "f" else t for t in inputs]
    checked = [(i, t) for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck needs at least one input tensor with requires_grad=True")
    out = fn(*inputs)
    if out.dtype != xp.float64:
        raise TypeError(f"fn returned {out.dtype} for float64 inputs: some op casts its output")
    _scalar(out).backward()

    for position, t in checked:
        analytic = t.grad if t.grad is not None else xp.zeros_like(t.data)
        flat = t.data.reshape(-1)  # a view: writing it perturbs the input in place
        for i in range(flat.size):
            original = float(flat[i])
            with no_grad():
                flat[i] = original + eps
                plus = float(_scalar(fn(*inputs)).item())
                flat[i] = original - eps
                minus = float(_scalar(fn(*inputs)).item())
            flat[i] = original
            numeric = (plus - minus) / (2 * eps)
            got = float(analytic.reshape(-1)[i])
            if abs(got - numeric) > atol + rtol * abs(numeric):
                index = tuple(int(k) for k in xp.unravel_index(i, t.shape)) if t.ndim else ()
                raise AssertionError(f"gradient mismatch for input {position} (shape {t.shape}) at index "
                                     f"{index}: analytic {got:.8g}, numerical {numeric:.8g}")
    return True
