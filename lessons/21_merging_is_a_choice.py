# %% [markdown]
# # Lesson 21 — merging is a choice: the mean, task arithmetic, TIES and PCB on AdaMix's experts
#
# Objective: see that AdaMix's last step, "average the M experts into one module", is one merging
# operator among several; compute three others by hand (task arithmetic, TIES, PCB); watch which
# entries each keeps; then merge the experts of a really trained AdaMix with each, the scale chosen on
# validation, and see how far apart they land.
#
# Prerequisites: lessons 09 (LoRA, folding an update) and 13 (averaging experts).
#
# A merging operator takes n updates of the same weights (task vectors tau_1..tau_n; for AdaMix, the
# experts of one mixture) and returns one, times a scale lambda chosen on validation:
#
#     mean             tau = lambda (1/n) sum_i tau_i                     AdaMix's merge at lambda = 1
#     task arithmetic  tau = lambda sum_i tau_i                           the mean at lambda = 1/n
#     TIES             trim each tau_i to its top-k% magnitudes; elect a sign per entry, sgn(sum_i trimmed_i);
#                      average, entry by entry, only the trimmed values that agree with that sign
#     PCB              weight each entry by how large it is within its own task (intra-balancing) and how
#                      much it agrees with the others (inter-balancing); keep the top ratio of weights,
#                      rescaled to [0, 1]; a weighted average of the entries kept
#
# TIES and PCB were made for n DIFFERENT tasks, whose updates fight over the same weights. AdaMix's
# experts are n updates of ONE task, trained on alternating batches: does that fight happen at all?
# The library is `tinymix/merging.py`; the comparison on real runs is `docs/results_merging.md`.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget, save_figure

import matplotlib.pyplot as plt

from tinymix import adamix, data, merging
from tinymix.backend import to_numpy, xp
from tinymix.train import TrainConfig, evaluate, train

tau = xp.asarray([[0.9, -0.1, 0.4, 0.0, -0.6, 0.2],       # three task vectors of six entries
                  [0.7, 0.3, -0.5, 0.1, -0.2, 0.0],
                  [-0.2, 0.2, 0.6, -0.8, -0.3, 0.1]], dtype=xp.float32)
by_hand = {"mean": tau.mean(axis=0), "task-arithmetic": tau.sum(axis=0)}
trimmed = xp.stack([merging.trim(t, 0.5) for t in tau])     # top 3 of 6 magnitudes of each
sign = xp.where(trimmed.sum(axis=0) >= 0, 1.0, -1.0).astype(xp.float32)
agree = xp.sign(trimmed) == sign
by_hand["ties"] = (trimmed * agree).sum(axis=0) / xp.maximum(agree.sum(axis=0), 1)
for name, expected in by_hand.items():
    got = merging.merge(name, tau, keep=0.5 if name == "ties" else None)
    print(f"{name:16s} {' '.join(f'{v:+.2f}' for v in to_numpy(got).tolist())}")
    assert xp.allclose(got, expected, atol=1e-6), f"{name} by hand = merging.{name}"
assert xp.allclose(merging.merge("task-arithmetic", tau, scale=1 / 3), by_hand["mean"], atol=1e-6), \
    "task arithmetic at lambda = 1/n is the mean"
print(f"{'pcb':16s} {' '.join(f'{v:+.2f}' for v in to_numpy(merging.merge('pcb', tau, keep=0.5)).tolist())}")
print("trimmed (TIES keeps 3 of 6 per vector):\n", to_numpy(trimmed))
# Entry 0: +0.9 and +0.7 survive, -0.2 was trimmed: TIES gives their mean, +0.80, where the mean gives
# +0.47. Entry 2: +0.4 and +0.6 agree with the elected +, -0.5 is outvoted: TIES gives +0.50.
assert abs(float(by_hand["ties"][0]) - 0.8) < 1e-6 and abs(float(by_hand["ties"][2]) - 0.5) < 1e-6

# %% [markdown]
# ## Real experts: a short AdaMix run on movie reviews
#
# 320 sentences, two epochs: far too little for good accuracy, enough for the four experts of each mixture
# to move apart; this lesson is about the merge, not the score. The
# run is `tinymix.train.train` itself; its `before_merge` hook hands us the trained model BEFORE the
# mean replaces each mixture (what `compare --suite merging` does at full size). We read only the
# validation split, as a choice of lambda must.

# %%
splits = data.load_movie_reviews()
validation = data.Split(splits["validation"].texts[:budget(200, 60)], splits["validation"].labels[:budget(200, 60)])
small = {"train": splits["train"], "validation": validation, "test": validation}
config = TrainConfig(method="adamix", train_size=budget(320, 64), epochs=budget(2, 1), batch_size=16, lr=3e-3,
                     test=False, progress=False, seed=0)
GRID = (0.6, 1.0, 1.4)
found = {}


def compare_operators(model, tokenizer, splits_):
    n = merging.task_vector_count(model)
    mixture = adamix.mixtures(model)[0]
    found["experts"] = to_numpy(xp.stack([xp.concatenate([e.weight.data.reshape(-1), e.bias.data])
                                      for e in mixture.experts]))
    for operator in merging.OPERATORS:
        grid = (1.0,) if operator == "mean" else tuple(s / n for s in GRID) if operator == "task-arithmetic" else GRID

        def score(scale):
            with merging.merged(model, operator, scale):
                return evaluate(model, tokenizer, splits_["validation"])
        scale, tried = merging.choose_scale(grid, score, prefer=merging.neutral_scale(operator, n))
        found[operator] = (scale, max(t["score"] for t in tried))
    return {}


