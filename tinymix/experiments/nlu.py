"""Movie-review sentiment on frozen MiniLM: the NLU comparison under the fair protocol (protocol.py).

    python3 -m tinymix compare --regime small --out docs/experiments/nlu-small   # 1,000 sentences, 10 epochs
    python3 -m tinymix compare --regime full --out docs/experiments/nlu-full     # all 7,568, 3 epochs

Arms: full fine-tuning, the single adapter AdaMix mixes (after the FFN, bottleneck 16), LoRA (r=4 on
query and value), AdaMix (adapter, M=4, shared up-projection) and AdaMix-LoRA (M=4, shared B), each with
its own learning rate; AdaMix's ablations (no consistency, no sharing, 1 / 2 / 8 experts) with AdaMix's
rate; and both AdaMix methods at 4x the steps (the official NLG scripts train AdaMix 4x longer than LoRA).
"""
import shutil
import statistics
from dataclasses import asdict
from types import SimpleNamespace
from pathlib import Path

from .. import adamix, merging, plots
from ..store import checkpoint
from ..train import TrainConfig, evaluate, train
from . import protocol, report, stats
from .protocol import Arm
from .report import Claim

REGIMES = {"small": {"train_size": 1000, "epochs": 10}, "full": {"train_size": 0, "epochs": 3},
           # true few-shot as AdaMix's paper runs it (LiST's regime): 30 labelled sentences in all, a different
           # random split per seed, no validation read; 100 epochs of batch 4 (800 steps); rates from --lr-from
           "fewshot": {"train_size": 30, "epochs": 100}}
FEWSHOT = {"batch_size": 4, "select_on_validation": False, "checkpoint_every": 25}
PAGES = {"small": "results.md", "full": "results_full.md", "fewshot": "results_fewshot.md"}
GRID = (1e-4, 3e-4, 1e-3, 3e-3)
MAIN = ("full", "adapter", "lora", "adamix", "adamix-lora")
ABLATIONS = {"adamix, no consistency": {"consistency_weight": 0.0}, "adamix, no sharing": {"sharing": "none"},
             "adamix, 1 expert": {"num_experts": 1}, "adamix, 2 experts": {"num_experts": 2},
             "adamix, 8 experts": {"num_experts": 8}}
LONGER = 4     # the official ratio of AdaMix's steps to LoRA's (NLG scripts: 20 epochs vs 5)
# Few-shot only: LiST's adapter alone and with its self-training (selftrain.py) on the rest of the training
# split, at the adapter's rate. Added after the few-shot test results existed: exploratory, no verdicts.
SELF_TRAINING_SESSIONS = 3
LIST_ARMS = (Arm("list-adapter", {"method": "list-adapter"}, lr_from="adapter"),
             Arm("list-adapter, self-training", {"method": "list-adapter", "self_training": SELF_TRAINING_SESSIONS},
                 lr_from="adapter"))


def all_arms():
    arms = [Arm(m, {"method": m}) for m in MAIN]
    arms += [Arm(name, {"method": "adamix", **o}, lr_from="adamix") for name, o in ABLATIONS.items()]
    # AdaMix at the official ratio of steps, and the single modules at that budget too: do they still gain?
    arms += [Arm(f"{m}, {LONGER}x steps", {"method": m}, lr_from=m, budget=LONGER)
             for m in ("adamix", "adamix-lora", "adapter", "lora")]
    return arms


