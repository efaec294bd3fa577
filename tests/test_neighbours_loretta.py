"""LoRETTA: the tensor-train linear layer (its contraction, gradients, initial scale, size), LoRETTA_rep
(TT LoRA factors, merging) and LoRETTA_adp (TT adapters), counts on MiniLM's shape."""
import numpy as np
import pytest

import tinymix
from tinymix import backend, peft
from tinymix.gradient_check import gradcheck
from tinymix.neighbours import loretta
from tinymix.tensor import Tensor

from neighbours_models import logits, minilm_shaped, tiny_batch, tiny_classifier

pytestmark = pytest.mark.numerics


def test_factorisations_and_sizes():
    assert loretta.factorize(768) == [8, 12, 8]          # the official table's factors of 768
    assert loretta.factorize(384) == [8, 6, 8] and loretta.factorize(8) == [8] and loretta.factorize(7) == [7]
    layer = loretta.TTLinear(384, 8, rank=5, bias=False)
    assert layer.shape == [8, 6, 8, 8]
    assert [c.core.shape for c in layer.cores] == [(1, 8, 5), (5, 6, 5), (5, 8, 5), (5, 8, 1)]
    assert layer.num_parameters() == loretta.tt_parameters(384, 8, 5, bias=False) == 430   # vs 3,072
    assert loretta.TTLinear(8, 384, 5, bias=False).num_parameters() == 430


