"""A3: multi-head attention. Student file: lessons/assignments/a3_attention.py."""
import math

from .. import functional as F
from ..backend import xp
from ..transformer import Attention, TransformerConfig
from .checks import F64, Case, Leaf, _linear, _shape


# ---- A3: multi-head attention -----------------------------------------------------------------------
# transformer.Attention.forward does these steps inline; the references below are its lines, and
# A3.3 is graded against the Attention module itself.

def split_heads(x, num_heads):
    """Split the channels of x, a Tensor (B, T, C), into num_heads heads of D = C / num_heads channels:
    returns a Tensor (B, H, T, D) whose head h holds channels h*D .. (h+1)*D - 1, the layout
    transformer.Attention uses."""
    B, T, C = x.shape
    return x.reshape(B, T, num_heads, C // num_heads).transpose(0, 2, 1, 3)


def _split_heads_cases(draw):
    shapes = [((2, 3, 8), 2), ((1, 4, 6), 3), ((2, 2, 4), 1), ((1, 2, 4), 4)]
    return [Case(f"x {_shape(s)}, num_heads={h}", (Leaf(draw.rand(s, i), "x"), h), gradients=True)
            for i, (s, h) in enumerate(shapes)]


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


def _attention_cases(draw):
    B, H, T, D = 2, 2, 4, 3
    checks = []
    for i, (label, mask) in enumerate(_mask_biases(B, T)):
        q, k, v = (Leaf(draw.rand((B, H, T, D), 10 * i + j), name) for j, name in enumerate("qkv"))
        checks.append(Case(f"q, k, v {_shape((B, H, T, D))}, {label}", (q, k, v, mask), gradients=True))
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


def _multi_head_attention_cases(draw):
    checks = []
    for i, (B, T, C, H) in enumerate([(2, 4, 6, 2), (1, 3, 8, 4)]):
        for label, mask in _mask_biases(B, T)[i:i + 2]:
            params = {}
            for j, name in enumerate(("query", "key", "value", "output")):
                params[f"{name}.weight"] = Leaf(draw.rand((C, C), 10 * j + 1, 0.5), f"{name}.weight")
                params[f"{name}.bias"] = Leaf(draw.rand((C,), 10 * j + 2, 0.5), f"{name}.bias")
            checks.append(Case(f"x {_shape((B, T, C))}, num_heads={H}, {label}",
                               (Leaf(draw.rand((B, T, C), i), "x"), params, H, mask), gradients=True))
    return checks
