"""The e2e data-to-text comparison on the tiny GPT under the fair protocol (protocol.py).

    python3 -m tinymix compare --task e2e --out docs/experiments/e2e
    python3 -m tinymix train --task e2e --method lora

The official GPT-2 recipe (docs/adamix.md section 7): no gradient clipping, AdamW with weight decay 0.01,
label smoothing 0.1, consistency weight 100 over target tokens, M = 8 A-experts with B shared, identical
initial A-experts, dense expert updates; AdaMix trained 4x longer than LoRA. Arms: LoRA, the single
adapter, AdaMix-LoRA, AdaMix-adapter and full fine-tuning with their own learning rates at one budget;
AdaMix-LoRA's ablations and recipe checks with its rate; both AdaMix methods at 4x the steps. Scores:
BLEU on test (decoded with beam search after merging and folding), chosen on validation BLEU. Every run
also records its diagnostics (finetune.NLGConfig.diagnostics) to explain the gap between AdaMix and LoRA.
"""
import shutil
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

from ..store import checkpoint
from .. import decode, e2e, peft, plots
from ..e2e import finetune
from ..e2e.finetune import NLGConfig
from . import nlu, protocol, report, stats
from .protocol import Arm
from .report import Claim

GRID = (3e-4, 1e-3, 3e-3, 1e-2)
MAIN = ("lora", "adapter", "adamix-lora", "adamix", "full")
OFFICIAL = {"max_grad_norm": 0.0, "diagnostics": True}      # no clipping (NLGConfig's default too)
ABLATIONS = {"adamix-lora, no consistency": {"consistency_weight": 0.0},
             "adamix-lora, no sharing": {"sharing": "none"},
             "adamix-lora, 1 expert": {"num_experts": 1}, "adamix-lora, 2 experts": {"num_experts": 2},
             "adamix-lora, 4 experts": {"num_experts": 4},
             "adamix-lora, lazy expert updates": {"expert_updates": "lazy"},
             "adamix-lora, independent init": {"expert_init": "independent"},
             "adamix-lora, clipped at 1.0": {"max_grad_norm": 1.0}}
LONGER = 4
# To explain a gap by measurement: the consistency term with a learning rate searched for it too
EXPLAIN = {"adamix-lora, no consistency, own lr": {"consistency_weight": 0.0},
           "adamix-lora, consistency weight 1, own lr": {"consistency_weight": 1.0}}


def all_arms():
    arms = [Arm(m, {"method": m}) for m in MAIN]
    arms += [Arm(name, {"method": "adamix-lora", **o}, lr_from="adamix-lora") for name, o in ABLATIONS.items()]
    # AdaMix at the official ratio of steps, and the single modules at that budget too: do they still gain?
    arms += [Arm(f"{m}, {LONGER}x steps", {"method": m}, lr_from=m, budget=LONGER)
             for m in ("adamix-lora", "adamix", "lora", "adapter")]
    arms += [Arm(name, {"method": "adamix-lora", **o}) for name, o in EXPLAIN.items()]
    return arms


