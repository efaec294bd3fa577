"""PHM layers, the PHM adapter and MixPHM: the Kronecker sum, gradients, the redundancy and alignment
terms against hand-worked values, counts on MiniLM's shape, AdaMix routing, and what merging keeps."""
import numpy as np
import pytest

from tinymix import adamix, backend
from tinymix.gradient_check import gradcheck
from tinymix.neighbours import phm
from tinymix.tensor import Tensor, no_grad

from neighbours_models import logits, minilm_shaped, tiny_batch, tiny_classifier

pytestmark = pytest.mark.numerics


def mixphm_model(**changes):
    settings = dict(reduction_factor=4, n=2, phm_rank=2, dropout=0.0)
    return phm.inject(tiny_classifier(), phm.MixPHMConfig(**{**settings, **changes}))


def spread_experts(model, std=0.5):
    """Experts start identical (as the official deep copy); give each its own factors, and the rules
    a visible size, so that merging choices show."""
    model.phm_rule.data = backend.host_normal(model.phm_rule.shape, 0.5)
    for mixture in adamix.mixtures(model):
        for expert in mixture.experts:
            for p in (expert.W_left, expert.W_right, expert.bias):
                p.data = backend.host_normal(p.shape, std)
    return model


def tensors(*shapes, std=0.7):
    return [Tensor(backend.host_normal(s, std), requires_grad=True) for s in shapes]


# ---- 1. the PHM layer ----------------------------------------------------------------------------------

