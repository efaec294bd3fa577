"""Lesson 15's exercises: how often an A-expert learns, and what averaging independent A's does."""
from exercises import Exercise, number


def _share_with_gradient(num_experts=4, steps=40_000):
    """Share of steps in which A-expert 0 of a layer is drawn by one of the two passes (the value
    follows the query's draw, so one draw per pass), with the library's route draws."""
    from tinymix import backend
    backend.manual_seed(15)
    hits = sum(any(backend.host_choice(num_experts) == 0 for _ in range(2)) for _ in range(steps))
    return hits / steps


def _mean_to_one(num_experts=32):
    from tinymix import adamix, backend
    from tinymix.backend import xp
    from tinymix.nn import Linear, Parameter, kaiming_uniform

    def lora_a():
        layer = Linear(128, 4, bias=False)
        layer.weight = Parameter(kaiming_uniform((4, 128), 128))
        return layer
    backend.manual_seed(15)
    mixture = adamix.make_mixture(lora_a, num_experts, "independent")
    norm = lambda a: float(xp.sqrt((a * a).sum()))
    return norm(mixture.averaged_weights()[0].data) / norm(mixture.experts[0].weight.data)


EXERCISES = {
    "15.1": Exercise(
        task="the share of steps on which an A-expert gets a gradient, M = 4",
        verify=lambda answer: number(answer, _share_with_gradient(), "the share", abs_=0.01),
        hint="one pass misses a given A with probability 3/4 (the value follows the query's draw)"),
    "15.2": Exercise(
        task="|mean of 32 independent A's| / |one A|",
        verify=lambda answer: number(answer, _mean_to_one(), "the ratio", rel=0.15),
        hint="independent random matrices add like random walks: the sum of M grows like sqrt(M), "
             "so the mean shrinks like 1 / sqrt(M)"),
}
