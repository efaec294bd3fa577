# %% [markdown]
# # Lesson 14 — AdaMix end to end, in miniature
#
# Objective: train AdaMix on real sentences with a real pretrained model, next to the single adapter
# it mixes and a linear probe, and look at everything the earlier lessons promised: the two-pass
# loss going down, the experts merged into one adapter with identical predictions, and merging
# against random and fixed routing.
#
# Prerequisites: lessons 06-13.
#
# The budget, honestly. A training step of AdaMix through all of MiniLM takes several seconds on two
# CPU cores, so this lesson trains in miniature:
#
# - ONE layer is adapted: the last of MiniLM's six. The five below it are frozen and carry no
#   module, so their output never changes during training: it is computed ONCE per sentence and
#   cached (checked exact below). That turns a 6-layer step into a 1-layer step. One difference
#   from the full recipe: the cached layers run without dropout.
# - A few hundred training sentences, three epochs, one seed.
#
# What that can show: the mechanics, end to end, on real data — every number is real. What it
# cannot show: whether AdaMix beats a single adapter. With a few hundred test sentences one
# accuracy carries a standard error of about 2 points, more than the paper's gaps (about 1 point
# on SST-2); that takes several seeds and more data: `python3 -m tinymix compare`.

# %%
import dataclasses
import math
import time

import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import FAST, budget, figure_path, save_figure, show

import matplotlib.pyplot as plt

from tinymix import adamix, backend, data, no_grad, peft, plots, probe
from tinymix import functional as F
from tinymix.backend import host, xp
from tinymix.nn import Dropout, Linear, Module
from tinymix.optim import AdamW, clip_grad_norm, linear_warmup_decay
from tinymix.train import decay_groups
from tinymix.pretrained import embed, load_pretrained
from tinymix.tensor import Tensor
from tinymix.transformer import Transformer, mean_pool

minilm, tokenizer = load_pretrained("minilm-l6", max_length=64)
splits = data.load_movie_reviews()
TRAIN, TEST, BATCH, EPOCHS = budget(512, 128), budget(320, 64), budget(32, 16), budget(3, 2)
EVAL_BATCH, RANDOM_RUNS = budget(64, 32), budget(3, 2)
train_split = data.Split(splits["train"].texts[:TRAIN], splits["train"].labels[:TRAIN])
test_split = data.Split(splits["test"].texts[:TEST], splits["test"].labels[:TEST])
print(f"{len(train_split)} training and {len(test_split)} test sentences "
      f"({sum(train_split.labels) / len(train_split):.0%} / {sum(test_split.labels) / len(test_split):.0%} positive)")

# %% [markdown]
# ## Cache what never changes
#
# Sentences are sorted by length and cut into batches (less padding, as `train` does), then each
# batch goes once through the embeddings and the first five layers, in eval mode without a graph.
# The frozen sixth layer runs too, once, for the probe's sentence vectors below.

# %%
def attention_bias(mask):
    """0 for real tokens, -1e9 for padding, shaped (B, 1, 1, T) (as Transformer._mask_bias)."""
    return xp.where(backend.from_numpy(mask)[:, None, None, :] > 0, 0.0, -1e9).astype(xp.float32)


def lower_layers(ids, mask):
    """MiniLM's embeddings and layers 0-4: the input of layer 5, (B, T, C)."""
    B, T = ids.shape
    x = minilm.embedding_norm(minilm.word_embeddings(ids) + minilm.position_embeddings(xp.arange(T))[None]
                              + minilm.token_type_embeddings(xp.zeros((B, T), dtype=xp.int64)))
    for layer in minilm.layers[:5]:
        x = layer(x, attention_bias(mask))
    return x.data


