"""The assignments' one source of truth (instructor side): every task's contract, answer and checks.

A task is one small function. Its REFERENCE is defined here, and
- its def line and docstring are the contract: the student's stub in lessons/assignments/ repeats them
  word for word (`python -m tinymix.grade --check-stubs` verifies it);
- its body asks the library for the answer (a fused op's autograd, a module's forward, adamix's
  merge), so the answer key cannot drift from tinymix itself;
- its checks, defined beside it, are seeded cases on which the student's function must agree with
  the reference (`Compare`), and properties it must have on its own (`Verify`): central-difference
  gradient checks, routes equal to the library Mixture's, uniform routing.

Inputs are float64 (a wrong formula then differs by far more than the 1e-6 tolerance) and drawn from
host generators of their own, so a seed gives the same case on NumPy and on CuPy.
"""
import copy
import math
import numbers
from dataclasses import dataclass
from typing import Callable

from . import adamix, backend
from . import functional as F
from .backend import xp
from .gradcheck import gradcheck
from .nn import Linear, Module
from .peft import Adapter, LoRALinear
from .tensor import Tensor
from .transformer import Attention, TransformerConfig

F64 = xp.float64


# ---- the pieces of a task ---------------------------------------------------------------------------

class Mismatch(AssertionError):
    """A check failed; the message says where, with the expected and the actual values."""


@dataclass
class Compare:
    """`run(fn)` is called with the reference and with the student's function, on the same seed;
    the two results (arrays, tuples, dicts of output and gradients) must agree."""
    label: str
    run: Callable


@dataclass
class Verify:
    """`run(fn)` is called with the student's function alone and raises Mismatch if a property fails."""
    label: str
    run: Callable


@dataclass
class Task:
    id: str              # "A2.4": assignment A2, task 4
    reference: Callable  # the contract (def line + docstring) and the answer (the library)
    points: int
    todo: str            # what the stub's NotImplementedError says to do ...
    hint: str            # ... and how
    checks: Callable     # () -> [Compare | Verify, ...]
    outputs: tuple = ()  # names of the values a tuple-returning function gives, for failure messages

    @property
    def name(self):
        return self.reference.__name__

    @property
    def stub_message(self):
        return f"Task {self.id}: {self.todo} — hint: {self.hint}"


@dataclass
class Assignment:
    id: str
    title: str
    filename: str        # the student file in lessons/assignments/
    tasks: list

    @property
    def points(self):
        return sum(task.points for task in self.tasks)


# ---- inputs and outputs of checks -------------------------------------------------------------------

def rand(shape, seed, scale=1.0, dtype="float64"):
    """N(0, scale^2) of `shape`, from a host generator of its own (same values on every backend)."""
    values = backend.host_generator(seed).standard_normal(shape) * scale
    return backend.from_numpy(backend.to_numpy(values).astype(dtype))


def labels(n, classes, seed):
    """n integer class labels in [0, classes), from a host generator of its own."""
    return backend.from_numpy(backend.host_generator(seed).integers(classes, size=n))


def leaf(array):
    """A Tensor that requires grad and keeps the array's dtype (Tensor() alone makes float64 float32)."""
    return Tensor(array, requires_grad=True, dtype=array.dtype)


class NoGrad:
    """Stands for the gradient of an input that no gradient reached (`.grad` is None)."""

    def __init__(self, shape):
        self.shape = shape


def _projection(shape):
    """A fixed, non-trivial r: gradients are those of sum(out * r), so every output element counts."""
    size = math.prod(shape)
    return xp.cos(xp.arange(size, dtype=F64) * 1.3 + 0.5).reshape(shape)


def differentiate(out, **inputs):
    """{"output": out, "d/d<name>": gradient of sum(out * r) w.r.t. each named input Tensor}."""
    if not isinstance(out, Tensor):
        raise Mismatch(f"returned {type(out).__name__}, expected a Tensor: gradients flow only through "
                       "Tensor operations")
    if out.requires_grad:
        (out * Tensor(_projection(out.shape), dtype=F64)).sum().backward()
    result = {"output": out.data}
    for name, t in inputs.items():
        result[f"d/d{name}"] = t.grad if t.grad is not None else NoGrad(t.shape)
    return result


def gradcheck_backward(forward, backward, **inputs):
    """tinymix.gradcheck (central differences) on an op whose forward is the library's and whose
    backward is the function under test. forward(**arrays) -> array; backward(g, **arrays) -> one
    gradient per input, in the order given. The op is made as functional.py makes its fused ops."""
    names = list(inputs)

    def op(*tensors):
        arrays = dict(zip(names, (t.data for t in tensors)))

        def backward_fn(g):
            grads = backward(g, **arrays)
            grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
            if len(grads) != len(names):
                raise Mismatch(f"returned {len(grads)} gradients, expected {len(names)} ({', '.join(names)})")
            for name, t, grad in zip(names, tensors, grads):
                grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad)
                if grad.shape != t.shape:
                    raise Mismatch(f"the gradient of {name} has shape {grad.shape}, expected {t.shape}")
                t._accumulate(grad)
        return Tensor._make(xp.asarray(forward(**arrays)), tensors, backward_fn)

    try:
        gradcheck(op, *(leaf(array) for array in inputs.values()))
    except Mismatch:
        raise
    except AssertionError as error:
        message = str(error)
        for i, name in enumerate(names):
            message = message.replace(f"input {i} ", f"input {name} ")
        raise Mismatch(f"central differences disagree: {message}") from None


