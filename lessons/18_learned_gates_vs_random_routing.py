# %% [markdown]
# # Lesson 18 — learned gates against random routing: UniPELT beside AdaMix
#
# Objective: put two ways of combining several modules side by side. UniPELT LEARNS, for every
# example and every layer, how much of each sub-module to use; AdaMix routes at RANDOM while it
# trains and averages its experts afterwards. See what each decides, what each can fold away after
# training, and what the learned gates cost at inference.
#
# Prerequisites: lessons 08 (adapters), 09 (LoRA), 10 (routing) and 13 (averaging).
#
# UniPELT (Mao et al., ACL 2022) puts three sub-modules in every layer l — a prefix (learned keys and
# values in front of the sentence's own), an adapter and LoRA on W_q and W_v — and puts each behind a
# gate, a Linear d -> 1 on the sub-module's own input x (B, T, d), squashed and averaged over the
# sentence's T positions:
#
#     g(x) = (1/T) sum_t sigmoid(x_t w + b)              one number in (0, 1) per example
#
#     prefix:   keys [g_P(x) P_K ; K], values [g_P(x) P_V ; V]
#     LoRA:     W x + b + g_L(x) B A x                   (the gate takes the place of alpha / r)
#     adapter:  LN(z + g_A(y) up(relu(down(y)))),  y = LN(z)
#
# So the model decides, per example and per layer, how loudly each sub-module speaks; the gates
# train with everything else. AdaMix (lessons 10-13) has no gate at all:
#
#     training:   at each forward call ONE expert, drawn uniformly at random, for the whole batch
#     inference:  every mixture replaced by ONE module with the experts' mean weights (merged)
#
#                   UniPELT                                 AdaMix
#     who decides   a learned function of the input         a fair die
#     granularity   per example, per layer, per sub-module  per forward call, per mixture
#     at inference  every sub-module and gate runs;         one merged module per site
#                   nothing folds away
#
# Both are trained below on the same slice of movie reviews, through all six layers of MiniLM, with
# the library's own loop pieces and each method's default settings and learning rate (the CLI's).
# The budget is a handful of steps: enough to move the gates and the experts, far too little to
# learn sentiment well — the accuracies printed are for reference, and the real comparison of the
# two is `python3 -m tinymix compare --suite neighbours`.

# %%
import math
import time

import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget, save_figure

import matplotlib.pyplot as plt

from tinymix import adamix, backend, data, methods, no_grad, peft
from tinymix import functional as F
from tinymix.backend import host, xp
from tinymix.neighbours import unipelt
from tinymix.optim import AdamW, clip_grad_norm, linear_warmup_decay
from tinymix.pretrained import load_pretrained
from tinymix.tensor import Tensor
from tinymix.train import TrainConfig, decay_groups, length_grouped_batches
from tinymix.transformer import SequenceClassifier, Transformer

minilm, tokenizer = load_pretrained("minilm-l6", max_length=64)
pretrained_weights = minilm.state_dict()
splits = data.load_movie_reviews()
TRAIN, TEST, BATCH = budget(320, 48), budget(128, 32), budget(16, 8)
STEPS = math.ceil(TRAIN / BATCH)
train_split = data.Split(splits["train"].texts[:TRAIN], splits["train"].labels[:TRAIN])
test_split = data.Split(splits["test"].texts[:TEST], splits["test"].labels[:TEST])


def fresh_minilm():
    model = Transformer(minilm.config)
    model.load_state_dict(pretrained_weights)
    return model


def build(name):
    """The method as the CLI builds it: its TrainConfig, and the model with its modules injected."""
    config = TrainConfig(method=name, train_size=TRAIN, batch_size=BATCH, epochs=1, progress=False)
    backend.manual_seed(config.seed)
    return config, peft.get_peft_model(SequenceClassifier(fresh_minilm(), 2), methods.peft_config(config, STEPS))


