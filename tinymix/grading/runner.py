"""Run one submission in a process of its own, with limits, and collect what it reports.

The grader starts `python -I -u child.py` (under bubblewrap where sandbox.py says so) from a pristine
copy of tinymix, with an empty scratch folder as its working folder, and writes the request (the
file's source, its assignment's library, each task's inputs, the limits) into its standard input,
which the child reads to the end as its first act and replaces with /dev/null: the request is never
a file, an argument or a variable, and nothing can read it a second time.
It then listens to two pipes: the child's events (one JSON line each, checked by channel.py) and the
submission's own prints. It never waits on the child without a deadline: loading the file gets
`load_limit` seconds, each task `time_limit` seconds from its "task" event, the whole file `budget`
seconds. A task that runs out of time is "timed out", a process that exits or dies mid-task leaves
that task unfinished, and a submission that prints more than OUTPUT_LIMIT bytes is stopped; in each
case the process (and every process it started) is killed and a fresh process grades the tasks that
remain. An event that is not the child's own ends the file: its unfinished tasks are errors.
"""
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from . import calling, channel, sandbox, wire

OUTPUT_LIMIT = 1_000_000    # bytes the submission may print before its process is stopped
OUTPUT_KEPT = 4_000         # bytes of them kept for the report
EVENT_LIMIT = 2 * wire.ANSWER_LIMIT     # one event larger than this is interference
FILE_SIZE_LIMIT = 64 << 20  # bytes of any one file the submission writes
PROCESSES = 64              # processes (threads included) the submission may add to its user's
INTERFERED = "the submission interfered with the grader"
_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "CUDA_PATH", "CUDA_HOME", "LD_LIBRARY_PATH")


@dataclass
class Isolation:
    """How submissions run: `place` (sandbox.Place, the pristine tinymix), under bwrap or not, the
    folders hidden from them (the class), the memory limit in bytes (None: none), and the seconds one
    file may take in all (None: as many as its tasks' limits allow)."""
    place: object = None
    sandboxed: bool = False
    hidden: tuple = ()
    memory: int = None
    budget: float = None


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
    ended: bool = False          # interference or the file's time budget: nothing more is run


def size_text(size):
    return f"{size / (1 << 30):g} GB" if size >= 1 << 30 else f"{size / (1 << 20):g} MB"


def run_submission(request, time_limit, load_limit, isolation=None):
    """Run `request` (child.py's request; request["tasks"] lists every task to grade) and return a Run."""
    isolation = isolation or Isolation()
    own_place = isolation.place is None
    place = sandbox.Place() if own_place else isolation.place
    run = Run({t["id"]: TaskRun() for t in request["tasks"]})
    running = _user_processes()
    request = {**request, "path": sandbox.python_path(isolation.hidden),
               "protected": [*request["protected"], str(place.root), sandbox.INSIDE],
               "limits": {"memory": isolation.memory, "file_size": FILE_SIZE_LIMIT,
                          "processes": running and running + PROCESSES}}
    end = time.monotonic() + (isolation.budget or float("inf"))
    try:
        pending = request["tasks"]
        while pending and run.load_error is None and not run.ended:
            _launch(run, {**request, "tasks": pending}, time_limit, load_limit, isolation, place, end)
            left = [t for t in pending if not run.tasks[t["id"]].finished]
            if len(left) == len(pending) and run.load_error is None and not run.ended:     # no progress: never loop
                run.tasks[left[0]["id"]].stopped = "the grading process stopped before this task ran"
                run.tasks[left[0]["id"]].finished = True
                left = left[1:]
            pending = left
    finally:
        if own_place:
            place.close()
    return run


def _user_processes():
    """How many processes (threads included) this user runs now: the base of the child's RLIMIT_NPROC
    (0 where /proc cannot tell: then there is no such limit)."""
    total = 0
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == os.getuid():
                total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:               # a process that ended meanwhile
            pass
    return total


