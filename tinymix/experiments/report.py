"""Claims judged from paired runs, and the Markdown report of a comparison, in the order a reader needs
it: the verdict, the terms, the claims table, then the evidence, and what is still missing last."""
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..backend import host
from . import stats


@dataclass
class Claim:
    """One claim of docs/adamix.md section 10 as a comparison of two per-seed scores (higher = better)."""
    number: str                 # "1", "3b", ...
    text: str                   # what the paper says
    left_name: str              # what is compared, in words
    right_name: str
    left: dict = field(default_factory=dict)      # {seed: score}
    right: dict = field(default_factory=dict)
    kind: str = "greater"       # "greater": left >= right; "equivalent": left ~ right within margin
    margin: float = 0.0
    exploratory: bool = False   # planned after test results existed: shown, never given a verdict
    left_rows: dict = None      # {seed: "0110..."}: per test example, 1 where right (runs that saved it)
    right_rows: dict = None

    def judge(self):
        interval = stats.paired_difference(self.left, self.right)
        verdict = stats.verdict(interval, self.kind, self.margin)
        if self.exploratory and verdict != "not enough seeds":
            verdict = EXPLORATORY
        return {"number": self.number, "text": self.text, "left": self.left_name, "right": self.right_name,
                "kind": self.kind, "margin": self.margin, **interval, "verdict": verdict,
                "bootstrap": self.test_inclusive_interval()}

    def test_inclusive_interval(self):
        """The 95% interval of the paired bootstrap over seeds AND test examples (stats.paired_bootstrap),
        where both sides saved per-example results for every seed the t interval uses; else None."""
        seeds = set(self.left) & set(self.right)
        if len(seeds) < 2 or not self.left_rows or not self.right_rows or \
                not seeds <= set(self.left_rows) & set(self.right_rows):
            return None
        as_column = lambda text: host.frombuffer(text.encode(), dtype=host.uint8).astype(host.float64)[:, None] - 48
        found = stats.paired_bootstrap({s: as_column(self.left_rows[s]) for s in seeds},
                                       {s: as_column(self.right_rows[s]) for s in seeds}, lambda sums, n: sums[0] / n)
        return {"low": found["low"], "high": found["high"], "resamples": found["resamples"]}


def resampled_term(judged):
    """["test resampled"] when some row has a bootstrap interval (the term its column needs), else []."""
    return ["test resampled"] if any(c.get("bootstrap") for c in judged if enough(c)) else []


def attach_test_rows(claims, runs, key="test_correct"):
    """Give each claim whose two sides are arms (a name, or a name followed by " (...)") those arms'
    per-example test results, where their runs saved them."""
    arm = lambda name: name.split(" (")[0]
    rows = lambda name: {s: r[key] for s, r in runs.get(arm(name), {}).items() if r.get(key)}
    for c in claims:
        c.left_rows, c.right_rows = rows(c.left_name), rows(c.right_name)
    return claims


EXPLORATORY = "exploratory"


CLAIMS = {"1": "AdaMix (merged) >= the single module it mixes",
          "2": "AdaMix >= full fine-tuning on small data",
          "3": "merging >= random routing, ~ the best single expert, > fixed routing",
          "4": "the consistency loss and sharing help",
          "5": "returns diminish with more experts",
          "6": "a step costs about one module (two passes); the merged model costs one module",
          "L": "few-shot only, exploratory (added after its other results): LiST's self-training on unlabelled sentences"}

