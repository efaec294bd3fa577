"""Lesson 09's exercises: LoRA's two gradients, and folding LoRA into the frozen weight."""
from exercises import Exercise, Wrong, array


def _verify_lora_grads(lora_grads):
    from tinymix import Tensor, backend
    from tinymix.backend import xp
    rng = backend.host_generator(9)
    N, d_in, d_out, r, s = 5, 7, 6, 3, 2.5
    x = backend.from_numpy(rng.standard_normal((N, d_in)))
    g = backend.from_numpy(rng.standard_normal((N, d_out)))
    A = Tensor(rng.standard_normal((r, d_in)), requires_grad=True, dtype=xp.float64)
    B = Tensor(rng.standard_normal((d_out, r)), requires_grad=True, dtype=xp.float64)
    ((Tensor(x, dtype=xp.float64) @ A.transpose(1, 0) @ B.transpose(1, 0)) * s).backward(g)
    answer = lora_grads(x, g, A.data.copy(), B.data.copy(), s)
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong("return a pair (dA, dB)")
    array(answer[0], A.grad, "dL/dA", atol=1e-9)
    array(answer[1], B.grad, "dL/dB", atol=1e-9)


def _verify_fold(fold):
    from tinymix import backend
    from tinymix.nn import Linear, Parameter
    from tinymix.peft import LoRALinear
    backend.manual_seed(9)
    d_in, d_out, r, alpha = 7, 6, 3, 8.0
    base = Linear(d_in, d_out, std=0.2)
    A, B = Linear(d_in, r, bias=False), Linear(r, d_out, bias=False)
    A.weight, B.weight = Parameter(backend.host_normal((r, d_in), 0.5)), Parameter(backend.host_normal((d_out, r), 0.5))
    W = base.weight.data.copy()
    lora = LoRALinear(base, A, B, alpha=alpha, rank=r, dropout=0.0)
    lora.merge()
    array(fold(W, A.weight.data.copy(), B.weight.data.copy(), alpha, r), base.weight.data, "W'", atol=1e-5)


EXERCISES = {
    "09.1": Exercise(
        task="lora_grads(x, g, A, B, s) -> (dA, dB)",
        verify=_verify_lora_grads,
        hint="with u = x A^T (N, r): dB = s g^T u; the gradient reaching u is s g B, so dA = (s g B)^T x"),
    "09.2": Exercise(
        task="fold(W, A, B, alpha, r) -> W'",
        verify=_verify_fold,
        hint="W' = W + (alpha / r) B A (out x r times r x in)"),
}
