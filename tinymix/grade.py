"""The offline autograder for lessons/assignments/: no server, one command.

    python -m tinymix.grade lessons/assignments/a2_softmax_layernorm.py     # grade a student file
    python -m tinymix.grade lessons/assignments/a2_softmax_layernorm.py --task A2.4
    python -m tinymix.grade --reference                  # the answer key (the library) scores full marks
    python -m tinymix.grade --check-stubs                # stubs repeat the registry's contracts exactly
    python -m tinymix.grade --stub A2.4                  # a task's stub, as the registry defines it
    python -m tinymix.grade --list                       # assignments, tasks and points

Each task of tinymix.assignments runs its checks: on seeded inputs the student's function must agree
with the reference (the library) within atol + rtol * |expected|, and pass its gradient and property
checks. A task scores all its points when every check passes, none otherwise. A stub that still raises
its NotImplementedError is "not started"; any other exception is an "error" that names the line.
Exit status: 0 when every graded task passed, 1 otherwise, 2 for a file that cannot be graded.
"""
import argparse
import ast
import importlib.util
import inspect
import re
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import backend
from .assignments import ASSIGNMENTS, Compare, Mismatch, NoGrad, assignment
from .tensor import Tensor

STUB_DIR = Path(__file__).resolve().parent.parent / "lessons" / "assignments"
SEED = 0
ATOL, RTOL = 1e-6, 1e-5
_TASK_ID = re.compile(r"Task (A\d+\.\d+)\b")


@dataclass
class TaskResult:
    task: object
    status: str                 # "passed", "failed", "error", "not started", "missing"
    passed: int = 0             # checks passed ...
    total: int = 0              # ... of this many
    failures: list = field(default_factory=list)   # (check label, message)

    @property
    def score(self):
        return self.task.points if self.status == "passed" else 0


# ---- comparing results --------------------------------------------------------------------------------

def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _array(value):
    """A host array for a Tensor, an xp array or a number."""
    if isinstance(value, Tensor):
        value = value.data
    return backend.to_numpy(value)


def _describe(value):
    if isinstance(value, Tensor) or backend.is_array(value):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{value!r} ({type(value).__name__})"


def compare(expected, got, where="output", names=()):
    """Raise Mismatch naming the first place where `got` differs from `expected`. `names` name the
    values of a returned tuple ("dx", "dweight", ...)."""
    if isinstance(expected, dict):
        for key, value in expected.items():
            compare(value, got.get(key) if isinstance(got, dict) else None, key)
        return
    if isinstance(expected, (tuple, list)) and not all(_is_number(v) for v in expected):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            wanted = f" ({', '.join(names)})" if names else ""
            raise Mismatch(f"{where}: expected {len(expected)} values{wanted}, got {_describe(got)}")
        for i, (e, g) in enumerate(zip(expected, got)):
            compare(e, g, names[i] if len(names) == len(expected) else f"{where}[{i}]")
        return
    if expected is None:
        if got is not None:
            raise Mismatch(f"{where}: expected None, got {_describe(got)}")
        return
    if isinstance(got, NoGrad) and not isinstance(expected, NoGrad):
        if _array(expected).any():
            raise Mismatch(f"{where}: no gradient reached this input. Did the computation leave the "
                           "graph (raw xp arrays or .data in the middle), or detach the wrong side?")
        return
    if isinstance(expected, NoGrad):
        if isinstance(got, NoGrad) or not _array(got).any():
            return
        expected = Tensor(backend.xp.zeros(expected.shape))
    if got is None:
        raise Mismatch(f"{where}: expected {_describe(expected)}, got None")
    _compare_arrays(_array(expected), _array(got), where)