def _linear(weight, bias=None):
    """A library Linear that uses the given Tensors as its weight (out, in) and bias, so gradients
    reach them and float64 stays float64."""
    out_features, in_features = weight.shape
    layer = Linear(in_features, out_features, bias=bias is not None)
    layer.weight, layer.bias = weight, bias
    return layer


def _shape(shape):
    return str(tuple(shape))


# ---- A1: autograd primitives and broadcasting gradients ---------------------------------------------

def unbroadcast(grad, shape):
    """Sum `grad` back to `shape`, the shape of an input that broadcasting stretched or extended.

    grad: array of the broadcast (output) shape; shape: a tuple that broadcasts to grad.shape.
    Returns an array of exactly `shape`: that input's gradient."""
    x = leaf(xp.zeros(shape, dtype=grad.dtype))
    (x + Tensor(xp.zeros(grad.shape, dtype=grad.dtype), dtype=grad.dtype)).backward(grad)
    return x.grad


def _unbroadcast_checks():
    cases = [((2, 3, 4), (3, 4)), ((2, 3, 4), (1, 4)), ((2, 3, 4), (3, 1)), ((2, 3, 4), (2, 1, 4)),
             ((2, 3, 4), ()), ((2, 3, 4), (1, 1, 1)), ((3, 4), (3, 4)), ((5, 4, 3), (4, 1))]
    checks = [Compare(f"grad {_shape(g)} -> shape {s}", lambda fn, g=g, s=s: fn(rand(g, i), s))
              for i, (g, s) in enumerate(cases)]
    checks.append(Verify("gradcheck of broadcast_to(x (3, 1), (2, 3, 4))", lambda fn: gradcheck_backward(
        lambda x: xp.broadcast_to(x, (2, 3, 4)) * 1.0, lambda g, x: fn(g, x.shape), x=rand((3, 1), 9))))
    return checks


def mul_backward(g, a, b):
    """Gradients of out = a * b (NumPy broadcasting) from the upstream gradient g = dL/dout.

    g: array of out's shape; a, b: the inputs. Returns (da, db) with the shapes of a and b."""
    A, B = leaf(a), leaf(b)
    (A * B).backward(g)
    return A.grad, B.grad


def _mul_checks():
    cases = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (3,)), ((2, 3), (1,))]
    checks = []
    for i, (sa, sb) in enumerate(cases):
        def run(fn, sa=sa, sb=sb, i=i):
            a, b = rand(sa, 10 * i), rand(sb, 10 * i + 1)
            return fn(rand((a * b).shape, 10 * i + 2), a, b)
        checks.append(Compare(f"a {_shape(sa)} * b {_shape(sb)}", run))
    for sa, sb in cases[1:3]:
        def run_gradcheck(fn, sa=sa, sb=sb):
            gradcheck_backward(lambda a, b: a * b, lambda g, a, b: fn(g, a, b), a=rand(sa, 3), b=rand(sb, 4))
        checks.append(Verify(f"gradcheck of a {_shape(sa)} * b {_shape(sb)}", run_gradcheck))
    return checks


def sum_backward(g, shape, axis=None, keepdims=False):
    """Gradient of out = x.sum(axis=axis, keepdims=keepdims) from g = dL/dout.

    shape: x's shape; axis: None (all axes), an int (may be negative) or a tuple of ints.
    Returns dx, an array of `shape`."""
    x = leaf(xp.zeros(shape, dtype=g.dtype))
    x.sum(axis=axis, keepdims=keepdims).backward(g)
    return x.grad


def _sum_checks():
    cases = [((3, 4), None, False), ((3, 4), 0, False), ((3, 4), -1, True), ((2, 3, 4), (0, 2), False),
             ((2, 3, 4), 1, True), ((2, 3, 4), None, True)]
    checks = []
    for i, (shape, axis, keepdims) in enumerate(cases):
        def run(fn, shape=shape, axis=axis, keepdims=keepdims, i=i):
            g = rand(xp.zeros(shape).sum(axis=axis, keepdims=keepdims).shape, i)
            return fn(g, shape, axis, keepdims)
        checks.append(Compare(f"x {_shape(shape)}, axis={axis}, keepdims={keepdims}", run))
    checks.append(Verify("gradcheck of x (2, 3, 4).sum(axis=(0, 2))", lambda fn: gradcheck_backward(
        lambda x: xp.asarray(x.sum(axis=(0, 2))), lambda g, x: fn(g, x.shape, (0, 2), False),
        x=rand((2, 3, 4), 5))))
    return checks


def matmul_backward(g, a, b):
    """Gradients of out = a @ b, where a (..., n, k) and b (..., k, m) may carry broadcast batch axes
    (a 2-D b is one weight shared by every batch element). g: (..., n, m).
    Returns (da, db) with the shapes of a and b."""
    A, B = leaf(a), leaf(b)
    (A @ B).backward(g)
    return A.grad, B.grad


