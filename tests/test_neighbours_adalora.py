"""AdaLoRA: the SVD-form layer, its regulariser, the importance scores, the cubic budget and the
allocation, on both backends; counts on MiniLM's shape; and parity with Hugging Face PEFT's AdaLoRA
when PyTorch and PEFT are installed."""
import math

import numpy as np
import pytest

import tinymix
from tinymix import backend, optim
from tinymix.gradient_check import gradcheck
from tinymix.neighbours import adalora
from tinymix.nn import Linear, Module
from tinymix.tensor import Tensor

from neighbours_models import logits, minilm_shaped, tiny_batch, tiny_classifier

pytestmark = pytest.mark.numerics


def config(**changes):
    settings = dict(init_r=4, target_r=2, dropout=0.0, tinit=2, tfinal=3, deltaT=2, total_step=12)
    return adalora.AdaLoRAConfig(**{**settings, **changes})


def adalora_model(**changes):
    model = adalora.inject(tiny_classifier(), config(**changes))
    for _, layer in adalora.svd_layers(model):          # lambda starts at 0: give the update a value
        layer.lora_E.data = backend.host_normal(layer.lora_E.shape, 0.5)
    return model


# ---- the layer and the regulariser: gradients ----------------------------------------------------

def test_svd_linear_gradients_match_central_differences(backend_name):
    base = Linear(5, 3)
    base.weight.data, base.bias.data = base.weight.data.astype("float64"), base.bias.data.astype("float64")
    layer = adalora.SVDLinear(base, rank=2, alpha=4.0, dropout=0.0)
    x = Tensor(backend.host_normal((2, 3, 5), 1.0), requires_grad=True)
    params = [Tensor(backend.host_normal(p.shape, 0.7), requires_grad=True)
              for p in (layer.lora_A, layer.lora_E, layer.lora_B)]

    def forward(x, A, E, B):
        layer.lora_A, layer.lora_E, layer.lora_B = A, E, B
        return layer(x)
    assert gradcheck(forward, x, *params)


def test_orthogonal_regularizer_gradients_match_central_differences(backend_name):
    model = adalora_model()
    layers = [layer for _, layer in adalora.svd_layers(model)]
    params = [Tensor(backend.host_normal(getattr(layer, part).shape, 0.4), requires_grad=True)
              for layer in layers[:2] for part in ("lora_A", "lora_B")]

    def regularizer(*tensors):
        for i, layer in enumerate(layers[:2]):
            layer.lora_A, layer.lora_B = tensors[2 * i], tensors[2 * i + 1]
        for layer in layers[2:]:                          # the others: fixed, in float64
            layer.lora_A = Tensor(layer.lora_A.data.astype("float64"))
            layer.lora_B = Tensor(layer.lora_B.data.astype("float64"))
        return adalora.orthogonal_regularizer(model, 0.1)
    assert gradcheck(regularizer, *params)


def test_orthogonal_regularizer_is_zero_for_orthonormal_factors_and_the_mean_of_norms_otherwise():
    model = adalora_model()
    layers = [layer for _, layer in adalora.svd_layers(model)]
    rng = np.random.default_rng(0)
    for layer in layers:
        out, r = layer.lora_B.shape
        layer.lora_B.data = backend.from_numpy(np.linalg.qr(rng.normal(size=(out, r)))[0].astype("float32"))
        layer.lora_A.data = backend.from_numpy(np.linalg.qr(rng.normal(size=(layer.lora_A.shape[1], r)))[0].T
                                               .astype("float32"))
    assert float(adalora.orthogonal_regularizer(model, 0.1).item()) == pytest.approx(0, abs=1e-5)
    # Q = 2 * (orthonormal rows): Q Q^T - I = 3 I, norm 3 sqrt(r); the P's stay orthonormal
    for layer in layers:
        layer.lora_A.data = layer.lora_A.data * 2
    r, matrices = 4, 2 * len(layers)
    expected = 0.1 * len(layers) * 3 * math.sqrt(r) / matrices
    assert float(adalora.orthogonal_regularizer(model, 0.1).item()) == pytest.approx(expected, rel=1e-5)


