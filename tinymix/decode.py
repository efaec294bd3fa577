"""Decoding a language model: greedy search and beam search, with or without a KV cache.

    found = greedy(model, [prompt_ids, ...], end_id, max_new_tokens=64)          # [Decoded, ...]
    best = beam_search(model, prompt_ids, end_id, beam_width=10, length_penalty=0.8,
                       no_repeat_ngram=4)                                         # Decoded

Greedy takes the most likely token at every step. Beam search keeps the `beam_width` most likely
partial outputs (sum of log-probabilities); an output that ends is scored by its log-probability over
length ** length_penalty (a penalty below 1 favours shorter outputs less than a plain sum would
punish longer ones), and the best such output wins. These are the settings of the LoRA/AdaMix E2E
scripts: beam 10, length penalty 0.8, no repeated 4-gram.

The KV cache (transformer.KVCache): each step feeds only the newest token and reuses every layer's
keys and values of the earlier positions, instead of running the whole prefix again. The outputs are
the same (tests check it); only the time differs: without a cache, step t costs O(t) positions.
Beam search reorders the cache rows to follow each surviving beam's parent.

The context window: the prompt must leave at least one position free (a ValueError otherwise), and
generation stops when the window is full; such an output has finished=False (documented truncation).
"""
import functools
import math
import time
from dataclasses import dataclass

from . import backend
from . import functional as F
from .tensor import no_grad


@dataclass
class Decoded:
    ids: list            # the generated tokens, without the prompt and without the end token
    finished: bool       # False: stopped by max_new_tokens or the context window, not by the end token
    score: float = 0.0   # beam search: log-probability / length ** length_penalty


def room(model, prompt_ids, max_new_tokens):
    """How many tokens may be generated after this prompt: max_new_tokens, or fewer if the context
    window would overflow. A prompt that fills the window is an error, not a silent truncation."""
    context = model.transformer.config.max_positions - model.transformer.position_offset  # less a prefix
    if len(prompt_ids) == 0:
        raise ValueError("empty prompt: decoding needs at least one token to start from")
    if len(prompt_ids) >= context:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens, but the model's context window is "
                         f"{context}: no position is left to generate into. Shorten the prompt "
                         "(e.g. fewer slots in the meaning representation).")
    return min(max_new_tokens, context - len(prompt_ids))


class _Stepper:
    """Next-token log-probabilities for a batch of sequences, with a KV cache (feed the new tokens
    only) or without one (feed every sequence whole)."""

    def __init__(self, model, use_cache):
        self.model, self.use_cache = model, use_cache
        self.cache = model.new_cache() if use_cache else None

    def start(self, prompts):                                            # (B, t) -> (B, V) on the host
        self.sequences = backend.to_numpy(prompts).astype("int64")
        return self._next(self.sequences)

    def step(self, new_tokens, parents=None):
        """Append one token to each sequence (after keeping rows `parents`, for beam search)."""
        new_tokens = backend.to_numpy(new_tokens).astype("int64")[:, None]          # (B, 1)
        if parents is not None:
            self.sequences = self.sequences[parents]
            if self.cache is not None:
                self.cache.reorder(parents)
        self.sequences = backend.to_numpy([row + [t] for row, t in
                                           zip(self.sequences.tolist(), new_tokens[:, 0].tolist())])
        return self._next(new_tokens if self.cache is not None else self.sequences)

    def _next(self, ids):                                                 # (B, T) -> (B, V)
        """Log-probabilities of the next token; the LM head runs on the last position only."""
        hidden = self.model.transformer(ids, cache=self.cache)           # (B, T, C)
        logits = self.model.transformer.lm_logits(hidden[:, -1])          # (B, V)
        return backend.to_numpy(F.log_softmax(logits).data).astype("float64")


