"""MOS on a class-incremental sentiment stream: four tasks, one per domain, each bringing its negative and
positive class; after each task, accuracy over every class seen so far. The plan, fixed before any of its
runs: docs/plans/mos.md. The learner: tinymix/mos.py.

    python3 -m tinymix compare --suite mos --out docs/experiments/nlu-mos

Arms: MOS; MOS without merging (m = 0); MOS without refinement (the first adapter's prediction); one adapter
trained through the tasks in turn (forgetting); nearest class mean on the frozen model's features. Seed s
orders the four domains by its own permutation (paired seeds are paired task orders), and fixes the
adapters' and the head's start. No learning rate is searched: the adapter's rate from the AdaMix comparison.
"""
import statistics
from pathlib import Path

from .. import backend, data, mos, peft
from ..backend import xp
from ..pretrained import load_pretrained
from ..store import checkpoint
from ..transformer import SequenceClassifier
from . import protocol, report, stats
from .protocol import Arm
from .report import Claim

TRAIN, TEST = 500, 300          # sentences per task: the first of the domain's training and test splits
VARIANTS = {"mos": {}, "mos, no merging": {"merge": 0.0}, "mos, no refinement": {"refine": False},
            "sequential adapter": {"sequential": True}, "prototypes": {"prototypes": True}}
LR, EPOCHS = 1e-3, 5
CLAIMS = {"F": "MOS forgets less than one adapter trained through the tasks in turn (final accuracy)",
          "P": "MOS beats a nearest-class-mean classifier on the frozen model",
          "A": "each of MOS's parts helps: merging the adapters; refining the retrieval"}


def order_of(seed):
    """The domains in the order seed `seed` streams them."""
    return [data.DOMAINS[i] for i in backend.host_generator([seed, 23]).permutation(len(data.DOMAINS)).tolist()]


def stream(seed, train=TRAIN, test=TEST):
    """[(domain, train texts, train labels, test texts, test labels)]: task t's classes are 2t (negative) and
    2t + 1 (positive)."""
    found = []
    for t, domain in enumerate(order_of(seed)):
        splits = data.load_domain(domain)
        tr, te = splits["train"], splits["test"]
        found.append((domain, tr.texts[:train], [2 * t + y for y in tr.labels[:train]],
                      te.texts[:test], [2 * t + y for y in te.labels[:test]]))
    return found


