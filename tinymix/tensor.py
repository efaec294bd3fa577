"""A Tensor: an xp array plus the recipe to send gradients back to the tensors it was made from.

Reverse-mode autograd in three ideas:
1. Every operation computes its output array and, when any input needs a gradient, records a small
   `backward(g)` closure right next to the forward code. Given g = dLoss/dOutput it adds
   dLoss/dInput to each input that requires a gradient, and to no other: frozen weights cost nothing.
2. `loss.backward()` orders the graph topologically (iteratively: deep graphs don't hit Python's
   recursion limit) and calls the closures from the loss back to the leaves.
3. Leaves (tensors the user made) accumulate `.grad` across backward calls until zeroed; intermediate
   gradients and the graph itself are dropped as soon as they are used, to free memory.

Inputs to a binary op broadcast as in NumPy; `_unbroadcast` sums the gradient back to each input's shape.

Memory, briefly (the `_Node` class, after Tensor). The graph is made of small `_Node` records, not of
the tensors themselves: a node knows its parents' gradient sinks and its backward closure, but not its
own array. A closure keeps only the arrays its formula needs (x * y keeps y to give x its gradient,
x + y keeps nothing), so an intermediate result is freed as soon as the forward code drops it, unless
some backward needs it. PyTorch's "saved tensors" work the same way; keeping every intermediate alive
instead would cost a MiniLM training step about twice the memory.
"""
from contextlib import contextmanager

from . import backend
from .backend import xp

_grad_enabled = True


