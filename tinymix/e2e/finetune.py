"""Data-to-text: adapt the frozen tiny GPT to the E2E-style task (e2e/__init__.py), decode, and score.

    result = train(NLGConfig(method="adamix-lora", seed=0))
    python3 -m tinymix train --task e2e --method adamix-lora
    python3 -m tinymix compare --task e2e                # experiments/e2e.py

Each example is one token sequence,  prompt + " " + sentence + <|endoftext|>:
    "name The Eagle, type pub, food Italian => The Eagle is an Italian pub.<|endoftext|>"
and the language-model loss counts the sentence's tokens only (the prompt's targets are ignore_index):
the model learns to write from the meaning representation, not to predict meaning representations.

Methods (docs/adamix.md section 7): lora — r=4, alpha=32, dropout 0.1, on the attention query and value;
adamix-lora — M=8 LoRA A's per site (query and value share the expert index), one shared B, and
the consistency loss with weight 100 averaged over target tokens; adamix — AdaMix-adapter (M adapter
down-projections, shared up-projection, after each FFN); adapter — one such adapter; full — every
weight. All with label smoothing 0.1, AdamW and a linear warm-up and decay, the same steps and batches,
and no dropout inside the GPT itself (`model_dropout`): the official GPT-2 code has none, so AdaMix's
two passes differ only by their routes and the LoRA dropout. With the GPT's own dropout on, the two
passes differ from the first step, while B is still 0, and 100 times their KL drowns the task loss
(docs/results_e2e.md).

After training: the best weights on validation loss; merge (each mixture -> the mean of its experts)
and fold the LoRA update into W (no added latency); decode the test MRs with beam search; score
corpus BLEU-4 (against all references, and against the held-out template families' only) and the
slot error rate.
"""
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import tokenizers

from .. import adamix, backend, decode, e2e, methods, peft, validate
from ..store import checkpoint, files
from .. import functional as F
from .pretrain import END_OF_TEXT
from .gpt_folder import check as check_gpt_checkpoint
from ..nn import Dropout
from ..optim import AdamW, clip_grad_norm, linear_warmup_decay
from ..pretrained import TINY_GPT_DIR, load_pretrained, tiny_gpt_record
from ..tensor import no_grad
from ..train import decay_groups, loss_series, progress, say_learning_rate
from ..transformer import LanguageModel

TASK = methods.E2E               # the methods it offers and their default rates: methods.py
IGNORE = -100


@dataclass
class NLGConfig:
    method: str = "adamix-lora"      # one of methods.names("e2e") (or "adamix-adapter" for "adamix")
    model: str = "tiny-gpt"          # or the folder of a checkpoint from `pretrain-gpt --out FOLDER`
    seed: int = 0                    # weights, batch order, routes, dropout
    data_seed: int = 0               # the generated data set and its split
    train_size: int = 2000           # training MRs (one sentence each)
    validation_size: int = 100       # validation MRs (three sentences each)
    test_size: int = 100             # test MRs decoded and scored (one reference per template family)
    steps: int = 1200                # about 5 epochs of the 2,000 training MRs (the official LoRA recipe's 5)
    batch_size: int = 8
    lr: float = 0.0                  # 0: the method's default rate (methods.py)
    weight_decay: float = 0.01
    warmup: float = 0.06             # fraction of the steps
    max_grad_norm: float = 0.0       # 0: no clipping, as the official GPT-2 code (--clip 0.0)
    label_smoothing: float = 0.1
    eval_every: int = 100            # steps between validation losses (best weights are kept)
    patience: int = 0                # stop once the validation loss has not improved for this many
                                     # evaluations (0: never; `steps` stays the maximum and lays out the schedule)
    num_experts: int = 8
    sharing: str = "up"
    consistency_weight: float = 100.0
    low_memory: bool = False         # AdaMix: recompute pass 2 in backward (train.TrainConfig.low_memory)
    expert_init: str = "official"    # identical A-experts (the official code's deep copy), independent adapters
    expert_updates: str = "dense"    # train.TrainConfig.expert_updates: "dense" (official) or "lazy"
    lora_rank: int = 4
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1
    model_dropout: float = 0.0       # dropout inside the pretrained GPT while fine-tuning (see above)
    bottleneck: int = 8              # adapters: about as many merged parameters as LoRA r=4 on q, v
    also_train: str = ""             # frozen weights to train too, by name part, comma-separated
                                     # (HF PEFT's modules_to_save), e.g. "word_embeddings"
    decoding: str = "beam"           # "beam" or "greedy"
    beam_width: int = 10
    length_penalty: float = 0.8
    no_repeat_ngram: int = 4
    max_new_tokens: int = 72
    out: str = ""                    # run folder ("" = nothing written)
    test: bool = True                # decode and score test at the end; a learning-rate search sets
                                     # False, so that test is read only after the choice
    diagnostics: bool = False        # at each validation: how far each expert moved, the gradient norms
                                     # of the task and consistency terms; at the end: test loss of the
                                     # merged model vs each single expert vs random routing
    progress: bool = True

    def __post_init__(self):
        self.method = methods.ALIASES.get(self.method, self.method)
        self.validate()

    def validate(self):
        """Check every setting (validate.py): a ValueError names the flag, the value and what is valid.
        The settings both tasks share are checked in methods.check_settings."""
        check = validate.check_range
        methods.check_settings(self, TASK)
        if self.model != "tiny-gpt" and not Path(self.model).is_dir():
            raise ValueError(f"--model must be 'tiny-gpt' or a folder written by `pretrain-gpt --out FOLDER`; "
                             f"got {self.model!r}")
        if self.model != "tiny-gpt":
            check_gpt_checkpoint(self.model)       # complete, and a decoder
        for name in ("data_seed", "no_repeat_ngram", "patience"):
            check(name, getattr(self, name), 0, integer=True)
        for name, high in (("train_size", 100_000), ("validation_size", 10_000), ("test_size", 10_000)):
            check(name, getattr(self, name), 1, high, integer=True, why="the generated data set's limit")
        for name in ("steps", "eval_every", "beam_width", "max_new_tokens"):
            check(name, getattr(self, name), 1, integer=True)
        check("length_penalty", self.length_penalty, 0.0)
        check("max_grad_norm", self.max_grad_norm, 0.0, why="0: no clipping")
        for name in ("label_smoothing", "model_dropout"):
            check(name, getattr(self, name), 0.0, 1.0, high_open=True)
        validate.check_choice("decoding", self.decoding, ("beam", "greedy"))
        validate.check_text("also_train", self.also_train)
        validate.check_bool("diagnostics", self.diagnostics)


