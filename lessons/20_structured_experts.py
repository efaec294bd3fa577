# %% [markdown]
# # Lesson 20 — structured experts: Kronecker sums, Hadamard products, tensor trains
#
# Objective: meet three ways of making an adapter's matrices cheaper by giving them structure — PHM's
# sums of Kronecker products, the Hadamard adapter's element-wise scale, LoRETTA's tensor trains —
# prove each structure's formula against the library, count what each saves, and see which of them
# AdaMix can average EXACTLY.
#
# Prerequisites: lessons 07 (counting), 08 (adapters), 09 (LoRA) and 13 (averaging experts).
#
# **PHM** (parameterized hypercomplex multiplication; the PHM adapter, and MixPHM, its AdaMix-style
# mixture): a layer's (in, out) matrix is a sum of n Kronecker products
#
#     H = sum_{s=1..n} A_s (x) W_s,     A_s (n, n) "rules",  W_s = L_s R_s (in/n, out/n), rank k
#
# Block (i, j) of H, of size (in/n, out/n), is sum_s A_s[i, j] W_s: n small matrices, mixed by the
# rules, tile the big one. The rules (n^3 numbers) are shared by every PHM layer of a model; a layer
# owns n k (in/n + out/n) numbers plus its bias, against in out for a dense matrix.
#
# **The Hadamard adapter**: after each layer's attention, A' = w * A + b, element by element (w = 1,
# b = 0 at the start): 2d numbers per layer. It is AFFINE, which has two consequences. It folds
# exactly into the attention's output projection, and AdaMix's average of Hadamard experts is exact:
#
#     mean_k (w_k * A + b_k) = (mean_k w_k) * A + mean_k b_k        for every A
#
# An adapter's GELU breaks that equality (lesson 13). So does averaging PHM experts factor by factor:
# mean(L) mean(R) is not mean(L R), although averaging their dense matrices H is exact.
#
# **LoRETTA**: a tensor-train matrix. W (in, out), viewed as a tensor of shape (n_1, ..., n_D) (the
# factors of `in`, then those of `out`), is never stored; cores G_k (r_{k-1}, n_k, r_k), r_0 = r_D = 1,
# give each entry as a product of small matrices:
#
#     W[i_1, ..., i_D] = G_1[:, i_1, :] G_2[:, i_2, :] ... G_D[:, i_D, :]
#
# sum_k r_{k-1} n_k r_k numbers instead of in x out. LoRETTA-rep puts two such matrices in place of
# LoRA's A and B; LoRETTA-adp builds a bottleneck adapter from them.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import ROOT, save_figure

import matplotlib.pyplot as plt

from tinymix import Tensor, adamix, backend, methods, no_grad, peft
from tinymix.backend import host, xp
from tinymix.neighbours import adalora, hadamard, loretta, phm
from tinymix.nn import Linear
from tinymix.store import checkpoint
from tinymix.transformer import SequenceClassifier, Transformer, TransformerConfig

backend.manual_seed(0)
n, k, d_in, d_out = 4, 2, 32, 16
rules = phm.make_rules(n)                                    # (n, n, n): A_1 .. A_n, shared
layer = phm.PHMLinear(d_in, d_out, rules, k)
W = layer.W_left.data @ layer.W_right.data                   # (n, in/n, out/n): W_s = L_s R_s
explicit = sum(xp.kron(rules.data[s], W[s]) for s in range(n))          # (in, out)
with no_grad():
    H = layer.weight.data.T                                  # the library's, (out, in) -> (in, out)
print(f"PHM {d_in} -> {d_out}, n = {n}, k = {k}: H from the layer vs the explicit Kronecker sum, "
      f"max difference {float(abs(H - explicit).max()):.1e}")
assert H.shape == (d_in, d_out)
assert xp.allclose(H, explicit, atol=1e-6), "H = sum_s A_s (x) W_s"
assert xp.allclose(layer(Tensor(xp.eye(d_in, dtype=xp.float32))).data, explicit + layer.bias.data, atol=1e-6)


