"""What a submission's process refuses, installed before the submission's first line runs.

- Imports: a module of tinymix that this assignment's library does not include is refused, whatever
  the spelling (`import`, `from tinymix import ...`, importlib, __import__): a finder in front of
  sys.meta_path raises ImportError with the reason. The allowed modules are loaded before the
  submission runs, so every tinymix module the process has is one the assignment allows.
- Withheld functions: a function of an allowed module that is itself a task's answer (A3's
  functional.attention) is replaced by one that raises the reason.
- Files: an audit hook (sys.addaudithook; it cannot be removed) refuses to open, change or link the
  protected paths: the tinymix package (so its source cannot be read, exec'd or imported under
  another name through sys.path) and the submissions being graded. It refuses to open a folder as a
  file descriptor (a dir_fd would reach paths the hook cannot resolve), to make links, and to open
  another process's /proc entry. It also refuses to start processes, send signals and (on the NumPy
  backend) use ctypes, which would step around the rest.

This is a guard against a student's shortcuts, not a sandbox: Python's audit hooks see what Python
does, not what native code does (the sandbox is bubblewrap, see sandbox.py).
"""
import os
import sys

_REFUSED_EVENTS = ("os.link", "os.symlink", "os.chdir")
_PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "os.forkpty", "os.startfile", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill")
_PATH_EVENTS = ("open", "os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod", "os.chown", "os.truncate",
                "os.utime", "shutil.rmtree", "shutil.copyfile",
                "shutil.copytree", "shutil.move")


class _Blocker:
    """A meta-path finder that refuses every tinymix module not loaded yet."""

    def __init__(self, reason):
        self.reason = reason

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "tinymix" or fullname.startswith("tinymix."):
            raise ImportError(f"{fullname} is not available while this file is graded: {self.reason}",
                              name=fullname)
        return None


def missing_attribute(reason):
    """A module __getattr__ for a tinymix package whose __init__ was not run (A1, A2): names it would
    have defined are refused with the reason."""
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(f"tinymix.{name} is not available while this file is graded: {reason}")
    return __getattr__


def withhold(module, name, reason):
    """Replace module.name by a function that raises the reason."""
    def withheld(*args, **kwargs):
        raise ImportError(f"{module.__name__}.{name} is not available while this file is graded: {reason}")
    withheld.__name__ = name
    setattr(module, name, withheld)


def _resolve(path):
    if isinstance(path, int):           # an open file descriptor: opening it again opens nothing new
        return None
    try:
        return os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return None


def _is_folder(path):
    try:
        return os.path.isdir(path)
    except (TypeError, ValueError):
        return False


def install(reason, protected, allow_ctypes=False):
    """Refuse imports of tinymix modules not loaded yet (with `reason`), and access to `protected`
    paths (files or folders), process creation, signals and ctypes (unless `allow_ctypes`: CuPy loads
    CUDA libraries through it). For the rest of the process."""
    sys.meta_path.insert(0, _Blocker(reason))
    protected = tuple(os.path.realpath(p) for p in protected)
    inside = tuple(p + os.sep for p in protected)

    def refused(path):
        resolved = _resolve(path)
        if resolved is None:
            return False
        if resolved in protected or resolved.startswith(inside):
            return True
        # a folder above a protected path, opened to reach it with dir_fd
        if os.path.isdir(resolved) and any(p.startswith(resolved.rstrip(os.sep) + os.sep) for p in protected):
            return True
        parts = resolved.split(os.sep)          # another process's /proc entry: the grader's memory, its argv
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != str(os.getpid())

    def hook(event, args):
        if event in _PROCESS_EVENTS:
            raise PermissionError(f"{event} is not allowed while a file is graded: a submission may not "
                                  "start processes or send signals")
        if event.startswith("ctypes.") and not allow_ctypes:
            raise PermissionError(f"{event} is not allowed while a file is graded")
        if event in _REFUSED_EVENTS:
            raise PermissionError(f"{event} is not allowed while a file is graded")
        if event == "open" and args[1] is None and not isinstance(args[0], int) and _is_folder(args[0]):
            raise PermissionError(f"{os.fsdecode(args[0])}: opening a folder as a file descriptor is not "
                                  "allowed while a file is graded")
        if event in _PATH_EVENTS:
            paths = args[:2] if event in ("os.rename", "shutil.copyfile",
                                          "shutil.copytree", "shutil.move") else args[:1]
            for path in paths:
                if refused(path):
                    raise PermissionError(f"{os.fsdecode(path)} may not be opened or changed while a file "
                                          "is graded: tinymix's own files and the submissions being graded "
                                          "are off limits")
    sys.addaudithook(hook)