def run_request(request, folder):
    """In a worker: one arm on one seed's stream; results.json holds the accuracy after every task."""
    seed, variant = request["seed"], dict(request["variant"])
    backend.manual_seed(seed)
    backbone, tokenizer = load_pretrained(request["model"], max_length=64)
    model = peft.get_peft_model(SequenceClassifier(backbone, 2 * len(data.DOMAINS)), peft.AdapterConfig(bottleneck=16))
    prototypes = variant.pop("prototypes", False)
    learner = mos.Learner(model, tokenizer, lr=request["lr"], epochs=request["epochs"], seed=seed, **variant)
    tasks = stream(seed, request["train"], request["test"])
    result = {"seed": seed, "order": [t[0] for t in tasks], "after_task": [], "retrieval": []}
    seen_texts, seen_labels, seen_tasks, means = [], [], [], {}
    for t, (domain, texts, labels, test_texts, test_labels) in enumerate(tasks):
        seen_texts += test_texts
        seen_labels += test_labels
        seen_tasks += [t] * len(test_texts)
        if prototypes:          # no training: each class's mean feature, cosine to the nearest
            feats = learner.features(texts, None)
            for c in sorted(set(labels)):
                rows = feats[xp.asarray([i for i, y in enumerate(labels) if y == c])].mean(axis=0)
                means[c] = rows / xp.sqrt((rows * rows).sum())
            test_feats = learner.features(seen_texts, None)
            classes = sorted(means)
            centres = xp.stack([means[c] for c in classes])
            guesses = backend.to_numpy((test_feats @ centres.T).argmax(axis=-1)).tolist()
            accuracy = sum(classes[g] == y for g, y in zip(guesses, seen_labels)) / len(seen_labels)
            retrieved = sum(classes[g] // 2 == k for g, k in zip(guesses, seen_tasks)) / len(seen_tasks)
        else:
            learner.learn(texts, labels)
            accuracy, retrieved = learner.evaluate(seen_texts, seen_labels, seen_tasks)
        result["after_task"].append(accuracy)
        result["retrieval"].append(retrieved)
        print(f"after task {t} ({domain}): accuracy over {len(seen_labels)} test sentences of {2 * (t + 1)} classes "
              f"{accuracy:.4f}; task retrieved {retrieved:.4f}", flush=True)
    result["final"] = result["after_task"][-1]
    result["average_incremental"] = statistics.mean(result["after_task"])
    checkpoint.save_json(Path(folder) / "results.json", result)


def claims(runs):
    final = lambda arm: {s: 100 * r["final"] for s, r in runs.get(arm, {}).items()}
    rows = [Claim("F", "MOS >= one adapter trained in turn", "mos", "sequential adapter", final("mos"),
                  final("sequential adapter")),
            Claim("P", "MOS >= nearest class mean", "mos", "prototypes", final("mos"), final("prototypes")),
            Claim("A", "merging helps", "mos", "mos, no merging", final("mos"), final("mos, no merging")),
            Claim("A", "refinement helps", "mos", "mos, no refinement", final("mos"), final("mos, no refinement"))]
    return report.correct_for_many_claims([c.judge() for c in rows])


def compare_command(args):
    """`compare --suite mos`: every arm on seeds 0..S-1 (a run folder each, workers as the protocol's)."""
    out = Path(args.out)
    model = args.model or "minilm-l6"
    jobs = {(name, s): (protocol.run_folder(out, "final", Arm(name), s),
                        {"task": "nlu-mos", "seed": s, "variant": variant, "model": model, "lr": LR, "epochs": EPOCHS,
                         "train": TRAIN, "test": TEST})
            for name, variant in VARIANTS.items() for s in range(args.seeds)}
    done = protocol.run_all(list(jobs.values()), args.workers, run_request, args.report_only, protocol._label)
    runs = {}
    for (name, s), (folder, _) in jobs.items():
        if done[folder] is not None:
            runs.setdefault(name, {})[s] = done[folder]
    judged = claims(runs)
    lines = ["| arm | final accuracy (8 classes) | average incremental accuracy | task retrieved (final) | seeds |",
             "|---|---|---|---|---|"]
    for name in VARIANTS:
        found = runs.get(name, {})
        if found:
            cells = [stats.mean_std(r[key] if key != "retrieval" else r[key][-1] for r in found.values())
                     for key in ("final", "average_incremental", "retrieval")]
            lines.append(f"| {name} | " + " | ".join(f"{m:.4f} ± {sd:.4f}" for m, sd in cells) + f" | {len(found)} |")
    missing = [f"{name} seed {s}" for (name, s), (folder, _) in jobs.items() if done[folder] is None]
    text = "\n\n".join(part for part in [
        *report.opening(judged, CLAIMS, "docs/plans/mos.md", "Claims: paired differences of the final accuracy "
                        "over all eight classes, in points, 95% CI over seeds:"),
        f"Stream: the four sentiment domains in a seed's own order, {TRAIN} training sentences per task, {TEST} test "
        f"sentences per task; adapters of bottleneck 16 on frozen {model}, AdamW at {LR:g} for {EPOCHS} epochs per task; "
        f"mean ± std over seeds 0..{args.seeds - 1}.",
        "\n".join(lines), report.waiting_claims(judged),
        ("Not run yet (" + "; ".join(missing) + "): run the same command again.") if missing
        else "Every run of this comparison has finished."] if part)
    report.write(out, text, "results_mos.md", name="mos.md")
    checkpoint.save_json(out / "mos.json", {"claims": judged, "seeds": args.seeds})
    print(text)