class MovieReviews:
    """The task as the protocol sees it: a complete request per (arm, rate, seed), a validation score."""
    name = "nlu"

    def __init__(self, train_size, epochs, model="minilm-l6", random_runs=3, settings=None):
        self.train_size, self.epochs, self.model, self.random_runs = train_size, epochs, model, random_runs
        self.settings = settings or {}       # other TrainConfig fields given on the command line
        self.defaults = asdict(TrainConfig())   # for config fields newer than a finished run

    def request(self, arm, lr, seed, test):
        # few-shot: seed s trains on split s (every arm of seed s sees the same 30 sentences)
        split = {"train_sample": seed} if self.settings.get("select_on_validation") is False else {}
        cfg = TrainConfig(**{**self.settings, **arm.overrides}, **split, seed=seed, lr=lr, train_size=self.train_size,
                          epochs=round(self.epochs * arm.budget), model=self.model, test=test)
        config = {k: v for k, v in asdict(cfg).items() if k not in ("out", "resume", "progress")}
        adamix_run = test and cfg.method.startswith("adamix") and cfg.num_experts > 1
        return {"task": self.name, "config": config, "random_runs": self.random_runs if adamix_run else 0}

    @staticmethod
    def validation_score(result):
        return -1.0 if "diverged" in result else result["validation_accuracy"]

    def space(self, arm):
        return protocol.recipe_space(arm, GRID, self.defaults)

    @staticmethod
    def run(request, folder):
        run_request(request, folder)


def run_request(request, folder):
    """In the worker: train one run into `folder` (resuming its last epoch if it was interrupted)."""
    cfg = TrainConfig(**request["config"], out=str(folder), resume=True, progress=False)
    hooks = ([inference_modes(request["random_runs"])] if request["random_runs"] else []) + \
        ([merge_operators(request["merge_operators"])] if request.get("merge_operators") else [])
    result = train(cfg, before_merge=lambda *model: {k: v for h in hooks for k, v in h(*model).items()})
    for checkpoint_folder in ("checkpoints", "best") + (("merged",) if cfg.method == "full" else ()):
        shutil.rmtree(folder / checkpoint_folder, ignore_errors=True)   # finished: results.json holds it all


def inference_modes(random_runs):
    """Before merging: test accuracy with random routing (several runs) and with expert 0 alone."""
    def evaluate_modes(model, tokenizer, splits):
        test = splits["test"]
        adamix.set_inference_mode(model, "random")
        found = {"random_test_accuracies": [evaluate(model, tokenizer, test) for _ in range(random_runs)]}
        adamix.set_inference_mode(model, "fixed", 0)
        found["fixed_test_accuracy"] = evaluate(model, tokenizer, test)
        adamix.set_inference_mode(model, "average")
        return found
    return evaluate_modes


def merge_operators(operators):
    """Before the mean merges the experts (experiments/merging.py): for each operator of merging.py, its
    scale lambda chosen on validation accuracy, then that one merged model's test accuracy, read once.
    A LoRA merged by TIES or PCB keeps its whole update (full_rank: folded into W, as a deployed LoRA is),
    so the operators differ in how they merge, not in a rank cut; the cut's error is recorded beside."""
    def evaluate_operators(model, tokenizer, splits):
        n, found = merging.task_vector_count(model), {}
        with merging.merged(model, "mean"):
            found["mean"] = {"validation_accuracy": evaluate(model, tokenizer, splits["validation"])}
        for operator in operators:
            def score(scale):
                with merging.merged(model, operator, scale, full_rank=True):
                    return evaluate(model, tokenizer, splits["validation"])
            scale, tried = merging.choose_scale(merging.default_grid(operator, n), score,
                                                prefer=merging.neutral_scale(operator, n))
            with merging.merged(model, operator, scale, full_rank=True) as merged_report:
                accuracy, correct = evaluate(model, tokenizer, splits["test"], per_example=True)
            errors = list(merged_report.get("rank_truncation_error", {}).values())
            found[operator] = {"scale": scale, "grid": tried, "validation_accuracy": max(t["score"] for t in tried),
                               "test_accuracy": accuracy, "test_correct": correct,
                               "rank_r_error": {"mean": sum(errors) / len(errors), "max": max(errors)} if errors
                               else None}
        return {"merge_operators": found, "task_vectors": n}
    return evaluate_operators


# ---- the claims (docs/adamix.md section 10) ---------------------------------------------------------------

