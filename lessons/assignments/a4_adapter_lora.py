# %% [markdown]
# # Assignment A4 — adapter and LoRA, with merge and unmerge (10 points)
#
# Do it after lessons 08-09 (`python3 lessons/run.py 08`, then `09`): they prepare every step.
#
# The two parameter-efficient modules that AdaMix mixes (tinymix/peft.py). An adapter adds a small
# bottleneck after a layer; LoRA adds a low-rank update to a frozen weight, which can be folded into
# that weight for deployment (merge) and taken out again to resume training (unmerge).
#
# How to work: replace each `raise NotImplementedError(...)` with your code. Keep every def line and
# docstring as they are: they are the contract the grader checks you against. Grade yourself, from
# the repository root (or from any folder after `pip install -e .` there), as often as you like
# (no server, nothing is sent anywhere):
#
#     python3 -m tinymix.grade lessons/assignments/a4_adapter_lora.py
#     python3 -m tinymix.grade lessons/assignments/a4_adapter_lora.py --task A4.1     # one task
#
# A task you have not started shows as "not started"; a wrong one shows which input failed, the
# expected and the actual values, and the largest difference.
#
# The grader runs your file in a process of its own, with a time limit per task. It may import
# tinymix.backend, tensor, functional and nn; tinymix.peft computes these answers, so it is refused
# here.

# %%
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.tensor import Tensor


# %% [markdown]
# ## Task A4.1 — the bottleneck adapter (3 points)
# down: d -> r, GELU, up: r -> d, plus the residual h. With r much smaller than d the adapter costs
# 2 d r parameters per site.

# %%
def adapter_forward(h, params):
    """A bottleneck adapter (peft.Adapter): h + up(gelu(down(h))).

    h: Tensor (..., d). params: Tensors "down.weight" (r, d), "down.bias" (r,), "up.weight" (d, r),
    "up.bias" (d,); weights are stored (out, in). gelu is the exact (erf) form,
    tinymix.functional.gelu. Returns a Tensor (..., d)."""
    raise NotImplementedError(
        "Task A4.1: compute h + up(gelu(down(h))) — hint: tinymix.functional.linear and "
        "tinymix.functional.gelu; do not forget the residual")


# %% [markdown]
# ## Task A4.2 — the LoRA forward pass (3 points)
# W x + b + scaling * B A x, scaling = alpha / r. Multiply through A first: x A^T is (..., r), cheap,
# while B A would be a full (out, in) matrix.

# %%
def lora_forward(x, params, scaling):
    """A LoRA layer (peft.LoRALinear) without dropout: x W^T + b + scaling * x A^T B^T.

    x: Tensor (..., in). params: Tensors "base.weight" W (out, in), "base.bias" b (out,),
    "lora_A.weight" A (r, in), "lora_B.weight" B (out, r). scaling: alpha / r, a number.
    Returns a Tensor (..., out)."""
    raise NotImplementedError(
        "Task A4.2: compute the base projection plus the scaled low-rank update — hint: two small"
        " projections, through A then B, instead of building B @ A: the rank r is the bottleneck")


# %% [markdown]
# ## Task A4.3 — merge (2 points)
# W x + scaling * B A x = (W + scaling * B A) x: one matrix, zero added latency at inference.

# %%
def lora_merge(weight, lora_A, lora_B, scaling):
    """Fold a LoRA update into its frozen weight, as LoRALinear.merge does, for zero added latency.

    weight W (out, in), lora_A A (r, in), lora_B B (out, r): arrays; scaling: alpha / r.
    Returns the merged weight, an array (out, in)."""
    raise NotImplementedError(
        "Task A4.3: return the weight with the scaled update B @ A folded in — hint: B (out, r) @"
        " A (r, in) has the weight's shape; return a new array and leave the inputs unchanged")


# %% [markdown]
# ## Task A4.4 — unmerge (2 points)
# Undo Task A4.3 exactly, so training can go on from the separate weights.

# %%
def lora_unmerge(merged_weight, lora_A, lora_B, scaling):
    """Take a folded LoRA update out of a merged weight again, as LoRALinear.unmerge does (to resume
    training). Arguments as in lora_merge. Returns the original weight, an array (out, in)."""
    raise NotImplementedError(
        "Task A4.4: return the weight with the scaled update B @ A taken out — hint: the exact "
        "inverse of lora_merge")
