# %% [markdown]
# # Lesson 22 — when the base model changes: porting a patch, and negative flips
#
# Objective: take a LoRA trained on one version of a model, carry it to the next version without any
# training (PortLLM's "patch"), and measure what that gives against the new version alone and against
# LoRA re-trained on it; count the outputs that were right before the update and wrong after it
# (MUSCLE's negative flips).
#
# Prerequisites: lessons 09 (LoRA, folding an update) and 15 (the tiny GPT and the e2e task).
#
# A base model is not frozen forever: its makers pretrain it further, fix it, release v2. An adapter
# trained on v1 is a PATCH: Delta W = (alpha / r) B A for every adapted weight. PortLLM's bet is that
# the patch learnt on v1 is close to the one v2 would learn, so
#
#     W_v2 + Delta W_v1   is about as good as   W_v2 + Delta W_v2,   with no training at all.
#
# MUSCLE's worry is different: even when v2's model is better on average, some inputs that v1's model
# got right come out wrong. The negative flip rate counts them:
#
#     NFR = (1/N) sum_i [v1's model right on i  and  the updated model wrong on i]
#
# Our two versions: v1 is `data/tiny_gpt`; v2 is `data/tiny_gpt_v2`, v1 pretrained 600 steps further on
# more restaurant text (`pretrain-gpt --continue-from`; its README has the command). Same tokenizer:
# a patch means nothing on a base that spells words with other tokens.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import ROOT, budget

import tempfile
from dataclasses import replace
from pathlib import Path

from tinymix import e2e, peft
from tinymix.backend import to_numpy
from tinymix.e2e import finetune
from tinymix.e2e.finetune import NLGConfig
from tinymix.experiments import porting
from tinymix.pretrained import load_gpt

V1, V2 = ROOT / "data" / "tiny_gpt", ROOT / "data" / "tiny_gpt_v2"
assert (V1 / "tokenizer.json").read_bytes() == (V2 / "tokenizer.json").read_bytes(), "one vocabulary"
old, _ = load_gpt(V1)
new, _ = load_gpt(V2)
before, after = old.state_dict(), new.state_dict()
assert sorted(before) == sorted(after) and all(before[k].shape == after[k].shape for k in before)
change = {k: float(((after[k] - before[k]) ** 2).sum() ** 0.5 / ((before[k] ** 2).sum() ** 0.5 + 1e-12)) for k in before}
for name in sorted(change, key=change.get)[-3:]:
    print(f"{name:36s} ||W_v2 - W_v1|| / ||W_v1|| = {change[name]:.3f}")
print(f"over all {len(change)} tensors: median relative change {sorted(change.values())[len(change) // 2]:.3f}")
assert 0 < max(change.values()) < 1, "v2 is v1 moved, not replaced"

# %% [markdown]
# ## A LoRA trained on v1, then carried to v2
#
# The library's own e2e pipeline (`finetune.train`, the official GPT-2 recipe) on a few hundred MRs; it
# saves the run's merged adapter, which is the patch. `porting.decode_on` deploys a saved patch on any
# base with the same shape: load it, fold Delta W into the base's weights, decode, score. With no
# patch, it decodes the base alone.

# %%
work = Path(tempfile.mkdtemp(prefix="lesson22-"))
config = NLGConfig(method="lora", lr=1e-2, steps=budget(300, 20), train_size=budget(600, 64),
                   validation_size=budget(20, 4), test_size=budget(40, 8), eval_every=budget(100, 10),
                   decoding="greedy", max_new_tokens=budget(60, 24), progress=False, model=str(V1))
splits = e2e.make_splits(config.train_size, config.validation_size, config.test_size, config.data_seed)
on_v1 = finetune.train(replace(config, out=str(work / "v1")))
v2 = replace(config, model=str(V2))
ported = porting.decode_on(v2, work / "v1" / "merged", splits)
alone = porting.decode_on(v2, None, splits)
v1_right = porting.slots_right(splits["test"], [s["output"] for s in on_v1["samples"]])
print(f"v1 + its LoRA:          test BLEU {on_v1['bleu']:5.1f}, slot errors {on_v1['slot_error_rate']:5.1f}%")
print(f"v2 alone:               test BLEU {alone['test']['bleu']:5.1f}, slot errors {alone['test']['slot_error_rate']:5.1f}%")
print(f"v2 + v1's LoRA (ported): test BLEU {ported['test']['bleu']:5.1f}, slot errors {ported['test']['slot_error_rate']:5.1f}%")