def _in_eval_mode(fn):
    """Decode in eval mode (no dropout; AdaMix mixtures in their inference mode), without a graph."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        was_training = model.training
        model.eval()
        try:
            with no_grad():
                return fn(model, *args, **kwargs)
        finally:
            model.train(was_training)
    return wrapper


@_in_eval_mode
def greedy(model, prompts, end_id, max_new_tokens=64, use_cache=True, batch_size=32):
    """Greedy decoding of many prompts (lists of ids). Prompts of equal length share a batch, so no
    padding is needed; end_id None never stops early (for timing). Returns [Decoded] in prompt order."""
    results = [None] * len(prompts)
    by_length = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    for length, members in sorted(by_length.items()):
        budget = room(model, prompts[members[0]], max_new_tokens)
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            stepper = _Stepper(model, use_cache)
            log_probs = stepper.start([prompts[i] for i in chunk])
            generated, done = [[] for _ in chunk], [False] * len(chunk)
            for step in range(budget):
                choice = log_probs.argmax(axis=-1)                       # (B,)
                for row, token in enumerate(choice.tolist()):
                    if not done[row]:
                        if token == end_id:
                            done[row] = True
                        else:
                            generated[row].append(token)
                if all(done) or step == budget - 1:
                    break
                log_probs = stepper.step(choice)
            for row, i in enumerate(chunk):
                results[i] = Decoded(generated[row], done[row])
    return results


def banned_tokens(generated, n):
    """Tokens that would repeat an n-gram already in `generated` (the output so far, not the prompt:
    the prompt's values must be copied, and a long name would otherwise be banned)."""
    if n <= 0 or len(generated) < n:
        return set()
    prefix = tuple(generated[len(generated) - n + 1:])
    return {generated[i + n - 1] for i in range(len(generated) - n + 1)
            if tuple(generated[i:i + n - 1]) == prefix}


@_in_eval_mode
def beam_search(model, prompt, end_id, beam_width=10, max_new_tokens=64, length_penalty=0.8,
                no_repeat_ngram=0, use_cache=True):
    """The best output of a beam search over one prompt; the beams form the batch."""
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    budget = room(model, prompt, max_new_tokens)
    normalise = lambda total, length: total / length ** length_penalty
    stepper = _Stepper(model, use_cache)
    log_probs = stepper.start([prompt])                                   # (1, V): one beam to start
    beams, scores = [[]], [0.0]                                           # alive beams, summed log-probs
    finished = []                                                         # (normalised score, ids)
    for step in range(budget):
        for b, generated in enumerate(beams):
            for token in banned_tokens(generated, no_repeat_ngram):
                log_probs[b, token] = -math.inf
        totals = backend.to_numpy(scores)[:, None] + log_probs            # (beams, V)
        vocab = totals.shape[1]
        order = (-totals).ravel().argsort(kind="stable")[:2 * beam_width]  # best candidates first
        next_beams, next_scores, parents, tokens = [], [], [], []
        for rank, flat in enumerate(order.tolist()):
            b, token = divmod(flat, vocab)
            total = float(totals[b, token])
            if total == -math.inf:
                break
            if token == end_id:
                if rank < beam_width:        # an end among the best beam_width candidates
                    finished.append((normalise(total, len(beams[b]) + 1), beams[b]))
                continue
            next_beams.append(beams[b] + [token])
            next_scores.append(total)
            parents.append(b)
            tokens.append(token)
            if len(next_beams) == beam_width:
                break
        if not next_beams or step == budget - 1:
            beams, scores = next_beams, next_scores
            break
        if len(finished) >= beam_width:      # the usual stopping rule: no alive beam beats the kept ones
            worst_kept = sorted(finished, key=lambda f: -f[0])[beam_width - 1][0]
            if normalise(max(next_scores), len(next_beams[0])) <= worst_kept:
                beams, scores = next_beams, next_scores
                break
        beams, scores = next_beams, next_scores
        log_probs = stepper.step(tokens, parents)
    if finished:
        score, ids = max(finished, key=lambda f: f[0])
        return Decoded(list(ids), True, score)
    if not beams:
        return Decoded([], False, -math.inf)
    best = max(range(len(beams)), key=lambda b: normalise(scores[b], len(beams[b])))
    return Decoded(beams[best], False, normalise(scores[best], len(beams[best])))


def tokens_per_second(model, prompts, new_tokens, use_cache, batch_size=1):
    """Greedy decoding speed: exactly `new_tokens` tokens per prompt (no early stop), tokens / second."""
    started = time.perf_counter()
    found = greedy(model, prompts, None, new_tokens, use_cache, batch_size)
    seconds = time.perf_counter() - started
    return sum(len(d.ids) for d in found) / seconds
