# %% [markdown]
# # Lesson 12 — paying for the second pass in time instead of memory
#
# Objective: see what AdaMix's second forward pass costs in memory, and how recomputing it — a
# third forward pass — gives exactly the same gradients while holding one pass's graph at a time;
# and know how much that saves of a step's peak: a graph's worth, not half the peak.
#
# Prerequisites: lessons 01 (the graph autograd records) and 11 (the two-pass loss).
#
# Backward needs what each forward pass saved for it (activations, dropout masks). The consistency
# loss ties AdaMix's two passes together, so both graphs stay alive until the one backward: a step
# holds twice the saved activations of a single module's step. The loss, though, sees pass 2 only
# through its logits z2. So:
#
#   1. run pass 1 with its graph;
#   2. run pass 2 WITHOUT a graph, keeping only z2 — but remember its random choices (the route
#      generator's state and the dropout masks it drew);
#   3. differentiate the loss with respect to z1 and z2 alone (cheap: logits only);
#   4. backward through pass 1 from dL/dz1, which frees its graph;
#   5. run pass 2 again WITH its graph, replaying the same routes and masks, so it computes the same
#      z2, and backward from dL/dz2.
#
# Same gradients, one more forward pass, one graph alive at a time (`--low-memory` in training).

# %%
import time
import tracemalloc

import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import save_figure

import matplotlib.pyplot as plt

from tinymix import adamix, backend, peft
from tinymix import functional as F
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig


def toy_step():
    """A toy AdaMix classifier with dropout everywhere, a batch, and its (forward, task loss)."""
    backend.manual_seed(0)
    config = TransformerConfig(vocab_size=100, hidden_size=64, num_layers=2, num_heads=4,
                               intermediate_size=256, max_positions=64, dropout=0.1)
    model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2),
                                peft.AdaMixConfig(module="adapter", num_experts=4)).train()
    ids = backend.host_generator(1).integers(1, 100, size=(32, 48))      # (B, T)
    labels = ids[:, 0] % 2
    return model, (lambda: model(ids)), (lambda z: F.cross_entropy(z, labels))


# %% [markdown]
# ## What the graphs hold
#
# The memory NumPy holds (as `tracemalloc` reports it) after pass 1, and after pass 2 with pass 1's
# graph still alive: the second pass doubles it.

# %%
model, forward, task_loss = toy_step()
tracemalloc.start()
start = tracemalloc.get_traced_memory()[0]
z1 = forward()
one_graph = tracemalloc.get_traced_memory()[0] - start
z2 = forward()
two_graphs = tracemalloc.get_traced_memory()[0] - start
tracemalloc.stop()
del z1, z2
print(f"held after pass 1: {one_graph / 2**20:.1f} MiB; after pass 2 as well: {two_graphs / 2**20:.1f} MiB "
      f"({two_graphs / one_graph:.2f}x)")
assert 1.8 < two_graphs / one_graph < 2.2, "two passes hold two graphs"

# %% [markdown]
# ## The same step both ways
#
# `adamix.two_pass_backward` with `low_memory=False` (both graphs, one backward) and `True` (the
# five steps above), each on a fresh model from the same seed: every gradient, the peak memory of
# the step, the number of forward passes and the time.

# %%
def one_step(low_memory):
    """Gradients, peak bytes, forward passes and seconds of one AdaMix step."""
    model, forward, task_loss = toy_step()
    passes = []

    def counted_forward():
        passes.append(1)
        return forward()
    tracemalloc.start()
    started = time.perf_counter()
    adamix.two_pass_backward(counted_forward, task_loss, 1.0, low_memory=low_memory)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return grads, peak, len(passes), seconds


grads, peak, passes, seconds = one_step(low_memory=False)
low_grads, low_peak, low_passes, low_seconds = one_step(low_memory=True)
same_parameters = sorted(low_grads) == sorted(grads)    # the same experts received a gradient
worst = max(float(abs(low_grads[n] - grads[n]).max()) for n in grads) if same_parameters else float("inf")
saved = peak - low_peak
print(f"{len(grads)} gradients; largest difference between the two ways: {worst:.1e}")
print(f"peak of the step: {peak / 2**20:.1f} MiB with both graphs, {low_peak / 2**20:.1f} MiB recomputing "
      f"({saved / peak:.0%} less; {saved / one_graph:.0%} of one graph)")
print(f"forward passes: {passes} and {low_passes}; time {seconds:.2f} s and {low_seconds:.2f} s (noisy)")
assert same_parameters and worst < 1e-5, "same gradients both ways"
assert saved > 0.5 * one_graph, "recomputing holds one graph at a time"
assert (passes, low_passes) == (2, 3), "recomputing costs one more forward pass"
assert low_peak > peak / 2, "the step's peak does not halve: backward's working arrays come on top"

# %% [markdown]
# Read the numbers: what recomputing halves is the memory held by saved activations — two graphs
# become one. The step's PEAK falls by less: it also holds backward's working arrays (the gradient
# flowing back through each layer, the weight gradients), which both ways need, and the low-memory
# way keeps pass 2's dropout masks (one byte per element) for the replay. Here it saves most of one
# graph — a quarter or so of the peak on this toy. On a real model the share depends on how much of
# the peak the activations are: `python3 -m tinymix bench` measures it on MiniLM.

# %%
figure, axes = plt.subplots(figsize=(6.5, 3.6))
bars = {"held by the graphs": (two_graphs, one_graph), "peak of the step": (peak, low_peak)}
for k, (name, (both, low)) in enumerate(bars.items()):
    axes.bar([k - 0.2], [both / 2**20], width=0.4, color="C0", label="both graphs" if k == 0 else None)
    axes.bar([k + 0.2], [low / 2**20], width=0.4, color="C1", label="recomputing pass 2" if k == 0 else None)
axes.set_xticks(range(len(bars)), list(bars))
axes.set(ylabel="MiB (tracemalloc)", title="one AdaMix step: recomputing halves the graphs, not the peak")
axes.legend(fontsize=8)
save_figure(figure, "12_recomputing_memory.png")

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 12 --exercises` runs only these cells).
#
# 12.1 — A consistency weight of 0 switches the second pass off (lesson 11). How many forward passes
# does `two_pass_backward(..., consistency_weight=0, low_memory=True)` run?

# %% exercise 12.1
from exercises import check

forward_passes = ...             # a whole number
check("12.1", forward_passes)

# %% [markdown]
# 12.2 — Which of these would make the low-memory gradients differ from the plain ones?
# (a) the replay of pass 2 draws its routes afresh; (b) the replay draws new dropout masks;
# (c) pass 2 runs under no_grad the first time; (d) the optimizer steps between pass 1's backward
# and the replay. Answer with the letters, e.g. "ab".

# %% exercise 12.2
from exercises import check

would_differ = ...               # a string of letters
check("12.2", would_differ)

# %% [markdown]
# In the library: `tinymix/adamix.py` — `two_pass_backward` (with `low_memory=True`, the five steps
# above, in its docstring); `tinymix/functional.py` — `dropout_tape` records and replays dropout
# masks; `tinymix/train.py` — `train` calls `two_pass_backward` at every step (`--low-memory`);
# `tinymix/bench/` — the memory benchmark on MiniLM.
