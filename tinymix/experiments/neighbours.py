"""AdaMix among its neighbours, under the same fair protocol (protocol.py) as the AdaMix comparisons:

    python3 -m tinymix compare --suite neighbours --out docs/experiments/nlu-small           # movie reviews
    python3 -m tinymix compare --suite neighbours --task e2e --out docs/experiments/e2e      # data-to-text

Arms: every neighbour of tinymix/neighbours/ as a method of its own (its own learning rate from the
shared grid, the same seeds, the same budget: 10 epochs over 1,000 sentences), beside the arms of the
AdaMix comparison it is judged against (full fine-tuning, the adapter, LoRA, AdaMix, AdaMix-LoRA).
Both comparisons share one folder, so those arms' finished runs are reused, not trained again. On e2e
(the tiny GPT, e2e.py's official GPT-2 recipe) the neighbours that apply to a decoder: AdaLoRA, the
Hadamard adapter, LoRETTA-rep, prefix-tuning and FT-Top2, against LoRA, the adapter, AdaMix-LoRA,
AdaMix-adapter and full fine-tuning; scores are test BLEU.

The claims were fixed before any neighbour's run existed (docs/plans/neighbours.md): each paper's
headline claim at this scale, each neighbour against AdaMix, and each against the module it builds on.
"""
import statistics
from dataclasses import asdict
from pathlib import Path

from .. import methods, plots
from ..store import checkpoint
from . import e2e, nlu, protocol, report, stats
from .protocol import Arm
from .report import Claim

NEIGHBOURS = ("adalora", "unipelt", "prefix", "mixphm", "ft-top2", "phm", "hadamard", "loretta-rep",
              "loretta-adp", "unipelt-ap", "adamix-hadamard")
BASELINES = ("full", "adapter", "lora", "adamix", "adamix-lora")   # the AdaMix comparison's arms they face
MARGIN = 0.01          # "comparable": within one point of test accuracy

CLAIMS = {"P": "AdaMix >= the baselines of its own paper's tables (prefix-tuning, UniPELT, FT-Top2)",
          "U": "UniPELT >= the best of its sub-modules (chosen on validation), and >= full fine-tuning on small data",
          "A": "AdaLoRA >= LoRA at the same final budget (rank 6 falling to 4 against rank 4)",
          "M": "MixPHM >= AdaMix-adapter and >= the single PHM adapter it mixes, on small data",
          "H": "the Hadamard adapter ~ the adapter (within 1 point), at a tenth of its parameters",
          "T": "LoRETTA ~ the module it factorises in tensor trains (within 1 point), with fewer parameters",
          "X": "AdaMix >= each neighbour its paper did not compare with",
          "Y": "AdaMix over a neighbour's module >= that module alone (Hadamard experts, whose average is exact)"}


def arms():
    return [Arm(m, {"method": m}) for m in BASELINES + NEIGHBOURS]


def best_on_validation(runs, names):
    """Of `names`, the arm with the highest mean validation accuracy over its seeds (test never read)."""
    found = [n for n in names if runs.get(n)]
    return max(found, key=lambda n: statistics.mean(r["validation_accuracy"] for r in runs[n].values())) \
        if len(found) == len(names) else None


