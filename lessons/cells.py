"""A lesson's cells, and where the lessons are: the one parser every lesson tool shares (the runner,
the notebook and HTML writers, the catalogue, the tests).

A lesson is a plain Python file in the `# %%` cell format: a line `# %% [markdown]` starts a prose
cell (a block of comment lines), a line starting `# %%` starts a code cell; a code cell titled
"# %% exercise NN.k" holds an exercise.
"""
import re
from pathlib import Path

LESSONS = Path(__file__).resolve().parent
LESSON_NAME = re.compile(r"^(\d\d)_\w+\.py$")
CELL_MARK = re.compile(r"^# %%(.*)$")
EXERCISE_TITLE = "exercise"     # a code cell titled "# %% exercise NN.k" holds an exercise


class LessonError(Exception):
    """Something the reader can fix (a bad lesson number, two lessons with one number)."""


def lesson_files(folder=LESSONS):
    """{"08": Path(".../08_adapters.py"), ...} for every numbered lesson in `folder`, in order."""
    found = {}
    for path in sorted(Path(folder).iterdir()):
        match = LESSON_NAME.match(path.name)
        if match:
            number = match.group(1)
            if number in found:
                raise LessonError(f"two lessons are numbered {number}: {found[number].name} and {path.name}; "
                                  "renumber one of them")
            found[number] = path
    return found


class Cell:
    def __init__(self, kind, title, lines, first_line):
        self.kind, self.title, self.lines, self.first_line = kind, title, lines, first_line

    @property
    def source(self):
        return "\n".join(self.lines).strip("\n")

    @property
    def is_exercise(self):
        return self.kind == "code" and self.title.lower().startswith(EXERCISE_TITLE)

    def prose(self):
        """A markdown cell's text without its comment marks."""
        return "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in self.lines).strip()


def parse_cells(path):
    """The cells of a lesson, in order. Text before the first marker (a docstring, say) is a code cell."""
    cells, kind, title, lines, first = [], "code", "", [], 1
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        mark = CELL_MARK.match(line)
        if mark:
            if "".join(lines).strip():
                cells.append(Cell(kind, title, lines, first))
            rest = mark.group(1).strip()
            kind = "markdown" if rest.startswith("[markdown]") else "code"
            title = rest.removeprefix("[markdown]").strip()
            lines, first = [], number + 1
        else:
            lines.append(line)
    if "".join(lines).strip():
        cells.append(Cell(kind, title, lines, first))
    return cells
