"""The tiny GPT: its tokenizer, its corpus, its pretraining loop, its checkpoint, and the committed weights.

The last tests prove that data/tiny_gpt/ was really trained: on validation plays and on restaurant
sentences in template families it never saw, its next-token loss is far below log(V), the loss of a
model that knows nothing, and its tokenizer writes restaurant words as single tokens.
"""
import math
import re

import pytest

from tinymix import backend, cli, e2e, pretrained
from tinymix.store import checkpoint
from tinymix.e2e import pretrain
from tinymix.backend import xp
from tinymix.tensor import no_grad
from tinymix.transformer import LanguageModel, Transformer, TransformerConfig

pytestmark = pytest.mark.numerics

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
    return pretrain.train_bpe_tokenizer(SAMPLE * 4, vocab_size=300, max_length=512)


def tiny_config(tokenizer):
    return TransformerConfig(kind="decoder", vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=1,
                             num_heads=2, intermediate_size=64, max_positions=16, dropout=0.0,
                             layer_norm_eps=1e-5, gelu_approximate=True, pad_token_id=tokenizer.pad_id)


def test_tokenizer_round_trip_and_special_tokens(small_tokenizer):
    for text in ROUND_TRIPS:  # byte-level: any ASCII text comes back exactly, even unseen characters
        assert small_tokenizer.decode(small_tokenizer.encode(text)) == text
    assert small_tokenizer.pad_id == 0
    assert small_tokenizer.tokenizer.token_to_id(pretrain.END_OF_TEXT) == 1
    assert small_tokenizer.vocab_size == 300
    again = pretrain.train_bpe_tokenizer(SAMPLE * 4, vocab_size=300, max_length=512)
    assert again.tokenizer.to_str() == small_tokenizer.tokenizer.to_str()  # deterministic


