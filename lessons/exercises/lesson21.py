"""Lesson 21's exercises: TIES by hand, task arithmetic's mean, which merges are exact in LoRA's factors."""
from exercises import Exercise, Sealed, array, choice, number

VECTORS = ([1.0, -2.0, 0.5, 0.0], [-3.0, 1.0, 0.2, 0.4], [0.5, 1.5, -0.1, -2.0])


def _ties():
    from tinymix import merging
    return merging.ties(VECTORS, density=0.5)


# The right letters of the multiple-choice exercise, sealed (exercises.seal); the answer key is
# tests/lesson_exercise_answers.py.
RIGHT_21_3 = Sealed("21.3", ("115248c532fc7037", "7b2b5f986776e83f"))

EXERCISES = {
    "21.1": Exercise(
        task="TIES of the three vectors VECTORS (top 50% of each kept, lambda 1), as an array of 4 numbers",
        verify=lambda answer: array(answer, _ties(), "the TIES merge"),
        hint="keep the 2 largest magnitudes of each vector; the elected sign of an entry is the sign of the "
             "sum of the kept values (a sum of 0 elects +); average only the kept values with that sign, and "
             "an entry where none agrees is 0"),
    "21.2": Exercise(
        task="the lambda at which task arithmetic over 8 experts is their mean",
        verify=lambda answer: number(answer, 1 / 8, "lambda"),
        hint="task arithmetic scales the SUM of the task vectors"),
    "21.3": Exercise(
        task="the letters of the operators that are exact in the factors of AdaMix-LoRA with B shared: "
             "(a) the mean, (b) task arithmetic, (c) TIES, (d) PCB",
        verify=lambda answer: choice(answer, RIGHT_21_3, "which merges stay one LoRA of rank r"),
        hint="B A_1 + ... + B A_M = B (A_1 + ... + A_M): which operators are linear in the A's? TIES and "
             "PCB act entry by entry on the products, through magnitudes and signs"),
}
