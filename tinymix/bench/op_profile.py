"""Where a training step's time goes, op by op: the profile table of `python3 -m tinymix bench`.

While a `Profiler` is active, every op of the functional layer and every Tensor primitive runs inside
a timer that books its time to one category (GEMMs, attention's products, softmax, layer norm, GELU,
dropout, adds and copies, ...), and so does the backward closure it records: the forward and the
backward pass get a column each. Timers nest (linear calls no Tensor op, but symmetric_kl calls kl_div
calls log_softmax), and each books only its own time, not its children's. What no op accounts for is
Python around the ops: in the forward, module calls and routing; in the backward, the graph walk of
Tensor.backward. That remainder is the "autograd bookkeeping and Python" row.

The timers cost about a microsecond an op, a few thousand ops a step: well under 1% of a MiniLM step.
They read workload.clock(): with one BLAS thread the process's CPU time, so that other jobs on a
shared machine do not land in whichever op they interrupted.
"""
from contextlib import contextmanager

from .. import backend, functional, tensor
from .workload import clock
from ..tensor import Tensor

GEMM, PRODUCTS, SOFTMAX = "GEMMs (linear layers)", "attention: batched q k, w v products", "softmax"
NORM, GELU, DROPOUT = "layer norm", "GELU", "dropout (masks drawn and applied)"
ADDS, OTHER = "adds, copies, reshapes, gradient sums", "embeddings, pooling, losses"
BOOKKEEPING = "autograd bookkeeping and Python"
CATEGORIES = (GEMM, PRODUCTS, SOFTMAX, NORM, GELU, DROPOUT, ADDS, OTHER, BOOKKEEPING)

# (owner, attribute, category). Attention's own time is its two batched products per direction (and
# the scale, mask and dropout-mask multiplies around them); its softmax and its mask draw are helpers
# of their own and land in their rows.
_TIMED = [(functional, "linear", GEMM), (functional, "attention", PRODUCTS),
          (functional, "_softmax_in_place", SOFTMAX), (functional, "_softmax_backward", SOFTMAX),
          (functional, "softmax", SOFTMAX),
          (functional, "layer_norm", NORM), (functional, "gelu", GELU),
          (functional, "dropout", DROPOUT), (functional, "_keep_mask", DROPOUT),
          (functional, "embedding", OTHER), (functional, "cross_entropy", OTHER),
          (functional, "kl_div", OTHER), (functional, "log_softmax", OTHER),
          (tensor, "_unbroadcast", ADDS), (tensor, "concatenate", ADDS), (tensor, "stack", ADDS)]
_TENSOR_METHODS = ("__add__", "__sub__", "__mul__", "__truediv__", "__neg__", "__pow__",
                   "__getitem__", "reshape", "transpose", "sum", "max", "exp", "log", "sqrt", "_accumulate")


class Profiler:
    """Seconds per category and phase: `profiler.seconds["forward" | "backward"][category]`.

        with Profiler() as profiler:
            forward and backward, as often as wanted
        profiler.seconds, profiler.totals
    """

    def __init__(self):
        self.seconds = {phase: dict.fromkeys(CATEGORIES, 0.0) for phase in ("forward", "backward")}
        self.totals = {"forward": 0.0, "backward": 0.0}
        self._phase = "forward"
        self._now = clock()
        self._children = []          # per open timer: seconds spent in timers nested inside it
        self._saved = []

    def __enter__(self):
        for owner, name, category in _TIMED:
            if hasattr(owner, name):
                self._patch(owner, name, self._timed(getattr(owner, name), category))
        for name in _TENSOR_METHODS:
            self._patch(Tensor, name, self._timed(getattr(Tensor, name), ADDS))
        self._patch(Tensor, "__matmul__", self._timed(Tensor.__matmul__, GEMM))
        self._patch(tensor._Node, "_accumulate", self._timed(tensor._Node._accumulate, ADDS))
        self._patch(Tensor, "backward", self._backward_pass(Tensor.backward))
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def _patch(self, owner, name, replacement):
        self._saved.append((owner, name, vars(owner)[name] if name in vars(owner) else getattr(owner, name)))
        setattr(owner, name, replacement)

    @contextmanager
    def forward_pass(self):
        """Books the block's wall time as forward time (the ops in it are booked by their timers)."""
        start = self._now()
        try:
            yield
        finally:
            self.totals["forward"] += self._now() - start

    def _timed(self, function, category):
        profiler = self

        def timed(*args, **kwargs):
            start = self._now()
            profiler._children.append(0.0)
            try:
                out = function(*args, **kwargs)
            finally:
                inner = profiler._children.pop()
                elapsed = self._now() - start
                profiler.seconds[profiler._phase][category] += elapsed - inner
                if profiler._children:
                    profiler._children[-1] += elapsed
            node = getattr(out, "_node", None) if isinstance(out, Tensor) else None
            if node is not None and not getattr(node._backward, "_profiled", False):
                node._backward = profiler._timed(node._backward, category)   # its backward: same row
            return out
        timed._profiled = True
        return timed

    def _backward_pass(self, backward):
        profiler = self

        def timed_backward(tensor_, grad=None):
            outer = profiler._phase
            profiler._phase = "backward"
            start = self._now()
            try:
                return backward(tensor_, grad)
            finally:
                if outer == "forward":    # a backward inside a backward counts once
                    profiler.totals["backward"] += self._now() - start
                profiler._phase = outer
        return timed_backward

    def table(self):
        """{phase: {category: seconds}} with the remainder (untimed Python) as bookkeeping."""
        result = {}
        for phase, seconds in self.seconds.items():
            seconds = dict(seconds)
            seconds[BOOKKEEPING] += max(self.totals[phase] - sum(seconds.values()), 0.0)
            result[phase] = seconds
        return result


