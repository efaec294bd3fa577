"""The invariants of AdaMix (docs/adamix.md), each checked on a tiny random Transformer.

Routing (§3): in training a mixture is exactly one expert, drawn uniformly, the down and up sides
independently, AdaMix-LoRA's query and value sharing one index; the same seed gives the same routes on
every backend. Training: only the routed experts get a gradient and move; the backbone never moves.
Inference (§6): "average" == a plain module holding the experts' mean weights == the merged model,
never stale after more training; "fixed" == expert k; "random" == one expert per example.
Consistency (§4): symmetric KL, zero for identical passes, gradient only into each term's student side,
averaged over target tokens only for language models.
"""
import numpy as np
import pytest

import tinymix
from tinymix import adamix, backend, peft
from tinymix import functional as F
from tinymix.nn import Linear
from tinymix.optim import AdamW
from tinymix.tensor import Tensor, no_grad
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig

from numeric import assert_close

pytestmark = pytest.mark.numerics

NUM_EXPERTS = 4


# ---- a tiny model and its inputs ----------------------------------------------------------------------

def tiny_config(num_layers=2, dropout=0.0):
    return TransformerConfig(vocab_size=50, hidden_size=32, num_layers=num_layers, num_heads=4,
                             intermediate_size=64, max_positions=16, dropout=dropout)


def tiny_classifier(config=None, seed=0, dropout=0.0):
    """A SequenceClassifier whose backbone and head depend on the seed only (same seed, same weights)."""
    tinymix.manual_seed(seed)
    return SequenceClassifier(Transformer(config or tiny_config()), 2, dropout=dropout)


def adamix_config(module, sharing="up", lora_dropout=0.0, num_experts=NUM_EXPERTS):
    return peft.AdaMixConfig(module=module, num_experts=num_experts, sharing=sharing,
                             adapter=peft.AdapterConfig(bottleneck=8),
                             lora=peft.LoRAConfig(rank=4, dropout=lora_dropout))


def plain_config(module, lora_dropout=0.0):
    """The single module that an AdaMix config mixes."""
    if module == "adapter":
        return peft.AdapterConfig(bottleneck=8)
    return peft.LoRAConfig(rank=4, dropout=lora_dropout)


