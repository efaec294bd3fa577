"""The command: python3 -m tinymix.grade (the usage is tinymix/grade.py's docstring)."""
import argparse
import contextlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from ..store.files import atomic_write
from ..assignments import ASSIGNMENTS, assignment, task
from . import judge, report, runner, sandbox, stubs, submissions

SEED_VARIABLE = "TINYMIX_GRADE_SEED"
DEFAULT_MEMORY = "2G"
DEFAULT_BUDGET = 30.0        # seconds per file, all its tasks together (at least 4 task limits)
NOT_WRITTEN = 3              # the exit status when a grades file went to its fallback, or nowhere


def _parser(description):
    parser = argparse.ArgumentParser(prog="python3 -m tinymix.grade", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="FILE_OR_FOLDER",
                        help="student files, or folders of them (a class: one row per file and task)")
    parser.add_argument("--task", action="append", help="grade only this task (e.g. A2.4); repeatable")
    parser.add_argument("--assignment", help="the assignment the files answer, when their names do not say")
    parser.add_argument("--time-limit", type=float, default=judge.DEFAULT_TIME_LIMIT, metavar="SECONDS",
                        help=f"seconds each task may run (default {judge.DEFAULT_TIME_LIMIT:g}); loading a file "
                        "gets twice that, at least 10")
    parser.add_argument("--seed", type=int, help="hidden cases: draw the inputs with this secret seed (default: "
                        f"${SEED_VARIABLE} if set, else the cases students see)")
    parser.add_argument("--partial-credit", action="store_true",
                        help="a task scores its points times the fraction of its checks that passed")
    parser.add_argument("--file-time-limit", type=float, metavar="SECONDS",
                        help=f"seconds one file may take, all its tasks together (default {DEFAULT_BUDGET:g}, or four "
                        "task limits if more)")
    parser.add_argument("--memory-limit", default=DEFAULT_MEMORY, metavar="SIZE",
                        help=f"memory a submission's process may use, e.g. 512M, 4G, or 0 for none (default "
                        f"{DEFAULT_MEMORY})")
    parser.add_argument("--sandbox", choices=("auto", "bwrap", "none"), default="auto",
                        help="run each file under bubblewrap (bwrap), or not; auto: when it is installed and "
                        "starts (default)")
    parser.add_argument("--csv", metavar="PATH", help="write one row per file and task, and a total per student")
    parser.add_argument("--json", metavar="PATH", help="write everything, failures and printed output included")
    parser.add_argument("--all-failures", action="store_true", help="show every failing check of a task")
    parser.add_argument("--reference", nargs="*", metavar="A", help="grade the reference solutions "
                        "(all assignments, or those named), in this process")
    parser.add_argument("--check-stubs", nargs="?", const=str(stubs.STUB_DIR), metavar="DIR",
                        help="check the student stubs against the registry")
    parser.add_argument("--stub", metavar="TASK", help="print a task's stub as the registry defines it")
    parser.add_argument("--list", action="store_true", help="list assignments, tasks and points")
    return parser


