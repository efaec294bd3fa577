# %% [markdown]
# # Lesson 07 — freezing, counting parameters, and what it saves in memory
#
# Objective: know exactly which numbers a parameter-efficient method trains, count them by formula
# and by program, and see what freezing the rest saves — and what it does not.
#
# Prerequisites: lessons 01 (a tensor without requires_grad gets no gradient) and 06.
#
# Training a weight with AdamW costs four floats per weight: the weight, its gradient, and Adam's two
# moving averages (first and second moment). A frozen weight costs one: the weight itself. Fine-tuning
# all 22.7M parameters of MiniLM therefore holds about 4 x 22.7M floats; training 0.08M of them holds
# the 22.7M frozen floats plus 4 x 0.08M. (Activations — what the forward pass keeps for backward —
# scale with batch and length, not with the trainable count: a gradient must still flow down
# through every frozen layer that sits above a trainable module. Freezing saves the weight
# gradients' compute and the optimizer state; it saves little activation memory.)
#
# Counting convention (the AdaMix paper's and PEFT's): "trainable params: N || all params: M ||
# trainable%: P", and for AdaMix also the INFERENCE count after its experts are merged — the number
# the paper reports.

# %%
import time

import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget, save_figure

import matplotlib.pyplot as plt

from tinymix import adamix, backend, data, peft
from tinymix import functional as F
from tinymix.optim import AdamW
from tinymix.pretrained import load_pretrained
from tinymix.transformer import SequenceClassifier, Transformer

minilm, tokenizer = load_pretrained("minilm-l6")
config = minilm.config
C, L, r, rank, M = config.hidden_size, config.num_layers, 16, 4, 4
head = C * 2 + 2                                          # the 2-class classifier: always trained

methods = {
    "full fine-tuning": peft.FullFineTuneConfig(),
    "BitFit (biases)": peft.BitFitConfig(),
    "adapter r=16": peft.AdapterConfig(bottleneck=r),
    "LoRA r=4 (q, v)": peft.LoRAConfig(rank=rank),
    "AdaMix adapter": peft.AdaMixConfig(module="adapter", num_experts=M, adapter=peft.AdapterConfig(r)),
    "AdaMix LoRA": peft.AdaMixConfig(module="lora", num_experts=M, lora=peft.LoRAConfig(rank=rank)),
}
counts = {}
for name, method in methods.items():
    backend.manual_seed(0)
    # Counting needs the shapes, not the weights: a freshly initialised skeleton of MiniLM will do.
    model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2), method)
    counts[name] = (model.num_parameters(trainable_only=True), peft.merged_parameter_count(model),
                    model.num_parameters())
    print(f"{name:18s}", end=" ")
    peft.print_trainable_parameters(model)

# %% [markdown]
# The same numbers by formula, per layer:
#
#     adapter:          down (C r + r) + up (r C + C)
#     AdaMix adapter:   M downs + ONE shared up          = M (C r + r) + (r C + C)
#     LoRA on q and v:  2 x (A: r C + B: C r)            (no biases)
#     AdaMix LoRA:      2 x (M A's + ONE shared B)       = 2 (M r C + C r)
#
# and after merging, AdaMix is back to one module per site: the adapter's and LoRA's counts exactly.

# %%
adapter_layer = (C * r + r) + (r * C + C)
lora_layer = 2 * (rank * C + C * rank)
expected = {
    "adapter r=16": (L * adapter_layer + head, L * adapter_layer + head),
    "LoRA r=4 (q, v)": (L * lora_layer + head, L * lora_layer + head),
    "AdaMix adapter": (L * (M * (C * r + r) + (r * C + C)) + head, L * adapter_layer + head),
    "AdaMix LoRA": (L * 2 * (M * rank * C + C * rank) + head, L * lora_layer + head),
}
for name, (trained, merged) in expected.items():
    assert counts[name][:2] == (trained, merged), (name, counts[name], trained, merged)
biases = sum(p.size for n, p in minilm.named_parameters() if n.endswith(".bias"))
assert counts["BitFit (biases)"][0] == biases + head
assert counts["full fine-tuning"][0] == counts["full fine-tuning"][2] == minilm.num_parameters() + head
print("every count matches its formula; AdaMix trains",
      f"{counts['AdaMix adapter'][0] / counts['adapter r=16'][0]:.2f}x an adapter's parameters but deploys exactly one")

# %%
names = list(counts)
figure, axes = plt.subplots(figsize=(8, 4.2))
positions = range(len(names))
axes.barh([p + 0.2 for p in positions], [counts[n][0] for n in names], height=0.4, label="trained")
axes.barh([p - 0.2 for p in positions], [counts[n][1] for n in names], height=0.4, label="deployed (after merging)")
axes.set_xscale("log")
axes.set_yticks(list(positions), names)
axes.invert_yaxis()
for p, n in zip(positions, names):
    axes.text(counts[n][0] * 1.1, p + 0.2, f"{counts[n][0]:,d}", va="center", fontsize=8)
axes.set(xlabel="parameters (log scale)", title="MiniLM + a 2-class head: what each method trains",
         xlim=(1e4, 2e8))
axes.legend(loc="lower right", fontsize=8)
save_figure(figure, "07_trainable_parameters.png")

