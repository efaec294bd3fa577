"""The grader for an instructor: a class folder graded into CSV and JSON (one row per file and task, load
errors included, a total per student), hidden cases from a secret seed, partial credit, and the
package: the grader and the assignment files work from any folder."""
import csv
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from make_class import KINDS, make_class
from tinymix import grade
from tinymix.assignments import ASSIGNMENTS, Draw, assignment
from tinymix.grading import judge, wire
from tinymix.grading.cli import grade_file

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = Path(__file__).parent / "solutions"


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class")
    made = make_class(folder, len(KINDS))
    (folder / "zoe").mkdir()
    (folder / "zoe" / "notes.py").write_text("print('not an assignment')\n")      # cannot tell which one
    out = folder.parent
    status = grade.main([str(folder), "--csv", str(out / "grades.csv"), "--json", str(out / "grades.json"),
                         "--time-limit", "1"])
    rows = list(csv.DictReader((out / "grades.csv").open()))
    return made, status, rows, json.loads((out / "grades.json").read_text())


def test_a_class_gets_one_row_per_file_and_task_and_a_total_per_student(graded_class):
    made, status, rows, _ = graded_class
    assert status == 1
    assert list(rows[0]) == ["student", "file", "assignment", "task", "function", "status", "score", "points",
                             "checks_passed", "checks_total", "seconds", "message"]
    for student, (kind, filename) in made.items():
        own = [r for r in rows if r["student"] == student]
        a = next(a for a in ASSIGNMENTS if a.filename == filename)
        assert [r["task"] for r in own] == [t.id for t in a.tasks] + ["total"], student
        total = own[-1]
        assert float(total["score"]) == sum(float(r["score"]) for r in own[:-1])
        assert int(total["points"]) == a.points
        statuses = {r["status"] for r in own[:-1]}
        expected = {"correct": {"passed"}, "wrong": {"passed", "failed"}, "crashing": {"passed", "error"},
                    "looping": {"passed", "timed out"}, "cheating": {"passed", "error"},
                    "load error": {"error"}}[kind]
        assert statuses == expected, (student, kind, statuses)
        if kind == "load error":
            assert all("SyntaxError" in r["message"] for r in own[:-1])
        if kind == "cheating":
            assert any("is not available while this file is graded" in r["message"] for r in own[:-1])
        if kind == "correct":
            assert float(total["score"]) == a.points


def test_a_file_that_answers_no_assignment_is_a_row_of_its_own(graded_class):
    _, _, rows, data = graded_class
    zoe = [r for r in rows if r["student"] == "zoe"]
    assert zoe[0]["status"] == "error" and "cannot tell which assignment" in zoe[0]["message"]
    assert zoe[-1]["task"] == "total" and zoe[-1]["score"] == "0"
    assert [s["student"] for s in data["students"]][-1] == "zoe"


def test_the_json_report_holds_every_failure_and_the_settings(graded_class):
    made, _, _, data = graded_class
    assert data["hidden_cases"] is False and data["partial_credit"] is False and data["time_limit"] == 1
    looping = next(s for s in data["students"] if made.get(s["student"], ("",))[0] == "looping")
    tasks = looping["files"][0]["tasks"]
    timed_out = [t for t in tasks if t["status"] == "timed out"]
    assert len(timed_out) == 1 and "did not finish within 1 s" in timed_out[0]["failures"][0]["message"]


def test_partial_credit_scores_the_share_of_checks_passed(tmp_path):
    path = tmp_path / "a1_autograd.py"
    path.write_text(textwrap.dedent("""
        from tinymix.backend import xp


        def sum_backward(g, shape, axis=None, keepdims=False):
            axis = tuple(range(len(shape))) if axis is None else (axis,) if isinstance(axis, int) else axis
            return xp.broadcast_to(xp.expand_dims(g, tuple(a % len(shape) for a in axis)), shape) * 1.0
    """))                                   # right without keepdims; with it, broadcast_to raises
    whole = grade_file(path, only={"A1.3"}).results[0]
    partial = grade_file(path, only={"A1.3"}, partial=True).results[0]
    assert (whole.status, whole.passed, whole.total, whole.score) == ("error", 4, 7, 0)
    assert partial.score == round(2 * 4 / 7, 2)


