#!/usr/bin/env python3
"""The first hour on a GPU: what tinymix's CuPy path has never shown on a real device, in ONE command
that stays under 8 minutes (each step has its own time limit), with every number written to a folder.

    python3 -m tinymix.bench.gpu_first_hour --out DIR      # DIR: $OUT if set, else runs/gpu_first_hour

Steps, in order (a step that fails or runs out of time is recorded, and the next one runs):
  1. machine  GPU, driver, CUDA runtime, CuPy / NumPy / PyTorch versions, CPU count      (15 s)
  2. parity   python3 -m tinymix.bench.parity: MiniLM-L6's architecture at random init, one AdaMix step on
              NumPy and on CuPy from one seed: routes, loss and every gradient compared   (75 s)
  3. suite    the test suite with TINYMIX_BACKEND=cupy TINYMIX_CUPY=real: every test on the cupy
              backend, the cupy cases on real CuPy; 8 processes where pytest-xdist is installed, 90 s
              per test where pytest-timeout is (200 s)
  4. bench    python3 -m tinymix bench --random-init on cupy (with PyTorch on CUDA where torch sees
              the GPU), then on numpy without PyTorch                                        (90 s + 90 s)
Files in DIR (8 at most, small enough to copy back from a remote machine): machine.json, parity.json, suite.txt,
suite.xml, bench_cupy.json, bench_numpy.json, steps.log (what each step printed) and summary.md (each
step's verdict and time, both bench tables, and NumPy's time / CuPy's time for every timed row).

Nothing is downloaded (PIP_NO_INDEX=1); a test that needs an asset missing from the cache is skipped
and named (TINYMIX_TESTS_OFFLINE=1). docs/benchmarks.md says which archives to copy along to an offline machine.

--rehearse runs the same steps on a CPU with the CuPy stand-in from tests/ in place of CuPy, a small
parity step and bench --quick, to check the script itself; its numbers say nothing about a GPU.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]          # the repository
LIMITS = {"machine": 15, "parity": 75, "suite": 200, "bench cupy": 90, "bench numpy": 90}   # seconds
STANDIN = ("import runpy, sys; sys.path[:0] = ['tests', '.']; import cupy_standin; cupy_standin.install(); "
           "module = sys.argv[1]; sys.argv = sys.argv[1:]; runpy.run_module(module, run_name='__main__')")


def python_module(module, args, rehearse):
    """The command that runs `python3 -m module args` (on the stand-in when rehearsing)."""
    if rehearse:
        return [sys.executable, "-c", STANDIN, module, *args]
    return [sys.executable, "-m", module, *args]


def step(name, command, env, log, out_file=None):
    """Run one step with its time limit; its output goes to steps.log (or `out_file`). Returns
    {"status", "seconds"}; status is "passed", "failed (exit N)" or "out of time"."""
    started = time.perf_counter()
    header = f"\n===== {name}: {' '.join(command)}\n"
    log.write(header)
    log.flush()
    target = open(out_file, "w", encoding="utf-8") if out_file else log
    # a session of its own, so that running out of time ends the step's children too (pytest's workers)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=target, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        code = process.wait(timeout=LIMITS[name])
        status = "passed" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        status = f"out of time ({LIMITS[name]} s)"
    finally:
        if out_file:
            target.close()
    seconds = time.perf_counter() - started
    log.write(f"===== {name}: {status} in {seconds:.1f} s\n")
    log.flush()
    print(f"{name}: {status} in {seconds:.0f} s", flush=True)
    return {"status": status, "seconds": round(seconds, 1)}


MACHINE = """
import json, os, platform, subprocess, sys
from tinymix import backend
info = {"python": platform.python_version(), "cpus": os.cpu_count(), **backend.describe()}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.cuda.is_available()
except Exception as error:
    info["torch_error"] = repr(error)
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                         "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
except OSError as error:
    info["nvidia_smi"] = repr(error)
