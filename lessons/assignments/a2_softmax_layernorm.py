# %% [markdown]
# # Assignment A2 — softmax, cross-entropy and layer-norm backward (10 points)
#
# Do it after lessons 03-04 (`python3 lessons/run.py 03`, then `04`): they prepare every step.
#
# tinymix fuses softmax, cross-entropy and layer norm into single operations whose backward was
# derived by hand (tinymix/functional.py): one graph node instead of five to ten, and one or two
# saved arrays. Here you derive those backward passes yourself. Inputs are arrays; the grader checks
# your answer against the library's autograd and against finite differences.
#
# How to work: replace each `raise NotImplementedError(...)` with your code. Keep every def line and
# docstring as they are: they are the contract the grader checks you against. Grade yourself, from
# the repository root (or from any folder after `pip install -e .` there), as often as you like
# (no server, nothing is sent anywhere):
#
#     python3 -m tinymix.grade lessons/assignments/a2_softmax_layernorm.py
#     python3 -m tinymix.grade lessons/assignments/a2_softmax_layernorm.py --task A2.1     # one task
#
# A task you have not started shows as "not started"; a wrong one shows which input failed, the
# expected and the actual values, and the largest difference.
#
# The grader runs your file in a process of its own, with a time limit per task, and lets it import
# only tinymix.backend (xp) of tinymix: tinymix.functional and Tensor autograd compute these
# backward passes, so they are refused here.

# %%
from tinymix.backend import xp


# %% [markdown]
# ## Task A2.1 — softmax backward from the output (2 points)
# y_i = exp(x_i) / sum_j exp(x_j). Its Jacobian dy_i/dx_j = y_i (delta_ij - y_j) needs only y, so a
# fused softmax keeps just its output for the backward pass.

# %%
def softmax_backward(g, y, axis=-1):
    """Gradient of y = softmax(x, axis) w.r.t. x, from g = dL/dy and the OUTPUT y (all a fused
    softmax keeps for its backward). g, y: arrays of one shape. Returns dx, of that shape."""
    raise NotImplementedError(
        "Task A2.1: return dx of softmax from g and the output y — hint: the Jacobian is diag(y) "
        "- y y^T; apply it to g without building it: one sum along `axis` with keepdims=True")


# %% [markdown]
# ## Task A2.2 — cross-entropy backward (3 points)
# loss = mean over rows of -sum_c t_c log softmax(z)_c, where the target distribution t is one-hot
# on the label, or with label smoothing eps: (1 - eps) on the label plus eps / C on every class.

# %%
def cross_entropy_backward(logits, targets, label_smoothing=0.0):
    """Gradient of the mean cross-entropy loss w.r.t. the logits.

    logits: (N, C) array; targets: (N,) integer classes; label_smoothing eps in [0, 1): the target
    distribution puts 1 - eps on the class and spreads eps evenly over all C classes.
    Returns dloss/dlogits, (N, C)."""
    raise NotImplementedError(
        "Task A2.2: return dloss/dlogits of the mean cross-entropy — hint: for one row, d/dz of "
        "-sum_c t_c log softmax(z)_c is softmax(z) - t; build t from targets and label_smoothing,"
        " and divide by N for the mean; subtract the row max before exp")


# %% [markdown]
# ## Task A2.3 — layer norm forward, keeping a cache (2 points)
# out = (x - mean) / sqrt(var + eps) * weight + bias along the last axis. Return the normalised
# input xhat and rstd = 1 / sqrt(var + eps) as well: they are all the backward pass needs.

# %%
def layer_norm_forward(x, weight, bias, eps=1e-5):
    """Layer norm over the last axis, returning what its backward needs.

    x: (..., C); weight, bias: (C,). With mean and var the mean and (biased) variance of x along the
    last axis, returns (out, xhat, rstd): rstd = 1 / sqrt(var + eps), shape (..., 1);
    xhat = (x - mean) * rstd, shape (..., C); out = xhat * weight + bias, shape (..., C)."""
    raise NotImplementedError(
        "Task A2.3: return (out, xhat, rstd) of layer norm over the last axis — hint: mean and "
        "variance along axis -1 with keepdims=True; the variance is biased (divide by C)")


# %% [markdown]
# ## Task A2.4 — layer norm backward from the cache (3 points)
# With dxhat = g * weight, chain through xhat = (x - mean) * rstd: x reaches xhat directly, through
# the mean, and through rstd. Write all three contributions, then simplify using xhat and rstd only.
# A classic mistake is to drop the rstd path; the grader will tell you.

# %%
def layer_norm_backward(g, xhat, rstd, weight):
    """Backward of out = xhat * weight + bias, xhat = (x - mean) * rstd, from g = dL/dout (..., C)
    and the cache (xhat, rstd) that layer_norm_forward returns; weight: (C,).
    Returns (dx, dweight, dbias): dx (..., C), dweight (C,), dbias (C,)."""
    raise NotImplementedError(
        "Task A2.4: return (dx, dweight, dbias) of layer norm from the cache — hint: start from "
        "dxhat = g * weight; x reaches xhat through (x - mean) and through rstd, which gives "
        "three terms; the means are along the last axis; dweight and dbias sum over every leading"
        " axis")