def longer_budget_claims(score, pairs):
    """Claim 1 at equal steps, with AdaMix trained 4x longer (the official ratio), and at 4x for both;
    and the budget check: does the single module still gain from 4x the steps? (If not, its validation
    curve had flattened at the base budget.)"""
    found = []
    for mix, single in pairs:
        mix_long, single_long = f"{mix}, {LONGER}x steps", f"{single}, {LONGER}x steps"
        found += [Claim("1", "AdaMix (merged) >= the single module it mixes", mix, single, score(mix), score(single)),
                  Claim("1", f"... AdaMix trained {LONGER}x longer (the official ratio)", mix_long, single,
                        score(mix_long), score(single)),
                  Claim("1", f"... both trained {LONGER}x longer", mix_long, single_long, score(mix_long),
                        score(single_long)),
                  Claim("B", f"the single module still gains from {LONGER}x the steps", single_long, single,
                        score(single_long), score(single))]
    return found


def claims(runs, regime="small"):
    """The claims of docs/adamix.md §10 on these runs; few-shot has only claims 1-3 at the base budget."""
    test = lambda arm: {s: r["merged_test_accuracy"] for s, r in runs.get(arm, {}).items()}
    found = []
    found += longer_budget_claims(test, (("adamix", "adapter"), ("adamix-lora", "lora")))
    for mix in ("adamix", "adamix-lora"):
        found.append(Claim("2", "AdaMix >= full fine-tuning (small data)", mix, "full", test(mix), test("full")))
    for mix in ("adamix", "adamix-lora"):
        with_modes = {s: r for s, r in runs.get(mix, {}).items() if "random_test_accuracies" in r}
        merged = {s: r["merged_test_accuracy"] for s, r in with_modes.items()}
        mean_random = {s: statistics.mean(r["random_test_accuracies"]) for s, r in with_modes.items()}
        best_random = {s: max(r["random_test_accuracies"]) for s, r in with_modes.items()}
        fixed = {s: r["fixed_test_accuracy"] for s, r in with_modes.items()}
        found += [Claim("3", "merging >= the mean random-routing run", f"{mix} merged", "random routing (mean)",
                        merged, mean_random),
                  Claim("3", "merging ~ the best random-routing run", f"{mix} merged", "random routing (best)",
                        merged, best_random, "equivalent", 0.01),
                  Claim("3", "merging > fixed routing", f"{mix} merged", "expert 0 alone", merged, fixed)]
    for name, text in (("adamix, no consistency", "the consistency loss helps"),
                       ("adamix, no sharing", "sharing the up-projection helps")):
        found.append(Claim("4", text, "adamix", name, test("adamix"), test(name)))
    by_m = {1: test("adamix, 1 expert"), 2: test("adamix, 2 experts"), 4: test("adamix"), 8: test("adamix, 8 experts")}
    gain = lambda a, b: {s: by_m[b][s] - by_m[a][s] for s in set(by_m[a]) & set(by_m[b])}
    found += [Claim("5", "returns diminish with more experts", "gain M 1->2", "gain M 2->4", gain(1, 2), gain(2, 4)),
              Claim("5", "returns diminish with more experts", "gain M 2->4", "gain M 4->8", gain(2, 4), gain(4, 8))]
    if regime == "fewshot":
        found = [c for c in found if c.number in ("1", "2", "3") and "longer" not in c.text]
        found += [Claim("L", "LiST's self-training >= its adapter alone (what the unlabelled sentences add)",
                        "list-adapter, self-training", "list-adapter", test("list-adapter, self-training"),
                        test("list-adapter"), exploratory=True),
                  Claim("L", "LiST's self-training >= AdaMix", "list-adapter, self-training", "adamix",
                        test("list-adapter, self-training"), test("adamix"), exploratory=True)]
    return report.correct_for_many_claims([c.judge() for c in report.attach_test_rows(found, runs)])


# ---- the command ---------------------------------------------------------------------------------------

