"""The fused ops of tinymix.functional: each against central differences, against its composition from
Tensor primitives (values and gradients), against a plain NumPy or math reference, and in float32."""
import math

import numpy as np
import pytest

from tinymix import Tensor, backend, gradcheck, manual_seed
from tinymix import functional as F
from tinymix import kernels

from numeric import close

pytestmark = pytest.mark.numerics

SEEDS = (0, 1)


def make_inputs(specs, seed, dtype=np.float32):
    """Tensors that require grad, N(0, 1) scaled by `scale`, one per (shape, scale)."""
    rng = np.random.default_rng(seed)
    return [Tensor((rng.standard_normal(shape) * scale).astype(dtype), requires_grad=True, dtype=dtype)
            for shape, scale in specs]


def N(*shape, scale=1.0):
    return (shape, scale)


def index(values):
    return Tensor(np.asarray(values))


def grad_of(t):
    return backend.to_numpy(t.grad)


# ---- the same ops composed from Tensor primitives ----------------------------------------------------

def softmax_composed(x, axis=-1):
    e = (x - x.max(axis=axis, keepdims=True)).exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_composed(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


def cross_entropy_composed(logits, targets, ignore_index=-100, label_smoothing=0.0):
    num_classes = logits.shape[-1]
    log_p = log_softmax_composed(logits.reshape(-1, num_classes))    # (N, C)
    targets = np.asarray(targets).reshape(-1)
    rows = np.nonzero(targets != ignore_index)[0]
    picked = log_p[index(rows), index(targets[rows])]                 # (n,)
    uniform = log_p[index(rows)].mean(axis=-1)                        # (n,)
    per_row = picked * -(1.0 - label_smoothing) - uniform * label_smoothing
    return per_row.sum() * (1.0 / max(len(rows), 1))


def layer_norm_composed(x, weight, bias, eps=1e-5):
    centred = x - x.mean(axis=-1, keepdims=True)
    out = centred / ((centred * centred).mean(axis=-1, keepdims=True) + eps).sqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def gelu_tanh_composed(x):
    return x * 0.5 * (((x + x ** 3 * 0.044715) * math.sqrt(2.0 / math.pi)).tanh() + 1.0)


def gelu_erf_composed(x):
    """x * Phi(x) with erf written out as Abramowitz & Stegun 7.1.26 in primitives."""
    z = x * (1.0 / math.sqrt(2.0))
    sign = Tensor(np.sign(z.numpy()), dtype=z.dtype)                 # a constant: no gradient through it
    a = z * sign                                                      # |z|
    t = 1.0 / (a * 0.3275911 + 1.0)
    poly = t * (t * (t * (t * (t * 1.061405429 - 1.453152027) + 1.421413741) - 0.284496736) + 0.254829592)
    erf = sign * (1.0 - poly * (-(a * a)).exp())
    return x * 0.5 * (erf + 1.0)


def kl_composed(input_logits, target_logits):
    log_p, log_q = log_softmax_composed(input_logits), log_softmax_composed(target_logits)
    return (log_q.exp() * (log_q - log_p)).sum(axis=-1).mean()


def symmetric_kl_composed(p_logits, q_logits):
    return (kl_composed(p_logits, q_logits.detach()) + kl_composed(q_logits, p_logits.detach())) * 0.5


def embedding_composed(ids, weight):
    return weight[index(ids)]


def linear_composed(x, weight, bias):
    return x @ weight.transpose() + bias


def attention_composed(q, k, v, mask_bias=None, dropout_p=0.0, training=False):
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k
    if mask_bias is not None:
        scores = scores + mask_bias
    return F.dropout(softmax_composed(scores), dropout_p, training) @ v


def seeded(op):
    """op with the same dropout masks on every call, so central differences see one function."""
    def run(*args):
        manual_seed(7)
        return op(*args)
    return run


# ---- the cases ---------------------------------------------------------------------------------------

TARGETS = np.array([1, 0, 4, 2])
TARGETS_IGNORED = np.array([1, -100, 4, -100])
TARGETS_3D = np.array([[0, 3, -100], [2, 2, 1]])
IDS = np.array([[1, 3, 1], [0, 1, 4]])
KEY_MASK = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -1e9]).reshape(2, 1, 1, 3)   # the last key of batch 1 is padding
QKV = [N(2, 2, 4, 3), N(2, 2, 3, 3), N(2, 2, 3, 3)]                      # q (B, H, T, D), k (B, H, D, S), v (B, H, S, D)


