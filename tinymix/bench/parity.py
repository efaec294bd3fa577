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

The verdict: routes identical; |loss difference| <= 1e-4 (1 + |loss|); and every gradient element
agrees within float32's rounding, judged at the scale it lives at:

    |a - b| <= RTOL * |a|  +  ATOL * S_tensor  +  EPS32 * S_model

a: NumPy's value, b: the other backend's. S_tensor is the largest |gradient| of the tensor, where a
mixture's M experts of one site count as ONE tensor (they are one parameter stacked M times: an expert
routed only in pass 2 gets only the consistency term's gradient, 1e-6 of its sibling's at
initialisation, and judged against its own largest value that is pure rounding). S_model is the largest
|gradient| anywhere in the model. Why these three terms:
- RTOL = 1e-3: an element that carries signal may differ in its last few bits. A float32 sum of n terms
  in another order moves by about sqrt(n) * 6e-8 of the terms' size (n up to 2,048 tokens here: 3e-6),
  and six layers of backward compound that; 1e-3 leaves a wide margin and still fails a material
  gradient that is off by a few tenths of a per cent.
- ATOL = 1e-4 of S_tensor: where terms cancel, an element far below its tensor's scale keeps the
  absolute rounding error of the sums that made it (up to n * 6e-8 = 1.2e-4 of the terms' size in the
  worst order). So an element is judged against its tensor's scale, not against itself; a tensor that
  is off by a few per cent of its own scale still fails, however small the tensor is (a bias included).
- EPS32 = 2**-23 of S_model: below float32's resolution of the largest gradient the backward carries,
  no difference can be told from rounding (a tensor that is all rounding noise).
Each tensor is reported with its worst element: the difference, the tolerance it was judged against
there, their ratio and the verdict, so a failure on a GPU says exactly where.
"""
import argparse
import json
import re
import time

from .. import adamix, backend, peft
from .. import functional as F
from ..transformer import SequenceClassifier, Transformer, TransformerConfig

LOSS_TOLERANCE = 1e-4      # of 1 + |loss|
RTOL = 1e-3                # of the element's own |value|
ATOL = 1e-4                # of its tensor's largest |value| (a mixture's experts: one tensor)
EPS32 = 2.0 ** -23         # of the model's largest |gradient|: float32's resolution


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


def tensor_of(name):
    """The tensor a gradient is judged with: a mixture's experts of one site are one stacked tensor."""
    return re.sub(r"\.experts\.\d+\.", ".experts.*.", name)


def judge(grads_a, grads_b):
    """Per gradient: its worst element's difference, the tolerance there, their ratio and the verdict
    (see the module docstring for the rule)."""
    scales = {}
    for name, a in grads_a.items():
        scales[tensor_of(name)] = max(scales.get(tensor_of(name), 0.0), float(abs(a).max()))
    model_scale = max(scales.values(), default=0.0)
    verdicts = {}
    for name, a in grads_a.items():
        b = grads_b.get(name)
        if b is None or b.shape != a.shape:
            verdicts[name] = {"error": "missing, or of another shape, on the other backend", "passed": False}
            continue
        a64, b64 = a.astype("float64"), b.astype("float64")
        difference = abs(a64 - b64)
        tolerance = RTOL * abs(a64) + ATOL * scales[tensor_of(name)] + EPS32 * model_scale
        ratio = difference / tolerance if model_scale else difference
        worst = int(ratio.argmax()) if ratio.size else 0
        verdicts[name] = {"max_abs_difference": float(difference.max(initial=0.0)),
                          "tensor_scale": scales[tensor_of(name)],
                          "difference_at_worst": float(difference.flat[worst]) if ratio.size else 0.0,
                          "tolerance_at_worst": float(tolerance.flat[worst]) if ratio.size else 0.0,
                          "ratio": float(ratio.flat[worst]) if ratio.size else 0.0,
                          "passed": bool(ratio.size == 0 or ratio.flat[worst] <= 1.0)}
    return verdicts


def compare(reference, other):
    """The differences between two one_step results, and the verdict (see the module docstring)."""
    loss_a, routes_a, grads_a, _ = reference
    loss_b, routes_b, grads_b, _ = other
    gradients = judge(grads_a, grads_b)
    extra = sorted(set(grads_b) - set(grads_a))
    loss_difference = abs(loss_a - loss_b)
    checks = {"routes": routes_a == routes_b,
              "loss": loss_difference <= LOSS_TOLERANCE * (1.0 + abs(loss_a)),
              "gradients": bool(gradients) and not extra and all(g["passed"] for g in gradients.values())}
    worst = max(gradients.items(), key=lambda item: item[1].get("ratio", float("inf")), default=(None, {}))
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
            f"{report['gradient_count']} gradients, worst {worst.get('name')} at {worst.get('ratio', float('nan')):.2e} "
            f"of its tolerance; step {seconds}")


def table(report):
    """Every gradient, worst first: its largest difference, the tolerance at its worst element (and the
    tensor scale that tolerance came from), their ratio (<= 1 passes) and the verdict."""
    rows = sorted(report["gradients"].items(), key=lambda item: -item[1].get("ratio", float("inf")))
    lines = ["| gradient | largest difference | tensor scale | tolerance at worst | ratio | verdict |",
             "|---|---:|---:|---:|---:|---|"]
    for name, g in rows:
        if "error" in g:
            lines.append(f"| {name} | | | | | FAILED: {g['error']} |")
            continue
        lines.append(f"| {name} | {g['max_abs_difference']:.2e} | {g['tensor_scale']:.2e} | "
                     f"{g['tolerance_at_worst']:.2e} | {g['ratio']:.2e} | {'ok' if g['passed'] else 'FAILED'} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m tinymix.bench.parity", description=__doc__.splitlines()[0])
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
    print(table(report))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=1)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