def test_the_regulariser_gives_zero_gradient_not_nan_at_an_exactly_orthonormal_factor():
    model = adalora_model(init_r=2, target_r=1)
    layer = adalora.svd_layers(model)[0][1]
    layer.lora_A.data = xp_eye_rows(2, layer.lora_A.shape[1])
    layer.lora_B.data = xp_eye_rows(2, layer.lora_B.shape[0]).T.copy()
    adalora.orthogonal_regularizer(model, 0.1).backward()
    assert np.all(layer.lora_A.grad == 0) and np.all(layer.lora_B.grad == 0)


def xp_eye_rows(rows, columns):
    return backend.from_numpy(np.eye(rows, columns, dtype=np.float32))


# ---- the layer: the update it adds, merging --------------------------------------------------------

def test_the_update_is_alpha_over_r_P_diag_lambda_Q_and_starts_at_zero(backend_name):
    model = adalora.inject(tiny_classifier(), config()).eval()
    ids, mask = tiny_batch()
    before = logits(model, ids, mask)
    adalora.merge(model)
    assert np.array_equal(logits(model, ids, mask), before)     # lambda = 0: the update is exactly 0
    adalora.unmerge(model)
    layer = adalora.svd_layers(model)[0][1]
    P, E, Q = (backend.to_numpy(p.data) for p in (layer.lora_B, layer.lora_E, layer.lora_A))
    assert np.all(E == 0) and 0.015 < P.std() < 0.025 and 0.015 < Q.std() < 0.025   # N(0, 0.02)
    E = np.arange(1, 5, dtype=np.float32).reshape(-1, 1)
    layer.lora_E.data = backend.from_numpy(E)
    expected = 32.0 / (4 + 1e-5) * P @ np.diag(E[:, 0]) @ Q
    np.testing.assert_allclose(backend.to_numpy(layer.delta_weight()), expected, rtol=1e-5, atol=1e-8)


def test_merge_then_unmerge_keeps_the_outputs(backend_name):
    model = adalora_model().eval()
    ids, mask = tiny_batch()
    before = logits(model, ids, mask)
    weight = backend.to_numpy(model.transformer.layers[0].attention.query.base.weight.data).copy()
    adalora.merge(model)
    merged = logits(model, ids, mask)
    np.testing.assert_allclose(merged, before, rtol=1e-4, atol=1e-5)
    assert not np.allclose(backend.to_numpy(model.transformer.layers[0].attention.query.base.weight.data), weight)
    with pytest.raises(RuntimeError, match="call unmerge"):
        model.train()(ids, mask)
    adalora.unmerge(model.eval())
    np.testing.assert_allclose(logits(model, ids, mask), before, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(model.transformer.layers[0].attention.query.base.weight.data),
                               weight, atol=1e-6)


# ---- importance, budget, allocation ------------------------------------------------------------------

def test_the_cubic_budget_at_known_steps():
    model = adalora.inject(tiny_classifier(), adalora.AdaLoRAConfig(
        init_r=6, target_r=4, tinit=10, tfinal=20, deltaT=5, total_step=100))
    allocator = adalora.RankAllocator(model, model.peft_config)
    assert (allocator.init_budget, allocator.target_budget) == (24, 16)      # 2 layers x (query, value)
    # b(t) = int(16 + 8 (1 - (t - 10) / 70)^3) between t = 11 and 80, worked by hand
    assert allocator.budget(0) == (24, False)
    assert allocator.budget(10) == (24, False)
    assert allocator.budget(11) == (23, False)                 # 16 + 8 * 0.9577 = 23.66
    assert allocator.budget(15) == (22, True)                  # 16 + 8 * (65/70)^3 = 22.41
    assert allocator.budget(45) == (17, True)                  # 16 + 8 * 0.5^3 = 17.0
    assert allocator.budget(46) == (16, False)                 # 16 + 8 * (34/70)^3 = 16.92
    assert allocator.budget(80) == (16, True)
    assert allocator.budget(81) == (16, True) and allocator.budget(99) == (16, True)


