"""Lesson 10's exercises: how often an expert is routed, and what a dense update does after."""
from exercises import Exercise, number


def _routed_probability(num_experts=4, passes=2, steps=100_000):
    """The share of steps in which expert 0 is drawn by at least one of the passes, estimated with
    the library's own route draws (backend.host_choice) from a fixed seed."""
    from tinymix import backend
    backend.manual_seed(10)
    hits = 0
    for _ in range(steps):
        hits += any(backend.host_choice(num_experts) == 0 for _ in range(passes))
    return hits / steps


def _second_step_fraction():
    from tinymix import Tensor
    from tinymix.backend import xp
    from tinymix.optim import AdamW
    p = Tensor(xp.zeros(1, dtype=xp.float32), requires_grad=True)
    optimizer = AdamW([p], lr=1.0, betas=(0.9, 0.999), eps=1e-12, weight_decay=0.0)
    positions = [0.0]
    for grad in (1.0, None):
        p.grad = None if grad is None else xp.full(1, grad, dtype=xp.float32)
        optimizer.step()
        positions.append(float(p.data[0]))
    return abs(positions[2] - positions[1]) / abs(positions[1] - positions[0])


EXERCISES = {
    "10.1": Exercise(
        task="the probability that a given expert is routed at least once in a step (M = 4, two passes)",
        verify=lambda answer: number(answer, _routed_probability(steps=40_000), "the probability", abs_=0.01),
        hint="it is missed by one pass with probability 3/4; by both, (3/4)^2"),
    "10.2": Exercise(
        task="the mean number of steps, of 31, in which a given expert is routed",
        verify=lambda answer: number(answer, 31 * _routed_probability(steps=40_000), "the number of steps", abs_=0.4),
        hint="31 times the answer to 10.1 — not 31 / 4: two passes give two chances per step"),
    "10.3": Exercise(
        task="the size of a dense step-2 update relative to step 1, after one gradient",
        verify=lambda answer: number(answer, _second_step_fraction(), "the fraction", abs_=0.01),
        hint="after step 2: m = 0.9 * 0.1 g, v = 0.999 * 0.001 g^2; divide by (1 - 0.9^2) and "
             "(1 - 0.999^2) before m^ / sqrt(v^)"),
}
