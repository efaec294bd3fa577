# %% [markdown]
# # Lesson 19 — spending a rank budget: AdaLoRA
#
# Objective: see how AdaLoRA moves LoRA's rank to the matrices that matter — the update in SVD form,
# an importance score per rank-one piece, a cubic schedule that shrinks the total budget, and
# masking — then train it on real sentences and read where the budget went.
#
# Prerequisites: lessons 09 (LoRA) and 07 (counting parameters).
#
# LoRA gives every adapted matrix the same rank r. AdaLoRA (Zhang et al., ICLR 2023) starts each
# matrix with more, init_r, and takes rank away during training from the matrices where it matters
# least, until the TOTAL over all matrices is what LoRA would have spent: target_r per matrix on
# average, distributed unevenly.
#
# **The update in SVD form.** Each adapted Linear W (out, in) computes
#
#     h = W x + b + (alpha / r) P diag(lambda) Q x        P (out, r), lambda (r,), Q (r, in), r = init_r
#
# P and Q play the singular vectors and lambda the singular values; a regulariser added to the loss,
# the norms of Q Q^T - I and of P^T P - I, keeps P and Q near-orthogonal. Triplet i, (P[:, i],
# lambda_i, Q[i, :]), is one rank-one piece; setting lambda_i = 0 removes it without touching P or Q,
# so it can come back if it turns important again.
#
# **Importance.** After every optimizer step, for every entry theta of P, lambda and Q, two moving
# averages (beta1 = beta2 = 0.85):
#
#     I = |theta dL/dtheta|                         sensitivity: the first-order change of the loss
#                                                   if theta were set to 0
#     I_bar <- beta1 I_bar + (1 - beta1) I          smoothed sensitivity
#     U_bar <- beta2 U_bar + (1 - beta2) |I - I_bar|   uncertainty: how much I jumps from step to step
#     s(theta) = I_bar U_bar
#
# and triplet i of a matrix scores  S_i = s(lambda_i) + mean_j s(Q_ij) + mean_j s(P_ji).
#
# **The budget.** b0 = the number of triplets at the start (init_r per matrix), bT = target_r times
# the number of matrices. Over T steps with tinit warm-up steps and tfinal final steps:
#
#     b(t) = b0                                                          t <= tinit
#     b(t) = int(bT + (b0 - bT) (1 - (t - tinit) / (T - tinit - tfinal))^3)   in between
#     b(t) = bT                                                          t > T - tfinal
#
# Cubic: the budget falls fast at first, while there is slack, and slowly near the end. Every deltaT
# steps in the middle phase, the lambdas of the b0 - b(t) lowest-scored triplets (over ALL matrices
# together) are set to 0. At t = T - tfinal the allocation becomes final and, from then on, every
# step masks the same triplets again. Deployed, a matrix holds only its kept triplets:
# kept x (in + out + 1) numbers.

# %%
import math
import time

import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget, save_figure

import matplotlib.pyplot as plt

from tinymix import adamix, backend, data, methods, no_grad, peft
from tinymix import functional as F
from tinymix.backend import host, xp
from tinymix.neighbours import adalora
from tinymix.optim import AdamW, clip_grad_norm, linear_warmup_decay
from tinymix.pretrained import load_pretrained
from tinymix.train import TrainConfig, decay_groups, length_grouped_batches
from tinymix.transformer import SequenceClassifier

minilm, tokenizer = load_pretrained("minilm-l6", max_length=64)
splits = data.load_movie_reviews()
BATCH, T = budget(16, 8), budget(40, 12)
train_split = data.Split(splits["train"].texts[:BATCH * T], splits["train"].labels[:BATCH * T])

# AdaLoRA as the CLI builds it: LoRA's rank 4 as the target, 1.5 times that at the start, the schedule
# scaled to the run (methods._adalora: tinit = 3T/32, tfinal = 3T/8, deltaT = T/32).
train_config = TrainConfig(method="adalora", lora_rank=4, train_size=len(train_split), batch_size=BATCH,
                           epochs=1, progress=False)
backend.manual_seed(train_config.seed)
config = methods.peft_config(train_config, T)
model = peft.get_peft_model(SequenceClassifier(minilm, 2), config)
layers = adalora.svd_layers(model)
allocator = adalora.RankAllocator(model, config)
final = config.total_step - config.tfinal
print(f"{len(layers)} adapted matrices, init_r {config.init_r}, target_r {config.target_r}: budget "
      f"b0 = {allocator.init_budget} -> bT = {allocator.target_budget} triplets; T = {config.total_step}, "
      f"tinit {config.tinit}, tfinal {config.tfinal}, deltaT {config.deltaT}: final allocation at step {final}")

schedule = [allocator.budget(t) for t in range(T)]
budgets = [b for b, _ in schedule]


