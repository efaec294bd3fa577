# %% [markdown]
# # Lesson 15 — AdaMix-LoRA on the tiny GPT
#
# Objective: the paper's NLG recipe in miniature — adapt a frozen, pretrained decoder to a
# data-to-text task with a mixture of LoRA experts, then fold everything back into the original
# weights so that generation costs exactly what the pretrained model costs.
#
# Prerequisites: lessons 09-13.
#
# The recipe (docs/adamix.md section 7, the official GPT-2 code):
#
#     LoRA on the attention query and value:  W x + (alpha / r) B A dropout(x),  r = 4, alpha = 32
#     M = 8 experts of A per site, ONE shared B; the query and value of a layer use the SAME expert
#     the 8 A's start as identical copies of one initialised A (the code's deep copy)
#     loss = CE over the target tokens (label smoothing 0.1) + 100 * symKL over the target tokens
#     AdamW, on PyTorch 1.x: an A routed once is stepped at EVERY later step ("dense", lesson 10)
#     inference: mean of the A's -> one LoRA -> folded into W
#
# The model is tinymix's own tiny GPT: a 4-layer, 128-wide decoder pretrained on Shakespeare and on
# plain restaurant descriptions (data/tiny_gpt) — like GPT-2, it already speaks the domain before it
# ever sees a meaning representation. The task is a small E2E-style one: from a meaning representation such as
# "name The Eagle, type pub, food Italian, area riverside =>" write "The Eagle is an Italian pub in
# the riverside area." The loss counts only the sentence's tokens: the model must learn to WRITE
# from the prompt, not to predict prompts.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import budget, save_figure

import matplotlib.pyplot as plt

from tinymix import Tensor, adamix, backend, no_grad, peft
from tinymix.e2e import pretrain
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.nn import Dropout
from tinymix.optim import AdamW, clip_grad_norm, linear_warmup_decay
from tinymix.pretrained import load_pretrained
from tinymix.transformer import LanguageModel, Transformer, TransformerConfig

try:
    transformer, tokenizer = load_pretrained("tiny-gpt")
    PRETRAINED = True
except FileNotFoundError as error:
    # Without the checkpoint, every mechanism below still runs, on an UNTRAINED decoder of the same
    # shape with a tokenizer learnt from the task's own text; the numbers then say nothing about
    # adapting a pretrained model.
    print(f"SKIPPING the real checkpoint: {error}\nusing an untrained stand-in decoder instead")
    PRETRAINED = False
print(f"tiny GPT {'(pretrained on Shakespeare and restaurant descriptions)' if PRETRAINED else '(stand-in)'}")

# %% [markdown]
# ## The task
#
# tinymix's E2E-style data (`tinymix/e2e/`): restaurant meaning representations (MRs) with a name
# and 2-5 other slots, and sentences written from them by grammatical templates; validation MRs use
# slot-value combinations never seen in training. Each example is one token sequence,
# prompt + " " + sentence + end-of-text; its target at position t is the token at t + 1, or
# `ignore_index` (-100) while still inside the prompt.

# %%
from tinymix import e2e

TRAIN, VALIDATION = budget(320, 96), budget(48, 24)
splits = e2e.make_splits(train_size=TRAIN, validation_size=VALIDATION, test_size=1, seed=0)
train_pairs = [(ex.prompt, " " + ex.references[0]) for ex in splits["train"]]
validation_pairs = [(ex.prompt, " " + ex.references[0]) for ex in splits["validation"]]
print(f"{len(train_pairs)} training and {len(validation_pairs)} validation MRs; e.g.")
print("   ", *train_pairs[0])

if not PRETRAINED:
    tokenizer = pretrain.train_bpe_tokenizer([p + s for p, s in train_pairs], vocab_size=400, max_length=128)
    transformer = Transformer(TransformerConfig(
        kind="decoder", vocab_size=tokenizer.vocab_size, hidden_size=128, num_layers=4, num_heads=4,
        intermediate_size=512, max_positions=128, dropout=0.1, layer_norm_eps=1e-5, gelu_approximate=True,
        pad_token_id=tokenizer.pad_id)).requires_grad_(False)
END = tokenizer.tokenizer.token_to_id(pretrain.END_OF_TEXT)


def encode(batch):
    """(prompt, sentence) pairs -> inputs (B, T), targets (B, T) with -100 outside the sentence."""
    rows = []
    for prompt, sentence in batch:
        p, s = tokenizer.encode(prompt), tokenizer.encode(sentence)
        rows.append((p + s, [-100] * (len(p) - 1) + s + [END]))
    T = max(len(ids) for ids, _ in rows)
    inputs = [ids + [tokenizer.pad_id] * (T - len(ids)) for ids, _ in rows]
    targets = [t + [-100] * (T - len(t)) for _, t in rows]
    return backend.to_numpy(inputs).astype("int64"), backend.to_numpy(targets).astype("int64")


