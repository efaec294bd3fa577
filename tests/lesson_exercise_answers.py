"""The answer key of the lesson exercises, for instructors: a right and a wrong answer to every one, so
that tests/test_lesson_exercises.py can prove that each self-check accepts the one and rejects the
other. The students' files hold no answers: the lessons none at all, lessons/exercises/ only checks
that work the answer out when they run, and multiple-choice letters sealed (docs/course.md)."""
import math

from tinymix import Tensor
from tinymix.backend import xp

C, r, L, HEAD = 384, 16, 6, 384 * 2 + 2


def _cube(x):
    out = x.data ** 3

    def backward(g):
        x._accumulate(g * 3.0 * x.data ** 2)
    return Tensor._make(out, (x,), backward)


def _cube_wrong_backward(x):
    out = x.data ** 3

    def backward(g):
        x._accumulate(g * 3.0 * x.data)
    return Tensor._make(out, (x,), backward)


def _log_softmax_backward(y, g):
    return g - y * g.sum(axis=-1, keepdims=True)


def _log_softmax_backward_wrong(y, g):
    return y * (g - (g * y).sum(axis=-1, keepdims=True))          # softmax's backward instead


def _rms_norm_backward(x, weight, g, eps):
    r = 1.0 / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    a, xhat = g * weight, x * r
    return r * (a - xhat * (a * xhat).mean(axis=-1, keepdims=True))


def _rms_norm_backward_wrong(x, weight, g, eps):                   # forgets the path through rms
    return g * weight / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)


def _gelu_tanh_grad(x):
    k = (2.0 / xp.pi) ** 0.5
    t = xp.tanh(k * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)