def cache(split, batch_size):
    """[(layer-5 input, mask, labels) per batch], the frozen model's sentence vectors, and the texts,
    all in the same length-sorted order."""
    order = sorted(range(len(split)), key=lambda i: len(split.texts[i]))
    batches, vectors = [], []
    with no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            ids, mask = tokenizer([split.texts[i] for i in chosen])
            labels = backend.to_numpy([split.labels[i] for i in chosen]).astype("int64")
            hidden = lower_layers(ids, mask)
            batches.append((hidden, mask, labels))
            vectors.append(mean_pool(minilm.layers[5](Tensor(hidden), attention_bias(mask)), mask).data)
    return batches, xp.concatenate(vectors), [split.texts[i] for i in order]


t = time.perf_counter()
train_batches, train_vectors, _ = cache(train_split, BATCH)
test_batches, test_vectors, test_texts = cache(test_split, EVAL_BATCH)
print(f"cached the input of layer 5 for {TRAIN + TEST} sentences in {time.perf_counter() - t:.1f} s")

# %% [markdown]
# The trainable part: layer 5 (a copy of MiniLM's, frozen), mean pooling, and a classifier — with
# the attribute names `transformer` and `classifier` that `get_peft_model` looks for, so the library
# injects adapters or mixtures into it exactly as into the full model. First, prove the cache exact:
# cached layers + this top must give what the whole MiniLM gives (`embed`: all six layers, mean
# pooled).

# %%
class TopOfMiniLM(Module):
    def __init__(self):
        config = dataclasses.replace(minilm.config, num_layers=1, vocab_size=1, max_positions=1,
                                     type_vocab_size=1)        # no embeddings needed: inputs are cached
        self.transformer = Transformer(config)
        self.transformer.layers[0].load_state_dict(minilm.layers[5].state_dict())
        self.transformer.requires_grad_(False)
        self.dropout = Dropout(0.1)
        self.classifier = Linear(config.hidden_size, 2)

    def forward(self, hidden, mask):                            # (B, T, C), (B, T) -> (B, 2)
        h = self.transformer.layers[0](Tensor(hidden), attention_bias(mask))
        return self.classifier(self.dropout(mean_pool(h, mask)))


hidden, mask, _ = test_batches[0]
with no_grad():
    top = TopOfMiniLM().eval().transformer.layers[0](Tensor(hidden), attention_bias(mask))
    top = mean_pool(top, mask).data
whole = embed(minilm, tokenizer, test_texts[:len(mask)])
print(f"cached path vs the whole model, sentence vectors: max diff {float(abs(whole - top).max()):.1e}")
assert xp.allclose(whole, top, atol=1e-5)

# %% [markdown]
# ## The baseline: a linear probe
#
# Logistic regression on the frozen model's sentence vectors: what MiniLM knows about sentiment with
# no fine-tuning at all. Anything that trains inside the model should beat it.

# %%
labels_of = lambda batches: [int(y) for _, _, labels in batches for y in labels]
backend.manual_seed(0)                                        # the probe's initial weights
probe_accuracy = probe.linear_probe(train_vectors, labels_of(train_batches), test_vectors, labels_of(test_batches))
print(f"linear probe on frozen sentence vectors: test accuracy {probe_accuracy:.3f}")

# %% [markdown]
# ## Training
#
# The loop of `tinymix.train.train`, on cached batches: AdamW (weight decay 0.1), linear warm-up
# over 6% of the steps then linear decay, gradient clipping at norm 1, and for AdaMix the two-pass
# objective  CE(z1, y) + lambda symKL(z1, z2). The same seed, batches and order for every method.
# Weight decay spares biases and layer norms, as in `train` (`decay_groups`), and the optimizer's
# expert updates are dense, the library's default (lesson 10). One change: the learning rate is
# 5e-3, not `train`'s default (`TrainConfig.lr`) — with one layer and a few dozen steps, a small
# rate barely moves the fresh classifier (tried at 1e-3: the loss only falls from 0.69 to 0.62 and
# the model stays below the probe).

# %%
LR = 5e-3

def test_logits(model):
    """The model's logits for every test batch, in eval mode."""
    model.eval()
    with no_grad():
        return [model(hidden, mask).data for hidden, mask, _ in test_batches]


def accuracy(logits):
    correct = sum(int((backend.to_numpy(z.argmax(-1)) == labels).sum()) for z, (_, _, labels) in zip(logits, test_batches))
    return correct / len(test_split)