def fused_case(name, fused, composed, specs, grad_atol=1e-12):
    return pytest.param(fused, composed, specs, grad_atol, id=name)


def ce(targets, **options):
    """cross_entropy with fixed targets, fused and composed."""
    return (lambda z: F.cross_entropy(z, targets, **options),
            lambda z: cross_entropy_composed(z, targets, **options))


FUSED = [
    fused_case("softmax", F.softmax, softmax_composed, [N(3, 5)]),
    fused_case("softmax-axis0", lambda x: F.softmax(x, axis=0), lambda x: softmax_composed(x, axis=0),
               [N(4, 3)]),
    fused_case("softmax-3d", lambda x: F.softmax(x, axis=1), lambda x: softmax_composed(x, axis=1),
               [N(2, 3, 4, scale=3.0)]),
    fused_case("log_softmax", F.log_softmax, log_softmax_composed, [N(3, 5)]),
    fused_case("log_softmax-axis0", lambda x: F.log_softmax(x, axis=0),
               lambda x: log_softmax_composed(x, axis=0), [N(4, 3, scale=3.0)]),
    fused_case("cross_entropy", *ce(TARGETS), [N(4, 5)]),
    fused_case("cross_entropy-ignore", *ce(TARGETS_IGNORED), [N(4, 5)]),
    fused_case("cross_entropy-smoothing", *ce(TARGETS, label_smoothing=0.1), [N(4, 5)]),
    fused_case("cross_entropy-3d-ignore-smoothing", *ce(TARGETS_3D, label_smoothing=0.2),
               [N(2, 3, 4, scale=2.0)]),
    fused_case("cross_entropy-ignore-a-class", *ce(TARGETS, ignore_index=4), [N(4, 5)]),
    fused_case("layer_norm", F.layer_norm, layer_norm_composed, [N(3, 5), N(5), N(5)]),
    fused_case("layer_norm-weight-only", lambda x, w: F.layer_norm(x, w, None),
               lambda x, w: layer_norm_composed(x, w, None), [N(2, 3, 4), N(4)]),
    fused_case("layer_norm-bias-only", lambda x, b: F.layer_norm(x, None, b),
               lambda x, b: layer_norm_composed(x, None, b), [N(3, 5), N(5)]),
    fused_case("layer_norm-plain", lambda x: F.layer_norm(x, None, None, eps=1e-3),
               lambda x: layer_norm_composed(x, None, None, eps=1e-3), [N(3, 4)]),
    # the fused backward uses the exact normal density, the composition differentiates the erf
    # approximation: the two gradients differ by the approximation's error in the derivative
    fused_case("gelu-erf", F.gelu, gelu_erf_composed, [N(3, 4, scale=2.0)], grad_atol=1e-6),
    fused_case("gelu-tanh", lambda x: F.gelu(x, approximate=True), gelu_tanh_composed, [N(3, 4, scale=2.0)]),
    fused_case("kl_div", F.kl_div, kl_composed, [N(3, 5), N(3, 5)]),
    fused_case("kl_div-3d", F.kl_div, kl_composed, [N(2, 2, 4, scale=2.0), N(2, 2, 4)]),
    fused_case("symmetric_kl", F.symmetric_kl, symmetric_kl_composed, [N(3, 5), N(3, 5)]),
    fused_case("embedding", lambda w: F.embedding(IDS, w), lambda w: embedding_composed(IDS, w), [N(5, 3)]),
    fused_case("linear", F.linear, linear_composed, [N(2, 3, 4), N(5, 4), N(5)]),
    fused_case("linear-no-bias", F.linear, lambda x, w: x @ w.transpose(), [N(3, 4), N(5, 4)]),
    fused_case("attention", F.attention, attention_composed, QKV),
    fused_case("attention-mask", lambda q, k, v: F.attention(q, k, v, KEY_MASK),
               lambda q, k, v: attention_composed(q, k, v, KEY_MASK), QKV),
    fused_case("attention-mask-dropout", seeded(lambda q, k, v: F.attention(q, k, v, KEY_MASK, 0.3, True)),
               seeded(lambda q, k, v: attention_composed(q, k, v, KEY_MASK, 0.3, True)), QKV),
]