def claims(runs):
    test = lambda arm: {s: r["merged_test_accuracy"] for s, r in runs.get(arm, {}).items()}
    found = [Claim("P", "AdaMix >= prefix-tuning", "adamix", "prefix", test("adamix"), test("prefix")),
             Claim("P", "AdaMix >= UniPELT", "adamix", "unipelt", test("adamix"), test("unipelt")),
             Claim("P", "AdaMix >= FT-Top2", "adamix", "ft-top2", test("adamix"), test("ft-top2"))]
    for arm, parts in (("unipelt", ("adapter", "lora", "prefix")), ("unipelt-ap", ("adapter", "prefix"))):
        best = best_on_validation(runs, parts)
        found.append(Claim("U", f"{arm} >= the best of {', '.join(parts)}", arm,
                           f"{best or 'the best sub-module'} (best on validation)", test(arm),
                           test(best) if best else {}))
    found += [Claim("U", "UniPELT >= full fine-tuning (small data)", "unipelt", "full", test("unipelt"), test("full")),
              Claim("A", "AdaLoRA >= LoRA at the same final budget", "adalora", "lora", test("adalora"), test("lora")),
              Claim("M", "MixPHM >= AdaMix-adapter (small data)", "mixphm", "adamix", test("mixphm"), test("adamix")),
              Claim("M", "MixPHM >= the PHM adapter it mixes", "mixphm", "phm", test("mixphm"), test("phm")),
              Claim("H", "Hadamard adapter ~ adapter", "hadamard", "adapter", test("hadamard"), test("adapter"),
                    "equivalent", MARGIN),
              Claim("T", "LoRETTA-rep ~ LoRA", "loretta-rep", "lora", test("loretta-rep"), test("lora"),
                    "equivalent", MARGIN),
              Claim("T", "LoRETTA-adp ~ adapter", "loretta-adp", "adapter", test("loretta-adp"), test("adapter"),
                    "equivalent", MARGIN)]
    found += [Claim("X", f"AdaMix >= {methods.METHODS[m].label}", "adamix", m, test("adamix"), test(m))
              for m in ("adalora", "phm", "hadamard", "loretta-rep", "loretta-adp", "unipelt-ap")]
    found.append(Claim("Y", "AdaMix-Hadamard >= the Hadamard adapter", "adamix-hadamard", "hadamard",
                       test("adamix-hadamard"), test("hadamard")))
    return report.correct_for_many_claims([c.judge() for c in report.attach_test_rows(found, runs)])


def compare_command(args):
    """`compare --suite neighbours` on movie reviews (or a TSV folder)."""
    task, regime = nlu.task_of(args)
    out = Path(args.out)
    chosen_arms, grid = protocol.settings(args, arms(), nlu.GRID)
    chosen = protocol.learning_rates(task, chosen_arms, grid, args, out)
    runs, diverged, missing = protocol.final(task, chosen_arms, chosen, range(args.seeds), out, args.workers,
                                             report_only=args.report_only)
    write_report(out, args, regime, chosen_arms, chosen, runs, report.status(chosen, chosen_arms, diverged, missing))


def write_report(out, args, regime, arms_, chosen, runs, status):
    judged = claims(runs)
    size = regime["train_size"] or "all 7,568"
    text = "\n\n".join(part for part in [
        report.verdict_paragraph(judged, CLAIMS, "the headline claims fixed in docs/plans/neighbours.md"),
        report.terms("arm", "paired difference", "verdict", "p (Holm)", "merged", *report.resampled_term(judged)),
        "Claims: paired differences of test accuracy in points (merged models where the method merges), "
        "95% CI over seeds:",
        report.claims_table(judged, scale=100, unit=""),
        f"Budget: {regime['epochs']} epochs over {size} training sentences for every arm; batch 32; test accuracy "
        f"of the deployed model, mean ± std over seeds 0..{args.seeds - 1}. Deployed parameters: what a "
        "model adds at inference (UniPELT's gates cannot be merged, so all of its modules stay).",
        "Learning rates (validation accuracy, mean over tuning seeds "
        f"{', '.join(str(s) for s in range(1000, 1000 + args.tuning_seeds))}; test never read):",
        report.tuning_table(chosen), nlu.arms_table(arms_, chosen, runs),
        report.waiting_claims(judged), status] if part)
    report.write(out, text, "results_neighbours.md", name="neighbours.md")
    checkpoint.save_json(out / "neighbours.json", {"regime": regime, "chosen": chosen, "claims": judged,
                                                   "seeds": args.seeds, "tuning_seeds": args.tuning_seeds})
    print(text)
    rows = []
    for arm in arms_:
        found = runs.get(arm.name)
        if found:
            mean, std = stats.mean_std(r["merged_test_accuracy"] for r in found.values())
            rows.append({"name": arm.name, "mean": mean, "std": std,
                         "merged_parameters": next(iter(found.values()))["merged_parameters"]})
    if rows:
        plots.accuracy_vs_parameters(rows, out / "neighbours_accuracy_vs_parameters.png")
    decided = [c for c in judged if report.enough(c)]
    if decided:                                     # no figure of an empty forest
        plots.forest(decided, out / "neighbours_claims_forest.png", scale=100, unit="test accuracy points")


# ---- data-to-text (e2e) ----------------------------------------------------------------------------------

E2E_NEIGHBOURS = ("adalora", "hadamard", "loretta-rep", "prefix", "ft-top2", "adamix-hadamard")
E2E_MARGIN = 1.0        # "comparable": within one BLEU point