def tiny_batch(batch=6, length=7, seed=1):
    """(input_ids, attention_mask, labels) as host arrays; the last examples are padded."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    mask[batch // 2:, length - 2:] = 0
    ids[mask == 0] = 0
    return ids, mask, rng.integers(0, 2, size=batch)


def enlarge_trainable(model, std=0.2, lora_B_std=0.05):
    """Redraw every trainable weight larger than its initialisation, so that each expert visibly
    changes the logits (at std 0.02 the adapters barely do; LoRA's B starts at zero, no update at all)."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = backend.host_normal(p.shape, lora_B_std if ".lora_B." in name else std)


def collapse_experts(model, pick):
    """The model's parameters as a plain (non-AdaMix) model names them: each group `X.experts.k.Y`
    becomes `X.Y`, with value pick([the M arrays in expert order]) computed in float64 on the host."""
    groups, plain = {}, {}
    for name, array in model.state_dict().items():
        if ".experts." in name:
            head, rest = name.split(".experts.", 1)
            k, tail = rest.split(".", 1)
            groups.setdefault(f"{head}.{tail}", {})[int(k)] = backend.to_numpy(array)
        else:
            plain[name] = backend.to_numpy(array)
    for name, arrays in groups.items():
        stacked = np.stack([arrays[k] for k in sorted(arrays)]).astype(np.float64)
        plain[name] = pick(stacked).astype(np.float32)
    return plain


def plain_twin(adamix_model, module, pick):
    """A model with plain Adapters / LoRAs on the same backbone, holding pick(experts) at each site."""
    twin = peft.get_peft_model(tiny_classifier(), plain_config(module))
    twin.load_state_dict(collapse_experts(adamix_model, pick))   # strict: the names must line up
    return twin.eval()


def logits_of(model, ids, mask):
    with no_grad():
        return model(ids, mask).numpy()


def adamix_model(module, sharing="up", seed=0, config=None, classifier_dropout=0.0, lora_dropout=0.0):
    model = peft.get_peft_model(tiny_classifier(config, seed, classifier_dropout),
                                adamix_config(module, sharing, lora_dropout))
    enlarge_trainable(model)
    return model


def chi_square(counts):
    counts = np.asarray(counts, dtype=np.float64)
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


# ---- routing (§3) ----------------------------------------------------------------------------------

def test_training_output_is_exactly_the_routed_experts_output():
    mixture = adamix.make_mixture(lambda: Linear(8, 6), NUM_EXPERTS)
    x = Tensor(np.random.default_rng(0).standard_normal((5, 8)))
    seen = set()
    for _ in range(30):
        out = mixture(x).numpy()
        k = mixture.route.index
        seen.add(k)
        outputs = [expert(x).numpy() for expert in mixture.experts]
        assert np.array_equal(out, outputs[k])
        assert all(not np.allclose(out, outputs[j]) for j in range(NUM_EXPERTS) if j != k)
    assert seen == set(range(NUM_EXPERTS))


def test_every_expert_is_picked_equally_often():
    mixture = adamix.make_mixture(lambda: Linear(2, 2), NUM_EXPERTS)
    x = Tensor(np.ones((1, 2)))
    counts = np.zeros(NUM_EXPERTS)
    for _ in range(4000):
        mixture(x)
        counts[mixture.route.index] += 1
    # chi-square with M - 1 = 3 degrees of freedom: 16.27 is its 99.9% quantile
    assert chi_square(counts) < 16.27, counts


def test_down_and_up_are_routed_independently():
    model = adamix_model("adapter", sharing="none")
    adapter = model.transformer.layers[0].ffn_adapter
    assert adapter.down.route is not adapter.up.route
    h = Tensor(np.random.default_rng(0).standard_normal((2, 3, 32)))
    pairs = np.zeros((NUM_EXPERTS, NUM_EXPERTS))
    for _ in range(1600):
        adapter(h)
        pairs[adapter.down.route.index, adapter.up.route.index] += 1
    # all M^2 (down, up) pairs uniformly: 15 degrees of freedom, 37.70 is the 99.9% quantile.
    # One shared draw would leave the off-diagonal cells empty.
    assert chi_square(pairs) < 37.70, pairs


def routed_experts(mixture):
    """Indices of the experts that received a gradient."""
    return {k for k, expert in enumerate(mixture.experts) if expert.weight.grad is not None}


def test_lora_query_and_value_of_a_layer_use_one_expert_index():
    model = adamix_model("lora").train()
    ids, mask, labels = tiny_batch()
    indices = []
    for step in range(12):
        tinymix.manual_seed(100 + step)
        model.zero_grad()
        F.cross_entropy(model(ids, mask), labels).backward()
        for block in model.transformer.layers:
            query, value = block.attention.query.lora_A, block.attention.value.lora_A
            assert routed_experts(query) == routed_experts(value) == {query.route.index}
            indices.append(query.route.index)
    assert len(set(indices)) > 1   # the index does change from call to call


def record_routes(seed, calls=5):
    """Route indices of every mixture over several training forwards after manual_seed(seed)."""
    tinymix.manual_seed(seed)
    model = peft.get_peft_model(SequenceClassifier(Transformer(tiny_config(dropout=0.1)), 2),
                                adamix_config("adapter", sharing="none"))
    model.train()
    ids, mask, _ = tiny_batch()
    routes = []
    for _ in range(calls):
        model(ids, mask)   # dropout draws on the device generator: it must not disturb the routes
        routes.append([m.route.index for m in adamix.mixtures(model)])
    return routes


def test_same_seed_same_routes_on_every_backend(backend_name):
    backend.set_backend("numpy")
    expected = record_routes(seed=3)
    backend.set_backend(backend_name)
    assert record_routes(seed=3) == expected
    assert record_routes(seed=3) == expected          # and again, on the same backend
    assert record_routes(seed=4) != expected          # another seed, other routes
    assert len({tuple(r) for r in expected}) > 1


# ---- training touches only what it routed -----------------------------------------------------------

def recording_forward(model, ids, mask, log):
    """A forward pass for two_pass_loss that notes each mixture's route index after the pass."""
    def forward():
        logits = model(ids, mask)
        log.append([m.route.index for m in adamix.mixtures(model)])
        return logits
    return forward


@pytest.mark.parametrize("module", ["adapter", "lora"])
def test_one_step_updates_only_the_routed_experts(module):
    model = adamix_model(module).train()
    ids, mask, labels = tiny_batch()
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    optimizer = AdamW(model.named_parameters(), lr=1e-2, weight_decay=0.01)
    tinymix.manual_seed(5)
    log = []
    loss, _, _ = adamix.two_pass_loss(recording_forward(model, ids, mask, log),
                                      lambda z: F.cross_entropy(z, labels), 1.0)
    loss.backward()

    mixtures = adamix.mixtures(model)
    assert mixtures and len(log) == 2
    assert any(log[0][i] != log[1][i] for i in range(len(mixtures)))   # the passes route differently
    for i, mixture in enumerate(mixtures):
        assert routed_experts(mixture) == {log[0][i], log[1][i]}
        for k in routed_experts(mixture):
            assert np.abs(backend.to_numpy(mixture.experts[k].weight.grad)).max() > 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
        elif ".experts." not in name:   # shared sides and the head
            assert p.grad is not None and np.abs(backend.to_numpy(p.grad)).max() > 0, name

    optimizer.step()
    for i, mixture in enumerate(mixtures):
        for k, expert in enumerate(mixture.experts):
            moved = not np.array_equal(backend.to_numpy(expert.weight.data),
                                       backend.to_numpy(before[_name_of(model, expert.weight)]))
            assert moved == (k in {log[0][i], log[1][i]})


@pytest.mark.parametrize("lazy", [False, True])
def test_dense_updates_keep_stepping_experts_routed_before(lazy):
    """docs/adamix.md §7b: with dense updates (the official code) an expert routed at step 1 moves at
    step 2 even when step 2 routes elsewhere; with lazy updates it stays put."""
    model = adamix_model("adapter").train()
    ids, mask, labels = tiny_batch()
    optimizer = AdamW(model.named_parameters(), lr=1e-2, weight_decay=0.01, lazy=lazy)
    routed = []
    for step in range(2):
        log = []
        optimizer.zero_grad()
        loss, _, _ = adamix.two_pass_loss(recording_forward(model, ids, mask, log),
                                          lambda z: F.cross_entropy(z, labels), 1.0)
        loss.backward()
        routed.append([{a, b} for a, b in zip(*log)])
        if step == 0:
            optimizer.step()
            before = {id(p): p.data.copy() for p in model.parameters()}
    optimizer.step()
    checked = 0
    for i, mixture in enumerate(adamix.mixtures(model)):
        for k in routed[0][i] - routed[1][i]:                # routed at step 1, not at step 2
            expert = mixture.experts[k].weight
            moved = not np.array_equal(backend.to_numpy(expert.data), backend.to_numpy(before[id(expert)]))
            assert moved == (not lazy)
            checked += 1
        for k in set(range(mixture.num_experts)) - routed[0][i] - routed[1][i]:   # never routed
            expert = mixture.experts[k].weight
            assert np.array_equal(backend.to_numpy(expert.data), backend.to_numpy(before[id(expert)]))
    assert checked > 0


def test_official_expert_init_copies_lora_experts_and_not_adapter_experts():
    """docs/adamix.md §7: the official LoRA code deep-copies its A-experts after init; the adapter code
    initialises every expert on its own. expert_init="official" (the default) does both."""
    def expert_weights(module, expert_init="official"):
        config = adamix_config(module)
        config.expert_init = expert_init
        model = peft.get_peft_model(tiny_classifier(), config)
        mixture = adamix.mixtures(model)[0]
        return [backend.to_numpy(e.weight.data) for e in mixture.experts]
    assert peft.AdaMixConfig().expert_init == "official"
    lora = expert_weights("lora")
    assert np.abs(lora[0]).max() > 0 and all(np.array_equal(lora[0], w) for w in lora[1:])
    adapter = expert_weights("adapter")
    assert all(not np.array_equal(adapter[0], w) for w in adapter[1:])
    lora_independent = expert_weights("lora", "independent")
    assert all(not np.array_equal(lora_independent[0], w) for w in lora_independent[1:])
    with pytest.raises(ValueError, match="unknown expert_init"):
        expert_weights("lora", "copies")


def _name_of(model, parameter):
    return next(name for name, p in model.named_parameters() if p is parameter)


@pytest.mark.parametrize("module", ["adapter", "lora"])
def test_frozen_backbone_is_bit_identical_after_many_steps(module):
    model = adamix_model(module, classifier_dropout=0.1, lora_dropout=0.1,
                         config=tiny_config(dropout=0.1)).train()
    ids, mask, labels = tiny_batch()
    frozen = {n: backend.to_numpy(p.data).copy() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: backend.to_numpy(p.data).copy() for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and trained
    optimizer = AdamW(model.named_parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(15):
        loss, _, _ = adamix.two_pass_loss(lambda: model(ids, mask), lambda z: F.cross_entropy(z, labels), 1.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    params = dict(model.named_parameters())
    for name, array in frozen.items():
        assert np.array_equal(backend.to_numpy(params[name].data), array), name
    assert all(not np.array_equal(backend.to_numpy(params[n].data), a) for n, a in trained.items()
               if ".experts." not in n)


# ---- inference modes (§6) -----------------------------------------------------------------------------

def _mean(stacked):
    return stacked.mean(axis=0)


@pytest.mark.parametrize("module", ["adapter", "lora"])
def test_average_mode_equals_a_plain_model_with_the_mean_weights(module):
    model = adamix_model(module).eval()
    ids, mask, _ = tiny_batch()
    averaged = logits_of(model, ids, mask)
    twin = plain_twin(model, module, _mean)
    assert_close(averaged, logits_of(twin, ids, mask))
    # and the average is not one of the experts: the test would notice a mixture stuck on expert 0
    first = plain_twin(model, module, lambda s: s[0])
    assert np.abs(averaged - logits_of(first, ids, mask)).max() > 1e-4


@pytest.mark.parametrize("module", ["adapter", "lora"])
def test_merge_gives_the_same_outputs_and_one_modules_parameter_count(module):
    model = adamix_model(module).eval()
    ids, mask, _ = tiny_batch()
    averaged = logits_of(model, ids, mask)
    twin = plain_twin(model, module, _mean)
    expected_count = twin.num_parameters(trainable_only=True)
    assert peft.merged_parameter_count(model) == expected_count
    assert model.num_parameters(trainable_only=True) > expected_count   # M copies while training

    assert len(adamix.mixtures(model)) == 2 * (1 if module == "adapter" else 2)  # per layer: down / q, v
    peft.merge(model)
    assert not adamix.mixtures(model)
    assert sorted(model.state_dict()) == sorted(twin.state_dict())
    assert_close(logits_of(model, ids, mask), averaged)
    assert model.num_parameters(trainable_only=True) == expected_count
    assert peft.merged_parameter_count(model) == expected_count


@pytest.mark.parametrize("module", ["adapter", "lora"])
def test_averaged_weights_are_never_stale(module):
    """The official LoRA code cached the averaged A at the first evaluation; later training was lost."""
    model = adamix_model(module, seed=2)
    ids, mask, labels = tiny_batch()
    first_eval = logits_of(model.eval(), ids, mask)
    optimizer = AdamW(model.named_parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        loss, _, _ = adamix.two_pass_loss(lambda: model(ids, mask), lambda z: F.cross_entropy(z, labels), 1.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    second_eval = logits_of(model.eval(), ids, mask)
    assert_close(second_eval, logits_of(plain_twin(model, module, _mean), ids, mask))
    assert np.abs(second_eval - first_eval).max() > 1e-3


def test_fixed_mode_equals_expert_k():
    model = adamix_model("adapter", sharing="none").eval()
    ids, mask, _ = tiny_batch()
    outputs = []
    for k in range(NUM_EXPERTS):
        adamix.set_inference_mode(model, "fixed", k)
        outputs.append(logits_of(model, ids, mask))
        expert_k = plain_twin(model, "adapter", lambda s: s[k])
        assert_close(outputs[-1], logits_of(expert_k, ids, mask))
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4


def test_random_mode_routes_each_example_through_one_expert():
    mixture = adamix.make_mixture(lambda: Linear(8, 6), NUM_EXPERTS)
    mixture.eval()
    mixture.inference = "random"
    x = Tensor(np.random.default_rng(0).standard_normal((32, 5, 8)))        # (B, T, in)
    with no_grad():
        out = mixture(x).numpy()
        experts = [expert(x).numpy() for expert in mixture.experts]        # M x (B, T, out)
    chosen = np.asarray(mixture.route.index)
    assert chosen.shape == (32,) and len(set(chosen.tolist())) > 1        # examples differ
    for i in range(32):
        errors = [np.abs(out[i] - e[i]).max() for e in experts]
        assert min(errors) < 1e-6 and int(np.argmin(errors)) == chosen[i]
    two_d = Tensor(np.random.default_rng(1).standard_normal((16, 8)))      # (B, in) works as well
    with no_grad():
        out = mixture(two_d).numpy()
    for i, k in enumerate(np.asarray(mixture.route.index)):
        assert_close(out[i], mixture.experts[k](two_d).numpy()[i])


def test_random_mode_in_a_model_uses_one_expert_per_example():
    """One layer of AdaMix-LoRA (query and value share the index): example i's logits are those of the
    model fixed to expert route.index[i]."""
    model = adamix_model("lora", config=tiny_config(num_layers=1)).eval()
    ids, mask, _ = tiny_batch(batch=16)
    fixed = []
    for k in range(NUM_EXPERTS):
        adamix.set_inference_mode(model, "fixed", k)
        fixed.append(logits_of(model, ids, mask))
    adamix.set_inference_mode(model, "random")
    tinymix.manual_seed(1)
    out = logits_of(model, ids, mask)
    chosen = np.asarray(model.transformer.layers[0].attention.query.lora_A.route.index)
    assert len(set(chosen.tolist())) > 1
    for i, k in enumerate(chosen):
        assert_close(out[i], fixed[k][i])


def test_set_inference_mode_rejects_unknown_modes_and_experts():
    model = adamix_model("adapter")
    with pytest.raises(ValueError, match="unknown inference mode 'best'"):
        adamix.set_inference_mode(model, "best")
    with pytest.raises(ValueError, match=f"fixed expert {NUM_EXPERTS} does not exist"):
        adamix.set_inference_mode(model, "fixed", NUM_EXPERTS)
    with pytest.raises(ValueError, match="fixed expert -1 does not exist"):
        adamix.set_inference_mode(model, "fixed", -1)


# ---- consistency regularisation (§4) -------------------------------------------------------------------

def test_consistency_is_zero_for_identical_passes_and_positive_otherwise():
    model = adamix_model("adapter", config=tiny_config(dropout=0.1), classifier_dropout=0.1).train()
    ids, mask, _ = tiny_batch()

    def reseeded():
        tinymix.manual_seed(9)      # the same routes and the same dropout masks on both passes
        return model(ids, mask)
    assert adamix.consistency_loss(reseeded(), reseeded()).item() == 0.0
    assert adamix.consistency_loss(model(ids, mask), model(ids, mask)).item() > 1e-6

    single = peft.get_peft_model(tiny_classifier(), adamix_config("adapter", num_experts=1)).train()
    assert adamix.consistency_loss(single(ids, mask), single(ids, mask)).item() == 0.0


def _log_softmax(z):
    """log softmax from Tensor primitives (the shift is a constant: it changes no gradient)."""
    shifted = z - Tensor(z.data.max(axis=-1, keepdims=True))
    return shifted - shifted.exp().sum(axis=-1, keepdims=True).log()


def _kl(target_logits, input_logits):
    """KL(softmax(target) || softmax(input)), batch-mean, written out."""
    log_q, log_p = _log_softmax(target_logits), _log_softmax(input_logits)
    return (log_q.exp() * (log_q - log_p)).sum(axis=-1).mean()


def _grads(loss_fn, z1, z2):
    a, b = Tensor(z1, requires_grad=True), Tensor(z2, requires_grad=True)
    loss = loss_fn(a, b)
    loss.backward()
    return loss.item(), backend.to_numpy(a.grad), backend.to_numpy(b.grad)


def test_consistency_gradient_flows_only_into_each_terms_student():
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((5, 3)) * 2, rng.standard_normal((5, 3)) * 2
    value, g1, g2 = _grads(adamix.consistency_loss, z1, z2)
    stopped = lambda a, b: (_kl(b.detach(), a) + _kl(a.detach(), b)) * 0.5
    expected_value, e1, e2 = _grads(stopped, z1, z2)
    assert value == pytest.approx(expected_value, rel=1e-5)
    np.testing.assert_allclose(g1, e1, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(g2, e2, rtol=1e-4, atol=1e-7)
    # without the stop-gradients the gradients differ: the comparison above can tell them apart
    _, f1, _ = _grads(lambda a, b: (_kl(b, a) + _kl(a, b)) * 0.5, z1, z2)
    assert np.abs(f1 - g1).max() > 1e-3


def test_lm_consistency_averages_over_target_tokens_only():
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((2, 5, 7)), rng.standard_normal((2, 5, 7))
    targets = np.array([[0, 1, 1, 0, 1], [0, 0, 1, 1, 0]], dtype=bool)
    value, g1, _ = _grads(lambda a, b: adamix.consistency_loss(a, b, targets), z1, z2)
    rows = adamix.consistency_loss(Tensor(z1[targets]), Tensor(z2[targets])).item()
    assert value == pytest.approx(rows, rel=1e-6)                      # the mean over the 5 targets
    assert np.all(g1[~targets] == 0)

    changed_1, changed_2 = z1.copy(), z2.copy()
    changed_1[~targets] += 5 * rng.standard_normal(changed_1[~targets].shape)
    changed_2[~targets] -= 3.0 * rng.standard_normal(changed_2[~targets].shape)
    again = adamix.consistency_loss(Tensor(changed_1), Tensor(changed_2), targets).item()
    assert again == pytest.approx(value, rel=1e-6)
    everywhere = adamix.consistency_loss(Tensor(changed_1), Tensor(changed_2)).item()
    assert abs(everywhere - value) > 1e-3                              # non-targets would have counted


def test_two_pass_loss_is_task_plus_weighted_consistency():
    rng = np.random.default_rng(0)
    passes = [Tensor(rng.standard_normal((4, 3)), requires_grad=True) for _ in range(2)]
    labels = np.array([0, 2, 1, 1])
    calls, seen = iter(passes), []

    def task_loss(z):
        seen.append(z)
        return F.cross_entropy(z, labels)
    loss, task, consistency = adamix.two_pass_loss(lambda: next(calls), task_loss, 3.0)
    assert seen == [passes[0]]                                          # only pass 1 carries the task
    assert task.item() == pytest.approx(F.cross_entropy(passes[0], labels).item(), rel=1e-6)
    assert consistency.item() == pytest.approx(adamix.consistency_loss(*passes).item(), rel=1e-6)
    assert loss.item() == pytest.approx(task.item() + 3.0 * consistency.item(), rel=1e-6)
    assert consistency.item() > 1e-3

    calls = iter(passes)
    loss, task, consistency = adamix.two_pass_loss(lambda: next(calls), task_loss, 0.0)
    assert consistency is None and loss.item() == task.item()
    assert next(calls) is passes[1]                                     # no second pass was run


def _one_step_gradients(module, weight, low_memory, backend_name):
    """Gradients, loss and the generators' next draws after one AdaMix step with dropout everywhere."""
    backend.set_backend(backend_name)
    model = adamix_model(module, classifier_dropout=0.1, lora_dropout=0.1,
                         config=tiny_config(dropout=0.1)).train()
    ids, mask, labels = tiny_batch()
    tinymix.manual_seed(11)
    args = (lambda: model(ids, mask), lambda z: F.cross_entropy(z, labels), weight)
    if low_memory:
        loss, task, consistency = adamix.two_pass_backward(*args, low_memory=True)
        assert not loss.requires_grad
    else:
        loss, task, consistency = adamix.two_pass_loss(*args)
        loss.backward()
    grads = {n: backend.to_numpy(p.grad) for n, p in model.named_parameters() if p.grad is not None}
    after = (backend.host_rng.integers(1 << 30), backend.to_numpy(backend.device_uniform((3,), "float32")))
    return loss.item(), grads, after


@pytest.mark.parametrize("module", ["adapter", "lora"])
@pytest.mark.parametrize("weight", [0.0, 5.0])
def test_low_memory_step_gives_the_same_loss_and_gradients(module, weight, backend_name):
    loss, grads, after = _one_step_gradients(module, weight, False, backend_name)
    low_loss, low_grads, low_after = _one_step_gradients(module, weight, True, backend_name)
    assert low_loss == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == low_grads.keys() and len(grads) > 4
    scale = max(float(np.abs(g).max()) for g in grads.values())     # rounding grows with the largest
    for name in grads:
        assert_close(low_grads[name], grads[name], scale=scale, err_msg=name)
    assert after[0] == low_after[0]                   # both generators end where a normal step leaves them
    np.testing.assert_array_equal(after[1], low_after[1])


def test_dropout_replay_hands_back_the_recorded_masks_and_checks_them():
    x = Tensor(np.ones((4, 5), dtype=np.float32))
    masks = []
    tinymix.manual_seed(3)
    with F.dropout_tape(masks):
        first, second = F.dropout(x, 0.5, True).numpy(), F.dropout(x, 0.5, True).numpy()
    assert len(masks) == 2 and not np.array_equal(first, second)
    with F.dropout_tape(masks, replay=True):
        assert np.array_equal(F.dropout(x, 0.5, True).numpy(), first)
        assert np.array_equal(F.dropout(x, 0.5, True).numpy(), second)
    with pytest.raises(RuntimeError, match="same shapes"):
        with F.dropout_tape(masks, replay=True):
            F.dropout(Tensor(np.ones((2, 2), dtype=np.float32)), 0.5, True)
    with pytest.raises(RuntimeError, match="fewer masks"):
        with F.dropout_tape(masks, replay=True):
            F.dropout(x, 0.5, True)


def test_lm_consistency_rejects_a_mask_without_targets():
    z = Tensor(np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="no target token"):
        adamix.consistency_loss(z, z, np.zeros((2, 3), dtype=bool))


def test_experts_start_independent_or_as_identical_copies():
    def weights(expert_init):
        mixture = adamix.make_mixture(lambda: Linear(4, 3), NUM_EXPERTS, expert_init)
        return [backend.to_numpy(e.weight.data) for e in mixture.experts], mixture
    independent, _ = weights("independent")
    assert all(not np.array_equal(independent[0], w) for w in independent[1:])
    identical, mixture = weights("identical")
    assert all(np.array_equal(identical[0], w) for w in identical[1:])
    mixture.experts[1].weight.data += 1.0                      # copies, not one shared array
    assert not np.array_equal(backend.to_numpy(mixture.experts[0].weight.data),
                              backend.to_numpy(mixture.experts[1].weight.data))
    with pytest.raises(ValueError, match="expert_init must be 'independent' or 'identical'"):
        adamix.make_mixture(lambda: Linear(4, 3), 2, "copies")


def test_routing_report_counts_routes_and_measures_how_far_experts_moved():
    model = adamix_model("adapter").train()
    ids, mask, labels = tiny_batch()
    start = adamix.expert_weights(model)
    optimizer = AdamW(model.named_parameters(), lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        adamix.two_pass_backward(lambda: model(ids, mask), lambda z: F.cross_entropy(z, labels), 1.0)
        optimizer.step()
    report = adamix.routing_report(model, start)
    assert len(report) == len(adamix.mixtures(model))
    for entry in report.values():
        assert sum(entry["route_counts"]) == 10                     # 5 steps x 2 passes
        moved = [m > 0 for m in entry["moved"]]
        assert moved == [c > 0 for c in entry["route_counts"]] or all(moved)   # dense: routed once -> moves
        assert entry["spread"] > 0                                   # independent experts differ
