# %% [markdown]
# # Lesson 09 — LoRA, and merging it into the weights
#
# Objective: build a LoRA layer, see why it starts as an exact no-op and what that does to the first
# gradient step, train one on a problem with a known low-rank answer, and fold it into the frozen
# weight so that inference costs nothing extra.
#
# Prerequisites: lessons 07 and 08.
#
# LoRA (Hu et al., 2021) leaves a frozen linear layer W (out x in) alone and adds a trainable
# low-rank update next to it:
#
#     y = W x + b + (alpha / r) B A dropout(x),    A: r x in,  B: out x r
#
# A starts Kaiming-uniform, B starts at ZERO, so B A = 0: the adapted model is exactly the pretrained
# one at step 0. The scale alpha / r keeps the update's size roughly independent of the rank, so the
# learning rate need not be re-tuned when r changes. The update has rank at most r and
# r (in + out) parameters instead of in x out. Because it is LINEAR, it can be folded in:
#
#     W' = W + (alpha / r) B A      ->   y = W' x + b     (one matrix product, as before)

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget, save_figure

import matplotlib.pyplot as plt

from tinymix import Tensor, backend, no_grad
from tinymix.backend import xp
from tinymix.nn import Linear, Parameter, kaiming_uniform
from tinymix.optim import AdamW
from tinymix.peft import LoRALinear

backend.manual_seed(0)
d_in, d_out, r, alpha = 48, 40, 4, 8.0
base = Linear(d_in, d_out, std=0.2).requires_grad_(False)             # the frozen, "pretrained" layer
A = Linear(d_in, r, bias=False)
A.weight = Parameter(kaiming_uniform((r, d_in), d_in))
B = Linear(r, d_out, bias=False)
B.weight = Parameter(xp.zeros((d_out, r), dtype=xp.float32))
lora = LoRALinear(base, A, B, alpha=alpha, rank=r, dropout=0.0)

x = Tensor(backend.host_normal((16, d_in), 1.0))
with no_grad():
    assert xp.array_equal(lora(x).data, base(x).data), "B = 0: exactly the frozen layer"

# %% [markdown]
# ## The first gradient moves only B
#
# With s = alpha / r and upstream gradient g = dL/dy:
#
#     dL/dB = s g (A x)^T         nonzero: A is random
#     dL/dA = s B^T g x^T         zero: B is zero
#
# So the first step only moves B; from the second step on, both move. (Had both started random,
# the model would start off its pretrained behaviour; had both started at zero, neither would ever
# receive a gradient.)

# %%
target = Tensor(backend.host_normal((16, d_out), 1.0))
((lora(x) - target) ** 2).mean().backward()
print(f"|dL/dA| = {float(abs(A.weight.grad).max()):.1e},  |dL/dB| = {float(abs(B.weight.grad).max()):.1e}")
assert float(abs(A.weight.grad).max()) == 0.0 and float(abs(B.weight.grad).max()) > 0
assert base.weight.grad is None, "the frozen weight gets no gradient"

# %% [markdown]
# ## A problem with a known low-rank answer
#
# The "new task" here is a linear map that differs from the frozen one by a rank-2 change, observed
# with noise. LoRA with r = 4 only has to find that change, and it should: the learned update's
# singular values show two large ones (the change) and the rest near zero.

# %%
backend.manual_seed(1)
u, v = backend.host_normal((d_out, 2), 1.0), backend.host_normal((2, d_in), 1.0)
true_change = (u @ v) * 0.15                                            # rank 2
inputs = Tensor(backend.host_normal((512, d_in), 1.0))
outputs = Tensor(inputs.data @ (base.weight.data + true_change).T + base.bias.data
                 + 0.01 * backend.host_normal((512, d_out), 1.0))
B.weight.grad = A.weight.grad = None
optimizer = AdamW([A.weight, B.weight], lr=1e-2, weight_decay=0.0)
losses = []
for step in range(budget(400, 150)):
    optimizer.zero_grad()
    loss = ((lora(inputs) - outputs) ** 2).mean()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
learned = lora.delta_weight()                                            # (alpha / r) B A
singular = xp.linalg.svd(learned, compute_uv=False)
true_singular = xp.linalg.svd(true_change, compute_uv=False)
print(f"loss {losses[0]:.4f} -> {losses[-1]:.5f}; learned update singular values "
      f"{[round(float(s), 3) for s in singular[:5]]}, true {[round(float(s), 3) for s in true_singular[:3]]}")
assert losses[-1] < 0.05 * losses[0]
assert xp.linalg.matrix_rank(learned, tol=1e-4 * float(singular[0])) <= r
assert float(singular[2]) < 0.1 * float(singular[1]), "the learned change is (close to) rank 2"

figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
left.semilogy(losses)
left.set(xlabel="step", ylabel="mean squared error (log)", title="LoRA r=4 learning a rank-2 change")
right.plot(range(1, 11), backend.to_numpy(true_singular[:10]), "s-", label="true change (rank 2)")
right.plot(range(1, 11), backend.to_numpy(singular[:10]), "o--", label="learned (alpha/r) B A")
right.set(xlabel="index", ylabel="singular value", title="singular values of the update", xticks=range(1, 11))
right.legend()
save_figure(figure, "09_lora_low_rank.png")

# %% [markdown]
# ## Merging: zero added latency
#
# `merge()` adds (alpha / r) B A into W in place and the layer then does one matrix product;
# `unmerge()` subtracts it again (to continue training, or to swap in another task's LoRA). The
# outputs agree to float32 rounding.

# %%
with no_grad():
    unmerged = lora(inputs).data
    w_before = base.weight.data.copy()
    lora.eval()
    lora.merge()
    merged = lora(inputs).data
    assert xp.allclose(merged, unmerged, atol=1e-5 * float(abs(unmerged).max()))
    assert xp.allclose(base.weight.data, w_before + learned, atol=1e-6)
    lora.unmerge()
    assert xp.allclose(base.weight.data, w_before, atol=1e-6)
print(f"merged vs unmerged outputs: max diff {float(abs(merged - unmerged).max()):.1e}; unmerge restores W")

# %% [markdown]
# ## On the real MiniLM
#
# `get_peft_model` with `LoRAConfig` wraps the query and value projections of every layer in a
# LoRALinear (the LoRA paper's and AdaMix-LoRA's choice). At injection the model is EXACTLY the
# pretrained one. After some (here: simulated) training, `merge(model, fold_lora=True)` folds every
# update into its frozen weight: the LoRALinear layers then do one product each, same outputs.

# %%
from tinymix import peft
from tinymix.pretrained import embed, load_pretrained
from tinymix.transformer import SequenceClassifier

minilm, tokenizer = load_pretrained("minilm-l6")
texts = ["A gripping, beautifully acted film.", "I want my two hours back."]
pretrained_vectors = embed(minilm, tokenizer, texts)
backend.manual_seed(0)
model = peft.get_peft_model(SequenceClassifier(minilm, 2), peft.LoRAConfig(rank=4, alpha=32))
print("layer 0 query:", type(minilm.layers[0].attention.query).__name__,
      "| key:", type(minilm.layers[0].attention.key).__name__)
assert xp.array_equal(embed(minilm, tokenizer, texts), pretrained_vectors)

for block in minilm.layers:                                  # stand-in for training: random B's
    for projection in (block.attention.query, block.attention.value):
        projection.lora_B.weight.data = backend.host_normal(projection.lora_B.weight.shape, 0.02)
ids, mask = tokenizer(texts)
model.eval()
with no_grad():
    adapted = model(ids, mask).data
    peft.merge(model, fold_lora=True)
    folded = model(ids, mask).data
print(f"logits before and after folding every LoRA into its weight: max diff {float(abs(adapted - folded).max()):.1e}")
assert xp.allclose(adapted, folded, atol=1e-4)
assert all(block.attention.query.merged for block in minilm.layers)

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 09 --exercises` runs only these cells).
#
# 09.1 — For the update alone, y = s B A x over a batch (x: (N, in), so y = s x A^T B^T: (N, out)),
# with upstream gradient g = dL/dy (N, out): write lora_grads(x, g, A, B, s) returning (dL/dA,
# dL/dB). The check compares with autograd, with B non-zero (as after a few steps).

# %% exercise 09.1
from exercises import check


def lora_grads(x, g, A, B, s):
    raise NotImplementedError("exercise 09.1")   # return (dA, dB) with A's and B's shapes


check("09.1", lora_grads)

# %% [markdown]
# 09.2 — Write fold(W, A, B, alpha, r): the weight of the single Linear that computes what the frozen
# W plus its LoRA update computes. The check compares with LoRALinear.merge.

# %% exercise 09.2
from exercises import check


def fold(W, A, B, alpha, r):
    raise NotImplementedError("exercise 09.2")   # return W' with W's shape


check("09.2", fold)

# %% [markdown]
# In the library: `tinymix/peft.py` — `LoRALinear` (`forward`, `delta_weight`, `merge`, `unmerge`),
# `LoRAConfig` (`rank`, `alpha`, `dropout`, `target_modules`), `merge(model, fold_lora=True)`;
# `tinymix/nn.py` — `kaiming_uniform`. AdaMix-LoRA (lessons 10, 13, 15) keeps this layer and makes
# `lora_A` a mixture of experts.
#
# After lessons 08-09, do assignment A4 (adapter and LoRA, with merge and unmerge):
# `python3 -m tinymix.grade lessons/assignments/a4_adapter_lora.py`.
