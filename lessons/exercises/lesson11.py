"""Lesson 11's exercises: the symmetric KL of two predictions, and its stopped gradient."""
from exercises import Exercise, array, number


def _logits():
    from tinymix import Tensor
    from tinymix.backend import xp
    z1 = Tensor([[2.0, 0.0]], requires_grad=True, dtype=xp.float64)
    z2 = Tensor([[0.0, 0.0]], requires_grad=True, dtype=xp.float64)
    return z1, z2


def _sym_kl():
    from tinymix import functional as F
    return F.symmetric_kl(*_logits()).item()


def _dsym_dz1():
    from tinymix import functional as F
    z1, z2 = _logits()
    F.symmetric_kl(z1, z2).backward()
    return z1.grad[0]


EXERCISES = {
    "11.1": Exercise(
        task="symKL(z1, z2) for z1 = [2, 0], z2 = [0, 0]",
        verify=lambda answer: number(answer, _sym_kl(), "symKL", rel=1e-3),
        hint="p = softmax([2, 0]) = [e^2, 1] / (e^2 + 1), q = [0.5, 0.5]; symKL = (KL(q||p) + KL(p||q)) / 2"),
    "11.2": Exercise(
        task="d symKL / dz1 for the same logits",
        verify=lambda answer: array(answer, _dsym_dz1(), "d symKL / dz1", atol=1e-4, rtol=0.0),
        hint="only KL(sg(q) || p) reaches z1: (p - q) / (2N)"),
}