def seeded_dropout(x):
    manual_seed(7)  # the same mask on every call, so central differences see one function
    return F.dropout(x, 0.3, training=True)


# Central differences see the value of the loss; symmetric_kl's gradient deliberately is not the
# gradient of its value (it stops at each target), so it is checked against its composition instead.
ALL_FUSED = FUSED + [fused_case("dropout", seeded_dropout, None, [N(3, 4)])]
GRADCHECKED = [c for c in ALL_FUSED if c.id != "symmetric_kl"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fused, composed, specs, grad_atol", GRADCHECKED)
def test_fused_gradient_matches_central_differences(backend_name, fused, composed, specs, grad_atol, seed):
    assert gradcheck(fused, *make_inputs(specs, seed))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fused, composed, specs, grad_atol", FUSED)
def test_fused_equals_its_composition(backend_name, fused, composed, specs, grad_atol, seed):
    fused_inputs = make_inputs(specs, seed, np.float64)
    composed_inputs = make_inputs(specs, seed, np.float64)
    fused_out, composed_out = fused(*fused_inputs), composed(*composed_inputs)
    assert fused_out.shape == composed_out.shape
    np.testing.assert_allclose(fused_out.numpy(), composed_out.numpy(), rtol=1e-9, atol=1e-12)
    weights = Tensor(np.cos(np.arange(fused_out.size) + 0.5).reshape(fused_out.shape), dtype=np.float64)
    (fused_out * weights).sum().backward()
    (composed_out * weights).sum().backward()
    for position, (f, c) in enumerate(zip(fused_inputs, composed_inputs)):
        np.testing.assert_allclose(grad_of(f), grad_of(c), rtol=1e-8, atol=grad_atol,
                                   err_msg=f"gradient of input {position}")


@pytest.mark.parametrize("fused, composed, specs, grad_atol", ALL_FUSED)
def test_fused_keeps_float32(backend_name, fused, composed, specs, grad_atol):
    inputs = make_inputs(specs, 0)
    out = fused(*inputs)
    assert out.dtype == np.float32, f"forward gave {out.dtype}"
    (out * Tensor(np.linspace(-1.0, 1.0, out.size).reshape(out.shape))).sum().backward()
    for position, t in enumerate(inputs):
        assert t.grad.dtype == np.float32, f"input {position}: backward gave {t.grad.dtype}"
        assert t.grad.shape == t.shape


# ---- NumPy references in float64 ----------------------------------------------------------------------

def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_cross_entropy(logits, targets, ignore_index=-100, label_smoothing=0.0):
    num_classes = logits.shape[-1]
    log_p = np_log_softmax(logits.reshape(-1, num_classes))
    losses = []
    for row, target in zip(log_p, targets.reshape(-1)):
        if target != ignore_index:
            losses.append(-(1 - label_smoothing) * row[target] - label_smoothing * row.mean())
    return sum(losses) / len(losses) if losses else 0.0


def np_kl(target_logits, input_logits):
    """KL(softmax(target) || softmax(input)), summed over classes, averaged over rows."""
    log_q, log_p = np_log_softmax(target_logits), np_log_softmax(input_logits)
    return float((np.exp(log_q) * (log_q - log_p)).sum(axis=-1).mean())


# ---- softmax family -----------------------------------------------------------------------------------

def test_softmax_values(backend_name):
    (x,) = make_inputs([N(4, 6, scale=3.0)], 0)
    y = F.softmax(x).numpy()
    np.testing.assert_allclose(y, np.exp(np_log_softmax(x.numpy())), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-6)


def test_softmax_family_survives_large_logits(backend_name):
    big = Tensor(np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1002.0, -1001.0]], np.float32))
    small = big - big.max(axis=-1, keepdims=True)
    for op in (F.softmax, F.log_softmax):
        out = op(big).numpy()
        assert np.isfinite(out).all(), op.__name__
        np.testing.assert_allclose(out, op(small).numpy(), rtol=1e-6, err_msg=op.__name__)
    loss = F.cross_entropy(big, [1, 0]).item()
    np.testing.assert_allclose(loss, np_cross_entropy(big.numpy(), np.array([1, 0])), rtol=1e-5)