def test_the_moving_averages_of_sensitivity_and_uncertainty(backend_name):
    model = adalora_model(beta1=0.5, beta2=0.75)
    allocator = adalora.RankAllocator(model, model.peft_config)
    name, layer = adalora.svd_layers(model)[0]
    for _, other in adalora.svd_layers(model):
        for part in allocator.PARTS:
            getattr(other, part).grad = backend.from_numpy(np.ones(getattr(other, part).shape, np.float32))
    layer.lora_E.data = backend.from_numpy(np.array([[2.0], [-1.0], [0.0], [4.0]], np.float32))
    layer.lora_E.grad = backend.from_numpy(np.array([[1.0], [3.0], [5.0], [-0.5]], np.float32))
    allocator.update_importance(model)              # I = |theta g| = (2, 3, 0, 2)
    # I_bar = 0.5 I = (1, 1.5, 0, 1); U_bar = 0.25 |I - I_bar| = (0.25, 0.375, 0, 0.25)
    np.testing.assert_allclose(backend.to_numpy(allocator.sensitivity[name, "lora_E"]).ravel(), [1, 1.5, 0, 1])
    np.testing.assert_allclose(backend.to_numpy(allocator.uncertainty[name, "lora_E"]).ravel(),
                               [0.25, 0.375, 0, 0.25])
    layer.lora_E.grad = backend.from_numpy(np.array([[0.0], [1.0], [1.0], [1.0]], np.float32))
    allocator.update_importance(model)              # I = (0, 1, 0, 4)
    # I_bar = 0.5 I_bar + 0.5 I = (0.5, 1.25, 0, 2.5); U_bar = 0.75 U_bar + 0.25 |I - I_bar|
    np.testing.assert_allclose(backend.to_numpy(allocator.sensitivity[name, "lora_E"]).ravel(), [0.5, 1.25, 0, 2.5])
    np.testing.assert_allclose(backend.to_numpy(allocator.uncertainty[name, "lora_E"]).ravel(),
                               [0.3125, 0.34375, 0, 0.5625])


def test_a_triplet_scores_its_lambda_plus_the_means_over_its_row_of_Q_and_its_column_of_P(backend_name):
    model = adalora_model(init_r=2, target_r=1)
    allocator = adalora.RankAllocator(model, model.peft_config)
    name, layer = adalora.svd_layers(model)[0]
    in_features, out_features = layer.lora_A.shape[1], layer.lora_B.shape[0]
    parts = {"lora_E": np.array([[1.0], [2.0]]),
             "lora_A": np.stack([np.linspace(0, 2, in_features), np.full(in_features, 3.0)]),      # means 1, 3
             "lora_B": np.stack([np.full(out_features, 10.0), np.linspace(0, 1, out_features)], 1)}  # 10, 0.5
    for other, _ in adalora.svd_layers(model):
        for part, values in parts.items():
            allocator.sensitivity[other, part] = backend.from_numpy(values.astype(np.float32))
            allocator.uncertainty[other, part] = backend.from_numpy(np.full(values.shape, 2, np.float32))
    # s = I_bar * U_bar = 2 * values: triplet 0 scores 2 (1 + 1 + 10) = 24, triplet 1 2 (2 + 3 + 0.5) = 11
    np.testing.assert_allclose(backend.to_numpy(allocator.triplet_scores(model)[name]), [24, 11], rtol=1e-6)


def hand_made_scores(allocator, model, triplet_scores):
    """Set the moving averages so that triplet i of layer l scores triplet_scores[l][i]: the lambda
    entry carries 1/2 of it, every entry of Q's row i and P's column i 1/4 (their means add the rest)."""
    for (name, layer), scores in zip(adalora.svd_layers(model), triplet_scores):
        s = np.asarray(scores, np.float32).reshape(-1, 1)
        allocator.uncertainty[name, "lora_E"] = backend.from_numpy(np.ones_like(s))
        allocator.sensitivity[name, "lora_E"] = backend.from_numpy(s / 2)
        for part, shape in (("lora_A", layer.lora_A.shape), ("lora_B", layer.lora_B.shape)):
            quarter = np.broadcast_to(s / 4 if part == "lora_A" else s.T / 4, shape).astype(np.float32)
            allocator.sensitivity[name, part] = backend.from_numpy(quarter)
            allocator.uncertainty[name, part] = backend.from_numpy(np.ones(shape, np.float32))


