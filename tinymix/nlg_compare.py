"""The e2e comparison and the command line of the data-to-text task.

    python -m tinymix compare --task e2e --seeds 3 --out runs/compare_e2e
    python -m tinymix train --task e2e --method lora

`compare` trains every method x seed with one budget (nlg.train, two worker processes), then writes a
Markdown table (BLEU against all references and against the held-out families, slot errors, validation
loss, parameters before and after merging, times), sample outputs and the decoding speed with and
without the KV cache. A finished run's results.json is read back instead of trained again.
"""
import argparse
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

from . import checkpoint, decode, e2e, nlg, peft
from .nlg import ALIASES, LABELS, NLGConfig, build_model, train

COMPARE_METHODS = ("lora", "adamix-lora", "adamix", "full")


def finished(cfg):
    """True if cfg.out holds a finished run made from the same pretrained weights; a ValueError if it
    holds one made from other weights (say, before the tiny GPT was pretrained again)."""
    saved = Path(cfg.out) / "results.json"
    if not saved.is_file():
        return False
    if checkpoint.load_json(saved).get("pretrained_weights") != nlg.pretrained_weights_id(cfg.model):
        raise ValueError(f"{saved} was trained from other {cfg.model} weights than the ones there now: "
                         f"delete {cfg.out} (or the whole comparison folder) or choose another --out")
    return True


def run_one(cfg):
    """One training run in its own folder; a finished run's results.json is read back instead."""
    if not finished(cfg):
        train(cfg)
    return checkpoint.load_json(Path(cfg.out) / "results.json")


def _worker(configs):
    """A worker process: run its share of the runs, one after the other."""
    for cfg in configs:
        result = run_one(cfg)
        print(f"{LABELS[cfg.method]} seed {cfg.seed}: BLEU {result['bleu']:.1f}, slot errors "
              f"{result['slot_error_rate']:.1f}% ({result['seconds']:.0f} s)", flush=True)


def _in_one_thread_process(fn, *args):
    """fn(*args) in a fresh process with one BLAS thread (see run_all), for timings."""
    import multiprocessing
    import os
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"   # read by the new process
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def run_all(configs, workers):
    """Run every config, split over `workers` processes (each with one BLAS thread: two small-matrix
    jobs on two cores run faster than one job whose BLAS threads wait for each other)."""
    pending = [c for c in configs if not finished(c)]
    if workers <= 1 or len(pending) <= 1:
        _worker(pending)
    else:
        import multiprocessing
        import os
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"   # read by the new processes
        shares = [pending[i::workers] for i in range(workers)]
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_worker, args=(share,)) for share in shares if share]
        for p in processes:
            p.start()
        for p in processes:
            p.join()
        failed = [p.exitcode for p in processes if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} worker process(es) failed (exit codes {failed}); finished runs "
                               "are kept: run the same command again to redo only the missing ones")
    return [run_one(c) for c in configs]


def summarise(method, runs):
    mean_std = lambda xs: (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)
    return {"method": method, "label": LABELS[method], "seeds": len(runs),
            "bleu": mean_std([r["bleu"] for r in runs]),
            "bleu_held_out": mean_std([r["bleu_held_out"] for r in runs]),
            "slot_error_rate": mean_std([r["slot_error_rate"] for r in runs]),
            "validation_loss": statistics.mean(r["best_validation_loss"] for r in runs),
            "merge_gap": max(abs(r["test_loss_merged"] - r["test_loss_unmerged"]) for r in runs),
            "trainable_parameters": runs[0]["trainable_parameters"],
            "merged_parameters": runs[0]["merged_parameters"], "all_parameters": runs[0]["all_parameters"],
            "train_seconds": statistics.mean(r["train_seconds"] for r in runs),
            "decode_seconds": statistics.mean(r["decode_seconds"] for r in runs)}


