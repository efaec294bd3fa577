"""Self-checks for the exercises at the end of every lesson.

In a lesson's exercise cell the student writes an answer and runs

    from exercises import check
    check("08.1", my_answer)

which prints one line: `right`, `not right` with what was wrong and a hint, or `not answered yet`
while the answer is still `...` (or, for a function, while it still raises NotImplementedError). It
never raises, so a lesson with unanswered exercises still runs to the end.
`python3 lessons/run.py 08 --exercises` runs only a lesson's exercise cells.

Each lesson's exercises live in exercises/lessonNN.py as EXERCISES = {"NN.k": Exercise(...)}. A
check of a number or of code works out what is right when it runs — from the library, or by testing
the student's function on inputs of its own — so that answer is written nowhere; a multiple-choice
check holds its right letters sealed (a digest per letter, see Sealed), so that reading this folder
does not give them away. None of the answers is in a lesson file; the instructors' answer key is
tests/lesson_exercise_answers.py (a right and a wrong answer to every exercise).
"""
import hashlib
import importlib
import re
from dataclasses import dataclass
from typing import Callable

ID = re.compile(r"^(\d\d)\.(\d+)$")


class Wrong(Exception):
    """Raised by a verify function: the answer is not right; the message says what is off."""


@dataclass
class Exercise:
    task: str                          # one line: what to do (shown while unanswered)
    verify: Callable                   # verify(answer): returns when right, raises Wrong otherwise
    hint: str                          # shown with a wrong answer


def exercises_of(lesson):
    """{id: Exercise} for lesson "NN"; {} if it has none."""
    try:
        module = importlib.import_module(f"exercises.lesson{lesson}")
    except ModuleNotFoundError as error:
        if error.name != f"exercises.lesson{lesson}":
            raise
        return {}
    return module.EXERCISES


def _find(exercise_id):
    match = ID.match(str(exercise_id))
    if not match:
        raise ValueError(f"exercise ids look like '08.1' (lesson, number), got {exercise_id!r}")
    found = exercises_of(match.group(1))
    if exercise_id not in found:
        known = ", ".join(found) or "none"
        raise ValueError(f"lesson {match.group(1)} has no exercise {exercise_id} (it has: {known})")
    return found[exercise_id]


def check(exercise_id, answer):
    """Print whether `answer` is right; True (right), False (not right) or None (not answered yet)."""
    exercise = _find(exercise_id)
    if answer is ... or isinstance(answer, (tuple, list)) and any(part is ... for part in answer):
        print(f"[{exercise_id}] not answered yet: {exercise.task}")
        return None
    try:
        exercise.verify(answer)
    except NotImplementedError:           # a function still holding its stub
        print(f"[{exercise_id}] not answered yet: {exercise.task}")
        return None
    except Wrong as wrong:
        print(f"[{exercise_id}] not right: {wrong}\n    hint: {exercise.hint}")
        return False
    except Exception as error:            # the student's own code raised: say what, not a traceback
        print(f"[{exercise_id}] not right: your answer raised {type(error).__name__}: {error}\n"
              f"    hint: {exercise.hint}")
        return False
    print(f"[{exercise_id}] right")
    return True


# ---- helpers the verify functions share ---------------------------------------------------------

def number(answer, expected, what, rel=1e-6, abs_=0.0):
    """Raise Wrong unless the number `answer` is within rel (relative) or abs_ of `expected`."""
    try:
        value = float(answer)
    except (TypeError, ValueError):
        raise Wrong(f"{what} should be a number, got {answer!r}") from None
    if not abs(value - expected) <= max(abs_, rel * abs(expected)):
        raise Wrong(f"{what}: {value:.6g} is off")


def integer(answer, expected, what):
    """Raise Wrong unless `answer` is the whole number `expected`."""
    if isinstance(answer, bool) or not isinstance(answer, int) and not (
            hasattr(answer, "is_integer") and float(answer).is_integer()):
        raise Wrong(f"{what} should be a whole number, got {answer!r}")
    if int(answer) != expected:
        raise Wrong(f"{what}: {int(answer):,d} is {'too many' if int(answer) > expected else 'too few'}")


def _digest(exercise_id, letter):
    return hashlib.sha256(f"tinymix exercise {exercise_id}: {letter}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Sealed:
    """The right letters of a multiple-choice exercise, as one digest per letter: a check can tell
    whether a letter is right, a reader of the file cannot see which. (Sealed, not secret: anyone
    may hash the letters a to z. It keeps the answer from sitting in plain sight next to the task.)
    An instructor makes one with seal("NN.k", "bcd")."""
    exercise_id: str
    digests: tuple

    def holds(self, letter):
        return _digest(self.exercise_id, letter) in self.digests


def seal(exercise_id, letters):
    """Sealed right letters, for an exercise file: `python3 -c 'from exercises import seal;
    print(seal("00.3", "bcd"))'` from lessons/ prints the line to paste."""
    return Sealed(exercise_id, tuple(sorted({_digest(exercise_id, letter) for letter in letters})))


def choice(answer, expected, what):
    """Raise Wrong unless the letters of `answer` are exactly the right ones: `expected` is a Sealed
    set (see seal) or, where a check works the answer out when it runs, a string of letters."""
    if not isinstance(answer, str):
        raise Wrong(f"{what}: answer with the letters of your choices, as a string such as 'b' or 'ac'")
    given = set(answer.replace(",", "").replace(" ", "").lower())
    if isinstance(expected, Sealed):
        right, count = {letter for letter in given if expected.holds(letter)}, len(expected.digests)
    else:
        right, count = given & set(expected), len(set(expected))
    extra, missing = given - right, count - len(right)
    if extra or missing:
        parts = ([f"{len(extra)} of your choices is not right" if len(extra) == 1 else
                  f"{len(extra)} of your choices are not right"] if extra else []) + \
                (["a right choice is missing"] if missing else [])
        raise Wrong(f"{what}: " + "; ".join(parts))


def array(answer, expected, what, atol=1e-6, rtol=1e-5):
    """Raise Wrong unless `answer` has expected's shape and values (to atol + rtol |expected|)."""
    from tinymix import backend
    from tinymix.backend import xp
    if hasattr(answer, "data") and not backend.is_array(answer):     # a Tensor: compare its values
        answer = answer.data
    try:
        got = xp.asarray(answer, dtype=xp.float64)
    except (TypeError, ValueError):
        raise Wrong(f"{what} should be an array, got {type(answer).__name__}") from None
    expected = xp.asarray(expected, dtype=xp.float64)
    if got.shape != expected.shape:
        raise Wrong(f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    off = abs(got - expected) > atol + rtol * abs(expected)
    if bool(off.any()):
        raise Wrong(f"{what}: {int(off.sum())} of {off.size} values are off "
                    f"(largest difference {float(abs(got - expected).max()):.3g})")
