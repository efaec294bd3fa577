"""The process in which one submission runs. runner.py starts it as

    python .../tinymix/grading/child.py EXCHANGE_FOLDER

by path, not with -m: `-m tinymix.grading.child` would first run tinymix/__init__.py, which loads
Tensor and functional, the answer key of A1 and A2, into the process before the submission runs.

It reads EXCHANGE_FOLDER/request.json (the submission's source, the assignment's library and, per
task, the inputs of every case: never the expected answers), installs the guard, runs the file,
calls each task's function on each case and writes one JSON line per event to its original stdout:

    {"event": "loaded", "functions": {name: parameters or null}}     or  {"event": "load_failed", ...}
    {"event": "task", "id": "A1.2"}            the grader starts the task's clock
    {"event": "result", "task", "case", "value", "digests"}           or  "raised" / "failed"
    {"event": "done", "id": "A1.2"}
    {"event": "finished"}

The submission's own prints and errors go to stderr, which the grader keeps apart from the report.
"""
import importlib.util
import json
import linecache
import os
import sys
import types


def main():
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")   # events for the grader ...
    os.dup2(2, 1)                                             # ... the submission's prints go with stderr
    exchange = sys.argv[1]
    with open(os.path.join(exchange, "request.json"), encoding="utf-8") as file:
        request = json.load(file)
    del sys.path[0]                      # this script's folder: nothing in it is the submission's to import
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

    source, name = request["source"], request["source_name"]
    module = types.ModuleType(request["module"])
    module.__file__ = name
    sys.modules[module.__name__] = module
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)   # for tracebacks
    guard.install(request["reason"], request["protected"], allow_ctypes=request["backend"] == "cupy")
    try:
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
            except calling.NotATensor as error:
                event.update(event="failed", message=str(error))
            except BaseException as error:  # whatever the function raised, SystemExit included
                event.update(event="raised", error=calling.describe_exception(error, name))
            emit(event)
        emit({"event": "done", "id": task["id"]})
    emit({"event": "finished"})


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
