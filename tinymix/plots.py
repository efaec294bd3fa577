"""Figures, written as PNG files with matplotlib's headless backend."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402


def _save(figure, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def _running_mean(values, window):
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]


def training_curve(losses, history, path, title="training", terms=None):
    """Loss per step (and its running mean) beside validation accuracy per epoch. With `terms` (a
    losses.json: "task" and "consistency" per step, and "consistency_weight"), a two-pass run's loss
    is drawn as its two terms apart: the task loss (cross-entropy) and the consistency term."""
    split = bool(terms and terms.get("consistency_weight") and terms.get("consistency"))
    panels = 3 if split else 2
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6))
    curves = [(axes[0], terms["task"] if split else losses, "task loss (cross-entropy)" if split else "training loss")]
    if split:
        curves.append((axes[1], terms["consistency"], f"consistency term (symmetric KL; weight "
                                                      f"{terms['consistency_weight']:g} in the loss)"))
    for axis, values, label in curves:
        axis.plot(values, color="0.75", linewidth=0.8, label="per step")
        window = max(1, len(values) // 20)
        axis.plot(_running_mean(values, window), color="C0", label=f"running mean ({window} steps)")
        axis.set(xlabel="step", ylabel=label, title=title if axis is axes[0] else "consistency")
        axis.legend()
    epochs = [h["epoch"] for h in history]
    if all(h["validation_accuracy"] is None for h in history):       # true few-shot: no validation read
        axes[-1].plot(epochs, [h["mean_loss"] for h in history], "o-", color="C1")
        axes[-1].set(xlabel="epoch", ylabel="mean training loss", title="no validation (few-shot)")
    else:
        axes[-1].plot(epochs, [h["validation_accuracy"] for h in history], "o-", color="C1")
        axes[-1].set(xlabel="epoch", ylabel="validation accuracy", title="validation", xticks=epochs)
    return _save(figure, path)


def accuracy_vs_parameters(rows, path, ylabel="test accuracy"):
    """Test accuracy (or another score: ylabel) as mean +- std over seeds, against inference-time
    trainable parameters, log x (like Fig. 1 of the AdaMix paper). rows: dicts with name,
    merged_parameters, mean, std."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for i, row in enumerate(rows):
        axes.errorbar(row["merged_parameters"], row["mean"], yerr=row["std"], fmt="o", capsize=3,
                      color=f"C{i % 10}", label=row["name"])
    axes.set_xscale("log")
    axes.set(xlabel="trainable parameters at inference (log scale)", ylabel=ylabel,
             title=f"{ylabel} vs. inference-time parameters")
    axes.legend(fontsize=8, loc="lower right")
    return _save(figure, path)


def random_vs_merged(random_runs, merged, path):
    """Per seed: accuracy of several random-routing inference runs against the merged model
    (like Fig. 5 of the AdaMix paper). random_runs: {seed: [acc, ...]}, merged: {seed: acc}."""
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    seeds = sorted(merged)
    for x, seed in enumerate(seeds):
        runs = random_runs[seed]
        axes.scatter([x] * len(runs), runs, color="C0", alpha=0.6, label="random routing" if x == 0 else None)
        axes.scatter([x], [merged[seed]], color="C3", marker="*", s=160, label="merged (average)" if x == 0 else None)
    axes.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
    axes.set(ylabel="test accuracy", title="AdaMix: random-routing inference vs. merging")
    axes.legend()
    return _save(figure, path)