def main(argv=None, description=None):
    parser = _parser(description)
    args = parser.parse_args(argv)
    try:
        return _main(parser, args)
    except KeyboardInterrupt:
        print("\ngrading interrupted (Ctrl-C): the grades files were not written", file=sys.stderr)
        return 130
    except BrokenPipeError:           # the output was piped into a command that stopped reading (head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(parser, args):
    if args.list:
        for a in ASSIGNMENTS:
            print(f"{a.id}  {a.title} ({a.points} points, {a.after})  lessons/assignments/{a.filename}")
            for t in a.tasks:
                print(f"  {t.id}  {t.name:<30} {t.points} point{'s' * (t.points != 1)}  {t.todo}")
        return 0
    if args.stub:
        try:
            print(stubs.stub_source(task(args.stub)), end="")
        except KeyError as error:
            parser.error(error.args[0])
        return 0
    if args.check_stubs:
        return _check_stubs(args.check_stubs)
    if args.reference is None and not args.paths:
        parser.error("name a student file or a folder of them to grade (or --reference, --check-stubs, --stub, "
                     "--list)")
    if args.time_limit <= 0:
        parser.error(f"--time-limit must be a positive number of seconds, got {args.time_limit:g}")
    only = set(args.task) if args.task else None
    for task_id in only or ():
        try:
            task(task_id)
        except KeyError as error:
            parser.error(error.args[0])
    if args.file_time_limit is not None and args.file_time_limit <= 0:
        parser.error(f"--file-time-limit must be a positive number of seconds, got {args.file_time_limit:g}")
    try:
        memory = _size(args.memory_limit)
        forced = assignment(args.assignment) if args.assignment else None
        seed = args.seed if args.seed is not None else _seed_from_environment()
        found = submissions.find(args.paths)
        if args.paths and not found:
            raise ValueError(f"no .py files in {', '.join(report.shown(p) for p in args.paths)}")
        references = [] if args.reference is None else [assignment(i) for i in args.reference] or ASSIGNMENTS
        classes = [str(Path(p).resolve()) for p in args.paths if os.path.isdir(p)]
        for option, path in (("--csv", args.csv), ("--json", args.json)):
            inside = [c for c in classes if path and sandbox.within(str(Path(path).resolve()), c)]
            if inside:
                raise ValueError(f"{option} {report.shown(path)} is inside the class folder "
                                 f"{report.shown(inside[0])}: write the grades outside it")
        sandboxed, warning = sandbox.choose(args.sandbox) if found else (False, None)
    except (KeyError, ValueError, FileNotFoundError) as error:
        parser.error(error.args[0])

    graded, status = [], 0
    for a in references:
        start = time.perf_counter()
        results = judge.grade_reference(a, only, seed, args.partial_credit)
        if results:
            graded.append(report.Graded("reference solutions (tinymix.assignments)", "reference", a, results,
                                        seconds=time.perf_counter() - start))
            print(report.format_report(graded[-1], args.all_failures, seed is not None) + "\n")
    class_mode = bool(classes)
    if warning and (class_mode or seed is not None):      # an instructor's run (a student grading their own
        if args.seed is not None:                         # file has nothing to fear from it)
            warning += (" The seed on the command line is visible to every process of this machine: pass it as "
                        f"{SEED_VARIABLE} instead.")
        print(warning, file=sys.stderr, flush=True)
    if found:
        sandbox.protect_this_process()
    protected = [s.path.resolve() for s in found]
    ids = [_assignment_id(s.path, forced) for s in found]
    dropped = submissions.choose(found, ids) if class_mode else {}
    width = max([len(report.shown(s.student)) for s in found] + [7])
    budget = args.file_time_limit or max(DEFAULT_BUDGET, 4 * args.time_limit)
    with sandbox.Place() if found else contextlib.nullcontext() as place:
        isolation = runner.Isolation(place, sandboxed, tuple(classes), memory, budget)
        for i, submission in enumerate(found):
            if i in dropped:
                kept, why = dropped[i]
                result = report.Graded(str(submission.path), submission.student, assignment(ids[i]),
                                       duplicate=f"{found[kept].path} counts for {ids[i]} ({why})")
            else:
                result = grade_file(submission.path, submission.student, forced.id if forced else None, only, seed,
                                    args.time_limit, args.partial_credit, protected, isolation=isolation)
            if result is None:            # --task names no task of this file's assignment
                if not class_mode:
                    print(f"{report.shown(submission.path)}: --task {', '.join(sorted(only))} names no task of its "
                          "assignment", file=sys.stderr)
                    status = 2
                continue
            graded.append(result)
            if class_mode:
                print(report.summary_line(result, width), flush=True)
            elif result.assignment is None:
                print(f"cannot grade {report.shown(result.path)}: {report.shown(result.error)}", file=sys.stderr)
                status = 2
            else:
                print(report.format_report(result, args.all_failures, seed is not None) + "\n", flush=True)
    by_student = report.students(graded)
    if class_mode and any(len(files) > 1 for files in by_student.values()):
        for student, files in by_student.items():
            print(f"{report.shown(student):<{width}}  {'total':<24}  {'':<3} "
                  f"{report.points(sum(g.score for g in files)):>4} / {sum(g.points for g in files)}")
    if _write(args, graded, seed, memory, budget, sandboxed):
        return NOT_WRITTEN
    if status == 0 and not all(g.passed for g in graded):
        status = 1
    return status