json.dump(info, open(sys.argv[1], "w"), indent=1)
"""


def comparison(cupy_run, numpy_run):
    """Rows of NumPy's time / CuPy's time for every timed measurement both runs made."""
    rows = []
    for section in ("training", "inference"):
        for name, cupy_seconds in cupy_run[section]["seconds"].items():
            numpy_seconds = numpy_run[section]["seconds"].get(name)
            if numpy_seconds:
                a, b = statistics.median(numpy_seconds), statistics.median(cupy_seconds)
                rows.append((f"{section}: {name}", f"{1000 * a:.1f} ms", f"{1000 * b:.1f} ms", a / b))
    for key in ("model_gflops", "matmul_gflops"):
        a, b = numpy_run["forward"][key], cupy_run["forward"][key]
        rows.append((f"forward {key.replace('_gflops', '')} GFLOP/s", f"{a:.1f}", f"{b:.1f}", b / a))
    a, b = numpy_run["autograd"]["tracked_op_seconds"], cupy_run["autograd"]["tracked_op_seconds"]
    rows.append(("autograd: tracked (8, 8) add", f"{a * 1e6:.1f} us", f"{b * 1e6:.1f} us", a / b))
    lines = ["| measure (per round of all batches) | NumPy | CuPy | CuPy's speed-up |", "|---|---:|---:|---:|"]
    return "\n".join(lines + [f"| {m} | {a} | {b} | {r:.2f}x |" for m, a, b, r in rows])


def summarise(out, results, rehearse):
    lines = [f"# tinymix on a GPU: first hour{' (REHEARSAL on the CuPy stand-in: no GPU numbers)' if rehearse else ''}",
             "", f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {sum(r['seconds'] for r in results.values()):.0f} s in all", "",
             "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {name} | {r['status']} | {r['seconds']} |" for name, r in results.items()]
    for name in ("machine.json",):
        if (out / name).is_file():
            lines += ["", f"## {name}", "", "```", (out / name).read_text().strip(), "```"]
    if (out / "parity.json").is_file():
        sys.path.insert(0, str(ROOT))
        from tinymix.bench import parity
        report = json.loads((out / "parity.json").read_text())
        lines += ["", "## parity", "", parity.summary(report), "", parity.table(report)]
    if (out / "suite.txt").is_file():
        tail = (out / "suite.txt").read_text(errors="replace").strip().splitlines()[-12:]
        lines += ["", "## suite (last lines)", "", "```", *tail, "```"]
    runs = {b: json.loads((out / f"bench_{b}.json").read_text()) for b in ("cupy", "numpy")
            if (out / f"bench_{b}.json").is_file()}
    if runs:
        from tinymix import bench
        for name, run in runs.items():
            lines += ["", f"## bench on {name}", "", bench.report(run)]
    if len(runs) == 2:
        lines += ["", "## CuPy against NumPy", "", comparison(runs["cupy"], runs["numpy"])]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu_first_hour"))
    parser.add_argument("--rehearse", action="store_true", help="on a CPU, with the CuPy stand-in (checks the script)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PIP_NO_INDEX": "1", "TINYMIX_TESTS_OFFLINE": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("TINYMIX_BACKEND", None)
    cupy_env = {**env, "TINYMIX_BACKEND": "cupy", "TINYMIX_CUPY": "emulate" if args.rehearse else "real"}
    results = {}
    with open(out / "steps.log", "w", encoding="utf-8") as log:
        results["machine"] = step("machine", [sys.executable, "-c", MACHINE, str(out / "machine.json")], env, log)
        small = ["--batch", "4", "--length", "16"] if args.rehearse else []
        results["parity"] = step("parity", python_module("tinymix.bench.parity", ["--out", str(out / "parity.json"), *small],
                                                         args.rehearse), env, log)
        plugins = (["-n", "8"] if _has("xdist") else []) + (["--timeout", "90"] if _has("pytest_timeout") else [])
        results["suite"] = step("suite", [sys.executable, "-m", "pytest", "-v", "-rfE", "-p", "no:cacheprovider",
                                          *plugins, "--junitxml", str(out / "suite.xml")], cupy_env, log,
                                out_file=out / "suite.txt")
        for name in ("cupy", "numpy"):
            options = ["bench", "--quick" if args.rehearse else "--random-init", "--json", str(out / f"bench_{name}.json")]
            options += ["--no-torch"] if name == "numpy" else []
            results[f"bench {name}"] = step(f"bench {name}", python_module("tinymix", options, args.rehearse),
                                            cupy_env if name == "cupy" else env, log)
    summarise(out, results, args.rehearse)
    print(f"every number is in {out} (summary.md first)")
    return 0 if all(r["status"] == "passed" for r in results.values()) else 1


def _has(module):
    """Whether a pytest plugin is installed (xdist runs the suite in parallel; timeout caps a test)."""
    try:
        __import__(module)
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
