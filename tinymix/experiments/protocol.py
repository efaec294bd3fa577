"""The fair protocol shared by both tasks (nlu.py, e2e.py).

1. Learning rates. Every arm that is a method of its own gets its own learning rate, chosen on the
   VALIDATION split from one grid shared by all arms, with the same tuning seeds for each grid point.
   Or (--tuning mads) its recipe is searched: mesh adaptive direct search (mads.py) over the task's space
   for the arm (the rate; AdaMix's consistency weight; clipping on or off), the same number of evaluations
   for every arm, each evaluation the mean validation score over the tuning seeds (tune_by_search).
   If the best rate sits at an edge of the grid, the grid grows one step past that edge (at most
   `extensions` times): the same rule, so the same kind of budget, for every arm. A variant of a method
   (an ablation, a longer budget) uses that method's rate (`Arm.lr_from`). Tuning runs never read the
   test split (config `test=False`).
2. Final runs. Only after the choice: seeds 0..S-1 per arm, test read once per run. Seed s gives every
   arm the same data order, the same head and the same start wherever two arms share a module
   (peft._init_stream), so arms are compared seed by seed (paired differences, stats.py).
3. Run folders. A run lives in its own folder: request.json (its whole configuration) and, once
   finished, results.json. A finished run is reused only when its request is exactly the one asked
   for; any difference is an error that names what differs. No path is read out of a results file.
   Runs go to `workers` processes (python3 -m tinymix.cli.worker FOLDER, one BLAS thread each),
   so that a crash or Ctrl-C loses at most the runs in flight: run the same command again to go on.
"""
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..store import checkpoint


@dataclass
class Arm:
    """One line of a comparison: a method, or a variant of one."""
    name: str                   # e.g. "adamix", "adamix, no sharing", "adamix, 4x steps"
    overrides: dict = field(default_factory=dict)   # config fields, `method` included
    lr_from: str = ""           # "" = its own learning-rate search; else the arm whose rate it uses
    budget: float = 1.0         # multiple of the base budget (epochs or steps)

    @property
    def slug(self):
        return "".join(c if c.isalnum() or c in "-." else "-" for c in self.name.replace(", ", "-"))


def run_folder(out, phase, arm, seed, lr=None):
    parts = [phase, arm.slug] + ([f"lr-{lr:g}"] if lr is not None else []) + [f"seed-{seed}"]
    return Path(out).joinpath(*parts)


def differences(saved, wanted, prefix=""):
    """The keys where two requests differ, as 'key: saved -> wanted' lines."""
    found = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key, "(absent)"), wanted.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


def finished(folder, request, defaults=None):
    """The results of a finished run of exactly this request; None if it has not finished. A folder
    holding another request is an error: its runs belong to another experiment. `defaults`: config
    fields added since a run was made, with the default that reproduces the old behaviour; a saved
    config without such a field matches a request that has the default."""
    saved_request = folder / "request.json"
    if saved_request.is_file():
        saved = checkpoint.load_json(saved_request)
        added = {k: v for k, v in (defaults or {}).items()
                 if k not in saved.get("config", {}) and k in request.get("config", {})}
        if added and saved.get("config") is not None:
            saved = {**saved, "config": {**added, **saved["config"]}}
        if saved != request:
            raise ValueError(f"{folder} holds a run with other settings ("
                             + "; ".join(differences(saved, request)[:6]) + "). Use another --out folder, or "
                             "delete that run folder to train it again with the new settings")
    results = folder / "results.json"
    return checkpoint.load_json(results) if saved_request.is_file() and results.is_file() else None


def run_all(jobs, workers, run, report_only=False, label=str, defaults=None):
    """Run every (folder, request) not finished yet; returns {folder: results or None (not run)}.
    workers <= 1: one after the other in this process, each by `run(request, folder)` (the task's
    run_request); else that many worker processes, which find the same function by the request's task."""
    done, pending = {}, []
    for folder, request in jobs:
        result = finished(folder, request, defaults)
        if result is None and not report_only:
            checkpoint.save_json(folder / "request.json", request)
            pending.append(folder)
        done[folder] = result
    if pending:
        print(f"{len(pending)} run(s) to train, {len(jobs) - len(pending)} finished before", flush=True)
    failures = _run_in_process(pending, label, run) if workers <= 1 else _run_in_workers(pending, workers, label)
    for folder in pending:
        if folder not in failures:
            done[folder] = checkpoint.load_json(folder / "results.json")
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed: " + "; ".join(
            f"{label(f)} ({why}, log: {f / 'log.txt'})" for f, why in failures.items())
            + ". Finished runs are kept: fix the cause and run the same command again")
    return done


