"""Decoding: the KV cache changes the cost, never the output; beam search finds what brute force finds."""
import itertools
import math

import pytest

from tinymix import backend, decode, peft
from tinymix.backend import xp
from tinymix.tensor import no_grad
from tinymix.transformer import LanguageModel, Transformer, TransformerConfig

pytestmark = pytest.mark.numerics

END = 1


def tiny_model(vocab=40, positions=24, scale=8.0, seed=0):
    """A random decoder with peaked next-token distributions (scaled weights), so greedy and beam
    outputs are long and differ from prompt to prompt."""
    backend.manual_seed(seed)
    config = TransformerConfig(kind="decoder", vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=4,
                               intermediate_size=64, max_positions=positions, dropout=0.1, layer_norm_eps=1e-5,
                               gelu_approximate=True, pad_token_id=0)
    model = LanguageModel(Transformer(config))
    for p in model.parameters():
        p.data = p.data * scale
    return model.eval()


def prompts(count=10, vocab=40, seed=1):
    rng = backend.host_generator(seed)
    return [rng.integers(2, vocab, size=int(rng.integers(2, 7))).tolist() for _ in range(count)]


def test_cached_forward_equals_the_full_forward():
    model = tiny_model()
    ids = backend.to_numpy([p[:2] * 5 for p in prompts(3)]).astype("int64")     # (3, 10)
    with no_grad():
        full = backend.to_numpy(model(ids).data)
        cache = model.new_cache()
        pieces = [backend.to_numpy(model(ids[:, :4], cache=cache).data)]        # a prompt of 4 ...
        for t in range(4, 10):                                                  # ... then one at a time
            pieces.append(backend.to_numpy(model(ids[:, t:t + 1], cache=cache).data))
    assert cache.length == 10
    stepped = backend.xp.concatenate([backend.from_numpy(p) for p in pieces], axis=1)
    # the two orders of summation (one token at a time, or the whole sequence: other BLAS kernels) differ
    # by float32 rounding, grown by the 8x weights (logits up to ~22 here; 3e-5 to 1.4e-4 apart, by CPU
    # kernel): a wrong cache is wrong by whole units
    scale = float(abs(backend.from_numpy(full)).max())
    assert float(abs(backend.from_numpy(full) - stepped).max()) < 1e-4 * scale
    with pytest.raises(ValueError, match="longer than the 24 positions"):
        with no_grad():
            model(backend.to_numpy([[2] * 15]).astype("int64"), cache=cache)


def test_greedy_is_identical_with_and_without_the_cache():
    model = tiny_model()
    found = decode.greedy(model, prompts(), END, max_new_tokens=12, use_cache=True)
    again = decode.greedy(model, prompts(), END, max_new_tokens=12, use_cache=False)
    assert [d.ids for d in found] == [d.ids for d in again]
    assert [d.finished for d in found] == [d.finished for d in again]
    assert sum(len(d.ids) for d in found) > 20                   # outputs are not trivially empty
    assert len({tuple(d.ids) for d in found}) > 3                # and differ between prompts


def test_greedy_with_an_adamix_lora_model_in_average_mode():
    model = tiny_model()
    peft.get_peft_model(model, peft.AdaMixConfig(module="lora", num_experts=3))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = backend.host_normal(p.shape, 0.5)           # a non-zero update
    model.eval()
    found = decode.greedy(model, prompts(), END, max_new_tokens=10, use_cache=True)
    again = decode.greedy(model, prompts(), END, max_new_tokens=10, use_cache=False)
    assert [d.ids for d in found] == [d.ids for d in again]
    peft.merge(model, fold_lora=True)                            # the folded model decodes the same
    assert [d.ids for d in decode.greedy(model, prompts(), END, max_new_tokens=10)] == [d.ids for d in found]


def test_greedy_one_step_is_the_argmax_of_the_full_forward():
    model = tiny_model()
    prompt = prompts(1)[0]
    with no_grad():
        logits = backend.to_numpy(model(backend.to_numpy([prompt]).astype("int64")).data)[0, -1]
    first = decode.greedy(model, [prompt], None, max_new_tokens=1)[0]
    assert first.ids == [int(logits.argmax())] and not first.finished


def test_beam_search_is_identical_with_and_without_the_cache():
    model = tiny_model()
    for prompt in prompts(4):
        for width, no_repeat in ((1, 0), (4, 0), (4, 2)):
            cached = decode.beam_search(model, prompt, END, width, 12, 0.8, no_repeat, use_cache=True)
            plain = decode.beam_search(model, prompt, END, width, 12, 0.8, no_repeat, use_cache=False)
            assert cached.ids == plain.ids and cached.score == pytest.approx(plain.score, abs=1e-4)


def test_beam_of_width_one_is_greedy():
    model = tiny_model()
    for prompt in prompts(5):
        assert decode.beam_search(model, prompt, END, 1, 10, 1.0).ids == decode.greedy(model, [prompt], END, 10)[0].ids


def sequence_log_prob(model, prompt, continuation):
    """log p(continuation | prompt) from full forward passes, without the decoder under test."""
    with no_grad():
        logits = model(backend.to_numpy([prompt + continuation]).astype("int64")).data[0]
    logits = backend.to_numpy(logits).astype("float64")
    total = 0.0
    for i, token in enumerate(continuation):
        row = logits[len(prompt) - 1 + i]
        top = row.max()
        total += row[token] - top - math.log(sum(math.exp(v - top) for v in row.tolist()))
    return total


def test_a_wide_beam_finds_the_brute_force_best_ending():
    """With a beam wider than every candidate set, beam search must return the ended sequence of at
    most 3 tokens with the best log p / length ** 0.8, found here by trying all of them."""
    vocab = 6
    model = tiny_model(vocab=vocab, scale=3.0, seed=2)
    prompt = [3, 4, 2]
    candidates = [list(body) + [END] for n in range(3) for body in itertools.product(
        [t for t in range(vocab) if t != END], repeat=n)]
    best = max(candidates, key=lambda c: sequence_log_prob(model, prompt, c) / len(c) ** 0.8)
    found = decode.beam_search(model, prompt, END, beam_width=200, max_new_tokens=3, length_penalty=0.8)
    assert found.finished and found.ids + [END] == best
    assert found.score == pytest.approx(sequence_log_prob(model, prompt, best) / len(best) ** 0.8, abs=1e-4)


def test_no_repeat_ngram():
    assert decode.banned_tokens([5, 6, 7, 5], 2) == {6}            # "5 6" was seen: after 5, not 6
    assert decode.banned_tokens([5, 6, 5, 6, 5], 3) == {6}
    assert decode.banned_tokens([5, 6, 7], 2) == set() and decode.banned_tokens([5], 0) == set()
    model = tiny_model()
    for prompt in prompts(4):
        ids = decode.beam_search(model, prompt, END, 3, 16, 1.0, no_repeat_ngram=2).ids
        bigrams = list(zip(ids, ids[1:]))
        assert len(bigrams) == len(set(bigrams)), ids


def test_the_context_window():
    model = tiny_model(positions=24)
    with pytest.raises(ValueError, match="context window is 24"):
        decode.greedy(model, [[2] * 24], END, 5)
    with pytest.raises(ValueError, match="empty prompt"):
        decode.beam_search(model, [], END)
    found = decode.greedy(model, [[2] * 20], None, max_new_tokens=50)[0]  # stops at the window: 4 tokens
    assert len(found.ids) == 4 and not found.finished
    assert len(decode.beam_search(model, [2] * 20, END, 3, 50, no_repeat_ngram=0).ids) <= 4