result = train(config, splits=small, before_merge=compare_operators)
print(f"AdaMix trained: validation accuracy {result['validation_accuracy']:.3f} (the mean, as deployed)")
for operator in merging.OPERATORS:
    scale, accuracy = found[operator]
    print(f"  {operator:16s} lambda {scale:5.3g}: validation accuracy {accuracy:.3f}")
assert found["mean"][1] == result["validation_accuracy"], "the mean at lambda 1 is the run's own merged model"

# %% [markdown]
# The mean is the deployed model of the run, to the last digit. Task arithmetic's grid holds 1/M
# (lambda 0.25 here: the mean again), so on validation it can only tie or beat the mean; TIES and PCB
# may land anywhere. Whatever wins here decides nothing: 200 validation sentences and one seed. The
# claims are decided with five seeds and a paired test in `docs/results_merging.md`.
#
# ## Which entries each operator keeps
#
# One mixture: the four experts' down-projections (weights and bias, flattened). TIES keeps the top
# 20% of each expert and then only the entries that agree with the elected sign; PCB keeps about 10%
# by its balanced weights. Where do they agree?

# %%
experts = xp.asarray(found["experts"])
ties_kept = xp.stack([merging.trim(e, merging.KEEP["ties"]) for e in experts])
ties_kept = (ties_kept != 0) & (xp.sign(ties_kept) == merging.elect_sign(ties_kept))
_, beta = merging.pcb_balance(experts)
pcb_kept = merging.pcb_drop(beta, merging.KEEP["pcb"]) > 0
share = lambda mask: float(mask.mean())
print(f"entries per expert: {experts.shape[1]:,}; TIES keeps {share(ties_kept):.1%} (at most 20%), PCB "
      f"{share(pcb_kept):.1%} (about 10%); kept by both: {share(ties_kept & pcb_kept):.1%}")
assert share(ties_kept) <= merging.KEEP["ties"] + 1e-6, "TIES keeps at most its top-k share"
assert abs(share(pcb_kept) - merging.KEEP["pcb"]) < 0.02, "PCB keeps about its ratio"
unit = experts / xp.sqrt((experts * experts).sum(axis=1, keepdims=True))
cosines = to_numpy(unit @ unit.T)
print("cosine between the experts' down-projections:\n", cosines.round(3))
off_diagonal = max(abs(float(cosines[i, j])) for i in range(len(cosines)) for j in range(len(cosines)) if i != j)
assert off_diagonal < 0.3, "the experts' down-projections are nearly orthogonal"

figure, axes = plt.subplots(3, 1, figsize=(9, 4.5), sharex=True)
window = slice(0, 120)
for ax, (title, picture) in zip(axes, (("the experts (entries 0-119)", to_numpy(experts[:, window])),
                                       ("kept by TIES (top 20%, elected sign)", to_numpy(ties_kept[:, window]))
                                       , ("kept by PCB (top 10% of balanced weights)", to_numpy(pcb_kept[:, window])))):
    ax.imshow(picture, aspect="auto", cmap="coolwarm" if picture.dtype != bool else "Greys", interpolation="nearest")
    ax.set_ylabel("expert")
    ax.set_title(title, fontsize=9)
axes[-1].set_xlabel("entry of the flattened down-projection")
figure.tight_layout()
save_figure(figure, "21_which_entries_each_operator_keeps.png")

# %% [markdown]
# The cosines are near 0: each expert's down-projection is still mostly its own random start (the
# experts are drawn independently, lesson 10), which a short run moves little; the shared
# up-projection is what learned to read them all. So "the top 20% by magnitude" picks large entries of
# random starts here, not of learned changes: TIES and PCB were designed for task vectors (trained
# weights minus a COMMON start), and an adapter expert's start is "no adapter". Two things to take away. First, "merge" names a
# choice: the mean treats every entry of every expert alike, TIES and PCB throw most entries away and
# argue over signs. Second, a choice made on validation is only as good as validation is large: with
# one seed and 200 sentences, the gap between operators is within noise. The experiment that decides
# it (five seeds, M = 4 and 8, adapter and LoRA experts, the same experts merged each way) is
# `python3 -m tinymix compare --suite merging --lr-from docs/experiments/nlu-small --out ...`.
#
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 21 --exercises` runs only these cells).
#
# 21.1 — TIES by hand, keeping the top 50% of each vector (2 of 4 entries), lambda 1, of
# [1, -2, 0.5, 0], [-3, 1, 0.2, 0.4] and [0.5, 1.5, -0.1, -2]: the merged vector of 4 numbers.

# %% exercise 21.1
from exercises import check

ties_by_hand = ...               # a list of 4 numbers
check("21.1", ties_by_hand)

# %% [markdown]
# 21.2 — At which lambda is task arithmetic over 8 experts exactly their mean?

# %% exercise 21.2
from exercises import check

mean_lambda = ...                # a number
check("21.2", mean_lambda)

# %% [markdown]
# 21.3 — AdaMix-LoRA shares B: expert k's update is B A_k. Which operators give ONE LoRA of rank r,
# exactly, from the factors? (a) the mean, (b) task arithmetic, (c) TIES, (d) PCB. Answer with the
# letters. (Lesson 13's argument.)

# %% exercise 21.3
from exercises import check

exact_in_the_factors = ...       # a string of letters
check("21.3", exact_in_the_factors)

# %% [markdown]
# In the library: `tinymix/merging.py` — `mean`, `task_arithmetic`, `trim`, `elect_sign`,
# `disjoint_mean`, `ties`, `pcb_balance`, `pcb_drop`, `pcb`, `choose_scale`, `merged` (a model merged
# inside a `with` block, its experts back afterwards); `tinymix/experiments/merging.py` — the comparison.
