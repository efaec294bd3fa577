"""Turn a lesson (a `# %%` percent-format file) into a Jupyter notebook, with no dependency.

    python3 lessons/run.py 08 --notebook              # -> lessons/notebooks/08_adapters.ipynb
    python3 lessons/run.py all --notebook --out DIR   # every lesson, into DIR

The notebook holds the lesson's cells in order — prose cells as markdown (without the comment
marks), code cells as code — after one setup cell that puts the lessons folder (for `support` and
`exercises`) and the repository (for `tinymix`) on sys.path. Jupyter starts a notebook's kernel in
the notebook's folder, so the setup cell finds them by the relative path from where the notebook
was written; if the notebook was moved, it looks for a `lessons/` folder in the working folder and
the folders above it. The notebook holds no absolute path of the machine that made it.

Students with jupytext installed (an optional extra, never needed by tinymix) can instead run
`jupytext --to ipynb lessons/08_adapters.py`: the lessons are already in its percent format, and a
notebook written next to the lessons finds `support` without a setup cell.

The format is nbformat 4.4 (no cell ids), which every Jupyter front end reads.
"""
import json
import os
from pathlib import Path


SETUP = '''# Setup (added by lessons/make_notebook.py): the lessons folder and the repository on sys.path.
import sys
from pathlib import Path

_lessons = (Path.cwd() / {relative!r}).resolve()
if not (_lessons / "support.py").is_file():      # the notebook was moved: look for lessons/ from here up
    _found = [p / "lessons" for p in (Path.cwd(), *Path.cwd().parents) if (p / "lessons" / "support.py").is_file()]
    if not _found:
        raise RuntimeError("this notebook cannot find tinymix's lessons folder: start Jupyter inside the tinymix "
                           "repository, or write the notebook again with `python3 lessons/run.py NN --notebook`")
    _lessons = _found[0]
for _folder in (str(_lessons), str(_lessons.parent)):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)'''


def _source(text):
    """nbformat stores a cell's text as a list of lines, each but the last ending in a newline."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def _markdown(text):
    return {"cell_type": "markdown", "metadata": {}, "source": _source(text)}


def _code(text):
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": _source(text)}


def lesson_notebook(cells, lessons, folder):
    """The notebook (a dict, ready for json.dump) of a lesson's cells (run.parse_cells), to be written
    in `folder`; `lessons` is the lessons folder."""
    setup = SETUP.format(relative=os.path.relpath(lessons, Path(folder).resolve()))
    notebook_cells = [_code(setup)]
    for cell in cells:
        if cell.kind == "markdown":
            notebook_cells.append(_markdown(cell.prose()))
        else:
            notebook_cells.append(_code(cell.source))
    return {
        "cells": notebook_cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 4,
    }


def write_notebook(path, cells, lessons, folder=None):
    """Write lesson `path` (its cells, run.parse_cells) as NN_name.ipynb in `folder` (default
    lessons/notebooks); `lessons` is the lessons folder. Returns the file."""
    folder = Path(folder) if folder is not None else Path(lessons) / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (Path(path).stem + ".ipynb")
    notebook = lesson_notebook(cells, lessons, folder)
    target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return target
