"""Fused operations: one forward on raw arrays and a backward derived by hand.

Each docstring states the op three times, as math a reader can check with pencil and paper: the
forward; the derivative it rests on; the backward, i.e. how the upstream gradient g = dL/dy becomes
dL/dx. (Sums run over the last axis unless said otherwise; delta_ij is 1 when i = j, else 0.)

Each op could be written as a composition of Tensor primitives (the tests check that it equals that
composition, and gradient_check.py checks every backward against central differences), but fusing saves
memory and time: the composition records five to ten graph nodes and keeps all their intermediate
arrays alive; the fused op records one node and keeps one or two arrays. How the arrays are then
computed fast (buffers reused in place, BLAS operand layouts, row reductions) is kernels.py's
business: see its notes, op by op. The lessons derive every backward line by line.
"""
import math
from contextlib import contextmanager

from . import backend, kernels
from .backend import xp
from .tensor import Tensor, is_grad_enabled


def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def _checked_indices(ids, limit, what, ignore_index=None):
    """Integer indices as an xp array, every one in [0, limit) (or equal to ignore_index).
    CuPy wraps an out-of-range index around silently, so the range is checked explicitly; host arrays
    are checked on the host before they are copied, so that costs the GPU no synchronisation."""
    if isinstance(ids, Tensor):
        ids = ids.data
    if not backend.is_array(ids):
        ids = backend.to_numpy(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= limit)
    if ignore_index is not None:
        bad &= ids != ignore_index
    if bad.any():
        raise IndexError(f"{what} must lie in [0, {limit}), got {ids[bad].ravel()[:5].tolist()}"
                         + (f" (ignore_index is {ignore_index})" if ignore_index is not None else ""))
    return backend.from_numpy(ids) if not backend.is_array(ids) else ids


# ---- softmax family ------------------------------------------------------------------------------

def softmax(x, axis=-1):
    """forward:    y_i = exp(x_i - m) / sum_j exp(x_j - m),  m = max_j x_j  (subtracting m changes
                nothing and keeps exp from overflowing)
    derivative: dy_i/dx_j = y_i (delta_ij - y_j)
    backward:   dx_j = sum_i g_i y_i (delta_ij - y_j) = y_j (g_j - sum_i g_i y_i)"""
    x = _tensor(x)
    shifted = x.data - x.data.max(axis=axis, keepdims=True)  # exp of a large logit would overflow
    e = xp.exp(shifted)
    y = e / e.sum(axis=axis, keepdims=True)
    dx = x._sink()

    def backward(g):
        dx._accumulate(y * (g - (g * y).sum(axis=axis, keepdims=True)))
    return Tensor._make(y, (x,), backward)


def log_softmax(x, axis=-1):
    """forward:    y_i = x_i - log sum_j exp(x_j)   (computed from x - max x, as softmax)
    derivative: dy_i/dx_j = delta_ij - softmax(x)_j
    backward:   dx_j = g_j - softmax(x)_j sum_i g_i,  with softmax(x) = exp(y)"""
    x = _tensor(x)
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    dx = x._sink()

    def backward(g):
        dx._accumulate(g - xp.exp(y) * g.sum(axis=axis, keepdims=True))
    return Tensor._make(y, (x,), backward)


def cross_entropy(logits, targets, ignore_index=-100, label_smoothing=0.0):
    """forward:    per row, with p = softmax(z) over C classes, target t and smoothing eps,
                    l = -(1 - eps) log p_t - (eps / C) sum_c log p_c;
                the loss is the mean of l over the n rows whose target is not ignore_index (0 if none)
    derivative: d(log p_t)/dz_c = delta_tc - p_c   (log_softmax's), so
                dl/dz_c = p_c - [(1 - eps) delta_tc + eps / C]   (the smoothed one-hot)
    backward:   dz = g (p - smoothed one-hot) / n on each counted row, 0 on ignored rows
    logits (..., C); targets (...) integer class indices."""
    logits = _tensor(logits)
    num_classes = logits.shape[-1]
    targets = _checked_indices(targets, num_classes, "class labels", ignore_index)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets of shape {targets.shape} do not match logits of shape {logits.shape}: "
                         f"expected targets of shape {logits.shape[:-1]}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    dtype = logits.dtype
    z = logits.data.reshape(-1, num_classes)                        # (N, C)
    t = targets.reshape(-1)                                         # (N,)
    valid = t != ignore_index
    t = xp.where(valid, t, 0)
    rows = xp.arange(t.shape[0])
    shifted = z - z.max(axis=-1, keepdims=True)
    logp = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))   # (N, C)
    per_row = -(1.0 - label_smoothing) * logp[rows, t] - label_smoothing * logp.mean(axis=-1)
    weight = valid.astype(dtype) / xp.maximum(valid.sum(), 1).astype(dtype)  # (N,) 1/n or 0
    loss = xp.asarray((per_row * weight).sum())
    dlogits, shape = logits._sink(), logits.shape

    def backward(g):
        grad = xp.exp(logp) - label_smoothing / num_classes
        grad[rows, t] -= 1.0 - label_smoothing
        grad *= (weight * g)[:, None]
        dlogits._accumulate(grad.reshape(shape))
    return Tensor._make(loss, (logits,), backward)


