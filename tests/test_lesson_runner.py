"""lessons/run.py as a reader meets it: what it runs without a lesson number, how q and Ctrl-C end a
lesson, what its times count, where fast-mode figures go, and clear errors for what a reader can
get wrong."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
sys.path.insert(0, str(LESSONS))
import run as runner  # noqa: E402

ENV = {**os.environ, "TINYMIX_FAST": "1", "MPLBACKEND": "Agg"}


def _lesson(tmp_path, text, name="97_example.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _runner(*args, stdin=None, tmp_path=None):
    env = {**ENV, "TINYMIX_LESSON_FIGURES": str(tmp_path)} if tmp_path else ENV
    return subprocess.run([sys.executable, str(LESSONS / "run.py"), *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_all_without_a_lesson_runs_every_lesson():
    parser = runner._parser()
    available = runner.lesson_files()
    assert runner._chosen(parser, parser.parse_args(["--all"]), available) == list(available)
    assert runner._chosen(parser, parser.parse_args(["all", "--all"]), available) == list(available)
    assert runner._chosen(parser, parser.parse_args(["7", "--all"]), available) == ["07"]
    assert runner._chosen(parser, parser.parse_args([]), available) is None        # the list


def test_step_without_a_lesson_says_what_to_type():
    result = _runner("--step")
    assert result.returncode == 2 and "--step needs a lesson: python3 lessons/run.py 08 --step" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_lesson_is_a_clear_error():
    result = _runner("99", "--all")
    assert result.returncode == 2 and "no lesson '99'" in result.stderr and "Traceback" not in result.stderr


def test_q_at_the_prompt_stops_without_saying_done():
    result = _runner("01", "--step", "--no-code", stdin="q\n")
    assert result.returncode == 0, result.stderr
    assert "01_autograd.py: stopped after cell 1 of" in result.stdout
    assert "done in" not in result.stdout and "cell 2/" not in result.stdout


def test_ctrl_c_at_the_prompt_ends_cleanly():
    process = subprocess.Popen([sys.executable, str(LESSONS / "run.py"), "01", "--step", "--no-code"], cwd=ROOT,
                               env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    seen = ""
    deadline = time.monotonic() + 60
    while "[Enter: next cell, q: quit]" not in seen and time.monotonic() < deadline:
        seen += os.read(process.stdout.fileno(), 4096).decode()
    assert "[Enter: next cell, q: quit]" in seen, seen[-2000:]
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted in cell 1 of" in seen + out and "Traceback" not in err


def test_ctrl_c_inside_a_cell_ends_cleanly(tmp_path):
    lesson = _lesson(tmp_path, "# %%\nx = 1\n\n# %%\nraise KeyboardInterrupt\n\n# %%\ny = 2\n")
    outcome = runner.run_lesson(lesson, show_code=False)
    assert outcome.status == "interrupted" and outcome.cells_run == 2 and not outcome


def test_cell_times_leave_out_the_prompt(tmp_path, monkeypatch, capsys):
    lesson = _lesson(tmp_path, "# %%\nx = 1\n\n# %%\ny = 2\n\n# %%\nz = 3\n")
    monkeypatch.setattr(runner, "_ask", lambda prompt: time.sleep(0.4) or "")    # a slow reader
    started = time.perf_counter()
    outcome = runner.run_lesson(lesson, step=True, show_code=False)
    assert outcome.status == "done" and time.perf_counter() - started >= 0.8
    assert outcome.seconds < 0.2, "the time spent at the prompt is not the lesson's"


def test_exercises_only_runs_the_exercise_cells(tmp_path, capsys):
    lesson = _lesson(tmp_path, "# %%\nraise AssertionError('not an exercise')\n\n# %% exercise 97.1\nprint('ran 97.1')\n")
    outcome = runner.run_lesson(lesson, show_code=False, exercises_only=True)
    assert outcome.status == "done" and outcome.cells_run == 1 and "ran 97.1" in capsys.readouterr().out


def test_fast_mode_figures_have_their_own_folder():
    code = "import support; print(support.figure_path('x.png'))"
    env = {k: v for k, v in ENV.items() if k != "TINYMIX_LESSON_FIGURES"}
    fast = subprocess.run([sys.executable, "-c", code], cwd=LESSONS, env=env, capture_output=True, text=True)
    full = subprocess.run([sys.executable, "-c", code], cwd=LESSONS, env={**env, "TINYMIX_FAST": "0"},
                          capture_output=True, text=True)
    assert Path(fast.stdout.strip()).parent == LESSONS / "figures" / "fast"
    assert Path(full.stdout.strip()).parent == LESSONS / "figures"


def test_two_lessons_with_one_number_are_refused(tmp_path, monkeypatch):
    for name in ("03_one.py", "03_other.py"):
        (tmp_path / name).write_text("# %%\nx = 1\n")
    with pytest.raises(runner.LessonError, match="two lessons are numbered 03"):
        runner.lesson_files(tmp_path)