def test_the_phm_matrix_is_the_sum_of_kronecker_products_of_rules_and_low_rank_factors(backend_name):
    rules = phm.make_rules(2)
    rules.data = backend.host_normal((2, 2, 2), 1.0)
    layer = phm.PHMLinear(6, 4, rules, rank=1)
    A = backend.to_numpy(rules.data)
    W = [backend.to_numpy(layer.W_left.data)[s] @ backend.to_numpy(layer.W_right.data)[s] for s in range(2)]
    H = sum(np.kron(A[s], W[s]) for s in range(2))                           # (in, out), by np.kron
    np.testing.assert_allclose(backend.to_numpy(layer.weight.data), H.T, rtol=1e-5, atol=1e-7)
    x = backend.host_normal((3, 6), 1.0)
    layer.bias.data = backend.host_normal((4,), 1.0)
    expected = backend.to_numpy(x) @ H + backend.to_numpy(layer.bias.data)
    np.testing.assert_allclose(layer(Tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_phm_linear_gradients_match_central_differences(backend_name):
    rules = phm.make_rules(2)
    layer = phm.PHMLinear(4, 6, rules, rank=2)
    x, A, L, R, b = tensors((2, 3, 4), (2, 2, 2), (2, 2, 2), (2, 2, 3), (6,))

    def forward(x, A, L, R, b):
        layer.shared, layer.W_left, layer.W_right, layer.bias = (A,), L, R, b
        return layer(x)
    assert gradcheck(forward, x, A, L, R, b)


def test_a_mixphm_adapter_averaged_at_inference_has_the_right_gradients(backend_name):
    """The adapter with a Mixture of PHM up-projections, in eval (the deterministic average)."""
    rules = phm.make_rules(2)
    down = phm.PHMLinear(4, 2, rules, rank=1)
    up = adamix.make_mixture(lambda: phm.PHMLinear(2, 4, rules, rank=1), 2, "independent")
    adapter = phm.PHMAdapter(down, up, dropout=0.5, scale=1.0).eval()
    h = Tensor(backend.host_normal((2, 3, 4), 1.0), requires_grad=True)
    experts = up.experts
    inputs = [h, *tensors((2, 2, 2), (2, 2, 1), (2, 1, 1), (2, 1, 1), (2, 1, 2), (4,), (4,))]
    fixed = [Tensor(backend.host_normal(s, 0.7).astype("float64")) for s in ((2, 1, 1), (2, 1, 2))]

    def forward(h, A, dL, dR, L0, R0, b0, b1):
        down.shared = experts[0].shared = experts[1].shared = (A,)
        down.W_left, down.W_right = dL, dR
        experts[0].W_left, experts[0].W_right, experts[0].bias = L0, R0, b0
        experts[1].bias = b1
        experts[1].W_left, experts[1].W_right = fixed              # expert 1's factors: held fixed
        return adapter(h)
    assert gradcheck(forward, *inputs)


# ---- 4. the redundancy and alignment terms ------------------------------------------------------------

def test_redundancy_is_lambda_times_the_off_diagonal_squares_of_the_token_cross_correlation(backend_name):
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    u = Tensor(backend.from_numpy(np.array([[e1, [0.0, 3.0]]], np.float32)))     # lengths do not matter
    h = Tensor(backend.from_numpy(np.array([[[0.0, 2.0], e1]], np.float32)))
    # C = e1 e2^T + e2 e1^T: two off-diagonal ones; B = 1
    assert float(phm.redundancy_loss(u, h, lam=0.5).item()) == pytest.approx(0.5 * 2, rel=1e-6)
    # the second token is padding: C = e1 e2^T
    assert float(phm.redundancy_loss(u, h, np.array([[1, 0]]), lam=0.5).item()) == pytest.approx(0.5, rel=1e-6)
    # u and h along the same directions: C is diagonal, nothing is redundant
    assert float(phm.redundancy_loss(u, Tensor(u.data * 2), lam=0.5).item()) == pytest.approx(0, abs=1e-7)
    # two examples, each with that second token padded: C = 2 e1 e2^T, sum of squares 4, over B = 2
    u2, h2 = (Tensor(backend.from_numpy(np.concatenate([t.numpy()] * 2))) for t in (u, h))
    assert float(phm.redundancy_loss(u2, h2, np.array([[1, 0], [1, 0]]), lam=0.5).item()) == pytest.approx(1.0)


def test_redundancy_and_alignment_gradients_match_central_differences(backend_name):
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    u, h, pooled = tensors((2, 3, 4), (2, 3, 4), (2, 4))
    assert gradcheck(lambda u, h: phm.redundancy_loss(u, h, mask), u, h)
    assert gradcheck(lambda u, pooled: phm.alignment_loss(u, pooled, mask), u, pooled)


def test_alignment_is_the_jensen_shannon_estimate_over_the_real_tokens(backend_name):
    rng = np.random.default_rng(0)
    u, pooled = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 5))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    softplus = lambda x: np.log1p(np.exp(x))
    # the official recipe: gather the real tokens, score each against every example's pooled vector
    tokens = np.concatenate([u[b, :mask[b].sum()] for b in range(3)])
    owner = np.concatenate([[b] * mask[b].sum() for b in range(3)])
    scores = tokens @ pooled.T
    own = np.eye(3)[owner]
    positive = np.sum(np.log(2) - softplus(-scores * own)) / len(tokens)
    q = scores * (1 - own)
    negative = np.sum(softplus(-q) + q - np.log(2)) / (len(tokens) * 2)
    got = phm.alignment_loss(*(Tensor(backend.from_numpy(a.astype(np.float32))) for a in (u, pooled)), mask)
    assert float(got.item()) == pytest.approx(negative - positive, rel=1e-5)


