# %% [markdown]
# # Lesson 03 — deriving softmax, cross-entropy, layer-norm and GELU backward
#
# Objective: derive the backward pass of the four fused operations every Transformer leans on, check
# each derivation three ways (against the full Jacobian or the definition, against the composition
# of primitive ops, and against finite differences), and see why fusing them pays.
#
# Prerequisites: lessons 01 and 02.
#
# Any of these ops could be written as a chain of primitives (exp, sum, divide, ...) and autograd
# would differentiate it. The library fuses each one instead: one forward on raw arrays and a
# hand-derived backward. The graph then holds ONE node instead of five to ten, keeps one or two
# arrays alive instead of all the intermediates, and — for softmax — stays finite where the naive
# chain overflows.

# %%
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
# ## Softmax
#
#     y_i = exp(x_i) / S,   S = sum_k exp(x_k)
#
# Differentiate the quotient:  dy_i/dx_j = y_i (delta_ij - y_j),  i.e. the Jacobian is
# J = diag(y) - y y^T. The backward pass never builds J (C x C per row); it needs only J^T g:
#
#     dx_j = sum_i g_i y_i (delta_ij - y_j) = y_j (g_j - sum_i g_i y_i)
#
# one elementwise product and one dot product per row. Below, the full Jacobian from the formula
# against the one autograd finds through the composition exp / sum / divide, row by row.

# %%
x = Tensor(backend.host_normal((5,), 1.0), dtype=xp.float64)
y = F.softmax(x).data
J_formula = xp.diag(y) - xp.outer(y, y)
composed = lambda t: t.exp() / t.exp().sum()
J_autograd = xp.stack([grad_of(composed, x, xp.eye(5)[i]) for i in range(5)])   # row i = d y_i / dx
assert xp.allclose(J_formula, J_autograd, atol=1e-12)

g = backend.host_normal((5,), 1.0, dtype="float64")
assert xp.allclose(grad_of(F.softmax, x, g), y * (g - (g * y).sum()), atol=1e-12)
assert xp.allclose(grad_of(F.softmax, x, g), J_formula.T @ g, atol=1e-12)
assert gradcheck(lambda t: F.softmax(t, axis=-1), Tensor(backend.host_normal((3, 4), 2.0), requires_grad=True))
print("softmax: J = diag(y) - y y^T, and the fused backward y * (g - <g, y>) equals J^T g")

# %% [markdown]
# Softmax is unchanged by adding a constant to every logit, so the library subtracts the row's
# maximum before exp. The naive chain does not, and overflows as soon as a logit passes ~88 in
# float32 (exp(89) > 3.4e38): NumPy warns about the overflow, and inf / inf is nan.

# %%
big = Tensor([[90.0, 89.0, 70.0]])
naive = (big.exp() / big.exp().sum(axis=-1, keepdims=True)).data
stable = F.softmax(big).data
print("naive:", naive, " fused:", stable)
assert not xp.isfinite(naive).all() and xp.isfinite(stable).all()
assert abs(float(stable.sum()) - 1.0) < 1e-6

# %% [markdown]
# ## Log-softmax and cross-entropy
#
#     log_softmax(x)_i = x_i - log S           d/dx_j = delta_ij - y_j
#     dx = g - y * sum_i g_i
#
# Cross-entropy of the target class t is L = -log_softmax(z)_t, so g = -onehot(t) and
#
#     dL/dz = softmax(z) - onehot(t)       ("prediction minus truth")
#
# averaged over N rows it is divided by N. With label smoothing eps the target becomes the
# distribution q = (1 - eps) onehot(t) + eps / C, and the gradient is simply p - q.

# %%
N, C = 6, 4
logits = Tensor(backend.host_normal((N, C), 1.5), dtype=xp.float64)
targets = backend.host_rng.integers(C, size=N)
p = F.softmax(logits).data
onehot = xp.eye(C)[targets]
for eps in (0.0, 0.1):
    q = (1 - eps) * onehot + eps / C
    derived = (p - q) / N
    library = grad_of(lambda z: F.cross_entropy(z, targets, label_smoothing=eps), logits, xp.ones(()))
    composed = grad_of(lambda z: -((F.log_softmax(z) * Tensor(q, dtype=xp.float64)).sum(axis=-1)).mean(),
                       logits, xp.ones(()))
    assert xp.allclose(library, derived, atol=1e-12) and xp.allclose(composed, derived, atol=1e-12)
g = backend.host_normal((N, C), 1.0, dtype="float64")
assert xp.allclose(grad_of(F.log_softmax, logits, g), g - p * g.sum(axis=-1, keepdims=True), atol=1e-12)
print("cross-entropy: dL/dz = (softmax(z) - q) / N, with and without label smoothing")

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
# In the library: `tinymix/functional.py` — `softmax`, `log_softmax`, `cross_entropy` (with
# `label_smoothing` and `ignore_index`), `layer_norm`, `gelu` (and `kl_div`, derived the same way
# in lesson 10). Each docstring carries the one-line formula derived here; tests/test_functional.py
# checks each against its composition and against gradcheck.
