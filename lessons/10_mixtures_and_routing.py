# %% [markdown]
# # Lesson 10 — mixtures of experts and stochastic routing
#
# Objective: build AdaMix's mixture — M copies ("experts") of one projection — and its routing rule;
# prove what makes it cheap (one expert computed per call, one gradient per call); and see what
# the optimizer does to the experts that sat a step out — the official code keeps moving them.
#
# Prerequisites: lessons 08 (adapters) and 09 (LoRA).
#
# A classic mixture of experts (Shazeer et al.) learns a gate that sends each token to its best
# experts; the gate needs load-balancing losses and the experts drift apart. AdaMix drops the gate:
#
#     while training, at every forward call, each mixture picks ONE expert uniformly at random,
#     and the WHOLE batch goes through it.
#
# So a forward pass costs exactly what it costs with a single module. Per layer, the
# down-projection (or LoRA's A) and the up-projection (or B) draw their indices independently; by
# default the up projection / B is shared — one Linear for all experts, not a mixture at all
# (docs/adamix.md sections 3 and 5). The draws come from a host-side generator seeded by the user, so a
# seed fixes the routes on NumPy and on CuPy alike.
#
# How the experts start follows the official code (docs/adamix.md section 7): an adapter mixture's
# experts are initialised independently; AdaMix-LoRA's A-experts start as identical copies (its
# code deep-copies one initialised A). The last section checks both.
#
# To SEE which experts a call computes, the experts below are a Linear that counts its own forward
# calls — a spy. Nothing else about them differs from the library's Linear.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget, save_figure

import matplotlib.pyplot as plt

from tinymix import Tensor, adamix, backend
from tinymix.backend import host, xp
from tinymix.nn import Linear
from tinymix.optim import AdamW


