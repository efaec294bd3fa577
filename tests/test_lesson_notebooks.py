"""Lessons as Jupyter notebooks: `python3 lessons/run.py NN --notebook` writes one, and a generated
notebook runs headless.

CI has neither Jupyter nor jupytext (they are not in requirements.txt), so the notebook is executed
the way a kernel would run it, by a small executor in a fresh process: read the .ipynb as JSON,
start in the notebook's folder (where Jupyter starts its kernel), run its code cells in order in one
namespace, stop at the first error. That proves the file is a well-formed nbformat-4 notebook whose
cells, in order and from that folder — setup cell included — run the whole lesson and its asserts.
It does not prove what only a real kernel does (IPython magics, rich display, the kernel protocol);
where nbclient and ipykernel are installed, the last test runs the same notebook through a real
kernel as well.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
sys.path.insert(0, str(LESSONS))
import make_notebook  # noqa: E402
import run as runner  # noqa: E402

EXECUTOR = """
import json, sys
notebook = json.load(open(sys.argv[1], encoding="utf-8"))
namespace = {"__name__": "__main__"}
for number, cell in enumerate(notebook["cells"]):
    if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), f"<notebook cell {number}>", "exec"), namespace)
print("all code cells ran")
"""
ENV = {**os.environ, "TINYMIX_FAST": "1", "MPLBACKEND": "Agg"}


def write(path, folder):
    return make_notebook.write_notebook(path, runner.parse_cells(path), runner.LESSONS, folder)


@pytest.mark.parametrize("number", list(runner.lesson_files()))
def test_every_lesson_becomes_a_well_formed_notebook(number, tmp_path):
    path = runner.lesson_files()[number]
    notebook = json.loads(write(path, tmp_path).read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4 and notebook["metadata"]["kernelspec"]["name"] == "python3"
    cells = runner.parse_cells(path)
    assert len(notebook["cells"]) == len(cells) + 1                       # + the setup cell
    for cell, written in zip(cells, notebook["cells"][1:]):
        assert written["cell_type"] == cell.kind
        assert set(written) == ({"cell_type", "metadata", "source"} |
                                ({"execution_count", "outputs"} if cell.kind == "code" else set()))
        text = "".join(written["source"])
        assert text == (cell.source if cell.kind == "code" else cell.prose())
        assert all(line.endswith("\n") for line in written["source"][:-1])
    assert notebook["cells"][0]["cell_type"] == "code" and "sys.path" in "".join(notebook["cells"][0]["source"])


def test_the_notebook_command_writes_where_it_is_told(tmp_path):
    result = subprocess.run([sys.executable, str(LESSONS / "run.py"), "10", "--notebook", "--out", str(tmp_path)],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "10_mixtures_and_routing.ipynb").is_file()
    assert f"notebook written: {tmp_path / '10_mixtures_and_routing.ipynb'}" in result.stdout


@pytest.mark.parametrize("number", ["01", "10"])
def test_a_generated_notebook_runs_headless(number, tmp_path):
    folder = tmp_path / "somewhere" / "else"                         # not next to the lessons
    notebook = write(runner.lesson_files()[number], folder)
    result = subprocess.run([sys.executable, "-c", EXECUTOR, str(notebook)], cwd=folder,
                            env={**ENV, "TINYMIX_LESSON_FIGURES": str(tmp_path)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all code cells ran" in result.stdout and "not answered yet" in result.stdout


def test_a_generated_notebook_runs_in_a_real_kernel(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nbformat = pytest.importorskip("nbformat")
    path = write(runner.lesson_files()["01"], tmp_path)
    notebook = nbformat.read(str(path), as_version=4)
    nbformat.validate(notebook)
    monkeypatch.setenv("TINYMIX_FAST", "1")                           # the kernel inherits it
    monkeypatch.setenv("TINYMIX_LESSON_FIGURES", str(tmp_path))
    nbclient.NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()


def test_a_notebook_holds_no_absolute_path_and_finds_the_lessons_when_moved(tmp_path):
    notebook = write(runner.lesson_files()["01"], LESSONS / "notebooks")
    try:
        text = notebook.read_text(encoding="utf-8")
        assert str(ROOT) not in text and str(LESSONS) not in text     # nothing of the machine that made it
        moved = tmp_path / "moved.ipynb"
        moved.write_text(text, encoding="utf-8")
        setup = "".join(json.loads(text)["cells"][0]["source"]) + "\nprint(_lessons)"
        found = subprocess.run([sys.executable, "-c", setup], cwd=ROOT / "tinymix", env=ENV, capture_output=True,
                               text=True, timeout=60)                      # inside the repository: found upward
        assert found.returncode == 0 and found.stdout.strip() == str(LESSONS), found.stderr
        lost = subprocess.run([sys.executable, "-c", setup], cwd=tmp_path, env=ENV, capture_output=True,
                              text=True, timeout=60)
        assert lost.returncode != 0 and "cannot find tinymix's lessons folder" in lost.stderr
    finally:
        notebook.unlink()
