"""The Transformer on tiny random configurations: shapes, masks, the tied LM head, pooling, gradients."""
import pytest

from tinymix import Tensor, backend, gradcheck, manual_seed
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.transformer import (LanguageModel, SequenceClassifier, Transformer, TransformerConfig,
                                 mean_pool)

from numeric import close

pytestmark = pytest.mark.numerics

V, C, H, I, P = 23, 8, 2, 16, 12  # vocabulary, hidden, heads, FFN width, max positions


def tiny_config(kind="encoder", **changes):
    fields = dict(kind=kind, vocab_size=V, hidden_size=C, num_layers=2, num_heads=H, intermediate_size=I,
                  max_positions=P, dropout=0.0, layer_norm_eps=1e-5)
    return TransformerConfig(**{**fields, **changes})


def tiny_model(kind="encoder", seed=0, **changes):
    manual_seed(seed)
    return Transformer(tiny_config(kind, **changes)).eval()


def random_ids(shape, seed, low=1):
    """Token ids in [low, V) from a generator of their own (id 0 is the pad token)."""
    return backend.from_numpy(backend.host_generator(seed).integers(low, V, size=shape))


# ---- configuration and shapes ------------------------------------------------------------------

def test_config_rejects_bad_kind_and_indivisible_heads():
    with pytest.raises(ValueError, match="kind"):
        TransformerConfig(kind="seq2seq")
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(hidden_size=10, num_heads=3)


def test_encoder_output_shape_and_parameter_names():
    model = tiny_model("encoder")
    hidden = model(random_ids((3, 7), seed=1))
    assert hidden.shape == (3, 7, C)
    names = {name for name, _ in model.named_parameters()}
    assert {"token_type_embeddings.weight", "embedding_norm.weight", "layers.1.attention.query.weight",
            "layers.1.output_norm.bias"} <= names
    assert not any(name.startswith("final_norm") for name in names)


def test_decoder_output_shapes_and_parameter_names():
    model = tiny_model("decoder")
    ids = random_ids((2, 5), seed=1)
    assert model(ids).shape == (2, 5, C)
    assert LanguageModel(model)(ids).shape == (2, 5, V)
    names = {name for name, _ in model.named_parameters()}
    assert "final_norm.weight" in names
    assert not any(name.startswith(("token_type", "embedding_norm")) for name in names)


def test_language_model_needs_a_decoder():
    with pytest.raises(ValueError, match="decoder"):
        LanguageModel(tiny_model("encoder"))


def test_outputs_stay_float32():
    encoder, decoder = tiny_model("encoder"), tiny_model("decoder")
    ids = random_ids((2, 6), seed=1)
    mask = xp.ones((2, 6), dtype=xp.int64)
    mask[1, 4:] = 0
    hidden = encoder(ids, mask)
    assert hidden.dtype == xp.float32
    assert mean_pool(hidden, mask).dtype == xp.float32
    assert SequenceClassifier(encoder, 3)(ids, mask).dtype == xp.float32
    assert decoder(ids).dtype == xp.float32
    assert LanguageModel(decoder)(ids, mask).dtype == xp.float32


# ---- masks --------------------------------------------------------------------------------------

def test_encoder_real_tokens_do_not_depend_on_padding():
    model = tiny_model("encoder")
    short, long = random_ids((1, 4), seed=1), random_ids((1, 9), seed=2)
    alone = model(short).data                                          # (1, 4, C)
    padded_ids = xp.concatenate([short, random_ids((1, 5), seed=3)], axis=1)  # pad slots hold junk ids
    batch_ids = xp.concatenate([padded_ids, long], axis=0)                    # (2, 9)
    mask = xp.ones((2, 9), dtype=xp.int64)
    mask[0, 4:] = 0
    batched = model(batch_ids, mask).data                              # (2, 9, C)
    assert close(batched[0, :4], alone[0])
    assert close(batched[1], model(long).data[0])
    assert close(mean_pool(Tensor(batched), mask).data[0], alone[0].mean(axis=0))


def test_encoder_attends_in_both_directions():
    model = tiny_model("encoder")
    ids = random_ids((1, 6), seed=1)
    changed = ids.copy()
    changed[0, 5] = (ids[0, 5] % (V - 1)) + 1  # another non-pad id
    assert not close(model(ids).data[0, 0], model(changed).data[0, 0], rel=1e-6)


def test_decoder_is_causal():
    model = tiny_model("decoder")
    ids = random_ids((2, 8), seed=1)
    changed = ids.copy()
    changed[:, 5:] = random_ids((2, 3), seed=2)
    assert not xp.array_equal(ids[:, 5:], changed[:, 5:])
    before, after = model(ids).data, model(changed).data
    assert close(before[:, :5], after[:, :5], rel=1e-6)  # the past cannot see the future
    assert not close(before[:, 5:], after[:, 5:], rel=1e-3)  # ... but the changed positions differ