@pytest.mark.parametrize("targets, options", [
    (TARGETS, {}),
    (TARGETS_IGNORED, {}),
    (TARGETS, {"label_smoothing": 0.1}),
    (TARGETS_IGNORED, {"label_smoothing": 0.3}),
    (np.array([0, 1, 2, 3]), {"ignore_index": 2, "label_smoothing": 0.05}),
], ids=["plain", "ignore", "smoothing", "ignore-smoothing", "ignore-a-class"])
def test_cross_entropy_matches_numpy(backend_name, targets, options):
    (logits,) = make_inputs([N(4, 5, scale=2.0)], 3)
    got = F.cross_entropy(logits, targets, **options).item()
    np.testing.assert_allclose(got, np_cross_entropy(logits.numpy(), targets, **options), rtol=1e-5)


def test_cross_entropy_averages_over_the_kept_targets_only(backend_name):
    (logits,) = make_inputs([N(4, 5)], 1)
    with_ignored = F.cross_entropy(logits, TARGETS_IGNORED)
    kept_rows = np.nonzero(TARGETS_IGNORED != -100)[0]
    kept_only = F.cross_entropy(logits[index(kept_rows)], TARGETS_IGNORED[kept_rows])
    np.testing.assert_allclose(with_ignored.item(), kept_only.item(), rtol=1e-6)
    with_ignored.backward()
    assert not grad_of(logits)[TARGETS_IGNORED == -100].any()  # ignored rows get no gradient
    assert grad_of(logits)[kept_rows].any()


def test_cross_entropy_with_every_target_ignored_is_zero(backend_name):
    (logits,) = make_inputs([N(3, 4)], 0)
    loss = F.cross_entropy(logits, [-100, -100, -100])
    assert loss.item() == 0.0
    loss.backward()
    assert not grad_of(logits).any()


def test_cross_entropy_gradient_is_softmax_minus_one_hot(backend_name):
    (logits,) = make_inputs([N(4, 5)], 2)
    F.cross_entropy(logits, TARGETS).backward()
    expected = np.exp(np_log_softmax(logits.numpy()))
    expected[np.arange(4), TARGETS] -= 1.0
    np.testing.assert_allclose(grad_of(logits), expected / 4, rtol=1e-5, atol=1e-7)


def test_cross_entropy_rejects_non_integer_labels(backend_name):
    (logits,) = make_inputs([N(2, 3)], 0)
    with pytest.raises(TypeError, match="class labels must be integers, got dtype float"):
        F.cross_entropy(logits, [1.0, 2.0])


