"""Optimizers (SGD, AdamW), learning-rate schedules and gradient clipping, on raw xp arrays.

An optimizer takes the parameters as
- Tensors:                      AdamW(model.parameters())
- (name, Tensor) pairs:         AdamW(model.named_parameters())   -- names key the saved state
- groups, to exempt some from weight decay (biases, LayerNorm):
                                AdamW([{"params": weights}, {"params": biases, "weight_decay": 0.0}])

One training step:

    loss.backward()
    clip_grad_norm(params, 1.0)
    optimizer.lr = base_lr * linear_warmup_decay(step, warmup_steps, total_steps)  # or scheduler.step()
    optimizer.step()
    optimizer.zero_grad()

Frozen weights (requires_grad False) are never touched. A parameter's state (step count, moments) is
made at its first gradient, so frozen weights cost no optimizer memory, and a parameter that has never
received a gradient is skipped. What happens on a step where a parameter that HAS state received no
gradient (an AdaMix expert that was not routed this step) is the `lazy` choice:
- lazy=False (default, "dense"): it is updated with a zero gradient — Adam's momentum keeps moving it
  and weight decay shrinks it. This is what the official AdaMix code does: on PyTorch 1.x, zero_grad()
  filled gradients with zeros, so an expert routed once was stepped at every later step.
- lazy=True: it is left alone, as if the step had not happened for it (a sparse-expert optimizer;
  also what PyTorch >= 2 does, whose zero_grad() sets gradients to None).
Updates work in place on `p.data`, with Python floats as scalars, so float32 parameters stay float32.
"""
import math

from .backend import xp
from .tensor import Tensor