def _compare_arrays(expected, got, where):
    if got.dtype.kind not in "biuf":
        raise Mismatch(f"{where}: expected numbers, got an array of dtype {got.dtype}")
    if got.shape != expected.shape:
        raise Mismatch(f"{where}: expected shape {expected.shape}, got shape {got.shape}")
    if expected.dtype.kind in "biu":
        wrong = (got != expected).reshape(-1)
        if wrong.any():
            i = int(wrong.argmax())
            index = _index(i, expected.shape)
            raise Mismatch(f"{where}: expected {expected.reshape(-1)[i]}, got {got.reshape(-1)[i]} at "
                           f"{index} ({int(wrong.sum())} of {wrong.size} differ)")
        return
    shape = expected.shape
    expected, got = expected.astype("float64").reshape(-1), got.astype("float64").reshape(-1)
    error = abs(got - expected)
    error[got != got] = float("inf")                          # NaN
    excess = error - (ATOL + RTOL * abs(expected))
    if excess.size and excess.max() > 0:
        i = int(excess.argmax())
        at = f" at {_index(i, shape)}" if shape else ""
        raise Mismatch(f"{where}: expected {expected[i]:.8g}, got {got[i]:.8g}{at}; "
                       f"max |got - expected| = {float(error.max()):.3g} ({int((excess > 0).sum())} of "
                       f"{excess.size} values off by more than {ATOL:g} + {RTOL:g} * |expected|)")


def _index(flat, shape):
    index, rest = [], flat
    for n in reversed(shape):
        index.append(rest % n)
        rest //= n
    return "index " + str(tuple(reversed(index)))


# ---- running a task -----------------------------------------------------------------------------------

def grade_task(task, fn, source=None):
    """Run every check of `task` on the student's function `fn`. `source` is the student file, for
    naming the failing line of an exception."""
    checks = task.checks()
    result = TaskResult(task, "passed", total=len(checks))
    if fn is None:
        result.status = "missing"
        result.failures.append(("", f"the file defines no function {task.name}()"))
        return result
    expected_signature = inspect.signature(task.reference)
    if _parameters(fn) != _parameters(task.reference):
        result.status = "error"
        result.failures.append(("", f"signature {task.name}{inspect.signature(fn)} differs from the "
                                    f"task's {task.name}{expected_signature}: keep the stub's def line"))
        return result
    for check in checks:
        backend.manual_seed(SEED)
        expected = check.run(task.reference) if isinstance(check, Compare) else None
        backend.manual_seed(SEED)
        try:
            got = check.run(fn)           # a Verify check raises Mismatch itself
        except NotImplementedError as error:
            other = _TASK_ID.match(str(error))
            if other is not None and other.group(1) != task.id:
                result.status = "error"
                result.failures.append((check.label, f"it calls {other.group(1)}, which is not started "
                                                      "yet (raises NotImplementedError)"))
            elif result.passed or result.failures:      # started, but not for this case
                _fail(result, check, f"raises NotImplementedError on this case: {error}")
            else:
                return TaskResult(task, "not started", total=len(checks))
            continue
        except Mismatch as error:
            _fail(result, check, str(error))
            continue
        except Exception as error:  # the student's code crashed: say where, and keep grading
            result.status = "error"
            result.failures.append((check.label, _crash(error, source)))
            continue
        if isinstance(check, Compare):
            try:
                compare(expected, got, names=task.outputs)
            except Mismatch as error:
                _fail(result, check, str(error))
                continue
        result.passed += 1
    return result


def _fail(result, check, message):
    if result.status != "error":
        result.status = "failed"
    result.failures.append((check.label, message))