def cubic(t):
    """The schedule's middle phase, from the formula above."""
    c = config
    return int(allocator.target_budget + (allocator.init_budget - allocator.target_budget)
               * (1 - (t - c.tinit) / (T - c.tinit - c.tfinal)) ** 3)


print(f"b(t): {budgets}")
assert budgets[0] == allocator.init_budget == sum(layer.rank for _, layer in layers)
assert all(b1 >= b2 for b1, b2 in zip(budgets, budgets[1:])), "the budget never grows"
assert all(budgets[t] == cubic(t) for t in range(config.tinit + 1, final + 1)), "the middle phase is cubic"
assert budgets[-1] == allocator.target_budget == config.target_r * len(layers), "it ends at the target"

# %% [markdown]
# ## Training, and the budget spent step by step
#
# The loop is `tinymix.train`'s step on a slice of movie reviews (one epoch, the CLI's learning rate
# for AdaLoRA): the task loss plus the orthogonality regulariser (`methods.task_loss` adds it), the
# optimizer step, then `RankAllocator.update_and_allocate` — after the step, before the gradients
# are cleared, because the sensitivities need them. After every step we count the triplets kept;
# one step before the final allocation, we keep a copy of the scores it will use.

# %%
model.rank_allocator = allocator                       # where methods.after_step finds it
lr = methods.learning_rate(train_config, methods.CLASSIFICATION)
optimizer = AdamW(decay_groups(model, train_config.weight_decay), lr=lr)
model.train()
backend.manual_seed([train_config.seed, 0])
kept_total, losses, started = [], [], time.perf_counter()
for step, (texts, labels) in enumerate(length_grouped_batches(train_split, BATCH, backend.host_rng)):
    optimizer.lr = lr * linear_warmup_decay(step, int(train_config.warmup * T), T)
    ids, mask = tokenizer(texts)
    targets = backend.to_numpy(labels).astype("int64")
    loss = methods.task_loss(train_config, model, lambda logits: F.cross_entropy(logits, targets), mask)
    optimizer.zero_grad()
    total, _, _ = adamix.two_pass_backward(lambda: model(ids, mask), loss, 0.0)
    clip_grad_norm(model.trainable_parameters(), train_config.max_grad_norm)
    optimizer.step()
    methods.after_step(train_config, model, step)     # = allocator.update_and_allocate(model, step)
    kept_total.append(sum(int(layer.kept.sum()) for _, layer in layers))
    losses.append(total.item())
    if step == final - 1:                              # the scores the final allocation will use
        final_scores = {name: backend.to_numpy(s) for name, s in allocator.triplet_scores(model).items()}
        scored_layer = layers[0][0]
        parts = {part: backend.to_numpy(allocator.sensitivity[scored_layer, part] * allocator.uncertainty[scored_layer, part])
                 for part in allocator.PARTS}
print(f"{T} steps in {time.perf_counter() - started:.1f} s; loss (task + orthogonality) {losses[0]:.3f} -> {losses[-1]:.3f}")
print(f"triplets kept after each step: {kept_total}")
assert kept_total[-1] == allocator.target_budget, "after the final allocation the target budget is kept exactly"
masked_at = [t for t, (_, mask_now) in enumerate(schedule) if t <= config.tinit or mask_now or t >= final]
assert all(kept_total[t] == budgets[t] for t in masked_at), "after each allocation the kept triplets match b(t)"

# the score of a triplet, from the two moving averages (here for the first adapted matrix)
by_hand = parts["lora_E"].reshape(-1) + parts["lora_A"].mean(axis=1) + parts["lora_B"].mean(axis=0)
assert host.allclose(by_hand, final_scores[scored_layer], rtol=1e-6), "S_i = s(lambda_i) + mean s(Q_i.) + mean s(P_.i)"

# the final allocation keeps the bT highest scores, over all matrices together
names = [name for name, _ in layers]
everything = host.concatenate([final_scores[name] for name in names])
kept_flags = host.concatenate([layer.kept for _, layer in layers])
top = host.zeros(len(everything), dtype=bool)
top[host.argsort(everything)[-allocator.target_budget:]] = True
assert (kept_flags == top).all(), "the kept triplets are the highest-scored ones"

# %% [markdown]
# ## Where the budget went
#
# The ranks at the end, per layer and per matrix. LoRA would have given every matrix rank 4; AdaLoRA
# spent the same total unevenly. A masked triplet's lambda is exactly 0 — not small — so the deployed
# update P diag(lambda) Q has at most `kept` rank, and a deployed matrix needs only its kept columns
# of P, its kept lambdas and its kept rows of Q: `adalora.count` says how many numbers that is.

# %%
ranks = {name: int(layer.kept.sum()) for name, layer in layers}
L = minilm.config.num_layers
table = host.array([[ranks[f"transformer.layers.{i}.attention.{t}"] for t in config.target_modules] for i in range(L)])
print(f"{'layer':>5}  " + "  ".join(f"{t:>6}" for t in config.target_modules) + "   (LoRA: "
      f"{config.target_r} each; AdaLoRA started at {config.init_r})")
