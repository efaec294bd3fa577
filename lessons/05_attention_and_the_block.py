# %% [markdown]
# # Lesson 05 — attention and the Transformer block, shape by shape
#
# Objective: follow one batch through multi-head self-attention and a Transformer block with the
# shape of every array in hand; see what the padding and causal masks guarantee, and where the
# parameter-efficient modules of later lessons plug in.
#
# Prerequisites: lessons 01, 03 and 04 (softmax, layer norm).
#
# Sizes, named once:  B batch, T tokens, C hidden width, H heads, D = C / H the width of one head.
#
#     q = x Wq, k = x Wk, v = x Wv                           (B, T, C) each
#     split heads: (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
#     scores  = q k^T / sqrt(D) + mask                       (B, H, T, T)
#     weights = softmax over the LAST axis (the keys)        (B, H, T, T), rows sum to 1
#     context = weights v                                    (B, H, T, D)
#     merge heads: (B, H, T, D) -> (B, T, H, D) -> (B, T, C), then the output projection Wo
#
# The 1/sqrt(D) keeps the scores' variance near 1 whatever the head width, so the softmax does not
# saturate at initialisation. A mask is an additive bias: 0 where a query may look at a key, -1e9
# where it may not (exp(-1e9) is exactly 0 in float32).

# %%
import math

import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import save_figure

import matplotlib.pyplot as plt

from tinymix import Tensor, backend, no_grad
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.transformer import Transformer, TransformerConfig

backend.manual_seed(0)
B, T, C, H = 2, 6, 32, 4
D = C // H
config = TransformerConfig(kind="encoder", vocab_size=50, hidden_size=C, num_layers=2, num_heads=H,
                           intermediate_size=4 * C, max_positions=16, dropout=0.0)
encoder = Transformer(config).eval()
attention = encoder.layers[0].attention

x = Tensor(backend.host_normal((B, T, C), 1.0))
mask = xp.ones((B, T), dtype=xp.int64)
mask[1, 4:] = 0                                       # the second sentence has 2 padding tokens
mask_bias = xp.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(xp.float32)    # (B, 1, 1, T)

with no_grad():
    q = attention.query(x).reshape(B, T, H, D).transpose(0, 2, 1, 3)   # (B, H, T, D)
    k = attention.key(x).reshape(B, T, H, D).transpose(0, 2, 3, 1)     # (B, H, D, T): k transposed
    v = attention.value(x).reshape(B, T, H, D).transpose(0, 2, 1, 3)   # (B, H, T, D)
    scores = (q @ k) * (1 / math.sqrt(D)) + mask_bias                  # (B, H, T, T)
    weights = F.softmax(scores, axis=-1)                               # (B, H, T, T)
    context = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, C)     # (B, T, C)
    by_hand = attention.output(context)                                # (B, T, C)
    library = attention(x, mask_bias)
for name, array in (("q", q), ("k^T", k), ("scores", scores), ("weights", weights),
                    ("context", context), ("output", by_hand)):
    print(f"{name:8s} {tuple(array.shape)}")
assert by_hand.shape == (B, T, C) and weights.shape == (B, H, T, T)
assert xp.allclose(by_hand.data, library.data, atol=1e-6)
assert xp.array_equal(mask_bias, encoder._mask_bias(B, T, mask)), "the same bias the model builds"
assert xp.allclose(weights.data.sum(axis=-1), 1.0, atol=1e-6)
assert float(weights.data[1, :, :, 4:].max()) == 0.0, "no query attends to a padding token"

# %% [markdown]
# The reshapes and transposes are where bugs hide: a wrong axis order still produces the right
# shapes. So check against the plainest possible reference, a loop over examples and heads, each
# head a slice of D columns of the projections.

# %%
Q, K, V = (layer(x).data for layer in (attention.query, attention.key, attention.value))   # (B, T, C)
reference = xp.zeros((B, T, C), dtype=xp.float32)
for b in range(B):
    for h in range(H):
        cols = slice(h * D, (h + 1) * D)
        s = Q[b, :, cols] @ K[b, :, cols].T / math.sqrt(D) + mask_bias[b, 0]     # (T, T)
        p = xp.exp(s - s.max(axis=-1, keepdims=True))
        reference[b, :, cols] = (p / p.sum(axis=-1, keepdims=True)) @ V[b, :, cols]
assert xp.allclose(context.data, reference, atol=1e-5)
print("batched heads == a loop over examples and heads")

# %% [markdown]
# ## What the masks guarantee
#
# Padding (encoder): a real token's output must not depend on what the padding holds. Causal
# (decoder, GPT): the output at position t must not depend on any token after t — that is what
# makes next-token training honest. Both are checked by changing tokens and watching what moves.

# %%
ids = backend.host_rng.integers(1, 50, size=(B, T))
with no_grad():
    before = encoder(ids, mask).data
    scrambled = ids.copy()
    scrambled[1, 4:] = [7, 9]                          # different "padding" content
    after = encoder(scrambled, mask).data
assert xp.allclose(before[1, :4], after[1, :4], atol=1e-6), "padding leaked into real tokens"

