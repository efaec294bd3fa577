"""The command: python -m tinymix.grade (the usage is tinymix/grade.py's docstring)."""
import argparse
import os
import sys
import time
from pathlib import Path

from ..assignments import ASSIGNMENTS, assignment, task
from . import judge, report, stubs, submissions

SEED_VARIABLE = "TINYMIX_GRADE_SEED"


def _parser(description):
    parser = argparse.ArgumentParser(prog="python -m tinymix.grade", description=description,
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
    try:
        forced = assignment(args.assignment) if args.assignment else None
        seed = args.seed if args.seed is not None else _seed_from_environment()
        found = submissions.find(args.paths)
        if args.paths and not found:
            raise ValueError(f"no .py files in {', '.join(args.paths)}")
        references = [] if args.reference is None else [assignment(i) for i in args.reference] or ASSIGNMENTS
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
    class_mode = any(os.path.isdir(p) for p in args.paths)
    protected = [s.path.resolve() for s in found]
    sources = {s.path: _read(s.path) for s in found}        # before any of them runs: none can change another
    width = max([len(s.student) for s in found] + [7])
    for submission in found:
        result = grade_file(submission.path, submission.student, forced.id if forced else None, only, seed,
                            args.time_limit, args.partial_credit, protected, source=sources[submission.path])
        if result is None:            # --task names no task of this file's assignment
            if not class_mode:
                print(f"{submission.path}: --task {', '.join(sorted(only))} names no task of its assignment",
                      file=sys.stderr)
                status = 2
            continue
        graded.append(result)
        if class_mode:
            print(report.summary_line(result, width), flush=True)
        elif result.assignment is None:
            print(f"cannot grade {result.path}: {result.error}", file=sys.stderr)
            status = 2
        else:
            print(report.format_report(result, args.all_failures, seed is not None) + "\n", flush=True)
    by_student = report.students(graded)
    if class_mode and any(len(files) > 1 for files in by_student.values()):
        for student, files in by_student.items():
            print(f"{student:<{width}}  {'total':<24}  {'':<3} {report.points(sum(g.score for g in files)):>4} / "
                  f"{sum(g.points for g in files)}")
    try:
        _write(args, graded, seed)
    except OSError as error:
        print(f"cannot write the grades: {error}", file=sys.stderr)
        return 2
    if status == 0 and not all(g.passed for g in graded):
        status = 1
    return status


def grade_file(path, student="", assignment_id=None, only=None, seed=None, time_limit=judge.DEFAULT_TIME_LIMIT,
               partial=False, protected=None, load_limit=None, source=None):
    """A report.Graded for one student file (None when `only` names no task of its assignment). The
    file runs in its own process; `protected`: paths it may not open (default: the file itself);
    `load_limit`: seconds to load it (default: twice the time limit, at least 10); `source`: its
    text, read beforehand (or an OSError/ValueError met reading it)."""
    start = time.perf_counter()
    try:
        source = submissions.read(path) if source is None else source
        if isinstance(source, Exception):
            raise source
        a = submissions.assignment_of(path, source, assignment_id)
    except (OSError, ValueError) as error:
        return report.Graded(str(path), student, error=str(error), seconds=time.perf_counter() - start)
    if only is not None and not any(t.id in only for t in a.tasks):
        return None
    results, run = judge.grade_source(source, str(path), a, only, seed, time_limit, load_limit, partial,
                                      [Path(path).resolve()] if protected is None else protected)
    return report.Graded(str(path), student, a, results, run.load_error, run.output, run.output_bytes,
                         time.perf_counter() - start)


def _read(path):
    try:
        return submissions.read(path)
    except (OSError, ValueError) as error:
        return error


def _write(args, graded, seed):
    if args.csv:
        report.write_text(args.csv, report.csv_text(graded))
        print(f"wrote {args.csv}")
    if args.json:
        settings = {"hidden_cases": seed is not None, "partial_credit": args.partial_credit,
                    "time_limit": args.time_limit}
        report.write_json(args.json, report.json_data(graded, settings))
        print(f"wrote {args.json}")


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
