"""Lesson 22's exercises: a negative flip rate, a ported weight, what a patch can be carried across."""
from exercises import Exercise, Sealed, choice, number


def _flips():
    from tinymix.experiments import porting
    return porting.flips("1101101", "0111100")


# The right letters of the multiple-choice exercise, sealed (exercises.seal); the answer key is
# tests/lesson_exercise_answers.py.
RIGHT_22_3 = Sealed("22.3", ("8b50c412636890c4", "e673e827b40a1bbd"))

EXERCISES = {
    "22.1": Exercise(
        task="the negative flip rate from right-before '1101101' to right-after '0111100'",
        verify=lambda answer: number(answer, _flips(), "the negative flip rate"),
        hint="count the positions that are 1 before AND 0 after, and divide by all positions (not by the "
             "changed ones)"),
    "22.2": Exercise(
        task="the ported weight at (0, 0): v2's 0.45 plus the patch (r 4, alpha 32, (B A)[0, 0] = 0.01)",
        verify=lambda answer: number(answer, 0.45 + 32 / 4 * 0.01, "the ported weight"),
        hint="the patch is (alpha / r) B A, added to the NEW base's weight; v1's weight plays no part"),
    "22.3": Exercise(
        task="the letters of the bases a LoRA patch can be carried to unchanged: (a) v1 pretrained further, "
             "(b) a retrained tokenizer of the same size, (c) wider layers, (d) v1 with other LayerNorm gains",
        verify=lambda answer: choice(answer, RIGHT_22_3, "where a patch ports"),
        hint="the patch needs the same shapes (so not c) and the same meaning of every input position and "
             "token id (so not b); weights it does not touch may change"),
}
