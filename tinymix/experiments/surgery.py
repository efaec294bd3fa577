"""Model Surgery on the tiny GPT: does editing 95 FFN rows along a probe's direction change a behaviour
(writing a low customer rating rather than a high one) and keep the rest? The plan, fixed before any
measurement: docs/plans/surgery.md. The surgery itself: tinymix/surgery.py.

    python3 -m tinymix compare --task e2e --suite surgery --out docs/experiments/surgery

Per seed (no training of the model: a probe, a choice of rows, an edit): seed-S/results.json. The report
reads those files, so `--report-only` on a fresh clone rebuilds the page from them.
"""
import math
from pathlib import Path

from .. import backend, e2e, surgery
from ..backend import xp
from ..e2e import pretrain
from ..pretrained import TINY_GPT_DIR, load_gpt
from ..store import checkpoint
from .. import functional as F
from ..tensor import Tensor, no_grad
from ..transformer import LanguageModel
from . import report, stats
from .report import Claim

LOW = ("low customer rating", "poorly rated", "1 out of 5")          # the behaviour ...
HIGH = ("high customer rating", "highly rated", "5 out of 5")        # ... and the phrase it competes with
RATIOS = (0.25, 0.5, 1.0, 2.0, 4.0)     # ||alpha v|| / mean norm of the chosen rows, tried on validation
LOSS_BUDGET = 0.05                      # nats: the validation LM loss may rise by at most this much
MARGIN = 0.05                           # nats: "keeps general ability" = within this of the loss before
PROBE_TEXTS, PROMPTS = 400, {"validation": 200, "test": 300}
CLAIMS = {"S": "surgery lowers the low-rating preference (Model Surgery changes the behaviour)",
          "K": f"... and keeps the LM loss on held-out text (within ±{MARGIN} nats)",
          "R": "the chosen rows matter: rows chosen at random, edited the same way, change it less"}


def probe_texts(count, seed, data_seed=0):
    """`count` restaurant texts with a low rating (label 1) and `count` with a high one (label 0), one
    description each, from the training combinations in the training families (as the pretraining text)."""
    texts, labels, batch = {0: [], 1: []}, None, 0
    while min(len(texts[0]), len(texts[1])) < count:
        for ex in e2e.domain_sentences(2000, "train", tuple(e2e.TRAIN_FAMILIES), seed * 1000 + batch, data_seed):
            value = ex.mr.get("customer rating")
            label = 1 if value in ("low", "1 out of 5") else 0 if value in ("high", "5 out of 5") else None
            if label is not None and len(texts[label]) < count:
                texts[label].append(ex.references[0])
        batch += 1
    labels = [1] * count + [0] * count
    return texts[1] + texts[0], labels


def rating_prompts(split, count, seed, data_seed=0):
    """[(prompt, low phrase, high phrase)]: texts from MRs of the e2e `split`'s combinations with a low or
    high rating, in any template family, each cut just before its rating phrase."""
    owner = e2e.combination_splits(data_seed)
    rng = backend.host_generator([data_seed, 7, seed, ("validation", "test").index(split)])
    values = ("low", "high", "1 out of 5", "5 out of 5")
    found = []
    while len(found) < count:
        mr = e2e.sample_mr(rng)
        if owner[e2e.combination(mr)] != split:
            continue
        mr["customer rating"] = values[len(found) % len(values)]
        family = list(e2e.FAMILIES)[int(rng.integers(len(e2e.FAMILIES)))]
        text = e2e.realise(mr, family, rng)
        lowered = text.lower()
        for low, high in zip(LOW, HIGH):
            for phrase in (low, high):
                at = lowered.find(phrase)
                if at > 0:
                    said = text[at:at + len(phrase)]
                    case = (lambda p: p[:1].upper() + p[1:]) if said[:1].isupper() else (lambda p: p)
                    found.append((text[:at].rstrip(), case(low), case(high)))
                    break
            else:
                continue
            break
    return found


