"""PEFT modules and API: LoRA folding, averaging exactness (LoRA) vs. non-exactness (adapters), the
trainable-parameter formulas on the real MiniLM, input validation, and save/load round trips."""
import json
import struct

import numpy as np
import pytest

import tinymix
from tinymix import adamix, backend, peft
from tinymix.nn import Linear
from tinymix.pretrained import load_pretrained
from tinymix.tensor import Tensor, no_grad
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig

from numeric import assert_close

pytestmark = pytest.mark.numerics

NUM_EXPERTS = 4


def tiny_config(hidden=32, intermediate=64, dropout=0.0):
    return TransformerConfig(vocab_size=50, hidden_size=hidden, num_layers=2, num_heads=4,
                             intermediate_size=intermediate, max_positions=16, dropout=dropout)


def tiny_classifier(config=None, seed=0):
    tinymix.manual_seed(seed)
    return SequenceClassifier(Transformer(config or tiny_config()), 2, dropout=0.0)


def tiny_batch(batch=6, length=7, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    mask[batch // 2:, length - 2:] = 0
    return ids * mask, mask


def logits_of(model, ids, mask):
    with no_grad():
        return model(ids, mask).numpy()


def enlarge_trainable(model, std=0.2, lora_B_std=0.05):
    """Every trainable weight redrawn larger than its initialisation (LoRA's B starts at zero), so
    that each module visibly changes the outputs."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = backend.host_normal(p.shape, lora_B_std if ".lora_B." in name else std)
    return model


def lora_layers(model):
    return [m for _, m in model.named_modules() if isinstance(m, peft.LoRALinear)]


def adamix_lora(sharing="up", num_experts=NUM_EXPERTS):
    config = peft.AdaMixConfig(module="lora", num_experts=num_experts, sharing=sharing,
                               lora=peft.LoRAConfig(rank=4, dropout=0.0))
    return enlarge_trainable(peft.get_peft_model(tiny_classifier(), config))


# ---- LoRA: folding the update into W ---------------------------------------------------------------

def test_folded_lora_equals_unfolded_and_unmerges_exactly():
    model = enlarge_trainable(peft.get_peft_model(tiny_classifier(), peft.LoRAConfig(rank=4, dropout=0.1)))
    model.eval()
    ids, mask = tiny_batch()
    unfolded = logits_of(model, ids, mask)
    layers = lora_layers(model)
    original = [backend.to_numpy(layer.base.weight.data).copy() for layer in layers]
    for layer in layers:
        layer.merge()
    folded = [backend.to_numpy(layer.base.weight.data).copy() for layer in layers]
    assert all(np.abs(f - o).max() > 1e-3 for f, o in zip(folded, original))   # W did change
    assert_close(logits_of(model, ids, mask), unfolded)

    for layer in layers:
        layer.merge()                                              # idempotent: no second update
    assert all(np.array_equal(backend.to_numpy(l.base.weight.data), f) for l, f in zip(layers, folded))

    model.train()
    with pytest.raises(RuntimeError, match="merged into its weight; call unmerge"):
        model(ids, mask)
    model.eval()
    for layer in layers:
        layer.unmerge()
    for layer, o in zip(layers, original):
        np.testing.assert_allclose(backend.to_numpy(layer.base.weight.data), o, rtol=0, atol=1e-6)
    assert_close(logits_of(model, ids, mask), unfolded)


def test_peft_merge_with_fold_lora_keeps_outputs_of_adamix_lora():
    model = adamix_lora().eval()
    ids, mask = tiny_batch()
    averaged = logits_of(model, ids, mask)
    peft.merge(model, fold_lora=True)
    assert all(layer.merged for layer in lora_layers(model)) and not adamix.mixtures(model)
    assert_close(logits_of(model, ids, mask), averaged)


def test_folding_follows_the_inference_mode():
    """Folding in "fixed" mode folds expert k; "random" (an expert per example) cannot be folded."""
    model = adamix_lora().eval()
    ids, mask = tiny_batch()
    adamix.set_inference_mode(model, "random")
    with pytest.raises(ValueError, match="cannot fold a LoRA mixture in 'random' inference mode"):
        lora_layers(model)[0].merge()
    assert not any(layer.merged for layer in lora_layers(model))
    adamix.set_inference_mode(model, "fixed", 1)
    fixed = logits_of(model, ids, mask)
    for layer in lora_layers(model):
        layer.merge()
    assert_close(logits_of(model, ids, mask), fixed)


# ---- averaging: exact for LoRA with B shared, not for adapters (§5) --------------------------------

def test_shared_B_makes_the_averaged_lora_update_the_mean_of_the_experts_updates():
    model = adamix_lora(sharing="up")
    for layer in lora_layers(model):
        B = backend.to_numpy(layer.lora_B.weight.data).astype(np.float64)             # (out, r)
        updates = [layer.scaling * B @ backend.to_numpy(e.weight.data).astype(np.float64)
                   for e in layer.lora_A.experts]                                       # M x (out, in)
        merged = backend.to_numpy(layer.delta_weight())
        assert_close(merged, np.mean(updates, axis=0))
        assert np.abs(updates[0] - updates[1]).max() > 1e-2                            # experts differ


def test_averaged_lora_output_is_the_mean_of_the_experts_outputs():
    """Linear in the experts' A: merging loses nothing (the contrast to the adapter test below)."""
    mixture = adamix.make_mixture(lambda: Linear(8, 6), NUM_EXPERTS).eval()
    x = Tensor(np.random.default_rng(0).standard_normal((5, 8)))
    with no_grad():
        mean_output = np.mean([expert(x).numpy() for expert in mixture.experts], axis=0)
        assert_close(mixture(x).numpy(), mean_output)


def test_averaged_adapter_is_not_the_mean_of_the_experts_outputs():
    """up(gelu(mean_i down_i h)) != mean_i up(gelu(down_i h)): GELU sits between the projections."""
    config = peft.AdaMixConfig(module="adapter", adapter=peft.AdapterConfig(bottleneck=8))
    model = enlarge_trainable(peft.get_peft_model(tiny_classifier(), config)).eval()
    adapter = model.transformer.layers[0].ffn_adapter
    h = Tensor(np.random.default_rng(0).standard_normal((4, 5, 32)))
    with no_grad():
        averaged = (adapter(h) - h).numpy()
        per_expert = []
        for k in range(NUM_EXPERTS):
            adamix.set_inference_mode(model, "fixed", k)
            per_expert.append((adapter(h) - h).numpy())
    mean_of_outputs = np.mean(per_expert, axis=0)
    relative = np.abs(averaged - mean_of_outputs).max() / np.abs(mean_of_outputs).max()
    assert relative > 0.05, relative


# ---- trainable-parameter counts: closed forms on the real MiniLM (§8) ------------------------------

@pytest.fixture(scope="module")
def minilm_weights():
    model, _ = load_pretrained("minilm-l6")     # fetched (and verified) on first use
    return model.config, model.state_dict()


def fresh_minilm(config, weights):
    model = Transformer(config)
    model.load_state_dict(weights)
    return SequenceClassifier(model, 2)


def test_trainable_parameter_counts_match_the_closed_forms(minilm_weights):
    config, weights = minilm_weights
    d, L, ff, V = config.hidden_size, config.num_layers, config.intermediate_size, config.vocab_size
    P, types = config.max_positions, config.type_vocab_size
    assert (d, L) == (384, 6)
    labels = 2
    head = d * labels + labels
    r, lora_r, M = 16, 4, 4

    def counts(peft_config):
        model = peft.get_peft_model(fresh_minilm(config, weights), peft_config)
        return model.num_parameters(trainable_only=True), peft.merged_parameter_count(model), model

    adapter = L * ((d * r + r) + (r * d + d)) + head
    assert counts(peft.AdapterConfig(bottleneck=r))[:2] == (adapter, adapter)

    trained, merged, model = counts(peft.AdaMixConfig(module="adapter", num_experts=M, sharing="up",
                                                      adapter=peft.AdapterConfig(bottleneck=r)))
    assert trained == L * (M * (d * r + r) + (r * d + d)) + head
    assert merged == adapter
    peft.merge(model)
    assert model.num_parameters(trainable_only=True) == adapter

    lora = L * 2 * (lora_r * d + d * lora_r) + head
    assert counts(peft.LoRAConfig(rank=lora_r, target_modules=("query", "value")))[:2] == (lora, lora)
    trained, merged, model = counts(peft.AdaMixConfig(module="lora", num_experts=M, sharing="up",
                                                      lora=peft.LoRAConfig(rank=lora_r)))
    assert trained == L * 2 * (M * lora_r * d + d * lora_r) + head
    assert merged == lora
    peft.merge(model)
    assert model.num_parameters(trainable_only=True) == lora

    layer_norm_biases = d + L * 2 * d                      # embedding LN, then two per layer
    linear_biases = L * (4 * d + ff + d)                   # q, k, v, attention output; FFN in, out
    bitfit = layer_norm_biases + linear_biases + head      # the head's weight and bias
    assert counts(peft.BitFitConfig())[:2] == (bitfit, bitfit)

    embeddings = V * d + P * d + types * d + 2 * d
    block = 4 * (d * d + d) + 2 * 2 * d + (d * ff + ff) + (ff * d + d)
    backbone = embeddings + L * block
    full, merged, model = counts(peft.FullFineTuneConfig())
    assert full == merged == backbone + head == model.num_parameters()


# ---- bad input: each a clear error ------------------------------------------------------------------

def test_rejects_fewer_than_one_expert():
    with pytest.raises(ValueError, match="num_experts must be at least 1, got 0"):
        peft.get_peft_model(tiny_classifier(), peft.AdaMixConfig(num_experts=0))
    with pytest.raises(ValueError, match="num_experts must be at least 1, got 0"):
        adamix.make_mixture(lambda: Linear(2, 2), 0)


@pytest.mark.parametrize("bottleneck", [0, 33])
@pytest.mark.parametrize("mixed", [False, True])
def test_rejects_a_bottleneck_outside_one_to_hidden(bottleneck, mixed):
    adapter = peft.AdapterConfig(bottleneck=bottleneck)
    config = peft.AdaMixConfig(module="adapter", adapter=adapter) if mixed else adapter
    with pytest.raises(ValueError, match=f"bottleneck must be between 1 and the hidden size 32, got {bottleneck}"):
        peft.get_peft_model(tiny_classifier(), config)


@pytest.mark.parametrize("rank", [0, 33])
def test_rejects_a_lora_rank_outside_one_to_min_of_the_sides(rank):
    with pytest.raises(ValueError, match=rf"LoRA rank must be between 1 and min\(d_in, d_out\) = 32, got {rank}"):
        peft.get_peft_model(tiny_classifier(), peft.LoRAConfig(rank=rank))
    with pytest.raises(ValueError, match="LoRA rank must be between 1"):
        peft.get_peft_model(tiny_classifier(), peft.AdaMixConfig(module="lora", lora=peft.LoRAConfig(rank=rank)))


def test_rejects_a_lora_rank_above_a_narrow_targets_smaller_side():
    narrow = tiny_classifier(tiny_config(hidden=32, intermediate=16))
    with pytest.raises(ValueError, match=r"min\(d_in, d_out\) = 16, got 20 \(target 'intermediate'\)"):
        peft.get_peft_model(narrow, peft.LoRAConfig(rank=20, target_modules=("intermediate",)))
    peft.get_peft_model(narrow, peft.LoRAConfig(rank=16, target_modules=("intermediate",)))   # the bound


def test_rejects_an_unknown_lora_target_and_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown LoRA target modules \['qkv'\]; available: .*'query'.*'value'"):
        peft.get_peft_model(tiny_classifier(), peft.LoRAConfig(target_modules=("query", "qkv")))


def test_rejects_unknown_sharing_and_inference_modes():
    with pytest.raises(ValueError, match="unknown sharing 'left'"):
        peft.get_peft_model(tiny_classifier(), peft.AdaMixConfig(sharing="left"))
    with pytest.raises(ValueError, match="unknown inference mode 'best'"):
        peft.get_peft_model(tiny_classifier(), peft.AdaMixConfig(inference="best"))
    with pytest.raises(ValueError, match="fixed_expert 4 is not one of the 4 experts"):
        peft.get_peft_model(tiny_classifier(), peft.AdaMixConfig(inference="fixed", fixed_expert=4))


def test_rejects_injecting_twice():
    model = peft.get_peft_model(tiny_classifier(), peft.AdapterConfig(bottleneck=8))
    with pytest.raises(RuntimeError, match="already has adapter modules injected"):
        peft.get_peft_model(model, peft.LoRAConfig())


def test_load_adapter_rejects_another_config(tmp_path):
    peft.save_adapter(peft.get_peft_model(tiny_classifier(), peft.AdapterConfig(bottleneck=8)), tmp_path)
    other = peft.get_peft_model(tiny_classifier(), peft.AdapterConfig(bottleneck=4))
    with pytest.raises(ValueError, match="has config .*'bottleneck': 8.*but the model has .*'bottleneck': 4"):
        peft.load_adapter(other, tmp_path)


def test_load_adapter_rejects_another_base_model(tmp_path):
    peft.save_adapter(peft.get_peft_model(tiny_classifier(), peft.AdapterConfig(bottleneck=8)), tmp_path)
    wider = tiny_classifier(tiny_config(hidden=48))
    with pytest.raises(ValueError, match=r"saved for another base model.*'hidden_size': \(32, 48\)"):
        peft.load_adapter(wider, tmp_path)


# ---- save / load --------------------------------------------------------------------------------------

def safetensors_layout(path):
    """(tensor names, payload bytes) of a safetensors file: an 8-byte header length, the JSON header,
    then the raw arrays."""
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_length])
    return sorted(k for k in header if k != "__metadata__"), len(data) - 8 - header_length