# %% [markdown]
# ## Freezing, proven by a real step
#
# One AdaMix training step on the real MiniLM, then the facts: every frozen weight is bit-for-bit
# unchanged and holds no gradient; the optimizer made state only for parameters that received a
# gradient; the gradient memory is exactly 4 bytes per trainable float — and not even all of
# those: the experts that were not routed this step received no gradient at all. (On this FIRST
# step they also get no optimizer state. From the next step on, an expert that has state keeps
# being stepped even without a gradient, as in the official code — lesson 10.)

# %%
backend.manual_seed(0)
model = peft.get_peft_model(SequenceClassifier(minilm, 2), methods["AdaMix adapter"])
train = data.load_movie_reviews()["train"]
batch = budget(8, 4)
ids, mask = tokenizer(train.texts[:batch])
labels = train.labels[:batch]
frozen_before = model.transformer.layers[2].attention.query.weight.data.copy()
optimizer = AdamW(model.trainable_parameters(), lr=1e-3)
model.train()
loss, _, _ = adamix.two_pass_loss(lambda: model(ids, mask), lambda z: F.cross_entropy(z, labels), 1.0)
loss.backward()
gradient_bytes = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
optimizer.step()

frozen = [p for p in model.parameters() if not p.requires_grad]
assert all(p.grad is None for p in frozen)
assert (model.transformer.layers[2].attention.query.weight.data == frozen_before).all()
state_floats = sum(a.size for s in optimizer.state.values() for k, a in s.items() if k != "step")
with_gradient = sum(p.size for p in model.trainable_parameters() if p.grad is not None)
assert state_floats == 2 * with_gradient and gradient_bytes == 4 * with_gradient
assert with_gradient < counts["AdaMix adapter"][0], "unrouted experts get no gradient"
print(f"{len(frozen)} frozen tensors untouched; gradients for {with_gradient:,d} of "
      f"{counts['AdaMix adapter'][0]:,d} trainable floats ({gradient_bytes / 1e6:.2f} MB); "
      f"Adam state {4 * state_floats / 1e6:.2f} MB")

# %% [markdown]
# ## The bill, in megabytes (float32)
#
# weights (all) + gradients + Adam's two moments (trainable only), next to the same for full
# fine-tuning. For a 355M-parameter RoBERTa-large the same arithmetic is the difference between
# 5.7 GB and 1.4 GB before a single activation is stored.

# %%
for name in ("full fine-tuning", "adapter r=16", "AdaMix adapter", "AdaMix LoRA"):
    trained, _, total = counts[name]
    megabytes = 4 * (total + 3 * trained) / 1e6
    print(f"{name:18s} weights {4 * total / 1e6:6.1f} MB + gradients and Adam {12 * trained / 1e6:6.1f} MB "
          f"= {megabytes:6.1f} MB")
full_bill = 4 * 4 * counts["full fine-tuning"][2]
adamix_bill = 4 * (counts["AdaMix adapter"][2] + 3 * counts["AdaMix adapter"][0])
assert adamix_bill < 0.3 * full_bill

# %% [markdown]
# And the compute: backward through a frozen layer still computes the gradient with respect to its
# INPUT (to reach the trainable modules below) but skips the one with respect to its weights — about
# half of a linear layer's backward. One forward + backward pass of the AdaMix model against one of
# full fine-tuning on the same batch (times on a shared CPU are noisy; the model is warm already):

# %%
def one_pass_seconds(model):
    model.zero_grad()
    started = time.perf_counter()
    F.cross_entropy(model(ids, mask), labels).backward()
    return time.perf_counter() - started


adamix_seconds = min(one_pass_seconds(model) for _ in range(2))
backend.manual_seed(0)
full_model = peft.get_peft_model(SequenceClassifier(Transformer(config), 2),   # same shapes, same cost
                                 peft.FullFineTuneConfig()).train()
full_seconds = min(one_pass_seconds(full_model) for _ in range(2))
print(f"forward + backward, one pass: AdaMix {adamix_seconds:.2f} s, full fine-tuning {full_seconds:.2f} s")
assert all(p.grad is not None for p in full_model.parameters()), "full fine-tuning: every weight's gradient"

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 07 --exercises` runs only these cells).
#
# 07.1 — AdaMix-LoRA with M = 8 experts and rank r = 8 on the query and value of every MiniLM layer
# (A's mixed, B shared), with the 2-class head: how many parameters does it TRAIN?

# %% exercise 07.1
from exercises import check

adamix_lora_trained = ...        # a whole number
check("07.1", adamix_lora_trained)

# %% [markdown]
# 07.2 — Full fine-tuning of MiniLM with the 2-class head: how many megabytes (1 MB = 1e6 bytes,
# float32) do the gradients and Adam's two moments take together — the memory freezing saves?

# %% exercise 07.2
from exercises import check

full_fine_tuning_extra_mb = ...  # a number
check("07.2", full_fine_tuning_extra_mb)

# %% [markdown]
# In the library: `tinymix/nn.py` — `Module.requires_grad_`, `num_parameters(trainable_only=...)`,
# `trainable_parameters`; `tinymix/peft.py` — `get_peft_model` (freezes everything, then unfreezes
# the injected modules and the head), `print_trainable_parameters`, `merged_parameter_count`;
# `tinymix/optim.py` — `Optimizer.step` makes a parameter's state at its first gradient, so frozen
# weights and never-routed experts cost no optimizer memory.
