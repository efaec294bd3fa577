"""Run one submission in a process of its own, with a time limit per task, and collect what it reports.

The grader writes a request (the file's source, its assignment's library, each task's inputs) into a
private folder and starts `python child.py FOLDER`. It then listens to two pipes: the child's events
(one JSON line each, see child.py) and the submission's own prints. It never waits on the child
without a deadline: loading the file gets `load_limit` seconds, each task `time_limit` seconds from
its "task" event. A task that runs out of time is "timed out", a process that exits or dies mid-task
leaves that task unfinished, and a submission that prints more than OUTPUT_LIMIT bytes is stopped; in
each case the process group is killed and a fresh process grades the tasks that remain.
"""
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import calling

CHILD = Path(__file__).resolve().with_name("child.py")
OUTPUT_LIMIT = 1_000_000    # bytes the submission may print before its process is stopped
OUTPUT_KEPT = 4_000         # bytes of them kept for the report
EVENT_LIMIT = 64 << 20      # one event (one answer) larger than this stops the process too
SECRET_PREFIX = "TINYMIX_GRADE_"   # environment variables (the instructor's seed) the child never gets


@dataclass
class TaskRun:
    outcomes: dict = field(default_factory=dict)   # case index -> the child's event for it
    stopped: str = None          # why the task did not finish, if it did not
    timed_out: bool = False
    finished: bool = False
    seconds: float = 0.0


@dataclass
class Run:
    tasks: dict                  # task id -> TaskRun
    load_error: str = None
    functions: dict = field(default_factory=dict)   # task function name -> parameters, None if missing
    output: str = ""             # the start of what the submission printed
    output_bytes: int = 0
    processes: int = 0


def run_submission(request, time_limit, load_limit):
    """Run `request` (child.py's request; request["tasks"] lists every task to grade) and return a Run."""
    run = Run({t["id"]: TaskRun() for t in request["tasks"]})
    with tempfile.TemporaryDirectory(prefix="tinymix-grade-") as exchange:
        pending = request["tasks"]
        while pending and run.load_error is None:
            _launch(run, {**request, "tasks": pending}, exchange, time_limit, load_limit)
            left = [t for t in pending if not run.tasks[t["id"]].finished]
            if len(left) == len(pending) and run.load_error is None:     # no progress: never loop
                run.tasks[left[0]["id"]].stopped = "the grading process stopped before this task ran"
                run.tasks[left[0]["id"]].finished = True
                left = left[1:]
            pending = left
    return run


def _environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith(SECRET_PREFIX)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _launch(run, request, exchange, time_limit, load_limit):
    path = Path(exchange) / "request.json"
    path.write_text(json.dumps(request), encoding="utf-8")
    posix = os.name == "posix"
    process, readers, events, printed = None, [], queue.Queue(), {}
    # A Ctrl-C that lands inside Popen (after the fork) or before the `try` would leave the child
    # running in its own session, out of reach of the terminal: hold it until the child is known, so
    # that the `finally` below always kills it.
    release = _hold_interrupts()
    try:
        process = subprocess.Popen(
            [sys.executable, str(CHILD), exchange], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=exchange, env=_environment(), start_new_session=posix,
            creationflags=0 if posix else subprocess.CREATE_NEW_PROCESS_GROUP)
        release()                                  # a Ctrl-C held meanwhile is raised here
        run.processes += 1
        readers = [threading.Thread(target=_read_events, args=(process.stdout, events), daemon=True),
                   threading.Thread(target=_read_output, args=(process.stderr, events, printed), daemon=True)]
        for reader in readers:
            reader.start()
        _Watch(run, request["tasks"], time_limit, load_limit).follow(process, events)
    finally:
        release(raise_held=False)
        if process is not None:
            _kill(process)
        for reader in readers:
            reader.join(timeout=5)
        if printed.get("bytes"):
            separator = "\n[a fresh process]\n" if run.output else ""
            run.output = (run.output + separator + printed["kept"].decode("utf-8", "replace"))[:2 * OUTPUT_KEPT]
            run.output_bytes += printed["bytes"]


