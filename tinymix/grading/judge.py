"""From a task's cases and what a submission returned on them to a TaskResult, here in the grader's
process: the expected answers (the reference on the same inputs, central differences, a property)
are computed here and never leave it.

A task scores all its points when every check passes (or, with partial credit, its points times the
fraction of checks passed). A stub that still raises its NotImplementedError is "not started"; any
other exception is an "error" that names the line; a task that ran out of time is "timed out".
"""
import base64
import re
import time
from dataclasses import dataclass, field

from .. import backend
from ..assignments.checks import REFERENCE, Draw
from . import calling, runner, sandbox, wire
from .compare import Mismatch, compare

_TASK_ID = re.compile(r"Task (A\d+\.\d+)\b")
DEFAULT_TIME_LIMIT = 5.0     # seconds per task


@dataclass
class TaskResult:
    task: object
    status: str                 # "passed", "failed", "error", "timed out", "not started", "missing"
    passed: int = 0             # checks passed ...
    total: int = 0              # ... of this many
    failures: list = field(default_factory=list)   # (check label, message)
    seconds: float = 0.0
    score: float = 0


@dataclass
class Prepared:
    """A task's cases, with their inputs as they travel, the digests of those inputs, and the names of
    the input arrays (to say which one a function changed)."""
    task: object
    cases: list
    packed: list
    digests: list
    names: list

    def request(self):
        return {"id": self.task.id, "function": self.task.name,
                "cases": [{"args": p, "gradients": c.gradients, "repeat": c.repeat}
                          for c, p in zip(self.cases, self.packed)]}


def prepare(task, draw):
    cases = task.cases(draw)
    packed = [wire.encode(tuple(c.args)) for c in cases]
    parameters = [p[0] for p in calling.parameters(task.reference)]
    return Prepared(task, cases, packed, [wire.decode_inputs(p).digests() for p in packed],
                    [_input_names(c.args, parameters) for c in cases])


def _input_names(args, parameters):
    """The name of every array among `args`, in the order wire.encode meets them."""
    names = []

    def walk(value, name):
        if isinstance(value, wire.Leaf) or backend.is_array(value):
            names.append(name)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{name}[{i}]")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{name}[{k!r}]")
    for value, name in zip(args, parameters):
        walk(value, name)
    return names


def call_here(fn, case, packed):
    """The event a function gives on one case, made in this process (for the trusted reference)."""
    inputs = wire.decode_inputs(packed)
    backend.manual_seed(0)
    try:
        value = calling.call(fn, inputs, case.gradients, case.repeat)
        return {"event": "result", "got": wire.decode(wire.encode(value)), "digests": inputs.digests()}
    except calling.NotATensor as error:
        return {"event": "failed", "message": str(error)}
    except Exception as error:  # the answer key crashed: reported as an error of that task
        return {"event": "raised", "error": calling.describe_exception(error)}


def expected_answers(prepared):
    """The expected answer of each case, as data (the reference's is computed here)."""
    answers = []
    for case, packed, digests in zip(prepared.cases, prepared.packed, prepared.digests):
        if not (isinstance(case.expected, str) and case.expected == REFERENCE):
            answers.append(wire.decode(wire.encode(case.expected)))
            continue
        event = call_here(prepared.task.reference, case, packed)
        if event["event"] != "result" or event["digests"] != digests:
            raise RuntimeError(f"{prepared.task.id}'s reference failed or changed its inputs on {case.label!r}: "
                               f"{event}")
        answers.append(event["got"])
    return answers


# ---- judging ---------------------------------------------------------------------------------------------

def judge(prepared, expected, task_run, parameters, load_error=None, partial=False):
    """A TaskResult from the child's outcomes (task_run: runner.TaskRun) and the task's expected answers.
    parameters: the submission's def line as calling.parameters gives it, None if it has no such function."""
    task = prepared.task
    result = TaskResult(task, "passed", total=len(prepared.cases), seconds=task_run.seconds)
    if load_error is not None or (task_run.stopped or "").startswith(runner.INTERFERED):
        result.status = "error"
        result.failures.append(("", load_error or task_run.stopped))
    elif parameters is None:
        result.status = "missing"
        result.failures.append(("", f"the file defines no function {task.name}()"))
    elif parameters != calling.parameters(task.reference):
        result.status = "error"
        result.failures.append(("", f"signature {task.name}{_signature(parameters)} differs from the task's "
                                    f"{task.name}{_signature(calling.parameters(task.reference))}: keep the "
                                    "stub's def line"))
    else:
        for i, (case, answer) in enumerate(zip(prepared.cases, expected)):
            if _judge_case(result, prepared, i, case, answer, task_run) == "not started":
                return TaskResult(task, "not started", total=len(prepared.cases), seconds=task_run.seconds)
        if task_run.stopped is not None:
            reached = next((i for i in range(len(prepared.cases)) if i not in task_run.outcomes), None)
            label = "" if reached is None else prepared.cases[reached].label
            result.status = "timed out" if task_run.timed_out else "error"
            result.failures.insert(0, (label, task_run.stopped))
    if result.status == "passed":
        result.score = task.points
    elif partial and result.total and result.status != "not started":
        result.score = round(task.points * result.passed / result.total, 2)
    return result