inputs, targets = encode(train_pairs[:2])
print("inputs  :", inputs[0].tolist()[:24], "...")
print("targets :", targets[0].tolist()[:24], "...")
assert (targets[0][:-1][targets[0][:-1] != -100] == inputs[0][1:][targets[0][:-1] != -100]).all()

# %% [markdown]
# ## Injecting AdaMix-LoRA
#
# `get_peft_model` wraps every layer's query and value projection in a LoRALinear whose A is a
# mixture of 8 experts and whose B is one shared Linear; the two A-mixtures of a layer share one
# `Route`. B starts at zero, so the adapted model is exactly the pretrained one. The 8 A's start as
# identical copies — the official LoRA code's deep copy, and the library's default for AdaMix-LoRA
# (`expert_init="official"`: identical A's, independent adapter experts). The next cell shows why
# that matters for a mixture that will be AVERAGED.

# %%
config = peft.AdaMixConfig(module="lora", num_experts=8, sharing="up",       # expert_init: the default
                           lora=peft.LoRAConfig(rank=4, alpha=32, dropout=0.1, target_modules=("query", "value")))
C, L = transformer.config.hidden_size, transformer.config.num_layers


def fresh_model(method_config, seed=0, model_dropout=0.0):
    """The adapted GPT. `model_dropout` is the dropout INSIDE the frozen GPT (LoRA's own dropout is
    separate): 0, as in the official GPT-2 code, whose model has no dropout layers at all."""
    backend.manual_seed(seed)
    base = load_pretrained("tiny-gpt")[0] if PRETRAINED else transformer
    if not PRETRAINED:                      # the stand-in: re-initialise the same weights each time
        for name, p in transformer.named_parameters():
            p.requires_grad = False
    for _, module in base.named_modules():
        if isinstance(module, Dropout):
            module.p = model_dropout
    return peft.get_peft_model(LanguageModel(base), method_config)


model = fresh_model(config)
peft.print_trainable_parameters(model)
assert model.num_parameters(trainable_only=True) == L * 2 * (8 * 4 * C + C * 4)      # 8 A's + 1 B, q and v
assert peft.merged_parameter_count(model) == L * 2 * (4 * C + C * 4)
model.eval()
with no_grad():
    adapted = model(inputs).data
    plain = LanguageModel(load_pretrained("tiny-gpt")[0] if PRETRAINED else transformer)
    assert float(abs(adapted - plain(inputs).data).max()) < 1e-5, "B = 0: the pretrained model exactly"
model.train()
model(inputs)
for block in model.transformer.layers:
    assert block.attention.query.lora_A.route.index == block.attention.value.lora_A.route.index

# %% [markdown]
# ## Independent or identical experts?
#
# The deployed model uses the MEAN of the A's. Eight independently drawn random matrices average
# to a matrix about 1/sqrt(8) = 0.35 times as large as each of them (their random parts cancel),
# so what B learned against any one A is applied, after merging, to a much weaker input. Identical
# copies start with mean = each; they drift apart only as far as training moves them (and the
# consistency loss pulls them back together).

# %%
def mean_to_single_ratio(expert_init):
    from dataclasses import replace
    m = fresh_model(replace(config, expert_init=expert_init))
    mixture = m.transformer.layers[0].attention.query.lora_A
    norm = lambda a: float(xp.sqrt((a * a).sum()))
    return norm(mixture.averaged_weights()[0].data) / norm(mixture.experts[0].weight.data)


ratios = {init: mean_to_single_ratio(init) for init in ("independent", "identical", "official")}
print(f"|mean of the 8 A's| / |one A|: independent {ratios['independent']:.2f}, identical {ratios['identical']:.2f}, "
      f"the default {ratios['official']:.2f}")
assert abs(ratios["independent"] - 8 ** -0.5) < 0.05 and abs(ratios["identical"] - 1.0) < 1e-6
assert config.expert_init == "official" and abs(ratios["official"] - 1.0) < 1e-6, \
    "the default starts the A-experts as identical copies"

# %% [markdown]
# ## The consistency loss over target tokens only
#
# For a language model the two passes' predictions are compared at every TARGET position: the
# logits (B, T, V) are flattened to rows and only the rows where a target exists enter the
# symmetric KL. Whatever the passes predict inside the prompt or the padding costs nothing.
#
# What makes two passes differ matters as much. In the official GPT-2 code the model has no dropout
# layers: the passes differ only by their routes and the LoRA dropout, and while B = 0 neither
# changes anything, so the consistency term starts at exactly 0 and grows only as the experts
# disagree. Turn the frozen GPT's own dropout on (p = 0.1, as in its pretraining) and the two passes
# differ from the very first step, before anything is learnt; a hundred times that KL swamps the
# task's gradient, and clipping the total norm to 1 leaves the task almost nothing.

