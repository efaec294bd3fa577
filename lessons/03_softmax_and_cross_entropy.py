# %% [markdown]
# # Lesson 03 — deriving softmax and cross-entropy backward
#
# Objective: derive the backward pass of softmax, log-softmax and cross-entropy — the operations
# that turn a network's last layer into a prediction and a loss — check each derivation against the
# full Jacobian or the composition of primitive ops and against finite differences, and see why the
# library computes softmax in one fused, stable step.
#
# Prerequisites: lessons 01 and 02.
#
# Any of these ops could be written as a chain of primitives (exp, sum, divide, ...) and autograd
# would differentiate it. The library fuses each one instead: one forward on raw arrays and a
# hand-derived backward. The graph then holds ONE node instead of several, and — for softmax — stays
# finite where the naive chain overflows. Lesson 04 does the same for layer norm and GELU, and counts
# what fusing saves.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
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
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 03 --exercises` runs only these cells).
#
# 03.1 — Write the backward of log-softmax over the last axis: given y = softmax(x) (the forward's
# saved output) and the upstream gradient g, both (N, C) arrays, return dL/dx. The check compares it
# with autograd through the library's log_softmax.

# %% exercise 03.1
from exercises import check


def log_softmax_backward(y, g):
    raise NotImplementedError("exercise 03.1")   # return dx, an (N, C) array


check("03.1", log_softmax_backward)

# %% [markdown]
# 03.2 — One example (N = 1), C = 5 classes, all five logits 0, target class 0, label smoothing
# eps = 0.2. Give dL/dz, the gradient of the cross-entropy with respect to the five logits.

# %% exercise 03.2
from exercises import check

dL_dz = ...                      # five numbers
check("03.2", dL_dz)

# %% [markdown]
# In the library: `tinymix/functional.py` — `softmax`, `log_softmax`, `cross_entropy` (with
# `label_smoothing` and `ignore_index`); each docstring carries the one-line formula derived here;
# tests/test_functional.py checks each against its composition and against gradcheck.
#
# Next: lesson 04 derives layer norm and GELU; after both, assignment A2.