def test_save_keeps_only_trainable_weights_and_reloads_identically(tmp_path):
    ids, mask = tiny_batch()
    models = {
        "adapter": peft.get_peft_model(tiny_classifier(), peft.AdapterConfig(bottleneck=8)),
        "adamix": peft.get_peft_model(tiny_classifier(), peft.AdaMixConfig(adapter=peft.AdapterConfig(bottleneck=8))),
    }
    payload = {}
    for kind, model in models.items():
        enlarge_trainable(model).eval()
        peft.save_adapter(model, tmp_path / kind)
        names, payload[kind] = safetensors_layout(tmp_path / kind / "adapter_model.safetensors")
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        assert names == trainable
        assert payload[kind] == 4 * model.num_parameters(trainable_only=True)   # float32, nothing else

        fresh = tiny_classifier()                                   # a fresh base model, no modules
        peft.load_adapter(fresh, tmp_path / kind)
        assert type(fresh.peft_config) is type(model.peft_config)
        assert np.array_equal(logits_of(fresh.eval(), ids, mask), logits_of(model, ids, mask))
    ratio = models["adamix"].num_parameters(trainable_only=True) / models["adapter"].num_parameters(trainable_only=True)
    assert payload["adamix"] / payload["adapter"] == pytest.approx(ratio) and ratio > 2


