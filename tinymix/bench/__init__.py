"""`python3 -m tinymix bench`: how fast tinymix trains and serves MiniLM with an AdaMix-adapter, measured
against the machine's own limits and, where it is installed, PyTorch. Every number it reports is a
ratio of two timings taken in the same run, interleaved, so a busy machine slows both sides alike.

    python3 -m tinymix bench [--random-init] [--quick] [--batches 4] [--rounds 3] [--no-torch]

The workload: AdaMix-adapter (M = 4 experts, bottleneck 16, shared up-projection) on MiniLM-L6,
batches of 32 movie-review sentences grouped by length as training groups them, each padded only to
its own longest sentence. With --random-init (the default when the weights are not cached) the same
architecture starts from random weights: speed does not depend on the values. Without the sentences
(or the tokenizer) the lengths are drawn to match theirs (mean 27 tokens, sd 11).

1. Training step (forward, backward, clipping, AdamW) with and without the consistency pass. On a
   GPU one more step runs with CuPy's device-synchronisation detector on: the step must not wait.
2. Inference: AdaMix merged into one adapter vs a single adapter; unmerged "average" and "random".
   A third variant recomputes pass 2 during backward (--low-memory in training): same gradients.
3. Peak memory of AdaMix training (two passes, with and without recomputing pass 2; and one pass,
   without consistency) vs full fine-tuning
   (one pass): everything a training run allocates
   (weights, gradients, optimizer state, activations), from tracemalloc, which NumPy reports to; on a
   GPU, the bytes CuPy's memory pool holds (it keeps freed blocks, so it holds the high-water mark).
4. GFLOP/s of the (merged) model's forward against a plain matmul of its FFN's size on the same rows:
   the machine's practical limit.
5. Autograd: the price of the graph on a tiny op, and on a big matmul.
6. PyTorch eager, the same model and step written by hand (torch_twin.py), on the same batches.
7. A profile: each op's share of the merged model's eval forward and of the AdaMix training step's
   forward and backward (op_profile.py).

On a GPU (TINYMIX_BACKEND=cupy) each timed call ends by waiting for the device; the steps themselves
read nothing back to the host.
"""
import os
import statistics
import time

from .. import backend
from ..store import checkpoint
from . import op_profile
from .measure import _blas, autograd, forward_throughput, inference, memory, profile, training
from .workload import blas_threads, clock_name, make_workload


# ---- the run and its report ------------------------------------------------------------------------------

