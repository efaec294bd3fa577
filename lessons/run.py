"""Run a lesson cell by cell.

    python3 lessons/run.py                  # list the lessons
    python3 lessons/run.py 08 --step        # show each cell's prose and code, run it, wait for Enter
    python3 lessons/run.py 08 --all         # the same without pausing
    python3 lessons/run.py all --all        # every lesson in turn, with a table of times at the end
    python3 lessons/run.py --all            # the same
    python3 lessons/run.py 08 --exercises   # only the lesson's exercise cells and their self-checks
    python3 lessons/run.py 08 --notebook    # write lessons/notebooks/08_adapters.ipynb (no run)
    TINYMIX_FAST=1 python3 lessons/run.py 08 --all    # small budgets (what CI runs); or add --fast

A lesson is a plain Python file in the `# %%` cell format: a line `# %% [markdown]` starts a prose
cell (a block of comment lines), a line starting `# %%` starts a code cell. Every editor that knows
the format steps through the same cells, and `python3 lessons/08_....py` runs the file as a script.
The cells of one lesson share one namespace, as they would in a notebook. An error stops the lesson
with the traceback pointing at the lesson's own line numbers, and the exit status is 1. Ctrl-C or
`q` at the prompt stops cleanly (exit status 130 and 0). Times count running cells, not the time
spent reading at the prompt.
"""
import argparse
import os
import sys
import textwrap
import time
import traceback
import types
from pathlib import Path

from cells import (CELL_MARK, EXERCISE_TITLE, LESSON_NAME, LESSONS, Cell, LessonError,  # noqa: F401
                   lesson_files, parse_cells)


def _rule(text=""):
    width = 100
    return f"-- {text} ".ljust(width, "-") if text else "-" * width


class Outcome:
    """How a lesson run ended: "done", "stopped" (q at the prompt), "failed" or "interrupted"
    (Ctrl-C), after how many code cells, and the seconds spent running cells (prompts excluded)."""

    def __init__(self, status, cells_run, cells_total, seconds):
        self.status, self.cells_run, self.cells_total, self.seconds = status, cells_run, cells_total, seconds

    def __bool__(self):
        return self.status in ("done", "stopped")

    def describe(self, name):
        if self.status == "done":
            return f"{name}: done in {self.seconds:.1f} s"
        if self.status == "stopped":
            return f"{name}: stopped after cell {self.cells_run} of {self.cells_total} ({self.seconds:.1f} s of cells)"
        if self.status == "interrupted":
            return f"{name}: interrupted in cell {self.cells_run} of {self.cells_total}"
        return f"{name}: FAILED in cell {self.cells_run} of {self.cells_total}"


def _ask(prompt):
    """The reader's answer at the prompt; "" where no terminal is attached (carry on)."""
    try:
        return input(prompt)
    except EOFError:
        return ""


