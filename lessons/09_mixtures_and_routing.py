# %% [markdown]
# # Lesson 09 — mixtures of experts and stochastic routing
#
# Objective: build AdaMix's mixture — M copies ("experts") of one projection — and its routing rule,
# and prove the three properties that make it cheap: one expert per call, one gradient per call,
# and nothing else touched.
#
# Prerequisites: lessons 07 (adapters) and 08 (LoRA).
#
# A classic mixture of experts (Shazeer et al.) learns a gate that sends each token to its best
# experts; the gate needs load-balancing losses and the experts drift apart. AdaMix drops the gate:
#
#     while training, at every forward call, each mixture picks ONE expert uniformly at random,
#     and the WHOLE batch goes through it.
#
# So a training step costs exactly what a single module costs. Per layer, the down-projection (or
# LoRA's A) and the up-projection (or B) draw their indices independently; by default the up
# projection / B is shared — one Linear for all experts, not a mixture at all (adamix.md sections
# 3 and 5). The draws come from a host-side generator seeded by the user, so a seed fixes the
# routes on NumPy and on CuPy alike.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget, save_figure

import matplotlib.pyplot as plt
import numpy

from tinymix import Tensor, adamix, backend
from tinymix.backend import xp
from tinymix.nn import Linear
from tinymix.optim import AdamW

backend.manual_seed(0)
C, r, M = 32, 8, 4
mixture = adamix.make_mixture(lambda: Linear(C, r), num_experts=M)       # M independent inits
mixture.train()
x = Tensor(backend.host_normal((5, 7, C), 1.0))                          # (B, T, C)
out = mixture(x)
chosen = mixture.route.index
print(f"{M} experts of {mixture.experts[0]}; this call used expert {chosen}; output {out.shape}")
assert xp.allclose(out.data, mixture.experts[chosen](x).data)

# %% [markdown]
# ## One gradient per call
#
# The graph of this call contains only the chosen expert, so backward reaches only it. The optimizer
# skips parameters without a gradient — no update and no weight decay for the experts that sat
# out this step.

# %%
out.sum().backward()
with_grad = [i for i, e in enumerate(mixture.experts) if e.weight.grad is not None]
assert with_grad == [chosen]
before = [e.weight.data.copy() for e in mixture.experts]
AdamW(mixture.parameters(), lr=1e-2, weight_decay=0.1).step()
changed = [i for i, e in enumerate(mixture.experts) if not xp.array_equal(e.weight.data, before[i])]
print(f"gradients reached experts {with_grad}; the optimizer changed experts {changed}")
assert changed == [chosen]

# %% [markdown]
# ## Nothing else is computed
#
# A strong way to show the other experts are not even read: poison them with NaN. The output of a
# call is finite exactly when the call routed to the one clean expert.

# %%
for i, expert in enumerate(mixture.experts):
    if i != 2:
        expert.weight.data = xp.full_like(expert.weight.data, xp.nan)
outcomes = []
for _ in range(40):
    y = mixture(x)
    outcomes.append((mixture.route.index, bool(xp.isfinite(y.data).all())))
assert all(finite == (index == 2) for index, finite in outcomes)
print(f"{sum(f for _, f in outcomes)} of 40 calls routed to the clean expert, and only those were finite")

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
counts = numpy.bincount(draws, minlength=M)
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
# 6-layer encoder over 40 training steps, and the shared index of AdaMix-LoRA.

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
history = numpy.array(history).T                 # (layers, steps)

backend.manual_seed(0)
lora_model = peft.get_peft_model(SequenceClassifier(Transformer(tiny), 2), peft.AdaMixConfig(module="lora"))
lora_model.train()
for _ in range(10):
    lora_model(ids)
    for block in lora_model.transformer.layers:
        assert block.attention.query.lora_A.route.index == block.attention.value.lora_A.route.index
print("AdaMix-LoRA: query and value A-mixtures of each layer always used the same expert")

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
save_figure(figure, "09_routing.png")

# %% [markdown]
# In the library: `tinymix/adamix.py` — `Mixture` (steps 1-3 at the top of the file: `forward`
# draws with `backend.host_choice`), `Route` (the index shared by AdaMix-LoRA's query and value),
# `make_mixture`, `mixtures`; `tinymix/peft.py` — `_projection` decides which side is shared;
# `tinymix/backend.py` — `host_rng`, `manual_seed`.