def task_of(args):
    """Check the classification flags; (the task as the protocol sees it, the regime's budget)."""
    if (args.train_size is not None and args.train_size < 0) or (args.epochs is not None and args.epochs < 1) \
            or args.random_runs < 1:
        raise ValueError("--train-size must be at least 0 (0: all), --epochs and --random-runs at least 1")
    regime = dict(REGIMES[args.regime])
    if args.train_size is not None:
        regime["train_size"] = args.train_size
    if args.epochs is not None:
        regime["epochs"] = args.epochs
    settings = {"task": args.task, **(FEWSHOT if args.regime == "fewshot" else {})}
    if args.regime == "fewshot" and not args.lr_from:
        raise ValueError("--regime fewshot reads no validation, so it cannot search learning rates: give --lr-from "
                         "a finished comparison's folder (e.g. --lr-from docs/experiments/nlu-small)")
    return MovieReviews(regime["train_size"], regime["epochs"], args.model, args.random_runs, settings), regime


def small_regime(args, task_class, arms, plan):
    """A suite fixed to the small regime by its plan file `plan`: its task (a MovieReviews subclass, no
    random-routing runs), the rates, and the final runs. Returns a namespace of all of them."""
    if args.regime != "small":
        raise ValueError(f"--suite {args.suite} runs the small regime its plan fixes ({plan}): leave --regime out")
    base, regime = task_of(args)
    task = task_class(base.train_size, base.epochs, base.model, random_runs=0, settings=base.settings)
    out = Path(args.out)
    chosen_arms, grid = protocol.settings(args, arms, GRID)
    chosen = protocol.learning_rates(task, chosen_arms, grid, args, out)
    runs, diverged, missing = protocol.final(task, chosen_arms, chosen, range(args.seeds), out, args.workers,
                                             report_only=args.report_only)
    return SimpleNamespace(task=task, regime=regime, out=out, arms=chosen_arms, chosen=chosen, runs=runs,
                           diverged=diverged, missing=missing)


def compare_command(args):
    task, regime = task_of(args)
    arms = all_arms() if args.regime != "fewshot" else [a for a in all_arms() if a.name in MAIN] + list(LIST_ARMS)
    arms, grid = protocol.settings(args, arms, GRID)
    out = Path(args.out)
    chosen = protocol.learning_rates(task, arms, grid, args, out)
    runs, diverged, missing = protocol.final(task, arms, chosen, range(args.seeds), out, args.workers,
                                             report_only=args.report_only)
    write_report(out, args, regime, arms, chosen, runs, report.status(chosen, arms, diverged, missing))