# ---- sequences and batches -------------------------------------------------------------------------

class Encoder:
    """Prompt and sentence -> token ids, never truncated (a too-long example is found, not cut)."""

    def __init__(self, tokenizer, context):
        bpe = tokenizers.Tokenizer.from_str(tokenizer.tokenizer.to_str())
        bpe.no_truncation()
        self.bpe, self.tokenizer, self.context = bpe, tokenizer, context
        self.end_id, self.pad_id = bpe.token_to_id(END_OF_TEXT), tokenizer.pad_id

    def prompt(self, mr):
        return self.bpe.encode(e2e.format_mr(mr)).ids

    def pair(self, mr, sentence):
        """(prompt ids, sentence ids + end), or None if the sequence would not fit the window."""
        prompt, target = self.prompt(mr), self.bpe.encode(" " + sentence).ids + [self.end_id]
        return (prompt, target) if len(prompt) + len(target) - 1 <= self.context else None

    def text(self, ids):
        return self.tokenizer.decode(ids).strip()


def encode_pairs(encoder, examples, all_references=True):
    """[(prompt ids, target ids)] for each example's references (or its first), with the count of
    pairs dropped because prompt + sentence exceed the context window."""
    pairs, dropped = [], 0
    for example in examples:
        for sentence in (example.references if all_references else example.references[:1]):
            pair = encoder.pair(example.mr, sentence)
            if pair is None:
                dropped += 1
            else:
                pairs.append(pair)
    return pairs, dropped


def make_batch(pairs, pad_id):
    """Inputs (B, T) and targets (B, T): targets are the next tokens on the sentence and IGNORE on the
    prompt and the padding. Padding goes on the right; a causal model never lets a real position see
    a later pad, so no attention mask is needed."""
    rows = [prompt + target for prompt, target in pairs]
    T = max(len(r) for r in rows) - 1
    inputs = [r[:-1] + [pad_id] * (T - len(r) + 1) for r in rows]
    targets = [[IGNORE] * (len(p) - 1) + t + [IGNORE] * (T - len(p) - len(t) + 1) for p, t in pairs]
    return backend.to_numpy(inputs).astype("int64"), backend.to_numpy(targets).astype("int64")