for i, row in enumerate(table):
    print(f"{i:>5}  " + "  ".join(f"{r:>6}" for r in row))
print(f"total  {table.sum(axis=0).tolist()} = {table.sum()} triplets")

masked_values = [float(abs(layer.lora_E.data[~layer.kept]).max()) for _, layer in layers if (~layer.kept).any()]
print(f"largest |lambda| among the masked triplets: {max(masked_values, default=0.0)}")
assert all(value == 0.0 for value in masked_values), "masked lambdas are exactly zero"

trainable, deployed = adalora.count(model)
head = model.classifier.num_parameters()
per_matrix = [(layer.rank, int(layer.kept.sum()), layer.base.in_features + layer.base.out_features + 1)
              for _, layer in layers]
print(f"trainable while training {trainable:,d}; deployed {deployed:,d} (LoRA r=4 on the same matrices: "
      f"{len(layers) * config.target_r * 2 * minilm.config.hidden_size + head:,d})")
assert trainable == sum(r * size for r, _, size in per_matrix) + head
assert deployed == sum(kept * size for _, kept, size in per_matrix) + head, "deployed = kept (in + out + 1) per matrix"

model.eval()
ids, mask = tokenizer(splits["test"].texts[:16])
with no_grad():
    unmerged = model(ids, mask).data
    adalora.merge(model)                               # fold (alpha / r) P diag(lambda) Q into each W
    folded = model(ids, mask).data
print(f"merged into the frozen weights: logits off by at most {float(abs(unmerged - folded).max()):.1e}")
assert xp.allclose(unmerged, folded, atol=1e-4)

figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
left.plot(range(T), budgets, "-", color="C0", label="budget b(t)")
left.plot(range(T), kept_total, "o", color="C1", markersize=4, label="triplets kept after step t")
left.axvspan(-0.5, config.tinit + 0.5, color="0.92", label="warm-up: nothing masked")
left.axvline(final, color="black", linestyle=":", linewidth=1, label="final allocation")
left.set(xlabel="step t", ylabel="triplets kept, all matrices", title="the cubic budget schedule")
left.legend(fontsize=8)
image = right.imshow(table, cmap="viridis", vmin=0, vmax=config.init_r, aspect="auto")
for i in range(L):
    for j in range(len(config.target_modules)):
        right.text(j, i, str(table[i, j]), ha="center", va="center", color="white" if table[i, j] < 4 else "black")
right.set(xticks=range(len(config.target_modules)), xticklabels=config.target_modules, yticks=range(L),
          ylabel="layer", title=f"final ranks (LoRA: {config.target_r} everywhere)")
figure.colorbar(image, ax=right, fraction=0.05, label="rank kept")
save_figure(figure, "19_rank_budget.png")

# %% [markdown]
# Read the ranks with care: after a few dozen steps on a few hundred sentences the scores are
# noisy, and another seed moves the budget elsewhere. What is certain is the mechanism — the
# schedule, the masking, the count — and it is what the asserts check. Whether spending the
# budget unevenly beats LoRA at the same final budget is the neighbours comparison's claim A
# (docs/plans/neighbours.md).
#
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 19 --exercises` runs only these cells).
#
# 19.1 — b0 = 72, bT = 48, T = 200 steps, tinit = 10, tfinal = 40. What is the budget b(t) at
# t = 85?

# %% exercise 19.1
from exercises import check

budget_at_85 = ...               # a whole number of triplets
check("19.1", budget_at_85)

# %% [markdown]
# 19.2 — AdaLoRA on the query and value of all six MiniLM layers (every matrix 384 x 384) ends with
# 48 triplets kept in all. How many numbers does the deployed update hold, the task head not counted?

# %% exercise 19.2
from exercises import check

deployed_numbers = ...           # a whole number
check("19.2", deployed_numbers)

# %% [markdown]
# 19.3 — What happens to a triplet masked in the middle phase? (a) its column of P and row of Q are
# deleted from the model; (b) its lambda is set to 0, and its column of P and row of Q stay; (c) a
# later allocation may keep it again, if its score rises; (d) it may come back after the final
# allocation. Answer with the letters.

# %% exercise 19.3
from exercises import check

what_happens = ...               # a string of letters
check("19.3", what_happens)

# %% [markdown]
# In the library: `tinymix/neighbours/adalora.py` — `SVDLinear` (the SVD form), `orthogonal_regularizer`,
# `RankAllocator` (`update_importance`, `triplet_scores`, `budget`, `mask_to_budget`,
# `update_and_allocate`), `count`, `deploy` and `merge`; `tinymix/methods.py` — `_adalora`, the
# schedule scaled to a run, and `_adalora_after_step`.
