"""The real all-MiniLM-L6-v2 against Hugging Face's BertModel, and the pretrained entry points' errors.

The reference (tests/reference/minilm_reference.npz, made by make_minilm_reference.py) holds HF's
token ids and float32 outputs for six awkward sentences: accents, an emoji, punctuation runs, a
made-up word, and a long sentence that sets the padded length.
"""
from pathlib import Path

# The reference file is host data with a string array in it, which only NumPy's npz reader gives
# back; model outputs are brought to the host with backend.to_numpy before they are compared.
import numpy
import pytest
import tokenizers

from tinymix import Tensor, backend, manual_seed
from tinymix.store import checkpoint
from tinymix.backend import xp
from tinymix.pretrained import (KNOWN_MODELS, Tokenizer, bert_config, bert_state_dict, embed, load_gpt,
                                load_pretrained, save_gpt, tiny_gpt_record)
from tinymix.tensor import no_grad
from tinymix.transformer import Transformer, TransformerConfig, mean_pool

pytestmark = pytest.mark.numerics

REFERENCE = Path(__file__).parent / "reference" / "minilm_reference.npz"
TOLERANCE = 1e-4   # max |tinymix - HF| in float32; the implementation reaches about 5e-6
CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def minilm():
    """(model, tokenizer), loaded once for the whole module."""
    return load_pretrained("minilm-l6")


@pytest.fixture(scope="module")
def reference():
    with numpy.load(REFERENCE, allow_pickle=False) as file:
        return {key: file[key] for key in file.files}


@pytest.fixture(scope="module")
def padded_hidden(minilm, reference):
    """tinymix's last hidden states for the reference's padded batch, as an xp array (6, T, 384)."""
    model, _ = minilm
    with no_grad():
        hidden = model(reference["input_ids"], reference["attention_mask"])
    assert hidden.dtype == xp.float32
    return hidden.data


def sentences(reference):
    return [str(s) for s in reference["sentences"]]


def max_abs_diff(ours, theirs):
    return float(abs(backend.to_numpy(ours).astype("float64") - theirs.astype("float64")).max())


# ---- parity with Hugging Face -------------------------------------------------------------------

def test_tokenizer_gives_the_reference_ids_and_mask(minilm, reference):
    _, tokenizer = minilm
    ids, mask = tokenizer(sentences(reference))
    assert ids.dtype == "int64" and mask.dtype == "int64"
    assert ids.shape == reference["input_ids"].shape
    assert (ids == reference["input_ids"]).all()
    assert (mask == reference["attention_mask"]).all()


def test_last_hidden_state_matches_on_real_tokens(padded_hidden, reference):
    assert padded_hidden.shape == reference["last_hidden_state"].shape
    real = reference["attention_mask"].astype(bool)   # pad rows are HF's own business
    assert max_abs_diff(backend.to_numpy(padded_hidden)[real], reference["last_hidden_state"][real]) <= TOLERANCE


def test_single_unpadded_sentence_matches(minilm, reference):
    model, _ = minilm
    with no_grad():
        hidden = model(reference["single_ids"])                               # (1, T1, 384)
    assert hidden.shape == reference["single_hidden"].shape
    assert max_abs_diff(hidden.data, reference["single_hidden"]) <= TOLERANCE


def test_mean_pooled_embeddings_match(padded_hidden, reference):
    pooled = mean_pool(Tensor(padded_hidden), reference["attention_mask"])   # (6, 384)
    assert pooled.dtype == xp.float32
    assert max_abs_diff(pooled.data, reference["mean_pooled"]) <= TOLERANCE


def test_embed_returns_float32_rows_matching_the_reference(minilm, reference):
    model, tokenizer = minilm
    vectors = embed(model, tokenizer, sentences(reference))
    assert backend.is_array(vectors)
    assert vectors.shape == (6, 384) and vectors.dtype == xp.float32
    assert max_abs_diff(vectors, reference["mean_pooled"]) <= TOLERANCE
    # batches of 4 then 2, padded to different lengths: the same vectors
    assert max_abs_diff(embed(model, tokenizer, sentences(reference), batch_size=4),
                        reference["mean_pooled"]) <= TOLERANCE


# ---- what load_pretrained promises --------------------------------------------------------------

def test_loaded_model_is_frozen_and_in_eval_mode(minilm):
    model, _ = minilm
    assert all(not p.requires_grad for p in model.parameters())
    assert model.num_parameters(trainable_only=True) == 0
    layer = 4 * (384 * 384 + 384) + (384 * 1536 + 1536) + (1536 * 384 + 384) + 2 * 2 * 384
    embeddings = (30522 + 512 + 2) * 384 + 2 * 384
    assert model.num_parameters() == embeddings + 6 * layer == 22_565_376  # the pooler is dropped
    assert not model.training
    assert all(not module.training for _, module in model.named_modules())


def test_embed_restores_training_mode(minilm):
    model, tokenizer = minilm
    model.train()
    try:
        embed(model, tokenizer, ["a fine film"])
        assert model.training and model.layers[0].dropout.training
    finally:
        model.eval()


def test_embed_is_deterministic_even_from_training_mode(minilm):
    model, tokenizer = minilm
    texts = ["a fine film", "a dull film"]
    in_eval = embed(model, tokenizer, texts)
    model.train()  # embed must switch dropout off itself
    try:
        assert max_abs_diff(embed(model, tokenizer, texts), backend.to_numpy(in_eval)) == 0.0
    finally:
        model.eval()


# ---- bad input ----------------------------------------------------------------------------------

