"""Prefix-tuning: gradients, shapes, a prefix nobody attends to changes nothing, padding, the encoder and
the decoder (cached decoding equals uncached), the MLP's removal is exact, counts; and, where PyTorch, PEFT
and transformers are installed, the same outputs as PEFT's PrefixTuningConfig on the real MiniLM."""
import json

import numpy as np
import pytest

import tinymix
from tinymix import backend, decode
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.gradient_check import gradcheck
from tinymix.neighbours import prefix
from tinymix.tensor import Tensor, no_grad
from tinymix.transformer import LanguageModel, Transformer, TransformerConfig

from neighbours_models import logits, minilm_shaped, tiny_batch, tiny_classifier

pytestmark = pytest.mark.numerics


def tiny_decoder(seed=0, positions=24):
    tinymix.manual_seed(seed)
    config = TransformerConfig(kind="decoder", vocab_size=40, hidden_size=32, num_layers=2, num_heads=4,
                               intermediate_size=64, max_positions=positions, dropout=0.0)
    model = LanguageModel(Transformer(config))
    for p in model.parameters():      # peaked distributions: long, varied greedy outputs
        p.data = p.data * 8.0
    return model


def test_gradients_through_the_prefix_hook_and_the_mlp_match_central_differences(backend_name):
    B, H, T, D, P = 2, 2, 3, 2, 2
    x, q = (Tensor(backend.host_normal(s, 0.8), requires_grad=True) for s in ((B, T, H * D), (B, H, T, D)))
    k, v = (Tensor(backend.host_normal(s, 0.8), requires_grad=True) for s in ((B, H, D, T), (B, H, T, D)))
    table = Tensor(backend.host_normal((P, 2 * H * D), 0.8), requires_grad=True)
    mask = xp.zeros((B, 1, 1, T), dtype=xp.float32)
    mask[1, ..., -1] = -1e9                                            # a padded key stays masked

    def attend(x, q, k, v, table, gate=None):
        hook = prefix.Prefix(lambda: table, P, H, gate)
        k2, v2, bias = hook(x, k, v, mask)
        return F.attention(q, k2, v2, bias)
    assert gradcheck(attend, x, q, k, v, table)
    w = Tensor(backend.host_normal((H * D, 1), 0.8), requires_grad=True)
    assert gradcheck(lambda x, q, k, v, table, w: attend(x, q, k, v, table, lambda x: (x @ w).mean(axis=1)),
                     x, q, k, v, table, w)

    encoder = prefix.PrefixEncoder(P, 4, 2, 3)
    params = [Tensor(a.data.astype("float64"), requires_grad=True)
              for a in (encoder.embedding, encoder.down.weight, encoder.down.bias, encoder.up.weight, encoder.up.bias)]

    def layer_one(e, w1, b1, w2, b2):
        encoder.embedding, encoder.down.weight, encoder.down.bias, encoder.up.weight, encoder.up.bias = e, w1, b1, w2, b2
        return encoder.layer(1)
    assert gradcheck(layer_one, *params)


def test_a_prefix_leaves_every_shape_as_it_was_and_changes_the_output():
    ids, mask = tiny_batch(length=6)
    base = logits(tiny_classifier().eval(), ids, mask)
    model = prefix.inject(tiny_classifier(), prefix.PrefixTuningConfig(num_virtual_tokens=5)).eval()
    with no_grad():
        hidden = model.transformer(ids, mask)
    assert hidden.shape == (4, 6, 32)
    assert logits(model, ids, mask).shape == base.shape
    assert np.abs(logits(model, ids, mask) - base).max() > 1e-3


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_a_prefix_that_no_query_attends_to_gives_the_base_output(kind):
    """Every query carries a large component along u (a query bias), every prefix key points the other
    way: the prefix's scores are about -1e4, its weights exp(-1e4) = 0. Without the shifted positions
    the output must then be the base model's, to rounding."""
    model = tiny_classifier() if kind == "encoder" else tiny_decoder()
    u = backend.host_normal((32,), 1.0)
    for block in model.transformer.layers:
        block.attention.query.bias.data = 30 * u
    base_model = tiny_classifier() if kind == "encoder" else tiny_decoder()
    base_model.load_state_dict(model.state_dict())
    config = prefix.PrefixTuningConfig(num_virtual_tokens=3, prefix_projection=False, shift_positions=False)
    prefix.inject(model, config)
    table = backend.host_normal((3, 2 * 2 * 32), 1.0)
    for i in range(2):
        table[:, 2 * i * 32:(2 * i + 1) * 32] = -30 * u                # the keys; the values stay random
    model.transformer.prefix_encoder.table.data = table
    ids, mask = tiny_batch(length=6)
    ids = ids % 40
    run = (lambda m: logits(m.eval(), ids, mask)) if kind == "encoder" else \
        (lambda m: backend.to_numpy(m.eval()(ids).data))
    np.testing.assert_allclose(run(model), run(base_model), rtol=1e-5, atol=1e-5)
    model.transformer.prefix_encoder.table.data = backend.host_normal((3, 2 * 2 * 32), 1.0)
    assert np.abs(run(model) - run(base_model)).max() > 1e-3       # a prefix that is attended to acts


