"""The bench's measurements, one function per row of its report (see __init__.py for what each one
compares and why): training steps and PyTorch, inference, peak memory, forward GFLOP/s against a
plain matmul, autograd overhead, and the op profile."""
import gc
import os
import statistics
import tracemalloc
import warnings

from .. import adamix, backend, peft
from . import op_profile
from ..backend import xp
from .workload import (ADAMIX, SINGLE, blas_threads, build, eval_forward, interleaved_seconds, median_seconds, ratio,
                       train_step)
from .torch_twin import TorchTwin, load_torch, max_logit_difference
from ..nn import Linear
from ..tensor import Tensor


# ---- 1 and 6. training steps, and PyTorch ------------------------------------------------------------

def training(workload, rounds, use_torch=True):
    """Seconds per round of AdaMix training steps with and without the consistency pass, and of the
    PyTorch twin's step with it, interleaved."""
    model, optimizer = build(workload, ADAMIX)
    variants = {"two passes": lambda b: train_step(model, optimizer, b, 1.0),
                "one pass": lambda b: train_step(model, optimizer, b, 0.0),
                "two passes, low memory": lambda b: train_step(model, optimizer, b, 1.0, low_memory=True)}
    torch, status = load_torch() if use_torch else (None, "skipped (--no-torch)")
    difference = None
    if torch is not None:
        threads = blas_threads()
        if threads and backend.name == "numpy":
            torch.set_num_threads(threads)
        twins = {name: TorchTwin(torch, model, sdpa=sdpa) for name, sdpa in TORCH_VARIANTS.items()}
        difference = max(max_logit_difference(twin, model, *workload.batches[0][:2]) for twin in twins.values())
        build_kind = "CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
        status = (f"torch {torch.__version__} ({build_kind}) on {twins[next(iter(twins))].device}, "
                  f"{torch.get_num_threads()} thread(s)")
        for name, twin in twins.items():
            variants[name] = lambda b, twin=twin: (twin.train_step(*b), twin.synchronize())
    seconds = interleaved_seconds(variants, workload.batches, rounds)
    result = {"seconds": seconds, "one_pass_over_two_passes": ratio(seconds, "one pass", "two passes"),
              "low_memory_over_two_passes": ratio(seconds, "two passes, low memory", "two passes"),
              "torch": status, "torch_max_logit_difference": difference, "speed_vs_torch": None,
              "host_synchronisation": host_synchronisation(lambda: variants["two passes"](workload.batches[0]))}
    if torch is not None:   # tinymix's speed relative to each: PyTorch's time / tinymix's time
        result["speed_vs_torch"] = {name: ratio(seconds, name, "two passes") for name in TORCH_VARIANTS}
    return result


# the PyTorch step, written two ways: attention as tinymix computes it, and PyTorch's fused kernel
TORCH_VARIANTS = {"PyTorch, explicit attention": False, "PyTorch, scaled_dot_product_attention": True}


def host_synchronisation(step):
    """Whether `step` makes the host wait for the GPU: run once with CuPy's synchronisation detector
    (cupyx.allow_synchronize, deprecated since CuPy 10 and perhaps gone) set to refuse. It sees the
    waits CuPy itself declares (reading a value back, .get(), .item()). Returns a sentence."""
    if backend.name != "cupy":
        return "not applicable on the numpy backend (no device)"
    syncdetect = getattr(getattr(xp, "_core", None), "syncdetect", None)
    if syncdetect is None:
        return "not checked: this CuPy has no synchronisation detector"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with syncdetect.allow_synchronize(False):
                step()
    except syncdetect.DeviceSynchronized as error:
        return f"DETECTED: {error}"
    return "none detected in a full step"