def _matmul_checks():
    cases = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((3, 4), (2, 4, 5)),
             ((2, 1, 3, 4), (5, 4, 2))]
    checks = []
    for i, (sa, sb) in enumerate(cases):
        def run(fn, sa=sa, sb=sb, i=i):
            a, b = rand(sa, 10 * i), rand(sb, 10 * i + 1)
            return fn(rand((a @ b).shape, 10 * i + 2), a, b)
        checks.append(Compare(f"a {_shape(sa)} @ b {_shape(sb)}", run))
    checks.append(Verify("gradcheck of a (2, 3, 4) @ b (4, 2)", lambda fn: gradcheck_backward(
        lambda a, b: a @ b, lambda g, a, b: fn(g, a, b), a=rand((2, 3, 4), 7), b=rand((4, 2), 8))))
    return checks


# ---- A2: softmax, cross-entropy and layer-norm backward ---------------------------------------------

def softmax_backward(g, y, axis=-1):
    """Gradient of y = softmax(x, axis) w.r.t. x, from g = dL/dy and the OUTPUT y (all a fused
    softmax keeps for its backward). g, y: arrays of one shape. Returns dx, of that shape."""
    # softmax(log y) = y, and the gradient ignores the constant by which log y differs from x
    x = leaf(xp.log(y))
    F.softmax(x, axis=axis).backward(g)
    return x.grad


def _softmax(x, axis=-1):
    return F.softmax(Tensor(x, dtype=x.dtype), axis=axis).data


def _softmax_checks():
    cases = [((5,), -1, 1.0), ((3, 7), -1, 1.0), ((2, 3, 4), 1, 1.0), ((4, 6), -1, 8.0)]
    checks = [Compare(f"x {_shape(s)} (scale {scale}), axis={axis}",
                      lambda fn, s=s, axis=axis, scale=scale, i=i:
                      fn(rand(s, 2 * i + 1), _softmax(rand(s, 2 * i, scale), axis), axis))
              for i, (s, axis, scale) in enumerate(cases)]
    checks.append(Verify("gradcheck of softmax(x (3, 4))", lambda fn: gradcheck_backward(
        _softmax, lambda g, x: fn(g, _softmax(x)), x=rand((3, 4), 11))))
    return checks


def cross_entropy_backward(logits, targets, label_smoothing=0.0):
    """Gradient of the mean cross-entropy loss w.r.t. the logits.

    logits: (N, C) array; targets: (N,) integer classes; label_smoothing eps in [0, 1): the target
    distribution puts 1 - eps on the class and spreads eps evenly over all C classes.
    Returns dloss/dlogits, (N, C)."""
    z = leaf(logits)
    F.cross_entropy(z, targets, label_smoothing=label_smoothing).backward()
    return z.grad


def _cross_entropy_checks():
    cases = [(5, 4, 0.0, 1.0), (3, 7, 0.1, 1.0), (1, 2, 0.0, 1.0), (6, 3, 0.2, 5.0)]
    checks = [Compare(f"logits {n}x{c} (scale {scale}), label_smoothing={eps}",
                      lambda fn, n=n, c=c, eps=eps, scale=scale, i=i:
                      fn(rand((n, c), i, scale), labels(n, c, 100 + i), eps))
              for i, (n, c, eps, scale) in enumerate(cases)]
    for eps in (0.0, 0.1):
        t = labels(4, 3, 7)
        checks.append(Verify(f"gradcheck of cross_entropy(logits 4x3), label_smoothing={eps}",
                             lambda fn, eps=eps, t=t: gradcheck_backward(
                                 lambda z: F.cross_entropy(Tensor(z, dtype=F64), t, label_smoothing=eps).data,
                                 lambda g, z: g * fn(z, t, eps), z=rand((4, 3), 12))))
    return checks


def layer_norm_forward(x, weight, bias, eps=1e-5):
    """Layer norm over the last axis, returning what its backward needs.

    x: (..., C); weight, bias: (C,). With mean and var the mean and (biased) variance of x along the
    last axis, returns (out, xhat, rstd): rstd = 1 / sqrt(var + eps), shape (..., 1);
    xhat = (x - mean) * rstd, shape (..., C); out = xhat * weight + bias, shape (..., C)."""
    X = Tensor(x, dtype=x.dtype)
    out = F.layer_norm(X, Tensor(weight, dtype=x.dtype), Tensor(bias, dtype=x.dtype), eps)
    xhat = F.layer_norm(X, None, None, eps)
    rstd = 1.0 / xp.sqrt(x.var(axis=-1, keepdims=True) + eps)
    return out.data, xhat.data, rstd


def _layer_norm_cases():
    """(label, x, weight, bias, eps) on a few shapes, scales, offsets and a large eps."""
    cases = [((4, 6), 1.0, 0.0, 1e-5), ((2, 3, 8), 3.0, 5.0, 1e-5), ((3, 5), 0.5, -2.0, 0.1)]
    for i, (shape, scale, offset, eps) in enumerate(cases):
        C = shape[-1]
        yield (f"x {_shape(shape)} (scale {scale}, offset {offset}), eps={eps}",
               rand(shape, 20 + i, scale) + offset, 1.0 + rand((C,), 30 + i, 0.5), rand((C,), 40 + i), eps)