def _parameters(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def _crash(error, source):
    """`TypeError: ... (a2_x.py line 41: return g * y)`: the student's deepest line in the traceback."""
    message = f"{type(error).__name__}: {error}"
    frames = traceback.extract_tb(error.__traceback__)
    if source is not None:
        frames = [f for f in frames if Path(f.filename).resolve() == Path(source).resolve()]
    if frames:
        f = frames[-1]
        message += f" ({Path(f.filename).name} line {f.lineno}: {f.line})"
    return message


def load_student_file(path):
    """Execute a student file as a module of its own and return it."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"tinymix_student_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assignment_of(path, module, assignment_id=None):
    """The assignment a file answers: named with --assignment, else by its file name, else by the
    task functions it defines."""
    if assignment_id:
        return assignment(assignment_id)
    for a in ASSIGNMENTS:
        if Path(path).name == a.filename:
            return a
    defined = {name for name in vars(module) if callable(getattr(module, name))}
    scores = sorted(((sum(t.name in defined for t in a.tasks), a.id) for a in ASSIGNMENTS), reverse=True)
    if scores[0][0] == 0 or (len(scores) > 1 and scores[0][0] == scores[1][0]):
        raise ValueError(f"cannot tell which assignment {path} answers: keep its file name "
                         f"({', '.join(a.filename for a in ASSIGNMENTS)}) or pass --assignment A1..A5")
    return assignment(scores[0][1])


def grade_functions(assignment_, functions, source=None, only=None):
    """TaskResults for an assignment, given {task function name: function}."""
    return [grade_task(task, functions.get(task.name), source)
            for task in assignment_.tasks if only is None or task.id in only]


def grade_file(path, assignment_id=None, only=None):
    """(assignment, results) for a student file."""
    module = load_student_file(path)
    a = assignment_of(path, module, assignment_id)
    functions = {t.name: getattr(module, t.name) for t in a.tasks if callable(getattr(module, t.name, None))}
    return a, grade_functions(a, functions, path, only)


def grade_reference(assignment_, only=None):
    """Grade the registry's own reference functions: the answer key must score full marks."""
    return grade_functions(assignment_, {t.name: t.reference for t in assignment_.tasks}, only=only)


# ---- the report ---------------------------------------------------------------------------------------

def format_report(assignment_, results, source, seconds, all_failures=False):
    width = max([len(r.task.name) for r in results] + [8])
    lines = [f"{assignment_.id}  {assignment_.title}  —  {source}", "",
             f"  {'task':<5} {'function':<{width}}  points   result"]
    for r in results:
        if r.status == "passed":
            note = f"{r.total} checks"
        elif r.status in ("failed", "error"):
            note = f"{r.passed} of {r.total} checks passed"
        else:
            note = ""
        lines.append(f"  {r.task.id:<5} {r.task.name:<{width}}  {r.score:>2} / {r.task.points:<3} "
                     f"{r.status:<12}{note}".rstrip())
    score, points = sum(r.score for r in results), sum(r.task.points for r in results)
    lines.append(f"  {'total':<5} {'':<{width}}  {score:>2} / {points:<3} graded in {seconds:.2f} s")
    for r in results:
        if not r.failures:
            continue
        lines += ["", f"{r.task.id} {r.task.name}: {r.status}"]
        shown = r.failures if all_failures else r.failures[:1]
        for label, message in shown:
            lines.append(f"  check: {label}" if label else "  check: the function itself")
            lines.append(f"    {message}")
        if len(r.failures) > len(shown):
            lines.append(f"  ({len(r.failures) - len(shown)} more failing checks: --all-failures shows them)")
        lines.append(f"  hint: {r.task.hint}")
    return "\n".join(lines)


# ---- stubs: the registry is the one source of truth ----------------------------------------------------

def _function_node(function):
    return ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]


def stub_source(task):
    """The stub of a task, as the registry defines it: the reference's def line and docstring, and a
    body that raises NotImplementedError with the task's message."""
    source = textwrap.dedent(inspect.getsource(task.reference))
    node = ast.parse(source).body[0]
    def_line = "\n".join(source.splitlines()[:node.body[0].lineno - 1])     # as written, defaults too
    doc = ast.get_docstring(node, clean=False)
    lines = textwrap.wrap(task.stub_message, 88, drop_whitespace=False, break_on_hyphens=False)
    assert "".join(lines) == task.stub_message and '"' not in task.stub_message
    message = "\n".join(f'        "{line}"' for line in lines)
    return (f"{def_line}\n"
            f'    """{doc}"""\n'
            f"    raise NotImplementedError(\n{message})\n")


def check_stubs(directory=STUB_DIR):
    """Problems (strings) where a student file in `directory` differs from the registry: a missing
    stub, a def line or docstring that drifted, a body that is more than the stub's raise, a function
    that is no task. An empty list means every stub is exact."""
    problems = []
    for a in ASSIGNMENTS:
        path = Path(directory) / a.filename
        if not path.exists():
            problems.append(f"{a.id}: {path} does not exist")
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        defined = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "assignments" in node.module:
                problems.append(f"{path.name} line {node.lineno}: imports {node.module}, the answer key")
        tasks = {t.name: t for t in a.tasks}
        for name in defined:
            if name not in tasks:
                problems.append(f"{path.name}: defines {name}, which is no task of {a.id}")
        for task in a.tasks:
            node = defined.get(task.name)
            where = f"{path.name} {task.id} {task.name}"
            if not isinstance(node, ast.FunctionDef):
                problems.append(f"{where}: no stub")
                continue
            reference = _function_node(task.reference)
            if ast.unparse(node.args) != ast.unparse(reference.args):
                problems.append(f"{where}: def line ({ast.unparse(node.args)}) differs from the registry's "
                                f"({ast.unparse(reference.args)})")
            if ast.get_docstring(node) != ast.get_docstring(reference):
                problems.append(f"{where}: docstring differs from the registry's")
            if _stub_message(node) != task.stub_message:
                problems.append(f"{where}: the body must be only the docstring and "
                                f"raise NotImplementedError({task.stub_message!r})")
    return problems


