"""Modules: containers of parameters with a forward pass.

A Module finds its parameters by walking its own attributes: a Parameter is a parameter, a Module is a
child, a ModuleList holds numbered children. Names are dotted paths ("layers.0.attention.query.weight"),
the keys of `state_dict()` and of the safetensors files.
"""
import math

from . import backend
from . import functional as F
from .backend import xp
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer may train (requires_grad=True unless frozen)."""
    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)


class Module:
    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # ---- walking the tree ------------------------------------------------------------------------

    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return [module for _, module in self.named_children()]

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix=""):
        for name, value in vars(self).items():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(value, Parameter):
                yield full, value
            elif isinstance(value, Module):
                yield from value.named_parameters(full)

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def num_parameters(self, trainable_only=False):
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- modes and freezing ----------------------------------------------------------------------

    def train(self, mode=True):
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, flag=True):
        """Freeze (False) or unfreeze (True) every parameter of this module."""
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ---- saving and loading ----------------------------------------------------------------------

    def state_dict(self):
        """{dotted name: xp array} of every parameter (the arrays themselves, not copies)."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays (NumPy or xp) into the parameters of the same names. Shapes must match exactly;
        with strict=True every parameter must be given and no unknown key may appear.
        Returns (missing, unexpected) key lists."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mis_shaped = [f"{k}: expected {own[k].shape}, got {tuple(state[k].shape)}"
                      for k in own if k in state and tuple(state[k].shape) != own[k].shape]
        problems = []
        if mis_shaped:
            problems.append("mis-shaped keys: " + "; ".join(mis_shaped))
        if strict and missing:
            problems.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if problems:
            raise KeyError(f"load_state_dict into {type(self).__name__} failed — " + " | ".join(problems))
        for name, p in own.items():
            if name in state:
                value = state[name]
                value = value if backend.is_array(value) else backend.from_numpy(value)
                p.data = value.astype(p.dtype, copy=True)
        return missing, unexpected


def _short(names, limit=8):
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


class ModuleList(Module):
    """An ordered list of modules whose parameters are named by index: "layers.0...", "layers.1..."."""

    def __init__(self, modules=()):
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __len__(self):
        return sum(1 for _ in self.named_children())

    def __iter__(self):
        return iter(self.children())

    def __getitem__(self, i):
        return self.children()[i]


# ---- the building blocks ----------------------------------------------------------------------------

class Linear(Module):
    """y = x W^T + b, W of shape (out, in) as PyTorch and the weight files store it.
    Initialised N(0, 0.02), bias 0 (BERT's initialisation)."""

    def __init__(self, in_features, out_features, bias=True, std=0.02):
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(backend.host_normal((out_features, in_features), std))
        self.bias = Parameter(xp.zeros(out_features, dtype=xp.float32)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def __repr__(self):
        return f"Linear({self.in_features} -> {self.out_features}, bias={self.bias is not None})"


class Embedding(Module):
    def __init__(self, num_embeddings, dim, std=0.02):
        self.weight = Parameter(backend.host_normal((num_embeddings, dim), std))

    def forward(self, ids):
        return F.embedding(ids, self.weight)


class LayerNorm(Module):
    def __init__(self, dim, eps=1e-5):
        self.eps = eps
        self.weight = Parameter(xp.ones(dim, dtype=xp.float32))
        self.bias = Parameter(xp.zeros(dim, dtype=xp.float32))

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    def __init__(self, p):
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


def kaiming_uniform(shape, fan_in):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default Linear init (Kaiming-uniform, a=sqrt(5)),
    which LoRA uses for A."""
    bound = 1.0 / math.sqrt(fan_in)
    return backend.host_uniform(shape, -bound, bound)