def _blas():
    """Which BLAS library NumPy runs and which of its kernels, as far as threadpoolctl (optional) can
    tell; and whether OPENBLAS_CORETYPE forces a kernel (it may pick an older, slower one)."""
    try:
        from threadpoolctl import threadpool_info
        found = [f"{i.get('internal_api')} {i.get('version')}, {i.get('architecture')} kernel, "
                 f"{i.get('num_threads')} thread(s)" for i in threadpool_info() if i.get("user_api") == "blas"]
        text = "; ".join(found) or "no BLAS found by threadpoolctl"
    except ImportError:
        text = "kernel unknown (install threadpoolctl to see it)"
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return text + (f"; OPENBLAS_CORETYPE={forced} is set and forces that kernel" if forced else "")


# ---- 2. inference -------------------------------------------------------------------------------------

def inference(workload, rounds):
    """Seconds per round of eval forwards: a single adapter, AdaMix merged, average, random."""
    models = {"single adapter": build(workload, SINGLE)[0],
              "AdaMix merged": peft.merge(build(workload, ADAMIX)[0]),
              "AdaMix average": build(workload, ADAMIX)[0]}
    random_model = build(workload, ADAMIX)[0]
    adamix.set_inference_mode(random_model, "random")
    models["AdaMix random"] = random_model
    variants = {name: (lambda b, m=model.eval(): eval_forward(m, b)) for name, model in models.items()}
    seconds = interleaved_seconds(variants, workload.batches, rounds)
    return {"seconds": seconds,
            "merged_over_single": ratio(seconds, "AdaMix merged", "single adapter"),
            "average_over_single": ratio(seconds, "AdaMix average", "single adapter"),
            "random_over_single": ratio(seconds, "AdaMix random", "single adapter")}


# ---- 3. peak memory --------------------------------------------------------------------------------------

def peak_training_bytes(workload, method, consistency_weight, steps=2, low_memory=False):
    """Peak bytes allocated while building a model and taking `steps` steps on the longest batch."""
    batch = max(workload.batches, key=lambda b: b[0].size)
    gc.collect()
    if backend.name == "cupy":
        pool = xp.get_default_memory_pool()
        pool.free_all_blocks()
        before = pool.total_bytes()
    else:
        tracemalloc.start()
    model, optimizer = build(workload, method)
    for _ in range(steps):
        train_step(model, optimizer, batch, consistency_weight, low_memory)
    backend.synchronize()
    if backend.name == "cupy":
        peak = pool.total_bytes() - before
    else:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    del model, optimizer
    gc.collect()
    return peak


def memory(workload):
    adamix_bytes = peak_training_bytes(workload, ADAMIX, 1.0)
    low_memory_bytes = peak_training_bytes(workload, ADAMIX, 1.0, low_memory=True)
    one_pass_bytes = peak_training_bytes(workload, ADAMIX, 0.0)
    full_bytes = peak_training_bytes(workload, peft.FullFineTuneConfig(), 0.0)
    return {"adamix_bytes": adamix_bytes, "low_memory_bytes": low_memory_bytes, "one_pass_bytes": one_pass_bytes,
            "full_bytes": full_bytes, "adamix_over_full": adamix_bytes / full_bytes,
            "low_memory_over_full": low_memory_bytes / full_bytes, "one_pass_over_full": one_pass_bytes / full_bytes}


# ---- 4. forward GFLOP/s against a plain matmul --------------------------------------------------------

def forward_flops(model, batch_size, T):
    """FLOPs of one forward of B sentences padded to T tokens (a multiply-add counts as 2): every
    Linear's weights once per token, plus attention's q k^T and weights @ v. Embedding look-ups, layer
    norms, GELU and softmax are memory-bound and left out."""
    config = model.transformer.config
    linear_weights = sum(m.weight.size for _, m in model.named_modules() if isinstance(m, Linear))
    return 2 * batch_size * T * linear_weights + config.num_layers * 2 * (2 * batch_size * T * T * config.hidden_size)