def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        load_pretrained("bert-huge")
    message = str(error.value)
    assert "bert-huge" in message
    assert all(name in message for name in KNOWN_MODELS)


def test_empty_list_of_texts_is_a_clear_error(minilm):
    model, tokenizer = minilm
    with pytest.raises(ValueError, match="empty"):
        embed(model, tokenizer, [])
    with pytest.raises(ValueError, match="empty"):
        tokenizer([])


def test_text_longer_than_128_tokens_is_truncated_to_128(minilm):
    model, tokenizer = minilm
    long_text = "the film " * 200                       # 400 word pieces before truncation
    ids, mask = tokenizer([long_text, "short"])
    assert ids.shape == (2, 128) and mask[0].sum() == 128
    assert ids[0, 0] == CLS and ids[0, -1] == SEP       # special tokens survive the cut
    assert mask[1].sum() == 3                           # [CLS] short [SEP], then padding
    vectors = embed(model, tokenizer, [long_text])
    assert vectors.shape == (1, 384) and bool(xp.isfinite(vectors).all())


def test_tokenizer_truncates_to_its_own_max_length(minilm):
    _, tokenizer = minilm
    # the same vocabulary and rules, a shorter limit: the cut is the wrapper's, not tokenizer.json's
    short = Tokenizer(tokenizers.Tokenizer.from_str(tokenizer.tokenizer.to_str()), 16, tokenizer.pad_id)
    ids, mask = short(["the film " * 200, "a cat sat on the mat."])
    assert ids.shape == (2, 16) and mask[0].sum() == 16 and ids[0, -1] == SEP
    whole, _ = tokenizer(["a cat sat on the mat."])    # 8 tokens: under the limit, left whole
    assert mask[1].sum() == whole.shape[1] and (ids[1, :whole.shape[1]] == whole[0]).all()


def test_embed_of_a_single_string_is_one_sentence_or_an_error(minilm):
    model, tokenizer = minilm
    text = "a sentence passed without list brackets"     # 39 characters: two slices of 32
    assert len(text) > 32
    try:
        vectors = embed(model, tokenizer, text)
    except (TypeError, ValueError):
        return  # refusing a bare string is fine too
    assert vectors.shape == (1, 384)


def test_truncated_safetensors_file_is_a_clear_error_naming_it(minilm, tmp_path):
    model, _ = minilm
    layer = {name: array for name, array in model.state_dict().items() if name.startswith("layers.0.")}
    whole = tmp_path / "layer0.safetensors"
    checkpoint.save_arrays(whole, layer)
    assert set(checkpoint.load_arrays(whole)) == set(layer)  # the intact file loads
    data = whole.read_bytes()
    for name, damaged in [("half.safetensors", data[:len(data) // 2]),
                          ("last-byte-gone.safetensors", data[:-1]),
                          ("header-cut.safetensors", data[:12]),
                          ("empty.safetensors", b"")]:
        path = tmp_path / name
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match="not a valid safetensors file") as error:
            checkpoint.load_arrays(path)
        assert str(path) in str(error.value)


# ---- the pieces load_pretrained is made of ------------------------------------------------------

def test_bert_names_are_mapped_and_unknown_ones_refused():
    hf = {"bert.embeddings.word_embeddings.weight": 1, "embeddings.position_ids": 2, "pooler.dense.weight": 3,
          "encoder.layer.3.attention.self.key.bias": 4, "encoder.layer.3.attention.output.LayerNorm.weight": 5,
          "encoder.layer.3.output.dense.weight": 6}
    assert bert_state_dict(hf) == {"word_embeddings.weight": 1, "layers.3.attention.key.bias": 4,
                                   "layers.3.attention_norm.weight": 5, "layers.3.output.weight": 6}
    with pytest.raises(KeyError, match="cls.predictions.bias"):
        bert_state_dict({"cls.predictions.bias": 0})


def test_bert_config_refuses_other_activations():
    with pytest.raises(ValueError, match="gelu_new"):
        bert_config({"hidden_act": "gelu_new"})


def test_gpt_checkpoint_round_trip(minilm, tmp_path):
    _, tokenizer = minilm
    manual_seed(0)
    config = TransformerConfig(kind="decoder", vocab_size=tokenizer.vocab_size, hidden_size=8, num_layers=1,
                               num_heads=2, intermediate_size=16, max_positions=32, dropout=0.0)
    saved = Transformer(config).eval()
    save_gpt(saved, tokenizer, tmp_path / "gpt", extra={"steps": 0})
    assert sorted(p.name for p in (tmp_path / "gpt").iterdir()) == ["config.json", "model.safetensors",
                                                                   "tokenizer.json"]
    loaded, loaded_tokenizer = load_gpt(tmp_path / "gpt")
    assert loaded.config == config
    ids, _ = loaded_tokenizer(["a cat sat on the mat."])
    assert (ids == tokenizer(["a cat sat on the mat."])[0]).all()
    assert max_abs_diff(loaded(ids).data, backend.to_numpy(saved(ids).data)) == 0.0
    with pytest.raises(FileNotFoundError, match="pretrain-gpt"):
        load_gpt(tmp_path / "nothing here")
    # a checkpoint folder is a model name too (`--model FOLDER`), frozen like the named ones
    by_folder, _ = load_pretrained(str(tmp_path / "gpt"))
    assert by_folder.config == config and not any(p.requires_grad for p in by_folder.parameters())
    assert tiny_gpt_record(tmp_path / "gpt") == {"steps": 0}