class Optimizer:
    """The plumbing shared by every optimizer: parameter groups, per-parameter state made at first use,
    zero_grad and state_dict. A subclass writes the math in `update(p, grad, state, lr, weight_decay)`."""

    hyperparameters = ("lr",)  # the settings saved in state_dict (a subclass lists its own)

    def __init__(self, params, lr, weight_decay, lazy=False):
        self.lr = lr
        self.lazy = bool(lazy)
        self.groups = _param_groups(params, weight_decay)  # [{"weight_decay": wd, "params": {name: Tensor}}]
        self.state = {}  # name -> {"step": number of updates, buffer name -> xp array}

    def step(self):
        lr = float(self.lr)  # a NumPy float64 lr would turn the float32 arithmetic into float64
        for group in self.groups:
            for name, p in group["params"].items():
                if not p.requires_grad:
                    continue
                grad = p.grad
                if grad is None:                      # e.g. an AdaMix expert not routed this step
                    if self.lazy or name not in self.state:
                        continue
                    grad = xp.zeros_like(p.data)      # dense: a step with a zero gradient
                state = self.state.setdefault(name, {"step": 0})
                state["step"] += 1
                self.update(p, grad, state, lr, group["weight_decay"])

    def update(self, p, grad, state, lr, weight_decay):
        raise NotImplementedError

    def zero_grad(self):
        for group in self.groups:
            for p in group["params"].values():
                p.grad = None

    # ---- checkpoints ------------------------------------------------------------------------------

    def state_dict(self):
        """Plain data: "arrays" (name.buffer -> xp array) for safetensors, everything else for JSON.
        The arrays are copies: later steps do not change a state that was already taken."""
        return {
            "hyperparameters": {key: _plain(getattr(self, key)) for key in self.hyperparameters},
            "groups": [{"weight_decay": group["weight_decay"],
                        "params": {name: list(p.shape) for name, p in group["params"].items()}}
                       for group in self.groups],
            "steps": {name: state["step"] for name, state in self.state.items()},
            "arrays": {f"{name}.{buffer}": value.copy() for name, state in self.state.items()
                       for buffer, value in state.items() if buffer != "step"},
        }

    def load_state_dict(self, saved):
        """Restore a state_dict (arrays may be host NumPy arrays), settings and weight decays included.
        Everything is checked before anything changes: a state saved for other parameters or by
        another optimizer is an error."""
        kind = type(self).__name__
        if sorted(saved["hyperparameters"]) != sorted(self.hyperparameters):
            raise ValueError(f"this state has the settings {sorted(saved['hyperparameters'])}, but {kind} "
                             f"has {sorted(self.hyperparameters)}: it was saved by another optimizer")
        saved_layout = [{name: list(shape) for name, shape in g["params"].items()} for g in saved["groups"]]
        layout = [{name: list(p.shape) for name, p in g["params"].items()} for g in self.groups]
        if saved_layout != layout:
            raise ValueError(f"this optimizer state was saved for other parameters: "
                             f"{_layout_difference(saved_layout, layout)}")
        params = {name: p for group in self.groups for name, p in group["params"].items()}
        unknown = [name for name in saved["steps"] if name not in params]
        if unknown:
            raise ValueError(f"this optimizer state has step counts for unknown parameters {unknown}")
        for key, value in saved["arrays"].items():
            name = key.rsplit(".", 1)[0]
            if name not in saved["steps"]:
                raise ValueError(f"state array {key!r} belongs to no parameter with a step count")
            if tuple(value.shape) != params[name].shape:
                raise ValueError(f"state array {key!r} has shape {tuple(value.shape)}, but parameter "
                                 f"{name!r} has shape {params[name].shape}")

        for key, value in saved["hyperparameters"].items():
            setattr(self, key, tuple(value) if isinstance(value, list) else value)
        for group, saved_group in zip(self.groups, saved["groups"]):
            group["weight_decay"] = float(saved_group["weight_decay"])
        self.state = {name: {"step": int(step)} for name, step in saved["steps"].items()}
        for key, value in saved["arrays"].items():
            name, buffer = key.rsplit(".", 1)
            # a copy on the device, so later in-place updates never write into the caller's arrays
            self.state[name][buffer] = xp.array(value, dtype=params[name].dtype)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay (added to the gradient)."""

    hyperparameters = ("lr", "momentum")

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, lazy=False):
        super().__init__(params, lr, weight_decay, lazy)
        self.momentum = float(momentum)

    def update(self, p, grad, state, lr, weight_decay):
        """g = grad + wd p;   v = momentum v + g  (v starts as g);   p -= lr v"""
        if weight_decay:
            grad = grad + weight_decay * p.data
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                state["momentum_buffer"] *= self.momentum
                state["momentum_buffer"] += grad
            grad = state["momentum_buffer"]
        p.data -= lr * grad


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter): the decay shrinks p directly instead
    of being added to the gradient, so Adam's per-coordinate scaling does not weaken it."""

    hyperparameters = ("lr", "betas", "eps")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, lazy=False):
        super().__init__(params, lr, weight_decay, lazy)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)

    def update(self, p, grad, state, lr, weight_decay):
        """m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr wd p;  p -= lr m^ / (sqrt(v^) + eps),
        with m^ = m / (1 - b1^t), v^ = v / (1 - b2^t) and t this parameter's step count"""
        beta1, beta2 = self.betas
        if "exp_avg" not in state:
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * grad
        v *= beta2
        v += (1.0 - beta2) * (grad * grad)
        t = state["step"]
        if weight_decay:
            p.data *= 1.0 - lr * weight_decay
        # m^ / (sqrt(v^) + eps) with both corrections as Python floats (no float64 arrays)
        p.data -= (lr / (1.0 - beta1 ** t)) * m / (xp.sqrt(v) / math.sqrt(1.0 - beta2 ** t) + self.eps)


# ---- learning-rate schedules ---------------------------------------------------------------------

def linear_warmup_decay(step, warmup_steps, total_steps):
    """step / warmup while warming up, then (total - step) / (total - warmup), down to 0 at total."""
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def cosine_warmup_decay(step, warmup_steps, total_steps):
    """step / warmup while warming up, then (1 + cos(pi progress)) / 2 with progress 0 -> 1 at total."""
    if step < warmup_steps:
        return step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class LRScheduler:
    """Sets optimizer.lr = base_lr * fn(step); `step()` after each optimizer step moves to the next.

        scheduler = LRScheduler(optimizer, lambda s: linear_warmup_decay(s, 100, 1000))

    As in PyTorch the first optimizer step runs at fn(0), which is 0 during a warm-up."""

    def __init__(self, optimizer, fn, base_lr=None):
        self.optimizer, self.fn = optimizer, fn
        self.base_lr = optimizer.lr if base_lr is None else base_lr
        self.step_count = 0
        self.optimizer.lr = self.base_lr * fn(0)

    def step(self):
        self.step_count += 1
        self.optimizer.lr = self.base_lr * self.fn(self.step_count)