def batches(pairs, batch_size, rng, group=50):
    """Endless shuffled batches of similar-length pairs (less padding), epoch after epoch."""
    while True:
        order = rng.permutation(len(pairs)).tolist()
        stretch, chunks = batch_size * group, []
        for start in range(0, len(order), stretch):
            part = sorted(order[start:start + stretch], key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
            chunks += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
        for c in rng.permutation(len(chunks)).tolist():
            yield [pairs[i] for i in chunks[c]]


def lm_loss(logits, targets, label_smoothing=0.0):
    """Cross-entropy over the target tokens: logits (B, T, V), targets (B, T) with IGNORE elsewhere."""
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), IGNORE, label_smoothing)


def target_logits(model, inputs, targets):
    """Next-token logits at the n target positions only, (n, V), in the order of
    targets[targets != IGNORE]: the LM head skips the prompt and the padding (about half the
    positions), and so do the loss and AdaMix's consistency KL."""
    hidden = model.transformer(inputs)                                    # (B, T, C)
    rows = (targets.reshape(-1) != IGNORE).nonzero()[0]                   # (n,) host indices
    picked = hidden.reshape(-1, hidden.shape[-1])[backend.from_numpy(rows)]   # (n, C)
    return model.transformer.lm_logits(picked)                            # (n, V)


def evaluate_loss(model, pairs, pad_id, batch_size=32):
    """Mean target-token loss (no smoothing) in eval mode: each pair weighs by its target tokens."""
    model.eval()
    total = tokens = 0.0
    with no_grad():
        for start in range(0, len(pairs), batch_size):
            inputs, targets = make_batch(pairs[start:start + batch_size], pad_id)
            picked = targets[targets != IGNORE]
            total += F.cross_entropy(target_logits(model, inputs, targets), picked).item() * len(picked)
            tokens += len(picked)
    return total / tokens


# ---- training --------------------------------------------------------------------------------------

def build_model(cfg):
    backbone, tokenizer = load_pretrained(cfg.model)
    if backbone.config.kind != "decoder":
        raise ValueError(f"the e2e task needs a decoder (GPT) model, and {cfg.model!r} is an encoder")
    for _, module in backbone.named_modules():     # the GPT's own dropout; LoRA's is added below
        if isinstance(module, Dropout):
            module.p = cfg.model_dropout
    model = peft.get_peft_model(LanguageModel(backbone), methods.peft_config(cfg, cfg.steps))
    for part in filter(None, cfg.also_train.split(",")):
        chosen = [p for name, p in model.named_parameters() if part in name]
        if not chosen:
            raise ValueError(f"also_train: no parameter name contains {part!r}")
        for p in chosen:
            p.requires_grad = True
    return model, tokenizer


def gpt_folder(model):
    """The checkpoint folder of a tiny GPT (`model` "tiny-gpt" or a folder from pretrain-gpt), or None."""
    if model == "tiny-gpt":
        return TINY_GPT_DIR
    return Path(model) if (Path(model) / "model.safetensors").is_file() else None


def check_pretraining_data(cfg):
    """The tiny GPT was pretrained on E2E-style sentences from the TRAINING combinations of one data
    seed (data/tiny_gpt/README.md). With another data seed, the split differs and some test
    combinations may be among those sentences: an error, not a silent leak."""
    folder = gpt_folder(cfg.model)
    seen = tiny_gpt_record(folder).get("e2e_data_seed") if folder else None
    if seen is not None and seen != cfg.data_seed:
        raise ValueError(f"the tiny GPT was pretrained on sentences from the training combinations of data seed "
                         f"{seen}; with --data-seed {cfg.data_seed} some test combinations may be among them. "
                         f"Use --data-seed {seen}, or pretrain with `python3 -m tinymix pretrain-gpt "
                         f"--e2e-data-seed {cfg.data_seed}`")


def pretrained_weights_id(model):
    """The sha256 of the tiny GPT's weights file a run starts from (None for other models), saved with
    the results so that a comparison never mixes runs made from different checkpoints."""
    folder = gpt_folder(model)
    return files.sha256(folder / "model.safetensors") if folder else None


