# %% [markdown]
# # Lesson 08 — adapters
#
# Objective: build the bottleneck adapter, place it where AdaMix's code places it, and understand
# its design facts: it is a residual branch; it can move a representation only inside one FIXED
# r-dimensional subspace (the up-projection's columns), just as LoRA can; and, unlike LoRA, it is
# NOT linear — the input decides how strongly each of those r directions is used, which lesson 13
# will show matters for averaging.
#
# Prerequisites: lessons 05 (the block) and 07 (freezing).
#
# An adapter is a small two-layer network added to a frozen layer's output h (width C):
#
#     adapter(h) = h + up(GELU(down(h))),   down: C -> r,  up: r -> C,  both with bias
#
# With r much smaller than C (16 against 384 here) it adds 2 C r + r + C parameters per site.
# AdaMix's code (and tinymix's default) puts ONE adapter per layer on the output of the FFN's
# second linear, before that sub-layer's dropout, residual add and layer norm:
#
#     h = output(GELU(intermediate(x)));  h = adapter(h);  out = LN(dropout(h) + x)
#
# Houlsby et al. add a second one after attention; Pfeiffer et al. one on the block's output.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import save_figure

import matplotlib.pyplot as plt

from tinymix import Tensor, backend, no_grad
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.nn import Linear
from tinymix.peft import Adapter

backend.manual_seed(0)
C, r = 64, 8
adapter = Adapter(Linear(C, r), Linear(r, C))          # weights N(0, 0.02), biases 0
h = Tensor(backend.host_normal((3, 5, C), 1.0))        # (B, T, C) activations
with no_grad():
    out = adapter(h).data
down, up = adapter.down, adapter.up
by_formula = h.data + F.gelu(h.data @ down.weight.data.T + down.bias.data).data @ up.weight.data.T + up.bias.data
assert out.shape == h.shape and xp.allclose(out, by_formula, atol=1e-6)
assert adapter.num_parameters() == 2 * C * r + r + C
print(f"adapter C={C}, r={r}: {adapter.num_parameters():,d} parameters, output shape {out.shape}")

# %% [markdown]
# ## Rank at most r, along directions that do not depend on h
#
# Around any input h, the adapter's branch b(h) = up(GELU(down(h))) changes with h through its
# Jacobian
#
#     db/dh = U diag(GELU'(D h + d)) D          (U: C x r, D: r x C)
#
# Two facts follow from that product.
#
# 1. Its rank is at most r: everything passes through an r-wide middle (less where a hidden unit
#    sits deep in GELU's flat negative tail, GELU' ~ 0, and drops out).
# 2. Every column of db/dh is a combination of the r columns of U — at EVERY input h. So the branch
#    can move the representation only inside one fixed r-dimensional subspace, the column space
#    of U, exactly as LoRA's update (alpha / r) B A x always lies in the column space of B. (It
#    also reads h only through the r rows of D, LoRA's A.)
#
# What depends on h is the diagonal in the middle: how strongly each of the r hidden units passes
# its signal. An adapter mixes a FIXED set of r output directions with gains that depend on the
# input; LoRA mixes the same kind of set with constant gains. That — not a wider choice of
# directions — is what the non-linearity buys.
#
# Below, the Jacobian of the adapter's branch (the module's output minus h) is built row by row with
# autograd at three random inputs, for r = 4 and r = 16 at C = 64: its numerical rank, the share of
# it that lies OUTSIDE the column space of U (about 1e-7: float32 rounding; the floor of the
# singular values in the figure is the same rounding), and how much it changes from one input to
# another.

# %%
def branch_jacobian(adapter, point):
    """(C, C) matrix of d branch_i / d h_j at one input vector `point` (C,), row by row; the branch is
    the adapter's output minus its input (the residual)."""
    rows = []
    for i in range(point.shape[0]):
        x = Tensor(point[None], requires_grad=True)                  # (1, C): Linear wants a matrix
        (adapter(x) - x)[0, i].backward()
        rows.append(x.grad[0])
    return xp.stack(rows)


