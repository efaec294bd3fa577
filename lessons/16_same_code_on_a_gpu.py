# %% [markdown]
# # Lesson 16 — the same code on a GPU
#
# Objective: know what changes when tinymix runs on a GPU (one switch), what must NOT change (the
# random routes), and where a GPU program silently waits: implicit transfers and synchronisation.
#
# Prerequisites: lessons 01 and 10.
#
# tinymix never imports NumPy outside `tinymix/backend.py`; everything else says `xp`, which is
# NumPy or CuPy. CuPy mirrors NumPy's API on GPU arrays, so the whole library — tensors, fused ops,
# the Transformer, AdaMix — runs unchanged:
#
#     TINYMIX_BACKEND=cupy python3 -m tinymix          # or backend.set_backend("cupy") before any tensor
#
# Three things differ, and each has a rule:
# 1. Where numbers live. A GPU array lives in GPU memory. Anything that needs its values on the CPU —
#    `.item()`, `float(x)`, printing it, `if x > 0:`, `backend.to_numpy` — copies it over, and first
#    WAITS for every queued GPU kernel to finish (a synchronisation). The rule: keep values on the
#    device inside the training loop; bring back one number per step (the loss, for logging) at most.
# 2. Random numbers. Weights, data shuffles and AdaMix ROUTES come from a host (NumPy) generator;
#    only dropout masks come from a device generator. So a seed gives the same initial weights and the
#    same routes on both backends, and a routing decision never waits for the GPU: the host knows
#    which expert to use before it launches the kernels. (A route drawn on the device would need a
#    synchronisation per mixture per pass just to learn which weights to multiply.)
# 3. Time. GPU kernels run asynchronously: a Python line "finishes" when the kernel is QUEUED. Time a
#    GPU region only after `backend.synchronize()`, or you measure the launch, not the work.

# %%
import time

import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget

from tinymix import adamix, backend, peft
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig

try:
    backend.set_backend("cupy")
    GPU = True
    backend.set_backend("numpy")
except RuntimeError as error:
    GPU = False
    reason = str(error)
    print(f"no GPU here — the GPU comparisons below are SKIPPED. The backend says:\n  {reason}")
    assert "cupy" in reason.lower() or "gpu" in reason.lower(), "the error must say what is missing"
print(f"backend in use: {backend.name}")

# %% [markdown]
# ## Rule 2, checked: routes do not depend on the device generator
#
# Run a tiny AdaMix model twice from the same seed: once with dropout off, once with dropout on
# (which draws masks from the DEVICE generator at every layer). The initial weights and the
# sequence of routes must be identical, because neither ever touches the device generator. The
# same argument is why the routes are identical on NumPy and CuPy.

# %%
def routes_and_weights(dropout, seed=0, steps=6):
    backend.manual_seed(seed)
    config = TransformerConfig(kind="encoder", vocab_size=50, hidden_size=32, num_layers=3, num_heads=4,
                               intermediate_size=64, max_positions=16, dropout=dropout)
    model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2, dropout=dropout),
                                peft.AdaMixConfig(module="adapter", adapter=peft.AdapterConfig(bottleneck=8)))
    first_weight = backend.to_numpy(adamix.mixtures(model)[0].experts[0].weight.data).copy()
    ids = backend.host_rng.integers(1, 50, size=(4, 12))
    model.train()
    picked = []
    for _ in range(steps):
        model(ids)
        picked.append(tuple(m.route.index for m in adamix.mixtures(model)))
    return picked, first_weight


routes_off, weight_off = routes_and_weights(dropout=0.0)
routes_on, weight_on = routes_and_weights(dropout=0.3)
print("routes (one index per layer), first steps:", routes_on[:3])
assert routes_on == routes_off and (weight_on == weight_off).all()

# %% [markdown]
# ## Rule 1: where tinymix avoids waiting
#
# Places in the library that were written so that a GPU need not wait:
#
# - `adamix.Mixture.forward` draws the expert with `backend.host_choice`: a Python int, no device read.
# - `functional._checked_indices` checks labels and token ids for range on the HOST, before they are
#   copied: CuPy would silently wrap an out-of-range index instead of raising.
# - `optim.clip_grad_norm(..., as_float=False)` returns the norm as a 0-d device array, and scales
#   the gradients by min(1, max_norm / norm) unconditionally, instead of `if norm > max_norm:` —
#   a Python `if` on a device value is a synchronisation.
# - Optimizer updates work in place on `p.data` with Python floats as scalars: no host arrays.
#
# And the places that DO wait, on purpose: `loss.item()` once per step in `train.train` (for the
# progress bar, and to stop on a NaN loss at once), and evaluation, which brings predictions back.
# On the CPU the same calls are free; the check below shows the contract they keep on both backends.

# %%
from tinymix import Tensor
from tinymix.optim import clip_grad_norm

g = Tensor(xp.ones(4, dtype=xp.float32), requires_grad=True)
(g * g * 3.0).sum().backward()                        # gradient 6 per entry, norm 12
norm = clip_grad_norm([g], max_norm=1.0, as_float=False)
assert backend.is_array(norm) and norm.shape == () and float(norm) == 12.0
assert abs(float(xp.sqrt((g.grad ** 2).sum())) - 1.0) < 1e-5, "clipped to norm 1 without an `if`"
try:
    F.cross_entropy(Tensor(xp.zeros((2, 3), dtype=xp.float32)), [0, 3])
