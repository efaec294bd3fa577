"""`python3 -m tinymix [command] [--flags]`: the command line. With no command: the main job.

Every flag of `train` is a field of train.TrainConfig or, with --task e2e, of e2e.finetune.NLGConfig
(`--train-size 2000` sets train_size); the resolved config is saved as config.json in the run folder.
With --resume, the flags not given come from that config.json (only some may change: see
runfolder.RESUMABLE).

Errors a user can cause end as one line on stderr and a non-zero exit status (1; 130 after Ctrl-C),
all in one place, `main` below; TINYMIX_DEBUG=1 shows the Python traceback instead.
"""
import errno
import os
import sys

# The command line's files, the package's only home of argument parsing and entry points:
#   parser.py     every command and its flags (`train --task e2e` and `compare --task e2e` included)
#   commands.py   what each command does, by calling down into the floors below
#   flags.py      one --flag per field of a config (train.TrainConfig, e2e.finetune.NLGConfig)
#   helptext.py   what each of those flags means: its choices, units and what its default resolves to
#   worker.py     one run of a comparison in a process of its own (python3 -m tinymix.cli.worker)

from .commands import MAIN_JOB
from .parser import build_parser


def parse(argv):
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["main"] + argv  # the built-in default
    return build_parser(__doc__).parse_args(argv)


def execute(args):
    """Run a parsed command; errors propagate (main turns them into one line)."""
    from .. import backend
    backend.require()            # a bad TINYMIX_BACKEND is an error here, after --help had its turn
    backend.reuse_freed_memory()
    return args.run(args)


def run(argv):
    """parse + execute, without the handler: what tests and other Python code call."""
    return execute(parse(list(argv)))


def main(argv=None):
    """The command line's one error handler."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("TINYMIX_DEBUG", "") not in ("", "0")
    args = None
    try:
        args = parse(argv)
        execute(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\ninterrupted. {_after_interrupt(args)}", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:       # SystemExit (argparse, --help) passes through
        if debug:
            raise
        raise SystemExit(f"error: {describe_error(error)}") from None     # printed to stderr, status 1


def _after_interrupt(args):
    """Where the interrupted run's work is, and the command that continues it."""
    from ..runfolder import resume_hint
    command = getattr(args, "command", None) or "main"
    if command not in ("main", "train") or getattr(args, "task", None) == "e2e":
        return "Nothing resumable was being written."
    out = args.out if getattr(args, "out", None) is not None else (MAIN_JOB["out"] if command == "main" else "")
    return resume_hint(out, command).capitalize() + "."


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space, or write elsewhere (--out; TINYMIX_CACHE for downloads)",
    errno.EDQUOT: "the disk quota is used up: free some space, or write elsewhere",
    errno.EROFS: "that file system is read-only: choose another folder (--out; TINYMIX_CACHE for downloads)",
    errno.EACCES: "no permission there: choose another folder (--out; TINYMIX_CACHE for downloads)",
    errno.EPERM: "not permitted there: choose another folder (--out; TINYMIX_CACHE for downloads)",
    errno.ENOTDIR: "a file is in the way where a folder is needed",
    errno.EEXIST: "a file is in the way where a folder is needed",
    errno.EFBIG: "the file grew past the size limit of this process (ulimit -f)",
}


def describe_error(error):
    """One line for a user: what went wrong and, where it is known, what to do."""
    if isinstance(error, MemoryError):
        return (f"out of memory ({str(error) or 'no details'}): use a smaller --batch-size, --eval-batch-size "
                "or --max-length, fewer --num-experts, or --low-memory")
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        hint = _OS_HINTS.get(error.errno)
        return f"{error.strerror}{where}" + (f" ({hint})" if hint else "")
    if isinstance(error, KeyError):
        key = error.args[0] if error.args else ""
        return key if isinstance(key, str) and " " in key else f"missing entry {key!r}"
    if isinstance(error, (ValueError, RuntimeError, FloatingPointError, OSError)):
        return str(error)
    return (f"unexpected {type(error).__name__}: {error} (run again with TINYMIX_DEBUG=1 to see where it "
            "happened)")