def _hold_interrupts():
    """From now until the returned function is called, a Ctrl-C is noted instead of raised (signal
    handlers run in the main thread, whichever thread the signal reached). The function puts Ctrl-C
    back and raises the KeyboardInterrupt that was held (unless raise_held=False)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        return lambda raise_held=True: None          # not ours to hold (handlers live in the main thread)
    held, state = [], {"holding": True}
    signal.signal(signal.SIGINT, lambda number, frame: held.append(number))

    def release(raise_held=True):
        if state.pop("holding", False):
            signal.signal(signal.SIGINT, previous)
            if held and raise_held:
                raise KeyboardInterrupt
    return release


def _kill(process):
    """Kill the child and anything it started (its process group), then reap it. Never after it was
    reaped: its number could by then belong to another process."""
    if process.returncode is None:
        try:
            if os.name == "posix":
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        except (ProcessLookupError, PermissionError):
            pass
    return process.wait()


def _read_events(stream, events):
    while True:
        line = stream.readline(EVENT_LIMIT + 1)
        if not line:
            break
        if len(line) > EVENT_LIMIT:
            events.put(("flood", f"returned an answer larger than {EVENT_LIMIT >> 20} MB"))
            break
        events.put(("line", line))
    events.put(("eof", None))


def _read_output(stream, events, printed):
    kept, total = bytearray(), 0
    while True:
        chunk = stream.read1(1 << 16)
        if not chunk:
            break
        if len(kept) < OUTPUT_KEPT:
            kept += chunk[:OUTPUT_KEPT - len(kept)]
        total += len(chunk)
        if total > OUTPUT_LIMIT and total - len(chunk) <= OUTPUT_LIMIT:
            events.put(("flood", f"printed more than {OUTPUT_LIMIT // 1000} kB"))
    printed.update(kept=bytes(kept), bytes=total)


def _exited(process, seconds=1.0):
    """Whether the child, which closed its events, exits within `seconds` (not reaping it, so that its
    process group can still be killed safely)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.name == "posix":
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        elif process.poll() is not None:
            return True
        time.sleep(0.01)
    return False


def _exit_reason(process):
    exited = _exited(process)
    status = _kill(process)
    if not exited:
        return "the process stopped reporting to the grader (its channel was closed) and was stopped"
    if status < 0:
        try:
            return f"the process was killed by signal {signal.Signals(-status).name}"
        except ValueError:
            return f"the process was killed by signal {-status}"
    return f"the process ended with exit status {status} (os._exit in the submission, or Python itself crashed)"


class _Watch:
    """Follows one child's events against the clock and records them in the Run."""

    def __init__(self, run, tasks, time_limit, load_limit):
        self.run, self.order = run, [t["id"] for t in tasks]
        self.time_limit, self.load_limit = time_limit, load_limit
        self.loaded, self.current, self.next, self.started = False, None, 0, None

    def follow(self, process, events):
        now = time.monotonic()
        overall = now + self.load_limit + len(self.order) * self.time_limit + 5   # forged events cannot buy time
        self.deadline = now + self.load_limit
        while True:
            try:
                kind, payload = events.get(timeout=max(0.0, min(self.deadline, overall) - time.monotonic()))
            except queue.Empty:
                if self.current is None and self.loaded:
                    return self.stop("the grading process stopped answering")
                if self.current is None:
                    return self.stop(f"loading the file did not finish within {self.load_limit:g} s (an endless "
                                     "loop at the top level?)")
                return self.stop(f"did not finish within {self.time_limit:g} s (an endless loop?); the "
                                 "grader stopped it and graded the other tasks in a fresh process", timed_out=True)
            if kind == "eof":
                return self.stop(_exit_reason(process))
            if kind == "flood":
                _kill(process)
                if self.drain(events):
                    return
                return self.stop(f"the submission {payload}; the grader stopped it")
            if self.event(payload):
                return

    def drain(self, events, seconds=2.0):
        """Record the events a stopped child had written before it was stopped: the thread reading them
        may lag behind the one that counted its prints (else a task it finished would count as never
        run). True when those events say the child had finished."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                kind, payload = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if kind == "eof":
                return False
            if kind == "line" and self.event(payload):
                return True

    def event(self, line):
        """Record one event; True when the child has finished."""
        try:
            event = json.loads(line)
            kind = event["event"]
        except (ValueError, TypeError, KeyError):
            return False               # not ours (something the submission wrote): ignored
        now = time.monotonic()
        if kind == "load_failed" and not self.loaded:
            error = event.get("error") or {}
            self.run.load_error = f"the file raised {calling.exception_text(error)} while loading"
            return True
        if kind == "loaded" and not self.loaded:
            self.loaded, self.run.functions = True, event.get("functions") or {}
            self.deadline = now + self.load_limit
        elif kind == "task" and self.loaded and self.current is None and self.next < len(self.order) \
                and event.get("id") == self.order[self.next]:
            self.current, self.started, self.next = self.order[self.next], now, self.next + 1
            self.deadline = now + self.time_limit
        elif kind in ("result", "raised", "failed") and event.get("task") == self.current \
                and isinstance(event.get("case"), int):
            self.run.tasks[self.current].outcomes.setdefault(event["case"], event)
        elif kind == "done" and event.get("id") == self.current and self.current is not None:
            task = self.run.tasks[self.current]
            task.finished, task.seconds = True, now - self.started
            self.current, self.deadline = None, now + self.load_limit
        elif kind == "finished":
            return True
        return False

    def stop(self, reason, timed_out=False):
        if not self.loaded:
            self.run.load_error = reason if reason.startswith("loading") else f"while the file loaded, {reason}"
        elif self.current is not None:
            task = self.run.tasks[self.current]
            task.stopped, task.timed_out, task.finished = reason, timed_out, True
            task.seconds = time.monotonic() - self.started