def loss_curves(curves, path, ylabel="training loss (running mean)", second=None):
    """Running-mean training loss per step, one line per method. curves: {name: [loss, ...]}, all of
    one kind (ylabel). second: (its label, [value per step]), drawn on a panel of its own beside them
    (e.g. AdaMix's consistency term, which a one-pass method does not have)."""
    figure, axes = plt.subplots(1, 2 if second else 1, figsize=(12 if second else 7, 4.2), squeeze=False)
    left = axes[0][0]
    for i, (name, losses) in enumerate(curves.items()):
        left.plot(_running_mean(losses, max(1, len(losses) // 15)), color=f"C{i % 10}", label=name)
    left.set(xlabel="step", ylabel=ylabel, title="training curves (seed 0)")
    left.legend(fontsize=8)
    if second:
        label, values = second
        right = axes[0][1]
        right.plot(_running_mean(values, max(1, len(values) // 15)), color="C3")
        right.set(xlabel="step", ylabel="running mean", title=label)
    return _save(figure, path)


def forest(judged, path, scale=1.0, unit="", title="paired differences, 95% confidence intervals"):
    """One row per claim: the mean paired difference (dot) and its 95% CI (bar); the zero line, and the
    equivalence margins where a claim has one. judged: report.Claim.judge() dicts."""
    rows = [c for c in judged if c["low"] is not None]
    figure, axes = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.4))
    colours = {"held": "C2", "refuted": "C3", "inconclusive": "0.45"}
    for y, c in enumerate(reversed(rows)):
        colour = colours.get(c["verdict"], "0.45")
        axes.plot([scale * c["low"], scale * c["high"]], [y, y], color=colour, linewidth=2.2)
        axes.plot(scale * c["mean"], y, "o", color=colour)
        if c["kind"] == "equivalent":
            axes.plot([-scale * c["margin"], scale * c["margin"]], [y, y], "|", color="0.2", markersize=12)
    axes.axvline(0, color="0.3", linewidth=0.8)
    axes.set_yticks(range(len(rows)), [f"{c['number']}. {c['left']} vs {c['right']}" for c in reversed(rows)],
                    fontsize=8)
    axes.set(xlabel=f"mean paired difference ({unit})", title=f"{title}\ngreen: held, red: refuted, grey: inconclusive")
    return _save(figure, path)


def validation_curves(curves, path, xlabel, ylabel, title="validation curves"):
    """One line per arm: its validation score at each evaluation. curves: {name: [value, ...]} or
    {name: ([x, ...], [value, ...])}."""
    figure, axes = plt.subplots(figsize=(7.5, 4.4))
    for i, (name, curve) in enumerate(curves.items()):
        xs, ys = curve if isinstance(curve, tuple) else (list(range(1, len(curve) + 1)), curve)
        axes.plot(xs, ys, "o-" if len(ys) < 30 else "-", markersize=3, color=f"C{i % 10}", label=name)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if curves:
        axes.legend(fontsize=8)
    return _save(figure, path)


def expert_diagnostics(arms_runs, path):
    """For each AdaMix arm (mean over seeds, at each evaluation): left, how far each expert and the
    experts' mean have moved from their start; right, the gradient norm of the weighted consistency term
    over the task term's. arms_runs: {arm: {seed: results with diagnostics in "history"}}."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, runs) in enumerate(arms_runs.items()):
        histories = [r["history"] for r in runs.values() if r["history"] and "expert_moved" in r["history"][0]]
        if not histories:
            continue
        steps = [h["step"] for h in histories[0]]
        mean = lambda f: [sum(f(h[j]) for h in histories) / len(histories) for j in range(len(steps))]
        experts = len(histories[0][0]["expert_moved"])
        for k in range(experts):
            left.plot(steps, mean(lambda e: e["expert_moved"][k]), color=f"C{i}", alpha=0.35, linewidth=0.8,
                      label=f"{name}: each expert" if k == 0 else None)
        left.plot(steps, mean(lambda e: e["mean_expert_moved"]), color=f"C{i}", linewidth=2.2,
                  label=f"{name}: their mean (the merged module)")
        right.plot(steps, mean(lambda e: e["consistency_gradient_norm"] / max(e["task_gradient_norm"], 1e-12)),
                   color=f"C{i}", label=name)
    left.set(xlabel="step", ylabel="distance from the start (Frobenius)", title="how far the experts moved")
    left.legend(fontsize=7)
    right.axhline(1.0, color="0.5", linewidth=0.8)
    right.set(xlabel="step", ylabel="||grad consistency|| / ||grad task||", yscale="log",
              title="the consistency term's pull")
    right.legend(fontsize=8)
    return _save(figure, path)