@pytest.mark.parametrize("on_device", [False, True], ids=["host-labels", "device-labels"])
def test_cross_entropy_rejects_out_of_range_labels(backend_name, on_device):
    # CuPy would wrap label 3 around to class 0 without a word: the range is checked explicitly
    (logits,) = make_inputs([N(3, 3)], 0)
    for labels, bad in (([0, 3, 1], r"\[3\]"), ([-1, 0, 2], r"\[-1\]")):
        labels = np.array(labels)
        if on_device:
            labels = backend.from_numpy(labels)
        with pytest.raises(IndexError, match=r"class labels must lie in \[0, 3\), got " + bad):
            F.cross_entropy(logits, labels)


def test_cross_entropy_rejects_mismatched_targets(backend_name):
    (logits,) = make_inputs([N(2, 3, 4)], 0)
    with pytest.raises(ValueError, match=r"targets of shape \(6,\).*logits of shape \(2, 3, 4\).*\(2, 3\)"):
        F.cross_entropy(logits, np.zeros(6, np.int64))
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.5"):
        F.cross_entropy(logits, np.zeros((2, 3), np.int64), label_smoothing=1.5)


# ---- KL divergences -------------------------------------------------------------------------------------

def test_kl_div_matches_numpy(backend_name):
    p, q = make_inputs([N(3, 5, scale=2.0), N(3, 5)], 4)
    got = F.kl_div(p, q).item()
    assert got > 0.0
    np.testing.assert_allclose(got, np_kl(q.numpy(), p.numpy()), rtol=1e-5)


def test_kl_div_rejects_mismatched_shapes(backend_name):
    p, q = make_inputs([N(3, 5), N(3, 4)], 0)
    with pytest.raises(ValueError, match=r"\(3, 5\) and \(3, 4\)"):
        F.kl_div(p, q)


def test_symmetric_kl_is_the_mean_of_both_directions(backend_name):
    p, q = make_inputs([N(4, 6, scale=2.0), N(4, 6)], 5)
    expected = 0.5 * (np_kl(q.numpy(), p.numpy()) + np_kl(p.numpy(), q.numpy()))
    np.testing.assert_allclose(F.symmetric_kl(p, q).item(), expected, rtol=1e-5)
    np.testing.assert_allclose(F.symmetric_kl(q, p).item(), expected, rtol=1e-5)  # symmetric


def test_symmetric_kl_is_zero_for_equal_inputs(backend_name):
    p, q = make_inputs([N(3, 5), N(3, 5)], 6)
    q.data[...] = p.data
    loss = F.symmetric_kl(p, q)
    assert abs(loss.item()) < 1e-7
    loss.backward()
    np.testing.assert_allclose(grad_of(p), 0.0, atol=1e-7)
    np.testing.assert_allclose(grad_of(q), 0.0, atol=1e-7)


def test_symmetric_kl_stops_the_gradient_on_each_target(backend_name):
    specs = [N(3, 5, scale=2.0), N(3, 5)]
    p, q = make_inputs(specs, 8, np.float64)
    p_stop, q_stop = make_inputs(specs, 8, np.float64)
    p_full, q_full = make_inputs(specs, 8, np.float64)
    F.symmetric_kl(p, q).backward()
    symmetric_kl_composed(p_stop, q_stop).backward()
    # the same value with no stop-gradient: its gradient must differ, or the test proves nothing
    ((kl_composed(p_full, q_full) + kl_composed(q_full, p_full)) * 0.5).backward()
    for fused, stopped, full in ((p, p_stop, p_full), (q, q_stop, q_full)):
        np.testing.assert_allclose(grad_of(fused), grad_of(stopped), rtol=1e-8, atol=1e-12)
        assert not np.allclose(grad_of(fused), grad_of(full), rtol=1e-3, atol=1e-6)


# ---- layer norm ---------------------------------------------------------------------------------------

def test_layer_norm_normalises_the_last_axis(backend_name):
    (x,) = make_inputs([N(4, 16, scale=5.0)], 0)
    y = F.layer_norm(x + 3.0, None, None).numpy()
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-3)


