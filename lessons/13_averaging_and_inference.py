# %% [markdown]
# # Lesson 13 — averaging experts, and the inference modes
#
# Objective: understand AdaMix's inference — collapse each mixture into ONE module by averaging its
# experts' weights — know exactly when that equals averaging the experts' OUTPUTS (an ensemble) and
# when it only approximates it, and compare the alternatives the paper tests.
#
# Prerequisites: lessons 08-11.
#
# After training, a mixture of M experts could be used in three ways (docs/adamix.md section 6):
#
#     average  each mixture acts as one Linear with the mean of its experts' weights and biases
#              (AdaMix proper; `merge` makes it permanent: the model is then one adapter / LoRA)
#     random   a random expert per example (the official code's default flag)
#     fixed    every input through expert k
#
# Averaging WEIGHTS costs one module. The "right" answer it stands in for is the ensemble: the mean
# of the experts' OUTPUTS, which costs M modules. When are they equal? For LoRA with B shared,
#
#     B mean_i(A_i) x = mean_i (B A_i x)          exactly: everything is linear.
#
# For LoRA with B NOT shared, mean(B_i) mean(A_i) is not mean(B_i A_i): the product of means misses
# the covariance of the B's and A's. For an adapter, even with the up-projection shared,
#
#     up(GELU(mean_i(D_i) h))  vs  mean_i up(GELU(D_i h))
#
# differ because GELU is not linear. Writing D_i = D_mean + t E_i (mean_i E_i = 0, t the spread of
# the experts), a Taylor expansion gives a gap of (1/2) GELU'' t^2 mean(E_i h)^2: second order in the
# spread. Averaging is accurate when the experts are close — which is exactly what the consistency
# loss (lesson 11) and the shared projection encourage.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import save_figure

import matplotlib.pyplot as plt

from tinymix import Tensor, adamix, backend, no_grad
from tinymix import functional as F
from tinymix.backend import host, xp
from tinymix.nn import Linear, Module, Parameter, kaiming_uniform
from tinymix.peft import Adapter, LoRALinear

backend.manual_seed(0)
C, r, M = 32, 4, 4
x = Tensor(backend.host_normal((64, C), 1.0))


class Holder(Module):
    """One module in a Module, so the library's model-level functions (set_inference_mode) apply."""

    def __init__(self, site):
        self.site = site

    def forward(self, x):
        return self.site(x)


def lora_site(share_B):
    base = Linear(C, C).requires_grad_(False)

    def make(shape, std):
        layer = Linear(shape[1], shape[0], bias=False)
        layer.weight = Parameter(backend.host_normal(shape, std))     # B random: a "trained" LoRA
        return layer
    A = adamix.make_mixture(lambda: make((r, C), 0.3), M)
    B = make((C, r), 0.3) if share_B else adamix.make_mixture(lambda: make((C, r), 0.3), M)
    return Holder(LoRALinear(base, A, B, alpha=8, rank=r, dropout=0.0))


def adapter_site():
    return Holder(Adapter(adamix.make_mixture(lambda: Linear(C, r, std=0.3), M), Linear(r, C, std=0.3)))


def relative_gap(model):
    """|average-mode output - mean of the M fixed-expert outputs| / |mean output|."""
    model.eval()
    with no_grad():
        adamix.set_inference_mode(model, "average")
        averaged = model(x).data
        outputs = []
        for k in range(M):
            adamix.set_inference_mode(model, "fixed", k)
            outputs.append(model(x).data)
        adamix.set_inference_mode(model, "average")
    ensemble = sum(outputs) / M
    return float(xp.sqrt(((averaged - ensemble) ** 2).sum() / (ensemble ** 2).sum()))


sites = {"LoRA, B shared": lora_site(share_B=True), "LoRA, nothing shared": lora_site(share_B=False),
         "adapter, up shared": adapter_site()}