def kl_div(input_logits, target_logits, weights=None):
    """forward:    per position, with p = softmax(input) and q = softmax(target),
                    KL_row = sum_c q_c (log q_c - log p_c);
                the loss is sum over positions of w * KL_row, w = 1 / positions by default (for
                (batch, classes) logits: PyTorch's reduction="batchmean")
    derivative: d KL_row / d input_c = p_c - q_c            (log_softmax's derivative, and sum q = 1)
                d KL_row / d target_c = q_c (log q_c - log p_c - KL_row)   (softmax's derivative)
    backward:   d input = g w (p - q);  d target = g w q (log q - log p - KL_row)
    `weights` (the leading shape, e.g. (B, T)), if given, are the w: a language model's target mask
    divided by its count averages over target tokens only."""
    p_logits, q_logits = _tensor(input_logits), _tensor(target_logits)
    if p_logits.shape != q_logits.shape:
        raise ValueError(f"kl_div needs logits of one shape, got {p_logits.shape} and {q_logits.shape}")
    log_p = log_softmax(p_logits.detach()).data  # detach: a raw array would be cast to float32
    log_q = log_softmax(q_logits.detach()).data
    q = xp.exp(log_q)
    kl_rows = (q * (log_q - log_p)).sum(axis=-1, keepdims=True)
    if weights is None:
        w = 1.0 / max(q.size // q.shape[-1], 1)
    else:
        w = weights.data if isinstance(weights, Tensor) else weights
        if tuple(w.shape) != tuple(q.shape[:-1]):
            raise ValueError(f"kl_div weights must have the logits' leading shape {q.shape[:-1]}, "
                             f"got {tuple(w.shape)}")
        w = xp.asarray(w, dtype=q.dtype)[..., None]
    dp, dq = p_logits._sink(), q_logits._sink()

    def backward(g):
        scale = g * w
        if dp is not None:
            dp._accumulate((xp.exp(log_p) - q) * scale)
        if dq is not None:
            dq._accumulate(q * (log_q - log_p - kl_rows) * scale)
    return Tensor._make(xp.asarray((kl_rows * w).sum()), (p_logits, q_logits), backward)


def symmetric_kl(p_logits, q_logits, weights=None):
    """AdaMix's consistency loss (docs/adamix.md section 4):
        0.5 * [ KL(sg(softmax q) || softmax p) + KL(sg(softmax p) || softmax q) ]
    Each direction stops the gradient on its target: p learns to match q and q to match p.
    `weights`: per position, as in kl_div (default: the plain average)."""
    p_logits, q_logits = _tensor(p_logits), _tensor(q_logits)
    return (kl_div(p_logits, q_logits.detach(), weights) + kl_div(q_logits, p_logits.detach(), weights)) * 0.5


# ---- attention -------------------------------------------------------------------------------------

def attention(q, k, v, mask_bias=None, dropout_p=0.0, training=False):
    """Scaled dot-product attention softmax(q k / sqrt(D) + mask) v, with dropout on the weights.
    forward:    s = (q / sqrt(D)) k + mask;  y = softmax(s);  w = dropout(y);  out = w v
    derivative: a matrix product's (dA = g B^T, dB = A^T g), softmax's and dropout's (above, below)
    backward:   dv = w^T g;  dw = g v^T;  dy = dropout's mask * dw;  ds = y (dy - sum(dy y));
                dq = ds k^T / sqrt(D);  dk = (q / sqrt(D))^T ds
    q (..., T, D); k (..., D, S), keys stored transposed as a KVCache keeps them; v (..., S, D);
    mask_bias broadcasts to (..., T, S). -> (..., T, D). The same arithmetic as the composition
    (q * scale) @ k + mask -> softmax -> dropout -> @ v, in one node (kernels.py: attention)."""
    q, k, v = _tensor(q), _tensor(k), _tensor(v)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(q.shape[-1])
    scaled_q = q.data * scale                                   # (..., T, D)
    y = scaled_q @ kernels.row_major(k.data)                    # (..., T, S) scores
    if mask_bias is not None:
        y += _tensor(mask_bias).data                             # a host mask is moved over first
    _softmax_in_place(y)                                        # scores -> weights
    keep, drop_scale = None, 1.0 / (1.0 - dropout_p)
    weights = y
    if training and dropout_p > 0.0:
        keep = _keep_mask(y.shape, y.dtype, dropout_p)
        weights = y * keep
        weights *= drop_scale
    out = weights @ v.data                                      # (..., T, D)
    del weights                                                 # backward rebuilds it from y and keep
    dq, dk, dv = q._sink(), k._sink(), v._sink()
    scaled_q = scaled_q if dk is not None else None
    k_data = k.data if dq is not None else None
    v_data = v.data if dq is not None or dk is not None else None

    def backward(g):
        if dv is not None:
            weights = y
            if keep is not None:                                 # as the forward made them
                weights = y * keep
                weights *= drop_scale
            dv._accumulate(xp.swapaxes(weights, -1, -2) @ g)   # (..., S, D)
        if dq is None and dk is None:
            return
        dy = g @ kernels.row_major(xp.swapaxes(v_data, -1, -2))  # (..., T, S)
        if keep is not None:
            dy *= keep
            dy *= drop_scale
        ds = _softmax_backward(y, dy)
        if dq is not None:
            dq._accumulate((ds @ xp.swapaxes(k_data, -1, -2)) * scale)
        if dk is not None:
            dk._accumulate(xp.swapaxes(scaled_q, -1, -2) @ ds)  # (..., D, S)
    return Tensor._make(out, (q, k, v), backward)


def _softmax_in_place(y):
    """softmax over the last axis, written over y itself."""
    y -= kernels.row_max(y)                                     # exp of a large score would overflow
    xp.exp(y, out=y)
    y /= kernels.row_sum(y)
    return y


def _softmax_backward(y, dy):
    """dL/ds from y = softmax(s) and dy = dL/dy:  y * (dy - sum(dy * y)), written over dy."""
    dy -= kernels.row_sum(dy * y)
    dy *= y
    return dy


# ---- normalisation and activations ---------------------------------------------------------------

def layer_norm(x, weight, bias, eps=1e-5):
    """forward:    over the last axis (C features): mu = mean(x), var = mean((x - mu)^2),
                xhat = (x - mu) / sqrt(var + eps),  y = xhat * weight + bias
    derivative: with r = 1 / sqrt(var + eps): dxhat_i/dx_j = r (delta_ij - 1/C - xhat_i xhat_j / C)
    backward:   dweight = sum over rows of g xhat;  dbias = sum over rows of g;  with dxhat = g weight,
                dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
    (kernels.py: layer norm)"""
    x = _tensor(x)
    xhat = x.data - kernels.row_mean(x.data)                      # centred, made xhat below
    rstd = 1.0 / xp.sqrt(kernels.row_mean(xhat * xhat) + eps)
    xhat *= rstd
    if weight is not None:
        out = xhat * weight.data
        if bias is not None:
            out += bias.data
    else:
        out = xhat + bias.data if bias is not None else xhat
    dx = x._sink()
    dweight = None if weight is None else weight._sink()
    dbias = None if bias is None else bias._sink()
    scale = None if weight is None else weight.data

    def backward(g):
        if dweight is not None:
            dweight._accumulate(g * xhat)
        if dbias is not None:
            dbias._accumulate(g)
        if dx is not None:
            grad = g * scale if scale is not None else g.copy()        # dxhat
            product = grad * xhat
            projection = kernels.row_mean(product)
            grad -= kernels.row_mean(grad)
            grad -= xp.multiply(xhat, projection, out=product)
            grad *= rstd
            dx._accumulate(grad)
    parents = tuple(t for t in (x, weight, bias) if t is not None)
    return Tensor._make(out, parents, backward)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)   # Python floats keep float32 arrays float32