def test_token_stream_is_not_truncated_and_ends_each_text(small_tokenizer):
    short = pretrain.train_bpe_tokenizer(SAMPLE * 4, vocab_size=300, max_length=16)
    assert len(short.encode(SAMPLE)) == 16                       # the tokenizer truncates ...
    stream = pretrain.token_stream(short, [SAMPLE, SAMPLE])           # ... the stream does not
    assert stream.dtype.name == "int64" and len(stream) == 2 * len(small_tokenizer.encode(SAMPLE)) + 2
    assert (stream == 1).sum() == 2 and stream[-1] == 1
    assert small_tokenizer.decode(stream[:len(stream) // 2].tolist()) == SAMPLE


def test_windows(small_tokenizer):
    stream = pretrain.token_stream(small_tokenizer, [SAMPLE] * 3)
    windows = pretrain.fixed_windows(stream, 5, 9)
    assert windows.shape == (5, 9)
    assert windows[0].tolist() == stream[:9].tolist() and windows[-1].tolist() == stream[-9:].tolist()
    batch = pretrain.random_windows(stream, 4, 9)
    pieces = [stream[s:s + 9].tolist() for s in range(len(stream) - 8)]
    assert batch.shape == (4, 9) and all(row.tolist() in pieces for row in batch)  # contiguous pieces


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(small_tokenizer):
    config = tiny_config(small_tokenizer)
    stream = pretrain.token_stream(small_tokenizer, [SAMPLE] * 8)
    fixed = pretrain.fixed_windows(stream, 8, config.max_positions + 1)
    backend.manual_seed(3)  # pretrain(seed=3) starts from these very weights
    before = pretrain.evaluate(LanguageModel(Transformer(config)), fixed)
    model, report = pretrain.pretrain(config, {"text": stream}, {"text": stream}, steps=30, batch_size=8, lr=1e-2,
                                 seed=3, evaluations=2, val_windows=8)
    after = pretrain.evaluate(model, fixed)
    assert before > math.log(config.vocab_size) - 0.5   # untrained: about log V
    assert after < before - 1.0, (before, after)
    assert len(report["train_loss"]) == 30 and sorted(report["val_loss"]["text"]) == [15, 30]
    assert report["final_val_loss"]["text"] == pytest.approx(report["val_loss"]["text"][30])


def test_window_counts_split_a_batch_by_share():
    assert pretrain.window_counts(8, {"shakespeare": 0.75, "e2e": 0.25}) == {"shakespeare": 6, "e2e": 2}
    assert pretrain.window_counts(8, {"shakespeare": 1.0, "e2e": 0.0}) == {"shakespeare": 8}
    assert pretrain.window_counts(4, {"shakespeare": 0.7, "e2e": 0.3}) == {"shakespeare": 3, "e2e": 1}
    with pytest.raises(ValueError, match="sum to 1"):
        pretrain.window_counts(8, {"shakespeare": 0.75, "e2e": 0.5})
    with pytest.raises(ValueError, match="cannot hold"):
        pretrain.window_counts(4, {"shakespeare": 0.95, "e2e": 0.05})     # 0.2 of a window


def test_pretraining_mixes_streams_and_checks_each(small_tokenizer):
    config = tiny_config(small_tokenizer)
    plays = pretrain.token_stream(small_tokenizer, [SAMPLE] * 8)
    pubs = pretrain.token_stream(small_tokenizer, ["The Eagle is a cheap pub near Burger King."] * 40)
    with pytest.raises(ValueError, match="need their shares"):
        pretrain.pretrain(config, {"plays": plays, "pubs": pubs}, {"plays": plays}, 2, 4, 1e-2)
    model, report = pretrain.pretrain(config, {"plays": plays, "pubs": pubs}, {"plays": plays, "pubs": pubs},
                                 steps=30, batch_size=4, lr=1e-2, shares={"plays": 0.5, "pubs": 0.5},
                                 evaluations=1, val_windows=4)
    assert report["windows_per_batch"] == {"plays": 2, "pubs": 2}
    assert set(report["final_val_loss"]) == set(report["final_train_loss"]) == {"plays", "pubs"}
    # the pub sentence repeats: with half of every batch on it, it is learnt far better than the plays
    assert report["final_val_loss"]["pubs"] < report["final_val_loss"]["plays"] - 1.0, report["final_val_loss"]


def test_save_and_load_reproduce_the_logits_exactly(small_tokenizer, tmp_path):
    config = tiny_config(small_tokenizer)
    stream = pretrain.token_stream(small_tokenizer, [SAMPLE] * 4)
    model, _ = pretrain.pretrain(config, {"text": stream}, {"text": stream}, steps=3, batch_size=4, lr=1e-2,
                            seed=1, evaluations=1, val_windows=4)
    pretrained.save_gpt(model.transformer, small_tokenizer, tmp_path, extra={"steps": 3})
    transformer, tokenizer = pretrained.load_gpt(tmp_path)
    loaded = LanguageModel(transformer).eval()
    ids = pretrain.fixed_windows(stream, 3, 16)
    with no_grad():
        expected, got = model.eval()(ids).data, loaded(ids).data
    assert got.dtype == xp.float32
    assert backend.to_numpy(got).tolist() == backend.to_numpy(expected).tolist()
    assert tokenizer.encode("O Romeo, Romeo!") == small_tokenizer.encode("O Romeo, Romeo!")
    assert transformer.config == config
    # greedy decoding is a pure function of the weights: the same text from both
    assert pretrain.generate(model, small_tokenizer, "ROMEO.", 8) == pretrain.generate(loaded, tokenizer, "ROMEO.", 8)


def test_validation_split_is_whole_plays_and_about_five_percent():
    texts = pretrain.shakespeare_texts()
    train, validation = pretrain.shakespeare_split()
    assert len(texts) == 42 and len(train) + len(validation) == 42
    share = sum(map(len, validation)) / sum(map(len, texts.values()))
    assert 0.04 < share < 0.06
    assert set(validation).isdisjoint(train)


def said_combination(text):
    found = e2e.find_values(text)
    return e2e.combination({slot: min(values) for slot, values in found.items()})


def test_pretraining_corpus_holds_out_the_test_and_the_held_out_families():
    corpus = pretrain.pretraining_corpus(e2e_texts=1000, seed=0, e2e_data_seed=0, e2e_validation_texts=100)
    assert set(corpus["train"]) == {"shakespeare", "e2e"}
    assert set(corpus["validation"]) == {"shakespeare", "e2e_held_out"}
    owner = e2e.combination_splits(seed=0)
    texts = corpus["train"]["e2e"]
    assert len(texts) == 1000 and not any("=>" in t or "\n" in t for t in texts)   # plain text, no prompts
    # each text describes one restaurant; what it SAYS, read back by the scorer, is a training combination
    assert {owner[said_combination(t)] for t in texts} == {"train"}
    assert not [t for t in texts if re.search(r"(^|\. )(Located|Situated|If you)\b|\. This \w", t)]
    assert {owner[said_combination(t)] for t in corpus["validation"]["e2e_held_out"]} == {"validation"}
    test = e2e.make_splits(2000, 100, 200, seed=0)["test"]
    test_references = [r for ex in test for r in ex.references]
    assert not [r for r in test_references if any(r in t for t in texts)]
    assert pretrain.pretraining_corpus(0)["train"].keys() == {"shakespeare"}        # Shakespeare only


def test_pretrain_command_is_deterministic_by_seed(tmp_path):
    """The whole command (corpus, tokenizer, weights) on a smoke budget: the same seed gives the same
    bytes, another seed other weights."""
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cli.run(["pretrain-gpt", "--fast", "--seed", str(seed), "--out", str(tmp_path / name)])
    read = lambda name, file: (tmp_path / name / file).read_bytes()
    assert read("a", "model.safetensors") == read("b", "model.safetensors")
    assert read("a", "tokenizer.json") == read("b", "tokenizer.json")
    assert read("a", "model.safetensors") != read("c", "model.safetensors")
    record = checkpoint.load_json(tmp_path / "a" / "config.json")["training"]
    assert record["e2e_data_seed"] == 0 and record["windows_per_batch"] == {"shakespeare": 2, "e2e": 2}
    assert "--fast" in record["command"] and "--e2e-texts 3000 --e2e-descriptions 5" in record["command"]
    with pytest.raises(ValueError, match=r"--e2e-share must be a number in \[0, 1\], got 1.5"):
        cli.run(["pretrain-gpt", "--fast", "--e2e-share", "1.5", "--out", str(tmp_path / "d")])


@pytest.fixture(scope="module")
def committed():
    """The checkpoint in data/tiny_gpt/, as load_pretrained gives it, with its two validation streams."""
    transformer, tokenizer = pretrained.load_pretrained("tiny-gpt")
    record = pretrained.tiny_gpt_record()
    corpus = pretrain.pretraining_corpus(0, e2e_data_seed=record["e2e_data_seed"])["validation"]
    streams = {name: pretrain.token_stream(tokenizer, texts) for name, texts in corpus.items()}
    return LanguageModel(transformer), tokenizer, streams, record


def test_committed_checkpoint_was_really_trained(committed):
    model, tokenizer, streams, record = committed
    config = model.transformer.config
    assert config.kind == "decoder" and config.vocab_size == tokenizer.vocab_size
    assert all(not p.requires_grad for p in model.parameters())   # load_pretrained freezes it
    for text in ROUND_TRIPS:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    # 8 of the 128 windows that pretraining scored on each stream (all 128 take seconds more on a busy CPU)
    for name, bound in (("shakespeare", math.log(config.vocab_size) - 2.0), ("e2e_held_out", 4.0)):
        loss = pretrain.evaluate(model, pretrain.fixed_windows(streams[name], 8, config.max_positions + 1))
        recorded = record["final_val_loss"][name]
        assert loss < bound, (name, loss)                       # log V is about 7.6 nats
        assert abs(loss - recorded) < 0.3, (name, loss, recorded)  # and close to the loss on all 128


def test_committed_checkpoint_copies_names_from_its_context(committed):
    """What writing from an MR needs and what the restaurant texts taught: a name said in the context
    is far likelier than a guess among the 20 names (log 20 = 3.0 nats)."""
    model, tokenizer, _, record = committed
    copying = pretrain.name_copying(model, tokenizer)
    assert copying["with_context"] < copying["without_context"] - 1.0, copying
    assert copying == pytest.approx(record["name_copying"], abs=1e-3)


def test_committed_tokenizer_knows_restaurant_words(committed):
    _, tokenizer, streams, record = committed
    sentences = [ex.references[0] for ex in e2e.domain_sentences(50, "test", tuple(e2e.FAMILIES))]
    for text in sentences + [e2e.format_mr({"name": "Loch Fyne", "eatType": "coffee shop", "near": "Avalon"})]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    for word in (" Italian", " riverside", " restaurant", " family", " customer"):
        assert len(tokenizer.encode(word)) == 1, word           # one token each, not 4 as from Shakespeare
    characters = sum(map(len, sentences))
    assert characters / sum(len(tokenizer.encode(t)) for t in sentences) > 3.5   # about 4.3 characters a token
    assert record["e2e_texts"] > 0 and record["train_tokens"]["e2e"] > 100_000
