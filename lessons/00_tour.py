# %% [markdown]
# # Lesson 00 — the whole pipeline in about thirty lines
#
# Objective: see every stage of AdaMix once, end to end, before taking each apart in the lessons
# that follow. A real pretrained sentence encoder (all-MiniLM-L6-v2, a 6-layer BERT) is frozen; each
# of its layers gets a *mixture* of four adapters; a training step routes the batch through one
# randomly chosen adapter per layer, twice, and ties the two passes together with a consistency
# loss; at the end the four adapters of every layer are averaged into one, so the deployed model
# costs exactly what a single adapter costs.
#
# The budget here is tiny (a handful of steps on a few sentences): the point is the shape of the
# pipeline, not the accuracy. Lesson 14 trains for real, in miniature.

# %%
from support import budget

from tinymix import adamix, backend, data, peft
from tinymix import functional as F
from tinymix.optim import AdamW
from tinymix.pretrained import load_pretrained
from tinymix.tensor import no_grad
from tinymix.transformer import SequenceClassifier

backend.manual_seed(0)
encoder, tokenizer = load_pretrained("minilm-l6")                 # every weight frozen
model = peft.get_peft_model(SequenceClassifier(encoder, num_labels=2),
                            peft.AdaMixConfig(module="adapter", num_experts=4))
trainable_before_merge, _ = peft.print_trainable_parameters(model)

# %% [markdown]
# Training: the objective of AdaMix is
#
#     loss = CE(z1, y) + lambda * symKL(z1, z2)
#
# where z1 and z2 are the logits of two forward passes of the same batch, each through its own
# random choice of expert in every layer (lambda = 1 for classification). Below: a few AdamW steps
# on short movie-review sentences.

# %%
train = data.load_movie_reviews()["train"]
chosen = sorted(range(len(train)), key=lambda i: len(train.texts[i]))[300:300 + budget(16, 8)]  # short
ids, mask = tokenizer([train.texts[i] for i in chosen])           # (B, T) token ids and padding mask
labels = [train.labels[i] for i in chosen]
optimizer = AdamW(model.trainable_parameters(), lr=1e-3)
model.train()
losses = []
for step in range(budget(4, 2)):
    loss, task, consistency = adamix.two_pass_loss(lambda: model(ids, mask),
                                                   lambda logits: F.cross_entropy(logits, labels),
                                                   consistency_weight=1.0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    print(f"step {step}: loss {loss.item():.4f} = task {task.item():.4f} + consistency {consistency.item():.5f}")

# %% [markdown]
# Inference: each mixture acts as ONE linear layer whose weights are the mean of its experts'
# ("average" mode). `merge` makes that permanent: it replaces every mixture by the averaged layer,
# so the model now holds one adapter per layer. Three checks, each of which a broken merge fails:
# the merged down-projection of every layer holds the mean of its four experts' weights and biases,
# computed here by hand from the experts before merging; the predictions do not change; and the
# number of trainable parameters drops to that of one adapter per layer (plus the classifier).

# %%
from tinymix.backend import xp

layers = model.transformer.layers
experts = [[(e.weight.data.copy(), e.bias.data.copy()) for e in block.ffn_adapter.down.experts] for block in layers]
by_hand = [(sum(w for w, _ in pairs) / 4, sum(b for _, b in pairs) / 4) for pairs in experts]
spread = min(float(abs(pairs[0][0] - pairs[1][0]).max()) for pairs in experts)
model.eval()
with no_grad():
    averaged = model(ids, mask).data
peft.merge(model)
with no_grad():
    merged = model(ids, mask).data
gap = float(abs(backend.to_numpy(averaged) - backend.to_numpy(merged)).max())
print(f"largest change of a logit from merging: {gap:.2e}")
merged_count = model.num_parameters(trainable_only=True)
print(f"trainable parameters: {trainable_before_merge:,d} while training -> {merged_count:,d} after merging")

assert losses[-1] < losses[0], "a few steps on one batch must lower its loss"
assert spread > 1e-3, "the four experts of a layer differ, so their mean is not any one of them"
for block, (weight, bias) in zip(layers, by_hand):
    assert xp.allclose(block.ffn_adapter.down.weight.data, weight, atol=1e-7), "merged != mean of the experts"
    assert xp.allclose(block.ffn_adapter.down.bias.data, bias, atol=1e-7), "merged bias != mean of the biases"
assert gap < 1e-5, "merging must not change what the model predicts"
assert not adamix.mixtures(model), "after merging no mixture is left"
one_adapter_per_layer = 6 * (384 * 16 + 16 + 16 * 384 + 384) + (384 * 2 + 2)
assert merged_count == one_adapter_per_layer, (merged_count, one_adapter_per_layer)

# %% [markdown]
# ## Exercises
#
# Each exercise cell ends with `check(...)`: put your answer where the `...` is and run the cell
# (`python3 lessons/run.py 00 --exercises` runs only these cells). It says right, or not right with a
# hint. The answers are not in this file.
#
# 00.1 — The model above has M = 4 experts in each layer's mixture. How many parameters would it
# TRAIN with M = 8 (same bottleneck r = 16, shared up-projection, the 2-class head included)?
# Work it out from the sizes (C = 384, r = 16, 6 layers), or build the model and count.

# %% exercise 00.1
from exercises import check

trained_with_8_experts = ...          # a whole number
check("00.1", trained_with_8_experts)

# %% [markdown]
# 00.2 — And after `merge`, how many trainable parameters would that M = 8 model keep?

# %% exercise 00.2
from exercises import check

kept_after_merging_8_experts = ...    # a whole number
check("00.2", kept_after_merging_8_experts)

# %% [markdown]
# 00.3 — The training loss above is CE(z1, y) + lambda * symKL(z1, z2). Which of these are true?
# (a) pass 2 also carries the task loss; (b) the two passes may use different experts in the same
# layer; (c) with lambda = 0 the second pass is not run at all; (d) the consistency term is zero
# when both passes happen to pick the same expert in every layer and dropout is off.
# Answer with the letters, e.g. "ab".

# %% exercise 00.3
from exercises import check

true_statements = ...                 # a string of letters
check("00.3", true_statements)

# %% [markdown]
# In the library:
# - `tinymix/peft.py`: `get_peft_model`, `AdaMixConfig`, `print_trainable_parameters`, `merge`
# - `tinymix/adamix.py`: `two_pass_loss`, `Mixture`, `merge_experts` — the algorithm top to bottom
# - `tinymix/train.py`: `train(TrainConfig(method="adamix"))` — this loop with batching, a schedule,
#   clipping, validation and checkpoints; `python3 -m tinymix` runs it on the movie reviews.
#
# Next: lesson 01 takes apart the engine under all of this, autograd.