def continuation_logprob(model, tokenizer, prompt, continuation):
    """log p(continuation | prompt) under the model, the continuation after one space."""
    head, full = tokenizer.encode(prompt), tokenizer.encode(prompt + " " + continuation)
    if full[:len(head)] != head:
        raise ValueError(f"the prompt {prompt!r} does not tokenise as a prefix of its continuation")
    with no_grad():
        logits = model(backend.to_numpy([full]).astype("int64")).data[0]                    # (T, V)
    # the positions that predict the continuation
    logp = backend.to_numpy(F.log_softmax(Tensor(logits[len(head) - 1:len(full) - 1])).data)
    targets = full[len(head):]
    return float(sum(float(logp[i, t]) for i, t in enumerate(targets)))


def low_preference(model, tokenizer, prompts):
    """The mean over prompts of p(low) / (p(low) + p(high))."""
    model.eval()
    shares = []
    for prompt, low, high in prompts:
        a, b = continuation_logprob(model, tokenizer, prompt, low), continuation_logprob(model, tokenizer, prompt, high)
        shares.append(1.0 / (1.0 + math.exp(b - a)))
    return sum(shares) / len(shares)


def held_out_windows(tokenizer, T):
    """{part: {name: windows}}: the held-out restaurant text (held-out families) and held-out plays, each
    stream cut in two, its first half for validation and its second for test."""
    corpus = pretrain.pretraining_corpus(e2e_texts=0)["validation"]
    found = {"validation": {}, "test": {}}
    for name, texts in corpus.items():
        stream = pretrain.token_stream(tokenizer, texts)
        half = len(stream) // 2
        found["validation"][name] = pretrain.fixed_windows(stream[:half], 64, T + 1)
        found["test"][name] = pretrain.fixed_windows(stream[half:], 64, T + 1)
    return found


def losses(model, windows):
    return {name: pretrain.evaluate(model, w) for name, w in windows.items()}