def execute(folder, run):
    """One run: `run(request, folder)` with RUN_FOLDER/request.json; it leaves results.json there.
    A run whose loss stops being finite has finished too, as a result, not a crash: its results.json
    says {"diverged": reason}, so a learning-rate search counts that rate as the worst one and goes on."""
    folder = Path(folder)
    request = checkpoint.load_json(folder / "request.json")
    try:
        run(request, folder)
    except FloatingPointError as error:
        checkpoint.save_json(folder / "results.json", {"diverged": str(error)})
        print(f"diverged: {error}")


def _run_in_process(folders, label, run):
    for folder in folders:
        started = time.perf_counter()
        execute(folder, run)
        print(f"  {label(folder)}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    return {}


def _run_in_workers(folders, workers, label):
    """Each run in a process of its own with one BLAS thread: on two cores, two one-thread runs beat
    one two-thread run of these small matrices. Its output goes to log.txt in its folder."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    queue, running, failures = list(folders), {}, {}
    previous = _interrupt_on_sigterm()
    try:
        while queue or running:
            while queue and len(running) < workers:
                folder = queue.pop(0)
                log = open(folder / "log.txt", "a")          # a resumed run adds to its log
                process = subprocess.Popen([sys.executable, "-m", "tinymix.cli.worker", str(folder)],
                                           stdout=log, stderr=subprocess.STDOUT, env=env)
                running[folder] = (process, log, time.perf_counter())
            time.sleep(0.5)
            for folder, (process, log, started) in list(running.items()):
                if process.poll() is None:
                    continue
                log.close()
                del running[folder]
                seconds = time.perf_counter() - started
                if process.returncode == 0:
                    print(f"  {label(folder)}: done ({seconds:.0f} s)", flush=True)
                else:
                    failures[folder] = f"exit code {process.returncode}"
                    print(f"  {label(folder)}: FAILED (exit code {process.returncode}, see {folder / 'log.txt'})",
                          flush=True)
    finally:                         # Ctrl-C, a kill (SIGTERM) or an error here: no orphan keeps training
        for process, log, _ in running.values():
            process.terminate()
            process.wait()
            log.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return failures


def _interrupt_on_sigterm():
    """While workers run, SIGTERM (kill, a scheduler stopping the job) ends the comparison as Ctrl-C
    does, through the `finally` that stops its workers: Python's default for SIGTERM is to die at once,
    leaving the workers training on as orphans. Returns the previous handler (None off the main thread)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:               # not the main thread: signals cannot be handled here
        return None


def settings(args, arms, grid):
    """Check the protocol's flags before any work starts; returns (chosen arms, learning-rate grid).
    An arm that takes another arm's rate brings that arm along."""
    for flag, value, low in (("--seeds", args.seeds, 1), ("--tuning-seeds", args.tuning_seeds, 1),
                             ("--tuning-budget", getattr(args, "tuning_budget", 1), 1),
                             ("--workers", args.workers, 1)):
        if value < low:
            raise ValueError(f"{flag} must be at least {low}, got {value}")
    try:
        rates = sorted(float(x) for x in args.lr_grid.split(","))
    except ValueError:
        raise ValueError(f"--lr-grid takes learning rates separated by commas, e.g. {','.join(map(str, grid))}; "
                         f"got {args.lr_grid!r}") from None
    if len(rates) < 2 or rates[0] <= 0 or len(set(rates)) < len(rates):
        raise ValueError(f"--lr-grid needs at least two different positive rates, got {args.lr_grid!r}")
    if not args.arms:
        return arms, rates
    wanted = set(args.arms.split(","))
    unknown = wanted - {a.slug for a in arms}
    if unknown:
        raise ValueError(f"unknown arm(s) {sorted(unknown)}: choose from {', '.join(a.slug for a in arms)}")
    wanted |= {a.lr_from for a in arms if a.slug in wanted and a.lr_from}
    return [a for a in arms if a.slug in wanted or a.name in wanted], rates


# ---- the two phases ---------------------------------------------------------------------------------

def learning_rates(task, arms, grid, args, out):
    """Phase 1, or the rates another comparison chose (--lr-from FOLDER), marked as taken from there."""
    if not args.lr_from and getattr(args, "tuning", "grid") == "mads":
        return tune_by_search(task, arms, range(1000, 1000 + args.tuning_seeds), out, args.workers,
                              args.tuning_budget, report_only=args.report_only)
    if not args.lr_from:
        return tune(task, arms, grid, range(1000, 1000 + args.tuning_seeds), out, args.workers,
                    report_only=args.report_only)
    source = Path(args.lr_from) / "results.json"
    if not source.is_file():
        raise FileNotFoundError(f"--lr-from {args.lr_from}: no results.json there (a finished comparison's folder)")
    found = checkpoint.load_json(source).get("chosen", {})
    missing = [a.name for a in arms if a.name not in found and not a.lr_from]
    if missing:
        raise ValueError(f"--lr-from {args.lr_from} chose no learning rate for {', '.join(missing)}")
    chosen = {a.name: {"lr": float(found[a.name]["lr"]), "from": str(source.parent)} for a in arms if not a.lr_from}
    chosen.update({a.name: {"lr": chosen[a.lr_from]["lr"], "from": a.lr_from} for a in arms if a.lr_from})
    return chosen


def tune(task, arms, grid, seeds, out, workers, extensions=2, report_only=False):
    """Phase 1: {arm name: {"lr": chosen rate, "scores": {rate: mean validation score}, "edge": bool}}
    for every arm with a search of its own; variants get their method's rate."""
    own = [arm for arm in arms if not arm.lr_from]
    grids = {arm.name: sorted(grid) for arm in own}
    chosen = {}
    for round_ in range(extensions + 1):
        jobs = {(arm.name, lr, s): (run_folder(out, "tuning", arm, s, lr), task.request(arm, lr, s, test=False))
                for arm in own for lr in grids[arm.name] for s in seeds}
        results = run_all(list(jobs.values()), workers, task.run, report_only, _label, task.defaults)
        grown = False
        for arm in own:
            scores = {}
            for lr in grids[arm.name]:
                found = [results[jobs[arm.name, lr, s][0]] for s in seeds]
                found = [task.validation_score(r) for r in found if r is not None]
                if found:
                    scores[lr] = sum(found) / len(found)
            if not scores:
                continue
            best = max(scores, key=scores.get)          # ties: the lowest rate
            lrs = grids[arm.name]
            wins = all(scores[best] > score for lr, score in scores.items() if lr != best)
            at_edge = best in (lrs[0], lrs[-1]) and len(scores) == len(lrs) and wins
            chosen[arm.name] = {"lr": best, "scores": scores, "edge": at_edge}
            if at_edge and round_ < extensions:         # one grid step further out (report-only: if run)
                if best == lrs[0]:
                    lrs.insert(0, float(f"{lrs[0] * lrs[0] / lrs[1]:.2g}"))
                else:
                    lrs.append(float(f"{lrs[-1] * lrs[-1] / lrs[-2]:.2g}"))
                grown = True
        if not grown:
            break
    for arm in arms:
        if arm.lr_from and arm.lr_from in chosen:
            chosen[arm.name] = {"lr": chosen[arm.lr_from]["lr"], "from": arm.lr_from}
    return chosen


def tune_by_search(task, arms, seeds, out, workers, budget, report_only=False):
    """Phase 1 by search: for every arm with a search of its own, mads.minimise over task.space(arm) with
    `budget` evaluations; one evaluation = the point's runs at every tuning seed (in parallel), scored by
    their mean validation score. Returns chosen as tune does, with "overrides" (the recipe besides the
    rate) and "evaluations" [(recipe, score)] in the order they were made. The budget counts distinct
    recipes: two search points that give the same recipe (the same rate to 3 digits, the same side of the
    clipping threshold) are one evaluation, looked up the second time. Variants take their method's recipe.
    With report_only, a point not yet run ends that arm's search (what was run is reported)."""
    from . import mads
    chosen = {}
    for arm in [a for a in arms if not a.lr_from]:
        variables, start, recipe = task.space(arm)
        evaluations, stopped, seen = [], [], {}

        def score(x):
            overrides = recipe(x)
            searched = Arm(arm.name, {**arm.overrides, **{k: v for k, v in overrides.items() if k != "lr"}})
            key = "-".join(f"{k}-{v:.3g}" for k, v in sorted(overrides.items()))
            if key in seen:
                return seen[key]
            if len(evaluations) >= budget:
                raise _Spent
            jobs = [(Path(out, "tuning", arm.slug, key, f"seed-{s}"), task.request(searched, overrides["lr"], s, test=False))
                    for s in seeds]
            results = run_all(jobs, workers, task.run, report_only, _label, task.defaults)
            found = [task.validation_score(r) for r in results.values() if r is not None]
            if len(found) < len(jobs):
                stopped.append(key)
                raise _NotRun
            value = sum(found) / len(found)
            evaluations.append({"recipe": overrides, "score": value})
            seen[key] = -value
            return -value
        complete = True
        try:
            mads.minimise(score, variables, start, budget=100 * budget)      # the budget is counted above
        except _Spent:
            pass
        except _NotRun:
            complete = False
        if evaluations:
            best = max(evaluations, key=lambda e: e["score"])
            chosen[arm.name] = {"lr": best["recipe"]["lr"], "overrides": {k: v for k, v in best["recipe"].items()
                                                                           if k != "lr"},
                                "search": "mads", "budget": budget, "evaluations": evaluations,
                                "complete": complete}
    for arm in arms:
        if arm.lr_from and arm.lr_from in chosen:
            chosen[arm.name] = {"lr": chosen[arm.lr_from]["lr"], "overrides": chosen[arm.lr_from].get("overrides", {}),
                                "from": arm.lr_from}
    return chosen


def recipe_space(arm, grid, defaults):
    """(mads variables, start, recipe(x) -> settings) of an arm's search: log10 of the rate over the grid
    widened by a decade each way (starting at the grid's middle); for AdaMix arms also the consistency
    weight, 0 to twice its default (starting at it); for every arm clipping at 1.0, on or off (starting at
    the task's default, a step from the threshold). `defaults`: the task config's defaults."""
    from .mads import Variable
    low, high = math.log10(min(grid)), math.log10(max(grid))
    variables, start = [Variable("log10_lr", low - 1, high + 1)], [(low + high) / 2]
    mixes = arm.overrides.get("method", "").startswith("adamix")
    if mixes:
        weight = arm.overrides.get("consistency_weight", defaults["consistency_weight"])
        variables.append(Variable("consistency_weight", 0.0, 2 * max(weight, 1.0)))
        start.append(weight)
    # clipping is on where this variable is at least 0.5: a continuous stand-in for an on/off choice, so
    # that the poll's steps (a quarter of the box at first) can cross the threshold; it starts a step away
    variables.append(Variable("clip", 0.0, 1.0))
    start.append(0.7 if defaults["max_grad_norm"] > 0 else 0.3)

    def recipe(x):
        found = {"lr": float(f"{10 ** x[0]:.3g}"), "max_grad_norm": 1.0 if x[-1] >= 0.5 else 0.0}
        if mixes:
            found["consistency_weight"] = float(f"{x[1]:.3g}")
        return found
    return variables, start, recipe


class _NotRun(Exception):
    """A search point whose runs are not there (report-only): the search stops."""


class _Spent(Exception):
    """The arm's budget of distinct recipes is spent: the search stops."""


def final(task, arms, chosen, seeds, out, workers, report_only=False):
    """Phase 2: {arm name: {seed: results}} for the arms whose rate is known (missing runs left out).
    A searched recipe's other settings (chosen[...]["overrides"]) apply under the arm's own overrides'
    names, except those the arm fixes itself (an ablation keeps what it ablates)."""
    def tuned(arm):
        extra = {k: v for k, v in chosen[arm.name].get("overrides", {}).items() if k not in arm.overrides}
        return Arm(arm.name, {**arm.overrides, **extra}, arm.lr_from, arm.budget) if extra else arm
    jobs = {(arm.name, s): (run_folder(out, "final", arm, s), task.request(tuned(arm), chosen[arm.name]["lr"], s, test=True))
            for arm in arms if arm.name in chosen for s in seeds}
    results = run_all(list(jobs.values()), workers, task.run, report_only, _label, task.defaults)
    runs, diverged = {}, []
    for (name, seed), (folder, _) in jobs.items():
        if results[folder] is not None and "diverged" in results[folder]:
            diverged.append(f"{name} seed {seed}: {results[folder]['diverged']}")
        elif results[folder] is not None:
            runs.setdefault(name, {})[seed] = results[folder]
    missing = [f"{name} seed {seed}" for (name, seed), (folder, _) in jobs.items() if results[folder] is None]
    return runs, diverged, missing


def _label(folder):
    return "/".join(folder.parts[-4:])