TERMS = {
    "arm": "one way of training (a method with its settings, e.g. `adamix, no sharing`), run once per seed",
    "paired difference": "for one seed, the left arm's test score minus the right arm's; both runs of a seed "
                         "share the batch order, the task head and the initial weights of every module they "
                         "have in common. A table row gives the mean over seeds and its 95% confidence interval "
                         "(Student's t)",
    "verdict": "held: the interval lies above 0 (for an \"about equal\" claim, inside ± its margin); refuted: "
               "below 0 (outside the margin); inconclusive: the interval contains 0. A page judges many claims "
               "at once, so a held or refuted verdict also needs its Holm-corrected p-value below 0.05 (the "
               "chance of any false verdict among the page's claims stays at 5%); a row that would have "
               "been decided alone says so",
    "exploratory": "a comparison planned after the test results of the arms it explains existed: its "
                   "interval and p-value are shown, but it carries no verdict and is not counted among the claims",
    "p (Holm)": "the paired t-test's p-value for the row's claim (p < 0.05 exactly when the 95% interval "
                "decides it), multiplied by Holm's step-down factor over every row with a verdict on the page",
    "rows 1-6": "the claims of docs/adamix.md §10",
    "rows B": "a budget check, not a claim: does the single module still gain from 4x the steps? (if not, "
              "its validation curve had flattened at the base budget)",
    "rows G": "explaining the gap: an AdaMix variant at a learning rate searched for it, against the single module",
    "rows R": "a recipe check: one choice of the official code against its alternative, on the same seeds",
    "merged": "every mixture replaced by the mean of its experts (AdaMix's inference); tests score the merged model",
    "spread": "how far a mixture's experts are apart: the mean distance of an expert's weight from the "
              "experts' mean, divided by the norm of that mean (0: identical experts)",
    "moved": "the distance of an expert's weight from its initial value",
    "test resampled": "the column \"95% CI, test resampled too\": a paired bootstrap of the mean difference "
                      "(2,000 resamples, each drawing the seeds with replacement and the test sentences with "
                      "replacement, one draw for both arms), so it includes the variance of sampling a test set "
                      "of this size beside the seeds'; shown where both arms' runs saved per-sentence results. "
                      "Verdicts use the t interval",
}


def correct_for_many_claims(*groups, alpha=0.05):
    """Judge every row of a task's report as one family: each row gets its p-value, its Holm-adjusted p
    (stats.verdicts) and the corrected verdict; `alone` keeps the verdict the row would get by itself.
    The checks (rows B, G, R) carry verdicts too, so they count in the family like the claims."""
    rows = [c for group in groups for c in group]
    family = [c for c in rows if c["verdict"] != EXPLORATORY]
    for c, judged in zip(family, stats.verdicts([(c, c["kind"], c["margin"]) for c in family], alpha)):
        c.update(p=judged["p"], p_holm=judged["p_holm"], alone=judged["raw"], verdict=judged["verdict"])
    for c in rows:
        if c["verdict"] == EXPLORATORY:              # a p-value to read, outside the family, no verdict
            c.update(p=stats.p_value(c, c["kind"], c["margin"]), p_holm=None, alone=EXPLORATORY)
    return rows


def enough(c):
    return c["verdict"] != "not enough seeds"


def verdict_paragraph(judged, claims=CLAIMS, source="the claims of docs/adamix.md §10"):
    """The answer first: per claim (of docs/adamix.md §10 unless told), how its comparisons came out."""
    lines = [f"**Verdict, claim by claim** ({source}; the rows of the table below):"]
    for number, text in claims.items():
        rows = [c for c in judged if c["number"] == number]
        decided = Counter(c["verdict"] for c in rows if enough(c))
        if not rows:
            continue
        counts = ", ".join(f"{decided[v]} {v}" for v in ("held", "refuted", "inconclusive", EXPLORATORY) if decided[v])
        waiting = len(rows) - sum(decided.values())
        lines.append(f"- claim {number}, {text}: " + (f"{counts} (of {sum(decided.values())} comparisons)"
                                                      if counts else "no comparison has enough seeds yet")
                     + (f"; {waiting} more wait for runs" if counts and waiting else "") + ".")
    return "\n".join(lines)


def opening(judged, claims, plan, what, scale=1.0, unit="", digits=2):
    """The first parts of a suite's report: the verdict per claim (of `plan`, its plan file), the terms the
    table uses, what the table compares (`what`), and the claims table."""
    return [verdict_paragraph(judged, claims, f"the claims fixed in {plan}"),
            terms("paired difference", "verdict", "p (Holm)", *resampled_term(judged)), what,
            claims_table(judged, scale=scale, unit=unit, digits=digits)]


def terms(*names):
    """The definitions of the terms a report uses, before its first table."""
    return "Terms used below:\n" + "\n".join(f"- **{name}**: {TERMS[name]}." for name in names)


