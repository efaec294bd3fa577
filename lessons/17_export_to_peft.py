# %% [markdown]
# # Lesson 17 — take your adapter elsewhere: AdaMix-LoRA as one Hugging Face PEFT LoRA
#
# Objective: export a trained AdaMix-LoRA to the LoRA format Hugging Face PEFT reads, open the files
# to see what is in them, and prove that the mixture of experts became exactly ONE LoRA: the same
# model, at the size and cost of one.
#
# Prerequisites: lessons 09 (LoRA) and 13 (averaging experts).
#
# PEFT stores a LoRA as two files. `adapter_config.json` says which weights it adapts (`target_modules`,
# e.g. BERT's `query` and `value`), the rank `r` and `lora_alpha`. `adapter_model.safetensors` holds,
# for each adapted weight W (out x in) of each layer, A (r x in) and B (out x r), and the model uses
#
#     W' = W + (lora_alpha / r) B A
#
# which is tinymix's LoRALinear term for term (lesson 09). AdaMix-LoRA trains M experts A_1 .. A_M of
# A at each site and ONE B shared by all of them (B is the "up" side, `sharing="up"`). Averaging the
# experts' weights is exact for it, because everything is linear (lesson 13):
#
#     mean_k (B A_k x) = B (mean_k A_k) x          for every input x
#
# So after training, the mixture IS the single LoRA with A = mean_k A_k and the same B: a file PEFT
# can read, with nothing about mixtures in it. (With B not shared, mean(B_k) mean(A_k) is still one
# LoRA, the one tinymix deploys, but it is not the mean of the experts' products.)

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget

import json
import tempfile
from pathlib import Path

from tinymix import adamix, backend, data, no_grad, peft
from tinymix.store import checkpoint
from tinymix.export import peft_export, peft_import
from tinymix import functional as F
from tinymix.optim import AdamW
from tinymix.pretrained import load_pretrained
from tinymix.transformer import SequenceClassifier, Transformer

backend.manual_seed(0)
minilm, tokenizer = load_pretrained("minilm-l6", max_length=64)
pretrained_weights = minilm.state_dict()                      # kept for a second copy of MiniLM below
M = 4
config = peft.AdaMixConfig(module="lora", num_experts=M, sharing="up", lora=peft.LoRAConfig(rank=4, alpha=32.0))
model = peft.get_peft_model(SequenceClassifier(minilm, 2), config)

train = data.load_movie_reviews()["train"]
short = sorted(range(len(train)), key=lambda i: len(train.texts[i]))[400:400 + 16]
ids, mask = tokenizer([train.texts[i] for i in short])        # (16, T)
labels = [train.labels[i] for i in short]
optimizer = AdamW(model.trainable_parameters(), lr=3e-3)
model.train()
for step in range(budget(12, 3)):                             # a few real AdaMix steps: two passes + consistency
    loss, _, _ = adamix.two_pass_loss(lambda: model(ids, mask), lambda z: F.cross_entropy(z, labels), 1.0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"AdaMix-LoRA after {step + 1} steps: loss {loss.item():.4f}")
model.eval()

workspace = tempfile.TemporaryDirectory(prefix="lesson15-")    # removed when the lesson ends
folder = Path(workspace.name)
peft.save_adapter(model, folder / "adamix")                   # tinymix's own format, UNMERGED: M experts per site

# %% [markdown]
# ## Export, and open the files
#
# `python3 -m tinymix export FOLDER --out DIR` (here the function it calls) merges the mixtures first
# and says so, then writes PEFT's two files, the classifier head in a file of its own (PEFT's
# classification head is BERT's pooler, not tinymix's mean pooling), and a README.

# %%
peft_export.export_peft(folder / "adamix", folder / "peft")
print()
print(json.dumps(json.loads((folder / "peft" / "adapter_config.json").read_text()), indent=1))
exported = checkpoint.load_arrays(folder / "peft" / "adapter_model.safetensors")
for name in sorted(exported)[:4]:
    print(f"{name:70s} {exported[name].shape} {exported[name].dtype}")
print(f"... {len(exported)} arrays: 6 layers x (query, value) x (A, B)")

assert len(exported) == 6 * 2 * 2
assert all(a.shape == ((4, 384) if ".lora_A." in n else (384, 4)) for n, a in exported.items())
assert not any("expert" in name for name in exported), "no trace of the mixture is left"

# %% [markdown]
# ## Why it is exactly one LoRA
#
# Open the unmerged file next to it. At layer 0's query there are M experts of A and one B. The
# exported A is their mean, the exported B is the shared B, and the one update it makes,
# (alpha / r) B mean_k(A_k), equals the mean of the M experts' updates (alpha / r) B A_k.

