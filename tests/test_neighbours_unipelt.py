"""UniPELT: the gates as the official code computes them, the gated modules' gradients, what a closed gate
does, the adapter's placement around the output LayerNorm, merging refused, the prefix MLP's removal,
counts on MiniLM's shape, and the inference-cost helper."""
import numpy as np
import pytest

from tinymix import backend, peft
from tinymix.gradient_check import gradcheck
from tinymix.neighbours import prefix, unipelt
from tinymix.nn import LayerNorm, Linear
from tinymix.tensor import Tensor, no_grad
from tinymix.transformer import LanguageModel, Transformer, TransformerConfig

from neighbours_models import logits, minilm_shaped, tiny_batch, tiny_classifier

pytestmark = pytest.mark.numerics


def as64(module):
    for name, p in module.named_parameters():
        p.data = p.data.astype("float64")
    return module


def trained_like(config):
    """Every trainable weight drawn away from its start (LoRA's B is no longer 0)."""
    model = unipelt.inject(tiny_classifier(), config)
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = backend.host_normal(p.shape, 0.3)
    return model.eval()


def test_the_gate_is_the_mean_over_positions_of_a_sigmoid_padding_included():
    gate = unipelt.Gate(4)
    x = backend.host_normal((3, 5, 4), 1.0)
    w, b = backend.to_numpy(gate.linear.weight.data)[0], float(backend.to_numpy(gate.linear.bias.data)[0])
    expected = (1 / (1 + np.exp(-(backend.to_numpy(x) @ w + b)))).mean(axis=1)
    with no_grad():
        got = gate(Tensor(x)).numpy()
    assert got.shape == (3, 1)
    np.testing.assert_allclose(got[:, 0], expected, rtol=1e-5)
    assert len(set(np.round(got[:, 0], 6))) == 3                       # one value per example


def test_gradients_of_the_gated_modules_match_central_differences(backend_name):
    x = Tensor(backend.host_normal((2, 3, 4), 0.8), requires_grad=True)
    lora = as64(unipelt.GatedLoRALinear(Linear(4, 5), 2, unipelt.Gate(4)))
    lora.lora_B.weight.data = backend.host_normal((5, 2), 0.5).astype("float64")
    assert gradcheck(lambda x, a, b, w: lora(x), x, lora.lora_A.weight, lora.lora_B.weight, lora.gate.linear.weight)
    adapter = as64(unipelt.GatedAdapter(LayerNorm(4), 4, 2))
    assert gradcheck(lambda x, d, u, g: adapter(x), x, adapter.down.weight, adapter.up.weight, adapter.gate.linear.weight)


def test_the_adapter_reads_the_layers_usual_output_and_adds_inside_the_same_layer_norm():
    norm = LayerNorm(4)
    norm.weight.data, norm.bias.data = backend.host_normal((4,), 1.0), backend.host_normal((4,), 1.0)
    adapter = unipelt.GatedAdapter(norm, 4, 3)
    for p in adapter.parameters():
        p.data = backend.host_normal(p.shape, 0.5)
    z = backend.to_numpy(backend.host_normal((2, 3, 4), 1.0))
    weights = {n: backend.to_numpy(p.data) for n, p in adapter.named_parameters()}

    def ln(a):
        a = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5)
        return a * weights["norm.weight"] + weights["norm.bias"]
    y = ln(z)
    update = np.maximum(y @ weights["down.weight"].T + weights["down.bias"], 0) @ weights["up.weight"].T + weights["up.bias"]
    gate = (1 / (1 + np.exp(-(y @ weights["gate.linear.weight"].T + weights["gate.linear.bias"])))).mean(axis=1, keepdims=True)
    with no_grad():
        np.testing.assert_allclose(adapter(Tensor(z)).numpy(), ln(z + gate * update), rtol=1e-4, atol=1e-5)


