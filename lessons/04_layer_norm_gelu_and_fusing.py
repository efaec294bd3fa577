# %% [markdown]
# # Lesson 04 — deriving layer-norm and GELU backward, and why the library fuses them
#
# Objective: derive the backward pass of the two other fused operations every Transformer block
# leans on, layer norm and GELU; check each derivation against the composition of primitive ops
# and against finite differences; and count what fusing saves.
#
# Prerequisites: lesson 03 (the same method, on softmax and cross-entropy).
#
# As in lesson 03, each op could be a chain of primitives that autograd differentiates; the library
# writes one forward on raw arrays and a hand-derived backward instead, so the graph holds ONE node
# where the chain would record eight or more.

# %%
import math
import time

import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget

from tinymix import Tensor, backend, gradcheck
from tinymix import functional as F
from tinymix.backend import xp

backend.manual_seed(0)


def grad_of(fn, x, g):
    """d(sum(fn(x) * g))/dx: the vector-Jacobian product autograd computes for upstream gradient g."""
    x = Tensor(x.data, requires_grad=True, dtype=x.dtype)
    fn(x).backward(g)
    return x.grad


# %% [markdown]
# ## Layer norm
#
# Over the last axis (size C) of each row:
#
#     mu = mean(x),  var = mean((x - mu)^2),  r = 1 / sqrt(var + eps),  xhat = (x - mu) r
#     y = weight * xhat + bias
#
# Let a = dL/dxhat = g * weight. xhat depends on x directly, through mu and through r:
#
#     dxhat_i/dx_j = r (delta_ij - 1/C) - (x_i - mu) r^3 (x_j - mu) / C
#                  = r (delta_ij - 1/C - xhat_i xhat_j / C)
#
# so dx_j = sum_i a_i dxhat_i/dx_j gives the three-term formula of the library:
#
#     dx = r * (a - mean(a) - xhat * mean(a * xhat))
#     dweight = sum over rows of g * xhat,   dbias = sum over rows of g
#
# The two subtracted means are the projections that keep the output centred and normalised: adding
# a constant to x, or scaling x, changes nothing, so the gradient has no component along those
# directions (the second one exactly only when eps = 0). Checked below against the composition,
# the formula and finite differences, plus both properties.

# %%
rows = Tensor(backend.host_normal((4, 8), 2.0) + 1.0, dtype=xp.float64)
gain = Tensor(backend.host_normal((8,), 1.0) + 1.0, dtype=xp.float64)
shift = Tensor(backend.host_normal((8,), 1.0), dtype=xp.float64)
g = backend.host_normal((4, 8), 1.0, dtype="float64")


def layer_norm_composed(t, w, b, eps=1e-5):
    centred = t - t.mean(axis=-1, keepdims=True)
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / (variance + eps).sqrt() * w + b


fused = grad_of(lambda t: F.layer_norm(t, gain, shift), rows, g)
chain = grad_of(lambda t: layer_norm_composed(t, gain, shift), rows, g)
mean = rows.data.mean(axis=-1, keepdims=True)
r = 1 / xp.sqrt(((rows.data - mean) ** 2).mean(axis=-1, keepdims=True) + 1e-5)
xhat = (rows.data - mean) * r
a = g * gain.data
derived = r * (a - a.mean(axis=-1, keepdims=True) - xhat * (a * xhat).mean(axis=-1, keepdims=True))
assert xp.allclose(fused, chain, atol=1e-10) and xp.allclose(fused, derived, atol=1e-10)
assert xp.allclose(fused.sum(axis=-1), 0, atol=1e-10), "no gradient along 'add a constant'"
no_eps = grad_of(lambda t: F.layer_norm(t, gain, shift, eps=0.0), rows, g)
assert xp.allclose((no_eps * (rows.data - mean)).sum(axis=-1), 0, atol=1e-10), "none along 'scale'"
w_, b_ = (Tensor(t.data, requires_grad=True, dtype=xp.float64) for t in (gain, shift))
assert gradcheck(F.layer_norm, Tensor(rows.data, requires_grad=True, dtype=xp.float64), w_, b_)
print("layer norm: fused == composed == r (a - mean(a) - xhat mean(a xhat)); gradients sum to 0 per row")