# (With nothing shared, A and B each draw their own expert: "fixed k" uses A_k with B_k, the
# natural pairing for this comparison.)
gaps = {name: relative_gap(model) for name, model in sites.items()}
for name, gap in gaps.items():
    print(f"{name:22s}: weight average vs output ensemble, relative gap {gap:.1e}")
assert gaps["LoRA, B shared"] < 1e-6
assert gaps["LoRA, nothing shared"] > 1e-2 and gaps["adapter, up shared"] > 1e-3

# %% [markdown]
# ## The gap grows with the square of the spread
#
# Shrink every expert toward the experts' mean — D_i -> D_mean + t (D_i - D_mean) — and measure the
# gap for t from 1 down to 0.01. For the two nonlinear cases the log-log slope is 2 (the Taylor
# argument above); for LoRA with B shared it stays at float32 rounding for every t.

# %%
def shrink(mixture, t, original):
    mean = sum(original) / len(original)
    for expert, weights in zip(mixture.experts, original):
        expert.weight.data = (mean + t * (weights - mean)).astype(xp.float32)


spreads = host.logspace(-2, 0, 9)
curves = {}
for name, model in sites.items():
    mixtures = adamix.mixtures(model)
    originals = [[e.weight.data.copy() for e in m.experts] for m in mixtures]
    curves[name] = []
    for t in spreads:
        for m, original in zip(mixtures, originals):
            shrink(m, float(t), original)
        curves[name].append(max(relative_gap(model), 1e-9))
    for m, original in zip(mixtures, originals):
        shrink(m, 1.0, original)

figure, axes = plt.subplots(figsize=(6.8, 4.3))
for name, values in curves.items():
    axes.loglog(spreads, values, "o-", markersize=4, label=name)
axes.loglog(spreads, 0.5 * curves["adapter, up shared"][-1] * spreads ** 2, "k:", linewidth=1,
            label="slope 2 (for reference)")
axes.set(xlabel="spread of the experts around their mean, t", ylabel="relative gap: weight average vs ensemble",
         title="averaging experts: exact only when everything is linear")
axes.legend(fontsize=8)
save_figure(figure, "13_averaging_gap.png")

for name in ("LoRA, nothing shared", "adapter, up shared"):
    slope = host.polyfit(host.log(spreads[:6]), host.log(curves[name][:6]), 1)[0]
    print(f"{name}: log-log slope {slope:.2f}")
    assert abs(slope - 2) < 0.25
assert max(curves["LoRA, B shared"]) < 1e-6

# %% [markdown]
# ## The inference modes, and merging
#
# On a small AdaMix-adapter classifier: "random" gives each example its own expert (its output
# equals that expert's fixed-mode output, row by row); "average" is one module; `merge` replaces
# every mixture by its averaged Linear — bit-for-bit the average-mode predictions, with one module's
# parameters. The average is recomputed from the experts at every call: the official LoRA code
# cached it at the first evaluation and kept serving the stale copy after further training.

# %%
from tinymix import peft
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig

tiny = TransformerConfig(kind="encoder", vocab_size=40, hidden_size=C, num_layers=2, num_heads=4,
                         intermediate_size=4 * C, max_positions=16, dropout=0.0)
backend.manual_seed(0)
model = peft.get_peft_model(SequenceClassifier(Transformer(tiny), 2, dropout=0.0),
                            peft.AdaMixConfig(module="adapter", adapter=peft.AdapterConfig(bottleneck=r)))
for block in model.transformer.layers:                      # stand-in for training: large, spread experts
    for expert in block.ffn_adapter.down.experts:
        expert.weight.data = backend.host_normal(expert.weight.shape, 1.0)
    block.ffn_adapter.up.weight.data = backend.host_normal(block.ffn_adapter.up.weight.shape, 1.0)
model.classifier.weight.data = backend.host_normal(model.classifier.weight.shape, 1.0)
ids = backend.host_rng.integers(1, 40, size=(6, 9))
model.eval()
with no_grad():
    fixed = []
    for k in range(M):
        adamix.set_inference_mode(model, "fixed", k)
        fixed.append(model(ids).data)
    adamix.set_inference_mode(model, "random")
    random_logits = model(ids).data
    chosen = [m.route.index for m in adamix.mixtures(model)]
    adamix.set_inference_mode(model, "average")
    averaged = model(ids).data