def test_closed_adapter_and_lora_gates_take_those_modules_out_but_a_closed_prefix_gate_does_not():
    """A gate near 0 removes its adapter's or LoRA's update. The prefix is different: scaled to zero,
    its keys still score 0 against every query and take attention weight, its zero values dilute the
    output (the official code scales keys and values alike)."""
    ids, mask = tiny_batch()
    model = trained_like(unipelt.UniPELTConfig(modules="APL", prefix_length=3))
    for block in model.transformer.layers:
        block.output_norm.gate.linear.bias.data[:] = -80.0
        block.attention.query.gate.linear.bias.data[:] = -80.0
        block.attention.value.gate.linear.bias.data[:] = -80.0
    closed = logits(model, ids, mask)
    for block in model.transformer.layers:
        block.output_norm = block.output_norm.norm
        block.attention.query, block.attention.value = block.attention.query.base, block.attention.value.base
    np.testing.assert_allclose(closed, logits(model, ids, mask), rtol=1e-5, atol=1e-6)
    for block in model.transformer.layers:
        block.attention.prefix.gate.linear.bias.data[:] = -80.0
    shut = logits(model, ids, mask)
    for block in model.transformer.layers:
        block.attention.prefix = None
    assert np.abs(shut - logits(model, ids, mask)).max() > 1e-3


def test_merging_is_refused_with_the_reason():
    model = trained_like(unipelt.UniPELTConfig(modules="APL", prefix_length=3))
    with pytest.raises(ValueError, match="gates depend on each input"):
        unipelt.merge(model)
    with pytest.raises(ValueError, match="cannot be folded into static weights"):
        peft.merge(model, fold_lora=True)                # the generic path refuses too, per layer


def test_deploying_removes_only_the_prefix_mlp_and_changes_no_output():
    ids, mask = tiny_batch()
    model = trained_like(unipelt.UniPELTConfig(modules="AP", prefix_length=3))
    before = logits(model, ids, mask)
    unipelt.deploy(model)
    assert not model.transformer.prefix_encoder.projected
    np.testing.assert_allclose(logits(model, ids, mask), before, rtol=1e-5, atol=1e-6)
    values = unipelt.gates(model)
    assert set(values) == {(i, "prefix") for i in range(2)} | {(i, "adapter") for i in range(2)}
    assert all(v.shape == (4,) and ((0 < v) & (v < 1)).all() for v in values.values())


def test_positions_are_not_shifted_and_only_the_new_modules_and_head_train():
    model = unipelt.inject(tiny_classifier(), unipelt.UniPELTConfig(prefix_length=3))
    assert model.transformer.position_offset == 0
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("norm.weight" in n or n.endswith("query.base.weight") for n in trained)
    assert {"transformer.layers.1.attention.prefix.gate.linear.weight", "transformer.layers.0.output_norm.gate.linear.bias",
            "transformer.layers.0.attention.value.lora_A.weight", "transformer.layers.0.attention.query.gate.linear.weight",
            "transformer.prefix_encoder.embedding", "classifier.weight"} <= trained


def test_counts_on_minilms_shape_match_the_closed_form():
    d, L, head, r = 384, 6, 384 * 2 + 2, 24
    gate = d + 1
    prefix_training, prefix_deployed = 10 * d + d * 512 + 512 + 512 * 2 * L * d + 2 * L * d, 10 * 2 * L * d
    adapters = L * ((d * r + r) + (r * d + d) + gate)
    loras = L * 2 * (8 * d + d * 8 + gate)
    ap = unipelt.inject(minilm_shaped(), unipelt.UniPELTConfig(modules="AP"))
    rest = L * gate + adapters + head
    assert unipelt.count(ap) == (prefix_training + rest, prefix_deployed + rest) == (2_683_294, 164_510)
    apl = unipelt.inject(minilm_shaped(), unipelt.UniPELTConfig(modules="APL"))
    assert unipelt.count(apl) == (2_683_294 + loras, 164_510 + loras) == (2_761_642, 242_858)


def test_bad_settings_and_a_decoder_are_clear_errors():
    with pytest.raises(ValueError, match="unknown modules 'APLB'"):
        unipelt.inject(tiny_classifier(), unipelt.UniPELTConfig(modules="APLB"))
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        unipelt.inject(tiny_classifier(), unipelt.UniPELTConfig(lora_targets=("output",)))
    decoder = LanguageModel(Transformer(TransformerConfig(kind="decoder", vocab_size=20, hidden_size=16, num_layers=1,
                                                          num_heads=2, intermediate_size=32, max_positions=8)))
    with pytest.raises(ValueError, match="built for an encoder"):
        unipelt.inject(decoder, unipelt.UniPELTConfig())


def test_the_inference_cost_helper_times_every_arm():
    seconds = unipelt.inference_cost(batch=1, length=4, repeats=1)
    assert set(seconds) == {"merged LoRA", "Pfeiffer adapter", "UniPELT-AP", "UniPELT-APL"}
    assert all(s > 0 for s in seconds.values())
