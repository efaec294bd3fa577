"""Claims judged from paired runs, and the Markdown tables of a comparison's report."""
from dataclasses import dataclass, field

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

    def judge(self):
        interval = stats.paired_difference(self.left, self.right)
        return {"number": self.number, "text": self.text, "left": self.left_name, "right": self.right_name,
                "kind": self.kind, "margin": self.margin, **interval,
                "verdict": stats.verdict(interval, self.kind, self.margin)}


def claims_table(judged, scale=1.0, unit="", digits=2):
    """| claim | comparison | paired difference | 95% CI | seeds | verdict | — differences times `scale`,
    shown with `digits` decimals."""
    lines = ["| # | claim | comparison | mean paired difference | 95% CI | seeds | verdict |",
             "|---|---|---|---|---|---|---|"]
    for c in judged:
        show = lambda v: "-" if v is None else f"{scale * v:+.{digits}f}"
        interval = "-" if c["low"] is None else f"[{show(c['low'])}, {show(c['high'])}]"
        what = f"{c['left']} vs {c['right']}" + (f" (margin ±{scale * c['margin']:g}{unit})"
                                                  if c["kind"] == "equivalent" else "")
        lines.append(f"| {c['number']} | {c['text']} | {what} | {show(c['mean'])}{unit} | {interval} | {c['n']} | "
                     f"**{c['verdict']}** |")
    return "\n".join(lines)


def tuning_table(chosen, grid_label="validation"):
    """One row per arm with a learning-rate search: its score at every rate tried, the chosen rate."""
    searched = {name: c for name, c in chosen.items() if "scores" in c}
    rates = sorted({lr for c in searched.values() for lr in c["scores"]})
    lines = ["| arm | " + " | ".join(f"lr {lr:g}" for lr in rates) + " | chosen |",
             "|---|" + "---|" * (len(rates) + 1)]
    for name, c in searched.items():
        cells = [("**" if lr == c["lr"] else "") + f"{c['scores'][lr]:.4g}" + ("**" if lr == c["lr"] else "")
                 if lr in c["scores"] else "" for lr in rates]
        edge = " (at the grid's edge)" if c.get("edge") else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {c['lr']:g}{edge} |")
    inherited = [f"{name}: {c['lr']:g} (from {c['from']})" for name, c in chosen.items() if "from" in c]
    if inherited:
        lines += ["", "Variants use their method's rate: " + "; ".join(inherited) + "."]
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


def status(chosen, arms, diverged, missing):
    """What the report does not contain yet, and why."""
    untuned = [a.name for a in arms if a.name not in chosen]
    lines = [f"Not run yet: {', '.join(missing)}." if missing else "",
             f"No learning rate chosen yet (its search has not finished): {', '.join(untuned)}." if untuned else "",
             f"Diverged (left out of the tables): {'; '.join(diverged)}." if diverged else ""]
    return "\n\n".join(line for line in lines if line) or "Every run of this comparison has finished."
