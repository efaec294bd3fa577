"""The assignments' one source of truth (instructor side): every task's contract, answer and checks.

A task is one small function. Its REFERENCE is defined here, and
- its def line and docstring are the contract: the student's stub in lessons/assignments/ repeats them
  word for word (`python3 -m tinymix.grade --check-stubs` verifies it);
- its body asks the library for the answer (a fused op's autograd, a module's forward, adamix's
  merge), so the answer key cannot drift from tinymix itself;
- its checks, defined beside it, are seeded `Case`s: inputs on which the student's function must agree
  with the reference, with central differences, or have a property (routes equal to the library
  Mixture's, uniform routing).

Each assignment also says which tinymix modules a submission may import while it is graded (its
`library`) and which functions of those are withheld: the grader refuses the modules and functions
that compute the assignment's answers (Tensor autograd in A1, functional in A2, transformer in A3,
peft in A4, adamix in A5) and, always, this package.

The package: checks.py is what every task's checks share; a1_autograd.py .. a5_adamix.py hold one
assignment's references and checks each, named as the student files are; this file is the registry.
This package is never loaded in a submission's process (tinymix/grading/child.py).
"""
from .checks import (ARRAYS, TENSORS, Assignment, Case, Draw, Mismatch, Task, gradcheck_case, leaf, rand)
from .a1_autograd import (_matmul_cases, _mul_cases, _sum_cases, _unbroadcast_cases, matmul_backward,
                          mul_backward, sum_backward, unbroadcast)
from .a2_softmax_layernorm import (_cross_entropy_cases, _layer_norm_backward_cases,
                                   _layer_norm_forward_cases, _softmax_cases, cross_entropy_backward,
                                   layer_norm_backward, layer_norm_forward, softmax_backward)
from .a3_attention import (_attention_cases, _multi_head_attention_cases, _split_heads_cases,
                           multi_head_attention, scaled_dot_product_attention, split_heads)
from .a4_adapter_lora import (_adapter_cases, _lora_cases, _lora_merge_cases, _lora_unmerge_cases,
                              adapter_forward, lora_forward, lora_merge, lora_unmerge)
from .a5_adamix import (_adamix_loss_cases, _average_cases, _merge_cases, _route_cases,
                        _symmetric_kl_cases, adamix_loss, average_experts, merge_experts, stochastic_route,
                        symmetric_kl)

__all__ = ["ASSIGNMENTS", "assignment", "task",
           "Assignment", "Case", "Draw", "Mismatch", "Task", "gradcheck_case", "leaf", "rand",
           "matmul_backward", "mul_backward", "sum_backward", "unbroadcast",
           "cross_entropy_backward", "layer_norm_backward", "layer_norm_forward", "softmax_backward",
           "multi_head_attention", "scaled_dot_product_attention", "split_heads",
           "adapter_forward", "lora_forward", "lora_merge", "lora_unmerge",
           "adamix_loss", "average_experts", "merge_experts", "stochastic_route", "symmetric_kl"]


# ---- the registry ------------------------------------------------------------------------------------