def gelu(x, approximate=False):
    """forward:    GELU(x) = x Phi(x), Phi the standard normal CDF, Phi(x) = (1 + erf(x / sqrt 2)) / 2
                (the exact form BERT uses); approximate=True: 0.5 x (1 + tanh(u)),
                u = sqrt(2/pi) (x + 0.044715 x^3) (GPT-2's)
    derivative: d/dx [x Phi(x)] = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi);
                tanh form: 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx, du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    backward:   dx = g * derivative   (kernels.py: GELU)"""
    x = _tensor(x)
    v = x.data
    if approximate:
        inner = _SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)
        th = xp.tanh(inner)
        out = 0.5 * v * (1.0 + th)
        dx = x._sink()

        def backward(g):
            d_inner = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * v * v)
            dx._accumulate(g * (0.5 * (1.0 + th) + 0.5 * v * (1.0 - th * th) * d_inner))
    else:
        out, derivative = kernels.gelu_erf(v, x.requires_grad and is_grad_enabled())
        dx = x._sink()

        def backward(g):
            dx._accumulate(xp.multiply(derivative, g, out=derivative))
    return Tensor._make(out, (x,), backward)


# ---- dropout -----------------------------------------------------------------------------------

_tape = None  # None, or [masks, replay?]: see dropout_tape


