# %% [markdown]
# # Lesson 07 — adapters
#
# Objective: build the bottleneck adapter, place it where AdaMix's code places it, and understand
# its three design facts: it is a residual branch, its update has rank at most r, and (unlike
# LoRA) it is NOT linear — which lesson 11 will show matters for averaging.
#
# Prerequisites: lessons 04 (the block) and 06 (freezing).
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
# ## Rank at most r
#
# Around any input h, the adapter's branch b(h) = up(GELU(down(h))) changes with h through its
# Jacobian
#
#     db/dh = U diag(GELU'(D h + d)) D          (U: C x r, D: r x C)
#
# a product through an r-wide middle, so its rank is at most r (less where a hidden unit sits deep
# in GELU's flat negative tail, GELU' ~ 0, and drops out; the floor near 1e-7 in the figure is
# float32 rounding). An adapter can only push the
# representation along r directions at a time (which r directions depends on h: the GELU makes them
# input-dependent — more expressive than LoRA's fixed ones). Below, the Jacobian is built row by row
# with autograd for r = 4 and r = 16 at C = 64, and its singular values counted.

# %%
def branch_jacobian(adapter, point):
    """(C, C) matrix of d branch_i / d h_j at one input vector `point` (C,), row by row."""
    rows = []
    for i in range(point.shape[0]):
        x = Tensor(point[None], requires_grad=True)                  # (1, C): Linear wants a matrix
        (adapter.up(F.gelu(adapter.down(x))))[0, i].backward()
        rows.append(x.grad[0])
    return xp.stack(rows)


spectra = {}
for rank in (4, 16):
    backend.manual_seed(rank)
    a = Adapter(Linear(C, rank, std=0.3), Linear(rank, C, std=0.3))   # larger weights: a trained-like adapter
    singular = xp.linalg.svd(branch_jacobian(a, backend.host_normal((C,), 1.0)), compute_uv=False)
    spectra[rank] = backend.to_numpy(singular)
    numerical_rank = int((singular > 1e-5 * singular[0]).sum())
    print(f"r = {rank:2d}: Jacobian of the branch has numerical rank {numerical_rank} (of {C}); "
          f"singular value {rank + 1} / the largest = {float(singular[rank] / singular[0]):.1e}")
    assert rank - 2 <= numerical_rank <= rank and float(singular[rank] / singular[0]) < 1e-5

figure, axes = plt.subplots(figsize=(6.5, 4))
for rank, values in spectra.items():
    axes.semilogy(range(1, C + 1), values + 1e-12, "o-", markersize=3, label=f"bottleneck r = {rank}")
axes.set(xlabel="index of singular value", ylabel="singular value (log scale)", ylim=(1e-10, 10),
         title=f"adapter branch Jacobian at one input (C = {C}): rank <= r")
axes.legend()
save_figure(figure, "07_adapter_jacobian_rank.png")

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
# In the library: `tinymix/peft.py` — `Adapter` (the one-line forward above), `AdapterConfig`
# (`bottleneck`, `placement`), `get_peft_model`; `tinymix/transformer.py` — `Block._ffn` and
# `Block._attention` call `ffn_adapter` / `attention_adapter` before dropout and the residual add.
# AdaMix (lesson 09) keeps this module and replaces its `down` and `up` Linear layers by mixtures.