def train(cfg, splits=None, extra_loss=None):
    """Fine-tune, keep the best weights on validation loss, merge and fold, decode and score the test
    MRs. Returns a dict of results (the model and outputs included). `extra_loss(inputs, targets, picked)`,
    if given, returns for each batch a function of the target logits (n, V) whose value is added to the
    task loss (experiments/porting.py: distillation towards older models)."""
    started = time.perf_counter()
    check_pretraining_data(cfg)
    backend.manual_seed(cfg.seed)
    splits = splits or e2e.make_splits(cfg.train_size, cfg.validation_size, cfg.test_size, cfg.data_seed)
    model, tokenizer = build_model(cfg)
    encoder = Encoder(tokenizer, model.transformer.config.max_positions)
    train_pairs, dropped = encode_pairs(encoder, splits["train"])
    validation_pairs, _ = encode_pairs(encoder, splits["validation"])
    consistency_weight = methods.consistency_weight(cfg)
    lr = methods.learning_rate(cfg, TASK)
    if cfg.progress:
        print(say_learning_rate(cfg, lr, TASK))
    optimizer = AdamW(decay_groups(model, cfg.weight_decay), lr=lr, lazy=cfg.expert_updates == "lazy")
    warmup_steps = int(cfg.warmup * cfg.steps)
    stream = batches(train_pairs, cfg.batch_size, backend.host_generator([cfg.seed, 7]))
    history, losses, best, best_weights = [], [], math.inf, None
    terms = {"task_losses": [], "consistency_losses": []}          # the two terms of each step's loss
    start = adamix.expert_weights(model)
    bar = progress(cfg.steps, f"{cfg.method} seed {cfg.seed}", cfg.progress)
    train_started = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        model.train()
        optimizer.lr = lr * linear_warmup_decay(step, warmup_steps, cfg.steps)
        inputs, targets = make_batch(next(stream), encoder.pad_id)
        picked = targets[targets != IGNORE]                               # (n,) the target tokens
        optimizer.zero_grad()            # before the forward: last step's gradients are not kept alive
        # logits at target positions only: the consistency KL is averaged over target tokens
        loss, task, consistency = adamix.two_pass_backward(
            lambda: target_logits(model, inputs, targets),
            methods.task_loss(cfg, model, _with_extra(
                lambda logits: F.cross_entropy(logits, picked, label_smoothing=cfg.label_smoothing),
                extra_loss(inputs, targets, picked) if extra_loss else None)),
            consistency_weight, low_memory=cfg.low_memory)
        value = loss.item()              # read every step: the decoding this loop feeds syncs anyway
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}; try a lower --lr")
        if cfg.max_grad_norm > 0 or cfg.diagnostics:   # 0: no clipping; the norm is a diagnostic too
            gradient_norm = clip_grad_norm(model.trainable_parameters(), cfg.max_grad_norm or math.inf)
        optimizer.step()
        methods.after_step(cfg, model, step - 1)
        losses.append(value)
        terms["task_losses"].append(task.item())
        terms["consistency_losses"].append(consistency.item() if consistency is not None else 0.0)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            entry = {"step": step}
            if cfg.diagnostics:
                entry.update(_step_diagnostics(model, start, inputs, targets, picked, cfg, consistency_weight))
                entry["gradient_norm"] = gradient_norm       # the step's, before clipping
            entry["validation_loss"] = validation = evaluate_loss(model, validation_pairs, encoder.pad_id)
            history.append(entry)
            if validation < best:
                best = validation
                best_weights = {n: p.data.copy() for n, p in model.named_parameters() if p.requires_grad}
            best_step = min(history, key=lambda h: h["validation_loss"])["step"]
            if cfg.patience and (step - best_step) // cfg.eval_every >= cfg.patience:
                print(f"stopped at step {step}: the validation loss has not improved for {cfg.patience} "
                      f"evaluation(s) (the best: step {best_step})")
                break
    bar.close()
    train_seconds = time.perf_counter() - train_started
    model.load_state_dict(best_weights, strict=False)
    result = {"config": {**asdict(cfg), "lr": lr}, "pretrained_weights": pretrained_weights_id(cfg.model), "history": history,
              "best_validation_loss": best, "routing": adamix.routing_report(model, start),
              "trainable_parameters": model.num_parameters(trainable_only=True),
              "merged_parameters": peft.deployed_parameter_count(model), "all_parameters": model.num_parameters(),
              "train_pairs": len(train_pairs), "dropped_pairs": dropped, "train_seconds": train_seconds,
              "best_step": min(history, key=lambda h: h["validation_loss"])["step"] if history else None,
              "steps_trained": step,
              "loss_terms": loss_series({"losses": losses, **terms}, consistency_weight)}
    return _merge_decode_and_score(cfg, model, encoder, splits, result, losses, started)


def _with_extra(task, extra):
    return task if extra is None else (lambda logits: task(logits) + extra(logits))