def test_padding_is_still_masked_and_the_prefix_is_seen_by_every_token():
    """A sentence alone and the same sentence padded to a longer batch: the same outputs at its tokens."""
    model = prefix.inject(tiny_classifier(), prefix.PrefixTuningConfig(num_virtual_tokens=4)).eval()
    ids, mask = tiny_batch(length=6)
    with no_grad():
        padded = model.transformer(ids, mask).numpy()
        alone = model.transformer(ids[2:3, :4], mask[2:3, :4]).numpy()
    np.testing.assert_allclose(padded[2, :4], alone[0], rtol=1e-5, atol=1e-5)


def test_cached_decoding_with_a_prefix_equals_uncached_decoding():
    model = prefix.inject(tiny_decoder(), prefix.PrefixTuningConfig(num_virtual_tokens=4)).eval()
    ids = backend.host_generator(3).integers(2, 40, size=(3, 9))
    with no_grad():
        full = backend.to_numpy(model(ids).data)
        cache = model.new_cache()
        pieces = [backend.to_numpy(model(ids[:, :4], cache=cache).data)]
        pieces += [backend.to_numpy(model(ids[:, t:t + 1], cache=cache).data) for t in range(4, 9)]
    assert cache.keys[0].shape[-1] == 4 + 9                           # the prefix is the cache's start
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-4, atol=1e-4 * np.abs(full).max())
    prompts = [r.tolist() for r in backend.host_generator(4).integers(2, 40, size=(6, 3))]
    cached = decode.greedy(model, prompts, 1, max_new_tokens=12, use_cache=True)
    uncached = decode.greedy(model, prompts, 1, max_new_tokens=12, use_cache=False)
    assert [d.ids for d in cached] == [d.ids for d in uncached]
    assert sum(len(d.ids) for d in cached) > 20
    beam = decode.beam_search(model, prompts[0], 1, beam_width=3, max_new_tokens=8)      # the cache reordered
    again = decode.beam_search(model, prompts[0], 1, beam_width=3, max_new_tokens=8, use_cache=False)
    assert beam.ids == again.ids and beam.score == pytest.approx(again.score, rel=1e-5)


def test_shifted_positions_cost_the_decoder_its_window():
    model = prefix.inject(tiny_decoder(positions=24), prefix.PrefixTuningConfig(num_virtual_tokens=4))
    assert model.transformer.position_offset == 4
    assert decode.room(model, [2, 3], 100) == 24 - 4 - 2
    with pytest.raises(ValueError, match="sequence of 25 tokens is longer than the 24"):
        with no_grad():
            model(np.full((1, 21), 2))
    unshifted = prefix.inject(tiny_decoder(positions=24), prefix.PrefixTuningConfig(4, shift_positions=False))
    assert unshifted.transformer.position_offset == 0 and decode.room(unshifted, [2, 3], 100) == 22


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_deploying_computes_the_mlp_once_and_changes_no_output(kind):
    model = prefix.inject(tiny_classifier() if kind == "encoder" else tiny_decoder(), prefix.PrefixTuningConfig(3))
    ids, mask = tiny_batch(length=6)
    run = (lambda: logits(model.eval(), ids, mask)) if kind == "encoder" else \
        (lambda: backend.to_numpy(model.eval()(ids % 40).data))
    before = run()
    prefix.deploy(model)
    encoder = model.transformer.prefix_encoder
    assert not encoder.projected and encoder.table.shape == (3, 2 * 2 * 32)
    assert not hasattr(encoder, "down") and not hasattr(encoder, "embedding")
    np.testing.assert_allclose(run(), before, rtol=1e-5, atol=1e-6)