spread = float(abs(fixed[0] - fixed[1]).max())
print(f"logits of expert 0 and expert 1 (fixed mode) differ by up to {spread:.2f}")
assert spread > 0.1, "the experts really differ, so the equalities below mean something"
print(f"random routing, experts per example (layer 0 / layer 1): "
      f"{list(zip(chosen[0].tolist(), chosen[1].tolist()))}")
assert not xp.allclose(random_logits, averaged, atol=1e-3)

# inside one mixture in random mode: row b of the output is expert index[b] applied to row b
mixture = adamix.mixtures(model)[0]
h = Tensor(backend.host_normal((6, 9, C), 1.0))
with no_grad():
    adamix.set_inference_mode(model, "random")
    out = mixture(h).data
    index = mixture.route.index
    adamix.set_inference_mode(model, "average")
    for b in range(6):
        assert xp.allclose(out[b], mixture.experts[int(index[b])](h[b:b + 1]).data[0], atol=1e-5)
print(f"random mode inside one mixture: example b used expert {index.tolist()}, row by row")

old = mixture.experts[1].weight.data.copy()
mixture.experts[1].weight.data = backend.host_normal(old.shape, 1.0)   # "more training" of one expert
with no_grad():
    moved = float(abs(model(ids).data - averaged).max())
print(f"after changing one expert, the average-mode logits moved by {moved:.2e}")
assert moved > 0.01, "the average follows the experts: no stale copy"
mixture.experts[1].weight.data = old

before_merge = model.num_parameters(trainable_only=True)
peft.merge(model)
with no_grad():
    merged = model(ids).data
assert xp.allclose(merged, averaged, atol=1e-6)
assert not adamix.mixtures(model)
print(f"merged: identical predictions; trainable parameters {before_merge:,d} -> "
      f"{model.num_parameters(trainable_only=True):,d}")
assert model.num_parameters(trainable_only=True) == 2 * ((C * r + r) + (r * C + C)) + (C * 2 + 2)

# %% [markdown]
# Which mode is best is an empirical question. The paper (Table 7, Fig. 5) finds merging beats the
# average random-routing run and matches the best one, and beats fixed routing; lesson 14 repeats
# the comparison in miniature on real sentences.
#
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 13 --exercises` runs only these cells).
#
# 13.1 — A mixture of two experts, W1 = [[1, 2], [3, 4]] with bias [1, 0] and W2 = [[0, 2], [1, 0]]
# with bias [-1, 2]. What does it output in "average" mode for the input x = [1, 1]?

# %% exercise 13.1
from exercises import check

average_mode_output = ...        # two numbers
check("13.1", average_mode_output)

# %% [markdown]
# 13.2 — For which of these does averaging the experts' WEIGHTS give exactly the ensemble (the mean
# of the experts' outputs)? (a) LoRA, A mixed, B shared; (b) LoRA, A shared, B mixed; (c) LoRA, A and
# B both mixed; (d) adapter, down mixed, up shared. Answer with the letters. The check decides by
# measuring each case with the library.

# %% exercise 13.2
from exercises import check

exact_cases = ...                # a string of letters
check("13.2", exact_cases)

# %% [markdown]
# In the library: `tinymix/adamix.py` — `Mixture.averaged_weights` (recomputed at every call),
# `Mixture._random_per_example`, `set_inference_mode`, `Mixture.averaged` and `merge_experts`
# (steps 5-6 of the file); `tinymix/peft.py` — `merge`, `merged_parameter_count`, and
# `LoRALinear.delta_weight`, which folds an averaged AdaMix-LoRA into its frozen weight.
#
# After lessons 10-13, do assignment A5 (AdaMix: routing, consistency, averaging, merging):
# `python3 -m tinymix.grade lessons/assignments/a5_adamix.py`.
