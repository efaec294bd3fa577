"""A4: adapter and LoRA, merge and unmerge. Student file: lessons/assignments/a4_adapter_lora.py."""
from ..peft import Adapter, LoRALinear
from ..tensor import Tensor
from .checks import Compare, _linear, _shape, differentiate, leaf, rand


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
