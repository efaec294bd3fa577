"""The lessons' exercises: every one has a self-check that accepts a right answer, rejects a wrong one
with a hint, and says "not answered yet" to the stub; every lesson ends with two or three of them.

The right and wrong answers are in tests/lesson_exercise_answers.py, not in the lessons."""
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.numerics

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
sys.path.insert(0, str(LESSONS))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as runner  # noqa: E402
from exercises import check, exercises_of  # noqa: E402
from lesson_exercise_answers import ANSWERS  # noqa: E402

NUMBERS = list(runner.lesson_files())
ALL_IDS = [i for n in NUMBERS for i in exercises_of(n)]


@pytest.mark.parametrize("number", NUMBERS)
def test_every_lesson_ends_with_two_or_three_exercises(number):
    path = runner.lesson_files()[number]
    cells = runner.parse_cells(path)
    in_cells = [c for c in cells if c.is_exercise]
    registered = exercises_of(number)
    assert 2 <= len(registered) <= 3, f"{path.name}: {len(registered)} exercises in lessons/exercises/lesson{number}.py"
    asked = [re.search(r'check\("(\d\d\.\d+)"', c.source).group(1) for c in in_cells]
    assert asked == list(registered), f"{path.name}: exercise cells {asked}, self-checks {list(registered)}"
    for cell in in_cells:
        assert cell.title.split()[-1] in cell.source, f"{path.name}: cell '{cell.title}' checks another exercise"
    last_exercise = max(i for i, c in enumerate(cells) if c.is_exercise)
    assert all(c.kind == "markdown" for c in cells[last_exercise + 1:]), f"{path.name}: exercises come last"


def test_every_exercise_has_answers_to_test_with():
    assert sorted(ANSWERS) == sorted(ALL_IDS)


@pytest.mark.parametrize("exercise_id", ALL_IDS)
def test_self_check_tells_right_from_wrong(exercise_id, capsys):
    right, wrong = ANSWERS[exercise_id]
    assert check(exercise_id, right) is True, capsys.readouterr().out
    assert f"[{exercise_id}] right" in capsys.readouterr().out
    assert check(exercise_id, wrong) is False
    out = capsys.readouterr().out
    assert f"[{exercise_id}] not right" in out and "hint:" in out


@pytest.mark.parametrize("exercise_id", ALL_IDS)
def test_the_stub_is_not_answered_yet(exercise_id, capsys):
    def stub(*args):
        raise NotImplementedError("exercise")
    right, _ = ANSWERS[exercise_id]
    for unanswered in (..., (..., ...)) + ((stub,) if callable(right) else ()):
        assert check(exercise_id, unanswered) is None
        assert "not answered yet" in capsys.readouterr().out


def test_a_student_error_is_reported_without_a_traceback(capsys):
    def broken(x):
        return x.no_such_attribute
    assert check("02.2", broken) is False
    out = capsys.readouterr().out
    assert "raised AttributeError" in out and "Traceback" not in out


def test_an_unknown_exercise_is_a_clear_error():
    with pytest.raises(ValueError, match="has no exercise 00.9"):
        check("00.9", 1)
    with pytest.raises(ValueError, match="look like '08.1'"):
        check("8.1", 1)