def fit(config, consistency_weight, seed=0):
    backend.manual_seed(seed)
    model = peft.get_peft_model(TopOfMiniLM(), config)
    optimizer = AdamW(decay_groups(model, 0.1), lr=LR)
    total = EPOCHS * len(train_batches)
    warmup, step, losses = int(0.06 * total), 0, {"total": [], "task": [], "consistency": []}
    t = time.perf_counter()
    for epoch in range(EPOCHS):
        model.train()
        for b in backend.host_generator([seed, epoch]).permutation(len(train_batches)).tolist():
            hidden, mask, labels = train_batches[b]
            optimizer.lr = LR * linear_warmup_decay(step, warmup, total)
            loss, task, consistency = adamix.two_pass_loss(lambda: model(hidden, mask),
                                              lambda logits: F.cross_entropy(logits, labels), consistency_weight)
            optimizer.zero_grad()
            loss.backward()
            clip_grad_norm(model.trainable_parameters(), 1.0)
            optimizer.step()
            losses["total"].append(loss.item())
            losses["task"].append(task.item())           # the cross-entropy of pass 1
            losses["consistency"].append(consistency.item() if consistency is not None else 0.0)
            step += 1
    return model, losses, time.perf_counter() - t


adapter_config = peft.AdapterConfig(bottleneck=16)
runs = {
    "adapter r=16": fit(adapter_config, 0.0),
    "AdaMix (M=4, lambda=1)": fit(peft.AdaMixConfig(module="adapter", num_experts=4, adapter=adapter_config), 1.0),
}
per_epoch = len(train_batches)
for name, (model, losses, seconds) in runs.items():
    task = losses["task"]
    first, last = sum(task[:per_epoch]) / per_epoch, sum(task[-per_epoch:]) / per_epoch
    print(f"{name:24s} {len(task)} steps in {seconds:5.1f} s; mean cross-entropy, first epoch {first:.3f}, "
          f"last epoch {last:.3f}")
    assert last < first, f"{name}: training must lower the task loss"
# Like with like: the adapter's loss IS its cross-entropy; AdaMix's loss is its cross-entropy plus
# lambda times the consistency term. The figure compares the cross-entropies, and shows AdaMix's
# consistency term on an axis of its own.
consistency = runs["AdaMix (M=4, lambda=1)"][1]["consistency"]
print(f"AdaMix's consistency term (symmetric KL between its two passes): first epoch "
      f"{sum(consistency[:per_epoch]) / per_epoch:.4f}, last epoch {sum(consistency[-per_epoch:]) / per_epoch:.4f}")
path = plots.loss_curves({name: losses["task"] for name, (_, losses, _) in runs.items()},
                         figure_path("14_training_loss.png"), ylabel="cross-entropy on pass 1 (running mean)",
                         second=("AdaMix's consistency term (symmetric KL)", consistency))
print(f"figure saved: {path}")
show(path)

# %% [markdown]
# ## Inference: merged, fixed, random
#
# The trained AdaMix model in its three inference modes (lesson 13): the average of the experts
# (AdaMix proper), each single expert (fixed routing), and random routing — a random expert per
# example, here three times with different seeds (twice in fast mode). Then `merge` for real: the
# predictions must be the average mode's, to float32 rounding, and the parameter count one
# adapter's.

# %%
adapter_logits = test_logits(runs["adapter r=16"][0])
adapter_accuracy = accuracy(adapter_logits)
model = runs["AdaMix (M=4, lambda=1)"][0]
averaged_logits = test_logits(model)                        # "average" is the default mode
average_accuracy = accuracy(averaged_logits)
fixed_logits, random_logits = [], []
for k in range(4):
    adamix.set_inference_mode(model, "fixed", k)
    fixed_logits.append(test_logits(model))
for seed in range(RANDOM_RUNS):
    adamix.set_inference_mode(model, "random")
    backend.manual_seed(100 + seed)
    random_logits.append(test_logits(model))
