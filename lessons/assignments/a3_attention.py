# %% [markdown]
# # Assignment A3 — multi-head attention (10 points)
#
# Do it after lesson 05 (`python3 lessons/run.py 05`): it prepares every step.
#
# Write tinymix's attention (transformer.Attention) as Tensor code: use Tensor operations and
# tinymix.functional, and autograd gives you the backward pass. The grader compares your values AND
# your gradients with the library's. Sizes: B batch, T time (tokens), C channels, H heads, D = C / H.
#
# How to work: replace each `raise NotImplementedError(...)` with your code. Keep every def line and
# docstring as they are: they are the contract the grader checks you against. Grade yourself, from
# the repository root (or from any folder after `pip install -e .` there), as often as you like
# (no server, nothing is sent anywhere):
#
#     python3 -m tinymix.grade lessons/assignments/a3_attention.py
#     python3 -m tinymix.grade lessons/assignments/a3_attention.py --task A3.1     # one task
#
# A task you have not started shows as "not started"; a wrong one shows which input failed, the
# expected and the actual values, and the largest difference.
#
# The grader runs your file in a process of its own, with a time limit per task. It may import
# tinymix.backend, tensor, functional and nn; tinymix.transformer and functional.attention compute
# these answers, so they are refused here.

# %%
import math

from tinymix import functional as F
from tinymix.tensor import Tensor


# %% [markdown]
# ## Task A3.1 — split the channels into heads (2 points)
# (B, T, C) -> (B, T, H, D) -> (B, H, T, D): each head then attends on its own D channels.

# %%
def split_heads(x, num_heads):
    """Split the channels of x, a Tensor (B, T, C), into num_heads heads of D = C / num_heads channels:
    returns a Tensor (B, H, T, D) whose head h holds channels h*D .. (h+1)*D - 1, the layout
    transformer.Attention uses."""
    raise NotImplementedError(
        "Task A3.1: reshape (B, T, C) into heads (B, H, T, D) — hint: reshape to (B, T, H, D), "
        "then transpose so that the head axis comes before time")


# %% [markdown]
# ## Task A3.2 — scaled dot-product attention (4 points)
# scores = q k^T / sqrt(D) is (B, H, T, T): query t against key s. The mask bias is added before the
# softmax, so a masked key (-1e9) gets weight exp(-1e9) = 0. Dividing by sqrt(D) keeps the scores'
# variance near 1 whatever the head size.

# %%
def scaled_dot_product_attention(q, k, v, mask_bias):
    """softmax(q k^T / sqrt(D) + mask_bias) v for every batch element and head.

    q, k, v: Tensors (B, H, T, D); mask_bias: an array that broadcasts to (B, H, T, T), 0 where a
    query may look at a key and -1e9 where it may not. Returns a Tensor (B, H, T, D)."""
    raise NotImplementedError(
        "Task A3.2: compute softmax(q k^T / sqrt(D) + mask_bias) v — hint: k.transpose(0, 1, 3, "
        "2) is (B, H, D, T); tinymix.functional.softmax over the last axis, the keys")


# %% [markdown]
# ## Task A3.3 — multi-head attention (4 points)
# q, k, v are three projections of x; split each into heads, attend, merge the heads back to
# (B, T, C) (the inverse of Task A3.1), and apply the output projection. Do not call the library's
# Attention module: write the steps.

# %%
def multi_head_attention(x, params, num_heads, mask_bias):
    """The forward pass of transformer.Attention without dropout.

    x: Tensor (B, T, C). params: Tensors named as Attention's parameters: "query.weight" (C, C),
    "query.bias" (C,), and likewise for "key", "value" and "output"; weights are stored (out, in), so a
    projection is x @ weight.T + bias. mask_bias: as in scaled_dot_product_attention.
    Returns a Tensor (B, T, C)."""
    raise NotImplementedError(
        "Task A3.3: project x to q, k, v, attend per head, merge the heads, project the output — "
        "hint: tinymix.functional.linear(x, params['query.weight'], params['query.bias']) and so "
        "on; merge the heads back to (B, T, C) before the output projection")
