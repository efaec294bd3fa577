"""The grader on files and folders as a class hands them in, and on its own limits: grades always
written (atomically, never in the class folder, to a named fallback when the path cannot be written);
one grade per student and assignment; names and texts that are not UTF-8 or hold control characters;
files saved with a BOM, a coding line or CRLF; a numpy.py in the folder the grader starts from; memory,
answer size and the per-file time budget, each named plainly."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinymix import grade
from tinymix.grading.cli import grade_file
from tinymix.grading.runner import Isolation

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = Path(__file__).parent / "solutions"
SOLVED_A1 = (SOLUTIONS / "a1_autograd.py").read_text()


def grade_command(args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "tinymix.grade", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def a_class(tmp_path, files):
    folder = tmp_path / "class"
    for name, source in files.items():
        path = folder / os.fsdecode(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source if isinstance(source, bytes) else source.encode())
    return folder


# ---- grades always written ---------------------------------------------------------------------------------

def test_a_folder_at_the_csv_path_sends_the_grades_to_a_named_fallback(tmp_path, capsys):
    folder = a_class(tmp_path, {"alice/a1_autograd.py": SOLVED_A1})
    (tmp_path / "grades.csv").mkdir()
    status = grade.main([str(folder), "--csv", str(tmp_path / "grades.csv"), "--json", str(tmp_path / "g.json")])
    err = capsys.readouterr().err
    assert status == 3 and "cannot write" in err and "wrote the grades to" in err
    fallback = Path(err.split("wrote the grades to ", 1)[1].split(" instead")[0])
    assert fallback.parent == tmp_path and fallback.suffix == ".csv"
    assert "alice" in fallback.read_text() and json.loads((tmp_path / "g.json").read_text())["students"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]       # no temporary file left


def test_grades_are_never_written_inside_the_class_folder(tmp_path):
    folder = a_class(tmp_path, {"alice/a1_autograd.py": SOLVED_A1})
    done = grade_command([folder, "--csv", folder / "grades.csv"])
    assert done.returncode == 2 and "is inside the class folder" in done.stderr
    assert not (folder / "grades.csv").exists()


def test_five_copies_of_one_file_count_once_and_the_report_says_which(tmp_path):
    files = {"bob/a1_autograd.py": SOLVED_A1}
    files.update({f"bob/copy{i}/a1_autograd.py": SOLVED_A1 for i in range(3)})
    files["bob/mine.py"] = SOLVED_A1                        # its functions say A1
    folder = a_class(tmp_path, files)
    assert grade.main([str(folder), "--csv", str(tmp_path / "g.csv"), "--time-limit", "2"]) == 0
    rows = list(csv.DictReader((tmp_path / "g.csv").open()))
    total = next(r for r in rows if r["task"] == "total")
    assert (total["score"], total["points"]) == ("10", "10")
    skipped = [r for r in rows if r["status"] == "not counted"]
    assert len(skipped) == 4
    assert all(r["message"].startswith(f"{folder / 'bob' / 'a1_autograd.py'} counts for A1 (it is named "
                                       "a1_autograd.py, and it is the nearest") for r in skipped)


def test_a_name_that_is_not_utf8_and_control_characters_are_shown_escaped(tmp_path):
    loud = SOLVED_A1.replace("def mul_backward(g, a, b):\n", "def mul_backward(g, a, b):\n"
                             "    raise ValueError('\\x1b[2K\\rALL PASSED')\n")
    folder = a_class(tmp_path, {b"caf\xe9/a1_autograd.py": SOLVED_A1, "zed/a1_autograd.py": loud})
    done = grade_command([folder, "--csv", tmp_path / "g.csv", "--json", tmp_path / "g.json", "--all-failures"])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "caf\\xe9" in done.stdout and "\x1b" not in done.stdout + done.stderr and "\r" not in done.stdout
    text = (tmp_path / "g.csv").read_text(encoding="utf-8")
    assert "caf\\xe9" in text and "\x1b" not in text and "\\x1b[2K\\rALL PASSED" in text
    assert json.loads((tmp_path / "g.json").read_text())["students"][0]["student"] == "caf\\xe9"


# ---- files as students save them ----------------------------------------------------------------------------

@pytest.mark.parametrize("saved", [
    ("\ufeff" + SOLVED_A1).encode(),                                          # a BOM (Notepad)
    SOLVED_A1.replace("\n", "\r\n").encode(),                                 # CRLF line ends
    ("# -*- coding: latin-1 -*-\n# r\xe9sum\xe9 \xe0 rendre\n" + SOLVED_A1).encode("latin-1"),   # PEP 263
], ids=["bom", "crlf", "latin-1"])
def test_a_file_is_graded_as_python_runs_it(tmp_path, saved):
    path = tmp_path / "a1_autograd.py"
    path.write_bytes(saved)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    assert subprocess.run([sys.executable, str(path)], capture_output=True, env=env).returncode == 0   # as Python runs it
    graded = grade_file(path)
    assert graded.error is None and graded.score == 10, graded


def test_a_numpy_py_in_the_folder_the_grader_starts_from_never_runs_in_the_grader(tmp_path):
    folder = a_class(tmp_path, {"alice/a1_autograd.py": SOLVED_A1})
    ran = tmp_path / "numpy-ran"
    (folder / "numpy.py").write_text(f"open({str(ran)!r}, 'w').close()\nraise SystemExit('a student numpy')\n")
    done = grade_command([".", "--csv", tmp_path / "g.csv"], cwd=folder)
    assert not ran.exists() and "a student numpy" not in done.stderr, done.stderr
    assert "alice" in done.stdout and (tmp_path / "g.csv").exists()


# ---- limits of its own --------------------------------------------------------------------------------------

def test_using_too_much_memory_is_named_as_such(tmp_path):
    path = tmp_path / "a1_autograd.py"
    path.write_text(SOLVED_A1.replace("def mul_backward(g, a, b):\n",
                                      "def mul_backward(g, a, b):\n    hog = xp.ones(400 << 20)\n"))
    graded = grade_file(path, only={"A1.2"}, isolation=Isolation(memory=1 << 30))
    result = graded.results[0]
    assert result.status == "error" and "used more than 1 GB of memory" in result.failures[0][1], result.failures


def test_an_800_mb_answer_is_named_by_its_size(tmp_path):
    path = tmp_path / "a1_autograd.py"
    path.write_text(SOLVED_A1.replace("def sum_backward(g, shape, axis=None, keepdims=False):\n",
                                      "def sum_backward(g, shape, axis=None, keepdims=False):\n"
                                      "    return xp.zeros(100_000_000)\n"))
    result = grade_file(path, only={"A1.3"}).results[0]
    assert result.status == "failed" and "returned 800 MB of arrays" in result.failures[0][1], result.failures


def test_a_file_that_sleeps_under_each_limit_runs_out_of_its_own_budget(tmp_path):
    path = tmp_path / "a1_autograd.py"
    slow = "def {0}(\\1):\n    import time\n    time.sleep(0.6)\n"
    source = SOLVED_A1
    for name in ("unbroadcast", "mul_backward", "sum_backward", "matmul_backward"):
        source = re.sub(rf"def {name}\((.*?)\):\n", slow.format(name), source, count=1)
    path.write_text(source)
    graded = grade_file(path, time_limit=1, isolation=Isolation(budget=2))
    statuses = [r.status for r in graded.results]
    assert "timed out" in statuses and graded.seconds < 6, (statuses, graded.seconds)
    assert any("ran out of its 2 s" in r.failures[0][1] for r in graded.results if r.status == "timed out")