class CountingLinear(Linear):
    """A Linear that counts its forward calls: a spy on which experts a mixture computes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


backend.manual_seed(0)
C, r, M = 32, 8, 4
mixture = adamix.make_mixture(lambda: CountingLinear(C, r), num_experts=M)   # M independent inits
mixture.train()
x = Tensor(backend.host_normal((5, 7, C), 1.0))                          # (B, T, C)
out = mixture(x)
chosen = mixture.route.index
calls = [e.calls for e in mixture.experts]
print(f"{M} experts of {mixture.experts[0]}; this call used expert {chosen}; forward calls per expert "
      f"{calls}; output {out.shape}")
assert calls == [int(i == chosen) for i in range(M)], "one call computes ONE expert: the chosen one"
assert xp.allclose(out.data, mixture.experts[chosen](x).data)

# %% [markdown]
# ## One expert per call, every call
#
# The spy over 40 more training calls: at each call exactly one expert's forward ran, and it was
# the expert the route names. A mixture that computed every expert and returned the chosen output
# would give the same numbers — and fail this check, with M forward calls per call.

# %%
outcomes = []
for _ in range(40):
    before = [e.calls for e in mixture.experts]
    mixture(x)
    ran = [e.calls - b for e, b in zip(mixture.experts, before)]
    outcomes.append((mixture.route.index, ran))
assert all(ran == [int(i == index) for i in range(M)] for index, ran in outcomes)
print(f"40 calls: each ran exactly one expert's forward, the routed one; routes "
      f"{[index for index, _ in outcomes][:12]} ...")

# %% [markdown]
# ## One gradient per call
#
# The graph of a call contains only the chosen expert, so backward reaches only it: the other
# experts' `.grad` stays None. On the FIRST optimizer step that also means the others are left
# alone — an expert gets optimizer state (Adam's moments) at its first gradient, and an expert
# without state is skipped.

# %%
mixture.zero_grad()
out = mixture(x)
chosen = mixture.route.index
out.sum().backward()
with_grad = [i for i, e in enumerate(mixture.experts) if e.weight.grad is not None]
assert with_grad == [chosen]
before = [e.weight.data.copy() for e in mixture.experts]
AdamW(mixture.parameters(), lr=1e-2, weight_decay=0.1).step()
changed = [i for i, e in enumerate(mixture.experts) if not xp.array_equal(e.weight.data, before[i])]
print(f"gradients reached experts {with_grad}; the first optimizer step changed experts {changed}")
assert changed == [chosen]

# %% [markdown]
# ## The steps after: experts that sat out keep moving ("dense" updates)
#
# What happens to an expert on a LATER step where it was not routed? The official AdaMix code runs
# on PyTorch 1.x, whose `zero_grad()` fills every gradient with ZEROS rather than deleting it. So an
# expert that was routed once has a (zero) gradient at every later step, and AdamW updates it at
# every step: its momentum m keeps moving it, and weight decay shrinks it,
#
#     m = b1 m + (1 - b1) * 0,    p -= lr wd p,    p -= lr m^ / (sqrt(v^) + eps)
#
# tinymix does the same by default — "dense" expert updates (`AdamW(..., lazy=False)`,
# `TrainConfig.expert_updates = "dense"`). The other choice, "lazy" (`lazy=True`), skips an expert
# on every step it was not routed, as a sparse-expert optimizer would — and as PyTorch >= 2 does,
# whose `zero_grad()` sets gradients to None. Below: the same mixture, the same seed (hence the
# same routes), trained both ways on a small regression task, and how far each expert moved from
# its initial weights after every step.

# %%
def train_experts(lazy, steps):
    """Distance of each expert from its initial weights after every step, whether each expert's
    weights changed at each step, and the route of each step."""
    backend.manual_seed(1)
    m = adamix.make_mixture(lambda: Linear(C, r, std=0.2), num_experts=M).train()
    inputs = Tensor(backend.host_normal((64, C), 1.0))
    target = Tensor(backend.host_normal((64, r), 1.0))
    initial = [e.weight.data.copy() for e in m.experts]
    optimizer = AdamW(m.parameters(), lr=2e-2, weight_decay=0.1, lazy=lazy)
    distances, moved, routes = [], [], []
    for _ in range(steps):
        previous = [e.weight.data.copy() for e in m.experts]
        optimizer.zero_grad()
        ((m(inputs) - target) ** 2).mean().backward()
        routes.append(m.route.index)
        optimizer.step()
        moved.append([not xp.array_equal(e.weight.data, p) for e, p in zip(m.experts, previous)])
        distances.append([float(xp.sqrt(((e.weight.data - w0) ** 2).sum())) for e, w0 in zip(m.experts, initial)])
    return host.array(distances), host.array(moved), routes


steps = budget(60, 30)
assert AdamW([Tensor([0.0], requires_grad=True)]).lazy is False, "the library's default is dense"
dense, dense_moved, dense_routes = train_experts(lazy=False, steps=steps)
lazy, lazy_moved, lazy_routes = train_experts(lazy=True, steps=steps)
assert dense_routes == lazy_routes, "same seed, same routes: only the optimizer differs"
routed = host.array([[route == k for k in range(M)] for route in dense_routes])      # (steps, M)
seen = host.cumsum(routed, axis=0) > 0                  # has expert k been routed at or before step t?
print(f"routes of the first 12 steps: {dense_routes[:12]}")
print("distance from the initial weights after the last step, per expert:")
print(f"  dense {host.round(dense[-1], 3).tolist()}   lazy {host.round(lazy[-1], 3).tolist()}")
print(f"  an expert moved on {dense_moved.sum() / max(1, seen.sum()):.0%} of the steps after its first route "
      f"(dense) and on {lazy_moved.sum() / max(1, seen.sum()):.0%} of them (lazy, = how often it was routed)")
ratio = dense[-1].sum() / lazy[-1].sum()
print(f"  dense moved the experts {ratio:.2f}x as far as lazy, in total")
assert (dense_moved == seen).all(), "dense: an expert moves at every step from its first route on, never before"
assert (lazy_moved == routed).all(), "lazy: an expert moves exactly on the steps it was routed"
assert ratio > 1.0, "dense updates carry the experts farther"

figure, panels = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for panel, distances, name in ((panels[0], dense, "dense (official code, tinymix default)"),
                               (panels[1], lazy, "lazy (lazy=True; PyTorch >= 2 behaviour)")):
    for k in range(M):
        panel.plot(range(1, steps + 1), distances[:, k], color=f"C{k}", label=f"expert {k}")
        hit = host.nonzero(routed[:, k])[0]
        panel.plot(hit + 1, distances[hit, k], "o", color=f"C{k}", markersize=3)
    panel.set(xlabel="step (dots: the expert was routed)", title=name)
panels[0].set(ylabel="distance from initial weights")
panels[0].legend(fontsize=8)
save_figure(figure, "10_dense_vs_lazy_updates.png")

# %% [markdown]
# Read the figure: in the lazy panel each line is flat between its dots; in the dense panel a line
# keeps rising after its first dot (momentum) even through the steps its expert sat out. The
# official code is dense, and so is tinymix by default; "lazy" is an ablation (`--expert-updates
# lazy` in training). How much farther dense updates carry an expert depends on the task: on this
# toy with its fixed target, the factor printed above; in docs/adamix.md section 7b's simulation about
# 1.5x per unit of learning rate at M = 4 and 2x at M = 8 — so the learning rate that suits one
# choice is not the one that suits the other.

# %% [markdown]
# ## Uniform, independent, reproducible
#
# Each index is uniform on {0, ..., M-1}. Over n draws the counts should be n/M each, up to noise:
# Pearson's statistic X^2 = sum (count - n/M)^2 / (n/M) follows a chi-square law with M - 1 degrees
# of freedom, which exceeds 16.3 with probability 0.001 for M = 4. And the same seed gives the same
# routes.

# %%
def routes(seed, calls):
    backend.manual_seed(seed)
    m = adamix.make_mixture(lambda: Linear(C, r), num_experts=M).train()
    picked = []
    for _ in range(calls):
        m(x)
        picked.append(m.route.index)
    return picked


draws = routes(seed=0, calls=budget(4000, 1000))
counts = host.bincount(draws, minlength=M)
expected = len(draws) / M
chi_square = float(((counts - expected) ** 2 / expected).sum())
print(f"expert counts over {len(draws)} calls: {counts.tolist()}; X^2 = {chi_square:.2f} (< 16.3)")
assert chi_square < 16.3
assert routes(seed=0, calls=50) == draws[:50] and routes(seed=1, calls=50) != draws[:50]

# %% [markdown]
# ## In a model: one route per mixture, per forward pass
#
# An AdaMix-adapter model has one mixture of down-projections per layer (the up-projections are
# shared); each draws its own index at every forward pass. AdaMix-LoRA instead has A-mixtures at the
# query and at the value projection of each layer, and these two use the SAME index (the query's
# mixture draws it, the value's follows), as in the official code. Below: the routes of a small
# 6-layer encoder over 40 training steps, the shared index of AdaMix-LoRA, and how the library's
# default (`expert_init="official"`) starts each kind of mixture: adapter experts independent,
# AdaMix-LoRA's A-experts identical copies.

# %%
from tinymix import peft
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig

tiny = TransformerConfig(kind="encoder", vocab_size=40, hidden_size=C, num_layers=6, num_heads=4,
                         intermediate_size=4 * C, max_positions=16, dropout=0.0)
backend.manual_seed(0)
model = peft.get_peft_model(SequenceClassifier(Transformer(tiny), 2), peft.AdaMixConfig(module="adapter"))
model.train()
ids = backend.host_rng.integers(1, 40, size=(4, 10))
mixtures = adamix.mixtures(model)
print(f"{len(mixtures)} mixtures:", [name for name, m in model.named_modules() if isinstance(m, adamix.Mixture)][:2], "...")
assert len(mixtures) == tiny.num_layers          # down-projections only; the up-projection is shared
history = []
for step in range(40):
    model(ids)
    history.append([m.route.index for m in mixtures])
history = host.array(history).T                 # (layers, steps)

backend.manual_seed(0)
lora_model = peft.get_peft_model(SequenceClassifier(Transformer(tiny), 2), peft.AdaMixConfig(module="lora"))
lora_model.train()
for _ in range(10):
    lora_model(ids)
    for block in lora_model.transformer.layers:
        assert block.attention.query.lora_A.route.index == block.attention.value.lora_A.route.index
print("AdaMix-LoRA: query and value A-mixtures of each layer always used the same expert")


def experts_identical(mixture):
    first = mixture.experts[0].weight.data
    return all(xp.array_equal(e.weight.data, first) for e in mixture.experts[1:])


assert peft.AdaMixConfig().expert_init == "official"
assert not any(experts_identical(m) for m in adamix.mixtures(model)), "adapter experts start independent"
assert all(experts_identical(m) for m in adamix.mixtures(lora_model)), "LoRA A-experts start as identical copies"
print("default initialisation: adapter experts independent, AdaMix-LoRA A-experts identical (official code)")

figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [3, 1]})
image = left.imshow(history, cmap=plt.get_cmap("tab10", 10), vmin=-0.5, vmax=9.5, aspect="auto",
                    interpolation="nearest")
left.set(xlabel="training step (forward pass)", ylabel="layer", title="expert chosen by each layer's mixture")
colorbar = figure.colorbar(image, ax=left, ticks=range(M), fraction=0.03)
colorbar.ax.set_ylim(-0.5, M - 0.5)
colorbar.set_label("expert")
right.bar(range(M), counts, color=[plt.get_cmap("tab10")(i) for i in range(M)])
right.axhline(expected, color="black", linewidth=0.8, linestyle="--")
right.set(xlabel="expert", ylabel="times chosen", title=f"{len(draws)} draws", xticks=range(M))
save_figure(figure, "10_routing.png")

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 10 --exercises` runs only these cells).
#
# 10.1 — An AdaMix training step runs TWO forward passes (lesson 11), each drawing its own expert.
# With M = 4, what is the probability that a given expert is routed at least once in a step?

# %% exercise 10.1
from exercises import check

routed_in_a_step = ...           # a probability
check("10.1", routed_in_a_step)

# %% [markdown]
# 10.2 — A training run of 31 steps (two passes each, M = 4): on how many steps is a given expert
# routed, on average? (With dense updates it is stepped on every step after its first route anyway;
# this is how many of them bring it a real gradient.)

# %% exercise 10.2
from exercises import check

steps_with_a_gradient = ...      # a number
check("10.2", steps_with_a_gradient)

# %% [markdown]
# 10.3 — Dense updates: AdamW with betas (0.9, 0.999), lr 1, no weight decay; a parameter gets a
# gradient g at step 1 and zero gradients after. Its step-1 update has size lr (Adam normalises).
# How large is its step-2 update, as a fraction of the step-1 update?

# %% exercise 10.3
from exercises import check

second_step_fraction = ...       # a number between 0 and 1
check("10.3", second_step_fraction)

# %% [markdown]
# In the library: `tinymix/adamix.py` — `Mixture` (steps 1-3 at the top of the file: `forward`
# draws with `backend.host_choice`), `Route` (the index shared by AdaMix-LoRA's query and value),
# `make_mixture` (`expert_init`), `mixtures`; `tinymix/peft.py` — `_projection` decides which side
# is shared and resolves `expert_init="official"`; `tinymix/optim.py` — `Optimizer.step` and its
# `lazy` flag (dense by default); `tinymix/train.py` — `TrainConfig.expert_updates`;
# `tinymix/backend.py` — `host_rng`, `manual_seed`.