def outside(matrix, basis):
    """|the part of matrix's columns outside the column space of basis| / |matrix| (Frobenius)."""
    q, _ = xp.linalg.qr(basis.astype(xp.float64))                    # orthonormal basis (C, k)
    m = matrix.astype(xp.float64)
    rest = m - q @ (q.T @ m)
    return float(xp.sqrt((rest ** 2).sum() / (m ** 2).sum()))


spectra, residuals = {}, {}
for rank in (4, 16):
    backend.manual_seed(rank)
    a = Adapter(Linear(C, rank, std=0.3), Linear(rank, C, std=0.3))   # larger weights: a trained-like adapter
    U = a.up.weight.data                                             # (C, rank)
    random_subspace = backend.host_normal((C, rank), 1.0)            # for contrast: any other r directions
    jacobians = [branch_jacobian(a, backend.host_normal((C,), 1.0)) for _ in range(3)]
    singular = xp.linalg.svd(jacobians[0], compute_uv=False)
    spectra[rank] = backend.to_numpy(singular)
    numerical_rank = int((singular > 1e-5 * singular[0]).sum())
    residuals[rank] = ([outside(J, U) for J in jacobians], [outside(J, random_subspace) for J in jacobians])
    change = max(float(abs(J - jacobians[0]).max() / abs(jacobians[0]).max()) for J in jacobians[1:])
    print(f"r = {rank:2d}: numerical rank {numerical_rank} (of {C}); outside col(U) at three inputs: "
          f"{', '.join(f'{v:.1e}' for v in residuals[rank][0])}; outside a random {rank}-dim subspace: "
          f"{', '.join(f'{v:.2f}' for v in residuals[rank][1])}; the Jacobian changes by up to {change:.0%} "
          f"between inputs")
    assert rank - 2 <= numerical_rank <= rank and float(singular[rank] / singular[0]) < 1e-5
    assert max(residuals[rank][0]) < 1e-5, "every column of db/dh lies in the column space of U"
    assert min(residuals[rank][1]) > 0.3, "... and not in just any r-dimensional subspace"
    assert change > 0.1, "the gains within that subspace do depend on h"

figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for rank, values in spectra.items():
    left.semilogy(range(1, C + 1), values + 1e-12, "o-", markersize=3, label=f"bottleneck r = {rank}")
left.set(xlabel="index of singular value", ylabel="singular value (log scale)", ylim=(1e-10, 10),
         title=f"branch Jacobian at one input (C = {C}): rank <= r")
left.legend()
for k, (rank, (in_U, in_random)) in enumerate(residuals.items()):
    positions = [k * 4 + i for i in range(3)]
    right.bar(positions, [max(v, 1e-9) for v in in_U], width=0.4, color="C0",
              label="outside col(U) (float32 rounding)" if k == 0 else None)
    right.bar([p + 0.4 for p in positions], in_random, width=0.4, color="C1",
              label="outside a random r-dim subspace" if k == 0 else None)
right.set_yscale("log")
right.set_xticks([1.2, 5.2], ["r = 4: three inputs", "r = 16: three inputs"])
right.set(ylabel="share of db/dh outside the subspace (log)", ylim=(1e-9, 1e3),
          title="the directions are fixed: col(U), at every input")
right.legend(fontsize=8, loc="upper center")
save_figure(figure, "08_adapter_jacobian_rank.png")

# %% [markdown]
# ## Injected into the real MiniLM
#
# `get_peft_model` builds one adapter per layer on the FFN output, freezes everything else and
# unfreezes the adapters and the task head. The adapters start small, not at zero (AdaMix's code
# initialises both projections N(0, 0.02)), so the model starts close to, but not exactly at, the
# pretrained one. How close? The adapter's branch is about 1% of the FFN output it is added to, and
# the sentence embeddings barely move. With the up-projection zeroed the adapter is exactly the
# identity — the residual form in action.