def markdown_table(rows):
    lines = ["| method | seeds | BLEU (all refs) | BLEU (held-out families) | slot error % | validation loss | "
             "trainable (training) | trainable (merged) | train s | decode s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pm = lambda pair, digits=1: f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"
        lines.append(f"| {r['label']} | {r['seeds']} | {pm(r['bleu'])} | {pm(r['bleu_held_out'])} | "
                     f"{pm(r['slot_error_rate'])} | {r['validation_loss']:.3f} | {r['trainable_parameters']:,d} | "
                     f"{r['merged_parameters']:,d} | {r['train_seconds']:.0f} | {r['decode_seconds']:.0f} |")
    return "\n".join(lines)


def decoding_speed(cfg, prompts=16, new_tokens=48):
    """Tokens/s of the merged, folded model of a finished run (cfg.out): greedy, batch 1, with and
    without the KV cache; beam search (cfg.beam_width beams) with and without it."""
    model, tokenizer = build_model(cfg)
    peft.merge(model)                                   # the saved adapter holds merged mixtures ...
    peft.load_adapter(model, Path(cfg.out) / "merged")
    peft.merge(model, fold_lora=True)                   # ... and the LoRA update is folded afresh
    encoder = nlg.Encoder(tokenizer, model.transformer.config.max_positions)
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


def compare_command(args):
    """Every method x seeds with one budget; a Markdown table, sample outputs and decoding speed."""
    started = time.perf_counter()
    base = nlg.config_from_args(args, NLGConfig(progress=False))
    methods = [ALIASES.get(m, m) for m in args.methods.split(",") if m]
    configs = [replace(base, method=m, seed=s, out=str(Path(args.out) / m / f"seed{s}"))
               for m in methods for s in range(args.seeds)]
    runs = run_all(configs, args.workers)
    by_method = {m: [r for c, r in zip(configs, runs) if c.method == m] for m in methods}
    rows = [summarise(m, found) for m, found in by_method.items()]
    speed = _in_one_thread_process(decoding_speed, configs[0]) if args.workers > 1 else decoding_speed(configs[0])
    minutes = (time.perf_counter() - started) / 60
    lines = [f"Budget for every run: {base.steps} steps of batch {base.batch_size} over {base.train_size} "
             f"training MRs; test: {base.test_size} MRs with unseen slot combinations, decoded with "
             + (f"beam search (width {base.beam_width}, length penalty {base.length_penalty}, no repeated "
                f"{base.no_repeat_ngram}-gram)" if base.decoding == "beam" else "greedy search")
             + f"; mean ± std over {args.seeds} seeds. Merged and folded models.", "", markdown_table(rows), "",
             "Decoding speed of a merged model, tokens/s: greedy (batch 1) "
             f"{speed['greedy_cached']:.0f} with the KV cache, {speed['greedy_uncached']:.0f} without; "
             f"beam search {speed['beam_cached']:.0f} with, {speed['beam_uncached']:.0f} without.", "",
             f"Whole comparison: {minutes:.1f} min with {args.workers} worker process(es).", "",
             "Sample outputs (seed 0, the first test MRs):", ""]
    for i in range(args.samples):
        first = by_method[methods[0]][0]["samples"][i]
        shown = lambda text: "`" + (text.replace("\n", "\\n") or " ") + "`"     # newlines visible
        lines += [f"- {shown(first['prompt'])}", f"  - reference: {first['reference']}"]
        lines += [f"  - {LABELS[m]}: {shown(by_method[m][0]['samples'][i]['output'])}" for m in methods]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    checkpoint.save_json(out / "results.json", {"rows": rows, "speed": speed, "minutes": minutes,
                                                "config": asdict(base), "seeds": args.seeds})
    (out / "results.md").write_text(text)
    print(text)


# ---- the command line: `train --task e2e` and `compare --task e2e` ---------------------------------

def parse_args(argv):
    """`train --task e2e ...` or `compare --task e2e ...`: the data-to-text task's own flags."""
    parser = argparse.ArgumentParser(prog="python -m tinymix", description=nlg.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    p = commands.add_parser("train", help="fine-tune the tiny GPT on the e2e task, decode and score")
    p.add_argument("--task", choices=["e2e"], required=True)
    nlg.add_config_flags(p)
    p.set_defaults(run=nlg.train_command)
    p = commands.add_parser("compare", help="methods x seeds on the e2e task: table, samples, speed")
    p.add_argument("--task", choices=["e2e"], required=True)
    p.add_argument("--methods", default=",".join(COMPARE_METHODS), help="(default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="(default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default: %(default)s)")
    p.add_argument("--samples", type=int, default=4, help="sample outputs shown (default: %(default)s)")
    p.add_argument("--out", default="runs/compare_e2e", help="(default: %(default)s)")
    nlg.add_config_flags(p, skip=("method", "seed", "out", "progress"))
    p.set_defaults(run=compare_command)
    return parser.parse_args(argv)


def is_e2e(argv):
    """True for `train ... --task e2e` and `compare ... --task e2e` (also --task=e2e)."""
    if not argv or argv[0] not in ("train", "compare"):
        return False
    return any(a == "--task=e2e" or (a == "--task" and nxt == "e2e") for a, nxt in zip(argv, argv[1:] + [""]))