def _layer_norm_forward_checks():
    return [Compare(label, lambda fn, x=x, w=w, b=b, eps=eps: fn(x.copy(), w.copy(), b.copy(), eps))
            for label, x, w, b, eps in _layer_norm_cases()]


def layer_norm_backward(g, xhat, rstd, weight):
    """Backward of out = xhat * weight + bias, xhat = (x - mean) * rstd, from g = dL/dout (..., C)
    and the cache (xhat, rstd) that layer_norm_forward returns; weight: (C,).
    Returns (dx, dweight, dbias): dx (..., C), dweight (C,), dbias (C,)."""
    # dx depends on x only through (xhat, rstd): rebuild an x with this cache (x = xhat / rstd, mean 0,
    # and the eps for which 1 / sqrt(var + eps) = rstd) and let autograd run the library's layer norm.
    xhat, rstd = xhat.astype(F64), rstd.astype(F64)
    eps = float(((1.0 - (xhat * xhat).mean(axis=-1, keepdims=True)) / (rstd * rstd)).mean())
    x, w = leaf(xhat / rstd), leaf(weight.astype(F64))
    b = leaf(xp.zeros_like(w.data))
    F.layer_norm(x, w, b, eps).backward(g.astype(F64))
    return x.grad.astype(g.dtype), w.grad.astype(g.dtype), b.grad.astype(g.dtype)


def _layer_norm_backward_checks():
    checks = []
    for i, (label, x, w, b, eps) in enumerate(_layer_norm_cases()):
        def run(fn, x=x, w=w, b=b, eps=eps, i=i):
            _, xhat, rstd = layer_norm_forward(x, w, b, eps)
            return fn(rand(x.shape, 50 + i), xhat, rstd, w.copy())
        checks.append(Compare(label, run))

    def run_gradcheck(fn):
        def backward(g, x, weight, bias):
            _, xhat, rstd = layer_norm_forward(x, weight, bias, 0.1)
            return fn(g, xhat, rstd, weight)
        gradcheck_backward(lambda x, weight, bias: layer_norm_forward(x, weight, bias, 0.1)[0], backward,
                           x=rand((3, 5), 60), weight=1.0 + rand((5,), 61, 0.5), bias=rand((5,), 62))
    checks.append(Verify("gradcheck of layer_norm(x (3, 5), weight, bias), eps=0.1", run_gradcheck))
    return checks


# ---- A3: multi-head attention -----------------------------------------------------------------------
# transformer.Attention.forward does these steps inline; the references below are its lines, and
# A3.3 is graded against the Attention module itself.