@pytest.mark.parametrize("fold_lora", [False, True])
@pytest.mark.parametrize("module", ["adapter", "lora"])
def test_a_merged_model_round_trips(tmp_path, module, fold_lora):
    config = peft.AdaMixConfig(module=module, adapter=peft.AdapterConfig(bottleneck=8),
                               lora=peft.LoRAConfig(rank=4, dropout=0.0))
    model = enlarge_trainable(peft.get_peft_model(tiny_classifier(), config)).eval()
    peft.merge(model, fold_lora=fold_lora)
    merged_count = model.num_parameters(trainable_only=True)
    ids, mask = tiny_batch()
    peft.save_adapter(model, tmp_path)
    _, payload = safetensors_layout(tmp_path / "adapter_model.safetensors")
    assert payload == 4 * merged_count

    fresh = tiny_classifier()
    peft.load_adapter(fresh, tmp_path)
    assert fresh.peft_merged and not adamix.mixtures(fresh)
    assert fresh.num_parameters(trainable_only=True) == merged_count
    assert_close(logits_of(fresh.eval(), ids, mask), logits_of(model, ids, mask))


def test_load_adapter_accepts_the_same_config_written_with_a_list(tmp_path):
    config = peft.LoRAConfig(rank=4, target_modules=["query", "value"])
    model = enlarge_trainable(peft.get_peft_model(tiny_classifier(), config))
    peft.save_adapter(model, tmp_path)
    again = peft.get_peft_model(tiny_classifier(), peft.LoRAConfig(rank=4, target_modules=["query", "value"]))
    peft.load_adapter(again, tmp_path)
    ids, mask = tiny_batch()
    assert np.array_equal(logits_of(again.eval(), ids, mask), logits_of(model.eval(), ids, mask))