def _merge_decode_and_score(cfg, model, encoder, splits, result, losses, started):
    """After training: test losses (unmerged), merge and fold, decode validation and test, score them,
    save the run. Returns the results with the model, the encoder and the losses."""
    test_pairs, _ = encode_pairs(encoder, splits["test"], all_references=False)
    if cfg.test:
        if cfg.diagnostics and adamix.mixtures(model):
            result["test_loss_by_inference"] = _inference_losses(model, test_pairs, encoder.pad_id)
        result["test_loss_unmerged"] = evaluate_loss(model, test_pairs, encoder.pad_id)
    peft.merge(model, fold_lora=True)          # mixtures -> one module; LoRA folded into W
    validation_outputs = generate(model, encoder, [ex.mr for ex in splits["validation"]], cfg)
    result["validation_bleu"] = score(splits["validation"], [encoder.text(d.ids) for d in validation_outputs])["bleu"]
    if cfg.test:
        result["test_loss_merged"] = evaluate_loss(model, test_pairs, encoder.pad_id)
        decode_started = time.perf_counter()
        outputs = generate(model, encoder, [ex.mr for ex in splits["test"]], cfg)
        result["decode_seconds"] = time.perf_counter() - decode_started
        result.update(score(splits["test"], [encoder.text(d.ids) for d in outputs]))
        result["unfinished_outputs"] = sum(not d.finished for d in outputs)
        result["generated_tokens"] = sum(len(d.ids) for d in outputs)
        result["samples"] = [{"prompt": ex.prompt, "output": encoder.text(d.ids), "reference": ex.references[0]}
                             for ex, d in zip(splits["test"], outputs)]
    result["seconds"] = time.perf_counter() - started
    if cfg.out:
        checkpoint.save_json(Path(cfg.out) / "results.json", {k: v for k, v in result.items() if k != "loss_terms"})
        checkpoint.save_json(Path(cfg.out) / "losses.json", result["loss_terms"])
        peft.save_adapter(model, Path(cfg.out) / "merged")
    result["model"], result["encoder"], result["losses"] = model, encoder, losses
    return result


def _step_diagnostics(model, start, inputs, targets, picked, cfg, consistency_weight):
    """How far each expert has moved from its start (mean over the mixtures, per expert index), how far
    their mean has, and the gradient norms of the task and the weighted consistency term on this batch."""
    report = adamix.routing_report(model, start).values()
    found = {}
    if report:
        found["expert_moved"] = [sum(col) / len(col) for col in zip(*(m["moved"] for m in report))]
        found["mean_expert_moved"] = sum(m["mean_moved"] for m in report) / len(report)
    model.train()
    task, consistency = adamix.term_gradient_norms(
        lambda: target_logits(model, inputs, targets),
        lambda logits: F.cross_entropy(logits, picked, label_smoothing=cfg.label_smoothing),
        consistency_weight, model.trainable_parameters())
    found.update(task_gradient_norm=task, consistency_gradient_norm=consistency)
    return found


def _inference_losses(model, pairs, pad_id):
    """Test loss of the unmerged AdaMix model: averaged experts (= merged), each expert alone, and
    random routing (a random expert per example)."""
    M = adamix.mixtures(model)[0].num_experts
    losses = {"average": None, "experts": [], "random": None}
    adamix.set_inference_mode(model, "average")
    losses["average"] = evaluate_loss(model, pairs, pad_id)
    for k in range(M):
        adamix.set_inference_mode(model, "fixed", k)
        losses["experts"].append(evaluate_loss(model, pairs, pad_id))
    adamix.set_inference_mode(model, "random")
    losses["random"] = evaluate_loss(model, pairs, pad_id)
    adamix.set_inference_mode(model, "average")
    return losses


def generate(model, encoder, mrs, cfg):
    """Decode one output per MR (beam search, or batched greedy). An MR whose prompt does not fit the
    context window is a ValueError (decode.room)."""
    prompts = [encoder.prompt(e2e.validate_mr(mr)) for mr in mrs]
    if cfg.decoding == "greedy":
        return decode.greedy(model, prompts, encoder.end_id, cfg.max_new_tokens)
    return [decode.beam_search(model, p, encoder.end_id, cfg.beam_width, cfg.max_new_tokens,
                               cfg.length_penalty, cfg.no_repeat_ngram) for p in prompts]


def score(examples, texts):
    """BLEU against all references and against the held-out families' references; slot errors."""
    held_out = [[r for r, f in zip(ex.references, ex.families) if f in e2e.HELD_OUT_FAMILIES] for ex in examples]
    ser = e2e.slot_error_rate([ex.mr for ex in examples], texts)
    return {"bleu": 100 * e2e.corpus_bleu(texts, [ex.references for ex in examples])["bleu"],
            "bleu_held_out": 100 * e2e.corpus_bleu(texts, held_out)["bleu"] if all(held_out) else None,
            "slot_error_rate": 100 * ser["rate"], "slot_counts": dict(ser)}