def test_the_weight_is_the_tensor_train_contraction(backend_name):
    layer = loretta.TTLinear(6, 4, rank=3, bias=True)             # shape (6, 4): cores (1,6,3), (3,4,1)
    wide = loretta.TTLinear(64, 8, rank=2, bias=False)            # shape (8, 8, 8): three cores
    for tt in (layer, wide):
        cores = [backend.to_numpy(c.core.data) for c in tt.cores]
        letters = "abcdefgh"
        spec = ",".join(f"{letters[k]}{'ijklmn'[k]}{letters[k + 1]}" for k in range(len(cores)))
        full = np.einsum(spec + "->" + "ijklmn"[:len(cores)], *cores)       # r_0 = r_D = 1 summed away
        np.testing.assert_allclose(backend.to_numpy(tt.full().data), full.reshape(tt.in_features, tt.out_features),
                                   rtol=1e-5, atol=1e-7)
    x = backend.host_normal((2, 3, 6), 1.0)
    expected = backend.to_numpy(x) @ backend.to_numpy(layer.full().data) + backend.to_numpy(layer.bias.data)
    np.testing.assert_allclose(layer(Tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_tt_linear_gradients_match_central_differences(backend_name):
    layer = loretta.TTLinear(4, 6, rank=2, bias=True)             # shape (4, 6): a TT of two cores
    deep = loretta.TTLinear(16, 2, rank=2, bias=False)            # (8, 2, 2): three cores
    for tt in (layer, deep):
        x = Tensor(backend.host_normal((2, 3, tt.in_features), 1.0), requires_grad=True)
        params = [Tensor(c.core.data.astype("float64"), requires_grad=True) for c in tt.cores]
        if tt.bias is not None:
            params.append(Tensor(tt.bias.data.astype("float64"), requires_grad=True))

        def forward(x, *tensors, tt=tt):
            for c, t in zip(tt.cores, tensors):
                c.core = t
            if tt.bias is not None:
                tt.bias = tensors[-1]
            return tt(x)
        assert gradcheck(forward, x, *params)


def test_the_initial_weight_has_the_official_scale():
    tinymix.manual_seed(3)
    stds = [float(loretta.TTLinear(384, 64, rank=5, bias=False).full().data.std()) for _ in range(8)]
    assert 0.6 < np.mean(stds) / np.sqrt(1 / (384 + 64)) < 1.4            # E[W^2] = 1 / (in + out)


def test_loretta_rep_changes_the_model_at_step_zero_merges_exactly_and_trains_norms():
    ids, mask = tiny_batch()
    base = logits(tiny_classifier().eval(), ids, mask)
    model = loretta.inject(tiny_classifier(), loretta.LorettaRepConfig(rank=4, tensor_rank=2)).eval()
    before = logits(model, ids, mask)
    assert not np.allclose(before, base, atol=1e-5)                   # B is not zero at the start
    layer = model.transformer.layers[0].attention.query
    assert isinstance(layer, peft.LoRALinear) and isinstance(layer.lora_B, loretta.TTLinear)
    loretta.merge(model)
    np.testing.assert_allclose(logits(model, ids, mask), before, rtol=1e-4, atol=1e-5)
    loretta.unmerge(model)
    np.testing.assert_allclose(logits(model, ids, mask), before, rtol=1e-5, atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("norm" in n for n in trainable) and all(
        ".cores." in n or "norm" in n or n.startswith("classifier.") for n in trainable)
    zero = loretta.inject(tiny_classifier(), loretta.LorettaRepConfig(rank=4, tensor_rank=2, init_zero=True))
    np.testing.assert_allclose(logits(zero.eval(), ids, mask), base, rtol=1e-5, atol=1e-6)


def test_loretta_adp_places_tt_adapters_after_both_output_denses_and_cannot_merge():
    model = loretta.inject(tiny_classifier(), loretta.LorettaAdpConfig(bottleneck=8, tensor_rank=2))
    block = model.transformer.layers[1]
    assert isinstance(block.attention_adapter, loretta.TTAdapter) and isinstance(block.ffn_adapter, loretta.TTAdapter)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("norm" in n for n in trainable)                    # the official code, in effect
    ids, mask = tiny_batch()
    model(ids, mask).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if ".cores." in n)
    with pytest.raises(ValueError, match="cannot be merged"):
        loretta.merge(model)
    meant = loretta.inject(tiny_classifier(), loretta.LorettaAdpConfig(bottleneck=8, train_layer_norms=True))
    assert any("norm" in n for n, p in meant.named_parameters() if p.requires_grad)


def test_the_tt_adapter_adds_scale_times_up_relu_down_to_its_input(backend_name):
    adapter = loretta.TTAdapter(16, 8, tensor_rank=2, dropout=0.0, scale=0.5)
    h = backend.host_normal((2, 3, 16), 1.0)
    dense = lambda tt: (backend.to_numpy(tt.full().data), backend.to_numpy(tt.bias.data))
    (Wd, bd), (Wu, bu) = dense(adapter.down), dense(adapter.up)
    x = backend.to_numpy(h)
    expected = x + 0.5 * (np.maximum(x @ Wd + bd, 0) @ Wu + bu)
    np.testing.assert_allclose(adapter(Tensor(h)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_counts_on_minilms_shape_match_the_closed_form():
    d, L, head = 384, 6, 384 * 2 + 2
    norms = (1 + 2 * L) * 2 * d                                       # embedding LN + two per layer
    rep = L * 2 * (430 + 430) + norms + head                          # q and v: A and B of 430 each
    assert loretta.count(loretta.inject(minilm_shaped(), loretta.LorettaRepConfig())) == (rep, rep) == (21_074, 21_074)
    down, up = 40 + 150 + 200 + 200 + 40 + 64, 40 + 200 + 200 + 150 + 40 + d    # (8,6,8,8,8), (8,8,8,6,8) + biases
    adp = L * 2 * (down + up) + head
    assert loretta.count(loretta.inject(minilm_shaped(), loretta.LorettaAdpConfig())) == (adp, adp) == (21_266, 21_266)


@pytest.mark.parametrize("config, says", [
    (loretta.LorettaRepConfig(tensor_rank=0), "tensor_rank must be at least 1"),
    (loretta.LorettaRepConfig(rank=64), "rank must be between 1 and min"),
    (loretta.LorettaRepConfig(target_modules=("qkv",)), "unknown LoRA target modules"),
    (loretta.LorettaAdpConfig(bottleneck=0), "bottleneck must be between 1"),
    (loretta.LorettaAdpConfig(dropout=1.5), "dropout must be in"),
])
def test_bad_settings_are_clear_errors(config, says):
    with pytest.raises(ValueError, match=says):
        loretta.inject(tiny_classifier(), config)