def test_the_allocator_keeps_exactly_the_budgeted_triplets_with_the_highest_scores(backend_name):
    model = adalora_model()
    allocator = adalora.RankAllocator(model, model.peft_config)
    scores = [[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.05, 0.6], [0.7, 0.4, 0.15, 0.35], [0.01, 0.02, 0.95, 0.25]]
    hand_made_scores(allocator, model, scores)
    before = [backend.to_numpy(layer.lora_E.data).ravel().copy() for _, layer in adalora.svd_layers(model)]
    for budget in (16, 11, 7, 3):
        pattern = allocator.mask_to_budget(model, budget)
        flat = np.concatenate(scores)
        expected_kept = flat >= np.sort(flat)[::-1][budget - 1]             # the `budget` highest scores
        assert np.array_equal(np.concatenate(list(pattern.values())), expected_kept)
        assert sum(int(kept.sum()) for kept in pattern.values()) == budget
        for (name, layer), start in zip(adalora.svd_layers(model), before):
            E = backend.to_numpy(layer.lora_E.data).ravel()
            assert np.array_equal(E, np.where(pattern[name], start, 0))  # masked: 0; kept: untouched


def test_a_training_run_ends_at_the_target_budget_and_keeps_its_final_pattern(backend_name):
    model = adalora_model()
    allocator = adalora.RankAllocator(model, model.peft_config)
    optimizer = optim.AdamW(model.trainable_parameters(), lr=1e-2)
    ids, mask = tiny_batch()
    labels = np.array([0, 1, 1, 0])
    budgets, patterns = [], []
    for step in range(12):
        loss = tinymix.functional.cross_entropy(model(ids, mask), labels)
        (loss + adalora.orthogonal_regularizer(model, 0.1)).backward()
        optimizer.step()
        budget, pattern = allocator.update_and_allocate(model, step)
        model.zero_grad()
        budgets.append(budget)
        kept = sum(int((backend.to_numpy(layer.lora_E.data) != 0).sum()) for _, layer in adalora.svd_layers(model))
        if pattern is not None:
            patterns.append({k: v.copy() for k, v in pattern.items()})
            assert kept <= budget and sum(int(v.sum()) for v in pattern.values()) == budget
    # init 16 -> target 8 between tinit 2 and 12 - tfinal 3 = 9: masks at even steps, then every step
    assert budgets[:3] == [16, 16, 16] and budgets[9:] == [8, 8, 8]
    assert budgets[3] < 16 and budgets == sorted(budgets, reverse=True)
    assert all(np.array_equal(p[k], patterns[-1][k]) for p in patterns[-3:] for k in p)
    trainable, deployed = adalora.count(model)
    assert trainable - deployed == 8 * (32 + 32 + 1)                 # 8 of the 16 triplets dropped


def test_allocating_without_gradients_is_a_clear_error():
    model = adalora_model()
    allocator = adalora.RankAllocator(model, model.peft_config)
    with pytest.raises(RuntimeError, match="before the gradients are cleared"):
        allocator.update_and_allocate(model, 0)


# ---- counts and settings -----------------------------------------------------------------------------

def test_counts_on_minilms_shape_match_the_closed_form():
    model = adalora.inject(minilm_shaped(), adalora.AdaLoRAConfig(init_r=6, target_r=4, total_step=320))
    d, L, head = 384, 6, 384 * 2 + 2
    trainable, deployed = adalora.count(model)
    assert trainable == deployed == L * 2 * 6 * (d + d + 1) + head == 56_138
    for _, layer in adalora.svd_layers(model):                          # a final pattern of 4 per matrix
        layer.kept = np.arange(6) < 4
    assert adalora.count(model) == (56_138, L * 2 * 4 * (d + d + 1) + head)


@pytest.mark.parametrize("changes, says", [
    (dict(total_step=None), "needs total_step"),
    (dict(tinit=5, tfinal=7, total_step=12), "0 <= tinit < total_step - tfinal"),
    (dict(target_r=5), "0 <= target_r <= init_r"),
    (dict(init_r=40, target_r=2), "rank must be between 1 and min"),
    (dict(beta1=1.0), "beta1 must be between 0 and 1"),
    (dict(deltaT=0), "deltaT"),
    (dict(orth_reg_weight=-1), "orth_reg_weight must be at least 0"),
    (dict(target_modules=("qkv",)), "unknown LoRA target modules"),
])
def test_bad_settings_are_clear_errors(changes, says):
    with pytest.raises(ValueError, match=says):
        adalora.inject(tiny_classifier(), config(**changes))


def test_injecting_twice_is_refused_and_the_base_is_frozen():
    model = adalora.inject(tiny_classifier(), config())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("classifier.") for n in trainable)
    with pytest.raises(RuntimeError, match="already has adalora modules"):
        adalora.inject(model, config())


