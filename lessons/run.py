"""Run a lesson cell by cell.

    python lessons/run.py                  # list the lessons
    python lessons/run.py 07 --step        # show each cell's prose and code, run it, wait for Enter
    python lessons/run.py 07 --all         # the same without pausing
    python lessons/run.py all --all        # every lesson in turn, with a table of times at the end
    TINYMIX_FAST=1 python lessons/run.py 07 --all    # small budgets (what CI runs); or add --fast

A lesson is a plain Python file in the `# %%` cell format: a line `# %% [markdown]` starts a prose
cell (a block of comment lines), a line starting `# %%` starts a code cell. Every editor that knows
the format steps through the same cells, and `python lessons/07_....py` runs the file as a script.
The cells of one lesson share one namespace, as they would in a notebook. An error stops the lesson
with the traceback pointing at the lesson's own line numbers, and the exit status is 1.
"""
import argparse
import os
import re
import sys
import textwrap
import time
import traceback
import types
from pathlib import Path

LESSONS = Path(__file__).resolve().parent
LESSON_NAME = re.compile(r"^(\d\d)_\w+\.py$")
CELL_MARK = re.compile(r"^# %%(.*)$")


def lesson_files():
    """{"07": Path(".../07_lora.py"), ...} for every numbered lesson, in order."""
    found = {}
    for path in sorted(LESSONS.iterdir()):
        match = LESSON_NAME.match(path.name)
        if match:
            found[match.group(1)] = path
    return found


class Cell:
    def __init__(self, kind, title, lines, first_line):
        self.kind, self.title, self.lines, self.first_line = kind, title, lines, first_line

    @property
    def source(self):
        return "\n".join(self.lines).strip("\n")

    def prose(self):
        """A markdown cell's text without its comment marks."""
        return "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in self.lines).strip()


def parse_cells(path):
    """The cells of a lesson, in order. Text before the first marker (a docstring, say) is a code cell."""
    cells, kind, title, lines, first = [], "code", "", [], 1
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        mark = CELL_MARK.match(line)
        if mark:
            if "".join(lines).strip():
                cells.append(Cell(kind, title, lines, first))
            rest = mark.group(1).strip()
            kind = "markdown" if rest.startswith("[markdown]") else "code"
            title = rest.removeprefix("[markdown]").strip()
            lines, first = [], number + 1
        else:
            lines.append(line)
    if "".join(lines).strip():
        cells.append(Cell(kind, title, lines, first))
    return cells


def _rule(text=""):
    width = 100
    return f"-- {text} ".ljust(width, "-") if text else "-" * width


def run_lesson(path, step=False, show_code=True):
    """Run every cell of a lesson; returns True if all ran. With step, wait for Enter after each."""
    cells = parse_cells(path)
    # A real module object, so that classes defined in a cell know their module (dataclasses need it)
    module = types.ModuleType(f"lesson_{path.stem}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    code_cells = sum(cell.kind == "code" for cell in cells)
    done = 0
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
            return False
        seconds = time.perf_counter() - started
        if seconds >= 1.0:
            print(f"[cell {done}: {seconds:.1f} s]")
        sys.stdout.flush()
        if step and done < code_cells:
            try:
                answer = input("\n[Enter: next cell, q: quit] ")
            except EOFError:   # no terminal behind stdin: carry on
                answer = ""
            if answer.strip().lower() == "q":
                return True
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n\n")[1:2]))
    parser.add_argument("lessons", nargs="*", help='lesson numbers ("07" or "7"), or "all"')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--step", action="store_true", help="pause after each cell (the default)")
    mode.add_argument("--all", action="store_true", help="run every cell without pausing")
    parser.add_argument("--fast", action="store_true", help="small budgets (same as TINYMIX_FAST=1)")
    parser.add_argument("--no-code", action="store_true", help="print prose and output, not the code")
    args = parser.parse_args(argv)

    if args.fast:
        os.environ["TINYMIX_FAST"] = "1"
    available = lesson_files()
    if not args.lessons:
        for number, path in available.items():
            print(f"{number}  {path.name}")
        print("\nrun one with: python lessons/run.py NN --step   (or --all to run without pausing)")
        return 0
    chosen = []
    for name in args.lessons:
        if name == "all":
            chosen += list(available)
        elif name.isdigit() and f"{int(name):02d}" in available:
            chosen.append(f"{int(name):02d}")
        else:
            parser.error(f"no lesson {name!r}; lessons are {', '.join(available)}")

    for folder in (str(LESSONS.parent), str(LESSONS)):   # `import tinymix` and `import support`
        if folder not in sys.path:
            sys.path.insert(0, folder)
    import support  # noqa: F401  (its environment settings must precede the lessons' NumPy import)
    mode_name = "fast" if os.environ.get("TINYMIX_FAST", "") not in ("", "0") else "full"
    times = {}
    for number in chosen:
        path = available[number]
        print(_rule(f"lesson {path.name} ({mode_name} mode)"))
        started = time.perf_counter()
        ok = run_lesson(path, step=not args.all, show_code=not args.no_code)
        times[number] = time.perf_counter() - started
        print(f"\n{path.name}: {'done' if ok else 'FAILED'} in {times[number]:.1f} s ({mode_name} mode)")
        if not ok:
            return 1
    if len(chosen) > 1:
        print("\n" + "\n".join(f"{available[n].name:40s} {t:7.1f} s" for n, t in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