def test_only_the_prefix_and_the_head_train():
    model = prefix.inject(tiny_classifier(), prefix.PrefixTuningConfig(3))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"transformer.prefix_encoder.embedding", "transformer.prefix_encoder.down.weight",
                       "transformer.prefix_encoder.down.bias", "transformer.prefix_encoder.up.weight",
                       "transformer.prefix_encoder.up.bias", "classifier.weight", "classifier.bias"}


def test_counts_on_minilms_shape_match_the_closed_form():
    P, d, L, mid, head = 10, 384, 6, 512, 384 * 2 + 2
    model = prefix.inject(minilm_shaped(), prefix.PrefixTuningConfig())
    training = P * d + d * mid + mid + mid * 2 * L * d + 2 * L * d
    assert prefix.count(model) == (training + head, P * 2 * L * d + head) == (2_565_634, 46_850)
    prefix.deploy(model)
    assert prefix.count(model) == (46_850, 46_850)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="num_virtual_tokens must be at least 1"):
        prefix.inject(tiny_classifier(), prefix.PrefixTuningConfig(0))
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        prefix.inject(tiny_classifier(), prefix.PrefixTuningConfig(init="xavier"))
    with pytest.raises(ValueError, match="leaves none of the model's 16"):
        prefix.inject(tiny_classifier(), prefix.PrefixTuningConfig(16))


# ---- PEFT itself, where it is installed ----------------------------------------------------------------

def test_the_same_outputs_as_peft_prefix_tuning_on_minilm(monkeypatch):
    """PEFT's PrefixTuningConfig (with its MLP, then without: the deployed table) on transformers'
    BertModel holding the real MiniLM weights, given tinymix's prefix weights: the same hidden states
    at every real token. PEFT numbers the tokens after the prefix; without that shift they differ."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft_library = pytest.importorskip("peft")
    import safetensors.torch
    from tinymix import pretrained
    from tinymix.store import assets

    where = pretrained._MINILM_DIR
    bert = transformers.BertModel(transformers.BertConfig(**json.loads(assets.read_member("minilm", where + "config.json"))))
    bert.load_state_dict(safetensors.torch.load(assets.read_member("minilm", where + "model.safetensors")), strict=False)
    minilm, tokenizer = pretrained.load_pretrained("minilm-l6")
    ids, mask = tokenizer(["A gripping, beautifully acted film.", "I want my two hours back.", "fine"])
    real = mask[:, :, None] > 0
    as_torch = lambda a: torch.from_numpy(backend.to_numpy(a.data))

    def peft_hidden(projection, weights):
        config = peft_library.PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=10,
                                                 prefix_projection=projection, encoder_hidden_size=512)
        model = peft_library.get_peft_model(bert, config).eval()
        encoder = model.prompt_encoder["default"]
        with torch.no_grad():
            for name, array in weights.items():
                encoder.get_parameter(name).copy_(as_torch(array))
            out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        return out.numpy()

    tinymix.manual_seed(0)
    prefix.inject(minilm, prefix.PrefixTuningConfig()).eval()
    ours = lambda: minilm(ids, mask).numpy()
    e = minilm.prefix_encoder
    with no_grad():
        trained = ours()
    theirs = peft_hidden(True, {"embedding.weight": e.embedding, "transform.0.weight": e.down.weight,
                                "transform.0.bias": e.down.bias, "transform.2.weight": e.up.weight,
                                "transform.2.bias": e.up.bias})
    with torch.no_grad():
        plain = bert(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    assert np.abs((theirs - plain) * real).max() > 0.5                 # the prefix matters ...
    assert np.abs((theirs - trained) * real).max() < 1e-4              # ... and both apply it alike
    prefix.deploy(minilm)
    with no_grad():
        deployed = ours()
    theirs_deployed = peft_hidden(False, {"embedding.weight": e.table})
    assert np.abs((theirs_deployed - deployed) * real).max() < 1e-4
    minilm.position_offset = 0
    with no_grad():
        unshifted = ours()
    assert np.abs((theirs_deployed - unshifted) * real).max() > 1e-2