def fit(name):
    """One epoch of tinymix.train's step on the slice: warm-up and decay, the method's loss (two
    passes and the consistency term for AdaMix), clipping, AdamW with decay groups."""
    config, model = build(name)
    lr = methods.learning_rate(config, methods.CLASSIFICATION)
    optimizer = AdamW(decay_groups(model, config.weight_decay), lr=lr)
    model.train()
    backend.manual_seed([config.seed, 0])
    started, losses = time.perf_counter(), []
    for step, (texts, labels) in enumerate(length_grouped_batches(train_split, BATCH, backend.host_rng)):
        optimizer.lr = lr * linear_warmup_decay(step, int(config.warmup * STEPS), STEPS)
        ids, mask = tokenizer(texts)
        targets = backend.to_numpy(labels).astype("int64")
        task = methods.task_loss(config, model, lambda logits: F.cross_entropy(logits, targets), mask)
        optimizer.zero_grad()
        loss, _, _ = adamix.two_pass_backward(lambda: model(ids, mask), task, methods.consistency_weight(config))
        clip_grad_norm(model.trainable_parameters(), config.max_grad_norm)
        optimizer.step()
        methods.after_step(config, model, step)
        losses.append(loss.item())
    print(f"{methods.METHODS[name].label}: {STEPS} steps (batch {BATCH}, lr {lr:g}) in "
          f"{time.perf_counter() - started:.1f} s; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return model


def test_pass(model, after_batch=None, sentences=TEST):
    """The model's test logits in eval mode, batch by batch (after_batch(model) runs after each)."""
    model.eval()
    logits = []
    with no_grad():
        for start in range(0, sentences, 32):
            ids, mask = tokenizer(test_split.texts[start:min(start + 32, sentences)])
            logits.append(model(ids, mask).data)
            if after_batch is not None:
                after_batch(model)
    return logits


def accuracy(logits):
    predicted = backend.to_numpy(xp.concatenate(logits).argmax(-1))
    return float((predicted == host.asarray(test_split.labels)).mean())


def gates_and_logits(model):
    """Every gate's value for every test sentence, {(layer, sub-module): (TEST,) host array}, and
    the test logits, from one pass."""
    found = {}
    logits = test_pass(model, lambda m: [found.setdefault(key, []).append(backend.to_numpy(value))
                                         for key, value in unipelt.gates(m).items()])
    return {key: host.concatenate(values) for key, values in found.items()}, logits


_, untrained = build("unipelt")
start_gates, _ = gates_and_logits(untrained)           # the same initial weights, before any step
uni = fit("unipelt")
gates, uni_logits = gates_and_logits(uni)
uni_accuracy = accuracy(uni_logits)
print(f"UniPELT test accuracy on {TEST} sentences after {STEPS} steps: {uni_accuracy:.3f}")

# %% [markdown]
# ## What the gates decided
#
# Each test sentence gets its own gate value at every layer and for every sub-module (the prefix,
# the adapter, LoRA on the query, LoRA on the value). The table gives their mean over the test
# sentences, with the spread across sentences, beside the mean before training (the gates start
# near 0.5: their Linear starts small). By construction every value lies strictly between 0 and 1
# and depends on the sentence. The formula is checked on one gate against a hand computation.

# %%
kinds = ["prefix", "adapter", "lora_query", "lora_value"]
layers = range(minilm.config.num_layers)
print("each gate: its mean over the test sentences +- their std (its mean before training)")
print(f"{'layer':>5}  " + "  ".join(f"{kind:>26}" for kind in kinds))
for layer in layers:
    cells = [f"{gates[layer, k].mean():.3f} +- {gates[layer, k].std():.3f} (was {start_gates[layer, k].mean():.2f})"
             for k in kinds]
    print(f"{layer:>5}  " + "  ".join(f"{c:>26}" for c in cells))
every = host.concatenate(list(gates.values()))
moved = max(abs(float(gates[key].mean() - start_gates[key].mean())) for key in gates)
print(f"{len(gates)} gates x {TEST} sentences: values from {every.min():.3f} to {every.max():.3f}; "
      f"the largest change of a gate's mean in training: {moved:.3f}")
assert set(gates) == {(layer, kind) for layer in layers for kind in kinds}
assert all(g.shape == (TEST,) for g in gates.values()), "one gate value per example"
assert 0 < every.min() and every.max() < 1, "every gate lies strictly between 0 and 1"
assert all(float(g.max() - g.min()) > 1e-4 for g in gates.values()), "gates vary across examples"

gate = uni.transformer.layers[0].attention.query.gate          # the gate of layer 0's LoRA on W_q
x = Tensor(backend.host_normal((3, 5, minilm.config.hidden_size), 1.0))
with no_grad():
    by_hand = (1 / (1 + xp.exp(-(x.data @ gate.linear.weight.data.T + gate.linear.bias.data)))).mean(axis=1)
    assert xp.allclose(gate(x).data, by_hand, atol=1e-6), "g(x) = mean over positions of sigmoid(x w + b)"

# %% [markdown]
# ## Why a gated model cannot be merged
#
# LoRA alone folds into its frozen weight: W' = W + (alpha / r) B A, the same for every input (lesson
# 09). A gated LoRA adds g(x) B A x, and g(x) is a different number for every sentence: no fixed W'
# gives W x + g(x) B A x for two sentences with different gates, unless B A = 0. The adapter's update,
# scaled by its own gate, sits inside a LayerNorm, and the prefix's keys and values are scaled by
# theirs. So the library refuses to merge UniPELT (`unipelt.merge`, and each gated LoRA layer's
# `merge`); `deploy` removes the only thing that can go — the prefix's training-time MLP, replaced by
# its output table — and every gate and sub-module stays at inference.

# %%
def refused(action):
    """The message of the ValueError that `action()` raises, or None when it does not refuse."""
    try:
        action()
    except ValueError as error:
        return str(error)
    return None


query = uni.transformer.layers[0].attention.query
first, second = gates[0, "lora_query"].argmin(), gates[0, "lora_query"].argmax()
BA = query.lora_B.weight.data @ query.lora_A.weight.data
print(f"layer 0, LoRA on W_q: gate {gates[0, 'lora_query'][first]:.4f} for test sentence {first}, "
      f"{gates[0, 'lora_query'][second]:.4f} for sentence {second}; |B A| = {float(xp.sqrt((BA * BA).sum())):.3f}")
assert gates[0, "lora_query"][first] != gates[0, "lora_query"][second] and float(abs(BA).max()) > 0
message = refused(lambda: unipelt.merge(uni))
assert message is not None, "merging a UniPELT model is refused"
assert refused(query.merge) is not None, "a gated LoRA layer refuses to fold itself"
print(f"unipelt.merge refuses: {message}")

trainable_before = uni.num_parameters(trainable_only=True)
before = test_pass(uni, sentences=32)
unipelt.deploy(uni)
after = test_pass(uni, sentences=32)
trainable, deployed = unipelt.count(uni)
C, L, c = minilm.config.hidden_size, minilm.config.num_layers, uni.peft_config
bottleneck, gate_size = C // c.reduction_factor, C + 1
per_layer = (2 + len(c.lora_targets)) * gate_size              # a gate for the prefix, the adapter, each LoRA
per_layer += (C * bottleneck + bottleneck) + (bottleneck * C + C) + len(c.lora_targets) * 2 * c.lora_rank * C
formula = c.prefix_length * 2 * L * C + L * per_layer + (2 * C + 2)
print(f"UniPELT (APL): {trainable_before:,d} trainable numbers while training, {deployed:,d} deployed "
      f"(the prefix as its table; every gate, adapter and LoRA factor stays)")
assert deployed == formula, "deployed = prefix table + gates + adapters + LoRA factors + head"
assert all(xp.allclose(a, b, atol=1e-5) for a, b in zip(before, after)), "deploy changes no prediction"

# %% [markdown]
# ## AdaMix: the die, and the merge
#
# The same slice, AdaMix with its defaults (an adapter mixture of 4 down-projections, the
# up-projection shared, two passes and the consistency loss). Nothing decides which expert a call
# uses: each mixture draws uniformly, so over the training calls each expert's share should be 1/4,
# up to chance (Pearson's X^2 over all mixtures together, 3 degrees of freedom, exceeds 16.27 with
# probability 0.001). Every forward call in training draws exactly once: two passes per step.
#
# Afterwards the merge replaces each mixture by ONE Linear with its experts' mean weights: the merged
# model gives exactly the predictions of the "average" inference, with one adapter's parameters.

# %%
mix = fit("adamix")
report = adamix.routing_report(mix)
counts = host.array([entry["route_counts"] for entry in report.values()])        # (layers, experts)
calls = 2 * STEPS
pooled = counts.sum(axis=0)
expected = pooled.sum() / len(pooled)
chi_square = float(((pooled - expected) ** 2 / expected).sum())
for layer, row in enumerate(counts):
    print(f"layer {layer}: training calls per expert {row.tolist()}")
print(f"all layers: {pooled.tolist()} (uniform: {expected:.0f} each); X^2 = {chi_square:.2f}")
assert (counts.sum(axis=1) == calls).all(), "each training forward call routes once: two passes per step"
assert chi_square < 16.27, "the routes are uniform"

average = test_pass(mix)                                # "average" is the default inference
experts_mean = {name: sum(e.weight.data for e in m.experts) / m.num_experts
                for name, m in mix.named_modules() if isinstance(m, adamix.Mixture)}
single = peft.merged_parameter_count(mix)
peft.merge(mix)
merged = test_pass(mix)
modules = dict(mix.named_modules())
largest = max(float(abs(modules[name].weight.data - mean).max()) for name, mean in experts_mean.items())
gap = max(float(abs(a - b).max()) for a, b in zip(average, merged))
print(f"merged: {len(experts_mean)} mixtures -> one Linear each, weights off the experts' mean by at most "
      f"{largest:.1e}; logits off the average inference by at most {gap:.1e}; "
      f"{mix.num_parameters(trainable_only=True):,d} trainable numbers (one adapter's)")
print(f"AdaMix test accuracy (merged) on {TEST} sentences after {STEPS} steps: {accuracy(merged):.3f}")
assert not adamix.mixtures(mix)
assert largest < 1e-6, "each merged Linear holds its experts' mean weights"
assert gap < 1e-5, "the merged model predicts exactly as the average inference"
assert mix.num_parameters(trainable_only=True) == single

figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
width = 0.2
for k, kind in enumerate(kinds):
    positions = [layer + (k - 1.5) * width for layer in layers]
    left.bar(positions, [gates[layer, kind].mean() for layer in layers], width,
             yerr=[gates[layer, kind].std() for layer in layers], capsize=2, color=f"C{k}", label=kind)
    left.plot(positions, [start_gates[layer, kind].mean() for layer in layers], "_", color="black",
              markersize=9)
left.axhline(0.5, color="0.6", linewidth=0.8, linestyle=":")
left.set(xlabel="layer", ylabel="gate, mean over test sentences (bars: +- std)", xticks=list(layers),
         title="UniPELT: learned gates (black ticks: before training)", ylim=(0, 1))
left.legend(fontsize=8, ncol=4, loc="upper center")
M = counts.shape[1]
for k in range(M):
    right.bar([layer + (k - (M - 1) / 2) * width for layer in layers], counts[:, k], width, color=f"C{k}",
              label=f"expert {k}")
right.axhline(calls / M, color="black", linewidth=0.8, linestyle="--", label="uniform")
right.set(xlabel="layer", ylabel="training calls routed", xticks=list(layers),
          title=f"AdaMix: random routes ({calls} calls per mixture)")
right.legend(fontsize=8, ncol=3)
save_figure(figure, "18_gates_and_routes.png")

# %% [markdown]
# ## What the gates cost at inference
#
# A merged LoRA costs exactly the frozen model: its update is inside W. A deployed UniPELT runs
# every sub-module and every gate, and its attention sees P = 10 more keys in every layer.
# `unipelt.inference_cost` times one eval forward of each, on MiniLM's shape, the arms taking turns
# so that other work on the machine falls on all of them alike. The ratio is a measurement on this
# machine, under its load at the time: it is printed, not asserted.

# %%
seconds = unipelt.inference_cost(batch=budget(8, 4), length=budget(64, 32), repeats=budget(3, 2))
for name, value in seconds.items():
    print(f"{name:18s} {1000 * value:7.1f} ms per forward   x{value / seconds['merged LoRA']:.2f} of merged LoRA")

# %% [markdown]
# What to take away. The gates are a real mechanism — per example, per layer, learned — and their
# price is paid at every inference: nothing folds away. AdaMix spends its randomness only while it
# trains and deploys one module per site, at the frozen model's cost for LoRA and one adapter's for
# adapters. Which trains the better model is a separate, empirical question, with claims fixed in
# advance in docs/plans/neighbours.md.
#
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 18 --exercises` runs only these cells).
#
# 18.1 — A gate sees a sentence of three tokens whose scores x_t w + b are 0, ln 3 and ln 3. What is
# the gate's value? (Careful: the mean of the sigmoids, not the sigmoid of the mean.)

# %% exercise 18.1
from exercises import check

gate_value = ...                 # a number in (0, 1)
check("18.1", gate_value)

# %% [markdown]
# 18.2 — How many numbers do the gates alone add to MiniLM (d = 384, 6 layers) in UniPELT-APL, with
# LoRA on the query and the value?

# %% exercise 18.2
from exercises import check

gate_parameters = ...            # a whole number
check("18.2", gate_parameters)

# %% [markdown]
# 18.3 — Which of these can be folded into the frozen weights after training, leaving no extra
# module at inference? (a) AdaMix-LoRA (A mixed, B shared), its experts averaged; (b) a UniPELT
# gated LoRA; (c) an AdaMix adapter mixture, its experts averaged; (d) a UniPELT gated LoRA whose gate
# weight w is exactly zero. Answer with the letters.

# %% exercise 18.3
from exercises import check

foldable = ...                   # a string of letters
check("18.3", foldable)

# %% [markdown]
# In the library: `tinymix/neighbours/unipelt.py` — `Gate`, `GatedLoRALinear`, `GatedAdapter`,
# `inject`, `gates`, `merge` (which refuses), `deploy`, `count` and `inference_cost`;
# `tinymix/neighbours/prefix.py` — the prefix and its gated hook; `tinymix/adamix.py` — `Mixture`,
# `routing_report`, `merge_experts`; `tinymix/methods.py` — each method's settings, loss and
# learning rate; `tinymix/train.py` — the loop whose step `fit` repeats.
