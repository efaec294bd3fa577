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


def training_curve(losses, history, path, title="training"):
    """Loss per step (and its running mean) beside validation accuracy per epoch."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(losses, color="0.75", linewidth=0.8, label="loss per step")
    window = max(1, len(losses) // 20)
    left.plot(_running_mean(losses, window), color="C0", label=f"running mean ({window} steps)")
    left.set(xlabel="step", ylabel="training loss", title=title)
    left.legend()
    epochs = [h["epoch"] for h in history]
    right.plot(epochs, [h["validation_accuracy"] for h in history], "o-", color="C1")
    right.set(xlabel="epoch", ylabel="validation accuracy", title="validation", xticks=epochs)
    return _save(figure, path)


def accuracy_vs_parameters(rows, path):
    """Test accuracy (mean +- std over seeds) against inference-time trainable parameters, log x
    (like Fig. 1 of the AdaMix paper). rows: dicts with name, merged_parameters, mean, std."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for i, row in enumerate(rows):
        axes.errorbar(row["merged_parameters"], row["mean"], yerr=row["std"], fmt="o", capsize=3,
                      color=f"C{i % 10}", label=row["name"])
    axes.set_xscale("log")
    axes.set(xlabel="trainable parameters at inference (log scale)", ylabel="test accuracy",
             title="accuracy vs. inference-time parameters")
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


def loss_curves(curves, path):
    """Running-mean training loss per step, one line per method. curves: {name: [loss, ...]}."""
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for i, (name, losses) in enumerate(curves.items()):
        axes.plot(_running_mean(losses, max(1, len(losses) // 15)), color=f"C{i % 10}", label=name)
    axes.set(xlabel="step", ylabel="training loss (running mean)", title="training curves (seed 0)")
    axes.legend(fontsize=8)
    return _save(figure, path)
