"""The events a submission's process sends, read as untrusted input: each line is size-capped by the
reader (runner.py), parsed, and checked against the schema below before anything of it is used. A
line that is not one of these events, exactly, raises Interference: the submission wrote to the
grader's channel (it shares the process), and what remains of that file is not graded.

    {"event": "loaded", "functions": {name: null or [[name, kind, default or null], ...]}}
    {"event": "load_failed", "error": ERROR}
    {"event": "task", "id": str}                 {"event": "done", "id": str}
    {"event": "result", "task": str, "case": int, "value": wire.encode's dict, "digests": [str, ...]}
    {"event": "raised", "task": str, "case": int, "error": ERROR}
    {"event": "failed", "task": str, "case": int, "message": str}
    {"event": "finished"}

ERROR is calling.describe_exception's {"type": str, "message": str, "where": str or null,
"not_implemented": bool}. A result's value is decoded here (wire.decode) into "got".
"""
import json

from . import wire

TEXT_LIMIT = 2_000       # characters kept of any text in an event


class Interference(ValueError):
    """A line on the events channel that the child process does not write."""


def _text(value, what, optional=False):
    if value is None and optional:
        return None
    if type(value) is not str:
        raise Interference(f"{what} is not a string")
    return value[:TEXT_LIMIT]


def _error(value):
    if type(value) is not dict or set(value) != {"type", "message", "where", "not_implemented"} \
            or type(value["not_implemented"]) is not bool:
        raise Interference("an exception is not described as the child describes one")
    return {"type": _text(value["type"], "type"), "message": _text(value["message"], "message"),
            "where": _text(value["where"], "where", optional=True), "not_implemented": value["not_implemented"]}


def _functions(value):
    if type(value) is not dict:
        raise Interference("functions is not a dict")
    for name, parameters in value.items():
        if parameters is None:
            continue
        if type(parameters) is not list or not all(
                type(p) is list and len(p) == 3 and type(p[0]) is str and type(p[1]) is str
                and (p[2] is None or type(p[2]) is str) for p in parameters):
            raise Interference(f"the parameters of {name[:40]!r} are not [name, kind, default] lists")
    return value


FIELDS = {"loaded": {"functions"}, "load_failed": {"error"}, "task": {"id"}, "done": {"id"}, "finished": set(),
          "result": {"task", "case", "value", "digests"}, "raised": {"task", "case", "error"},
          "failed": {"task", "case", "message"}}


def parse(line):
    """The event on one line (bytes), checked; Interference for anything else."""
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):      # not JSON, not UTF-8, or nested too deeply to parse
        raise Interference("a line that is not JSON") from None
    if type(event) is not dict or event.get("event") not in FIELDS or set(event) != FIELDS[event["event"]] | {"event"}:
        raise Interference("a message that is none of the child's events")
    kind = event["event"]
    if kind == "loaded":
        _functions(event["functions"])
    elif kind in ("load_failed", "raised"):
        event["error"] = _error(event["error"])
    elif kind in ("task", "done"):
        _text(event["id"], "id")
    if kind in ("result", "raised", "failed"):
        _text(event["task"], "task")
        if type(event["case"]) is not int:
            raise Interference("a case number that is not an integer")
    if kind == "failed":
        event["message"] = _text(event["message"], "message")
    if kind == "result":
        if type(event["digests"]) is not list or not all(type(d) is str for d in event["digests"]):
            raise Interference("digests that are not a list of strings")
        try:
            event["got"] = wire.decode(event.pop("value"))
        except (ValueError, RecursionError) as error:
            raise Interference(f"an answer that cannot be read ({error})") from None
    return event
