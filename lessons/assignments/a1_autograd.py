# %% [markdown]
# # Assignment A1 — autograd primitives and broadcasting gradients (10 points)
#
# Do it after lessons 01-02 (`python3 lessons/run.py 01`, then `02`): they prepare every step.
#
# Every Tensor operation in tinymix records a small backward function beside its forward
# (tinymix/tensor.py). Here you write four of them on raw arrays: given g = dLoss/dOutput and the
# inputs, return dLoss/dInput for each input. The twist is broadcasting: when `a` of shape (4,) meets
# `b` of shape (3, 4), a was silently reused three times, so its gradient is the SUM of the three
# uses. Every backward in this file ends by summing a gradient back to its input's shape.
#
# How to work: replace each `raise NotImplementedError(...)` with your code. Keep every def line and
# docstring as they are: they are the contract the grader checks you against. Grade yourself, from
# the repository root (or from any folder after `pip install -e .` there), as often as you like
# (no server, nothing is sent anywhere):
#
#     python3 -m tinymix.grade lessons/assignments/a1_autograd.py
#     python3 -m tinymix.grade lessons/assignments/a1_autograd.py --task A1.1     # one task
#
# A task you have not started shows as "not started"; a wrong one shows which input failed, the
# expected and the actual values, and the largest difference.
#
# The grader runs your file in a process of its own, with a time limit per task, and lets it import
# only tinymix.backend (xp) of tinymix: Tensor autograd computes these backward passes, so it is
# refused here.

# %%
from tinymix.backend import xp   # the array module (NumPy, or CuPy on a GPU): say xp, never numpy


# %% [markdown]
# ## Task A1.1 — unbroadcast (2 points)
# Broadcasting does two things to an input: it adds leading axes ((4,) -> (1, 4) -> (3, 4)) and it
# stretches axes of length 1 ((3, 1) -> (3, 4)). The gradient undoes both by summing:
#
#     grad (2, 3, 4) -> shape (3, 4):   sum over axis 0
#     grad (2, 3, 4) -> shape (3, 1):   sum over axis 0, then over axis 2 keeping it as length 1

# %%
def unbroadcast(grad, shape):
    """Sum `grad` back to `shape`, the shape of an input that broadcasting stretched or extended.

    grad: array of the broadcast (output) shape; shape: a tuple that broadcasts to grad.shape.
    Returns an array of exactly `shape`: that input's gradient."""
    raise NotImplementedError(
        "Task A1.1: sum a broadcast gradient back to an input's shape — hint: sum over the "
        "leading axes that broadcasting added, then, with keepdims=True, over the axes where "
        "`shape` has a 1 but grad does not")


# %% [markdown]
# ## Task A1.2 — the product a * b (2 points)
# d(a*b)/da = b elementwise, so da = g * b, then summed back to a's shape. You may call your
# unbroadcast from Task A1.1.

# %%
def mul_backward(g, a, b):
    """Gradients of out = a * b (NumPy broadcasting) from the upstream gradient g = dL/dout.

    g: array of out's shape; a, b: the inputs. Returns (da, db) with the shapes of a and b."""
    raise NotImplementedError(
        "Task A1.2: return (da, db) for out = a * b — hint: the product rule gives g * b for a "
        "and g * a for b; each must then be summed back to its input's shape (Task A1.1's idea)")


# %% [markdown]
# ## Task A1.3 — sum over axes (2 points)
# out = x.sum(axis) forgets the summed axes; each x element contributes to one out element with
# slope 1. So dx is g copied back along the summed axes. Mind keepdims=False, where those axes are
# gone from g, and axis=None, where g is a single number.

# %%
def sum_backward(g, shape, axis=None, keepdims=False):
    """Gradient of out = x.sum(axis=axis, keepdims=keepdims) from g = dL/dout.

    shape: x's shape; axis: None (all axes), an int (may be negative) or a tuple of ints.
    Returns dx, an array of `shape`."""
    raise NotImplementedError(
        "Task A1.3: return dx for out = x.sum(axis, keepdims) — hint: every element of x feeds "
        "one element of out with slope 1: put the summed axes back (xp.expand_dims) and broadcast"
        " g to `shape`")


# %% [markdown]
# ## Task A1.4 — the matrix product a @ b with batch axes (4 points)
# For matrices, out[i, j] = sum_k a[i, k] b[k, j] gives da = g @ b.T and db = a.T @ g. With batch
# axes, `@` works on the last two axes and broadcasts the rest: a (2, 3, 4) @ b (4, 5) uses the same
# b for both batch elements, so db sums over the batch. Transpose only the last two axes.

# %%
def matmul_backward(g, a, b):
    """Gradients of out = a @ b, where a (..., n, k) and b (..., k, m) may carry broadcast batch axes
    (a 2-D b is one weight shared by every batch element). g: (..., n, m).
    Returns (da, db) with the shapes of a and b."""
    raise NotImplementedError(
        "Task A1.4: return (da, db) for out = a @ b with batch broadcasting — hint: for 2-D "
        "arrays da = g @ b.T and db = a.T @ g; for more axes swap only the last two (xp.swapaxes)"
        " and sum away the batch axes that broadcasting added")