@contextmanager
def no_grad():
    """Inside this block operations record no graph (evaluation, weight updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


def _as_array(data, dtype=None):
    """Numbers, lists and host arrays become xp arrays. Floating-point data is float32 unless a
    dtype is asked for explicitly (gradient checks ask for float64): no silent float64."""
    if isinstance(data, Tensor):
        data = data.data
    if not backend.is_array(data):
        data = backend.from_numpy(backend.to_numpy(data))
    if dtype is None and data.dtype.kind == "f":
        dtype = xp.float32
    if dtype is not None and data.dtype != dtype:
        data = data.astype(dtype)
    return data


def _unbroadcast(grad, shape):
    """Sum `grad` over the axes that broadcasting added or stretched, so it has `shape`."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "_node")
    __array_priority__ = 100  # `numpy_array * tensor` calls Tensor.__rmul__, not NumPy's loop

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None
        if self.requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.data.dtype}")

    # ---- the graph -------------------------------------------------------------------------------

    @classmethod
    def _make(cls, data, parents, backward):
        """The output of an op: it joins the graph only if grad mode is on and a parent needs it."""
        out = cls.__new__(cls)
        out.data = data
        out.grad = None
        out._node = None
        out.requires_grad = False
        if _grad_enabled:
            sinks = tuple(p._sink() for p in parents if p.requires_grad)
            if sinks:
                out.requires_grad = True
                out._node = _Node(sinks, backward, data.shape)
        return out

    def _sink(self):
        """Where this tensor's gradient goes: its node if an op made it, itself if it is a leaf; None
        if it needs none. Backward closures hold sinks, never tensors, so arrays can be freed."""
        if not self.requires_grad:
            return None
        return self if self._node is None else self._node

    # the graph links, read through the node (a leaf has none); lessons peek at them
    _parents = property(lambda self: () if self._node is None else self._node._parents)
    _backward = property(lambda self: None if self._node is None else self._node._backward)
    _is_leaf = property(lambda self: self._node is None)

    def _accumulate(self, grad):
        """Add a gradient contribution, summed back to this tensor's shape."""
        if self._node is not None:
            self._node._accumulate(grad)
            return
        grad = _unbroadcast(grad, self.data.shape)
        if self.grad is not None:
            self.grad = self.grad + grad
        else:
            # a leaf's .grad is its own array, safe to update in place: `grad` may be a broadcast view
            # (read-only on NumPy, overlapping elements on CuPy) or the very array another input got
            self.grad = grad.copy()

    def backward(self, grad=None):
        """Fill `.grad` of every leaf that requires a gradient with dSelf/dLeaf (times `grad`).
        Gradients add up over calls: zero them (`t.grad = None`, or an optimizer's zero_grad)."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: no input of the "
                               "computation has requires_grad=True (or it ran under no_grad())")
        node = self._node
        if node is not None and node._backward is None:
            raise RuntimeError("backward() through a graph that was already released by an earlier "
                               "backward(); run the forward pass again")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() on a tensor of shape {self.data.shape} needs an explicit "
                                   "grad of that shape; only a single-element tensor defaults to 1")
            grad = xp.ones_like(self.data)
        else:
            grad = _as_array(grad, self.data.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward() got grad of shape {grad.shape} for a tensor of shape "
                                 f"{self.data.shape}")
        if node is None:  # a leaf: its gradient is `grad` itself
            self.grad = grad if self.grad is None else self.grad + grad
            return
        node.grad = grad
        for step in reversed(_topological_order(node)):  # outputs before inputs
            if not isinstance(step, _Node):
                continue  # a leaf: its .grad is filled
            if step._backward is None:
                raise RuntimeError("backward() reached a part of the graph that an earlier "
                                   "backward() already released; run the forward pass again")
            if step.grad is not None:
                step._backward(step.grad)
            step._backward, step._parents, step.grad = None, (), None  # release the graph as we go

    # ---- plain accessors -------------------------------------------------------------------------

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{flag})"

    def detach(self):
        """The same values, cut from the graph (shares memory)."""
        return Tensor(self.data, dtype=self.data.dtype)

    def item(self):
        """The single value as a Python number (on a GPU this waits for the device)."""
        return self.data.item()

    def numpy(self):
        """The values as a host NumPy array."""
        return backend.to_numpy(self.data)

    def zero_grad(self):
        self.grad = None

    # ---- arithmetic (broadcasting) ---------------------------------------------------------------

    def _lift(self, other):
        """Numbers become 0-d arrays of self's dtype, so float32 stays float32 (no float64 upcast).
        A number is filled in on the device (xp.full), not copied from the host: on a GPU a copy
        from ordinary host memory may wait for the queued work."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float)):
            return Tensor(xp.full((), other, dtype=self.data.dtype), dtype=self.data.dtype)
        return Tensor(xp.asarray(other, dtype=self.data.dtype), dtype=self.data.dtype)

    # Each backward below gives its inputs' sinks (a, b: None where no gradient is needed) the
    # gradient, and keeps only the arrays its formula reads: x * y keeps y only if x needs a gradient.

    def __add__(self, other):
        other = self._lift(other)
        a, b = self._sink(), other._sink()

        def backward(g):
            if a is not None:
                a._accumulate(g)
            if b is not None:
                b._accumulate(g)
        return Tensor._make(self.data + other.data, (self, other), backward)

    def __sub__(self, other):
        other = self._lift(other)
        a, b = self._sink(), other._sink()

        def backward(g):
            if a is not None:
                a._accumulate(g)
            if b is not None:
                b._accumulate(-g)
        return Tensor._make(self.data - other.data, (self, other), backward)

    def __mul__(self, other):
        other = self._lift(other)
        a, b = self._sink(), other._sink()
        a_data = self.data if b is not None else None
        b_data = other.data if a is not None else None

        def backward(g):
            if a is not None:
                a._accumulate(g * b_data)
            if b is not None:
                b._accumulate(g * a_data)
        return Tensor._make(self.data * other.data, (self, other), backward)

    def __truediv__(self, other):
        other = self._lift(other)
        a, b = self._sink(), other._sink()
        a_data = self.data if b is not None else None
        b_data = other.data

        def backward(g):
            if a is not None:
                a._accumulate(g / b_data)
            if b is not None:
                b._accumulate(-g * a_data / (b_data * b_data))
        return Tensor._make(self.data / other.data, (self, other), backward)

    def __pow__(self, exponent):
        if not isinstance(exponent, (int, float)):
            raise TypeError(f"Tensor ** only takes a Python number as exponent, got {type(exponent).__name__}"
                            " (for a tensor exponent write exp(b * log(a)))")
        if not isinstance(exponent, int):
            exponent = float(exponent)  # a NumPy float64 scalar would turn a float32 result float64
        a, a_data = self._sink(), self.data

        def backward(g):
            a._accumulate(g * exponent * a_data ** (exponent - 1))
        return Tensor._make(a_data ** exponent, (self,), backward)

    def __neg__(self):
        a = self._sink()

        def backward(g):
            a._accumulate(-g)
        return Tensor._make(-self.data, (self,), backward)

    def __radd__(self, other):
        return self._lift(other) + self

    def __rsub__(self, other):
        return self._lift(other) - self

    def __rmul__(self, other):
        return self._lift(other) * self

    def __rtruediv__(self, other):
        return self._lift(other) / self

    def __matmul__(self, other):
        """Batched matrix product (..., n, k) @ (..., k, m) -> (..., n, m); leading axes broadcast."""
        other = self._lift(other)
        if self.ndim < 2 or other.ndim < 2:
            raise ValueError(f"matmul needs tensors with at least 2 axes, got shapes {self.shape} and {other.shape}")
        if self.shape[-1] != other.shape[-2]:
            raise ValueError(f"matmul shape mismatch: {self.shape} @ {other.shape} — the last axis of the left "
                             f"({self.shape[-1]}) must equal the second-to-last of the right ({other.shape[-2]})")
        a, b = self._sink(), other._sink()
        a_data = self.data if b is not None else None
        b_data = other.data if a is not None else None
        b_ndim = other.ndim

        def backward(g):
            if a is not None:
                a._accumulate(_matmul(g, xp.swapaxes(b_data, -1, -2)))
            if b is not None:
                if b_ndim == 2:  # a weight shared by every row: one big 2-D product, no batched sum
                    rows = a_data.reshape(-1, a_data.shape[-1])
                    b._accumulate(rows.T @ g.reshape(-1, g.shape[-1]))
                else:
                    b._accumulate(xp.swapaxes(a_data, -1, -2) @ g)
        return Tensor._make(_matmul(self.data, other.data), (self, other), backward)

    # ---- elementwise functions -------------------------------------------------------------------

    def exp(self):
        a, out = self._sink(), xp.exp(self.data)

        def backward(g):
            a._accumulate(g * out)
        return Tensor._make(out, (self,), backward)

    def log(self):
        a, a_data = self._sink(), self.data

        def backward(g):
            a._accumulate(g / a_data)
        return Tensor._make(xp.log(a_data), (self,), backward)

    def sqrt(self):
        a, out = self._sink(), xp.sqrt(self.data)

        def backward(g):
            a._accumulate(g * 0.5 / out)
        return Tensor._make(out, (self,), backward)

    def tanh(self):
        a, out = self._sink(), xp.tanh(self.data)

        def backward(g):
            a._accumulate(g * (1.0 - out * out))
        return Tensor._make(out, (self,), backward)

    def relu(self):
        a = self._sink()
        positive = self.data > 0

        def backward(g):
            a._accumulate(g * positive)
        return Tensor._make(self.data * positive, (self,), backward)

    # ---- reductions ------------------------------------------------------------------------------

    def sum(self, axis=None, keepdims=False):
        a, shape = self._sink(), self.shape

        def backward(g):
            if not keepdims and axis is not None:
                g = xp.expand_dims(g, axis)
            a._accumulate(xp.broadcast_to(g, shape))
        return Tensor._make(xp.asarray(self.data.sum(axis=axis, keepdims=keepdims)), (self,), backward)

    def mean(self, axis=None, keepdims=False):
        axes = range(self.ndim) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
        count = 1
        for ax in axes:
            count *= self.shape[ax]
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / count)

    def max(self, axis=None, keepdims=False):
        """Maximum; where several entries tie for it, the gradient is shared equally among them."""
        a, a_data = self._sink(), self.data
        top = a_data.max(axis=axis, keepdims=True)

        def backward(g):
            if not keepdims and axis is not None:
                g = xp.expand_dims(g, axis)
            winners = (a_data == top).astype(a_data.dtype)
            a._accumulate(g * winners / winners.sum(axis=axis, keepdims=True))
        out = top if keepdims else (top.reshape(()) if axis is None else xp.squeeze(top, axis=axis))
        return Tensor._make(out, (self,), backward)

    # ---- shape -----------------------------------------------------------------------------------

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        a, original = self._sink(), self.shape

        def backward(g):
            a._accumulate(g.reshape(original))
        return Tensor._make(self.data.reshape(shape), (self,), backward)

    def transpose(self, *axes):
        """Permute axes like numpy.transpose; no axes reverses them."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        axes = tuple(a % self.ndim for a in axes) if axes else tuple(reversed(range(self.ndim)))
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(f"transpose axes {axes} are not a permutation of the {self.ndim} axes of {self.shape}")
        inverse = tuple(sorted(range(self.ndim), key=lambda i: axes[i]))
        a = self._sink()

        def backward(g):
            a._accumulate(g.transpose(inverse))
        return Tensor._make(self.data.transpose(axes), (self,), backward)

    @property
    def T(self):
        return self.transpose()

    def __getitem__(self, index):
        """Indexing and slicing; the gradient is scattered back (repeated indices add up)."""
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        a, shape, dtype = self._sink(), self.shape, self.dtype

        def backward(g):
            grad = xp.zeros(shape, dtype=dtype)
            if _is_basic_index(index):
                grad[index] += g  # slices and integers cannot repeat an element
            else:
                backend.scatter_add(grad, index, g)
            a._accumulate(grad)
        return Tensor._make(self.data[index], (self,), backward)


# ---- the graph's memory, briefly: nodes instead of tensors ----------------------------------------

class _Node:
    """The graph's record of one op's output: the gradient arriving during backward, the gradient
    sinks of the parents that need one (their nodes, or leaf tensors), and the backward closure.
    `requires_grad` and `_parents` let code that walks a graph treat nodes and tensors alike."""
    __slots__ = ("grad", "_parents", "_backward", "shape")
    requires_grad = True

    def __init__(self, parents, backward, shape):
        self.grad, self._parents, self._backward, self.shape = None, parents, backward, shape

    def _accumulate(self, grad):
        grad = _unbroadcast(grad, self.shape)
        self.grad = grad if self.grad is None else self.grad + grad


def _topological_order(start):
    """Nodes and leaves that lead to `start`, each after all of its parents (iterative DFS)."""
    order, visited = [], set()
    stack = [(start, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in node._parents:
            if id(parent) not in visited:
                stack.append((parent, False))
    return order


def _matmul(x, y):
    """x @ y. A 2-D y (a weight) is applied to all rows of x in ONE matrix product: NumPy's stacked
    matmul would run a small product per leading index, about 30x slower here."""
    if y.ndim == 2 and x.ndim > 2:
        return (x.reshape(-1, x.shape[-1]) @ y).reshape(*x.shape[:-1], y.shape[-1])
    return x @ y


def _is_basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


# ---- functions of several tensors -----------------------------------------------------------------

def concatenate(tensors, axis=0):
    """Join tensors along an existing axis."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    sinks = [t._sink() for t in tensors]
    ends = [0]
    for t in tensors:
        ends.append(ends[-1] + t.shape[axis])

    def backward(g):
        for sink, start, stop in zip(sinks, ends[:-1], ends[1:]):
            if sink is not None:
                index = [slice(None)] * g.ndim
                index[axis] = slice(start, stop)
                sink._accumulate(g[tuple(index)])
    return Tensor._make(xp.concatenate([t.data for t in tensors], axis=axis), tuple(tensors), backward)


def stack(tensors, axis=0):
    """Join tensors along a new axis."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    sinks = [t._sink() for t in tensors]

    def backward(g):
        for i, sink in enumerate(sinks):
            if sink is not None:
                sink._accumulate(xp.take(g, i, axis=axis))
    return Tensor._make(xp.stack([t.data for t in tensors], axis=axis), tuple(tensors), backward)


def where(condition, a, b):
    """Elementwise `a if condition else b`; the condition is a boolean array or tensor (no gradient)."""
    if isinstance(condition, Tensor):
        condition = condition.data
    condition = _as_array(condition)
    if not isinstance(a, Tensor):
        a = b._lift(a) if isinstance(b, Tensor) else Tensor(a)
    b = a._lift(b)
    a_sink, b_sink = a._sink(), b._sink()

    def backward(g):
        if a_sink is not None:
            a_sink._accumulate(xp.where(condition, g, 0.0))
        if b_sink is not None:
            b_sink._accumulate(xp.where(condition, 0.0, g))
    return Tensor._make(xp.where(condition, a.data, b.data), (a, b), backward)