fixed_accuracy = [accuracy(logits) for logits in fixed_logits]
random_accuracy = [accuracy(logits) for logits in random_logits]
adamix.set_inference_mode(model, "average")
trained_count = model.num_parameters(trainable_only=True)
peft.merge(model)
merged_logits = test_logits(model)
merged_accuracy = accuracy(merged_logits)
print(f"average {average_accuracy:.3f} | merged {merged_accuracy:.3f} | fixed expert 0-3 "
      f"{[round(a, 3) for a in fixed_accuracy]} | random routing {[round(a, 3) for a in random_accuracy]}")
print(f"trainable parameters: {trained_count:,d} while training, {model.num_parameters(trainable_only=True):,d} "
      f"after merging (the single adapter: {runs['adapter r=16'][0].num_parameters(trainable_only=True):,d})")

assert merged_accuracy == average_accuracy
assert all(xp.allclose(a, b, atol=1e-5) for a, b in zip(averaged_logits, merged_logits))
assert model.num_parameters(trainable_only=True) == runs["adapter r=16"][0].num_parameters(trainable_only=True)
if not FAST:  # a handful of fast-mode steps cannot learn the task; the full budget must
    assert merged_accuracy > 0.65, "well above chance (0.5) on real movie reviews"

# %% [markdown]
# ## Reading the numbers: how far apart is "different"?
#
# Everything asserted above is structural and always true: the loss falls, merging changes no
# prediction and leaves one adapter's parameters, the model is far above chance. The COMPARISONS —
# AdaMix against the adapter, merged against random routing — are single draws on a few hundred
# sentences, and must be read with their uncertainty:
#
# - one accuracy p on n sentences has a 95% confidence interval of about p +- 1.96 sqrt(p (1 - p) / n)
#   (about +-5 points here);
# - two models scored on the SAME sentences are compared by their paired difference: d_i = 1 where
#   only the first is right on sentence i, -1 where only the second is, 0 where they agree. Its mean
#   is the accuracy difference, and its 95% interval is mean(d) +- 1.96 sd(d) / sqrt(n) — narrower
#   than the two separate intervals, because the sentences both get right or both get wrong cancel.
#
# The interval formula is checked against a bootstrap (resampling the test sentences 2,000 times).
# The figure draws every interval on an axis that holds them all. (In fast mode the model trains for
# a handful of steps on a tiny test set and may give every sentence the same class: the machinery
# runs, the numbers mean nothing.)

# %%
Z = 1.96                                              # the normal quantile of a 95% interval


def correct(logits):
    """1.0 where the prediction is right, per test sentence (in the cached order)."""
    return host.concatenate([(backend.to_numpy(z.argmax(-1)) == labels).astype("float64")
                              for z, (_, _, labels) in zip(logits, test_batches)])


def accuracy_interval(right):
    p = float(right.mean())
    return p, Z * math.sqrt(p * (1 - p) / len(right))


def paired_interval(first, second):
    """(mean difference first - second, half-width of its 95% interval) over the same sentences."""
    d = first - second
    return float(d.mean()), Z * float(d.std(ddof=1)) / math.sqrt(len(d))


def bootstrap_half_width(first, second, resamples=2000):
    rng = backend.host_generator(12)
    d = first - second
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = host.percentile(means, [2.5, 97.5])
    return float(high - low) / 2


merged_right = correct(merged_logits)
random_right = [correct(logits) for logits in random_logits]
random_mean_right = sum(random_right) / len(random_right)          # per sentence: share of runs right
models = {"adapter r=16": correct(adapter_logits), "AdaMix merged": merged_right,
          **{f"random routing {k + 1}": right for k, right in enumerate(random_right)},
          **{f"fixed expert {k}": correct(logits) for k, logits in enumerate(fixed_logits)}}
accuracies = {name: accuracy_interval(right) for name, right in models.items()}
differences = {"merged - adapter": (merged_right, models["adapter r=16"]),
               "merged - random (mean of runs)": (merged_right, random_mean_right),
               "merged - best fixed expert": (merged_right, models[max(
                   (f"fixed expert {k}" for k in range(4)), key=lambda name: accuracies[name][0])])}