def _stub_message(node):
    """The message of a body that is [docstring, raise NotImplementedError("...")], else None."""
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or not isinstance(body[0].exc, ast.Call):
        return None
    call = body[0].exc
    if getattr(call.func, "id", None) != "NotImplementedError" or len(call.args) != 1 or call.keywords:
        return None
    return call.args[0].value if isinstance(call.args[0], ast.Constant) else None


# ---- the command ----------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinymix.grade", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", help="student files to grade")
    parser.add_argument("--task", action="append", help="grade only this task (e.g. A2.4); repeatable")
    parser.add_argument("--assignment", help="the assignment a file answers, when its name does not say")
    parser.add_argument("--reference", nargs="*", metavar="A", help="grade the reference solutions "
                        "(all assignments, or those named)")
    parser.add_argument("--check-stubs", nargs="?", const=str(STUB_DIR), metavar="DIR",
                        help="check the student stubs against the registry")
    parser.add_argument("--stub", metavar="TASK", help="print a task's stub as the registry defines it")
    parser.add_argument("--list", action="store_true", help="list assignments, tasks and points")
    parser.add_argument("--all-failures", action="store_true", help="show every failing check of a task")
    args = parser.parse_args(argv)

    if args.list:
        for a in ASSIGNMENTS:
            print(f"{a.id}  {a.title} ({a.points} points)  lessons/assignments/{a.filename}")
            for t in a.tasks:
                print(f"  {t.id}  {t.name:<30} {t.points} point{'s' * (t.points != 1)}  {t.todo}")
        return 0
    if args.stub:
        task = next((t for a in ASSIGNMENTS for t in a.tasks if t.id == args.stub), None)
        if task is None:
            parser.error(f"no task {args.stub}")
        print(stub_source(task), end="")
        return 0
    if args.check_stubs:
        problems = check_stubs(args.check_stubs)
        for problem in problems:
            print(problem)
        tasks = sum(len(a.tasks) for a in ASSIGNMENTS)
        print(f"{len(problems)} problems in {len(ASSIGNMENTS)} stub files ({tasks} tasks)"
              if problems else f"stubs match the registry: {len(ASSIGNMENTS)} files, {tasks} tasks")
        return 1 if problems else 0
    if args.reference is None and not args.files:
        parser.error("name a student file to grade (or --reference, --check-stubs, --stub, --list)")

    only = set(args.task) if args.task else None
    status, reports = 0, []
    if args.reference is not None:
        for a in [assignment(i) for i in args.reference] or ASSIGNMENTS:
            start = time.perf_counter()
            results = grade_reference(a, only)
            seconds = time.perf_counter() - start
            reports.append((a, results, "reference solutions (tinymix.assignments)", seconds))
    for path in args.files:
        start = time.perf_counter()
        try:
            a, results = grade_file(path, args.assignment, only)
        except (OSError, SyntaxError, ImportError, ValueError, KeyError) as error:
            print(f"cannot grade {path}: {type(error).__name__}: {error}", file=sys.stderr)
            status = 2
            continue
        except Exception as error:  # the file's own top-level code crashed
            print(f"cannot grade {path}: loading it raised {_crash(error, path)}", file=sys.stderr)
            status = 2
            continue
        reports.append((a, results, path, time.perf_counter() - start))
    for i, (a, results, source, seconds) in enumerate(reports):
        print(("\n" if i else "") + format_report(a, results, source, seconds, args.all_failures))
        if any(r.status != "passed" for r in results) and status == 0:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