def test_one_seed_gives_every_method_the_same_start_where_they_share_a_module():
    """Paired seeds (compare): at one seed the single adapter is AdaMix's expert 0 plus its shared
    up-projection, every AdaMix-LoRA A-expert starts as the single LoRA's A, and the head is the same."""
    from tinymix import backend
    from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig

    def build(config, seed=3):
        backend.manual_seed(seed)
        encoder = Transformer(TransformerConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                                                intermediate_size=32, max_positions=16))
        model = peft.get_peft_model(SequenceClassifier(encoder, 2), config)
        return {n: backend.to_numpy(p.data) for n, p in model.named_parameters() if p.requires_grad}

    adapter = build(peft.AdapterConfig(bottleneck=4))
    mix = build(peft.AdaMixConfig(module="adapter", num_experts=3, adapter=peft.AdapterConfig(bottleneck=4)))
    for name, value in adapter.items():
        twin = name.replace(".down.", ".down.experts.0.") if ".down." in name else name
        np.testing.assert_array_equal(mix[twin], value, err_msg=name)
    assert not np.array_equal(mix["transformer.layers.0.ffn_adapter.down.experts.1.weight"],
                              adapter["transformer.layers.0.ffn_adapter.down.weight"])
    lora = build(peft.LoRAConfig(rank=2))
    mix_lora = build(peft.AdaMixConfig(module="lora", num_experts=3, lora=peft.LoRAConfig(rank=2)))
    for name, value in lora.items():
        if ".lora_A." in name:
            for k in range(3):
                np.testing.assert_array_equal(mix_lora[name.replace("lora_A.", f"lora_A.experts.{k}.")], value)
        else:
            np.testing.assert_array_equal(mix_lora[name], value, err_msg=name)
    assert not np.array_equal(build(peft.LoRAConfig(rank=2), seed=4)["classifier.weight"], lora["classifier.weight"])
