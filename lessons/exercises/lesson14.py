"""Lesson 14's exercises: the uncertainty of one accuracy, and of a paired difference."""
import math

from exercises import Exercise, Wrong, number

Z = 1.96


def _paired(only_first, only_second, n):
    """Mean and 95% half-width of the per-sentence differences (+1, -1 or 0), built as an array."""
    from tinymix.backend import xp
    d = xp.concatenate([xp.ones(only_first), -xp.ones(only_second), xp.zeros(n - only_first - only_second)])
    return float(d.mean()), Z * float(d.std(ddof=1)) / math.sqrt(n)


def _verify_paired(answer):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong("answer with a pair (difference, half-width)")
    mean, half = _paired(20, 10, 320)
    number(answer[0], mean, "the difference", rel=0.01)
    number(answer[1], half, "the half-width", rel=0.03)


EXERCISES = {
    "14.1": Exercise(
        task="the 95% half-width of an accuracy of 0.80 on 320 sentences",
        verify=lambda answer: number(answer, Z * math.sqrt(0.8 * 0.2 / 320), "the half-width", rel=0.02),
        hint="1.96 sqrt(p (1 - p) / n)"),
    "14.2": Exercise(
        task="(difference, half-width) for 20 vs 10 discordant sentences of 320",
        verify=_verify_paired,
        hint="d has twenty +1, ten -1 and 290 zeros: its mean is (20 - 10) / 320; the half-width is "
             "1.96 sd(d) / sqrt(320) — and the difference is shown only if it exceeds the half-width"),
}
