# %% [markdown]
# # Lesson 06 — loading and checking a real pretrained BERT
#
# Objective: load real pretrained weights into our own Transformer and PROVE they are wired right:
# same token ids and same hidden states as the reference implementation, to float32 precision.
#
# Prerequisites: lesson 05.
#
# The model is all-MiniLM-L6-v2: a BERT encoder with 6 layers, width 384, 12 heads, trained by
# sentence-transformers so that the mean of its last hidden states is a sentence embedding. Its
# weights ship inside a pinned, checksum-verified Python package; `load_pretrained` reads them from
# the archive, renames Hugging Face's parameter names to ours, and loads them strictly (any missing,
# unexpected or mis-shaped array is an error that names it).
#
# Loading "succeeds" in many wrong ways: a transposed matrix of square shape, a swapped pair of
# layer norms, a wrong epsilon, tanh-GELU instead of erf-GELU — every one gives plausible-looking
# vectors. Only a comparison with the original implementation's outputs catches them.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import ROOT, save_figure

import matplotlib.pyplot as plt

from tinymix import backend, no_grad
from tinymix.backend import host, xp
from tinymix.pretrained import bert_state_dict, embed, load_pretrained
from tinymix.transformer import mean_pool

model, tokenizer = load_pretrained("minilm-l6")
print(model.config)
print(f"{model.num_parameters():,d} parameters, {model.num_parameters(trainable_only=True)} trainable")
assert model.num_parameters(trainable_only=True) == 0 and not model.training
assert model.num_parameters() == (30522 + 512 + 2) * 384 + 2 * 384 + 6 * (12 * 384 ** 2 + 13 * 384)

# %% [markdown]
# ## Names
#
# Hugging Face calls the first layer's query weight `encoder.layer.0.attention.self.query.weight`;
# tinymix calls it `layers.0.attention.query.weight`. The renaming is a short table of regular
# expressions. Every renamed key must be one of the model's parameters, and a checkpoint that
# misses one is refused by name.

# %%
hf_names = ["embeddings.word_embeddings.weight", "embeddings.LayerNorm.weight",
            "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.output.LayerNorm.bias",
            "encoder.layer.5.intermediate.dense.weight", "encoder.layer.5.output.dense.bias",
            "pooler.dense.weight"]
renamed = bert_state_dict({name: None for name in hf_names})
for old, new in zip(hf_names, list(renamed) + ["(dropped: the pooler is unused)"]):
    print(f"{old:50s} -> {new}")
own = model.state_dict()
assert set(renamed) <= set(own) and len(renamed) == len(hf_names) - 1

incomplete = {name: array for name, array in own.items() if name != "layers.3.output_norm.weight"}
try:
    model.load_state_dict(incomplete)
except KeyError as error:
    print("\nrefused:", str(error)[:150], "...")
    assert "layers.3.output_norm.weight" in str(error)
else:
    raise AssertionError("a checkpoint with a missing array must be refused")

# %% [markdown]
# ## Parity with the reference implementation
#
# tests/reference/minilm_reference.npz holds what Hugging Face's `BertModel` computed for six
# awkward sentences (accents, an emoji, punctuation runs, a made-up word, one long sentence that
# sets the padded length), with the script that made it beside it. Compare ids, mask and every
# hidden state of every real token (padding positions carry no meaning and are skipped).

# %%
with host.load(ROOT / "tests" / "reference" / "minilm_reference.npz", allow_pickle=False) as file:
    reference = {key: file[key] for key in file.files}
sentences = [str(s) for s in reference["sentences"]]
ids, mask = tokenizer(sentences)                                    # (6, T), padded to the longest
assert (ids == reference["input_ids"]).all() and (mask == reference["attention_mask"]).all()
print("token ids of the emoji sentence:", ids[0][mask[0] > 0].tolist())

with no_grad():
    hidden = backend.to_numpy(model(ids, mask).data)                # (6, T, 384)
real = reference["attention_mask"].astype(bool)
gap = float(abs(hidden[real] - reference["last_hidden_state"][real]).max())
pooled_gap = float(abs(backend.to_numpy(mean_pool(model(ids, mask), mask).data) - reference["mean_pooled"]).max())
print(f"largest |tinymix - Hugging Face| over {real.sum()} tokens x 384: {gap:.1e}; mean-pooled: {pooled_gap:.1e}")
assert gap < 1e-4 and pooled_gap < 1e-4