ASSIGNMENTS = [
    Assignment("A1", "Autograd primitives and broadcasting gradients", "a1_autograd.py", "01-02", ARRAYS,
               "A1 is graded with tinymix.backend (xp) alone: Tensor autograd computes these backward "
               "passes, it is the answer key here", (), [
        Task("A1.1", unbroadcast, 2, "sum a broadcast gradient back to an input's shape",
             "sum over the leading axes that broadcasting added, then, with keepdims=True, over the axes "
             "where `shape` has a 1 but grad does not", _unbroadcast_cases),
        Task("A1.2", mul_backward, 2, "return (da, db) for out = a * b",
             "the product rule gives g * b for a and g * a for b; each must then be summed back to its "
             "input's shape (Task A1.1's idea)", _mul_cases, ("da", "db")),
        Task("A1.3", sum_backward, 2, "return dx for out = x.sum(axis, keepdims)",
             "every element of x feeds one element of out with slope 1: put the summed axes back "
             "(xp.expand_dims) and broadcast g to `shape`", _sum_cases),
        Task("A1.4", matmul_backward, 4, "return (da, db) for out = a @ b with batch broadcasting",
             "for 2-D arrays da = g @ b.T and db = a.T @ g; for more axes swap only the last two "
             "(xp.swapaxes) and sum away the batch axes that broadcasting added",
             _matmul_cases, ("da", "db")),
    ]),
    Assignment("A2", "Softmax, cross-entropy and layer-norm backward", "a2_softmax_layernorm.py", "03-04", ARRAYS,
               "A2 is graded with tinymix.backend (xp) alone: tinymix.functional and Tensor autograd hold "
               "these backward passes, they are the answer key here", (), [
        Task("A2.1", softmax_backward, 2, "return dx of softmax from g and the output y",
             "the Jacobian is diag(y) - y y^T; apply it to g without building it: one sum along `axis` "
             "with keepdims=True", _softmax_cases),
        Task("A2.2", cross_entropy_backward, 3, "return dloss/dlogits of the mean cross-entropy",
             "for one row, d/dz of -sum_c t_c log softmax(z)_c is softmax(z) - t; build t from targets and "
             "label_smoothing, and divide by N for the mean; subtract the row max before exp",
             _cross_entropy_cases),
        Task("A2.3", layer_norm_forward, 2, "return (out, xhat, rstd) of layer norm over the last axis",
             "mean and variance along axis -1 with keepdims=True; the variance is biased (divide by C)",
             _layer_norm_forward_cases, ("out", "xhat", "rstd")),
        Task("A2.4", layer_norm_backward, 3, "return (dx, dweight, dbias) of layer norm from the cache",
             "start from dxhat = g * weight; x reaches xhat through (x - mean) and through rstd, which "
             "gives three terms; the means are along the last axis; dweight and dbias sum over every "
             "leading axis", _layer_norm_backward_cases, ("dx", "dweight", "dbias")),
    ]),
    Assignment("A3", "Multi-head attention", "a3_attention.py", "05", TENSORS,
               "A3 may use tinymix.backend, tensor, functional and nn; transformer.Attention and "
               "functional.attention compute this assignment's answers", ("tinymix.functional.attention",), [
        Task("A3.1", split_heads, 2, "reshape (B, T, C) into heads (B, H, T, D)",
             "reshape to (B, T, H, D), then transpose so that the head axis comes before time",
             _split_heads_cases),
        Task("A3.2", scaled_dot_product_attention, 4, "compute softmax(q k^T / sqrt(D) + mask_bias) v",
             "k.transpose(0, 1, 3, 2) is (B, H, D, T); tinymix.functional.softmax over the last axis, "
             "the keys", _attention_cases),
        Task("A3.3", multi_head_attention, 4,
             "project x to q, k, v, attend per head, merge the heads, project the output",
             "tinymix.functional.linear(x, params['query.weight'], params['query.bias']) and so on; merge "
             "the heads back to (B, T, C) before the output projection", _multi_head_attention_cases),
    ]),
    Assignment("A4", "Adapter and LoRA, with merge and unmerge", "a4_adapter_lora.py", "08-09", TENSORS,
               "A4 may use tinymix.backend, tensor, functional and nn; tinymix.peft (Adapter, LoRALinear) "
               "computes this assignment's answers", (), [
        Task("A4.1", adapter_forward, 3, "compute h + up(gelu(down(h)))",
             "tinymix.functional.linear and tinymix.functional.gelu; do not forget the residual",
             _adapter_cases),
        Task("A4.2", lora_forward, 3, "compute the base projection plus the scaled low-rank update",
             "two small projections, through A then B, instead of building B @ A: the rank r is the "
             "bottleneck", _lora_cases),
        Task("A4.3", lora_merge, 2, "return the weight with the scaled update B @ A folded in",
             "B (out, r) @ A (r, in) has the weight's shape; return a new array and leave the inputs "
             "unchanged", _lora_merge_cases),
        Task("A4.4", lora_unmerge, 2, "return the weight with the scaled update B @ A taken out",
             "the exact inverse of lora_merge", _lora_unmerge_cases),
    ]),
    Assignment("A5", "AdaMix: stochastic routing, consistency, averaging and merging", "a5_adamix.py", "10-13",
               TENSORS, "A5 may use tinymix.backend, tensor, functional and nn; tinymix.adamix and "
               "functional.symmetric_kl and kl_div compute this assignment's answers",
               ("tinymix.functional.symmetric_kl", "tinymix.functional.kl_div"), [
        Task("A5.1", stochastic_route, 2, "draw the expert index for one forward call",
             "int() of one rng.integers call with num_experts as its only argument", _route_cases),
        Task("A5.2", average_experts, 2, "return the mean of the experts' weights as a Tensor",
             "tinymix.tensor.stack(weights) is (M, out, in); average over the expert axis", _average_cases),
        Task("A5.3", symmetric_kl, 3, "compute the symmetric KL with a stop-gradient on each target",
             "KL(t || s) = mean over rows of sum_c t_c (log t_c - log s_c); tinymix.functional.log_softmax "
             "gives the logs, and .detach() makes the target side a constant", _symmetric_kl_cases),
        Task("A5.4", adamix_loss, 1, "add the weighted consistency term to pass 1's task loss",
             "tinymix.functional.cross_entropy on pass 1 only; the consistency term sees both passes",
             _adamix_loss_cases),
        Task("A5.5", merge_experts, 2, "average the experts' weights and biases into one Linear's",
             "xp.stack(...).mean(axis=0), for the biases too unless they are None", _merge_cases,
             ("weight", "bias")),
    ]),
]


def assignment(assignment_id):
    for a in ASSIGNMENTS:
        if a.id == assignment_id:
            return a
    raise KeyError(f"no assignment {assignment_id!r}: choose one of {', '.join(a.id for a in ASSIGNMENTS)}")


def task(task_id):
    for a in ASSIGNMENTS:
        for t in a.tasks:
            if t.id == task_id:
                return t
    raise KeyError(f"no task {task_id!r}: the tasks are {', '.join(t.id for a in ASSIGNMENTS for t in a.tasks)}")