def split_heads(x, num_heads):
    """Split the channels of x, a Tensor (B, T, C), into num_heads heads of D = C / num_heads channels:
    returns a Tensor (B, H, T, D) whose head h holds channels h*D .. (h+1)*D - 1, the layout
    transformer.Attention uses."""
    B, T, C = x.shape
    return x.reshape(B, T, num_heads, C // num_heads).transpose(0, 2, 1, 3)


def _split_heads_checks():
    cases = [((2, 3, 8), 2), ((1, 4, 6), 3), ((2, 2, 4), 1), ((1, 2, 4), 4)]
    return [Compare(f"x {_shape(s)}, num_heads={h}", lambda fn, s=s, h=h, i=i: _differentiate_x(fn, s, h, i))
            for i, (s, h) in enumerate(cases)]


def _differentiate_x(fn, shape, num_heads, seed):
    x = leaf(rand(shape, seed))
    return differentiate(fn(x, num_heads), x=x)


def scaled_dot_product_attention(q, k, v, mask_bias):
    """softmax(q k^T / sqrt(D) + mask_bias) v for every batch element and head.

    q, k, v: Tensors (B, H, T, D); mask_bias: an array that broadcasts to (B, H, T, T), 0 where a
    query may look at a key and -1e9 where it may not. Returns a Tensor (B, H, T, D)."""
    D = q.shape[-1]
    scores = (q * (1.0 / math.sqrt(D))) @ k.transpose(0, 1, 3, 2) + mask_bias    # (B, H, T, T)
    return F.softmax(scores, axis=-1) @ v                                         # (B, H, T, D)


def _mask_biases(B, T):
    """(label, mask_bias): no mask, padding (the last key of batch element 1 is a pad), causal."""
    padding = xp.zeros((B, 1, 1, T), dtype=F64)
    padding[-1, 0, 0, -1] = -1e9
    causal = xp.where(xp.triu(xp.ones((T, T), dtype=bool), k=1), -1e9, 0.0).astype(F64)[None, None]
    return [("no mask", xp.zeros((1, 1, 1, T), dtype=F64)), ("padding mask", padding),
            ("causal mask", causal)]


def _attention_checks():
    B, H, T, D = 2, 2, 4, 3
    checks = []
    for i, (label, mask) in enumerate(_mask_biases(B, T)):
        def run(fn, mask=mask, i=i):
            q, k, v = (leaf(rand((B, H, T, D), 10 * i + j)) for j in range(3))
            return differentiate(fn(q, k, v, mask.copy()), q=q, k=k, v=v)
        checks.append(Compare(f"q, k, v {_shape((B, H, T, D))}, {label}", run))
    return checks


def multi_head_attention(x, params, num_heads, mask_bias):
    """The forward pass of transformer.Attention without dropout.

    x: Tensor (B, T, C). params: Tensors named as Attention's parameters: "query.weight" (C, C),
    "query.bias" (C,), and likewise for "key", "value" and "output"; weights are stored (out, in), so a
    projection is x @ weight.T + bias. mask_bias: as in scaled_dot_product_attention.
    Returns a Tensor (B, T, C)."""
    C = x.shape[-1]
    attention = Attention(TransformerConfig(hidden_size=C, num_heads=num_heads, dropout=0.0)).eval()
    for name in ("query", "key", "value", "output"):
        setattr(attention, name, _linear(params[f"{name}.weight"], params[f"{name}.bias"]))
    return attention(x, mask_bias)


def _multi_head_attention_checks():
    checks = []
    for i, (B, T, C, H) in enumerate([(2, 4, 6, 2), (1, 3, 8, 4)]):
        for label, mask in _mask_biases(B, T)[i:i + 2]:
            def run(fn, B=B, T=T, C=C, H=H, mask=mask, i=i):
                x = leaf(rand((B, T, C), i))
                params = {}
                for j, name in enumerate(("query", "key", "value", "output")):
                    params[f"{name}.weight"] = leaf(rand((C, C), 10 * j + 1, 0.5))
                    params[f"{name}.bias"] = leaf(rand((C,), 10 * j + 2, 0.5))
                return differentiate(fn(x, params, H, mask.copy()), x=x, **params)
            checks.append(Compare(f"x {_shape((B, T, C))}, num_heads={H}, {label}", run))
    return checks


# ---- A4: adapter and LoRA, merge and unmerge ---------------------------------------------------------

def adapter_forward(h, params):
    """A bottleneck adapter (peft.Adapter): h + up(gelu(down(h))).

    h: Tensor (..., d). params: Tensors "down.weight" (r, d), "down.bias" (r,), "up.weight" (d, r),
    "up.bias" (d,); weights are stored (out, in). gelu is the exact (erf) form,
    tinymix.functional.gelu. Returns a Tensor (..., d)."""
    adapter = Adapter(_linear(params["down.weight"], params["down.bias"]),
                      _linear(params["up.weight"], params["up.bias"]))
    return adapter(h)


def _adapter_checks():
    checks = []
    for i, (shape, r) in enumerate([((2, 3, 6), 2), ((4, 5), 3)]):
        def run(fn, shape=shape, r=r, i=i):
            d = shape[-1]
            h = leaf(rand(shape, i))
            params = {"down.weight": leaf(rand((r, d), 10 + i)), "down.bias": leaf(rand((r,), 20 + i)),
                      "up.weight": leaf(rand((d, r), 30 + i)), "up.bias": leaf(rand((d,), 40 + i))}
            return differentiate(fn(h, params), h=h, **params)
        checks.append(Compare(f"h {_shape(shape)}, bottleneck r={r}", run))
    return checks


def _lora_layer(weight, bias, lora_A, lora_B, scaling):
    """A library LoRALinear (no dropout, eval mode) around the given Tensors."""
    rank = lora_A.shape[0]
    return LoRALinear(_linear(weight, bias), _linear(lora_A), _linear(lora_B), alpha=scaling * rank,
                      rank=rank, dropout=0.0).eval()


def lora_forward(x, params, scaling):
    """A LoRA layer (peft.LoRALinear) without dropout: x W^T + b + scaling * x A^T B^T.

    x: Tensor (..., in). params: Tensors "base.weight" W (out, in), "base.bias" b (out,),
    "lora_A.weight" A (r, in), "lora_B.weight" B (out, r). scaling: alpha / r, a number.
    Returns a Tensor (..., out)."""
    return _lora_layer(params["base.weight"], params["base.bias"], params["lora_A.weight"],
                       params["lora_B.weight"], scaling)(x)


def _lora_checks():
    checks = []
    for i, (shape, out, r, scaling) in enumerate([((2, 3, 5), 4, 2, 8.0), ((6, 4), 3, 1, 0.5)]):
        def run(fn, shape=shape, out=out, r=r, scaling=scaling, i=i):
            d = shape[-1]
            x = leaf(rand(shape, i))
            params = {"base.weight": leaf(rand((out, d), 10 + i)), "base.bias": leaf(rand((out,), 20 + i)),
                      "lora_A.weight": leaf(rand((r, d), 30 + i)),
                      "lora_B.weight": leaf(rand((out, r), 40 + i))}
            return differentiate(fn(x, params, scaling), x=x, **params)
        checks.append(Compare(f"x {_shape(shape)}, out={out}, rank={r}, scaling={scaling}", run))
    return checks


def lora_merge(weight, lora_A, lora_B, scaling):
    """Fold a LoRA update into its frozen weight, as LoRALinear.merge does, for zero added latency.

    weight W (out, in), lora_A A (r, in), lora_B B (out, r): arrays; scaling: alpha / r.
    Returns the merged weight, an array (out, in)."""
    layer = _lora_layer(Tensor(weight, dtype=weight.dtype), None, Tensor(lora_A, dtype=lora_A.dtype),
                        Tensor(lora_B, dtype=lora_B.dtype), scaling)
    layer.merge()
    return layer.base.weight.data


def lora_unmerge(merged_weight, lora_A, lora_B, scaling):
    """Take a folded LoRA update out of a merged weight again, as LoRALinear.unmerge does (to resume
    training). Arguments as in lora_merge. Returns the original weight, an array (out, in)."""
    layer = _lora_layer(Tensor(merged_weight, dtype=merged_weight.dtype), None,
                        Tensor(lora_A, dtype=lora_A.dtype), Tensor(lora_B, dtype=lora_B.dtype), scaling)
    layer.merged, layer.merged_update = True, layer.delta_weight()   # the state merge() leaves
    layer.unmerge()
    return layer.base.weight.data


def _lora_merge_cases():
    for i, (out, d, r, scaling) in enumerate([(4, 5, 2, 8.0), (3, 3, 1, 0.5), (6, 2, 2, 16.0)]):
        yield (f"weight {out}x{d}, rank={r}, scaling={scaling}", i,
               lambda i=i, out=out, d=d, r=r: (rand((out, d), i), rand((r, d), 10 + i),
                                               rand((out, r), 20 + i)),
               scaling)


def _lora_merge_checks():
    return [Compare(label, lambda fn, make=make, scaling=scaling: fn(*make(), scaling))
            for label, _, make, scaling in _lora_merge_cases()]


def _lora_unmerge_checks():
    checks = [Compare(label, lambda fn, make=make, scaling=scaling: fn(*make(), scaling))
              for label, _, make, scaling in _lora_merge_cases()]
    for label, _, make, scaling in _lora_merge_cases():
        def round_trip(fn, make=make, scaling=scaling):
            weight, A, B = make()
            return fn(lora_merge(weight, A, B, scaling), A, B, scaling)
        checks.append(Compare(f"unmerge(merge(W)) == W, {label}", round_trip))
    return checks


# ---- A5: AdaMix --------------------------------------------------------------------------------------

def stochastic_route(num_experts, rng):
    """AdaMix's routing decision (adamix.md section 3): the ONE expert that the whole batch goes
    through on this forward call, uniform over 0 .. num_experts - 1, drawn from the host generator
    `rng` (a numpy.random.Generator) with one rng.integers draw, as the library's Mixture draws from
    backend.host_rng: a seed then gives the library's routes, on every backend. Returns an int."""
    return int(rng.integers(num_experts))


def _route_checks():
    checks = [Compare(f"50 routes among {n} experts, generator seed {seed}",
                      lambda fn, n=n, seed=seed: _routes(fn, n, seed, 50))
              for n, seed in [(4, 0), (8, 1), (1, 2)]]
    checks.append(Verify("the routes of an adamix.Mixture in training, same generator state",
                         _same_as_mixture))
    checks.append(Verify("uniform: 4000 routes among 5 experts", _uniform_routes))
    return checks


def _routes(fn, num_experts, seed, count):
    """`count` successive routes drawn by `fn` from one generator seeded with `seed`."""
    rng = backend.host_generator(seed)
    return [fn(num_experts, rng) for _ in range(count)]


def _same_as_mixture(fn):
    experts = [Linear(3, 2) for _ in range(4)]
    mixture = adamix.Mixture(experts).train()
    rng = copy.deepcopy(backend.host_rng)             # the state the mixture is about to draw from
    x = Tensor(rand((2, 3), 0))
    for call in range(20):
        mixture(x)
        got = fn(4, rng)
        if got != mixture.route.index:
            raise Mismatch(f"forward call {call}: the Mixture routed to expert {mixture.route.index}, "
                           f"your draw from the same generator state gave {got!r}")


def _uniform_routes(fn):
    routes = _routes(fn, 5, 3, 4000)
    bad = [r for r in routes if not (isinstance(r, numbers.Integral) and 0 <= r < 5)]
    if bad:
        raise Mismatch(f"a route must be an int in 0 .. 4, got {bad[0]!r} ({type(bad[0]).__name__})")
    counts = [routes.count(e) for e in range(5)]
    if not all(700 <= c <= 900 for c in counts):   # 800 expected, standard deviation about 25
        raise Mismatch(f"routes are not uniform: expert counts {counts}, expected about 800 each")


def average_experts(weights):
    """The uniform mean of M experts' weights: the one weight with which an AdaMix Mixture acts in
    "average" inference (adamix.md section 6). weights: a list of M Tensors of one shape (out, in).
    Returns a Tensor (out, in) through which gradients reach every expert."""
    return adamix.Mixture([_linear(w) for w in weights]).averaged_weights()[0]


def _average_checks():
    checks = []
    for i, (m, shape) in enumerate([(4, (3, 5)), (1, (2, 2)), (3, (4, 1))]):
        def run(fn, m=m, shape=shape, i=i):
            weights = [leaf(rand(shape, 10 * i + e)) for e in range(m)]
            return differentiate(fn(weights), **{f"expert {e}": w for e, w in enumerate(weights)})
        checks.append(Compare(f"{m} experts of {_shape(shape)}", run))
    return checks


def symmetric_kl(p_logits, q_logits):
    """AdaMix's consistency loss (adamix.md section 4) between two passes' logits, Tensors (N, C):

        0.5 * [ KL(softmax(q) || softmax(p)) + KL(softmax(p) || softmax(q)) ]

    each KL summed over the classes and averaged over the N rows. In each direction the target (the
    left distribution) is a constant: no gradient flows through it. Returns a scalar Tensor."""
    return F.symmetric_kl(p_logits, q_logits)


def _symmetric_kl_checks():
    cases = [((4, 3), 1.0, False), ((2, 5), 3.0, False), ((1, 2), 1.0, False), ((3, 4), 1.0, True)]
    checks = []
    for i, (shape, scale, same) in enumerate(cases):
        def run(fn, shape=shape, scale=scale, same=same, i=i):
            p = leaf(rand(shape, 2 * i, scale))
            q = leaf(p.data.copy() if same else rand(shape, 2 * i + 1, scale))
            return differentiate(fn(p, q), p=p, q=q)
        checks.append(Compare(f"p, q {_shape(shape)} (scale {scale})" + (", p == q" if same else ""), run))
    return checks


def adamix_loss(logits_1, logits_2, targets, consistency_weight):
    """The AdaMix objective for one batch seen twice with independent routes (adamix.md section 4):
    cross-entropy of pass 1's logits plus consistency_weight times the symmetric KL between the passes.
    Only pass 1 carries the task loss. logits_1, logits_2: Tensors (N, C); targets: (N,) integers.
    You may use tinymix.functional.cross_entropy and symmetric_kl. Returns a scalar Tensor."""
    passes = iter((logits_1, logits_2))
    loss, _, _ = adamix.two_pass_loss(lambda: next(passes), lambda z: F.cross_entropy(z, targets),
                                      consistency_weight)
    return loss


def _adamix_loss_checks():
    checks = []
    for i, weight in enumerate((1.0, 0.0, 100.0)):
        def run(fn, weight=weight, i=i):
            z1, z2 = leaf(rand((4, 3), 2 * i)), leaf(rand((4, 3), 2 * i + 1))
            return differentiate(fn(z1, z2, labels(4, 3, i), weight), logits_1=z1, logits_2=z2)
        checks.append(Compare(f"logits 4x3, consistency_weight={weight}", run))
    return checks


def merge_experts(expert_weights, expert_biases):
    """AdaMix merging (adamix.md section 6): collapse a mixture of M Linear experts into ONE Linear
    with the uniform mean of their weights and of their biases, as adamix.merge_experts does.
    expert_weights: a list of M arrays (out, in); expert_biases: a list of M arrays (out,), or None for
    experts without bias (LoRA's A and B). Returns (weight, bias): arrays, bias None without biases."""
    holder = Module()
    biases = expert_biases if expert_biases is not None else [None] * len(expert_weights)
    holder.mixture = adamix.Mixture([_linear(Tensor(w), None if b is None else Tensor(b))
                                     for w, b in zip(expert_weights, biases)])
    adamix.merge_experts(holder)                  # replaces holder.mixture by one Linear
    merged = holder.mixture
    return merged.weight.data, None if merged.bias is None else merged.bias.data


def _merge_checks():
    checks = []
    for i, (m, out, d, bias) in enumerate([(4, 3, 5, True), (2, 4, 2, False), (1, 2, 3, True)]):
        def run(fn, m=m, out=out, d=d, bias=bias, i=i):
            weights = [rand((out, d), 10 * i + e, 0.02, "float32") for e in range(m)]
            biases = [rand((out,), 50 + 10 * i + e, 0.02, "float32") for e in range(m)] if bias else None
            return fn(weights, biases)
        biases = "with biases" if bias else "expert_biases=None"
        checks.append(Compare(f"{m} experts of {_shape((out, d))}, {biases}", run))
    return checks


# ---- the registry ------------------------------------------------------------------------------------

ASSIGNMENTS = [
    Assignment("A1", "Autograd primitives and broadcasting gradients", "a1_autograd.py", [
        Task("A1.1", unbroadcast, 2, "sum a broadcast gradient back to an input's shape",
             "sum over the leading axes that broadcasting added, then, with keepdims=True, over the axes "
             "where `shape` has a 1 but grad does not", _unbroadcast_checks),
        Task("A1.2", mul_backward, 2, "return (da, db) for out = a * b",
             "the product rule gives g * b for a and g * a for b; each must then be summed back to its "
             "input's shape (Task A1.1's idea)", _mul_checks, ("da", "db")),
        Task("A1.3", sum_backward, 2, "return dx for out = x.sum(axis, keepdims)",
             "every element of x feeds one element of out with slope 1: put the summed axes back "
             "(xp.expand_dims) and broadcast g to `shape`", _sum_checks),
        Task("A1.4", matmul_backward, 4, "return (da, db) for out = a @ b with batch broadcasting",
             "for 2-D arrays da = g @ b.T and db = a.T @ g; for more axes swap only the last two "
             "(xp.swapaxes) and sum away the batch axes that broadcasting added",
             _matmul_checks, ("da", "db")),
    ]),
    Assignment("A2", "Softmax, cross-entropy and layer-norm backward", "a2_softmax_layernorm.py", [
        Task("A2.1", softmax_backward, 2, "return dx of softmax from g and the output y",
             "the Jacobian is diag(y) - y y^T; apply it to g without building it: one sum along `axis` "
             "with keepdims=True", _softmax_checks),
        Task("A2.2", cross_entropy_backward, 3, "return dloss/dlogits of the mean cross-entropy",
             "for one row, d/dz of -sum_c t_c log softmax(z)_c is softmax(z) - t; build t from targets and "
             "label_smoothing, and divide by N for the mean; subtract the row max before exp",
             _cross_entropy_checks),
        Task("A2.3", layer_norm_forward, 2, "return (out, xhat, rstd) of layer norm over the last axis",
             "mean and variance along axis -1 with keepdims=True; the variance is biased (divide by C)",
             _layer_norm_forward_checks, ("out", "xhat", "rstd")),
        Task("A2.4", layer_norm_backward, 3, "return (dx, dweight, dbias) of layer norm from the cache",
             "start from dxhat = g * weight; x reaches xhat through (x - mean) and through rstd, which "
             "gives three terms; the means are along the last axis; dweight and dbias sum over every "
             "leading axis", _layer_norm_backward_checks, ("dx", "dweight", "dbias")),
    ]),
    Assignment("A3", "Multi-head attention", "a3_attention.py", [
        Task("A3.1", split_heads, 2, "reshape (B, T, C) into heads (B, H, T, D)",
             "reshape to (B, T, H, D), then transpose so that the head axis comes before time",
             _split_heads_checks),
        Task("A3.2", scaled_dot_product_attention, 4, "compute softmax(q k^T / sqrt(D) + mask_bias) v",
             "k.transpose(0, 1, 3, 2) is (B, H, D, T); tinymix.functional.softmax over the last axis, "
             "the keys", _attention_checks),
        Task("A3.3", multi_head_attention, 4,
             "project x to q, k, v, attend per head, merge the heads, project the output",
             "tinymix.functional.linear(x, params['query.weight'], params['query.bias']) and so on; merge "
             "the heads back to (B, T, C) before the output projection", _multi_head_attention_checks),
    ]),
    Assignment("A4", "Adapter and LoRA, with merge and unmerge", "a4_adapter_lora.py", [
        Task("A4.1", adapter_forward, 3, "compute h + up(gelu(down(h)))",
             "tinymix.functional.linear and tinymix.functional.gelu; do not forget the residual",
             _adapter_checks),
        Task("A4.2", lora_forward, 3, "compute the base projection plus the scaled low-rank update",
             "two small projections, through A then B, instead of building B @ A: the rank r is the "
             "bottleneck", _lora_checks),
        Task("A4.3", lora_merge, 2, "return the weight with the scaled update B @ A folded in",
             "B (out, r) @ A (r, in) has the weight's shape; return a new array and leave the inputs "
             "unchanged", _lora_merge_checks),
        Task("A4.4", lora_unmerge, 2, "return the weight with the scaled update B @ A taken out",
             "the exact inverse of lora_merge", _lora_unmerge_checks),
    ]),
    Assignment("A5", "AdaMix: stochastic routing, consistency, averaging and merging", "a5_adamix.py", [
        Task("A5.1", stochastic_route, 2, "draw the expert index for one forward call",
             "int() of one rng.integers call with num_experts as its only argument", _route_checks),
        Task("A5.2", average_experts, 2, "return the mean of the experts' weights as a Tensor",
             "tinymix.tensor.stack(weights) is (M, out, in); average over the expert axis", _average_checks),
        Task("A5.3", symmetric_kl, 3, "compute the symmetric KL with a stop-gradient on each target",
             "KL(t || s) = mean over rows of sum_c t_c (log t_c - log s_c); tinymix.functional.log_softmax "
             "gives the logs, and .detach() makes the target side a constant", _symmetric_kl_checks),
        Task("A5.4", adamix_loss, 1, "add the weighted consistency term to pass 1's task loss",
             "tinymix.functional.cross_entropy on pass 1 only; the consistency term sees both passes",
             _adamix_loss_checks),
        Task("A5.5", merge_experts, 2, "average the experts' weights and biases into one Linear's",
             "xp.stack(...).mean(axis=0), for the biases too unless they are None", _merge_checks,
             ("weight", "bias")),
    ]),
]


def assignment(assignment_id):
    for a in ASSIGNMENTS:
        if a.id == assignment_id:
            return a
    raise KeyError(f"no assignment {assignment_id!r}: choose one of {', '.join(a.id for a in ASSIGNMENTS)}")
