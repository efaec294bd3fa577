"""The same AdaMix training step on NumPy and on CuPy, from one seed: do the routes, the loss and every
gradient agree? The first thing to run on a GPU (tinymix/bench/gpu_first_hour.py runs it):

    python3 -m tinymix.bench.parity [--out parity.json] [--batch 32] [--length 64] [--seed 0]

The model is MiniLM-L6's architecture (hidden 384, 6 layers, 12 heads, FFN 1536, its vocabulary and
positions) at random initialisation, since the weights are not needed to compare two backends, with
AdaMix-adapter (4 experts, bottleneck 16, shared up-projection) and a 2-label head; one step of
train.py's objective: two passes, cross-entropy plus the symmetric-KL consistency term, and its
backward. Dropout is off: the device generator draws other masks than NumPy's (routes and initial
weights come from the host generator, the same on both). The batch is random token ids with random
padding, drawn on the host.

The verdict: routes identical; |loss difference| <= 1e-4 (1 + |loss|); for every gradient, the largest
|difference| <= 1e-3 of that gradient's largest |value|. GPU libraries sum in other orders than NumPy's
BLAS, so float32 results differ in their last bits, and six layers of backward grow that a little.
"""
import argparse
import json
import time

from .. import adamix, backend, peft
from .. import functional as F
from ..transformer import SequenceClassifier, Transformer, TransformerConfig

LOSS_TOLERANCE = 1e-4      # of 1 + |loss|
GRADIENT_TOLERANCE = 1e-3  # of the gradient's largest |value|


def minilm_config(dropout=0.0):
    return TransformerConfig(dropout=dropout)    # the defaults are MiniLM-L6's sizes


def one_step(backend_name, config, batch=32, length=64, seed=0):
    """One AdaMix step on `backend_name`: (loss, routes of each forward, {parameter: host gradient},
    seconds). The backend is left switched to `backend_name`."""
    backend.set_backend(backend_name)
    backend.manual_seed(seed)
    model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2, dropout=0.0),
                                peft.AdaMixConfig(module="adapter", num_experts=4, adapter=peft.AdapterConfig(16)))
    rng = backend.host_generator([seed, 1])
    lengths = rng.integers(length // 4, length + 1, size=batch)
    mask = (backend.host_arange(length)[None, :] < lengths[:, None]).astype("int64")
    ids = rng.integers(1, config.vocab_size, size=(batch, length)) * mask
    labels = rng.integers(0, 2, size=batch)
    routes = []

    def forward():
        logits = model(ids, mask)
        routes.append([m.route.index for m in adamix.mixtures(model)])
        return logits
    model.train()
    started = time.perf_counter()
    loss, _, _ = adamix.two_pass_backward(forward, lambda z: F.cross_entropy(z, labels), 1.0)
    value = loss.item()                                          # waits for the device: the step is done
    seconds = time.perf_counter() - started
    gradients = {name: backend.to_numpy(p.grad) for name, p in model.named_parameters() if p.grad is not None}
    return value, routes, gradients, seconds


def compare(reference, other):
    """The differences between two one_step results, and the verdict (see the module docstring)."""
    loss_a, routes_a, grads_a, _ = reference
    loss_b, routes_b, grads_b, _ = other
    gradients = {}
    for name, a in grads_a.items():
        b = grads_b.get(name)
        if b is None or b.shape != a.shape:
            gradients[name] = {"error": "missing, or of another shape, on the other backend"}
            continue
        scale = float(abs(a).max())
        worst = float(abs(a.astype("float64") - b.astype("float64")).max())
        gradients[name] = {"max_abs_difference": worst, "max_abs_value": scale,
                           "relative": worst / scale if scale else worst,
                           "passed": worst <= GRADIENT_TOLERANCE * scale + 1e-12}
    extra = sorted(set(grads_b) - set(grads_a))
    loss_difference = abs(loss_a - loss_b)
    checks = {"routes": routes_a == routes_b,
              "loss": loss_difference <= LOSS_TOLERANCE * (1.0 + abs(loss_a)),
              "gradients": bool(gradients) and not extra and all(g.get("passed") for g in gradients.values())}
    worst = max(gradients.items(), key=lambda item: item[1].get("relative", float("inf")), default=(None, {}))
    return {"passed": all(checks.values()), "checks": checks, "loss": [loss_a, loss_b],
            "loss_difference": loss_difference, "routes": [routes_a, routes_b],
            "gradient_count": len(gradients), "extra_gradients": extra,
            "worst_gradient": {"name": worst[0], **worst[1]}, "gradients": gradients}


def run(other="cupy", config=None, batch=32, length=64, seed=0):
    """NumPy's step against `other`'s, with timings; the backend goes back to numpy."""
    config = config or minilm_config()
    backend.set_backend(other)              # without CuPy or a GPU, say so now, not after NumPy's step
    reference = one_step("numpy", config, batch, length, seed)
    try:
        result = one_step(other, config, batch, length, seed)
        again = one_step(other, config, batch, length, seed)            # warm: kernels compiled
    finally:
        backend.set_backend("numpy")
    report = compare(reference, result)
    report.update(backends=["numpy", other], batch=batch, length=length, seed=seed,
                  seconds={"numpy": reference[3], f"{other} (first, compiling)": result[3], other: again[3]},
                  repeatable=compare(result, again)["passed"])
    return report


def summary(report):
    worst = report["worst_gradient"]
    verdict = "PASSED" if report["passed"] else f"FAILED ({', '.join(k for k, v in report['checks'].items() if not v)})"
    seconds = ", ".join(f"{k} {v:.3f} s" for k, v in report["seconds"].items())
    return (f"parity {verdict}: loss {report['loss'][0]:.7f} (numpy) vs {report['loss'][1]:.7f} "
            f"(difference {report['loss_difference']:.2e}); routes {'identical' if report['checks']['routes'] else 'DIFFER'}; "
            f"{report['gradient_count']} gradients, worst {worst.get('name')} at {worst.get('relative', float('nan')):.2e} "
            f"of its scale; step {seconds}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinymix.bench.parity", description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the full report (every gradient) as JSON here")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        report = run(batch=args.batch, length=args.length, seed=args.seed)
    except RuntimeError as error:   # no CuPy, or no GPU: the backend says what is missing
        print(f"parity needs the cupy backend: {error}")
        return 2
    print(summary(report))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=1)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
