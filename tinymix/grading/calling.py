"""How a task's function is called on one case, the same way for the reference (in the grader) and for
a submission (in its own process).

    plain call:  value = fn(*args)
    gradients:   out = fn(*args), a Tensor; then sum(out * r).backward() for a fixed r, and the answer
                 is {"output": out, "d/d<name>": the gradient of each Leaf input}
    repeat n:    [fn(*args) for n calls], the same args each time (routes drawn from one generator)

This module runs in the submission's process: it imports nothing of tinymix but the backend (and
tinymix.tensor when a case differentiates, which only assignments built on Tensor do).
"""
import inspect
import math
import traceback
from pathlib import Path

from .. import backend
from .wire import NoGrad


class NotATensor(Exception):
    """A function that must return a Tensor (its gradients are checked) returned something else."""


def projection(shape):
    """A fixed, non-trivial r: gradients are those of sum(out * r), so every output element counts."""
    xp = backend.xp
    return xp.cos(xp.arange(math.prod(shape), dtype=xp.float64) * 1.3 + 0.5).reshape(shape)


def call(fn, inputs, gradients=False, repeat=0):
    """The answer of `fn` on decoded `inputs` (wire.Inputs), as the module docstring describes."""
    if repeat:
        return [fn(*inputs.args) for _ in range(repeat)]
    out = fn(*inputs.args)
    if not gradients:
        return out
    from ..tensor import Tensor
    if not isinstance(out, Tensor):
        raise NotATensor(f"returned {type(out).__name__}, expected a Tensor: gradients flow only through "
                         "Tensor operations")
    if out.requires_grad:
        (out * Tensor(projection(out.shape), dtype=backend.xp.float64)).sum().backward()
    answer = {"output": out}
    for name, leaf in inputs.leaves:
        answer[f"d/d{name}"] = leaf.grad if leaf.grad is not None else NoGrad(leaf.shape)
    return answer


def parameters(fn):
    """[[name, kind, repr of the default or None], ...]: a def line, comparable across processes."""
    return [[p.name, p.kind.name, None if p.default is p.empty else repr(p.default)]
            for p in inspect.signature(fn).parameters.values()]


def describe_exception(error, source_name=None):
    """{"type", "message", "where", "not_implemented"} for an exception a function raised; "where" is
    the deepest line of the submission's file in the traceback: `a2_x.py line 41: return g * y`."""
    try:
        message = str(error)
    except BaseException:  # an exception whose message cannot be made
        message = ""
    where = None
    frames = traceback.extract_tb(error.__traceback__)
    if source_name is not None:
        frames = [f for f in frames if f.filename == source_name]
    if frames:
        f = frames[-1]
        where = f"{Path(f.filename).name} line {f.lineno}: {f.line}"
    return {"type": type(error).__name__, "message": message[:500], "where": where,
            "not_implemented": isinstance(error, NotImplementedError)}


def exception_text(info):
    """`TypeError: message (a2_x.py line 41: return g * y)` from describe_exception's dict."""
    text = f"{info.get('type', 'an exception')}: {info.get('message', '')}".rstrip(": ")
    return text + (f" ({info['where']})" if info.get("where") else "")