# %%
target_mask = targets != -100                                      # (B, T) booleans
z1, z2 = model(inputs), model(inputs)                              # fresh routes and dropout each
at_start = adamix.consistency_loss(z1, z2, target_mask).item()
noisy = fresh_model(config, model_dropout=0.1).train()             # the GPT's own dropout on
z1, z2 = noisy(inputs), noisy(inputs)
masked = adamix.consistency_loss(z1, z2, target_mask).item()
print(f"consistency at the start, over {int(target_mask.sum())} target tokens: {at_start:.1e} without the "
      f"GPT's dropout, {masked:.2e} with it (x100 in the loss: {100 * masked:.2f})")
assert at_start == 0.0 and masked > 0
rows = backend.from_numpy(target_mask.reshape(-1).nonzero()[0])
by_hand = F.symmetric_kl(z1.reshape(-1, z1.shape[-1])[rows], z2.reshape(-1, z2.shape[-1])[rows]).item()
z3 = Tensor(z2.data.copy())
z3.data[~backend.from_numpy(target_mask)] += 5.0                   # change only non-target positions
assert abs(masked - by_hand) < 1e-6                                 # float32: two orders of summation
assert abs(adamix.consistency_loss(z1, z3, target_mask).item() - masked) < 1e-9

# %% [markdown]
# ## Training: single LoRA against AdaMix-LoRA
#
# The same batches, seed and steps for both; label smoothing 0.1; AdamW with warm-up and linear
# decay and the library's default dense expert updates (as the official code); consistency weight
# 100, as in the paper's code, with the GPT's own dropout off. The validation loss is the plain
# cross-entropy of the target tokens, without smoothing. Departures from the official recipe, for a
# budget of a hundred-odd steps instead of several epochs of E2E:
# - learning rates far above the official 2e-4, and one per method: 1e-2 for LoRA, 2e-3 for
#   AdaMix-LoRA — each the best of 1e-2, 5e-3, 2e-3 and 1e-3 by the final validation loss of this
#   very run (so the curves below flatter both a little). Dense updates carry an A-expert farther per
#   unit of learning rate (lesson 10): at LoRA's 1e-2, AdaMix-LoRA's validation loss climbs instead
#   of falling in this miniature — set LRS["AdaMix-LoRA"] = 1e-2 and see;
# - the gradient clipped to norm 1 (the official NLG scripts do not clip);
# - the same number of steps for both (the official scripts train AdaMix 4x longer than LoRA);
# - greedy decoding, not beam search.
#
# Expect AdaMix-LoRA to learn SLOWER per step here. Each step runs two passes, and each pass sends
# every layer's query and value through ONE of the 8 A's; so an A receives a gradient on only
# 1 - (7/8)^2 = 23% of the steps, about 1 in 4.3 (the loop below counts it). On the other steps the
# dense update keeps it moving on its momentum alone. The paper's gains come after many epochs; a
# miniature this short shows the machinery, not that result.

# %%
STEPS, BATCH, CONSISTENCY = budget(120, 16), budget(8, 4), 100.0
LRS = {"LoRA": 1e-2, "AdaMix-LoRA": 2e-3}
validation = encode(validation_pairs)


def validation_loss(model):
    model.eval()
    with no_grad():
        logits = model(validation[0])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), validation[1].reshape(-1)).item()