# %%
unmerged = checkpoint.load_arrays(folder / "adamix" / "adapter_model.safetensors")
site = "transformer.layers.0.attention.query"
experts = [unmerged[f"{site}.lora_A.experts.{k}.weight"] for k in range(M)]               # M x (4, 384)
shared_B = unmerged[f"{site}.lora_B.weight"]                                               # (384, 4)
A = exported["base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"]
B = exported["base_model.model.encoder.layer.0.attention.self.query.lora_B.weight"]
scaling = 32.0 / 4
one_lora = scaling * B @ A                                                                 # (384, 384)
mean_of_experts = sum(scaling * shared_B @ A_k for A_k in experts) / M
spread = max(float(abs(A_k - A).max()) for A_k in experts)
print(f"the experts differ from their mean by up to {spread:.3f}")
print(f"exported A vs mean of the experts: {float(abs(A - sum(experts) / M).max()):.1e}; "
      f"exported B is the shared B: {bool((B == shared_B).all())}")
print(f"one LoRA's update vs the mean of the experts' updates: {float(abs(one_lora - mean_of_experts).max()):.1e}")
assert spread > 1e-3, "the experts are different matrices ..."
assert float(abs(A - sum(experts) / M).max()) < 1e-7 and (B == shared_B).all()
assert float(abs(one_lora - mean_of_experts).max()) < 1e-6, "... yet their mean is one LoRA, exactly"

size = {f: (folder / f / "adapter_model.safetensors").stat().st_size for f in ("adamix", "peft")}
per_site = {"mixture": M * 4 * 384 + 384 * 4, "one LoRA": 4 * 384 + 384 * 4}
print(f"numbers per site: {per_site}; files: unmerged {size['adamix']:,d} bytes, PEFT {size['peft']:,d} bytes")
assert size["peft"] < size["adamix"]

# %% [markdown]
# ## The same model, loaded from the PEFT folder
#
# `peft_import.load_adapter` reads a PEFT folder as well as a tinymix one (checking it whole first: base
# model, options tinymix cannot compute, every key, shape and dtype). A second MiniLM with the same
# pretrained weights, given the exported LoRA and head, must predict what the unmerged mixture predicts
# in "average" inference.
# (tests/test_export.py makes the same check with PEFT itself, `PeftModel.from_pretrained` on
# transformers' BertModel, where torch and peft are installed.)

# %%
second = Transformer(minilm.config)
second.load_state_dict(pretrained_weights)
deployed = peft_import.load_adapter(SequenceClassifier(second, 2), folder / "peft").eval()
with no_grad():
    mixture_logits = model(ids, mask).data
    deployed_logits = deployed(ids, mask).data
gap = float(abs(mixture_logits - deployed_logits).max())
print(f"largest logit difference, unmerged mixture vs the LoRA read back from the PEFT folder: {gap:.1e}")
assert not adamix.mixtures(deployed) and adamix.mixtures(model)
assert gap < 1e-5

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 17 --exercises` runs only these cells).
#
# 17.1 — Write peft_key(layer, target, side): the name PEFT gives, in adapter_model.safetensors, to
# tinymix's LoRA matrix `side` ("A" or "B") on `target` ("query" or "value") of encoder layer `layer`.

# %% exercise 17.1
from exercises import check


def peft_key(layer, target, side):
    raise NotImplementedError("exercise 17.1")   # return a string like "base_model.model.encoder..."


check("17.1", peft_key)

# %% [markdown]
# 17.2 — An AdaMix-LoRA site holds M A-experts (each (r, in)) and one shared B (out, r). Write
# deployed_update(A_experts, B, alpha, r): the (out, in) change that the ONE exported LoRA adds to the
# frozen weight. The check compares with the mean of the M experts' own updates.

# %% exercise 17.2
from exercises import check


def deployed_update(A_experts, B, alpha, r):
    raise NotImplementedError("exercise 17.2")   # return an (out, in) array


check("17.2", deployed_update)

# %% [markdown]
# 17.3 — With B NOT shared (sharing "none": M experts of A and M of B), the exporter still writes one
# LoRA made of mean(A) and mean(B). Is its update (alpha / r) mean(B) mean(A) the mean of the experts'
# updates (alpha / r) B_k A_k? Answer "a" (always), "b" (only when the experts are identical, or in
# special cases), or "c" (never).

# %% exercise 17.3
from exercises import check

answer = ...
check("17.3", answer)

# %% [markdown]
# In the library: `tinymix/export/peft_export.py` — `export_peft` (the names, the config, the merge on
# the way out, the head file), `peft_target_modules`; `tinymix/export/peft_import.py` — `import_peft`,
# `read_peft` (every check before any weight is read), `load_adapter` (a PEFT or a tinymix folder);
# `tinymix/peft.py` — `merge`; `tinymix/adamix.py` — `merge_experts`. On the command line: `python3 -m tinymix
# export runs/x/merged --format peft --out DIR` and `python3 -m tinymix import-peft DIR --out runs/y`.
#
# Other methods leave by other doors (README.md, "Take it elsewhere"). Bottleneck adapters and
# AdaMix-adapters go to AdapterHub: `python3 -m tinymix export runs/x/merged --format adapterhub --out DIR`.
# A model whose own weights changed goes whole to transformers: a fully fine-tuned or BitFit MiniLM as a
# BertModel (`python3 -m tinymix export runs/x/merged --format transformers --out DIR`), and the tiny GPT as a
# GPT2LMHeadModel with its tokenizer (`python3 -m tinymix export data/tiny_gpt --format transformers --out
# DIR`; an e2e run's merged/ the same way, its LoRA folded into the weights).
