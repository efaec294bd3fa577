"""What the grader prints and writes: a report per file (a points table, then each failing task's first
failing check with its hint, then what the file printed), a line per file for a class, and the
class's CSV (one row per file and task, and a total per student) and JSON."""
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Graded:
    """One graded file. `error`: why it could not be graded or did not load (then every task row
    carries it); `results`: judge.TaskResult for each task graded; `duplicate`: why it was not graded
    (another file of its student answers the same assignment and counts)."""
    path: str
    student: str
    assignment: object = None
    results: list = field(default_factory=list)
    error: str = None
    output: str = ""
    output_bytes: int = 0
    seconds: float = 0.0
    duplicate: str = None

    @property
    def score(self):
        return sum(r.score for r in self.results)

    @property
    def points(self):
        return sum(r.task.points for r in self.results)

    @property
    def passed(self):
        if self.duplicate is not None:
            return True
        return self.error is None and bool(self.results) and all(r.status == "passed" for r in self.results)


def points(value):
    return f"{value:g}"


def shown(text, newlines=False):
    """`text` safe to print or write: bytes of a name that were not UTF-8 (a folder from a Windows zip)
    as \\xNN, control characters (an escape sequence would rewrite the console line) as \\x1b, \\r,
    \\n (kept as line ends with newlines=True)."""
    text = str(text)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:             # a lone surrogate of another kind
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() or (newlines and c == "\n") else ascii(c)[1:-1] for c in text)


# ---- one file ---------------------------------------------------------------------------------------------

def format_report(graded, all_failures=False, hidden=False):
    if graded.assignment is None:
        return f"{shown(graded.path)}: cannot grade: {shown(graded.error)}"
    a, results = graded.assignment, graded.results
    width = max([len(r.task.name) for r in results] + [8])
    lines = [f"{a.id}  {a.title}  —  {shown(graded.path)}"]
    if hidden:
        lines.append("hidden cases: inputs drawn with the instructor's seed")
    lines += ["", f"  {'task':<5} {'function':<{width}}  points    result"]
    for r in results:
        note = {"passed": f"{r.total} checks", "failed": f"{r.passed} of {r.total} checks passed",
                "error": f"{r.passed} of {r.total} checks passed", "timed out": f"{r.passed} of {r.total} checks "
                "passed"}.get(r.status, "") if graded.error is None else ""
        lines.append(f"  {r.task.id:<5} {r.task.name:<{width}}  {points(r.score):>3} / {r.task.points:<3} "
                     f"{r.status:<12}{note}".rstrip())
    lines.append(f"  {'total':<5} {'':<{width}}  {points(graded.score):>3} / {graded.points:<3} "
                 f"graded in {graded.seconds:.2f} s")
    if graded.error is not None:
        lines += ["", f"the file could not be run: {shown(graded.error)}"]
    else:
        lines += _failures(results, all_failures)
    lines += _printed(graded)
    return "\n".join(lines)


def _failures(results, all_failures):
    lines = []
    for r in results:
        if not r.failures:
            continue
        lines += ["", f"{r.task.id} {r.task.name}: {r.status}"]
        listed = r.failures if all_failures else r.failures[:1]
        for label, message in listed:
            lines.append(f"  check: {shown(label)}" if label else "  check: the function itself")
            lines.append(f"    {shown(message)}")
        if len(r.failures) > len(listed):
            lines.append(f"  ({len(r.failures) - len(listed)} more failing checks: --all-failures shows them)")
        lines.append(f"  hint: {r.task.hint}")
    return lines


def _printed(graded, shown_lines=12):
    if not graded.output_bytes:
        return []
    text = graded.output.rstrip("\n").split("\n")
    kept = text[:shown_lines]
    lines = ["", f"the file printed {graded.output_bytes:,} bytes; the first {len(kept)} lines:"]
    lines += [f"  | {shown(line[:200])}" for line in kept]
    return lines


# ---- a class ----------------------------------------------------------------------------------------------

def summary_line(graded, width=16):
    """`alice  a2_softmax_layernorm.py  A2   8 / 10  A2.4 failed`: one line per file of a class."""
    name = f"{shown(graded.student):<{width}}  {shown(Path(graded.path).name):<24}"
    if graded.assignment is None:
        return f"{name}  --   cannot grade: {shown(graded.error)}"
    if graded.duplicate is not None:
        return f"{name}  {graded.assignment.id:<3}    not counted: {shown(graded.duplicate)}"
    unfinished = [f"{r.task.id} {r.status}" for r in graded.results if r.status != "passed"]
    note = "did not run: " + shown(graded.error.split(":")[0]) if graded.error else ", ".join(unfinished)
    return f"{name}  {graded.assignment.id:<3} {points(graded.score):>4} / {graded.points:<3}  {note}".rstrip()


def students(graded_files):
    """{student: [Graded, ...]} in the order the files were graded."""
    by_student = {}
    for graded in graded_files:
        by_student.setdefault(graded.student, []).append(graded)
    return by_student


CSV_COLUMNS = ["student", "file", "assignment", "task", "function", "status", "score", "points",
               "checks_passed", "checks_total", "seconds", "message"]


def csv_text(graded_files):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for student, files in students(graded_files).items():
        student = shown(student)
        for g in files:
            path = shown(g.path)
            if g.assignment is None:
                writer.writerow([student, path, "", "", "", "error", 0, 0, 0, 0, f"{g.seconds:.2f}", shown(g.error)])
            elif g.duplicate is not None:
                writer.writerow([student, path, g.assignment.id, "", "", "not counted", 0, 0, 0, 0, "0.00",
                                 shown(g.duplicate)])
            for r in g.results:
                message = g.error or (f"{r.failures[0][0]}: {r.failures[0][1]}".lstrip(": ") if r.failures else "")
                writer.writerow([student, path, g.assignment.id, r.task.id, r.task.name, r.status,
                                 points(r.score), r.task.points, r.passed, r.total, f"{r.seconds:.2f}",
                                 shown(message)])
        writer.writerow([student, "", "", "total", "", "", points(sum(g.score for g in files)),
                         sum(g.points for g in files), "", "", f"{sum(g.seconds for g in files):.2f}", ""])
    return out.getvalue()


def json_text(graded_files, settings):
    data = dict(settings, students=[])
    for student, files in students(graded_files).items():
        data["students"].append({
            "student": shown(student), "score": sum(g.score for g in files), "points": sum(g.points for g in files),
            "files": [{"file": shown(g.path), "assignment": g.assignment.id if g.assignment else None,
                       "score": g.score, "points": g.points, "error": g.error, "not_counted": g.duplicate,
                       "seconds": round(g.seconds, 3), "printed": g.output, "printed_bytes": g.output_bytes,
                       "tasks": [{"task": r.task.id, "function": r.task.name, "status": r.status, "score": r.score,
                                  "points": r.task.points, "checks_passed": r.passed, "checks_total": r.total,
                                  "seconds": round(r.seconds, 3),
                                  "failures": [{"check": label, "message": text} for label, text in r.failures]}
                                 for r in g.results]}
                      for g in files]})
    return json.dumps(data, indent=2) + "\n"