def phm_size(n, k, d_in, d_out):
    """A PHM layer's own numbers (the shared rules not counted): n k (in/n + out/n) + out."""
    return n * k * (d_in // n + d_out // n) + d_out


assert layer.num_parameters() == phm_size(n, k, d_in, d_out), "the rules are the model's, not the layer's"
for n_, k_, a, b in ((4, 8, 384, 32), (4, 8, 32, 384)):      # the PHM adapter's down and up on MiniLM
    print(f"PHM {a} -> {b} (n {n_}, k {k_}): {phm_size(n_, k_, a, b):,d} numbers + {n_ ** 3} shared rules; "
          f"a dense Linear: {a * b + b:,d}")

# %% [markdown]
# ## Which structured experts average exactly
#
# Four mixtures of M = 4 experts with spread weights, each compared with the ensemble it stands in
# for (the mean of its experts' outputs), as in lesson 13: Hadamard experts; an adapter's
# down-projections (a GELU follows them); and PHM up-projections — the last map of the PHM adapter,
# its down-projection shared as MixPHM has it — averaged two ways: as dense matrices H (AdaMix's
# merge, `phm.merge(model, how="dense")`, what the mixture's "average" inference computes) and factor
# by factor (MixPHM's own inference, `phm.average_factors`).

# %%
C, r, M = 32, 8, 4


def spread(mixture, std=0.3):
    """Stand-in for training: every Hadamard expert its own scale and bias."""
    for expert in mixture.experts:
        expert.scale.data = 1 + backend.host_normal((C,), std)
        expert.bias.data = backend.host_normal((C,), std)
    return mixture


def relative_gap(site, x, merged=None):
    """|merged output - mean of the M experts' outputs| / |mean|; merged: the average inference."""
    site.eval()
    with no_grad():
        outputs = []
        for expert in range(M):
            adamix.set_inference_mode(site, "fixed", expert)
            outputs.append(site(x).data)
        adamix.set_inference_mode(site, "average")
        averaged = site(x).data if merged is None else merged(site)(x).data
    ensemble = sum(outputs) / M
    return float(xp.sqrt(((averaged - ensemble) ** 2).sum() / (ensemble ** 2).sum()))


h = Tensor(backend.host_normal((16, 5, C), 1.0))             # what an adapter reads: (B, T, C)
z = Tensor(backend.host_normal((16, 5, r), 1.0))             # what an up-projection reads: (B, T, r)
phm_rules = phm.make_rules(n)
phm_experts = adamix.make_mixture(lambda: phm.PHMLinear(r, C, phm_rules, k), M)    # independent inits
gaps = {"Hadamard experts": relative_gap(spread(adamix.make_mixture(lambda: hadamard.Hadamard(C), M)), h),
        "adapter experts (GELU after)": relative_gap(peft.Adapter(
            adamix.make_mixture(lambda: Linear(C, r, std=0.3), M), Linear(r, C, std=0.3)), h),
        "PHM experts, dense H averaged": relative_gap(phm_experts, z),
        "PHM experts, factors averaged": relative_gap(phm_experts, z, phm.average_factors)}
for name, gap in gaps.items():
    print(f"{name:30s} merged vs the experts' mean output: relative gap {gap:.1e}")
assert gaps["Hadamard experts"] < 1e-6, "averaging Hadamard experts is exact"
assert gaps["PHM experts, dense H averaged"] < 1e-6
assert gaps["adapter experts (GELU after)"] > 1e-2 and gaps["PHM experts, factors averaged"] > 1e-2

# %% [markdown]
# In a model, `hadamard.merge` goes further: it replaces each mixture by its mean expert and folds
# that into the attention's output projection W_O (the adapter sits next to it with nothing
# nonlinear between), so the deployed model is the frozen model's shape with two changed weights per
# layer. Its predictions must be the average inference's, to float32 rounding.

# %%
tiny = TransformerConfig(kind="encoder", vocab_size=40, hidden_size=C, num_layers=2, num_heads=4,
                         intermediate_size=4 * C, max_positions=16, dropout=0.0)
backend.manual_seed(0)
model = peft.get_peft_model(SequenceClassifier(Transformer(tiny), 2, dropout=0.0), hadamard.HadamardConfig(num_experts=M))
for mixture in adamix.mixtures(model):
    spread(mixture, std=0.5)
model.classifier.weight.data = backend.host_normal(model.classifier.weight.shape, 1.0)   # a "trained" head
ids = backend.host_rng.integers(1, 40, size=(6, 9))
model.eval()
with no_grad():
    adamix.set_inference_mode(model, "fixed", 0)
    first_expert = model(ids).data
    adamix.set_inference_mode(model, "average")
    averaged = model(ids).data
    hadamard.merge(model)
    merged = model(ids).data
left_over = [m for _, m in model.named_modules() if isinstance(m, (hadamard.Hadamard, adamix.Mixture))]
print(f"Hadamard mixtures merged and folded into W_O: logits off the average inference by "
      f"{float(abs(merged - averaged).max()):.1e} (expert 0 alone: {float(abs(first_expert - averaged).max()):.1e}); "
      f"{len(left_over)} Hadamard modules left")
assert not xp.allclose(first_expert, averaged, atol=1e-2), "the experts differ, so the equality means something"
assert not left_over
assert xp.allclose(merged, averaged, atol=1e-5), "the merged Hadamard model predicts as the average inference"

# %% [markdown]
# ## A tensor-train matrix, contracted
#
# LoRETTA's A factor on MiniLM: 384 -> 8 at tensor rank 5. The library factors 384 as 8 x 6 x 8, so W
# is a 4-way tensor (8, 6, 8, 8) with ranks (1, 5, 5, 5, 1). Below, W is rebuilt from the cores by
# contracting the shared rank index of each neighbouring pair (`xp.tensordot`), and one entry by the
# product of four small matrices, as in the formula; both must equal `TTLinear.full()`.

# %%
backend.manual_seed(0)
tt = loretta.TTLinear(384, 8, rank=5, bias=False)
cores = [c.core.data for c in tt.cores]
print(f"shape {tt.shape}; cores {[tuple(core.shape) for core in cores]}")
contracted = cores[0]
for core in cores[1:]:
    contracted = xp.tensordot(contracted, core, axes=([-1], [0]))   # (1, n_1, ..., n_k, r_k)
contracted = contracted.reshape(384, 8)
with no_grad():
    full = tt.full().data
index = (3, 4, 5, 6)                                         # W[i_1, i_2, i_3, i_4]
entry = cores[0][:, index[0], :]
for core, i in zip(cores[1:], index[1:]):
    entry = entry @ core[:, i, :]
row = (index[0] * 6 + index[1]) * 8 + index[2]
print(f"contraction vs the library: max difference {float(abs(contracted - full).max()):.1e}; "
      f"W[{row}, {index[3]}] = {float(full[row, index[3]]):+.5f} = G1 G2 G3 G4 = {float(entry[0, 0]):+.5f}")
assert xp.allclose(contracted, full, atol=1e-6), "W is the contraction of its cores"
assert abs(float(entry[0, 0]) - float(full[row, index[3]])) < 1e-6
ranks = [1, 5, 5, 5, 1]
by_formula = sum(ranks[i] * size * ranks[i + 1] for i, size in enumerate(tt.shape))
print(f"numbers: {tt.num_parameters():,d} in the cores (formula {by_formula:,d}), a dense 384 x 8: {384 * 8:,d}")
assert tt.num_parameters() == by_formula == loretta.tt_parameters(384, 8, 5, bias=False)

# %% [markdown]
# ## What each method trains and deploys, on MiniLM
#
# Every method as the command line builds it (`tinymix/methods.py`, each at its paper's defaults
# scaled to MiniLM), injected into a model of MiniLM's shape. Only the shape matters for these
# counts, so the model's vocabulary is cut to one word (the embeddings are frozen and counted by no
# column). "Deployed" is what a model must add at inference (`peft.deployed_parameter_count`): a
# mixture as one expert, a prefix without its MLP, AdaLoRA after its final allocation (here 4
# triplets per matrix; any allocation of the same total counts the same on these square matrices).
# The Hadamard and LoRA updates can also be folded into the frozen weights (zero added latency).
#
# Accuracy, where the runs exist: movie reviews, the first 1,000 training sentences, 10 epochs, the
# mean over seeds of the deployed model's test accuracy (docs/experiments/nlu-small/final/). A method
# without runs there says "not run yet" (`python3 -m tinymix compare --suite neighbours` makes them).

# %%
NAMES = ["adapter", "lora", "adamix", "adamix-lora", "adalora", "phm", "mixphm", "hadamard", "loretta-rep",
         "loretta-adp", "prefix", "unipelt-ap", "unipelt", "ft-top2"]
shape = TransformerConfig(vocab_size=1)                    # the defaults are MiniLM's shape
d, L, head = shape.hidden_size, shape.num_layers, 2 * shape.hidden_size + 2
RESULTS = ROOT / "docs" / "experiments" / "nlu-small" / "final"


def accuracy_of(name):
    runs = sorted((RESULTS / name).glob("seed-*/results.json"))
    scores = [checkpoint.load_json(path)["merged_test_accuracy"] for path in runs]
    if not scores:
        return "not run yet"
    spread_ = f" +- {host.std(scores, ddof=1):.3f}" if len(scores) > 1 else ""
    return f"{host.mean(scores):.3f}{spread_} ({len(scores)} seeds)"


models, counts = {}, {}
for name in NAMES:
    backend.manual_seed(0)
    config = methods.METHODS[name].build(methods.Settings(total_steps=100))
    model = peft.get_peft_model(SequenceClassifier(Transformer(shape), 2), config)
    for _, svd in adalora.svd_layers(model):               # AdaLoRA: its final budget, target_r per matrix
        svd.kept = host.arange(svd.rank) < config.target_r
    models[name] = model
    counts[name] = (model.num_parameters(trainable_only=True), peft.deployed_parameter_count(model))
print(f"{'method':24s} {'trainable':>11s} {'deployed':>10s}   test accuracy")
for name in NAMES:
    trainable, deployed = counts[name]
    print(f"{methods.METHODS[name].label:24s} {trainable:11,d} {deployed:10,d}   {accuracy_of(name)}")

# the counts by formula, for the structured ones
config = phm.PHMAdapterConfig()
bottleneck, M_ = d // config.reduction_factor, methods.Settings().num_experts
down, up = phm_size(config.n, config.phm_rank, d, bottleneck), phm_size(config.n, config.phm_rank, bottleneck, d)
assert counts["phm"] == (L * (down + up) + config.n ** 3 + head,) * 2
assert counts["mixphm"] == (L * (down + M_ * up) + config.n ** 3 + head, L * (down + up) + config.n ** 3 + head)
assert counts["hadamard"][0] == L * (2 * d + 2 * d) + head, "w and b, and the LayerNorm after, per layer"
tt_in_model = sum(m.num_parameters() for _, m in models["loretta-rep"].named_modules() if isinstance(m, loretta.TTLinear))
assert tt_in_model == L * 2 * (loretta.tt_parameters(d, 8, 5, False) + loretta.tt_parameters(8, d, 5, False))
assert all(deployed <= trainable for trainable, deployed in counts.values())

figure, axes = plt.subplots(figsize=(9, 5.2))
positions = host.arange(len(NAMES))
axes.barh(positions - 0.2, [counts[name][0] for name in NAMES], 0.4, color="C0", label="trainable")
axes.barh(positions + 0.2, [counts[name][1] for name in NAMES], 0.4, color="C1", label="deployed")
axes.set(xscale="log", yticks=positions, yticklabels=[methods.METHODS[name].label for name in NAMES],
         xlabel="numbers (log scale; the 770 of the task head included)",
         title="what each method trains and what it deploys, on MiniLM")
axes.invert_yaxis()
axes.legend(fontsize=8)
save_figure(figure, "20_parameters_per_method.png")

# %% [markdown]
# Read the table with the structures in mind: the Hadamard adapter trains the fewest numbers, an
# element-wise scale and shift being about the smallest map a layer can learn; PHM divides a matrix's
# numbers by about n (3,360 for 384 -> 32 against 12,320 dense), which lets the PHM adapter afford
# twice the adapter's bottleneck; a tensor train divides LoRA's factors by about seven at rank 5; a
# prefix trains millions through its MLP and deploys a table; UniPELT keeps all of its sub-modules.
# Fewer numbers are not better accuracy by themselves: the claims that would say so are written in
# docs/plans/neighbours.md before the runs that decide them.
#
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 20 --exercises` runs only these cells).
#
# 20.1 — A PHM layer from 768 to 64 with a bias, n = 4 and k = 8: how many numbers does the layer
# own (the shared rules not counted)?

# %% exercise 20.1
from exercises import check

phm_numbers = ...                # a whole number
check("20.1", phm_numbers)

# %% [markdown]
# 20.2 — A tensor-train matrix from 768 to 8 without a bias, at tensor rank 5, with the shape
# (8, 12, 8, 8): how many numbers do its cores hold?

# %% exercise 20.2
from exercises import check

tt_numbers = ...                 # a whole number
check("20.2", tt_numbers)

# %% [markdown]
# 20.3 — Which of these hold FEWER numbers than a dense Linear from 384 to 32 with a bias? (a) a PHM
# layer, n = 4, k = 8, with its n^3 rules counted; (b) a PHM layer, n = 32, k = 8, with its n^3 rules
# counted; (c) a tensor-train layer at rank 5, with a bias; (d) a tensor-train layer at rank 64, with
# a bias. (The library factors 384 as 8 x 6 x 8 and 32 as 8 x 4.) Answer with the letters; the check
# counts with the library.

# %% exercise 20.3
from exercises import check

smaller = ...                    # a string of letters
check("20.3", smaller)

# %% [markdown]
# In the library: `tinymix/neighbours/phm.py` — `PHMLinear.weight` (the Kronecker sum), `make_rules`,
# `PHMAdapter`, `average_factors` and `merge` (how="factors" or "dense"); `tinymix/neighbours/hadamard.py`
# — `Hadamard`, `inject` (num_experts > 1: AdaMix over it), `merge` (the fold into W_O);
# `tinymix/neighbours/loretta.py` — `factorize`, `TTLinear.full`, `tt_parameters`; `tinymix/peft.py` —
# `deployed_parameter_count`; `tinymix/methods.py` — every method's defaults.
