"""Which files to grade, whose they are, and which assignment each answers.

    python3 -m tinymix.grade a2_softmax_layernorm.py            one file (its student: its folder's name)
    python3 -m tinymix.grade CLASS/                              every .py file below CLASS:
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


def choose(submissions, assignment_ids):
    """One file per student and assignment. `assignment_ids`: the assignment id of each submission
    (None when it has none). Returns {index of a file not counted: (index of the file that counts,
    why)}: the file named as the assignment's file counts, else the one nearest the student's folder,
    else the first in path order."""
    groups = {}
    for i, (s, a) in enumerate(zip(submissions, assignment_ids)):
        if a is not None:
            groups.setdefault((s.student, a), []).append(i)
    dropped = {}
    for (_, a), indexes in groups.items():
        if len(indexes) < 2:
            continue
        filename = assignment(a).filename
        named = [i for i in indexes if submissions[i].path.name == filename]
        pool, why = (named, f"it is named {filename}") if named else (indexes, f"none is named {filename}")
        depth = min(len(submissions[i].path.parts) for i in pool)
        nearest = [i for i in pool if len(submissions[i].path.parts) == depth]
        why += ", and it is the nearest to the student's folder" if len(nearest) < len(pool) else ""
        why += ", and it comes first in path order" if len(nearest) > 1 else ""
        for i in indexes:
            if i != nearest[0]:
                dropped[i] = (nearest[0], why)
    return dropped


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
    except (SyntaxError, ValueError) as error:     # ValueError: null bytes
        what = f"SyntaxError at line {error.lineno}: {error.msg}" if isinstance(error, SyntaxError) else error
        raise ValueError(f"cannot tell which assignment {path} answers: it does not parse ({what}) and its name is none of the assignment files") from None
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    scores = sorted(((sum(t.name in defined for t in a.tasks), a.id) for a in ASSIGNMENTS), reverse=True)
    if scores[0][0] == 0 or scores[0][0] == scores[1][0]:
        raise ValueError(f"cannot tell which assignment {path} answers: keep its file name "
                         f"({', '.join(a.filename for a in ASSIGNMENTS)}) or pass --assignment A1..A5")
    return assignment(scores[0][1])


SIZE_LIMIT = 1 << 20      # bytes of a submission (the stubs are about 10 kB)


def read(path):
    """The bytes of a submission, as saved: Python decodes them when it compiles the file (a BOM, a
    PEP 263 coding line, CRLF line ends). ValueError for a file too large to be one."""
    with open(path, "rb") as file:
        source = file.read(SIZE_LIMIT + 1)
    if len(source) > SIZE_LIMIT:
        raise ValueError(f"{path} is larger than {SIZE_LIMIT >> 20} MB: no assignment file is")
    return source