except IndexError as error:
    print("out-of-range label caught on the host:", error)
else:
    raise AssertionError("an out-of-range label must be refused")

# %% [markdown]
# ## On a GPU: parity and honest timing
#
# With a GPU, the cell below runs the same AdaMix training step on both backends from the same seed
# and with dropout off: the routes must match exactly and the losses to float32 rounding (GPU
# libraries sum in other orders). Then it times work the right way — synchronise, start the clock,
# run, synchronise, stop — and the wrong way, which only measures how long QUEUING the kernels took:
# first five large matrix products, where the gap is unmistakable (the check fails if a launch
# waited for its kernel, as it would with CUDA_LAUNCH_BLOCKING=1), then ten AdaMix steps, where it
# depends on how much of a small step is Python overhead. Without a GPU it says so and does nothing.

# %%
def one_step(backend_name, seed=0, batch=32, length=64):
    backend.set_backend(backend_name)
    backend.manual_seed(seed)
    config = TransformerConfig(kind="encoder", vocab_size=1000, hidden_size=384, num_layers=6, num_heads=12,
                               intermediate_size=1536, max_positions=128, dropout=0.0)
    model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2, dropout=0.0), peft.AdaMixConfig())
    ids = backend.host_rng.integers(1, 1000, size=(batch, length))
    labels = backend.host_rng.integers(0, 2, size=batch)
    model.train()
    loss, _, _ = adamix.two_pass_loss(lambda: model(ids), lambda z: F.cross_entropy(z, labels), 1.0)
    loss.backward()
    routes = [m.route.index for m in adamix.mixtures(model)]
    return loss.item(), routes, model, ids, labels


if GPU:
    cpu_loss, cpu_routes, _, _, _ = one_step("numpy")
    gpu_loss, gpu_routes, model, ids, labels = one_step("cupy")
    print(f"loss on NumPy {cpu_loss:.6f}, on CuPy {gpu_loss:.6f}; routes {cpu_routes} / {gpu_routes}")
    assert cpu_routes == gpu_routes and abs(cpu_loss - gpu_loss) < 1e-4

    def step():
        loss, _, _ = adamix.two_pass_loss(lambda: model(ids), lambda z: F.cross_entropy(z, labels), 1.0)
        loss.backward()
        return loss

    def clocks(work, repeats):
        """(seconds until the Python loop returned, seconds until the GPU had finished)."""
        work()                                               # warm-up: kernels compile on first use
        backend.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            work()
        queued = time.perf_counter() - started               # the wrong clock: kernels may still run
        backend.synchronize()
        return queued, time.perf_counter() - started         # the right clock

    size = budget(8192, 256)                 # fast mode: a quick run of the cell, too small to time
    big = xp.asarray(backend.host_normal((size, size), 1.0))
    queued, finished = clocks(lambda: big @ big, 5)
    print(f"5 products of {size} x {size} matrices: {1000 * queued:.2f} ms to queue, {1000 * finished:.1f} ms to finish")
    if size == 8192:
        assert finished > 3 * queued, "a launch returns before its kernel has run: time after synchronize()"
    queued, finished = clocks(step, budget(10, 3))
    print(f"{budget(10, 3)} AdaMix steps: {queued:.3f} s to queue, {finished:.3f} s to finish")
    del big
    backend.set_backend("numpy")
else:
    print("no GPU: parity and timing skipped (run this lesson with CuPy and a GPU to see them)")

# %% [markdown]
# What the lessons themselves do to stay backend-neutral: arrays for matplotlib go through
# `backend.to_numpy` first; labels and token ids are made on the host (`backend.host_rng`) and
# handed to the library, which moves them; nothing imports NumPy to compute on model data.
#
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 16 --exercises` runs only these cells).
#
# 16.1 — With x, w, norm and loss on the GPU, which of these lines make the host WAIT for the GPU?
# (a) `loss.item()`; (b) `y = x @ w`; (c) `float(norm)`; (d) `backend.host_choice(4)`;
# (e) `print(x)`; (f) `if norm > 1.0: ...`. Answer with the letters.

# %% exercise 16.1
from exercises import check

waits = ...                      # a string of letters
check("16.1", waits)

# %% [markdown]
# 16.2 — Which of these can be drawn from the DEVICE generator without costing a synchronisation at
# every forward pass? (a) a dropout mask; (b) the expert a mixture routes the batch to; (c) the
# order of the training batches. Answer with the letters.

# %% exercise 16.2
from exercises import check

device_side = ...                # a string of letters
check("16.2", device_side)

# %% [markdown]
# In the library: `tinymix/backend.py` — `set_backend`, `xp`, `host_rng` / `manual_seed`,
# `host_choice`, `device_uniform`, `to_numpy` / `from_numpy`, `scatter_add`; `tinymix/optim.py` —
# `clip_grad_norm(as_float=False)`; tests/conftest.py runs every backend test on NumPy and, where a
# GPU exists, on CuPy; `python3 -m tinymix bench` (`tinymix/bench/__init__.py`) times training and inference
# on either backend.