def _environment(sandboxed):
    """The child's environment: a few harmless variables of this one, nothing else (no secrets)."""
    env = {k: v for k, v in os.environ.items() if k in _ENVIRONMENT or k.startswith("LC_")}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8")
    if sandboxed:
        env.update(HOME=sandbox.HOME, TMPDIR="/tmp")
    return env


def _send(pipe, data):
    """Write the request into the child's standard input and close it (a child that died first:
    nothing to do)."""
    try:
        with pipe:
            pipe.write(data)
    except OSError:
        pass


def _launch(run, request, time_limit, load_limit, isolation, place, end):
    posix = os.name == "posix"
    process, readers, events, printed, started = None, [], queue.Queue(), {}, None
    scratch = tempfile.mkdtemp(prefix="tinymix-scratch-")
    data = json.dumps(request).encode("utf-8")
    command = [sys.executable, "-I", "-u", place.child(isolation.sandboxed)]
    if isolation.sandboxed:
        command = sandbox.bwrap_command(place.root, scratch, isolation.hidden, request["path"]) + command
    # A Ctrl-C that lands inside Popen (after the fork) or before the `try` would leave the child
    # running in its own session, out of reach of the terminal: hold it until the child is known, so
    # that the `finally` below always kills it.
    release = _hold_interrupts()
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=scratch,
            env=_environment(isolation.sandboxed), start_new_session=posix,
            creationflags=0 if posix else subprocess.CREATE_NEW_PROCESS_GROUP)
        started = sandbox.start_time(process.pid)
        release()                                  # a Ctrl-C held meanwhile is raised here
        run.processes += 1
        readers = [threading.Thread(target=_send, args=(process.stdin, data), daemon=True),
                   threading.Thread(target=_read_events, args=(process.stdout, events), daemon=True),
                   threading.Thread(target=_read_output, args=(process.stderr, events, printed), daemon=True)]
        for reader in readers:
            reader.start()
        _Watch(run, request["tasks"], time_limit, load_limit, end, isolation).follow(process, events)
    finally:
        release(raise_held=False)
        if process is not None:
            _kill(process)
            sandbox.kill_leftovers(started)
        for reader in readers:
            reader.join(timeout=5)
        _remove(scratch)
        if printed.get("bytes"):
            separator = "\n[a fresh process]\n" if run.output else ""
            run.output = (run.output + separator + printed["kept"].decode("utf-8", "replace"))[:2 * OUTPUT_KEPT]
            run.output_bytes += printed["bytes"]


def _remove(folder):
    shutil.rmtree(folder, ignore_errors=True)


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
            events.put(("interference", f"a message larger than {wire.megabytes(EVENT_LIMIT)}"))
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


def _exit_reason(process, isolation):
    exited = _exited(process)
    status = _kill(process)
    if not exited:
        return "the process stopped reporting to the grader (its channel was closed) and was stopped"
    if isolation.sandboxed and status > 128:         # bwrap exits with 128 + the signal that killed the child
        status = 128 - status
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        memory = f" (more memory than the machine could give? the grader's limit is {size_text(isolation.memory)})" \
            if name == "SIGKILL" and isolation.memory else ""
        return f"the process was killed by signal {name}{memory}"
    return f"the process ended with exit status {status} (os._exit in the submission, or Python itself crashed)"