def test_the_regulariser_averages_the_layers_and_reaches_only_the_adapters():
    model = spread_experts(mixphm_model(redundancy_weight=0.2))
    ids, mask = tiny_batch()
    model(ids, mask)
    pairs = [a.last for a in phm.adapters(model)]
    expected = 0.2 * np.mean([float(phm.redundancy_loss(u, h, mask).item()) for u, h in pairs])
    loss = phm.redundancy_regularizer(model, mask)
    assert float(loss.item()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    touched = {n for n, p in model.named_parameters() if p.grad is not None}
    assert touched and all(".ffn_adapter." in n or n == "phm_rule" for n in touched)
    with pytest.raises(RuntimeError, match="after a forward pass in training mode"):
        model.eval()(ids, mask)
        phm.redundancy_regularizer(model, mask)


# ---- 3. MixPHM: AdaMix's routing over PHM experts -------------------------------------------------

def test_mixphm_shares_the_down_projection_and_the_rules_and_routes_one_up_expert_per_call():
    model = mixphm_model()
    adapter = phm.adapters(model)[0]
    assert isinstance(adapter.down, phm.PHMLinear) and isinstance(adapter.up, adamix.Mixture)
    experts = adapter.up.experts
    assert all(np.array_equal(backend.to_numpy(e.W_left.data), backend.to_numpy(experts[0].W_left.data))
               for e in experts)                                        # identical starts (deep copy)
    assert all(layer.shared[0] is model.phm_rule for _, layer in model.named_modules()
               if isinstance(layer, phm.PHMLinear))
    ids, mask = tiny_batch()
    for _ in range(8):
        model(ids, mask)
    assert sum(adapter.up.route_counts) == 8 and max(adapter.up.route_counts) < 8
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names.count("phm_rule") == 1 and all(
        n == "phm_rule" or n.startswith("classifier.") or ".ffn_adapter." in n for n in names)


def test_counts_on_minilms_shape_match_the_closed_form():
    d, L, n, k, bottleneck, head = 384, 6, 4, 8, 32, 384 * 2 + 2
    phm_params = lambda i, o: n * k * (i // n + o // n) + o          # L, R and the bias
    down, up = phm_params(d, bottleneck), phm_params(bottleneck, d)
    assert (down, up) == (3360, 3712)
    single = L * (down + up) + n ** 3 + head
    assert phm.count(phm.inject(minilm_shaped(), phm.PHMAdapterConfig())) == (single, single) == (43_266, 43_266)
    model = phm.inject(minilm_shaped(), phm.MixPHMConfig())
    assert phm.count(model) == (L * (down + 4 * up) + n ** 3 + head, single) == (110_082, 43_266)
    phm.merge(model)
    assert model.num_parameters(trainable_only=True) == single


# ---- 5. merging: what is and is not the experts' average ----------------------------------------------

def test_the_dense_merge_is_exactly_the_mean_of_the_experts_and_the_official_factor_merge_is_not(backend_name):
    ids, mask = tiny_batch()
    model = spread_experts(mixphm_model()).eval()
    averaged = logits(model, ids, mask)                 # the Mixture's average: mean H, exact
    adapter = phm.adapters(model)[0]
    h = Tensor(backend.host_normal((2, 3, 32), 1.0))
    with no_grad():
        outputs = []
        for k in range(4):
            adamix.set_inference_mode(model, "fixed", k)
            outputs.append(adapter(h).numpy())
        adamix.set_inference_mode(model, "average")
        np.testing.assert_allclose(adapter(h).numpy(), np.mean(outputs, axis=0), rtol=1e-4, atol=1e-5)

    dense = spread_experts(mixphm_model()).eval()
    phm.merge(dense, "dense")
    assert not adamix.mixtures(dense)
    np.testing.assert_allclose(logits(dense, ids, mask), averaged, rtol=1e-4, atol=1e-5)

    factors = spread_experts(mixphm_model()).eval()
    phm.merge(factors, "factors")
    merged_up = phm.adapters(factors)[0].up
    assert isinstance(merged_up, phm.PHMLinear) and merged_up.shared[0] is factors.phm_rule
    experts = adapter.up.experts
    for name in ("W_left", "W_right", "bias"):
        mean = np.mean([backend.to_numpy(getattr(e, name).data) for e in experts], axis=0)
        np.testing.assert_allclose(backend.to_numpy(getattr(merged_up, name).data), mean, rtol=1e-6, atol=1e-7)
    assert not np.allclose(logits(factors, ids, mask), averaged, rtol=1e-3, atol=1e-4)


def test_the_factor_merge_is_exact_while_the_experts_are_still_identical():
    ids, mask = tiny_batch()
    model = mixphm_model().eval()
    for adapter in phm.adapters(model):                              # the official identical start, moved
        for expert in adapter.up.experts:
            expert.bias.data = backend.from_numpy(np.linspace(-1, 1, 32, dtype=np.float32))
    before = logits(model, ids, mask)
    phm.merge(model)
    np.testing.assert_allclose(logits(model, ids, mask), before, rtol=1e-5, atol=1e-6)


# ---- settings ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, says", [
    (dict(n=3), "multiples of n = 3"),
    (dict(reduction_factor=64), "multiples of n"),
    (dict(phm_rank=0), "at least 1"),
    (dict(num_experts=0), "num_experts must be at least 1"),
    (dict(dropout=1.0), "dropout must be in"),
])
def test_bad_settings_are_clear_errors(changes, says):
    with pytest.raises(ValueError, match=says):
        mixphm_model(**changes)
    with pytest.raises(ValueError, match="unknown merge"):
        phm.merge(mixphm_model(), "best")
