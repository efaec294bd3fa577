"""Every lesson runs, in fast mode, as a reader would run it; and every lesson keeps the lesson shape.

Each lesson runs in its own process through the lesson runner:

    TINYMIX_FAST=1 python3 lessons/run.py NN --all

and must exit with status 0 — every assert in it is a check of the lesson's claim, so a lesson that
runs is a lesson whose claims hold. Figures go to a temporary folder, not into the repository.
(lessons/support.py holds NumPy's BLAS to one thread unless OPENBLAS_NUM_THREADS is set; CI
inherits that.)
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.numerics

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
sys.path.insert(0, str(LESSONS))
import run as runner  # noqa: E402  (lessons/run.py: the cell parser the runner uses)

NUMBERS = list(runner.lesson_files())
TIMEOUT_S = 240   # a fast-mode lesson takes 1-20 s on 2 busy cores; this only stops a hung one


def test_there_are_lessons():
    assert len(NUMBERS) >= 10, f"expected the numbered lessons in {LESSONS}, found {NUMBERS}"
    assert NUMBERS == [f"{i:02d}" for i in range(len(NUMBERS))], "lessons are numbered 00, 01, ... without gaps"


@pytest.mark.parametrize("number", NUMBERS)
def test_lesson_runs_in_fast_mode(number, tmp_path):
    env = {**os.environ, "TINYMIX_FAST": "1", "TINYMIX_LESSON_FIGURES": str(tmp_path), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(LESSONS / "run.py"), number, "--all", "--no-code"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, (f"lesson {number} failed (exit {result.returncode}):\n"
                                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    assert "done in" in result.stdout
    for figure in re.findall(r"figure saved: (\S+\.png)", result.stdout):
        path = Path(figure)
        assert path.parent == tmp_path and path.stat().st_size > 5000, f"figure {figure} missing or empty"


@pytest.mark.parametrize("number", NUMBERS)
def test_lesson_has_the_lesson_shape(number):
    """Prose first; at least one assert that proves a point; a pointer into the library at the end."""
    path = runner.lesson_files()[number]
    cells = runner.parse_cells(path)
    assert cells[0].kind == "markdown" and cells[0].prose().startswith(f"# Lesson {number}"), \
        f"{path.name} must open with a markdown cell titled '# Lesson {number} ...'"
    assert "Objective:" in cells[0].prose(), f"{path.name}: the first cell states the objective"
    code = "\n".join(cell.source for cell in cells if cell.kind == "code")
    assert re.search(r"^\s*assert ", code, re.MULTILINE), f"{path.name} asserts nothing"
    last = cells[-1]
    assert last.kind == "markdown" and "In the library" in last.prose() and "tinymix/" in last.prose(), \
        f"{path.name} must end with a pointer to the library ('In the library: tinymix/...')"
    for pointer in re.findall(r"tinymix/(\w+)\.py", "\n".join(c.prose() for c in cells if c.kind == "markdown")):
        assert (ROOT / "tinymix" / f"{pointer}.py").is_file(), f"{path.name} points at a missing tinymix/{pointer}.py"


def test_readme_indexes_every_lesson():
    readme = (LESSONS / "README.md").read_text(encoding="utf-8")
    for number, path in runner.lesson_files().items():
        assert path.name in readme, f"lessons/README.md does not list {path.name}"


# The route through the assignments: after which lessons each one comes (the lesson side of the links)
ROUTE = {"A1": ("01", "02"), "A2": ("03", "04"), "A3": ("05", "05"), "A4": ("08", "09"), "A5": ("10", "13")}


@pytest.mark.parametrize("assignment", list(ROUTE))
def test_lessons_point_to_their_assignment(assignment):
    first, last = ROUTE[assignment]
    files = sorted((LESSONS / "assignments").glob(f"{assignment.lower()}_*.py"))
    assert len(files) == 1, f"no single assignment file for {assignment} in lessons/assignments/"
    command = f"python3 -m tinymix.grade lessons/assignments/{files[0].name}"
    span = f"lessons {first}-{last}" if first != last else "this lesson"
    lesson = runner.lesson_files()[last]
    last_cell = runner.parse_cells(lesson)[-1].prose()
    assert f"After {span}, do assignment {assignment}" in last_cell and command in last_cell, \
        f"{lesson.name} must end with 'After {span}, do assignment {assignment}' and `{command}`"
    readme = (LESSONS / "README.md").read_text(encoding="utf-8")
    lessons_named = f"{first}-{last}" if first != last else first
    assert f"| {lessons_named} | {assignment} |" in readme, f"lessons/README.md's route misses {assignment}"


def test_runner_parses_cells_with_their_line_numbers(tmp_path):
    lesson = tmp_path / "99_example.py"
    lesson.write_text("# %% [markdown]\n# # Title\n# prose\n\n# %%\nx = 1\n\n# %% second\nassert x == 1\n")
    cells = runner.parse_cells(lesson)
    assert [c.kind for c in cells] == ["markdown", "code", "code"]
    assert cells[0].prose() == "# Title\nprose"
    assert cells[1].first_line == 6 and cells[2].title == "second" and cells[2].first_line == 9


def test_a_failing_cell_fails_the_run_and_names_its_line(tmp_path):
    lesson = tmp_path / "98_broken.py"
    lesson.write_text("# %% [markdown]\n# # Lesson\n\n# %%\nvalue = 2\n\n# %%\nassert value == 3, 'wrong'\n")
    result = subprocess.run([sys.executable, "-c",
                             "import sys, pathlib; sys.path.insert(0, sys.argv[1]); import run; "
                             "sys.exit(0 if run.run_lesson(pathlib.Path(sys.argv[2])) else 1)",
                             str(LESSONS), str(lesson)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f'File "{lesson}", line 8' in result.stderr and "AssertionError: wrong" in result.stderr