decoder = Transformer(TransformerConfig(kind="decoder", vocab_size=50, hidden_size=C, num_layers=2,
                                        num_heads=H, intermediate_size=4 * C, max_positions=16,
                                        dropout=0.0)).eval()
with no_grad():
    before = decoder(ids).data
    changed = ids.copy()
    changed[:, 3] = (changed[:, 3] + 1) % 50           # change the token at position 3
    after = decoder(changed).data
moved = abs(after - before).max(axis=(0, 2))           # (T,) largest change at each position
print("largest change per position after editing token 3:", [f"{float(m):.1e}" for m in moved])
assert float(moved[:3].max()) == 0.0 and float(moved[3:].min()) > 0, "causality"

# %% [markdown]
# The attention weights of the first head, with the two masks visible: the encoder's padded
# sentence gets zero weight on its last two keys (columns), the decoder's weights are zero above the
# diagonal. (The weights are otherwise nearly uniform: these models are freshly initialised.)

# %%
with no_grad():
    causal_bias = xp.where(xp.triu(xp.ones((T, T)), k=1) > 0, -1e9, 0.0).astype(xp.float32)
    layer = decoder.layers[0]
    h0 = layer.attention_norm(decoder.word_embeddings(ids) + decoder.position_embeddings(xp.arange(T))[None])
    qd = layer.attention.query(h0).reshape(B, T, H, D).transpose(0, 2, 1, 3)
    kd = layer.attention.key(h0).reshape(B, T, H, D).transpose(0, 2, 3, 1)
    causal_weights = F.softmax((qd @ kd) * (1 / math.sqrt(D)) + causal_bias, axis=-1).data

figure, panels = plt.subplots(1, 2, figsize=(9, 4))
for panel, matrix, title in ((panels[0], weights.data[1, 0], "encoder, padded sentence (head 0)"),
                             (panels[1], causal_weights[0, 0], "decoder, causal mask (head 0)")):
    image = panel.imshow(backend.to_numpy(matrix), cmap="viridis", vmin=0)
    panel.set(title=title, xlabel="key position", ylabel="query position")
    figure.colorbar(image, ax=panel, fraction=0.046)
save_figure(figure, "05_attention_masks.png")
assert float(causal_weights[0, 0][xp.triu(xp.ones((T, T)), k=1) > 0].max()) == 0.0

# %% [markdown]
# ## The block
#
# A block is attention then a feed-forward network (FFN: C -> 4C -> GELU -> C), each wrapped in a
# residual connection and a layer norm. BERT puts the norm AFTER the residual add (post-LN), GPT
# BEFORE the sublayer (pre-LN, which trains more stably when deep):
#
#     post-LN (BERT):  h = LN(x + Attn(x));      out = LN(h + FFN(h))
#     pre-LN  (GPT):   h = x + Attn(LN(x));      out = h + FFN(LN(h))
#
# The modules of the coming lessons plug in right here: an adapter on the FFN's output, before
# its residual add (AdaMix's placement); LoRA inside the attention's query and value projections.
# Parameters per block: 4 (C^2 + C) for attention, C * 4C + 4C + 4C * C + C for the FFN, and 2 * 2C
# for the two layer norms.

# %%
block = encoder.layers[0]
with no_grad():
    h = block.attention_norm(x + block.attention(x, mask_bias))
    out = block.output_norm(h + block.output(F.gelu(block.intermediate(h))))
    assert xp.allclose(out.data, block(x, mask_bias).data, atol=1e-5)

per_block = 4 * (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C) + 2 * 2 * C
assert block.num_parameters() == per_block
print(f"one block of width C={C}: {per_block:,d} parameters (12 C^2 + 13 C); "
      f"for MiniLM's C=384: {12 * 384 ** 2 + 13 * 384:,d}")

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 05 --exercises` runs only these cells).
#
# 05.1 — The attention weights are the largest array attention keeps for backward. For MiniLM
# (H = 12 heads) on a batch of B = 32 sentences of T = 128 tokens, how many BYTES (float32) do the
# weights of ONE layer take?

# %% exercise 05.1
from exercises import check

attention_weight_bytes = ...     # a whole number
check("05.1", attention_weight_bytes)

# %% [markdown]
# 05.2 — Write causal_bias(T): the (T, T) float32 array a decoder adds to its attention scores —
# 0 where query i may look at key j, -1e9 where it may not. The check compares it with the bias the
# library's decoder builds.

# %% exercise 05.2
from exercises import check


def causal_bias(T):
    raise NotImplementedError("exercise 05.2")   # return a (T, T) float32 array


check("05.2", causal_bias)

# %% [markdown]
# In the library: `tinymix/transformer.py` — `Attention.forward` (the same lines, with the shape
# comments), `Block.forward` (both norm placements, and the adapter plug-in points
# `attention_adapter` / `ffn_adapter` / `output_adapter`), `Transformer._mask_bias` (both masks).
#
# After this lesson, do assignment A3 (multi-head attention):
# `python3 -m tinymix.grade lessons/assignments/a3_attention.py`.