def test_sequence_longer_than_max_positions_is_a_clear_error():
    model = tiny_model("encoder")
    assert model(random_ids((1, P), seed=1)).shape == (1, P, C)
    with pytest.raises(ValueError, match=rf"{P + 1} tokens.*{P} positions"):
        model(random_ids((1, P + 1), seed=1))
    with pytest.raises(ValueError, match="positions"):
        tiny_model("decoder")(random_ids((1, P + 1), seed=1))


# ---- heads --------------------------------------------------------------------------------------

def test_lm_head_is_tied_to_the_word_embeddings():
    decoder = tiny_model("decoder")
    lm = LanguageModel(decoder)
    # no weight of its own: the language model's parameters are exactly the decoder's
    assert [n for n, _ in lm.named_parameters()] == [f"transformer.{n}" for n, _ in decoder.named_parameters()]
    ids = random_ids((1, 5), seed=1)
    hidden = decoder(ids).data
    assert close(lm(ids).data, hidden @ decoder.word_embeddings.weight.data.T)
    decoder.word_embeddings.weight.data[3] = 0.0  # the head reads the very same array
    assert xp.array_equal(lm(ids).data[..., 3], xp.zeros((1, 5), dtype=xp.float32))


def test_lm_head_sends_gradient_to_embedding_rows_not_in_the_input():
    decoder = tiny_model("decoder")
    ids = random_ids((1, 5), seed=1, low=2)  # never id 1: its row is used by the head only
    F.cross_entropy(LanguageModel(decoder)(ids)[:, :-1], ids[:, 1:]).backward()
    grad = decoder.word_embeddings.weight.grad
    assert grad is not None and float(xp.abs(grad[1]).max()) > 0


def test_sequence_classifier_mean_and_first_pooling():
    encoder = tiny_model("encoder")
    ids = random_ids((2, 6), seed=1)
    mask = xp.ones((2, 6), dtype=xp.int64)
    mask[0, 3:] = 0
    by_mean = SequenceClassifier(encoder, 3, pooling="mean", dropout=0.0).eval()
    by_first = SequenceClassifier(encoder, 3, pooling="first", dropout=0.0).eval()
    by_first.classifier.load_state_dict(by_mean.classifier.state_dict())
    W, b = by_mean.classifier.weight.data, by_mean.classifier.bias.data
    hidden = encoder(ids, mask).data                                   # (2, 6, C)
    first = hidden[:, 0]                                               # (2, C)
    mean = xp.stack([hidden[0, :3].mean(axis=0), hidden[1].mean(axis=0)])  # real tokens only
    assert close(by_first(ids, mask).data, first @ W.T + b)
    assert close(by_mean(ids, mask).data, mean @ W.T + b)
    unmasked = encoder(ids).data.mean(axis=1)                          # no mask: every position
    assert close(by_mean(ids).data, unmasked @ W.T + b)
    assert not close(by_mean(ids, mask).data, by_first(ids, mask).data, rel=1e-4)
    with pytest.raises(ValueError, match="pooling"):
        SequenceClassifier(encoder, 3, pooling="max")


# ---- gradients ----------------------------------------------------------------------------------

def as_float64(model):
    for p in model.parameters():
        p.data = p.data.astype(xp.float64)
    return model


def test_gradcheck_encoder_loss_wrt_attention_query_weight():
    model = as_float64(tiny_model("encoder", num_layers=1))
    classifier = as_float64(SequenceClassifier(model, 3, dropout=0.0).eval())
    ids = random_ids((2, 5), seed=1)
    mask = xp.ones((2, 5), dtype=xp.int64)
    mask[1, 3:] = 0
    labels = xp.asarray([0, 2])
    query = model.layers[0].attention.query
    original = query.weight

    def loss(weight):
        query.weight = weight
        return F.cross_entropy(classifier(ids, mask), labels)

    try:
        weight = Tensor(original.data, requires_grad=True, dtype=xp.float64)
        assert gradcheck(loss, weight)
    finally:
        query.weight = original


def test_gradcheck_language_model_wrt_tied_embeddings():
    decoder = as_float64(tiny_model("decoder", num_layers=1, vocab_size=7))
    lm = LanguageModel(decoder)
    ids = backend.from_numpy(backend.host_generator(1).integers(0, 7, size=(1, 5)))
    embeddings = decoder.word_embeddings
    original = embeddings.weight

    def loss(weight):
        embeddings.weight = weight
        return F.cross_entropy(lm(ids)[:, :-1], ids[:, 1:])

    try:
        weight = Tensor(original.data, requires_grad=True, dtype=xp.float64)
        assert gradcheck(loss, weight)
    finally:
        embeddings.weight = original


def test_frozen_backbone_only_the_head_gets_gradients():
    manual_seed(0)
    encoder = Transformer(tiny_config("encoder", dropout=0.1))  # training mode, dropout on
    model = SequenceClassifier(encoder, 2)
    encoder.requires_grad_(False)
    ids = random_ids((3, 6), seed=1)
    loss = F.cross_entropy(model(ids), xp.asarray([0, 1, 1]))
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("classifier."):
            assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == xp.float32, name
        else:
            assert p.grad is None, name
    assert model.num_parameters(trainable_only=True) == 2 * C + 2
