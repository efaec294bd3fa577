"""The process in which one submission runs. runner.py starts it as

    python -I -u .../tinymix/grading/child.py

by path, not with -m: `-m tinymix.grading.child` would first run tinymix/__init__.py, which loads
Tensor and functional, the answer key of A1 and A2, into the process before the submission runs.
In isolated mode (-I) no PYTHON* variable, user site-packages or current folder reaches sys.path;
unbuffered (-u), so that what the submission printed reaches the grader before the process is stopped.

It reads its request from its standard input to the end, as its first act, and puts /dev/null in
its place (the request: the submission's source, the assignment's library, the folders to import
from, the limits and, per task, the inputs of every case: never the expected answers). Then it sets
the limits, installs the guard, runs the file, calls each task's function on each case and writes
one JSON line per event to its original stdout:

    {"event": "loaded", "functions": {name: parameters or null}}     or  {"event": "load_failed", ...}
    {"event": "task", "id": "A1.2"}            the grader starts the task's clock
    {"event": "result", "task", "case", "value", "digests"}           or  "raised" / "failed"
    {"event": "done", "id": "A1.2"}
    {"event": "finished"}

The submission's own prints and errors go to stderr, which the grader keeps apart from the report.
"""
import base64
import importlib.util
import json
import linecache
import os
import sys
import types


def main():
    request = json.loads(sys.stdin.buffer.read())             # the request: read once ...
    null = os.open(os.devnull, os.O_RDONLY)                   # ... and gone
    os.dup2(null, 0)
    os.close(null)
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")   # events for the grader ...
    os.dup2(2, 1)                                             # ... the submission's prints go with stderr
    sys.path += [p for p in request["path"] if p not in sys.path]   # the grader's, less its current folder
    os.environ["TINYMIX_BACKEND"] = request["backend"]
    package = _load_tinymix(request["library"])
    from tinymix import backend
    from tinymix.grading import calling, guard, wire

    allowed = {"tinymix", "tinymix.grading", *(f"tinymix.{name}" for name in request["library"])}
    loaded = sorted(m for m in sys.modules if m.startswith("tinymix.") and m not in allowed
                    and not m.startswith("tinymix.grading."))
    if loaded:                           # tinymix/__init__.py now loads more than the assignment allows
        raise SystemExit(f"the grader cannot isolate this assignment: loading tinymix also loaded {loaded}")
    if "tinymix.tensor" not in sys.modules:
        package.__getattr__ = guard.missing_attribute(request["reason"])
    for qualified, reason in request["withheld"].items():
        module_name, name = qualified.rsplit(".", 1)
        guard.withhold(sys.modules[module_name], name, reason)

    def emit(event):
        channel.write(json.dumps(event) + "\n")
        channel.flush()

    source, name = base64.b64decode(request["source"]), request["source_name"]
    module = types.ModuleType(request["module"])
    module.__file__ = name
    sys.modules[module.__name__] = module
    lines = _text(source).splitlines(True)
    linecache.cache[name] = (len(source), None, lines, name)   # for tracebacks
    _limit(request["limits"])
    guard.install(request["reason"], request["protected"], allow_ctypes=request["backend"] == "cupy")
    try:   # the bytes, as Python runs a file: a BOM, a coding line (PEP 263), CRLF line ends
        exec(compile(source, name, "exec"), module.__dict__)
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: the file did not load
        emit({"event": "load_failed", "error": calling.describe_exception(error, name)})
        return
    emit({"event": "loaded", "functions": {f: _parameters(module, f, calling) for f in request["functions"]}})

    for task in request["tasks"]:
        emit({"event": "task", "id": task["id"]})
        fn = getattr(module, task["function"], None)
        for index, case in enumerate(task["cases"]):
            event = {"task": task["id"], "case": index}
            inputs = wire.decode_inputs(case["args"])
            backend.manual_seed(0)
            try:
                value = calling.call(fn, inputs, case["gradients"], case["repeat"])
                event.update(event="result", value=wire.encode(value), digests=inputs.digests())
            except (calling.NotATensor, wire.TooLarge) as error:
                event.update(event="failed", message=str(error))
            except BaseException as error:  # whatever the function raised, SystemExit included
                event.update(event="raised", error=calling.describe_exception(error, name))
            emit(event)
        emit({"event": "done", "id": task["id"]})
    emit({"event": "finished"})


def _text(source):
    """The file's text for tracebacks (undecodable bytes shown escaped: compile() reports them)."""
    try:
        return importlib.util.decode_source(source)
    except (SyntaxError, UnicodeDecodeError, LookupError):
        return source.decode("utf-8", "backslashreplace")


def _limit(limits):
    """The grader's limits on this process, soft and hard (the submission cannot raise them): memory,
    the size of a file it writes, processes, no core files. Set once the libraries are loaded."""
    try:
        import resource
    except ImportError:                  # not POSIX: the grader's time limits only
        return
    wanted = [(resource.RLIMIT_FSIZE, limits["file_size"]), (resource.RLIMIT_CORE, 0)]
    if limits["memory"] and os.environ["TINYMIX_BACKEND"] != "cupy":   # CUDA maps far more than it uses
        wanted.append((resource.RLIMIT_AS, limits["memory"]))
    if limits["processes"] and hasattr(resource, "RLIMIT_NPROC"):
        wanted.append((resource.RLIMIT_NPROC, limits["processes"]))
    for which, value in wanted:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def _load_tinymix(library):
    """The tinymix package of this file's tree. For an assignment graded on arrays alone its
    __init__ is not run (it would load Tensor and functional); then the allowed modules."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("tinymix", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules["tinymix"] = package
    if "tensor" in library:
        spec.loader.exec_module(package)
    for name in library:
        importlib.import_module(f"tinymix.{name}")
    return package


def _parameters(module, name, calling):
    fn = getattr(module, name, None)
    if not callable(fn):
        return None
    try:
        return calling.parameters(fn)
    except BaseException:  # a callable without a readable signature
        return []


if __name__ == "__main__":
    main()