# ---- parity with Hugging Face PEFT's AdaLoRA ---------------------------------------------------------

class TwoLinears(Module):
    """The tinymix side of the parity check: value(tanh(query(x)))."""

    def __init__(self, q, v):
        self.query, self.value = q, v

    def forward(self, x):
        return self.value(self.query(x).tanh())


def test_parity_with_peft_adalora_outputs_scores_and_masks():
    torch = pytest.importorskip("torch")
    peft_library = pytest.importorskip("peft")
    torch.manual_seed(0)
    d, r, steps = 8, 4, 20
    settings = dict(init_r=r, target_r=1, tinit=3, tfinal=5, deltaT=2, beta1=0.85, beta2=0.85, total_step=steps)

    class Torch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.value = torch.nn.Linear(d, d), torch.nn.Linear(d, d)

        def forward(self, x):
            return self.value(torch.tanh(self.query(x)))

    reference = peft_library.get_peft_model(Torch(), peft_library.AdaLoraConfig(
        target_modules=["query", "value"], lora_alpha=16, lora_dropout=0.0, orth_reg_weight=0.1, **settings))
    ours = TwoLinears(Linear(d, d), Linear(d, d))
    layers = {}
    for name in ("query", "value"):
        theirs = getattr(reference.base_model.model, name)
        base = getattr(ours, name)
        base.weight.data = backend.from_numpy(theirs.base_layer.weight.detach().numpy())
        base.bias.data = backend.from_numpy(theirs.base_layer.bias.detach().numpy())
        base.requires_grad_(False)
        layer = adalora.SVDLinear(base, r, 16.0, 0.0)
        with torch.no_grad():
            theirs.lora_E["default"].normal_(0, 0.5)           # lambda != 0, so the update shows
        for part in ("lora_A", "lora_E", "lora_B"):
            getattr(layer, part).data = backend.from_numpy(getattr(theirs, part)["default"].detach().numpy().copy())
        setattr(ours, name, layer)
        layers[name] = (layer, theirs)
    allocator = adalora.RankAllocator(ours, adalora.AdaLoRAConfig(**settings))

    x = np.random.default_rng(0).normal(size=(5, d)).astype(np.float32)
    target = np.random.default_rng(1).normal(size=(5, d)).astype(np.float32)
    worst_output, worst_lambda = 0.0, 0.0
    for step in range(steps):
        out_theirs = reference(torch.from_numpy(x))
        out_ours = ours(Tensor(backend.from_numpy(x)))
        worst_output = max(worst_output, float(np.abs(out_theirs.detach().numpy() - out_ours.numpy()).max()))
        ((out_theirs - torch.from_numpy(target)) ** 2).mean().backward()
        ((out_ours - Tensor(backend.from_numpy(target))) ** 2).mean().backward()
        # the same plain gradient step on both sides, so the parameters stay comparable
        with torch.no_grad():
            for p in reference.parameters():
                if p.requires_grad:
                    p -= 0.5 * p.grad
        for p in ours.trainable_parameters():
            p.data = p.data - 0.5 * p.grad
        reference.base_model.update_and_allocate(step)
        allocator.update_and_allocate(ours, step)
        for p in reference.parameters():
            p.grad = None
        ours.zero_grad()
        for name, (layer, theirs) in layers.items():
            E_theirs = theirs.lora_E["default"].detach().numpy().ravel()
            E_ours = backend.to_numpy(layer.lora_E.data).ravel()
            assert np.array_equal(E_theirs == 0, E_ours == 0), f"step {step}, {name}: different masks"
            worst_lambda = max(worst_lambda, float(np.abs(E_theirs - E_ours).max()))
    pattern = reference.peft_config["default"].rank_pattern
    for name, (layer, _) in layers.items():
        key = next(k for k in pattern if name in k.split("."))
        assert list(layer.kept) == list(pattern[key])
    assert sum(sum(v) for v in pattern.values()) == 2                  # target_r 1 x 2 matrices
    print(f"AdaLoRA parity with PEFT {peft_library.__version__}: max |output difference| {worst_output:.2e}, "
          f"max |lambda difference| {worst_lambda:.2e} over {steps} steps")
    assert worst_output < 1e-5 and worst_lambda < 1e-5
