"""Where a submission's process runs: under bubblewrap (`bwrap`) when the machine has it, else as a plain
process with what the operating system offers. Grader side only.

With bwrap (Linux), the process sees: the system's programs and libraries and Python's own folders,
read-only; a pristine copy of tinymix (made once per grading run, without the answer key) at
/opt/tinymix, read-only; an empty private /tmp and HOME; an empty scratch folder as its working
folder. It has its own PID namespace (the grader's /proc is not visible, and every process it starts
dies with it), no network, a session of its own, and it dies with the grader. The instructor's
checkout, the class folder and the rest of the disk are not there at all.

Without it (`--sandbox none`, or bwrap absent or unable to start, as in some containers) the process
runs in Python's isolated mode from the same pristine copy, in its own process group, killed at the
end with every process it left behind (the grader is a subreaper on Linux, so even double-forked
ones are found), with the resource limits child.py sets and the guard's audit hook (guard.py).
"""
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import backend

PACKAGE = Path(__file__).resolve().parent.parent     # the tinymix package in use: the instructor's
INSIDE = "/opt/tinymix"                              # where the pristine copy appears in the sandbox
SCRATCH = "/scratch"
HOME = "/home/student"
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache", "/etc/ld.so.conf",
           "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
INSTALL = "sudo apt-get install bubblewrap (Debian, Ubuntu), sudo dnf install bubblewrap (Fedora)"


def within(path, folder):
    """Whether `path` is `folder` or inside it (both real paths, as strings)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def python_path(hidden=()):
    """The folders the submission's Python imports from: this process's sys.path without the current
    folder, the folder that holds the instructor's tinymix (unless it is a site-packages) and
    anything inside or around `hidden` (the class folders)."""
    cwd, holder = os.path.realpath(os.getcwd()), str(PACKAGE.parent)
    kept = []
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else cwd
        if real == cwd or not os.path.isdir(real) or real in kept \
                or any(within(real, h) or within(h, real) for h in hidden):
            continue
        if real == holder and not real.endswith("-packages"):
            continue
        kept.append(real)
    return kept


class Place:
    """The pristine copy of tinymix for one grading run: `root` holds tinymix/ (read-only files), without
    tinymix/assignments (the answer key stays with the grader) and caches."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="tinymix-grader-"))
        shutil.copytree(PACKAGE, self.root / "tinymix",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "assignments"))
        for path in self.root.rglob("*"):
            path.chmod(0o555 if path.is_dir() else 0o444)

    def child(self, sandboxed):
        return (INSIDE if sandboxed else str(self.root)) + "/tinymix/grading/child.py"

    def close(self):
        for path in [self.root, *self.root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def bwrap_command(root, scratch, hidden=(), python=()):
    """bwrap's arguments, up to and including "--", for a process that sees what the module docstring
    says; `root` holds the pristine tinymix, `scratch` becomes its working folder, `hidden` folders are
    covered by an empty one wherever they fall inside a folder it sees."""
    args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all", "--cap-drop", "ALL",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", HOME]
    seen = []
    for path in [*_SYSTEM, sys.prefix, sys.base_prefix, sys.exec_prefix,
                 os.path.dirname(os.path.realpath(sys.executable)), *python]:
        if os.path.islink(path) and path in _SYSTEM:
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path) and not any(within(os.path.realpath(path), s) for s in seen):
            args += ["--ro-bind", os.path.realpath(path), os.path.realpath(path)]
            seen.append(os.path.realpath(path))
    for folder in [str(PACKAGE), *hidden]:
        if any(within(folder, s) for s in seen):
            args += ["--tmpfs", folder]
    args += ["--ro-bind", str(root), INSIDE, "--bind", str(scratch), SCRATCH, "--chdir", SCRATCH, "--"]
    return args


@functools.cache
def bwrap_works():
    """Whether bwrap is installed and starts a Python here (it can fail inside containers)."""
    if sys.platform != "linux" or shutil.which("bwrap") is None:
        return False
    with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as scratch:
        try:
            done = subprocess.run(bwrap_command(root, scratch) + [sys.executable, "-I", "-c", "print('ok')"],
                                  capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return False
    return done.returncode == 0 and done.stdout.strip() == b"ok"


def child_backend():
    """The backend a submission's process runs on: the one TINYMIX_BACKEND names (what any new tinymix
    process would use), else the grader's own. (Under the test suite's CuPy stand-in, the grader's
    process is on "cupy" while a new process, which cannot see the stand-in, is on numpy.)"""
    return os.environ.get("TINYMIX_BACKEND") or backend.name


def choose(mode):
    """(sandboxed, note): whether to use bwrap for `mode` ("auto", "bwrap", "none"), and a warning to
    print once when a submission will run without it. ValueError for "bwrap" where it cannot run."""
    if mode == "none":
        return False, None
    if child_backend() == "cupy":            # the sandbox's /dev has no GPU (untried: not offered)
        if mode == "bwrap":
            raise ValueError("--sandbox bwrap grades on the CPU only: unset TINYMIX_BACKEND=cupy to use it")
        return False, ("WARNING: grading on the GPU (TINYMIX_BACKEND=cupy) runs without the sandbox: the "
                       "submissions run as you, behind the grader's guard only (lessons/assignments/README.md). "
                       "Grade files you do not trust on the CPU, where bubblewrap runs them.")
    if bwrap_works():
        return True, None
    if mode == "bwrap":
        raise ValueError(f"--sandbox bwrap: bubblewrap is not installed or cannot start here ({INSTALL})")
    return False, ("WARNING: no sandbox on this machine: the submissions run as you, with your files and "
                   "network, behind the grader's guard only (lessons/assignments/README.md names what that "
                   f"does not stop). On Linux: {INSTALL}.")


# ---- the fallback: this process as subreaper, and the processes a submission leaves behind ---------------------

def _prctl(option, value):
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):          # not Linux
        return False


def protect_this_process():
    """Linux: orphaned processes of a submission become this process's children (PR_SET_CHILD_SUBREAPER),
    so that kill_leftovers finds them; and this process's memory and environment are not readable
    through /proc by other processes of the same user (PR_SET_DUMPABLE 0)."""
    _prctl(36, 1)
    _prctl(4, 0)


def start_time(pid):
    """When a process started, in clock ticks since boot (None if it is gone, or not on Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _children_since(started):
    found = []
    for entry in Path("/proc").iterdir() if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid() and int(fields[19]) >= started:
            found.append(int(entry.name))
    return found


def kill_leftovers(started):
    """Kill and reap this process's children that started at or after `started` (a start_time): what a
    submission left running, reparented here. Repeated until none is left (killing one reparents its
    own children here)."""
    if started is None:
        return
    for _ in range(100):
        found = _children_since(started)
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError, PermissionError):
                pass
        time.sleep(0.01)