E2E_CLAIMS = {"P": "AdaMix-LoRA >= the baselines of its paper's GPT-2 table (prefix-tuning, FT-Top2)",
              "A": CLAIMS["A"],
              "H": "the Hadamard adapter ~ the adapter (within 1 BLEU point)",
              "T": "LoRETTA-rep ~ LoRA (within 1 BLEU point), with fewer parameters",
              "X": "AdaMix-LoRA >= each neighbour its paper did not compare with",
              "Y": CLAIMS["Y"]}


def e2e_arms():
    return [Arm(m, {"method": m}) for m in e2e.MAIN + E2E_NEIGHBOURS]


def e2e_claims(runs):
    bleu = lambda arm: {s: r["bleu"] for s, r in runs.get(arm, {}).items()}
    found = [Claim("P", "AdaMix-LoRA >= prefix-tuning", "adamix-lora", "prefix", bleu("adamix-lora"), bleu("prefix")),
             Claim("P", "AdaMix-LoRA >= FT-Top2", "adamix-lora", "ft-top2", bleu("adamix-lora"), bleu("ft-top2")),
             Claim("A", "AdaLoRA >= LoRA at the same final budget", "adalora", "lora", bleu("adalora"), bleu("lora")),
             Claim("H", "Hadamard adapter ~ adapter", "hadamard", "adapter", bleu("hadamard"), bleu("adapter"),
                   "equivalent", E2E_MARGIN),
             Claim("T", "LoRETTA-rep ~ LoRA", "loretta-rep", "lora", bleu("loretta-rep"), bleu("lora"),
                   "equivalent", E2E_MARGIN)]
    found += [Claim("X", f"AdaMix-LoRA >= {methods.METHODS[m].label}", "adamix-lora", m, bleu("adamix-lora"), bleu(m))
              for m in ("adalora", "hadamard", "loretta-rep")]
    found.append(Claim("Y", "AdaMix-Hadamard >= the Hadamard adapter", "adamix-hadamard", "hadamard",
                       bleu("adamix-hadamard"), bleu("hadamard")))
    return report.correct_for_many_claims([c.judge() for c in found])


def compare_e2e(args, base):
    """`compare --suite neighbours --task e2e`: `base` is the NLGConfig of the command line's settings."""
    task, out = e2e.DataToText(base), Path(args.out)
    chosen_arms, grid = protocol.settings(args, e2e_arms(), e2e.GRID)
    chosen = protocol.learning_rates(task, chosen_arms, grid, args, out)
    runs, diverged, missing = protocol.final(task, chosen_arms, chosen, range(args.seeds), out, args.workers,
                                             report_only=args.report_only)
    judged = e2e_claims(runs)
    text = "\n\n".join(part for part in [
        report.verdict_paragraph(judged, E2E_CLAIMS, "the headline claims fixed in docs/plans/neighbours.md"),
        report.terms("arm", "paired difference", "verdict", "p (Holm)", "merged"),
        "Claims: paired differences of test BLEU (merged models where the method merges), 95% CI over seeds:",
        report.claims_table(judged),
        f"Budget: {base.steps} steps of batch {base.batch_size} over {base.train_size} training MRs for every arm, "
        f"the official GPT-2 recipe (no clipping); beam search (width {base.beam_width}); mean ± std over seeds "
        f"0..{args.seeds - 1}.",
        "Learning rates (validation BLEU, mean over tuning seeds "
        f"{', '.join(str(s) for s in range(1000, 1000 + args.tuning_seeds))}; test never read):",
        report.tuning_table(chosen), e2e.arms_table(chosen_arms, chosen, runs),
        report.waiting_claims(judged), report.status(chosen, chosen_arms, diverged, missing)] if part)
    report.write(out, text, "results_neighbours_e2e.md", name="neighbours.md")
    checkpoint.save_json(out / "neighbours.json", {"config": asdict(base), "chosen": chosen, "claims": judged,
                                                   "seeds": args.seeds, "tuning_seeds": args.tuning_seeds})
    print(text)
    rows = [{"name": arm.name, "merged_parameters": next(iter(runs[arm.name].values()))["merged_parameters"],
             **dict(zip(("mean", "std"), stats.mean_std(r["bleu"] for r in runs[arm.name].values())))}
            for arm in chosen_arms if runs.get(arm.name)]
    if rows:
        plots.accuracy_vs_parameters(rows, out / "neighbours_bleu_vs_parameters.png", "test BLEU")