@contextmanager
def dropout_tape(masks, replay=False):
    """Record every dropout mask drawn inside the block into the list `masks` (replay=False), or hand
    the recorded masks out again, in order, instead of drawing new ones (replay=True). AdaMix's
    low-memory step runs a forward pass a second time and needs it to drop exactly the same entries.
    The masks are boolean: a quarter of the memory of the activations they were drawn for."""
    global _tape
    previous, _tape = _tape, [masks if not replay else iter(masks), replay]
    try:
        yield
        if replay and next(_tape[0], None) is not None:
            raise RuntimeError("dropout replay drew fewer masks than were recorded: the replayed "
                               "forward pass must be the recorded one")
    finally:
        _tape = previous


def _keep_mask(shape, dtype, p):
    """A boolean mask, True with probability 1 - p: drawn from the device generator, or from the tape."""
    if _tape is not None and _tape[1]:
        keep = next(_tape[0], None)
        if keep is None or keep.shape != tuple(shape):
            raise RuntimeError("dropout replay does not match the recording: the forward pass that is "
                               "replayed must draw the same masks, of the same shapes, in the same order")
        return keep
    keep = backend.device_uniform(shape, dtype) >= p
    if _tape is not None:
        _tape[0].append(keep)
    return keep


def dropout(x, p, training):
    """Inverted dropout.
    forward:    y = x * m / (1 - p), m_i = 1 with probability 1 - p, else 0 (so E[y] = x); in
                evaluation (training=False) y = x
    derivative: dy_i/dx_i = m_i / (1 - p)
    backward:   dx = g * m / (1 - p)"""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    x = _tensor(x)
    if not training or p == 0.0:
        return x
    # The mask stays boolean (a quarter of a float32 mask's memory, kept until backward); it multiplies
    # the float array before the scale does: bool * 1.25 would promote to float64 under NumPy 2's rules
    keep = _keep_mask(x.shape, x.dtype, p)
    scale = 1.0 / (1.0 - p)
    dx = x._sink()

    def backward(g):
        grad = g * keep
        grad *= scale
        dx._accumulate(grad)
    out = x.data * keep
    out *= scale
    return Tensor._make(out, (x,), backward)


def embedding(ids, weight):
    """forward:    y[i] = weight[ids[i]]: rows of weight (V, C) picked by integer ids (...) -> (..., C)
    derivative: dy[i]/dweight[r] = 1 when ids[i] = r, else 0
    backward:   dweight[r] = sum of g[i] over every i with ids[i] = r (a row picked twice gets both)"""
    ids = _checked_indices(ids, weight.shape[0], "embedding indices")
    dweight, shape, dtype = weight._sink(), weight.shape, weight.dtype

    def backward(g):
        grad = xp.zeros(shape, dtype=dtype)
        backend.scatter_add(grad, ids, g)
        dweight._accumulate(grad)
    return Tensor._make(weight.data[ids], (weight,), backward)


def linear(x, weight, bias=None):
    """forward:    y = x W^T + b, weight W stored (out, in) as in PyTorch and the safetensors files
    derivative: dy_ro / dx_ri = W_oi;  dy_ro / dW_oi = x_ri;  dy_ro / db_o = 1   (r: a row)
    backward:   dx = g W;  dW = g^T x;  db = sum of g over all rows   (kernels.py: linear)"""
    x, weight = _tensor(x), _tensor(weight)
    rows = x.data.reshape(-1, x.shape[-1])                          # (N, in), all leading axes as rows
    out = kernels.product(rows, weight.data.T)                      # (N, out)
    if bias is not None:
        out += bias.data
    dx, dweight = x._sink(), weight._sink()
    dbias = None if bias is None else bias._sink()
    x_shape = x.shape
    w = weight.data if dx is not None else None                     # kept only for the gradient it gives
    rows = rows if dweight is not None else None                    # a frozen weight keeps no input

    def backward(g):
        g = g.reshape(-1, g.shape[-1])                              # (N, out)
        if dx is not None:
            dx._accumulate(kernels.product(g, w).reshape(x_shape))
        if dweight is not None:
            dweight._accumulate(kernels.product(g.T, rows))         # (out, in)
        if dbias is not None:
            dbias._accumulate(g.sum(axis=0))
    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._make(out.reshape(*x.shape[:-1], weight.shape[0]), parents, backward)