def arms_table(arms, chosen, runs):
    lines = ["| arm | lr | seeds | test accuracy (merged) | validation | best epoch (per seed) | trainable (training) | "
             "trainable (merged) | merged % of all | train time (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        found = runs.get(arm.name)
        if not found:
            continue
        first = next(iter(found.values()))
        mean, std = stats.mean_std(r["merged_test_accuracy"] for r in found.values())
        read = [r["validation_accuracy"] for r in found.values() if r["validation_accuracy"] is not None]
        validation = f"{statistics.mean(read):.4f}" if read else "not read"        # few-shot reads none
        seconds = statistics.mean(r["seconds"] for r in found.values())
        share = 100 * first["merged_parameters"] / first["all_parameters"]
        best = ", ".join(f"{found[s]['best_epoch']}/{found[s]['config']['epochs']}" for s in sorted(found))
        lines.append(f"| {arm.name} | {chosen[arm.name]['lr']:g} | {len(found)} | {mean:.4f} ± {std:.4f} | "
                     f"{validation} | {best} | {first['trainable_parameters']:,d} | {first['merged_parameters']:,d} | "
                     f"{share:.2f}% | {seconds:.0f} |")
    return "\n".join(lines)


def spread_line(runs):
    """Few-shot: each arm's spread of test accuracy across the splits, widest first."""
    spreads = {name: stats.mean_std(r["merged_test_accuracy"] for r in found.values())[1]
               for name, found in runs.items() if len(found) > 1}
    return "Spread across splits (std of test accuracy, points): " + ", ".join(
        f"{name} {100 * spread:.2f}" for name, spread in sorted(spreads.items(), key=lambda kv: -kv[1])) + "." \
        if spreads else ""


def write_report(out, args, regime, arms, chosen, runs, status):
    judged = claims(runs, args.regime)
    size = regime["train_size"] or "all 7,568"
    fewshot = args.regime == "fewshot"
    text = "\n\n".join(part for part in [
        report.verdict_paragraph(judged),
        report.terms(*[t for t in ("arm", "paired difference", "verdict", "p (Holm)", "rows 1-6", "rows B", "merged",
                                   "spread", "moved") if not (fewshot and t == "rows B")], *report.resampled_term(judged)),
        "Claims: paired differences of test accuracy in points (merged models), 95% CI over seeds:",
        report.claims_table(judged, scale=100, unit=""),
        "Claim 6 as measured (train time is wall time under the machine's load at the time):",
        report.cost_table((("adamix", "adapter"), ("adamix-lora", "lora")), runs, "seconds"),
        (f"Budget: {regime['epochs']} epochs over {size} training sentences (the {LONGER}x arms: "
         f"{LONGER * regime['epochs']}); batch 32; test accuracy of the merged model, mean ± std over seeds "
         f"0..{args.seeds - 1}." if not fewshot else
         f"Budget: {regime['epochs']} epochs of batch {FEWSHOT['batch_size']} over {size} training sentences, a "
         f"different random split of the training set for each seed (seed s: split s, the same for every arm); "
         f"no validation read, the last epoch kept; test accuracy of the merged model, mean ± std over seeds "
         f"(splits) 0..{args.seeds - 1}. The ± is the spread across splits (the paper's instability claim):"),
        spread_line(runs) if fewshot else "",
        "Learning rates (validation accuracy, mean over tuning seeds "
        f"{', '.join(str(s) for s in range(1000, 1000 + args.tuning_seeds))}; test never read):" if not fewshot else
        f"Learning rates: each arm's rate as the comparison in {args.lr_from} chose it on its validation split "
        "(this regime reads no validation, so it searches none):",
        report.tuning_table(chosen), arms_table(arms, chosen, runs),
        "Routing (over seeds and mixtures):", report.routing_table({a: r for a, r in runs.items()
                                                                   if a.startswith("adamix")}),
        report.waiting_claims(judged), status] if part)
    report.write(out, text, PAGES[args.regime])
    checkpoint.save_json(out / "results.json", {"regime": regime, "chosen": chosen, "claims": judged,
                                                "seeds": args.seeds, "tuning_seeds": args.tuning_seeds})
    print(text)
    plots.forest(judged, out / "claims_forest.png", scale=100, unit="test accuracy points")
    if not fewshot:
        curves = {name: [statistics.mean(r["history"][i]["validation_accuracy"] for r in found.values())
                         for i in range(min(len(r["history"]) for r in found.values()))]
                  for name, found in runs.items() if name in MAIN or "steps" in name}
        plots.validation_curves(curves, out / "validation_curves.png", "epoch", "validation accuracy (mean over seeds)")
    # the paper's Figure 1 (accuracy against deployed parameters) and Figure 5 (merging vs random routing)
    rows = []
    for name, found in runs.items():
        if name in MAIN:
            mean, std = stats.mean_std(r["merged_test_accuracy"] for r in found.values())
            rows.append({"name": name, "mean": mean, "std": std,
                         "merged_parameters": next(iter(found.values()))["merged_parameters"]})
    if rows:
        plots.accuracy_vs_parameters(rows, out / "accuracy_vs_parameters.png")
    with_modes = {s: r for s, r in runs.get("adamix", {}).items() if "random_test_accuracies" in r}
    if with_modes:
        plots.random_vs_merged({s: r["random_test_accuracies"] for s, r in with_modes.items()},
                               {s: r["merged_test_accuracy"] for s, r in with_modes.items()}, out / "random_vs_merged.png")