def profile_training(model, optimizer, batches, rounds, consistency_weight=1.0):
    """The profile of `rounds` rounds of training steps over `batches` (after one untimed round):
    {"forward": {category: ms per step}, "backward": {...}, "optimizer": ms per step (clip + AdamW),
    "step": ms per step}."""
    from .workload import gradients, train_step, update
    for batch in batches:
        train_step(model, optimizer, batch, consistency_weight)
    backend.synchronize()
    now = clock()
    steps, optimizer_seconds, started = 0, 0.0, now()
    with Profiler() as profiler:
        for _ in range(rounds):
            for batch in batches:
                start = now()
                backward_before = profiler.totals["backward"]
                gradients(model, optimizer, batch, consistency_weight)
                backend.synchronize()
                middle = now()
                profiler.totals["forward"] += middle - start - (profiler.totals["backward"] - backward_before)
                update(model, optimizer)
                backend.synchronize()
                optimizer_seconds += now() - middle
                steps += 1
    step_seconds = now() - started
    result = {phase: {c: 1000 * s / steps for c, s in seconds.items()}
              for phase, seconds in profiler.table().items()}
    result["optimizer"] = 1000 * optimizer_seconds / steps
    result["step"] = 1000 * step_seconds / steps
    return result


def profile_inference(model, batches, rounds):
    """The profile of the eval forward (no graph) of `model` over `batches`, `rounds` times after one
    untimed round: {category: ms per batch}."""
    from .workload import eval_forward
    for batch in batches:
        eval_forward(model, batch)
    backend.synchronize()
    with Profiler() as profiler:
        for _ in range(rounds):
            for batch in batches:
                with profiler.forward_pass():
                    eval_forward(model, batch)
                    backend.synchronize()
    count = rounds * len(batches)
    return {c: 1000 * s / count for c, s in profiler.table()["forward"].items()}


def report(training, inference=None, title="tinymix"):
    """The profiles as Markdown lines: ms per step (per batch for inference) and each row's share of
    its pass."""
    columns = ([("inference forward", inference)] if inference else []) + [
        ("training forward", training["forward"]), ("training backward", training["backward"])]
    totals = [sum(column.values()) for _, column in columns]
    lines = [f"| {title}: where the time goes (ms) | " + " | ".join(f"{name} | share" for name, _ in columns) + " |",
             "|---|" + "---:|---:|" * len(columns)]
    for category in CATEGORIES:
        cells = [f"{column[category]:.1f} | {column[category] / total:.0%}"
                 for (_, column), total in zip(columns, totals)]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    lines.append("| the pass | " + " | ".join(f"{total:.1f} | 100%" for total in totals) + " |")
    lines += ["", f"A training step: its two passes {totals[-2] + totals[-1]:.1f} ms, clipping and AdamW "
                  f"{training['optimizer']:.1f} ms; {training['step']:.1f} ms in all, profiler included."]
    return lines