def cost_table(pairs, runs, seconds_key):
    """Claim 6 as measured: mean train time of AdaMix against the single module it mixes, and the two
    merged models' parameter counts (equal when merging gives one module)."""
    lines = ["| # | claim | comparison | mean train time (s) | ratio | parameters after merging |",
             "|---|---|---|---|---|---|"]
    for mix, single in pairs:
        if not runs.get(mix) or not runs.get(single):
            continue
        seconds = [sum(r[seconds_key] for r in runs[a].values()) / len(runs[a]) for a in (mix, single)]
        merged = [next(iter(runs[a].values()))["merged_parameters"] for a in (mix, single)]
        same = "equal" if merged[0] == merged[1] else "NOT equal"
        lines.append(f"| 6 | {CLAIMS['6']} | {mix} vs {single} | {seconds[0]:.0f} vs {seconds[1]:.0f} | "
                     f"{seconds[0] / seconds[1]:.2f} | {merged[0]:,d} vs {merged[1]:,d}: {same} |")
    return "\n".join(lines)


def claims_table(judged, scale=1.0, unit="", digits=2):
    """| claim | comparison | paired difference | 95% CI | seeds | verdict | — differences times `scale`,
    shown with `digits` decimals. Rows without enough seeds are left to waiting_claims(), at the end."""
    boot = any(c.get("bootstrap") for c in filter(enough, judged))   # a column only where runs saved examples
    lines = ["| # | claim | comparison | mean paired difference | 95% CI | " + ("95% CI, test resampled too | " if boot else "")
             + "seeds | p (Holm) | verdict |", "|---|---|---|---|---|---|---|---|" + ("---|" if boot else "")]
    for c in filter(enough, judged):
        show = lambda v: "-" if v is None else f"{scale * v:+.{digits}f}"
        interval = "-" if c["low"] is None else f"[{show(c['low'])}, {show(c['high'])}]"
        if boot:
            b = c.get("bootstrap")
            interval += " | " + ("-" if not b else f"[{show(b['low'])}, {show(b['high'])}]")
        what = f"{c['left']} vs {c['right']}" + (f" (margin ±{scale * c['margin']:g}{unit})"
                                                  if c["kind"] == "equivalent" else "")
        p = "-" if c.get("p") is None else f"{c['p']:.3f}" + ("" if c.get("p_holm") is None else f" ({c['p_holm']:.3f})")
        alone = f" (alone: {c['alone']})" if c.get("alone", c["verdict"]) != c["verdict"] else ""
        lines.append(f"| {c['number']} | {c['text']} | {what} | {show(c['mean'])}{unit} | {interval} | {c['n']} | "
                     f"{p} | **{c['verdict']}**{alone} |")
    return "\n".join(lines)


def tuning_table(chosen, grid_label="validation"):
    """One row per arm with a learning-rate search: its score at every rate tried, the chosen rate."""
    searched = {name: c for name, c in chosen.items() if "scores" in c}
    rates = sorted({lr for c in searched.values() for lr in c["scores"]})
    lines = ["| arm | " + " | ".join(f"lr {lr:g}" for lr in rates) + " | chosen |",
             "|---|" + "---|" * (len(rates) + 1)] if searched else []
    for name, c in searched.items():
        cells = [("**" if lr == c["lr"] else "") + f"{c['scores'][lr]:.4g}" + ("**" if lr == c["lr"] else "")
                 if lr in c["scores"] else "" for lr in rates]
        edge = " (at the grid's edge)" if c.get("edge") else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {c['lr']:g}{edge} |")
    searches = {name: c for name, c in chosen.items() if c.get("search")}
    if searches:
        lines += ([""] if lines else []) + ["| arm | evaluations (budget) | recipe chosen | its validation score | "
                                            "every evaluation, in order |", "|---|---|---|---|---|"]
        for name, c in searches.items():
            best = max(c["evaluations"], key=lambda e: e["score"])
            recipe = lambda r: ", ".join(f"{k} {v:g}" for k, v in r.items())
            order = "; ".join(f"{recipe(e['recipe'])}: {e['score']:.4g}" for e in c["evaluations"])
            lines.append(f"| {name} | {len(c['evaluations'])} ({c['budget']}) | {recipe(best['recipe'])} | "
                         f"{best['score']:.4g} | {order} |")
    inherited = [f"{name}: {c['lr']:g} (from {c['from']})" for name, c in chosen.items() if "from" in c]
    if inherited:
        lines += ([""] if lines else []) + [("Variants use their method's rate: " if searched else "Rates: ")
                                            + "; ".join(inherited) + "."]
    return "\n".join(lines)


