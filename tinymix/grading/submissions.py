"""Which files to grade, whose they are, and which assignment each answers.

    python -m tinymix.grade a2_softmax_layernorm.py            one file (its student: its folder's name)
    python -m tinymix.grade CLASS/                              every .py file below CLASS:
        CLASS/alice/a1_autograd.py, CLASS/alice/a2_...py         student "alice" (the first folder)
        CLASS/bob.py                                             student "bob" (a file directly in CLASS)

A file answers the assignment its name says (a1_autograd.py ...), else the one whose task functions
it defines (read from its syntax tree: the grader never runs a submission in its own process).
"""
import ast
from dataclasses import dataclass
from pathlib import Path

from ..assignments import ASSIGNMENTS, assignment


@dataclass
class Submission:
    path: Path
    student: str


def find(paths):
    """Submissions for the files and folders named on the command line, in a stable order.
    Raises FileNotFoundError for a path that does not exist."""
    found = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for file in sorted(path.rglob("*.py")):
                parts = file.relative_to(path).parts
                if any(part.startswith((".", "__")) for part in parts):
                    continue
                found.append(Submission(file, parts[0] if len(parts) > 1 else file.stem))
        elif path.is_file():
            found.append(Submission(path, path.resolve().parent.name))
        else:
            raise FileNotFoundError(f"{name}: no such file or folder")
    return found


def assignment_of(path, source, assignment_id=None):
    """The assignment a file answers; ValueError saying how to name it when that cannot be told."""
    if assignment_id:
        return assignment(assignment_id)
    for a in ASSIGNMENTS:
        if Path(path).name == a.filename:
            return a
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ValueError(f"cannot tell which assignment {path} answers: it does not parse (SyntaxError at line "
                         f"{error.lineno}: {error.msg}) and its name is none of the assignment files") from None
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    scores = sorted(((sum(t.name in defined for t in a.tasks), a.id) for a in ASSIGNMENTS), reverse=True)
    if scores[0][0] == 0 or scores[0][0] == scores[1][0]:
        raise ValueError(f"cannot tell which assignment {path} answers: keep its file name "
                         f"({', '.join(a.filename for a in ASSIGNMENTS)}) or pass --assignment A1..A5")
    return assignment(scores[0][1])


def read(path):
    """The source of a submission; ValueError for a file that is not UTF-8 text."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file") from None
