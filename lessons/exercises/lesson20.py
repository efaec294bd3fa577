"""Lesson 20's exercises: counting a PHM layer and a tensor train, and which structure is smaller."""
from exercises import Exercise, choice, integer


def _phm_numbers(n, k, d_in, d_out, with_rules=False):
    """A PHMLinear's own parameters (and its shared rules, if asked), counted by the library."""
    from tinymix import backend
    from tinymix.neighbours import phm
    backend.manual_seed(20)
    rules = phm.make_rules(n)
    return phm.PHMLinear(d_in, d_out, rules, k).num_parameters() + (rules.size if with_rules else 0)


def _tt_numbers(d_in, d_out, rank, bias):
    from tinymix import backend
    from tinymix.neighbours import loretta
    backend.manual_seed(20)
    return loretta.TTLinear(d_in, d_out, rank, bias=bias).num_parameters()


def _smaller():
    """The letters of the layers with fewer numbers than a dense Linear 384 -> 32, counted."""
    dense = 384 * 32 + 32
    sizes = {"a": _phm_numbers(4, 8, 384, 32, True), "b": _phm_numbers(32, 8, 384, 32, True),
             "c": _tt_numbers(384, 32, 5, True), "d": _tt_numbers(384, 32, 64, True)}
    return "".join(letter for letter, size in sizes.items() if size < dense)


EXERCISES = {
    "20.1": Exercise(
        task="the numbers a PHM layer 768 -> 64 (n 4, k 8) owns",
        verify=lambda answer: integer(answer, _phm_numbers(4, 8, 768, 64), "the PHM layer's numbers"),
        hint="n factors L_s (in/n, k) and n factors R_s (k, out/n), and the bias of out numbers"),
    "20.2": Exercise(
        task="the numbers in the cores of a rank-5 tensor train 768 -> 8",
        verify=lambda answer: integer(answer, _tt_numbers(768, 8, 5, False), "the cores' numbers"),
        hint="sum over the cores of r_(k-1) n_k r_k, with ranks 1, 5, 5, 5, 1 and sizes 8, 12, 8, 8"),
    "20.3": Exercise(
        task="the letters of the layers smaller than a dense 384 -> 32",
        verify=lambda answer: choice(answer, _smaller(), "the smaller layers"),
        hint="a dense 384 -> 32 holds 12,320 numbers; n^3 rules grow fast with n, and a tensor train's "
             "inner cores hold rank^2 n_k numbers each"),
}
