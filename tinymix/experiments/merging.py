"""Is the plain mean the best way to merge AdaMix's experts? The operators of tinymix/merging.py on the
experts of real runs, under the fair protocol (protocol.py); the plan: docs/plans/merging.md.

    python3 -m tinymix compare --suite merging --lr-from docs/experiments/nlu-small --out docs/experiments/nlu-merging

Arms: AdaMix (adapter experts) and AdaMix-LoRA, at M = 4 and 8 experts, at the rates the AdaMix comparison
chose. Each run trains once; before its mixtures are averaged (the run's deployed model, tested as always),
every operator merges the same experts at the scale that wins on validation, and that one model is tested
(nlu.merge_operators). So each claim compares two merges of the very same experts, seed by seed.
"""
import statistics
from pathlib import Path

from .. import merging
from ..store import checkpoint
from . import nlu, protocol, report, stats
from .protocol import Arm
from .report import Claim

OPERATORS = ("task-arithmetic", "ties", "pcb")      # each against the mean, AdaMix's own merge
CLAIMS = {"E": "uniform averaging leaves accuracy on the table: an operator chosen on validation >= the mean",
          "O": "PCB >= TIES (PCB-Merging paper)"}
LABELS = {"mean": "the mean", "task-arithmetic": "task arithmetic", "ties": "TIES", "pcb": "PCB"}


def arms():
    return [Arm("adamix", {"method": "adamix"}), Arm("adamix-lora", {"method": "adamix-lora"}),
            Arm("adamix, 8 experts", {"method": "adamix", "num_experts": 8}, lr_from="adamix"),
            Arm("adamix-lora, 8 experts", {"method": "adamix-lora", "num_experts": 8}, lr_from="adamix-lora")]


class MergedExperts(nlu.MovieReviews):
    """Movie reviews whose final AdaMix runs also merge their experts by every operator (nlu.merge_operators)."""

    def request(self, arm, lr, seed, test):
        found = super().request(arm, lr, seed, test)
        return {**found, "merge_operators": list(OPERATORS)} if test else found


def scores(runs, arm, operator):
    """{seed: test accuracy} of the arm's experts merged by `operator` ("mean": the run's deployed model)."""
    return {s: r["merged_test_accuracy"] if operator == "mean" else r["merge_operators"][operator]["test_accuracy"]
            for s, r in runs.get(arm, {}).items()}


def rows(runs, arm, operator):
    """{seed: "0110..."}: per test sentence, right or wrong, for the bootstrap interval."""
    return {s: r["test_correct"] if operator == "mean" else r["merge_operators"][operator]["test_correct"]
            for s, r in runs.get(arm, {}).items()}


def claims(runs):
    found = []
    for arm in (a.name for a in arms()):
        pairs = [("E", operator, "mean") for operator in ("ties", "pcb", "task-arithmetic")] + [("O", "pcb", "ties")]
        for number, left, right in pairs:
            claim = Claim(number, f"{arm}: {LABELS[left]} >= {LABELS[right]}", f"{arm}, {LABELS[left]}",
                          f"{arm}, {LABELS[right]}", scores(runs, arm, left), scores(runs, arm, right))
            claim.left_rows, claim.right_rows = rows(runs, arm, left), rows(runs, arm, right)
            found.append(claim)
    return report.correct_for_many_claims([c.judge() for c in found])


def operators_table(arms_, runs):
    """Per arm and operator: test accuracy, validation accuracy, the lambdas chosen, the rank-r cut's error."""
    lines = ["| arm | merge | test accuracy | validation | lambda chosen (per seed) | rank-r cut error |",
             "|---|---|---|---|---|---|"]
    for arm in arms_:
        found = runs.get(arm.name)
        if not found:
            continue
        for operator in ("mean",) + OPERATORS:
            mean, std = stats.mean_std(scores(runs, arm.name, operator).values())
            ops = [r["merge_operators"][operator] for r in found.values()]
            validation = statistics.mean(o["validation_accuracy"] for o in ops)
            chosen = ", ".join(f"{o['scale']:g}" for o in ops) if operator != "mean" else "1/M (the mean)"
            errors = [o["rank_r_error"]["mean"] for o in ops if o.get("rank_r_error")]
            cut = f"{statistics.mean(errors):.2f}" if errors else ""
            lines.append(f"| {arm.name} | {LABELS[operator]} | {mean:.4f} ± {std:.4f} | {validation:.4f} | {chosen} | {cut} |")
    return "\n".join(lines)


def reproduction(runs, source):
    """The mean-merged test accuracy of each seed against the same arm and seed in the AdaMix comparison's
    folder `source` (the same training, so the same experts): a line saying whether every one matches."""
    matched, differ = 0, []
    for arm, found in runs.items():
        for seed, result in found.items():
            other = protocol.run_folder(source, "final", Arm(arm), seed) / "results.json"
            if other.is_file():
                theirs = checkpoint.load_json(other)["merged_test_accuracy"]
                if theirs == result["merged_test_accuracy"]:
                    matched += 1
                else:
                    differ.append(f"{arm} seed {seed}: {result['merged_test_accuracy']} here, {theirs} there")
    if not matched and not differ:
        return ""
    return (f"Reproduction: {matched} run(s) deploy exactly the test accuracy of the same arm and seed in {source}"
            + (f"; {len(differ)} differ: " + "; ".join(differ) if differ else " (the same experts)."))


def compare_command(args):
    """`compare --suite merging` on movie reviews."""
    done = nlu.small_regime(args, MergedExperts, arms(), "docs/plans/merging.md")
    out, regime, chosen_arms, chosen, runs = done.out, done.regime, done.arms, done.chosen, done.runs
    diverged, missing = done.diverged, done.missing
    judged = claims(runs)
    text = "\n\n".join(part for part in [
        *report.opening(judged, CLAIMS, "docs/plans/merging.md", "Claims: paired differences of test accuracy in "
                        "points between two merges of the same experts, 95% CI over seeds:", scale=100),
        f"Budget: {regime['epochs']} epochs over {regime['train_size']:,} training sentences, batch 32; each "
        f"operator's lambda chosen on validation from its grid ({', '.join(f'{m:g}' for m in merging.MULTIPLIERS)}; "
        "for task arithmetic divided by the number of task vectors); TIES keeps 20%, PCB 10%. Mean ± std over "
        f"seeds 0..{args.seeds - 1}.",
        operators_table(chosen_arms, runs),
        reproduction(runs, Path(args.lr_from)) if args.lr_from else "",
        report.tuning_table(chosen),
        report.waiting_claims(judged), report.status(chosen, chosen_arms, diverged, missing)] if part)
    report.write(out, text, "results_merging.md", name="merging.md")
    checkpoint.save_json(out / "merging.json", {"regime": regime, "chosen": chosen, "claims": judged,
                                                "seeds": args.seeds})
    print(text)