def test_layer_norm_matches_numpy(backend_name):
    x, w, b = make_inputs([N(2, 3, 8), N(8), N(8)], 1)
    v = x.numpy().astype(np.float64)
    expected = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-5)
    expected = expected * w.numpy() + b.numpy()
    np.testing.assert_allclose(F.layer_norm(x, w, b).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_layer_norm_frozen_weight_gets_no_gradient(backend_name):
    x, w, b = make_inputs([N(3, 4), N(4), N(4)], 0)
    w.requires_grad = False
    F.layer_norm(x, w, b).sum().backward()
    assert w.grad is None and x.grad is not None and b.grad is not None


# ---- attention's row reductions ---------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 16, 39, 44, 64])
def test_row_max_and_row_sum_equal_the_plain_reductions(backend_name, n):
    # a short last axis, as attention's rows have; odd lengths leave an element out of each halving
    a = Tensor(np.random.default_rng(n).standard_normal((2, 3, 5, n)).astype(np.float32)).data
    a[0, 0, 0, -1] = 50.0                                   # the largest in the last position
    np.testing.assert_array_equal(backend.to_numpy(kernels.row_max(a)), backend.to_numpy(a.max(axis=-1, keepdims=True)))
    np.testing.assert_allclose(backend.to_numpy(kernels.row_sum(a)), backend.to_numpy(a.sum(axis=-1, keepdims=True)),
                               rtol=1e-5, atol=1e-5)
    assert kernels.row_max(a).shape == kernels.row_sum(a).shape == (2, 3, 5, 1)


def test_small_products_run_on_one_blas_thread_and_large_ones_do_not(monkeypatch):
    entered = []

    class Spy:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            pass
    monkeypatch.setattr(backend, "one_blas_thread", Spy)
    rng = np.random.default_rng(0)
    small = [Tensor(rng.standard_normal(shape).astype(np.float32)) for shape in ((6, 8), (16, 8))]
    out = F.linear(*small)
    assert entered and close(out.numpy(), small[0].numpy() @ small[1].numpy().T)   # on a GPU: cuBLAS's order
    entered.clear()
    large = [Tensor(rng.standard_normal((256, 256)).astype(np.float32)) for _ in range(2)]   # 2^24 multiply-adds
    F.linear(*large)
    assert not entered


# ---- GELU -----------------------------------------------------------------------------------------------

GELU_POINTS = np.linspace(-8.0, 8.0, 1601)


def gelu_reference(values):
    return np.array([v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in values])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_erf_form_matches_math_erf(backend_name, dtype):
    x = Tensor(GELU_POINTS, dtype=dtype)
    exact = gelu_reference(x.numpy().astype(np.float64))  # the same (rounded) inputs, in float64
    got = F.gelu(x).numpy().astype(np.float64)
    assert np.abs(got - exact).max() < 1e-6


def test_gelu_erf_derivative_matches_math_erf(backend_name):
    x = Tensor(GELU_POINTS, requires_grad=True, dtype=np.float64)
    F.gelu(x).sum().backward()
    cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in GELU_POINTS])
    pdf = np.exp(-0.5 * GELU_POINTS ** 2) / math.sqrt(2.0 * math.pi)
    assert np.abs(grad_of(x) - (cdf + GELU_POINTS * pdf)).max() < 1e-6


def test_gelu_tanh_form_matches_its_formula_and_the_erf_form(backend_name):
    x = Tensor(GELU_POINTS, dtype=np.float64)
    v = GELU_POINTS
    expected = 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
    approximate = F.gelu(x, approximate=True).numpy()
    np.testing.assert_allclose(approximate, expected, rtol=1e-12, atol=1e-12)
    assert np.abs(approximate - gelu_reference(v)).max() < 1e-3  # close, but a different function
    assert np.abs(approximate - gelu_reference(v)).max() > 1e-5