def run_seed(seed, folder=TINY_GPT_DIR):
    """Every measurement of one seed (docs/plans/surgery.md), as a dict for seed-S/results.json."""
    backbone, tokenizer = load_gpt(folder)
    model = LanguageModel(backbone)
    model.eval()
    windows = held_out_windows(tokenizer, backbone.config.max_positions)
    prompts = {part: rating_prompts(part, n, seed) for part, n in PROMPTS.items()}
    texts, labels = probe_texts(PROBE_TEXTS, 100 + seed)
    held_texts, held_labels = probe_texts(100, 200 + seed)
    probe = surgery.train_probe(surgery.pooled_states(model, tokenizer, texts), labels, seed=seed)
    v = probe["direction"]
    held_accuracy = surgery.probe_accuracy(probe["head"], surgery.pooled_states(model, tokenizer, held_texts), held_labels)
    rows = surgery.select_rows(model, v)
    before = {"validation": low_preference(model, tokenizer, prompts["validation"]),
              "loss": losses(model, windows["validation"])}
    tried = []
    for r in RATIOS:
        with surgery.operated(model, rows, surgery.alpha_for(model, rows, v, r) * v):
            tried.append({"r": r, "preference": low_preference(model, tokenizer, prompts["validation"]),
                          "restaurant_loss": losses(model, windows["validation"])["e2e_held_out"]})
    allowed = [t for t in tried if t["restaurant_loss"] - before["loss"]["e2e_held_out"] <= LOSS_BUDGET]
    chosen = min(allowed, key=lambda t: (t["preference"], t["r"]))["r"] if allowed else 0.0
    result = {"seed": seed, "model": str(folder), "rows": len(rows), "layers_of_rows": [layer for layer, _ in rows],
              "probe_accuracy": probe["accuracy"], "probe_held_out_accuracy": held_accuracy,
              "validation": {"before": before["validation"], "tried": tried}, "r": chosen,
              "test_before": {"preference": low_preference(model, tokenizer, prompts["test"]),
                              "loss": losses(model, windows["test"])}}
    step = surgery.alpha_for(model, rows, v, chosen) * v if chosen else xp.zeros_like(v)
    with surgery.operated(model, rows, step):
        result["test_after"] = {"preference": low_preference(model, tokenizer, prompts["test"]),
                                "loss": losses(model, windows["test"])}
    rng = backend.host_generator([seed, 11])
    total = sum(linear.weight.shape[0] for linear in surgery.ffn_rows(model))
    per_layer = surgery.ffn_rows(model)[0].weight.shape[0]
    random_rows = [(int(i) // per_layer, int(i) % per_layer) for i in rng.permutation(total)[:len(rows)].tolist()]
    with surgery.operated(model, random_rows, step):
        result["test_random_rows"] = {"preference": low_preference(model, tokenizer, prompts["test"])}
    return result


def claims(results):
    per = lambda f: {r["seed"]: f(r) for r in results}
    rows = [Claim("S", "surgery lowers the low-rating preference", "before", "after surgery",
                  per(lambda r: 100 * r["test_before"]["preference"]), per(lambda r: 100 * r["test_after"]["preference"])),
            Claim("K", "LM loss on held-out restaurant text kept", "after surgery", "before",
                  per(lambda r: -r["test_after"]["loss"]["e2e_held_out"]), per(lambda r: -r["test_before"]["loss"]["e2e_held_out"]),
                  "equivalent", MARGIN),
            Claim("K", "LM loss on held-out Shakespeare kept", "after surgery", "before",
                  per(lambda r: -r["test_after"]["loss"]["shakespeare"]), per(lambda r: -r["test_before"]["loss"]["shakespeare"]),
                  "equivalent", MARGIN),
            Claim("R", "random rows change the preference less", "after random rows", "after surgery",
                  per(lambda r: 100 * r["test_random_rows"]["preference"]), per(lambda r: 100 * r["test_after"]["preference"]))]
    return report.correct_for_many_claims([c.judge() for c in rows])


def compare_command(args, base):
    """`compare --task e2e --suite surgery`: seeds 0..S-1, each in its own seed-S/results.json."""
    out = Path(args.out)
    results = []
    for seed in range(args.seeds):
        path = out / f"seed-{seed}" / "results.json"
        if not path.is_file() and not args.report_only:
            print(f"seed {seed}: probe, rows, the choice of r on validation, test", flush=True)
            checkpoint.save_json(path, run_seed(seed))
        if path.is_file():
            results.append(checkpoint.load_json(path))
    judged = claims(results)
    mean = lambda f: stats.mean_std(f(r) for r in results) if results else (float("nan"), float("nan"))
    lines = ["| measured on test | mean ± std over seeds |", "|---|---|"]
    for name, f in (("low-rating preference, before", lambda r: r["test_before"]["preference"]),
                    ("... after surgery", lambda r: r["test_after"]["preference"]),
                    ("... after the same edit of random rows", lambda r: r["test_random_rows"]["preference"]),
                    ("LM loss, held-out restaurant text, before", lambda r: r["test_before"]["loss"]["e2e_held_out"]),
                    ("... after", lambda r: r["test_after"]["loss"]["e2e_held_out"]),
                    ("LM loss, held-out Shakespeare, before", lambda r: r["test_before"]["loss"]["shakespeare"]),
                    ("... after", lambda r: r["test_after"]["loss"]["shakespeare"]),
                    ("probe accuracy on held-out texts", lambda r: r["probe_held_out_accuracy"]),
                    ("r chosen on validation", lambda r: r["r"])):
        m, s = mean(f)
        lines.append(f"| {name} | {m:.4f} ± {s:.4f} |")
    text = "\n\n".join(part for part in [
        *report.opening(judged, CLAIMS, "docs/plans/surgery.md", "Claims: paired differences over seeds (preference "
                        "in points; LM loss in nats, negated so that higher is better), 95% CI:", digits=3),
        f"The tiny GPT v1; {results[0]['rows'] if results else 95} FFN input rows edited of 2,048; the probe on "
        f"mean-pooled final hidden states of {2 * PROBE_TEXTS} texts; r from {', '.join(map(str, RATIOS))} chosen on "
        f"{PROMPTS['validation']} validation prompts under a {LOSS_BUDGET}-nat validation loss budget; "
        f"{PROMPTS['test']} test prompts; seeds 0..{args.seeds - 1}.",
        "\n".join(lines), report.waiting_claims(judged),
        "Every run of this comparison has finished." if len(results) == args.seeds
        else f"Not run yet ({args.seeds - len(results)} seed(s)): run the command again."] if part)
    report.write(out, text, "results_surgery.md", name="surgery.md")
    checkpoint.save_json(out / "surgery.json", {"claims": judged, "seeds": args.seeds})
    print(text)
