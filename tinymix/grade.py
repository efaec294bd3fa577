"""The offline autograder for lessons/assignments/: no server, one command.

    python3 -m tinymix.grade lessons/assignments/a2_softmax_layernorm.py     # grade a student file
    python3 -m tinymix.grade lessons/assignments/a2_softmax_layernorm.py --task A2.4
    python3 -m tinymix.grade CLASS/ --csv grades.csv --json grades.json     # a class: every .py below CLASS
    python3 -m tinymix.grade CLASS/ --seed 8123 --csv grades.csv            # hidden cases (instructor's seed)
    python3 -m tinymix.grade CLASS/ --sandbox bwrap --memory-limit 1G       # insist on bubblewrap
    python3 -m tinymix.grade --reference                  # the answer key (the library) scores full marks
    python3 -m tinymix.grade --check-stubs                # stubs repeat the registry's contracts exactly
    python3 -m tinymix.grade --stub A2.4                  # a task's stub, as the registry defines it
    python3 -m tinymix.grade --list                       # assignments, tasks and points

Each file runs in a process of its own (under bubblewrap where the machine has it: --sandbox), with
a time limit per task and per file and a memory limit; that process receives each check's inputs
and returns the function's outputs as data, each message checked before it is used. Here, in the grader's process, each
check compares them with the reference (the library) within atol + rtol * |expected|, with central
differences, or with a property. A task scores all its points when every check passes, none
otherwise (--partial-credit: its share). "not started": the stub still raises NotImplementedError;
"error": an exception (with its line), a process that exited or printed too much; "timed out".
Exit status: 0 when every graded task of every file passed, 1 otherwise, 2 for a command that
cannot be carried out (an unknown task, a file that is no assignment, a grades file inside the
class folder), 3 when a grades file could not be written where asked (the message names where it
went), 130 on Ctrl-C.
"""
import os
import sys

if __name__ == "__main__":
    # `python3 -m tinymix.grade` put the current folder first on sys.path: from a class folder, a
    # student's numpy.py would run inside the grader at the next import. (tinymix/__init__.py imports
    # nothing, so nothing has been imported from there yet.)
    sys.path[:] = [entry for entry in sys.path if entry not in ("", os.getcwd())]

from .grading.cli import main as _main  # noqa: E402


def main(argv=None):
    return _main(argv, description=__doc__.split("\n")[0])


if __name__ == "__main__":
    sys.exit(main())
