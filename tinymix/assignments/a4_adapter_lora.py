"""A4: adapter and LoRA, merge and unmerge. Student file: lessons/assignments/a4_adapter_lora.py."""
from ..peft import Adapter, LoRALinear
from ..tensor import Tensor
from .checks import Case, Leaf, _linear, _shape


# ---- A4: adapter and LoRA, merge and unmerge ---------------------------------------------------------

def adapter_forward(h, params):
    """A bottleneck adapter (peft.Adapter): h + up(gelu(down(h))).

    h: Tensor (..., d). params: Tensors "down.weight" (r, d), "down.bias" (r,), "up.weight" (d, r),
    "up.bias" (d,); weights are stored (out, in). gelu is the exact (erf) form,
    tinymix.functional.gelu. Returns a Tensor (..., d)."""
    adapter = Adapter(_linear(params["down.weight"], params["down.bias"]),
                      _linear(params["up.weight"], params["up.bias"]))
    return adapter(h)


def _adapter_cases(draw):
    checks = []
    for i, (shape, r) in enumerate([((2, 3, 6), 2), ((4, 5), 3)]):
        d = shape[-1]
        params = {"down.weight": (r, d), "down.bias": (r,), "up.weight": (d, r), "up.bias": (d,)}
        params = {name: Leaf(draw.rand(s, 10 * (j + 1) + i), name) for j, (name, s) in enumerate(params.items())}
        checks.append(Case(f"h {_shape(shape)}, bottleneck r={r}", (Leaf(draw.rand(shape, i), "h"), params),
                           gradients=True))
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


def _lora_cases(draw):
    checks = []
    for i, (shape, out, r, scaling) in enumerate([((2, 3, 5), 4, 2, 8.0), ((6, 4), 3, 1, 0.5)]):
        d = shape[-1]
        params = {"base.weight": (out, d), "base.bias": (out,), "lora_A.weight": (r, d), "lora_B.weight": (out, r)}
        params = {name: Leaf(draw.rand(s, 10 * (j + 1) + i), name) for j, (name, s) in enumerate(params.items())}
        checks.append(Case(f"x {_shape(shape)}, out={out}, rank={r}, scaling={scaling}",
                           (Leaf(draw.rand(shape, i), "x"), params, scaling), gradients=True))
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


def _lora_merge_inputs(draw):
    for i, (out, d, r, scaling) in enumerate([(4, 5, 2, 8.0), (3, 3, 1, 0.5), (6, 2, 2, 16.0)]):
        yield (f"weight {out}x{d}, rank={r}, scaling={scaling}",
               draw.rand((out, d), i), draw.rand((r, d), 10 + i), draw.rand((out, r), 20 + i), scaling)


def _lora_merge_cases(draw):
    return [Case(label, (w, A, B, scaling)) for label, w, A, B, scaling in _lora_merge_inputs(draw)]


def _lora_unmerge_cases(draw):
    checks = _lora_merge_cases(draw)
    for label, w, A, B, scaling in _lora_merge_inputs(draw):
        checks.append(Case(f"unmerge(merge(W)) == W, {label}", (lora_merge(w, A, B, scaling), A, B, scaling)))
    return checks