# %%
from tinymix import peft
from tinymix.pretrained import embed, load_pretrained
from tinymix.transformer import SequenceClassifier

minilm, tokenizer = load_pretrained("minilm-l6")
texts = ["A gripping, beautifully acted film.", "I want my two hours back.", "Not bad at all."]
before = embed(minilm, tokenizer, texts)
backend.manual_seed(0)
model = peft.get_peft_model(SequenceClassifier(minilm, 2), peft.AdapterConfig(bottleneck=16, placement="ffn"))
layer = minilm.layers[3]
print("layer 3's FFN adapter:", layer.ffn_adapter.down, "->", layer.ffn_adapter.up,
      "| after attention:", layer.attention_adapter)
assert layer.ffn_adapter is not None and layer.attention_adapter is None
assert layer.ffn_adapter.down.weight.requires_grad and not layer.output.weight.requires_grad

ids, mask = tokenizer(texts)
with no_grad():
    x = Tensor(backend.host_normal((3, 8, 384), 1.0))               # a stand-in FFN output
    branch = layer.ffn_adapter(x).data - x.data
    relative = float(xp.sqrt((branch ** 2).sum() / (x.data ** 2).sum()))
after = embed(minilm, tokenizer, texts)
cosines = (before * after).sum(axis=1) / xp.sqrt((before ** 2).sum(axis=1) * (after ** 2).sum(axis=1))
print(f"adapter branch / its input: {relative:.3f}; embedding cosine before vs after injection: "
      f"{[round(float(c), 4) for c in cosines]}")
assert 0 < relative < 0.05 and float(cosines.min()) > 0.98

for block in minilm.layers:                                          # up = 0: the identity
    block.ffn_adapter.up.weight.data[...] = 0
    block.ffn_adapter.up.bias.data[...] = 0
assert float(abs(embed(minilm, tokenizer, texts) - before).max()) < 1e-6

# %% [markdown]
# ## Placement changes the count, not the idea
#
# Houlsby placement doubles the adapters (after attention and after the FFN); Pfeiffer keeps one
# per layer on the block output. Counted on a skeleton of MiniLM's shape:

# %%
from tinymix.transformer import Transformer

per_site = 2 * 384 * 16 + 16 + 384
for placement, sites in (("ffn", 1), ("houlsby", 2), ("pfeiffer", 1)):
    skeleton = peft.get_peft_model(SequenceClassifier(Transformer(minilm.config), 2),
                                   peft.AdapterConfig(bottleneck=16, placement=placement))
    adapters = skeleton.num_parameters(trainable_only=True) - (384 * 2 + 2)
    print(f"{placement:9s}: {adapters:,d} adapter parameters ({sites} per layer)")
    assert adapters == 6 * sites * per_site

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 08 --exercises` runs only these cells).
#
# 08.1 — Write branch_directions(adapter): a (C, k) array, k <= r, whose columns span every direction
# in which the adapter's branch can move its input, at any input. The check builds Jacobians at
# inputs of its own and measures what lies outside your columns.

# %% exercise 08.1
from exercises import check


def branch_directions(adapter):
    raise NotImplementedError("exercise 08.1")   # return a (C, k) array


check("08.1", branch_directions)

# %% [markdown]
# 08.2 — With Houlsby placement and a bottleneck of r = 8, how many adapter parameters does MiniLM
# get in all (the head not included)?

# %% exercise 08.2
from exercises import check

houlsby_r8_parameters = ...      # a whole number
check("08.2", houlsby_r8_parameters)

# %% [markdown]
# In the library: `tinymix/peft.py` — `Adapter` (the one-line forward above), `AdapterConfig`
# (`bottleneck`, `placement`), `get_peft_model`; `tinymix/transformer.py` — `Block._ffn` and
# `Block._attention` call `ffn_adapter` / `attention_adapter` before dropout and the residual add.
# AdaMix (lesson 10) keeps this module and replaces its `down` and `up` Linear layers by mixtures.
