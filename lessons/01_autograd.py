# %% [markdown]
# # Lesson 01 — tensors and autograd
#
# Objective: understand reverse-mode automatic differentiation well enough to write it, then see
# that tinymix's `Tensor` is the same idea on arrays.
#
# Prerequisites: the chain rule; NumPy basics.
#
# Training means following the gradient of a loss with respect to millions of weights. Computing
# each derivative by hand is hopeless, and finite differences would need one extra forward pass
# per weight. Reverse mode gets ALL of them for about the price of one more pass:
#
# 1. While computing forward, every operation remembers its inputs and how to push a gradient back
#    to them (a small `backward` function sitting right next to the forward code).
# 2. Starting from dL/dL = 1 at the loss, visit the operations in reverse order; each one turns the
#    gradient of its output into gradients of its inputs with the chain rule,
#
#        dL/dx = sum over the outputs y that x feeds of  dL/dy * dy/dx,
#
#    and ADDS them (`+=`) to whatever the input already received: an input used twice gets two
#    contributions.

# %% [markdown]
# ## A micro engine, on scalars
#
# For `out = a * b` the local derivatives are d out/da = b and d out/db = a; for `out = tanh(a)`
# it is 1 - out^2; for `out = exp(a)` it is out. That is all an engine needs to know per operation.

# %%
import math


class Value:
    """A number that remembers how it was made."""

    def __init__(self, data, parents=()):
        self.data, self.grad = data, 0.0
        self._parents, self._backward = parents, lambda: None

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def backward():
            self.grad += out.grad            # d(a+b)/da = 1
            other.grad += out.grad
        out._backward = backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def backward():
            self.grad += other.data * out.grad   # d(ab)/da = b
            other.grad += self.data * out.grad
        out._backward = backward
        return out

    def tanh(self):
        out = Value(math.tanh(self.data), (self,))

        def backward():
            self.grad += (1.0 - out.data ** 2) * out.grad
        out._backward = backward
        return out

    def exp(self):
        out = Value(math.exp(self.data), (self,))

        def backward():
            self.grad += out.data * out.grad
        out._backward = backward
        return out

    __radd__ = __add__
    __rmul__ = __mul__

    def __neg__(self):                       # derived ops need no backward of their own
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def backward(self):
        order, seen = [], set()

        def visit(node):                     # topological order: every node after its parents
            if id(node) not in seen:
                seen.add(id(node))
                for parent in node._parents:
                    visit(parent)
                order.append(node)
        visit(self)
        self.grad = 1.0
        for node in reversed(order):         # the loss first, the leaves last
            node._backward()


# %% [markdown]
# A one-neuron "network" with the input x used twice, so its gradient has two paths:
#
#     L = tanh(w*x + b) * x - exp(b)
#     dL/dw = (1 - tanh^2(w x + b)) * x * x
#     dL/db = (1 - tanh^2(w x + b)) * x - exp(b)
#     dL/dx = (1 - tanh^2(w x + b)) * w * x + tanh(w x + b)

# %%
w, b, x = Value(0.7), Value(-0.3), Value(1.5)
L = (w * x + b).tanh() * x - b.exp()
L.backward()

t = math.tanh(0.7 * 1.5 - 0.3)
by_hand = {"w": (1 - t * t) * 1.5 * 1.5, "b": (1 - t * t) * 1.5 - math.exp(-0.3),
           "x": (1 - t * t) * 0.7 * 1.5 + t}
engine = {"w": w.grad, "b": b.grad, "x": x.grad}
print("L =", round(L.data, 6))
for name in by_hand:
    print(f"dL/d{name}: engine {engine[name]: .8f}   by hand {by_hand[name]: .8f}")
    assert abs(engine[name] - by_hand[name]) < 1e-12
# x feeds two operations; with `=` instead of `+=` one of its two contributions would be lost
assert abs(x.grad - (1 - t * t) * 0.7 * 1.5) > 0.1

# %% [markdown]
# ## The same with tinymix's Tensor
#
# `tinymix.Tensor` is this engine with two changes: the values are arrays (NumPy, or CuPy on a GPU),
# and each backward function receives the upstream gradient `g` as an argument and works on whole
# arrays. The expression above, written with tensors, gives the same numbers.

# %%
import support  # noqa: F401  (puts the repository on sys.path when this file runs as a script)
from tinymix import Tensor, no_grad
from tinymix.backend import xp

wt, bt, xt = (Tensor(v, requires_grad=True, dtype=xp.float64) for v in (0.7, -0.3, 1.5))
Lt = (wt * xt + bt).tanh() * xt - bt.exp()
Lt.backward()
for name, tensor in (("w", wt), ("b", bt), ("x", xt)):
    print(f"dL/d{name}: Tensor {float(tensor.grad): .8f}   micro engine {engine[name]: .8f}")
    assert abs(float(tensor.grad) - engine[name]) < 1e-12