def _gelu_tanh_grad_wrong(x):                                      # drops the cubic term's derivative
    k = (2.0 / xp.pi) ** 0.5
    t = xp.tanh(k * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k


def _causal_bias(T):
    return xp.where(xp.triu(xp.ones((T, T)), k=1) > 0, -1e9, 0.0).astype(xp.float32)


def _causal_bias_transposed(T):                                    # masks the past instead of the future
    return xp.where(xp.tril(xp.ones((T, T)), k=-1) > 0, -1e9, 0.0).astype(xp.float32)


def _branch_directions(adapter):
    return adapter.up.weight.data


def _branch_directions_wrong(adapter):                             # the input side: D's rows
    return adapter.down.weight.data.T


def _lora_grads(x, g, A, B, s):
    return (s * g @ B).T @ x, s * g.T @ (x @ A.T)


def _lora_grads_unscaled(x, g, A, B, s):                            # forgets the scale s
    return (g @ B).T @ x, g.T @ (x @ A.T)


def _fold(W, A, B, alpha, r):
    return W + (alpha / r) * B @ A


def _fold_transposed(W, A, B, alpha, r):                            # (B A)^T has the wrong shape
    return W + (alpha / r) * (A.T @ B.T)[:W.shape[0], :W.shape[1]]


def _symkl_numbers():
    e = math.exp(2.0)
    p, q = [e / (e + 1), 1 / (e + 1)], [0.5, 0.5]
    kl = lambda a, b: sum(x * (math.log(x) - math.log(y)) for x, y in zip(a, b))
    return 0.5 * (kl(q, p) + kl(p, q)), [(p[0] - q[0]) / 2, (p[1] - q[1]) / 2]


def _peft_key(layer, target, side):
    return f"base_model.model.encoder.layer.{layer}.attention.self.{target}.lora_{side}.weight"


def _peft_key_without_wrapper(layer, target, side):
    return f"encoder.layer.{layer}.attention.self.{target}.lora_{side}.weight"


def _deployed_update(A_experts, B, alpha, r):
    return (alpha / r) * (B @ (sum(A_experts) / len(A_experts)))


def _deployed_update_unscaled(A_experts, B, alpha, r):
    return B @ (sum(A_experts) / len(A_experts))


ANSWERS = {
    # id: (right answer, wrong answer)
    "00.1": (L * (8 * (C * r + r) + (r * C + C)) + HEAD, L * (8 * (C * r + r) + 8 * (r * C + C)) + HEAD),
    "00.2": (L * ((C * r + r) + (r * C + C)) + HEAD, L * (8 * (C * r + r) + (r * C + C)) + HEAD),
    "00.3": ("bcd", "abcd"),
    "01.1": ([5.0, 6.0, 7.0], [4.0, 5.0, 6.0]),
    "01.2": (([[2.0], [2.0], [2.0]], [[6.0, 6.0, 6.0, 6.0]]), ([[1.0, 0.0, -1.0, 2.0]], [[1.0], [2.0], [3.0]])),
    "02.1": (1e-8, 1e-5),
    "02.2": (_cube, _cube_wrong_backward),
    "03.1": (_log_softmax_backward, _log_softmax_backward_wrong),
    "03.2": ([0.2 - 0.84, 0.16, 0.16, 0.16, 0.16], [0.2 - 1.0, 0.2, 0.2, 0.2, 0.2]),
    "04.1": (_rms_norm_backward, _rms_norm_backward_wrong),
    "04.2": (_gelu_tanh_grad, _gelu_tanh_grad_wrong),
    "05.1": (4 * 32 * 12 * 128 * 128, 32 * 12 * 128 * 128),
    "05.2": (_causal_bias, _causal_bias_transposed),
    "06.1": ("encoder.layer.2.intermediate.dense.weight", "encoder.layer.2.output.dense.weight"),
    "06.2": (0.53, 0.50),
    "07.1": (L * 2 * (8 * 8 * C + C * 8) + HEAD, L * 2 * 8 * (8 * C + C * 8) + HEAD),
    "07.2": (12 * (22713216 + HEAD) / 1e6, 16 * (22713216 + HEAD) / 1e6),
    "08.1": (_branch_directions, _branch_directions_wrong),
    "08.2": (L * 2 * (2 * C * 8 + 8 + C), L * (2 * C * 8 + 8 + C)),
    "09.1": (_lora_grads, _lora_grads_unscaled),
    "09.2": (_fold, _fold_transposed),
    "10.1": (1 - 0.75 ** 2, 0.25),
    "10.2": (31 * (1 - 0.75 ** 2), 31 / 4),
    "10.3": ((0.09 / (1 - 0.9 ** 2)) / ((0.999 * 0.001 / (1 - 0.999 ** 2)) ** 0.5), 0.9),
    "11.1": (_symkl_numbers()[0], 2 * _symkl_numbers()[0]),
    "11.2": (_symkl_numbers()[1], [2 * g for g in _symkl_numbers()[1]]),
    "12.1": (1, 3),
    "12.2": ("abd", "abcd"),
    "13.1": ([2.5, 5.0], [3.0, 6.0]),
    "13.2": ("ab", "a"),
    "14.1": (1.96 * math.sqrt(0.8 * 0.2 / 320), math.sqrt(0.8 * 0.2 / 320)),
    "14.2": ((10 / 320, 1.96 * math.sqrt((30 - 100 / 320) / 319) / math.sqrt(320)),
             (10 / 320, 1.96 * math.sqrt(0.8 * 0.2 / 320) * math.sqrt(2))),
    "15.1": (1 - 0.75 ** 2, 0.25),
    "15.2": (32 ** -0.5, 1 / 32),
    "16.1": ("acef", "ace"),
    "16.2": ("a", "ab"),
    "17.1": (_peft_key, _peft_key_without_wrapper),
    "17.2": (_deployed_update, _deployed_update_unscaled),
    "17.3": ("b", "a"),
    "18.1": (2 / 3, 1 / (1 + math.exp(-2 * math.log(3) / 3))),       # the sigmoid of the mean score instead
    "18.2": (L * 4 * (C + 1), L * 2 * (C + 1)),                       # forgets the two LoRA gates per layer
    "18.3": ("ad", "a"),
    "19.1": (51, 48 + 24 * 0.5),                                      # a linear schedule instead of a cubic one
    "19.2": (48 * (C + C + 1), 48 * (C + C)),                         # forgets the lambdas
    "19.3": ("bc", "b"),
    "20.1": (4 * 8 * (768 // 4 + 64 // 4) + 64, 4 * 8 * (768 // 4 + 64 // 4) + 64 + 4 ** 3),   # counts the shared rules
    "20.2": (8 * 5 + 5 * 12 * 5 + 5 * 8 * 5 + 5 * 8, 768 * 8),       # the dense matrix
    "20.3": ("ac", "a"),
    "21.1": ([-3.0, 1.25, 0.0, -2.0], [-0.5, 0.5 / 3, 0.2, -1.6 / 3]),    # the plain mean instead
    "21.2": (1 / 8, 1.0),
    "21.3": ("ab", "a"),
    "22.1": (2 / 7, 2 / 4),                                           # divides by the changed positions
    "22.2": (0.53, 0.46),                                             # forgets the scaling alpha / r
    "22.3": ("ad", "a"),
}