intervals = {name: paired_interval(*pair) for name, pair in differences.items()}
for name, (mean, half) in intervals.items():
    boot = bootstrap_half_width(*differences[name])
    verdict = "no difference shown" if abs(mean) <= half else ("merged better" if mean > 0 else "merged worse")
    print(f"{name:32s} {mean:+.3f} +- {half:.3f} (95%; bootstrap +- {boot:.3f}): {verdict}, "
          f"{int(round(abs(mean) * len(merged_right)))} sentences of {len(merged_right)}")
    assert abs(boot - half) <= 0.25 * half + 1.0 / len(merged_right), "the interval formula agrees with the bootstrap"

figure, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.2), gridspec_kw={"width_ratios": [3, 2]})
names = list(accuracies)
left.errorbar(range(len(names)), [accuracies[n][0] for n in names], yerr=[accuracies[n][1] for n in names],
              fmt="o", capsize=4, color="C0")
left.axhline(probe_accuracy, color="0.5", linestyle=":", label=f"linear probe {probe_accuracy:.3f}")
left.axhline(0.5, color="0.8", linewidth=0.8, label="chance")
left.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
left.set(ylabel="test accuracy (95% interval)", title=f"{len(merged_right)} test sentences, one seed")
left.legend(fontsize=8)
right.errorbar(range(len(intervals)), [m for m, _ in intervals.values()], yerr=[h for _, h in intervals.values()],
               fmt="s", capsize=4, color="C3")
right.axhline(0.0, color="black", linewidth=0.8)
right.set_xticks(range(len(intervals)), list(intervals), rotation=20, ha="right", fontsize=8)
right.set(ylabel="paired accuracy difference (95% interval)", title="merged against the alternatives")
figure.tight_layout()
bottom, top = left.get_ylim()
assert all(bottom <= p - h and p + h <= top for p, h in accuracies.values()), "every interval fits the axis"
bottom, top = right.get_ylim()
assert all(bottom <= m - h and m + h <= top for m, h in intervals.values()) and bottom < 0 < top
save_figure(figure, "14_merged_vs_alternatives.png")
print(f"probe {probe_accuracy:.3f} | adapter {adapter_accuracy:.3f} | AdaMix merged {merged_accuracy:.3f} "
      f"(+- {accuracies['AdaMix merged'][1]:.3f})")

# %% [markdown]
# A difference whose interval contains 0 is not evidence either way at this size: a few sentences
# out of a few hundred. (The "best" fixed expert is picked on these same test sentences, which
# flatters it; a fair choice would use validation sentences.) Settling the paper's comparisons takes
# several seeds and more data, with the differences paired by seed: `python3 -m tinymix compare`.

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 14 --exercises` runs only these cells).
#
# 14.1 — A classifier scores 0.80 on 320 test sentences. What is the half-width of the 95% interval
# of its accuracy (normal approximation, as above)?

# %% exercise 14.1
from exercises import check

half_width = ...                 # a number
check("14.1", half_width)

# %% [markdown]
# 14.2 — Two models on the same 320 sentences: only A is right on 20 of them, only B on 10; they
# agree on the other 290. Give (the accuracy difference A - B, the half-width of its 95% paired
# interval). Is the difference shown?

# %% exercise 14.2
from exercises import check

difference, difference_half_width = ..., ...
check("14.2", (difference, difference_half_width))

# %% [markdown]
# In the library: `tinymix/train.py` — `train(TrainConfig(method="adamix"))` is this lesson at full
# scale (all six layers, validation-based selection, checkpoints); `tinymix/experiments/` and
# `python3 -m tinymix compare` give every method its own learning rate chosen on validation, run
# paired seeds with the ablations and inference modes, and judge the paper's claims with the paired
# intervals of this lesson (`experiments/stats.py`); `tinymix/probe.py` — `linear_probe`;
# `tinymix/plots.py` — `loss_curves`.