HARD_CODED = """
from tinymix.backend import xp

ANSWERS = {answers!r}


def unbroadcast(grad, shape):
    return xp.asarray(ANSWERS[round(float(grad.reshape(-1)[0]), 9)])
"""


def test_hidden_cases_defeat_answers_hard_coded_for_the_visible_ones(tmp_path, monkeypatch):
    task = assignment("A1").tasks[0]
    prepared = judge.prepare(task, Draw())
    answers = {}
    for case, answer in zip(prepared.cases, judge.expected_answers(prepared)):
        answers[round(float(case.args[0].reshape(-1)[0]), 9)] = answer.array.tolist()
    path = tmp_path / "a1_autograd.py"
    path.write_text(HARD_CODED.format(answers=answers))
    assert grade_file(path, only={"A1.1"}).results[0].status == "passed"              # the visible cases
    hidden = grade_file(path, only={"A1.1"}, seed=8123).results[0]
    assert hidden.status == "error" and "KeyError" in hidden.failures[0][1]
    solved = grade_file(SOLUTIONS / "a1_autograd.py", only={"A1.1"}, seed=8123).results[0]
    assert solved.status == "passed"                                                 # same shapes, new values
    monkeypatch.setenv("TINYMIX_GRADE_SEED", "8123")              # the same, from the environment
    assert grade.main([str(path), "--task", "A1.1"]) == 1


def test_the_secret_seed_never_reaches_the_submission(tmp_path, monkeypatch):
    """Not in its environment, its arguments, its folder, nor the pipe that brought the request (read
    and closed before the file runs)."""
    monkeypatch.setenv("TINYMIX_GRADE_SEED", "8123")
    path = tmp_path / "a1_autograd.py"
    path.write_text(textwrap.dedent("""
        import os
        import sys
        print("seed:", os.environ.get("TINYMIX_GRADE_SEED"), "argv:", sys.argv[1:], "folder:", os.listdir("."))
        for fd in range(3, 64):
            try:
                print("read", fd, os.read(fd, 100))
            except OSError as error:
                pass
    """))
    graded = grade_file(path, seed=8123)
    assert graded.output.startswith("seed: None argv: [] folder: []"), graded.output
    assert "read" not in graded.output and "8123" not in graded.output


def test_hidden_cases_keep_the_shapes_and_change_the_values():
    for a in ASSIGNMENTS:
        for task in a.tasks:
            visible, hidden = task.cases(Draw()), task.cases(Draw(8123))
            assert [c.label for c in visible] == [c.label for c in hidden]
            v, h = (wire.encode(tuple(c.args)) for c in (visible[0], hidden[0]))
            assert v != h, task.id
            v, h = (wire.decode_inputs(p).given for p in (v, h))
            assert [a.shape for a in v] == [a.shape for a in h], task.id


# ---- the package -----------------------------------------------------------------------------------------

def test_the_package_metadata_installs_tinymix_with_requirements_txt():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["build-system"]["build-backend"] == "setuptools.build_meta"
    dynamic = config["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    assert dynamic["optional-dependencies"]["gpu"] == {"file": ["requirements-gpu.txt"]}
    assert dynamic["optional-dependencies"]["export"] == {"file": ["requirements-export.txt"]}
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "tinymix").rglob("__init__.py")]
    assert all(p == "tinymix" or (p.startswith("tinymix.") and "tinymix.*" in include) for p in packages)
    assert "tinymix" in include and "tinymix.grading" in packages


def test_the_grader_and_the_assignment_files_run_from_another_folder(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))     # what `pip install -e .` gives, without installing
    solution = tmp_path / "mine.py"
    solution.write_text((SOLUTIONS / "a4_adapter_lora.py").read_text())
    done = subprocess.run([sys.executable, "-m", "tinymix.grade", "mine.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "10 / 10" in done.stdout, done.stdout + done.stderr
    stub = subprocess.run([sys.executable, str(ROOT / "lessons" / "assignments" / "a5_adamix.py")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert stub.returncode == 0, stub.stderr