def run_lesson(path, step=False, show_code=True, exercises_only=False):
    """Run the cells of a lesson (or only its exercise cells); returns an Outcome. With step, wait
    for Enter after each cell. A KeyboardInterrupt (Ctrl-C) is returned as "interrupted"."""
    cells = [c for c in parse_cells(path) if c.is_exercise or not exercises_only]
    # A real module object, so that classes defined in a cell know their module (dataclasses need it)
    module = types.ModuleType(f"lesson_{path.stem}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    code_cells = sum(cell.kind == "code" for cell in cells)
    done, seconds = 0, 0.0
    try:
        for cell in cells:
            if cell.kind == "markdown":
                print()
                print(textwrap.indent(cell.prose(), "  "))
                continue
            done += 1
            print()
            print(_rule(f"cell {done}/{code_cells}" + (f": {cell.title}" if cell.title else "")
                        + f"  ({path.name}, line {cell.first_line})"))
            if show_code:
                print(textwrap.indent(cell.source, "  | ", lambda line: True))
                print(_rule())
            # Pad with blank lines so that tracebacks and the debugger show the lesson's own line numbers.
            code = compile("\n" * (cell.first_line - 1) + "\n".join(cell.lines), str(path), "exec")
            started = time.perf_counter()
            try:
                exec(code, namespace)
            except Exception:
                traceback.print_exc()
                print(f"\n{path.name}: cell {done} (line {cell.first_line}) failed", file=sys.stderr)
                return Outcome("failed", done, code_cells, seconds + time.perf_counter() - started)
            cell_seconds = time.perf_counter() - started
            seconds += cell_seconds
            if cell_seconds >= 1.0:
                print(f"[cell {done}: {cell_seconds:.1f} s]")
            sys.stdout.flush()
            if step and done < code_cells:
                if _ask("\n[Enter: next cell, q: quit] ").strip().lower() == "q":
                    return Outcome("stopped", done, code_cells, seconds)
    except KeyboardInterrupt:
        return Outcome("interrupted", done, code_cells, seconds)
    return Outcome("done", done, code_cells, seconds)


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n\n")[1:2]))
    parser.add_argument("lessons", nargs="*", help='lesson numbers ("08" or "8"), or "all"')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--step", action="store_true", help="pause after each cell (the default)")
    mode.add_argument("--all", action="store_true", help="run every cell without pausing; "
                      "without a lesson number, run every lesson")
    mode.add_argument("--exercises", action="store_true", help="run only the exercise cells, without pausing")
    mode.add_argument("--notebook", action="store_true", help="write each lesson as a Jupyter notebook "
                      "(.ipynb) instead of running it")
    parser.add_argument("--out", type=Path, help="with --notebook: the folder for the notebooks "
                        "(default lessons/notebooks)")
    parser.add_argument("--fast", action="store_true", help="small budgets (same as TINYMIX_FAST=1)")
    parser.add_argument("--no-code", action="store_true", help="print prose and output, not the code")
    return parser


def _chosen(parser, args, available):
    """The lesson numbers to run, in order; None when the list should be shown instead."""
    if args.step and not args.lessons:
        parser.error("--step needs a lesson: python3 lessons/run.py 08 --step")
    names = args.lessons or (["all"] if (args.all or args.notebook or args.exercises) else [])
    if not names:
        return None
    chosen = []
    for name in names:
        if name == "all":
            chosen += list(available)
        elif name.isdigit() and f"{int(name):02d}" in available:
            chosen.append(f"{int(name):02d}")
        else:
            parser.error(f"no lesson {name!r}; lessons are {', '.join(available)} (or 'all')")
    return chosen


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.out is not None and not args.notebook:
        parser.error("--out goes with --notebook (the folder the notebooks are written to)")
    if args.fast:
        os.environ["TINYMIX_FAST"] = "1"
    try:
        available = lesson_files()
    except LessonError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    chosen = _chosen(parser, args, available)
    if chosen is None:
        import catalogue                      # number, title and run time of each lesson
        print(catalogue.listing())
        print("\nrun one with: python3 lessons/run.py NN --step   (or --all to run it without pausing;"
              "\n              python3 lessons/run.py --all runs every lesson)")
        return 0
    if args.notebook:
        import make_notebook
        for number in chosen:
            path = available[number]
            print(f"notebook written: {make_notebook.write_notebook(path, parse_cells(path), LESSONS, args.out)}")
        return 0

    for folder in (str(LESSONS.parent), str(LESSONS)):   # `import tinymix` and `import support`
        if folder not in sys.path:
            sys.path.insert(0, folder)
    import support  # noqa: F401  (its environment settings must precede the lessons' NumPy import)
    from tinymix import backend
    backend.reuse_freed_memory()     # the lessons allocate and free large arrays at every op
    mode_name = "fast" if os.environ.get("TINYMIX_FAST", "") not in ("", "0") else "full"
    times = {}
    for number in chosen:
        path = available[number]
        print(_rule(f"lesson {path.name} ({mode_name} mode)" + (", exercises only" if args.exercises else "")))
        outcome = run_lesson(path, step=not (args.all or args.exercises), show_code=not args.no_code,
                             exercises_only=args.exercises)
        times[number] = outcome.seconds
        print(f"\n{outcome.describe(path.name)} ({mode_name} mode)")
        if outcome.status == "interrupted":
            return 130
        if outcome.status == "failed":
            return 1
        if outcome.status == "stopped":
            return 0
    if len(chosen) > 1:
        print("\n" + "\n".join(f"{available[n].name:40s} {t:7.1f} s" for n, t in times.items()))
        print(f"{'total':40s} {sum(times.values()):7.1f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:        # Ctrl-C outside a cell (while starting up, say)
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