class _Watch:
    """Follows one child's events against the clock and records them in the Run."""

    def __init__(self, run, tasks, time_limit, load_limit, end, isolation):
        self.run, self.order = run, [t["id"] for t in tasks]
        self.cases = {t["id"]: len(t["cases"]) for t in tasks}
        self.time_limit, self.load_limit, self.end, self.isolation = time_limit, load_limit, end, isolation
        self.loaded, self.current, self.next, self.started = False, None, 0, None

    def follow(self, process, events):
        now = time.monotonic()
        overall = now + self.load_limit + len(self.order) * self.time_limit + 5   # forged events cannot buy time
        self.deadline = now + self.load_limit
        while True:
            try:
                kind, payload = events.get(timeout=max(0.0, min(self.deadline, overall, self.end) - time.monotonic()))
            except queue.Empty:
                if time.monotonic() >= self.end:
                    return self.end_file(f"the file ran out of its {self.isolation.budget:g} s (all its tasks "
                                         "together, --file-time-limit)", timed_out=True)
                if self.current is None and self.loaded:
                    return self.stop("the grading process stopped answering")
                if self.current is None:
                    return self.stop(f"loading the file did not finish within {self.load_limit:g} s (an endless "
                                     "loop at the top level?)")
                return self.stop(f"did not finish within {self.time_limit:g} s (an endless loop?); the "
                                 "grader stopped it and graded the other tasks in a fresh process", timed_out=True)
            if kind == "eof":
                return self.stop(_exit_reason(process, self.isolation))
            if kind == "interference":
                return self.interfered(payload)
            if kind == "flood":
                _kill(process)
                if self.drain(events):
                    return
                return self.stop(f"the submission {payload}; the grader stopped it")
            try:
                if self.event(payload):
                    return
            except channel.Interference as error:
                return self.interfered(str(error))

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
            if kind in ("eof", "interference"):
                return False
            try:
                if kind == "line" and self.event(payload):
                    return True
            except channel.Interference as error:
                self.interfered(str(error))
                return True

    def event(self, line):
        """Record one event (channel.Interference for one that is not the child's, or out of its order);
        True when the child has finished."""
        event = channel.parse(line)
        kind, now = event["event"], time.monotonic()
        if not self.loaded:
            if kind == "load_failed":
                self.run.load_error = f"the file raised {calling_text(event['error'], self.isolation)} while loading"
                return True
            if kind != "loaded":
                raise channel.Interference(f"a {kind!r} event before the file loaded")
            self.loaded, self.run.functions = True, event["functions"]
            self.deadline = now + self.load_limit
        elif self.current is None:
            if kind == "finished" and self.next == len(self.order):
                return True
            if kind != "task" or self.next >= len(self.order) or event["id"] != self.order[self.next]:
                raise channel.Interference(f"a {kind!r} event out of order")
            self.current, self.started, self.next = self.order[self.next], now, self.next + 1
            self.deadline = now + self.time_limit
        elif kind in ("result", "raised", "failed") and event["task"] == self.current \
                and 0 <= event["case"] < self.cases[self.current] \
                and event["case"] not in self.run.tasks[self.current].outcomes:
            if kind == "raised":
                event["error"]["message"] = _memory_text(event["error"], self.isolation)
            self.run.tasks[self.current].outcomes[event["case"]] = event
        elif kind == "done" and event["id"] == self.current:
            task = self.run.tasks[self.current]
            task.finished, task.seconds = True, now - self.started
            self.current, self.deadline = None, now + self.load_limit
        else:
            raise channel.Interference(f"a {kind!r} event out of order")
        return False

    def stop(self, reason, timed_out=False):
        if not self.loaded:
            self.run.load_error = reason if reason.startswith("loading") else f"while the file loaded, {reason}"
        elif self.current is not None:
            task = self.run.tasks[self.current]
            task.stopped, task.timed_out, task.finished = reason, timed_out, True
            task.seconds = time.monotonic() - self.started

    def end_file(self, reason, timed_out=False):
        """Stop here for good: the task under way and every task not run yet are not graded."""
        self.run.ended = True
        if not self.loaded:
            self.run.load_error = reason
            return
        for index, task_id in enumerate(self.order):
            task = self.run.tasks[task_id]
            if not task.finished:
                task.stopped, task.timed_out, task.finished = reason, timed_out, True
                if task_id == self.current:
                    task.seconds = time.monotonic() - self.started

    def interfered(self, detail):
        self.end_file(f"{INTERFERED}: its process wrote to the grader's channel ({detail}); the rest of this "
                      "file is not graded")


def _memory_text(error, isolation):
    if error["type"] == "MemoryError" and isolation.memory:
        return f"used more than {size_text(isolation.memory)} of memory, the grader's limit (--memory-limit)"
    return error["message"]


def calling_text(error, isolation):
    return calling.exception_text({**error, "message": _memory_text(error, isolation)})
