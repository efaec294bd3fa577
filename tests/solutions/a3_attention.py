"""A correct A3, written as a student would, with Tensor and functional. The grader's tests use it."""
import math

from tinymix import functional as F


def split_heads(x, num_heads):
    B, T, C = x.shape
    return x.reshape(B, T, num_heads, C // num_heads).transpose(0, 2, 1, 3)


def scaled_dot_product_attention(q, k, v, mask_bias):
    scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(q.shape[-1])) + mask_bias
    return F.softmax(scores, axis=-1) @ v


def multi_head_attention(x, params, num_heads, mask_bias):
    B, T, C = x.shape
    q, k, v = (split_heads(F.linear(x, params[f"{n}.weight"], params[f"{n}.bias"]), num_heads)
               for n in ("query", "key", "value"))
    context = scaled_dot_product_attention(q, k, v, mask_bias).transpose(0, 2, 1, 3).reshape(B, T, C)
    return F.linear(context, params["output.weight"], params["output.bias"])