# %% [markdown]
# ## What arrays add: broadcasting and matrix products
#
# With arrays, one rule matters beyond the scalar case. Broadcasting reuses an input in two ways,
# and its gradient must undo both by SUMMING the upstream gradient — the same `+=` rule, applied to
# every reuse at once:
#
# - it ADDS leading axes: a (2,) bias added to a (4, 2) batch is used once per row, so its gradient
#   is the sum over the rows (axis 0, which then disappears);
# - it STRETCHES axes of length 1: a (4, 1) column of per-row scales multiplied into a (4, 2) array
#   is used once per column, so its gradient is the sum over axis 1 — kept, as length 1, so that it
#   has the column's shape (4, 1) again.
#
# And for a product Y = X W (X: (n, k), W: (k, m)):
#
#     dL/dX = dL/dY @ W^T        dL/dW = X^T @ dL/dY
#
# (each entry of W meets every row of X; the sum over rows is the matrix product). Here is a linear
# layer with a per-row scale, its gradients from the Tensor engine against those formulas written in
# plain xp.

# %%
from tinymix import backend

backend.manual_seed(0)
X = Tensor(backend.host_normal((4, 3), 1.0))
W = Tensor(backend.host_normal((3, 2), 1.0), requires_grad=True)
bias = Tensor(backend.host_normal((2,), 1.0), requires_grad=True)      # (2,)   -> (4, 2): axis added
scale = Tensor(backend.host_normal((4, 1), 1.0), requires_grad=True)   # (4, 1) -> (4, 2): axis stretched
XW = X @ W                                     # (4, 2)
Y = (XW + bias) * scale                        # (4, 2)
loss = (Y * Y).sum()                           # dL/dY = 2 Y
loss.backward()

dY = 2 * Y.data
dZ = dY * scale.data                           # the gradient reaching XW + bias (scale broadcast back)
assert W.grad.shape == W.shape and bias.grad.shape == bias.shape and scale.grad.shape == scale.shape
assert xp.allclose(W.grad, X.data.T @ dZ, atol=1e-5)
assert xp.allclose(bias.grad, dZ.sum(axis=0), atol=1e-5)
assert xp.allclose(scale.grad, (dY * (XW.data + bias.data)).sum(axis=1, keepdims=True), atol=1e-5)
assert X.grad is None, "X did not ask for a gradient, so none was computed"
print("dL/dW = X^T dZ; dL/dbias = dZ summed over rows (axis added); dL/dscale = summed over columns,")
print(f"kept as shape {tuple(scale.grad.shape)} (axis stretched): all match")

# %% [markdown]
# ## Three rules of the engine worth knowing before training anything
#
# 1. Gradients of leaves ACCUMULATE across `backward()` calls, exactly like `+=` above. That is
#    what makes two forward passes with one backward work (AdaMix's consistency loss, lesson 11),
#    and it is why an optimizer zeroes them between steps.
# 2. Under `no_grad()` no graph is recorded: evaluation costs no memory for backward.
# 3. A tensor that does not require a gradient gets none, and the engine skips the work for it:
#    that is what makes frozen pretrained weights cheap (lesson 07).

# %%
a = Tensor([1.0, 2.0, 3.0], requires_grad=True)
(a * a).sum().backward()
first = a.grad.copy()                          # 2a
(a * a).sum().backward()
assert xp.allclose(a.grad, 2 * first), "a second backward adds to .grad"
a.zero_grad()
assert a.grad is None

with no_grad():
    c = a * a
assert not c.requires_grad, "no graph is recorded under no_grad()"

frozen = Tensor([1.0, 2.0, 3.0])               # requires_grad=False, like a frozen weight
(frozen * a).sum().backward()
assert frozen.grad is None and xp.allclose(a.grad, frozen.data)
print("accumulation, no_grad and frozen inputs behave as described")

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 01 --exercises` runs only these cells). Work them out by hand first —
# autograd is the thing being learnt.
#
# 01.1 — With a = [1, 2, 3] and b = [4, 5, 6] (both (3,)), L = sum(a * b) + sum(a). What is dL/da?
# (Two paths lead from a to L.)

# %% exercise 01.1
from exercises import check

dL_da = ...                      # a list or array of 3 numbers
check("01.1", dL_da)

# %% [markdown]
# 01.2 — a has shape (3, 1) with values [[1], [2], [3]]; b has shape (1, 4) with values
# [[1, 0, -1, 2]]. L = sum(a * b) (the product broadcasts to (3, 4)). Give (dL/da, dL/db), each with
# its input's shape.

# %% exercise 01.2
from exercises import check

dL_da, dL_db = ..., ...          # arrays of shape (3, 1) and (1, 4)
check("01.2", (dL_da, dL_db))

# %% [markdown]
# In the library: `tinymix/tensor.py` — `Tensor._make` records the graph, `Tensor.backward` walks it
# (iteratively, so deep graphs do not hit Python's recursion limit, and releasing each node once it
# is used), `_unbroadcast` is the sum-over-broadcast-axes rule (both kinds: added axes and stretched
# ones), and every primitive (`__mul__`, `__matmul__`, `tanh`, `__getitem__`, ...) has its
# `backward(g)` right below its forward line.
#
# Next: lesson 02 proves a backward function right with finite differences. After lessons 01-02, do
# assignment A1 (autograd primitives and broadcasting gradients):
# `python3 -m tinymix.grade lessons/assignments/a1_autograd.py`.