def _judge_case(result, prepared, i, case, answer, task_run):
    event = task_run.outcomes.get(i)
    if event is None:
        if task_run.stopped is None:
            _error(result, case, "no result came back for this case")
        return None
    kind = event.get("event")
    if kind == "raised":
        return _raised(result, prepared.task, case, event.get("error") or {})
    if kind == "failed":
        _fail(result, case, str(event.get("message")))
        return None
    got, digests = event["got"], event["digests"]
    changed = [name for name, before, after in zip(prepared.names[i], prepared.digests[i], digests)
               if before != after]
    if len(digests) != len(prepared.digests[i]) or changed:
        what = f"its input {changed[0]}" if changed else "its inputs"
        _fail(result, case, f"changed {what} in place: return a new array and leave the inputs unchanged")
        return None
    try:
        if case.judge is not None:
            case.judge(answer, got)
        else:
            compare(answer, got, names=prepared.task.outputs, tolerance=case.tolerance)
    except Mismatch as error:
        _fail(result, case, f"{case.against} disagree: {error}" if case.against else str(error))
        return None
    result.passed += 1
    return None


def _raised(result, task, case, error):
    message = error.get("message", "")
    if error.get("not_implemented"):
        other = _TASK_ID.match(message)
        if other is not None and other.group(1) != task.id:
            _error(result, case, f"it calls {other.group(1)}, which is not started yet (raises "
                                 "NotImplementedError)")
        elif result.passed or result.failures:      # started, but not for this case
            _fail(result, case, f"raises NotImplementedError on this case: {message}")
        else:
            return "not started"
        return None
    text = calling.exception_text(error)
    if error.get("type") in ("SystemExit", "KeyboardInterrupt"):
        text += ": a task's function must return its answer, not end the program"
    _error(result, case, text)
    return None


def _fail(result, case, message):
    if result.status == "passed":
        result.status = "failed"
    result.failures.append((case.label, message))


def _error(result, case, message):
    result.status = "error"
    result.failures.append((case.label, message))


def _signature(parameters):
    parts = []
    for name, kind, default in parameters:
        name = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(kind, "") + name
        parts.append(name if default is None else f"{name}={default}")
    return f"({', '.join(parts)})"


# ---- grading a submission ----------------------------------------------------------------------------------

def grade_source(source, source_name, assignment, only=None, seed=None, time_limit=DEFAULT_TIME_LIMIT,
                 load_limit=None, partial=False, protected=(), isolation=None):
    """(results, run) for a submission's source (bytes, as saved): run in its own process (as
    `isolation`, a runner.Isolation, says), judged here."""
    draw = Draw(seed)
    tasks = [t for t in assignment.tasks if only is None or t.id in only]
    prepared = [prepare(t, draw) for t in tasks]
    request = {"source": base64.b64encode(source).decode("ascii"), "source_name": source_name, "module": _module_name(source_name),
               "backend": sandbox.child_backend(), "library": list(assignment.library), "reason": assignment.reason,
               "withheld": {name: assignment.reason for name in assignment.withheld},
               "protected": [str(sandbox.PACKAGE), *map(str, protected)],
               "functions": [t.name for t in tasks], "tasks": [p.request() for p in prepared]}
    run = runner.run_submission(request, time_limit, load_limit or max(10.0, 2 * time_limit), isolation)
    results = [judge(p, expected_answers(p), run.tasks[p.task.id], run.functions.get(p.task.name),
                     run.load_error, partial) for p in prepared]
    return results, run


def grade_reference(assignment, only=None, seed=None, partial=False):
    """Grade the registry's own reference functions, in this process: the answer key must score full
    marks (its checks against central differences and properties are real checks of it)."""
    results = []
    for task in assignment.tasks:
        if only is not None and task.id not in only:
            continue
        prepared = prepare(task, Draw(seed))
        start = time.perf_counter()
        outcomes = {i: call_here(task.reference, case, packed)
                    for i, (case, packed) in enumerate(zip(prepared.cases, prepared.packed))}
        task_run = runner.TaskRun(outcomes=outcomes, finished=True)
        task_run.seconds = time.perf_counter() - start
        results.append(judge(prepared, expected_answers(prepared), task_run, calling.parameters(task.reference),
                             partial=partial))
    return results


def _module_name(source_name):
    """`submission_a2_softmax_layernorm`: never the name of a module the grading process uses."""
    stem = source_name.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
    return "submission_" + re.sub(r"\W", "_", stem)