def routing_summary(runs):
    """Over an arm's runs and mixtures: the least and most often routed expert's share of the calls,
    the experts' spread (mean distance from their mean / its norm) and the mean distance moved."""
    shares, spreads, moved = [], [], []
    for result in runs.values():
        for entry in (result.get("routing") or {}).values():
            total = sum(entry["route_counts"]) or 1
            shares += [c / total for c in entry["route_counts"]]
            spreads.append(entry["spread"])
            moved += entry.get("moved", [])
    if not spreads:
        return None
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    return {"min_share": min(shares), "max_share": max(shares), "spread": mean(spreads), "moved": mean(moved)}


def routing_table(arms_runs):
    lines = ["| arm | experts | least / most routed expert (share of calls) | spread of the experts | "
             "mean distance moved |", "|---|---|---|---|---|"]
    for name, runs in arms_runs.items():
        summary = routing_summary(runs)
        if summary is None:
            continue
        experts = len(next(iter(next(iter(runs.values()))["routing"].values()))["route_counts"])
        lines.append(f"| {name} | {experts} | {summary['min_share']:.3f} / {summary['max_share']:.3f} "
                     f"(uniform {1 / experts:.3f}) | {summary['spread']:.3f} | {summary['moved']:.3f} |")
    return "\n".join(lines)


def waiting_claims(judged):
    """The comparisons that wait for runs (fewer than two paired seeds), for the end of a report."""
    waiting = [f"{c['number']} ({c['left']} vs {c['right']})" for c in judged if not enough(c)]
    return f"Comparisons without enough seeds yet (their runs are listed next): {'; '.join(waiting)}." if waiting else ""


def status(chosen, arms, diverged, missing):
    """What the report does not contain yet, and why; `missing` holds labels "<arm> seed <s>"."""
    untuned = [a.name for a in arms if a.name not in chosen]
    by_arm = {}
    for label in missing:
        name, _, seed = label.rpartition(" seed ")
        by_arm.setdefault(name, []).append(seed)
    lines = [f"Not run yet ({len(missing)} runs): " + "; ".join(f"{name}, seeds {', '.join(seeds)}"
                                                         for name, seeds in by_arm.items()) + "." if missing else "",
             f"No learning rate chosen yet (its search has not finished): {', '.join(untuned)}." if untuned else "",
             f"Diverged (left out of the tables): {'; '.join(diverged)}." if diverged else ""]
    return "\n\n".join(line for line in lines if line) or "Every run of this comparison has finished."


CLOSING = ("Comparisons without enough seeds yet", "Not run yet (", "No learning rate chosen yet", "Diverged (",
           "Every run of this comparison")
MARKS = {"report": ("<!-- report: begin (tinymix/experiments/report.py update_page) -->\n", "<!-- report: end -->"),
         "closing": ("<!-- closing: begin -->\n", "<!-- closing: end -->")}


def update_page(page, report_text):
    """Write a comparison's report into its results page (docs/results*.md) between the page's markers:
    the report itself where the page shows it, its closing paragraphs (what is not run yet) at the
    page's end. The page's own prose around them is left as it is. Returns True if the page changed."""
    page = Path(page)
    paragraphs = report_text.strip().split("\n\n")
    split = next((i for i, part in enumerate(paragraphs) if part.startswith(CLOSING)), len(paragraphs))
    parts = {"report": "\n\n".join(paragraphs[:split]) + "\n", "closing": "\n\n".join(paragraphs[split:]) + "\n"}
    text = old = page.read_text(encoding="utf-8")
    for name, (begin, end) in MARKS.items():
        if text.count(begin) != 1 or text.count(end) != 1:
            raise ValueError(f"{page}: expected one {begin.strip()} and one {end} marker")
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda m: begin + parts[name] + end, text,
                      flags=re.DOTALL)
    if text != old:
        page.write_text(text, encoding="utf-8")
    return text != old


def write(out, text, page, name="results.md"):
    """Write the report to `name` in the folder `out`; when `out` is a committed experiment folder,
    also into its results page two folders up (the page of docs/experiments/e2e is docs/results_e2e.md).
    So the command that reports a comparison also regenerates its page, but only the page that is that
    folder's (it cites experiments/FOLDER/): another comparison run into another folder under
    docs/experiments/ leaves the page alone."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)           # --report-only before any run: the folder is new
    (out / name).write_text(text + "\n", encoding="utf-8")
    beside = out.parent.parent / page
    if out.parent.name == "experiments" and beside.is_file() and \
            f"experiments/{out.name}/" in beside.read_text(encoding="utf-8"):
        if update_page(beside, text):
            print(f"updated {beside}")