def run(quick=False, random_init=None, num_batches=4, rounds=3, use_torch=True, log=print):
    """Every measurement, as a dict (`report` turns it into text). `log` hears progress."""
    started = time.perf_counter()
    workload = make_workload(quick, random_init, num_batches)
    lengths = [b[0].shape[1] for b in workload.batches]
    real = sum(int(b[1].sum()) for b in workload.batches) / sum(len(b[1]) for b in workload.batches)
    results = {"backend": backend.name, "workload": workload.description, "threads": blas_threads(),
               "batch_size": len(workload.batches[0][0]), "padded_lengths": lengths,
               "mean_sentence_length": real, "rounds": rounds, "load_before": os.getloadavg(), "blas": _blas(),
               "clock": clock_name()}
    log(f"measuring: {workload.description}; batches padded to {lengths} tokens")
    log("1/6 training steps ...")
    results["training"] = training(workload, rounds, use_torch)
    log("2/6 inference ...")
    results["inference"] = inference(workload, rounds + 2)
    log("3/6 peak memory ...")
    results["memory"] = memory(workload)
    log("4/6 forward GFLOP/s ...")
    results["forward"] = forward_throughput(workload, rounds + 2)
    log("5/6 autograd overhead ...")
    results["autograd"] = autograd(quick)
    log("6/6 profile ...")
    results["profile"] = profile(workload, rounds)
    results["load_after"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started
    return results


def report(r):
    """The results as a Markdown table: each ratio, what it compares, and the target where there is one."""
    t, i, m, f, a = r["training"], r["inference"], r["memory"], r["forward"], r["autograd"]
    median_ms = lambda values: 1000 * statistics.median(values)
    per_step = lambda name: median_ms(t["seconds"][name]) / len(r["padded_lengths"])
    per_batch = lambda name: median_ms(i["seconds"][name]) / len(r["padded_lengths"])
    threads = r["threads"] or "the library's default"
    lines = [f"tinymix bench: backend {r['backend']}, BLAS threads {threads}; {r['workload']}",
             f"batch {r['batch_size']}, {len(r['padded_lengths'])} batches padded to {r['padded_lengths']} tokens "
             f"({r['mean_sentence_length']:.1f} real tokens per sentence); medians of {r['rounds']} interleaved "
             f"rounds; load average {r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after; "
             f"{r['seconds']:.0f} s in all",
             f"BLAS: {r.get('blas', 'not recorded')}; timed by {r.get('clock', 'wall time')}",
             "",
             "| measure | measured | ratio | target |",
             "|---|---|---:|---|"]

    def row(measure, measured, value, target=""):
        lines.append(f"| {measure} | {measured} | {value} | {target} |")

    row("training step without / with the consistency pass",
        f"{per_step('one pass'):.0f} ms / {per_step('two passes'):.0f} ms", f"{t['one_pass_over_two_passes']:.2f}",
        "about 0.5 (one pass of two)")
    row("training step: AdaMix low memory (recomputing pass 2) / two passes",
        f"{per_step('two passes, low memory'):.0f} ms", f"{t['low_memory_over_two_passes']:.2f}",
        "about 1.2 (one more forward)")
    row("inference: AdaMix merged / single adapter",
        f"{per_batch('AdaMix merged'):.1f} ms / {per_batch('single adapter'):.1f} ms per batch",
        f"{i['merged_over_single']:.2f}", "1.00 +- 0.05" + _verdict(abs(i["merged_over_single"] - 1) <= 0.05))
    row("inference: AdaMix unmerged, average / single adapter",
        f"{per_batch('AdaMix average'):.1f} ms", f"{i['average_over_single']:.2f}", "")
    row("inference: AdaMix unmerged, random routing / single adapter",
        f"{per_batch('AdaMix random'):.1f} ms", f"{i['random_over_single']:.2f}", "")
    row("peak training memory: AdaMix (two passes) / full fine-tuning",
        f"{_mib(m['adamix_bytes'])} / {_mib(m['full_bytes'])}", f"{m['adamix_over_full']:.2f}",
        "<= 0.60" + _verdict(m["adamix_over_full"] <= 0.60))
    row("peak training memory: AdaMix low memory (two passes, pass 2 recomputed) / full fine-tuning",
        _mib(m["low_memory_bytes"]), f"{m['low_memory_over_full']:.2f}",
        "<= 0.60" + _verdict(m["low_memory_over_full"] <= 0.60))
    row("peak training memory: AdaMix without consistency (one pass) / full fine-tuning",
        _mib(m["one_pass_bytes"]), f"{m['one_pass_over_full']:.2f}", "")
    row("forward GFLOP/s: model / plain matmul (FFN-sized)",
        f"{f['model_gflops']:.1f} / {f['matmul_gflops']:.1f} GFLOP/s", f"{f['model_over_matmul']:.2f}",
        ">= 0.80" + _verdict(f["model_over_matmul"] >= 0.80))
    row("autograd: tracked (8, 8) add, forward + backward / raw add",
        f"{a['tracked_op_seconds'] * 1e6:.1f} us / {a['raw_op_seconds'] * 1e6:.1f} us "
        f"({a['overhead_seconds'] * 1e6:.1f} us per op)", f"{a['tracked_op_seconds'] / a['raw_op_seconds']:.1f}", "")
    row("autograd: tracked matmul, forward + backward / raw xp", "", f"{a['matmul_tracked_over_raw']:.2f}", "about 1")
    row("host synchronisation in a training step", t["host_synchronisation"], "-", "none")
    if t["speed_vs_torch"] is None:
        row("training step speed: tinymix / PyTorch eager", f"PyTorch {t['torch']}", "-", "")
    else:
        target = 0.7 if r["backend"] == "cupy" else 1.2
        for name, speed in t["speed_vs_torch"].items():
            row(f"training step speed: tinymix / {name}", f"{per_step(name):.0f} ms (PyTorch) / "
                f"{per_step('two passes'):.0f} ms (tinymix) per step", f"{speed:.2f}",
                f">= {target:.1f}" + _verdict(speed >= target))
        lines += ["", f"PyTorch: {t['torch']}. Its twin of the model computes the same function: largest "
                      f"|logit difference| from tinymix in eval mode {t['torch_max_logit_difference']:.1e}."]
    if "profile" in r:
        lines += ["", f"Profile ({r.get('clock', 'wall time')}): ms per training step (two passes) and per "
                  "batch (inference), and each row's share of its pass.", ""]
        lines += op_profile.report(r["profile"]["training"], r["profile"]["inference"])
    return "\n".join(lines)


def _mib(size):
    return f"{size / 2**20:.0f} MiB" if size >= 10 * 2**20 else f"{size / 2**20:.2f} MiB"


def _verdict(met):
    return " (met)" if met else " (not met)"


# ---- command line ----------------------------------------------------------------------------------------

def bench_command(args):
    if args.batches < 1 or args.rounds < 1:
        raise ValueError("--batches and --rounds must be at least 1")
    results = run(args.quick, args.random_init, args.batches, args.rounds, not args.no_torch)
    print()
    print(report(results))
    if getattr(args, "json", None):
        checkpoint.save_json(args.json, results)
    return results