def adapt(method_config, consistency_weight, lr):
    """The adapted model, its validation curve, and per step how many A's had a gradient (of all)."""
    model = fresh_model(method_config)
    optimizer = AdamW(model.trainable_parameters(), lr=lr, weight_decay=0.01)      # dense by default
    curve, with_gradient = [(0, validation_loss(model))], []
    experts = [e for m in adamix.mixtures(model) for e in m.experts]
    batch_rng = backend.host_generator(1)
    for step in range(STEPS):
        model.train()
        inputs, targets = encode([train_pairs[i] for i in batch_rng.integers(0, len(train_pairs), size=BATCH)])
        optimizer.lr = lr * linear_warmup_decay(step, STEPS // 10, STEPS)

        def task(logits):
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), label_smoothing=0.1)
        loss, _, _ = adamix.two_pass_loss(lambda: model(inputs), task, consistency_weight,
                                          target_mask=targets != -100)
        optimizer.zero_grad()
        loss.backward()
        with_gradient.append(sum(e.weight.grad is not None for e in experts))
        clip_grad_norm(model.trainable_parameters(), 1.0)
        optimizer.step()
        if (step + 1) % max(1, STEPS // 6) == 0:
            curve.append((step + 1, validation_loss(model)))
    return model, curve, with_gradient, len(experts)


lora_model, lora_curve, _, _ = adapt(peft.LoRAConfig(rank=4, alpha=32, dropout=0.1), 0.0, LRS["LoRA"])
adamix_model, adamix_curve, with_gradient, expert_count = adapt(config, CONSISTENCY, LRS["AdaMix-LoRA"])
for name, curve in (("LoRA", lora_curve), ("AdaMix-LoRA", adamix_curve)):
    print(f"{name:12s} validation loss on target tokens: {curve[0][1]:.3f} -> {curve[-1][1]:.3f}")
    assert curve[-1][1] < curve[0][1] - 0.1, f"{name}: adapting must lower the validation loss"
share = sum(with_gradient) / (len(with_gradient) * expert_count)
print(f"an A-expert had a gradient on {share:.1%} of the steps (1 in {1 / share:.1f}); "
      f"1 - (7/8)^2 = {1 - (7 / 8) ** 2:.1%}")
assert abs(share - (1 - (7 / 8) ** 2)) < 0.06, "two passes, one A of 8 each: about 1 step in 4.3"

figure, axes = plt.subplots(figsize=(6.5, 4))
for name, curve in (("LoRA r=4", lora_curve), ("AdaMix-LoRA (8 A's, shared B)", adamix_curve)):
    axes.plot([s for s, _ in curve], [v for _, v in curve], "o-", label=name)
axes.set(xlabel="training step", ylabel="validation cross-entropy (target tokens)",
         title="adapting the tiny GPT to data-to-text" + ("" if PRETRAINED else " (stand-in model)"))
axes.legend()
save_figure(figure, "15_gpt_adaptation.png")

# %% [markdown]
# ## Deploying: average, fold, generate
#
# Average the 8 A's of every site (one LoRA per site), then fold (alpha / r) B A into the frozen W:
# the model is again a plain tiny GPT — same parameter count, same cost per generated token — and
# it predicts exactly what the averaged mixture predicted. Then generate from three validation MRs,
# with both adapted models. Be prepared: after a hundred-odd steps the single LoRA already writes
# restaurant sentences (the tiny GPT read such sentences in pretraining, and learnt to copy names
# from its context), while the slower AdaMix-LoRA may still wander off into Shakespeare; the full
# comparison (docs/results_e2e.md) trains for 1,200 steps (AdaMix also 4,800).

# %%
val_inputs = validation[0][:8]
adamix_model.eval()
with no_grad():
    averaged = adamix_model(val_inputs).data
    peft.merge(adamix_model, fold_lora=True)
    folded = adamix_model(val_inputs).data
print(f"averaged mixture vs folded weights: max logit difference {float(abs(averaged - folded).max()):.1e}")
assert xp.allclose(averaged, folded, atol=1e-3 * float(abs(averaged).max()))
assert not adamix.mixtures(adamix_model)
assert all(block.attention.query.merged and block.attention.value.merged for block in adamix_model.transformer.layers)

for prompt, reference in validation_pairs[:3]:
    print(f"{prompt}\n    reference:   {reference!r}")
    for name, adapted in (("LoRA", lora_model.eval()), ("AdaMix-LoRA", adamix_model)):
        text = pretrain.generate(adapted, tokenizer, prompt, max_new_tokens=30)
        print(f"    {name + ':':13s}{text[len(prompt):]!r}")

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 15 --exercises` runs only these cells).
#
# 15.1 — With M = 4 A-experts instead of 8 (two passes per step, query and value sharing the index),
# on what share of the steps does a given A receive a gradient?

# %% exercise 15.1
from exercises import check

share_with_gradient = ...        # a probability
check("15.1", share_with_gradient)

# %% [markdown]
# 15.2 — M = 32 A-experts drawn INDEPENDENTLY (`expert_init="independent"`): how large is their mean,
# relative to one of them (Frobenius norms)? The check builds such a mixture and measures.

# %% exercise 15.2
from exercises import check

mean_to_one_ratio = ...          # a number
check("15.2", mean_to_one_ratio)

# %% [markdown]
# In the library: `tinymix/peft.py` — `AdaMixConfig(module="lora")`, `LoRAConfig`, `merge(model,
# fold_lora=True)`; `tinymix/adamix.py` — `Route` (query and value share an index),
# `consistency_loss(..., target_mask)`, `two_pass_loss`; `tinymix/e2e/pretrain.py` — the tiny GPT's
# pretraining (`python3 -m tinymix pretrain-gpt`), `generate`; `tinymix/pretrained.py` —
# `load_pretrained("tiny-gpt")`.