def forward_throughput(workload, rounds):
    """GFLOP/s of the merged model's eval forward and of a plain (B T, C) @ (C, I) matmul on each batch."""
    model = peft.merge(build(workload, ADAMIX)[0]).eval()
    C, I = workload.config.hidden_size, workload.config.intermediate_size
    weight = backend.from_numpy(backend.host_generator(2).standard_normal((I, C), dtype="float32"))
    inputs = {id(b): backend.from_numpy(backend.host_generator(3).standard_normal((b[0].size, C), dtype="float32"))
              for b in workload.batches}
    variants = {"model": lambda b: eval_forward(model, b), "matmul": lambda b: inputs[id(b)] @ weight.T}
    seconds = interleaved_seconds(variants, workload.batches, rounds)
    model_flops = sum(forward_flops(model, *b[0].shape) for b in workload.batches)
    matmul_flops = sum(2 * b[0].size * C * I for b in workload.batches)
    per_round = [(model_flops / m) / (matmul_flops / r) for m, r in zip(seconds["model"], seconds["matmul"])]
    return {"model_gflops": model_flops / statistics.median(seconds["model"]) / 1e9,
            "matmul_gflops": matmul_flops / statistics.median(seconds["matmul"]) / 1e9,
            "model_over_matmul": statistics.median(per_round)}


# ---- 5. autograd overhead ------------------------------------------------------------------------------

def _random(shape, seed):
    """Float32 N(0, 1) values on the device, from a generator of their own (the global seed is untouched)."""
    return backend.from_numpy(backend.host_generator(seed).standard_normal(shape, dtype="float32"))


def autograd_times(repeats=50, ops_per_run=100):
    """Seconds per op: (a tracked (8, 8) add, forward + backward; the raw xp add alone). A tiny op is
    all bookkeeping: the difference is the graph's price, paid on every op however small."""
    a = Tensor(_random((8, 8), 0), requires_grad=True)
    b = Tensor(_random((8, 8), 1), requires_grad=True)
    g = xp.ones((8, 8), dtype=xp.float32)

    def tracked():
        for _ in range(ops_per_run):
            a.grad = b.grad = None
            (a + b).backward(g)

    def raw():
        for _ in range(ops_per_run):
            a.data + b.data  # the result is dropped: only the time counts

    return (median_seconds(tracked, repeats) / ops_per_run, median_seconds(raw, repeats) / ops_per_run)


def matmul_times(repeats=5, rows=64 * 32, inner=384, outer=1536):
    """Seconds for x @ w with both trainable, forward + backward (three products), and for the same
    three products in raw xp. A big op is all arithmetic: the ratio should be near 1."""
    x = Tensor(_random((rows, inner), 2), requires_grad=True)
    w = Tensor(_random((inner, outer), 3), requires_grad=True)
    g = _random((rows, outer), 4)

    def tracked():
        x.grad = w.grad = None
        (x @ w).backward(g)

    def raw():  # the results are dropped: only the time counts
        x.data @ w.data
        g @ w.data.T
        x.data.T @ g

    return median_seconds(tracked, repeats), median_seconds(raw, repeats)


def autograd(quick=False):
    tracked, raw = autograd_times(repeats=5 if quick else 50)
    sizes = dict(rows=256, inner=64, outer=256) if quick else {}
    tracked_mm, raw_mm = matmul_times(repeats=2 if quick else 5, **sizes)
    return {"tracked_op_seconds": tracked, "raw_op_seconds": raw, "overhead_seconds": tracked - raw,
            "matmul_tracked_over_raw": tracked_mm / raw_mm}


# ---- 7. profile ---------------------------------------------------------------------------------------

def profile(workload, rounds):
    """ms per op category: the AdaMix two-pass training step, and the merged model's eval forward."""
    model, optimizer = build(workload, ADAMIX)
    training = op_profile.profile_training(model, optimizer, workload.batches, rounds)
    merged = peft.merge(build(workload, ADAMIX)[0]).eval()
    return {"training": training, "inference": op_profile.profile_inference(merged, workload.batches, rounds)}