# ---- dropout --------------------------------------------------------------------------------------------

def test_dropout_is_the_identity_in_evaluation(backend_name):
    (x,) = make_inputs([N(4, 5)], 0)
    out = F.dropout(x, 0.5, training=False)
    np.testing.assert_array_equal(out.numpy(), x.numpy())
    out.sum().backward()
    np.testing.assert_array_equal(grad_of(x), np.ones((4, 5), np.float32))
    np.testing.assert_array_equal(F.dropout(x, 0.0, training=True).numpy(), x.numpy())


def test_dropout_in_training(backend_name):
    p, scale = 0.3, 1.0 / 0.7
    rng = np.random.default_rng(0)
    values = (rng.choice([-1.0, 1.0], (200, 100)) * rng.uniform(0.5, 2.0, (200, 100))).astype(np.float32)
    x = Tensor(values, requires_grad=True)
    out = F.dropout(x, p, training=True)
    assert out.dtype == np.float32
    y = out.numpy()
    kept = y != 0.0
    # zeros exactly where the mask dropped, x / (1 - p) elsewhere
    np.testing.assert_allclose(y[kept], values[kept] * scale, rtol=1e-6)
    # the share dropped is p, and the mean is preserved: 5 standard errors for 20,000 draws
    assert abs((~kept).mean() - p) < 5 * math.sqrt(p * (1 - p) / kept.size)
    ones = F.dropout(Tensor(np.ones((200, 100), np.float32)), p, training=True).numpy()
    assert abs(ones.mean() - 1.0) < 5 * scale * math.sqrt(p * (1 - p) / ones.size)
    # the gradient is the mask times the scale
    g = rng.standard_normal((200, 100)).astype(np.float32)
    out.backward(g)
    np.testing.assert_allclose(grad_of(x), g * kept * np.float32(scale), rtol=1e-6)


def test_dropout_masks_follow_the_seed(backend_name):
    x = Tensor(np.ones((8, 8), np.float32))
    manual_seed(1)
    first = F.dropout(x, 0.5, training=True).numpy()
    second = F.dropout(x, 0.5, training=True).numpy()
    manual_seed(1)
    again = F.dropout(x, 0.5, training=True).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)


def test_dropout_rejects_a_bad_probability(backend_name):
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\), got 1.0"):
        F.dropout(Tensor([1.0]), 1.0, training=True)


# ---- embedding ------------------------------------------------------------------------------------------

def test_embedding_picks_rows_and_adds_up_repeated_ids(backend_name):
    (weight,) = make_inputs([N(5, 3)], 0)
    out = F.embedding(IDS, weight)
    np.testing.assert_array_equal(out.numpy(), weight.numpy()[IDS])
    out.sum().backward()
    counts = np.bincount(IDS.ravel(), minlength=5).astype(np.float32)  # id 1 is picked three times
    np.testing.assert_array_equal(grad_of(weight), np.repeat(counts[:, None], 3, axis=1))


@pytest.mark.parametrize("on_device", [False, True], ids=["host-ids", "device-ids"])
def test_embedding_rejects_out_of_range_ids(backend_name, on_device):
    # CuPy would wrap id 7 around to row 2 without a word: the range is checked explicitly
    (weight,) = make_inputs([N(5, 3)], 0)
    for ids, bad in (([[0, 7], [1, 2]], r"\[7\]"), ([0, -2], r"\[-2\]")):
        ids = np.array(ids)
        if on_device:
            ids = backend.from_numpy(ids)
        with pytest.raises(IndexError, match=r"embedding indices must lie in \[0, 5\), got " + bad):
            F.embedding(ids, weight)


def test_embedding_rejects_non_integer_ids(backend_name):
    (weight,) = make_inputs([N(5, 3)], 0)
    with pytest.raises(TypeError, match="embedding indices must be integers, got dtype float32"):
        F.embedding(Tensor([1.0, 2.0]), weight)