# %% [markdown]
# ## GELU
#
# BERT's activation is GELU(x) = x Phi(x) with Phi the standard normal CDF, so by the product rule
#
#     GELU'(x) = Phi(x) + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
#
# NumPy has no erf; the library evaluates Phi with a classic rational approximation (error below
# 1.5e-7), so the check against finite differences runs in float64 at the approximation's accuracy.

# %%
import math

points = Tensor(xp.linspace(-4, 4, 17), dtype=xp.float64)
phi = xp.exp(-points.data ** 2 / 2) / math.sqrt(2 * math.pi)
Phi = xp.asarray([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in points.data.tolist()])
assert xp.allclose(F.gelu(points).data, points.data * Phi, atol=1e-6)
assert xp.allclose(grad_of(F.gelu, points, xp.ones(17)), Phi + points.data * phi, atol=1e-6)
assert gradcheck(F.gelu, Tensor(xp.linspace(-3, 3, 7), requires_grad=True), atol=1e-6, rtol=1e-5)
print("GELU: d/dx x Phi(x) = Phi(x) + x phi(x)")

# %% [markdown]
# ## Why fuse: one graph node instead of many
#
# Count the nodes autograd records for layer norm on a batch the size of a MiniLM activation
# (B=32 sentences, T=32 tokens, C=384), then time forward + backward. (The count peeks at the
# engine's private `_parents` links; each node's backward keeps the arrays its formula reads alive
# until backward runs, so fewer nodes also means fewer saved arrays.)

# %%
def graph_nodes(t):
    seen, stack = set(), [t]
    while stack:
        node = stack.pop()
        if id(node) not in seen and node.requires_grad:
            seen.add(id(node))
            stack.extend(node._parents)
    return len(seen)


B, T, width = budget((32, 32, 384), (8, 16, 384))
activations = Tensor(backend.host_normal((B, T, width), 1.0), requires_grad=True)
w32 = Tensor(xp.ones(width, dtype=xp.float32), requires_grad=True)
b32 = Tensor(xp.zeros(width, dtype=xp.float32), requires_grad=True)
counts, seconds = {}, {}
for name, op in (("fused", lambda: F.layer_norm(activations, w32, b32, 1e-5)),
                 ("composed", lambda: layer_norm_composed(activations, w32, b32))):
    counts[name] = graph_nodes(op()) - 3           # minus the three leaves
    started = time.perf_counter()
    for _ in range(budget(10, 3)):
        op().sum().backward()
    seconds[name] = (time.perf_counter() - started) / budget(10, 3)
    print(f"{name:8s}: {counts[name]:2d} graph nodes, forward + backward {1000 * seconds[name]:.1f} ms")
assert counts["fused"] == 1 and counts["composed"] >= 8

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 04 --exercises` runs only these cells).
#
# 04.1 — RMS norm (used by many recent language models) drops layer norm's centring:
#
#     rms = sqrt(mean(x^2) + eps),   y = weight * x / rms      (over the last axis of size C)
#
# Derive dL/dx and write it: given x (N, C), weight (C,), the upstream gradient g (N, C) and eps,
# return dx. The check compares with autograd through the composition of primitives.

# %% exercise 04.1
from exercises import check


def rms_norm_backward(x, weight, g, eps):
    raise NotImplementedError("exercise 04.1")   # return dx, an (N, C) array


check("04.1", rms_norm_backward)

# %% [markdown]
# 04.2 — GPT-2 (and the tiny GPT of lesson 15) uses GELU's tanh approximation,
#
#     gelu(x) = 0.5 x (1 + tanh(k (x + 0.044715 x^3))),   k = sqrt(2 / pi)
#
# Write its derivative, gelu_tanh_grad(x), for an array x. The check compares with autograd through
# the formula in float64.

# %% exercise 04.2
from exercises import check


def gelu_tanh_grad(x):
    raise NotImplementedError("exercise 04.2")   # return d gelu / dx, elementwise


check("04.2", gelu_tanh_grad)

# %% [markdown]
# In the library: `tinymix/functional.py` — `layer_norm`, `gelu` (and `kl_div`, derived the same way
# in lesson 11). Each docstring carries the one-line formula derived here; tests/test_functional.py
# checks each against its composition and against gradcheck.
#
# After lessons 03-04, do assignment A2 (softmax, cross-entropy and layer-norm backward):
# `python3 -m tinymix.grade lessons/assignments/a2_softmax_layernorm.py`.