# What "ported" means, checked: the deployed weight is W_v2 + Delta W_v1, exactly.
model, _ = finetune.build_model(v2)
peft.merge(model)
peft.load_adapter(model, work / "v1" / "merged")
site = model.transformer.layers[0].attention.query
delta = to_numpy(site.lora_B.weight.data) @ to_numpy(site.lora_A.weight.data) * site.scaling
peft.merge(model, fold_lora=True)
folded = to_numpy(site.base.weight.data)
gap = abs(folded - (to_numpy(after["layers.0.attention.query.weight"]) + delta)).max()
print(f"layer 0 query: |deployed W - (W_v2 + Delta W_v1)| max {gap:.1e}")
assert gap < 1e-5, "the ported model is W_v2 + Delta W_v1"

# %% [markdown]
# ## Re-training on v2, the lemma, and the flips
#
# The other way to follow the update: train LoRA again on v2, same recipe and seed (so the same batches
# and the same start of A). PortLLM's lemma is about how close the two patches are; MUSCLE's worry is
# about the MRs that flip.

# %%
on_v2 = finetune.train(replace(v2, out=str(work / "v2")))
scaling = config.lora_alpha / config.lora_rank
d1, d2 = (porting.patch_update(work / run / "merged" / "adapter_model.safetensors", scaling) for run in ("v1", "v2"))
distance = porting.patch_distance(d1, d2)
cosine, relative = distance["cosine"], distance["relative_difference"]
print(f"v2 + LoRA re-trained:   test BLEU {on_v2['bleu']:5.1f}, slot errors {on_v2['slot_error_rate']:5.1f}%")
print(f"the two patches: cosine {cosine:.3f}, ||dW_v2 - dW_v1|| / ||dW_v1|| = {relative:.3f}")
assert -1 <= cosine <= 1 and relative > 0

v2_right = porting.slots_right(splits["test"], [s["output"] for s in on_v2["samples"]])
ported_right = ported["test"]["slots_right"]
by_hand = sum(x == "1" and y == "0" for x, y in zip(v1_right, ported_right)) / len(v1_right)
assert porting.flips(v1_right, ported_right) == by_hand, "NFR: right before, wrong after"
assert porting.flips("1101", "0111") == 0.25, "NFR: right before, wrong after"      # one flip of four
print(f"right (every slot realised): v1 {v1_right.count('1')}/{len(v1_right)}, ported {ported_right.count('1')}, "
      f"re-trained {v2_right.count('1')}")
print(f"negative flips: porting {porting.flips(v1_right, ported_right):.1%}, re-training {porting.flips(v1_right, v2_right):.1%}")
flipped = [i for i, (x, y) in enumerate(zip(v1_right, v2_right)) if x == "1" and y == "0"]
if flipped:
    i = flipped[0]
    print("a flip:", splits["test"][i].mr, "\n  v1:", on_v1["samples"][i]["output"], "\n  v2:", on_v2["samples"][i]["output"])

# %% [markdown]
# One seed and a few dozen MRs decide nothing here: these numbers show the mechanics. The comparison
# that decides PortLLM's and MUSCLE's claims at this scale (five seeds, the full e2e budget, claims fixed
# beforehand in `docs/plans/porting.md`) is
# `python3 -m tinymix compare --task e2e --suite porting --lr-from docs/experiments/e2e --out ...`, its
# page `docs/results_porting.md`. Two things to keep: a patch is only defined on a base with the same
# shapes and vocabulary; and an average score can rise while individual outputs get worse, which is
# why NFR is counted per input, on the same inputs, before and after.
#
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 22 --exercises` runs only these cells).
#
# 22.1 — Before an update a model is right on inputs "1101101", after it on "0111100" (1 = right):
# the negative flip rate, as a fraction.

# %% exercise 22.1
from exercises import check

nfr = ...                        # a number between 0 and 1
check("22.1", nfr)

# %% [markdown]
# 22.2 — A LoRA patch with r = 4 and alpha = 32 has, at one site, B A with entry (0, 0) equal to 0.01.
# v1's weight there is 0.5 and v2's is 0.45. What is the ported model's weight at (0, 0)?

# %% exercise 22.2
from exercises import check

ported_weight = ...              # a number
check("22.2", ported_weight)

# %% [markdown]
# 22.3 — Which can a LoRA patch be ported across, unchanged? (a) v1 pretrained further, same shapes
# and tokenizer; (b) a model with a retrained tokenizer of the same size; (c) a model with wider layers;
# (d) v1 with its LayerNorm gains changed. Answer with the letters.

# %% exercise 22.3
from exercises import check

portable = ...                   # a string of letters
check("22.3", portable)

# %% [markdown]
# In the library: `tinymix/e2e/pretrain.py` — `pretrain` (`start=`: continued pretraining) and
# `pretrain-gpt --continue-from`; `tinymix/peft.py` — `load_adapter`, `merge(fold_lora=True)`;
# `tinymix/experiments/porting.py` — `decode_on`, `slots_right`, `flips`, `patch_update`, the comparison.