# %% [markdown]
# ## The mask is not optional
#
# A padded batch run WITHOUT its attention mask lets real tokens attend to padding, and a plain mean
# averages the padding in. The short sentence "Hi." then gets a different embedding depending on
# what else is in its batch. With the mask, its embedding is the same alone or in any batch.

# %%
alone = embed(model, tokenizer, ["Hi."])[0]
in_batch = embed(model, tokenizer, sentences)[1]                    # batched with a 47-token sentence
with no_grad():
    unmasked = model(ids).data[1].mean(axis=0)                      # no mask, plain mean over T
cosine = lambda a, b: float((a * b).sum() / xp.sqrt((a * a).sum() * (b * b).sum()))
print(f"'Hi.' alone vs in a padded batch: max diff {float(abs(alone - in_batch).max()):.1e}; "
      f"without the mask: cosine {cosine(alone, unmasked):.3f}")
assert float(abs(alone - in_batch).max()) < 1e-5
assert cosine(alone, unmasked) < 0.9

# %% [markdown]
# ## What the embeddings know
#
# Cosine similarities between sentence embeddings: MiniLM was trained to put sentences about the
# same thing close together. Sentences about films cluster; a sentence about cats and one about
# stock markets sit apart. (Sentiment is only weakly visible here — that is what fine-tuning adds.)

# %%
texts = ["A gripping, beautifully acted film.", "One of the best movies of the year.",
         "A tedious, badly written mess of a movie.", "I want my two hours back.",
         "The cat sat on the mat.", "Stock markets fell sharply on Monday."]
vectors = embed(model, tokenizer, texts)
vectors = vectors / xp.sqrt((vectors * vectors).sum(axis=1, keepdims=True))
similarity = backend.to_numpy(vectors @ vectors.T)                  # (6, 6)

figure, axes = plt.subplots(figsize=(7.5, 5.5))
image = axes.imshow(similarity, cmap="viridis", vmin=0, vmax=1)
labels = [t if len(t) < 30 else t[:27] + "..." for t in texts]
axes.set_xticks(range(6), labels, rotation=35, ha="right", fontsize=8)
axes.set_yticks(range(6), labels, fontsize=8)
for i in range(6):
    for j in range(6):
        axes.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", fontsize=8,
                  color="black" if similarity[i, j] > 0.6 else "white")
axes.set_title("MiniLM sentence embeddings: cosine similarity")
figure.colorbar(image, ax=axes, fraction=0.046)
save_figure(figure, "06_sentence_similarity.png")

films, others = [0, 1, 2], [4, 5]
film_to_film = min(similarity[i, j] for i in films for j in films if i != j)
film_to_other = max(similarity[i, j] for i in films for j in others)
print(f"least similar pair of film sentences {film_to_film:.2f} > most similar film/other pair {film_to_other:.2f}")
assert film_to_film > film_to_other

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 06 --exercises` runs only these cells).
#
# 06.1 — tinymix's `layers.2.intermediate.weight` is loaded from which array of the Hugging Face
# checkpoint? Give its Hugging Face name (a string); the check runs it through the renaming table.

# %% exercise 06.1
from exercises import check

hugging_face_name = ...          # a string like "encoder.layer...."
check("06.1", hugging_face_name)

# %% [markdown]
# 06.2 — What fraction of MiniLM's parameters sit in its three embedding tables (word, position and
# token type; their layer norm not included)? A number between 0 and 1, to two significant digits.

# %% exercise 06.2
from exercises import check

embedding_fraction = ...         # a number between 0 and 1
check("06.2", embedding_fraction)

# %% [markdown]
# In the library: `tinymix/pretrained.py` — `load_pretrained` (and `load_minilm`), the renaming
# table `_BERT_RENAMES` with `bert_state_dict`, `bert_config`, the `Tokenizer` (pads to the longest
# text in the batch), `embed`; `tinymix/nn.py` — `Module.load_state_dict` (strict, names every bad
# key); `tinymix/store/assets.py` — the pinned, verified archives. tests/test_pretrained.py holds the same
# parity checks.