def _assignment_id(path, forced):
    """The assignment a file answers, told from its name or its syntax tree (None: it cannot be told,
    or the file cannot be read; grade_file says why)."""
    if forced:
        return forced.id
    try:
        named = [a for a in ASSIGNMENTS if Path(path).name == a.filename]
        return named[0].id if named else submissions.assignment_of(path, submissions.read(path)).id
    except (OSError, ValueError):
        return None


def _size(text):
    """Bytes in "2G", "512M", "1.5GB", "0" (None: no limit)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if match is None:
        raise ValueError(f"--memory-limit {text!r}: give a size such as 512M or 2G (0 for no limit)")
    size = int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2).upper() or " "))
    return size or None


def grade_file(path, student="", assignment_id=None, only=None, seed=None, time_limit=judge.DEFAULT_TIME_LIMIT,
               partial=False, protected=None, load_limit=None, isolation=None):
    """A report.Graded for one student file (None when `only` names no task of its assignment), read
    now, just before it runs. The file runs in its own process, as `isolation` (runner.Isolation) says
    (default: no sandbox, no budget, a pristine tinymix of its own); `protected`: paths it may not open
    (default: the file itself); `load_limit`: seconds to load it (default: twice the time limit, at
    least 10)."""
    start = time.perf_counter()
    try:
        source = submissions.read(path)
        a = submissions.assignment_of(path, source, assignment_id)
    except (OSError, ValueError) as error:
        return report.Graded(str(path), student, error=str(error), seconds=time.perf_counter() - start)
    if only is not None and not any(t.id in only for t in a.tasks):
        return None
    results, run = judge.grade_source(source, report.shown(path), a, only, seed, time_limit, load_limit, partial,
                                      [Path(path).resolve()] if protected is None else protected, isolation)
    return report.Graded(str(path), student, a, results, run.load_error, run.output, run.output_bytes,
                         time.perf_counter() - start)


def _write(args, graded, seed, memory, budget, sandboxed):
    """Write the grades files; True when one could not be written where asked (then it went to a
    fallback beside it, or to the temporary folder, and the message says where)."""
    settings = {"hidden_cases": seed is not None, "partial_credit": args.partial_credit,
                "time_limit": args.time_limit, "file_time_limit": budget, "memory_limit": memory,
                "sandbox": "bwrap" if sandboxed else "none"}
    missed = False
    for path, make in ((args.csv, lambda: report.csv_text(graded)),
                       (args.json, lambda: report.json_text(graded, settings))):
        if path:
            missed |= not _write_one(Path(path), make().encode("utf-8"))
    return missed


def _write_one(path, data):
    try:
        atomic_write(path, data)
        print(f"wrote {report.shown(path)}")
        return True
    except OSError as error:
        problem = error.strerror or str(error)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for fallback in (path.parent / f"{path.stem}-{stamp}{path.suffix}",
                     Path(tempfile.gettempdir()) / f"{path.stem}-{stamp}{path.suffix}"):
        try:
            atomic_write(fallback, data)
        except OSError:
            continue
        print(f"cannot write {report.shown(path)} ({problem}): wrote the grades to {report.shown(fallback)} instead",
              file=sys.stderr)
        return False
    print(f"cannot write {report.shown(path)} ({problem}), nor a fallback beside it or in "
          f"{tempfile.gettempdir()}: the grades were NOT written", file=sys.stderr)
    return False


def _seed_from_environment():
    value = os.environ.get(SEED_VARIABLE, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{SEED_VARIABLE}={value!r} is not an integer: give the hidden cases' seed as a "
                         "whole number") from None


def _check_stubs(directory):
    problems = stubs.check_stubs(directory)
    for problem in problems:
        print(problem)
    tasks = sum(len(a.tasks) for a in ASSIGNMENTS)
    print(f"{len(problems)} problems in {len(ASSIGNMENTS)} stub files ({tasks} tasks)"
          if problems else f"stubs match the registry: {len(ASSIGNMENTS)} files, {tasks} tasks")
    return 1 if problems else 0