# ---- gradient clipping ---------------------------------------------------------------------------

def clip_grad_norm(params, max_norm, as_float=True):
    """Scale all gradients together so that ||g|| = sqrt(sum of g^2 over every gradient) <= max_norm.
    Returns ||g|| before clipping. As a Python float it waits for the GPU to finish (a sync); with
    as_float=False it is a 0-d xp array and nothing waits. Gradients are replaced, not written in
    place, because a gradient array may be shared with another tensor."""
    tensors = [p for p in _tensors(params) if p.requires_grad and p.grad is not None]
    if not tensors:
        return 0.0 if as_float else xp.zeros((), dtype=xp.float32)
    # xp.asarray: NumPy reductions give scalars, and the promised result is a 0-d array
    norm = xp.asarray(xp.sqrt(sum((p.grad * p.grad).sum() for p in tensors)))
    # scale = 1 below max_norm; multiplying always, rather than testing the norm in Python, avoids a sync
    scale = xp.minimum(max_norm / (norm + 1e-6), 1.0)
    for p in tensors:
        p.grad = p.grad * scale
    return float(norm) if as_float else norm


# ---- parameters ----------------------------------------------------------------------------------

def _param_groups(params, weight_decay):
    """Tensors, (name, Tensor) pairs or group dicts -> [{"weight_decay": wd, "params": {name: Tensor}}].
    Unnamed parameters are named by their position: "0", "1", ..."""
    params = list(params)
    if not params:
        raise ValueError("the optimizer got no parameters")
    groups = params if isinstance(params[0], dict) else [{"params": params}]
    result, seen, position = [], set(), 0
    for group in groups:
        if not isinstance(group, dict) or set(group) - {"params", "weight_decay"}:
            raise ValueError('parameter groups are dicts {"params": [...], "weight_decay": number}, '
                             f"got {group!r:.80}")
        named = {}
        for item in group["params"]:
            name, p = item if isinstance(item, tuple) else (str(position), item)
            position += 1
            if not isinstance(p, Tensor):
                raise TypeError(f"parameter {name!r} is a {type(p).__name__}, not a Tensor")
            if id(p) in seen or any(name in g["params"] for g in result) or name in named:
                raise ValueError(f"parameter {name!r} is given twice")
            seen.add(id(p))
            named[name] = p
        result.append({"weight_decay": float(group.get("weight_decay", weight_decay)), "params": named})
    return result


def _tensors(params):
    """The Tensors in any of the forms an optimizer takes."""
    for item in params:
        if isinstance(item, dict):
            yield from _tensors(item["params"])
        else:
            yield item[1] if isinstance(item, tuple) else item


def _plain(value):
    """A setting as JSON-able Python floats (a tuple such as betas becomes a list)."""
    return [float(v) for v in value] if isinstance(value, tuple) else float(value)


def _layout_difference(saved, current):
    """Say how two [{name: shape}] group layouts differ, for the error message."""
    if len(saved) != len(current):
        return f"{len(saved)} parameter groups were saved, this optimizer has {len(current)}"
    saved_all = {name: shape for group in saved for name, shape in group.items()}
    current_all = {name: shape for group in current for name, shape in group.items()}
    missing = [name for name in current_all if name not in saved_all]
    unexpected = [name for name in saved_all if name not in current_all]
    reshaped = [f"{name} {tuple(saved_all[name])} -> {tuple(current_all[name])}"
                for name in current_all if name in saved_all and saved_all[name] != current_all[name]]
    parts = [f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else "",
             f"shapes differ: {', '.join(reshaped)}" if reshaped else ""]
    return "; ".join(part for part in parts if part) or "the parameters sit in different groups"