class DataToText:
    name = "e2e"

    def __init__(self, base):
        self.base = base                      # an NLGConfig with the command line's settings
        self.defaults = asdict(NLGConfig())   # for config fields newer than a finished run

    def request(self, arm, lr, seed, test):
        cfg = replace(self.base, **{**OFFICIAL, **arm.overrides}, seed=seed, lr=lr, test=test,
                      steps=round(self.base.steps * arm.budget))
        config = {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress")}
        return {"task": self.name, "config": config, "pretrained_weights": finetune.pretrained_weights_id(cfg.model)}

    @staticmethod
    def validation_score(result):
        return -1.0 if "diverged" in result else result["validation_bleu"]

    def space(self, arm):
        return protocol.recipe_space(arm, GRID, self.defaults)

    @staticmethod
    def run(request, folder):
        run_request(request, folder)


def run_request(request, folder):
    """In the worker: one run into `folder`. (A speed request measures decoding instead.)"""
    if request.get("speed"):
        checkpoint.save_json(folder / "results.json", decoding_speed(NLGConfig(**request["config"]), Path(request["run"])))
        return
    if finetune.pretrained_weights_id(request["config"]["model"]) != request["pretrained_weights"]:
        raise ValueError(f"the {request['config']['model']} weights changed since this run was asked for")
    finetune.train(NLGConfig(**request["config"], out=str(folder), progress=False))     # writes results.json


def decoding_speed(cfg, run, prompts=16, new_tokens=48):
    """Tokens/s of the merged, folded model of a finished run folder: greedy, batch 1, with and without
    the KV cache; beam search (cfg.beam_width beams) with and without it."""
    model, tokenizer = finetune.build_model(cfg)
    peft.merge(model)                                   # the saved adapter holds merged mixtures ...
    peft.load_adapter(model, run / "merged")
    peft.merge(model, fold_lora=True)                   # ... and the LoRA update is folded afresh
    encoder = finetune.Encoder(tokenizer, model.transformer.config.max_positions)
    test = e2e.make_splits(cfg.train_size, cfg.validation_size, cfg.test_size, cfg.data_seed)["test"]
    ids = [encoder.prompt(ex.mr) for ex in test[:prompts]]
    speed = {f"greedy_{name}": decode.tokens_per_second(model, ids, new_tokens, use_cache)
             for name, use_cache in (("cached", True), ("uncached", False))}
    for name, use_cache in (("cached", True), ("uncached", False)):
        started, tokens = time.perf_counter(), 0
        for p in ids[:4]:
            tokens += len(decode.beam_search(model, p, encoder.end_id, cfg.beam_width, cfg.max_new_tokens,
                                             cfg.length_penalty, cfg.no_repeat_ngram, use_cache).ids)
        speed[f"beam_{name}"] = tokens / (time.perf_counter() - started)
    return speed


# ---- the claims -----------------------------------------------------------------------------------------

def claims(runs):
    bleu = lambda arm: {s: r["bleu"] for s, r in runs.get(arm, {}).items()}
    found = nlu.longer_budget_claims(bleu, (("adamix-lora", "lora"), ("adamix", "adapter")))
    for mix in ("adamix-lora", "adamix"):
        found.append(Claim("2", "AdaMix >= full fine-tuning", mix, "full", bleu(mix), bleu("full")))
    for name, text in (("adamix-lora, no consistency", "the consistency loss helps"),
                       ("adamix-lora, no sharing", "sharing B helps")):
        found.append(Claim("4", text, "adamix-lora", name, bleu("adamix-lora"), bleu(name)))
    by_m = {1: bleu("adamix-lora, 1 expert"), 2: bleu("adamix-lora, 2 experts"), 4: bleu("adamix-lora, 4 experts"),
            8: bleu("adamix-lora")}
    gain = lambda a, b: {s: by_m[b][s] - by_m[a][s] for s in set(by_m[a]) & set(by_m[b])}
    found += [Claim("5", "returns diminish with more experts", "gain M 1->2", "gain M 2->4", gain(1, 2), gain(2, 4)),
              Claim("5", "returns diminish with more experts", "gain M 2->4", "gain M 4->8", gain(2, 4), gain(4, 8))]
    # The explain arms were added after LoRA's test results existed: exploratory, never a verdict.
    for name in EXPLAIN:
        found.append(Claim("G", "explaining the gap: this variant, at a rate searched for it, >= LoRA", name, "lora",
                           bleu(name), bleu("lora"), exploratory=True))
    no_term, weight_1 = EXPLAIN
    found.append(Claim("G", "explaining the gap: consistency weight 1 >= no consistency, each at its own rate",
                       weight_1, no_term, bleu(weight_1), bleu(no_term), exploratory=True))
    for name, text in (("adamix-lora, lazy expert updates", "dense expert updates >= lazy ones"),
                       ("adamix-lora, independent init", "identical initial A-experts >= independent ones"),
                       ("adamix-lora, clipped at 1.0", "no clipping (official) >= clipping at 1.0")):
        found.append(Claim("R", text, "adamix-lora", name, bleu("adamix-lora"), bleu(name)))
    return [c.judge() for c in found]


def inference_claims(runs):
    """Claim 3 on test loss (nats per target token, lower is better, so each side is negated): the
    merged model against random routing, expert 0 alone, and the best single expert."""
    found = []
    for mix in ("adamix-lora", "adamix"):
        modes = {s: r["test_loss_by_inference"] for s, r in runs.get(mix, {}).items() if "test_loss_by_inference" in r}
        merged = {s: -m["average"] for s, m in modes.items()}
        found += [Claim("3", "merging >= random routing", f"{mix} merged", "random routing", merged,
                        {s: -m["random"] for s, m in modes.items()}),
                  Claim("3", "merging ~ the best single expert", f"{mix} merged", "best expert alone", merged,
                        {s: -min(m["experts"]) for s, m in modes.items()}, "equivalent", 0.01),
                  Claim("3", "merging > fixed routing", f"{mix} merged", "expert 0 alone", merged,
                        {s: -m["experts"][0] for s, m in modes.items()})]
    return [c.judge() for c in found]


# ---- the command ---------------------------------------------------------------------------------------

def compare_command(args, base):
    """`compare --task e2e`: `base` is the NLGConfig of the command line's settings."""
    task = DataToText(base)
    arms, grid = protocol.settings(args, all_arms(), GRID)
    out = Path(args.out)
    chosen = protocol.learning_rates(task, arms, grid, args, out)
    runs, diverged, missing = protocol.final(task, arms, chosen, range(args.seeds), out, args.workers,
                                             report_only=args.report_only)
    speed = decoding_speed_of_runs(task, arms, chosen, runs, out, args.report_only)
    write_report(out, args, base, arms, chosen, runs, speed, report.status(chosen, arms, diverged, missing))


def decoding_speed_of_runs(task, arms, chosen, runs, out, report_only):
    """Decoding speed of the first final run that still has its merged weights (they are not committed
    with the results), measured in a worker process (one BLAS thread, as every run) and never reused.
    --report-only runs nothing: it keeps the speed the full run measured, if any."""
    if report_only:
        return checkpoint.load_json(out / "results.json").get("speed") if (out / "results.json").is_file() else None
    first = next(((a, s) for a in arms for s in sorted(runs.get(a.name, {}))
                  if (protocol.run_folder(out, "final", a, s) / "merged" / "adapter_config.json").is_file()), None)
    if first is None:
        if runs:
            print("decoding speed not measured: no final run has its merged weights (train one again to measure it)")
        return None
    arm, seed = first
    shutil.rmtree(out / "speed", ignore_errors=True)
    request = {"speed": True, "task": "e2e", "run": str(protocol.run_folder(out, "final", arm, seed)),
               "config": task.request(arm, chosen[arm.name]["lr"], seed, True)["config"]}
    speed = protocol.run_all([(out / "speed", request)], workers=2, run=run_request)[out / "speed"]
    return {**speed, "run": f"{arm.name}, seed {seed}"}


def arms_table(arms, chosen, runs):
    lines = ["| arm | lr | seeds | BLEU (all refs) | BLEU (held-out families) | slot error % | validation BLEU | "
             "best step (per seed) | trainable (training) | trainable (merged) | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        found = list(runs.get(arm.name, {}).values())
        if not found:
            continue
        pm = lambda key: "{:.1f} ± {:.1f}".format(*stats.mean_std(r[key] for r in found))
        best = ", ".join(f"{best_step(r)}/{r['config']['steps']}" for r in found)
        lines.append(f"| {arm.name} | {chosen[arm.name]['lr']:g} | {len(found)} | {pm('bleu')} | {pm('bleu_held_out')} | "
                     f"{pm('slot_error_rate')} | {pm('validation_bleu')} | {best} | {found[0]['trainable_parameters']:,d} | "
                     f"{found[0]['merged_parameters']:,d} | {statistics.mean(r['train_seconds'] for r in found):.0f} |")
    return "\n".join(lines)


def best_step(result):
    """The step whose weights a run kept: the lowest validation loss of its history (runs made before
    results recorded it say it only through the history)."""
    return result.get("best_step") or min(result["history"], key=lambda h: h["validation_loss"])["step"]


def gap_tables(runs):
    """Why AdaMix trails (or not): per arm, the consistency term's gradient norm against the task term's
    (mean over the run's evaluations and seeds), the experts' spread and distance moved, and the test
    loss of the merged model, random routing, and the single experts."""
    lines = ["| arm | task gradient norm | consistency gradient norm (x weight) | ratio | step norm before "
             "clipping | merged test loss | random routing | single experts (best / mean / worst) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, found in runs.items():
        history = [h for r in found.values() for h in r["history"] if "task_gradient_norm" in h]
        if not history or not name.startswith("adamix"):
            continue
        mean = lambda key: statistics.mean(h[key] for h in history)
        modes = [r["test_loss_by_inference"] for r in found.values() if "test_loss_by_inference" in r]
        loss = lambda f: statistics.mean(f(m) for m in modes) if modes else float("nan")
        lines.append(f"| {name} | {mean('task_gradient_norm'):.3f} | {mean('consistency_gradient_norm'):.3f} | "
                     f"{mean('consistency_gradient_norm') / mean('task_gradient_norm'):.2f} | {mean('gradient_norm'):.3f} | "
                     f"{loss(lambda m: m['average']):.4f} | {loss(lambda m: m['random']):.4f} | "
                     f"{loss(lambda m: min(m['experts'])):.4f} / {loss(lambda m: statistics.mean(m['experts'])):.4f} / "
                     f"{loss(lambda m: max(m['experts'])):.4f} |")
    return "\n".join(lines)


def write_report(out, args, base, arms, chosen, runs, speed, status):
    judged, judged_3 = claims(runs), inference_claims(runs)
    report.correct_for_many_claims(judged, judged_3)
    parts = [report.verdict_paragraph(judged + judged_3),
             report.terms("arm", "paired difference", "verdict", "p (Holm)", "rows 1-6", "rows B", "rows G", "exploratory", "rows R", "merged",
                          "spread", "moved"),
             "Claims and checks: paired differences of test BLEU (merged models), 95% CI over seeds:",
             report.claims_table(judged),
             "Claim 3 on test loss (nats per target token, negated so that higher is better; random and fixed "
             "routing are not decoded):", report.claims_table(judged_3, digits=4),
             "Claim 6 as measured (train time is wall time under the machine's load at the time; the decoding "
             "speed of a merged model follows the routing table):",
             report.cost_table((("adamix-lora", "lora"), ("adamix", "adapter")), runs, "train_seconds"),
             f"Budget: {base.steps} steps of batch {base.batch_size} over {base.train_size} training MRs "
             f"(the {LONGER}x arms: {LONGER * base.steps}); no gradient clipping; test: {base.test_size} MRs "
             f"with unseen slot combinations, beam search (width {base.beam_width}) after merging and folding; "
             f"mean ± std over seeds 0..{args.seeds - 1}.",
             "Learning rates (validation BLEU, mean over tuning seeds "
             f"{', '.join(str(s) for s in range(1000, 1000 + args.tuning_seeds))}; test never read):",
             report.tuning_table(chosen), arms_table(arms, chosen, runs),
             "The gap, measured (means over each run's evaluations and over seeds):", gap_tables(runs),
             "Routing:", report.routing_table({a: r for a, r in runs.items() if a.startswith("adamix")})]
    if speed:
        parts.append(f"Decoding speed of a merged model ({speed.get('run', 'the first final run')}), tokens/s: "
                     f"greedy (batch 1) {speed['greedy_cached']:.0f} with "
                     f"the KV cache, {speed['greedy_uncached']:.0f} without; beam search {speed['beam_cached']:.0f} "
                     f"with, {speed['beam_uncached']:.0f} without.")
    parts += [part for part in (report.waiting_claims(judged + judged_3), status) if part]
    text = "\n\n".join(parts)
    report.write(out, text, "results_e2e.md")
    checkpoint.save_json(out / "results.json", {"config": asdict(base), "chosen": chosen, "claims": judged,
                                                "inference_claims": judged_3, "seeds": args.seeds, "speed": speed})
    print(text)
    plots.forest(judged, out / "claims_forest.png", unit="BLEU")
    curves = {name: ([h["step"] for h in found[0]["history"]],
                     [statistics.mean(r["history"][i]["validation_loss"] for r in found.values())
                      for i in range(len(found[0]["history"]))])
              for name, found in runs.items() if (name in MAIN or "steps" in name) and 0 in found}
    plots.validation_curves(curves, out / "validation_curves.png", "step", "validation loss (mean over seeds)")
    plots.expert_diagnostics({name: found for name, found in runs.items() if name in ("adamix-lora", "adamix")},
                             out / "expert_diagnostics.png")
