"""ONE training loop for sentence classification, used by the CLI, the lessons and `compare`.

    result = train(TrainConfig(method="adamix", epochs=2))

Per step: tokenize a batch (padded to its longest sentence) -> AdaMix's two passes and consistency
loss and its backward (adamix.two_pass_backward; one pass for the other methods; with --low-memory,
recomputing pass 2) -> clip the global gradient
norm -> AdamW step -> learning-rate schedule (linear warm-up, linear decay). After each epoch: accuracy
on validation; the best epoch's trainable weights are kept (chosen on validation only), and a resumable
checkpoint (weights, optimizer, progress) is written atomically. At the end the best weights are
merged (AdaMix -> one module per site) and that deployed model is evaluated on test.
"""
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import adamix, backend, checkpoint, data, peft
from . import functional as F
from .backend import xp
from .optim import AdamW, clip_grad_norm, linear_warmup_decay
from .pretrained import load_pretrained
from .tensor import no_grad
from .transformer import SequenceClassifier

METHODS = ("adamix", "adamix-lora", "adapter", "houlsby", "pfeiffer", "lora", "bitfit", "full")
# Each method's learning rate when --lr is not given: 3e-3 won a small sweep on validation (AdaMix,
# 1,280 sentences: 1e-3 71.8%, 3e-3 80.2%, 1e-2 79.6%); full fine-tuning updates 22.6M weights and
# takes the usual BERT-sized rate.
DEFAULT_LR = {**{method: 3e-3 for method in METHODS}, "full": 1e-4}
EXPERT_UPDATES = ("dense", "lazy")


@dataclass
class TrainConfig:
    method: str = "adamix"           # one of METHODS
    task: str = "movie-reviews"      # or a folder with train.tsv / dev.tsv / test.tsv (SST-2 layout)
    model: str = "minilm-l6"
    seed: int = 0
    epochs: int = 2
    train_size: int = 0              # use the first N training sentences (0 = all)
    batch_size: int = 32
    lr: float = 0.0                  # 0: the method's rate in DEFAULT_LR
    weight_decay: float = 0.1
    warmup: float = 0.06             # fraction of the steps
    max_grad_norm: float = 1.0
    max_length: int = 64
    eval_batch_size: int = 128
    # AdaMix and the modules it mixes
    num_experts: int = 4
    sharing: str = "up"
    inference: str = "average"
    consistency_weight: float = 1.0
    low_memory: bool = False         # AdaMix: recompute pass 2 in backward (same gradients, one more
                                     # forward, one pass's activations alive instead of two)
    expert_init: str = "official"    # identical LoRA A-experts, independent adapter experts (adamix.md §7)
    expert_updates: str = "dense"    # "dense": an expert routed once is stepped at every later step, with
                                     # a zero gradient when not routed (the official code); "lazy": only
                                     # when routed (adamix.md §7b)
    bottleneck: int = 16
    lora_rank: int = 4
    lora_alpha: float = 32.0
    out: str = ""                    # run folder ("" = nothing written)
    test: bool = True                # evaluate the merged model on test at the end; a learning-rate
                                     # search sets False, so that test is read only after the choice
    log_every: int = 10              # read the losses back (and check them) every N steps: on a GPU
                                     # each read waits for the device, so not every step
    resume: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.task != "movie-reviews" and not Path(self.task).is_dir():
            raise ValueError(f"unknown task {self.task!r}: use 'movie-reviews' or a folder holding "
                             "train.tsv, dev.tsv and test.tsv")
        if self.expert_updates not in EXPERT_UPDATES:
            raise ValueError(f"expert_updates must be one of {EXPERT_UPDATES}, got {self.expert_updates!r}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be at least 1 step, got {self.log_every}")


def peft_config(cfg):
    """The PEFT config object for a TrainConfig's method."""
    adapter = peft.AdapterConfig(cfg.bottleneck, "ffn")
    lora = peft.LoRAConfig(cfg.lora_rank, cfg.lora_alpha)
    mix = dict(num_experts=cfg.num_experts, sharing=cfg.sharing, inference=cfg.inference,
               consistency_weight=cfg.consistency_weight, expert_init=cfg.expert_init,
               adapter=adapter, lora=lora)
    return {
        "adamix": lambda: peft.AdaMixConfig(module="adapter", **mix),
        "adamix-lora": lambda: peft.AdaMixConfig(module="lora", **mix),
        "adapter": lambda: adapter,
        "houlsby": lambda: peft.AdapterConfig(cfg.bottleneck, "houlsby"),
        "pfeiffer": lambda: peft.AdapterConfig(cfg.bottleneck, "pfeiffer"),
        "lora": lambda: lora,
        "bitfit": peft.BitFitConfig,
        "full": peft.FullFineTuneConfig,
    }[cfg.method]()


def load_splits(task, seed=0):
    if task == "movie-reviews":
        return data.load_movie_reviews(seed)
    folder = Path(task)
    return {"train": data.load_tsv(folder / "train.tsv"), "validation": data.load_tsv(folder / "dev.tsv"),
            "test": data.load_tsv(folder / "test.tsv")}


def build_model(cfg, num_labels=2):
    backbone, tokenizer = load_pretrained(cfg.model, max_length=cfg.max_length)
    model = peft.get_peft_model(SequenceClassifier(backbone, num_labels), peft_config(cfg))
    return model, tokenizer


def evaluate(model, tokenizer, split, batch_size=128):
    """Accuracy of the model in eval mode. Sentences are batched by length (less padding);
    the result does not depend on the order."""
    model.eval()
    order = sorted(range(len(split)), key=lambda i: len(split.texts[i]))
    correct = 0
    with no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            ids, mask = tokenizer([split.texts[i] for i in chosen])
            predictions = backend.to_numpy(model(ids, mask).data.argmax(axis=-1))
            correct += sum(int(p) == split.labels[i] for p, i in zip(predictions.tolist(), chosen))
    return correct / len(split)


def length_grouped_batches(split, batch_size, rng, group=50):
    """Shuffled batches of sentences of similar length: shuffle, sort each stretch of `group`
    batches' worth of sentences by length, cut it into batches, then shuffle the batches. A batch is
    padded to its longest sentence, so this roughly halves the tokens a step computes on."""
    order = rng.permutation(len(split)).tolist()
    stretch = batch_size * group
    batches = []
    for start in range(0, len(order), stretch):
        part = sorted(order[start:start + stretch], key=lambda i: len(split.texts[i]))
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    for b in rng.permutation(len(batches)).tolist():
        yield [split.texts[i] for i in batches[b]], [split.labels[i] for i in batches[b]]


def _check_labels(split, num_labels, name):
    bad = sorted({y for y in split.labels if not 0 <= y < num_labels})
    if bad:
        raise ValueError(f"{name} split has labels {bad[:5]} outside 0..{num_labels - 1}")


def train(cfg, splits=None, before_merge=None):
    """Fine-tune, select on validation, merge, evaluate the merged model on test. Returns a dict.
    `before_merge(model, tokenizer, splits)`, if given, runs on the best unmerged model and returns a
    dict added to the result (compare uses it for random- and fixed-routing inference)."""
    started = time.perf_counter()
    backend.manual_seed(cfg.seed)
    splits = splits or load_splits(cfg.task)
    if len(splits["train"]) == 0:
        raise ValueError("the training split is empty")
    train_split = splits["train"]
    if cfg.train_size:
        train_split = data.Split(train_split.texts[:cfg.train_size], train_split.labels[:cfg.train_size])
    num_labels = max(max(s.labels) for s in splits.values()) + 1
    for name, split in splits.items():
        _check_labels(split, num_labels, name)
    model, tokenizer = build_model(cfg, num_labels)
    start = adamix.expert_weights(model)
    consistency_weight = cfg.consistency_weight if cfg.method.startswith("adamix") else 0.0
    lr = cfg.lr or DEFAULT_LR[cfg.method]
    optimizer = AdamW(decay_groups(model, cfg.weight_decay), lr=lr, lazy=cfg.expert_updates == "lazy")
    steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup * total_steps)
    run = Path(cfg.out) if cfg.out else None
    state = {"epoch": 0, "step": 0, "best_validation": -1.0, "best_epoch": -1, "history": [], "losses": []}
    if run is not None:
        if cfg.resume and (run / "last" / "state.json").is_file():
            state = _resume(run, cfg, model, optimizer)
        checkpoint.save_json(run / "config.json", asdict(cfg))
    best_weights = None
    labels_of = lambda ys: backend.to_numpy(ys).astype("int64")

    for epoch in range(state["epoch"], cfg.epochs):
        model.train()
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress)
        # Each epoch's randomness (order, routes, dropout) is seeded by (seed, epoch): a resumed run
        # repeats exactly what an uninterrupted one does, on NumPy and on CuPy.
        backend.manual_seed([cfg.seed, epoch])
        pending = []                                  # this epoch's losses not yet read back
        for texts, labels in length_grouped_batches(train_split, cfg.batch_size, backend.host_rng):
            optimizer.lr = lr * linear_warmup_decay(state["step"], warmup_steps, total_steps)
            ids, mask = tokenizer(texts)
            targets = labels_of(labels)
            objective = (lambda: model(ids, mask), lambda logits: F.cross_entropy(logits, targets),
                         consistency_weight)
            optimizer.zero_grad()
            loss, _, _ = adamix.two_pass_backward(*objective, low_memory=cfg.low_memory)
            clip_grad_norm(model.trainable_parameters(), cfg.max_grad_norm, as_float=False)  # no GPU wait
            optimizer.step()
            state["step"] += 1
            pending.append(loss.data)                 # stays on the device until the next read
            bar.update(1)
            if len(pending) == cfg.log_every:
                _read_losses(pending, state, epoch, run, bar)
        _read_losses(pending, state, epoch, run, bar)
        bar.close()
        accuracy = evaluate(model, tokenizer, splits["validation"], cfg.eval_batch_size)
        state["history"].append({"epoch": epoch + 1, "validation_accuracy": accuracy,
                                 "mean_loss": sum(state["losses"][-steps_per_epoch:]) / steps_per_epoch})
        print(f"epoch {epoch + 1}: validation accuracy {accuracy:.4f}")
        state["epoch"] = epoch + 1
        best = accuracy > state["best_validation"]
        if best:
            state["best_validation"], state["best_epoch"] = accuracy, epoch + 1
            best_weights = {n: p.data.copy() for n, p in model.named_parameters() if p.requires_grad}
        if run is not None:
            if best:
                peft.save_adapter(model, run / "best")
            _save_last(run, model, optimizer, state)

    if best_weights is not None:                      # the best epoch was in this session
        model.load_state_dict(best_weights, strict=False)
    elif run is not None and (run / "best").is_dir():  # ... or before a resume
        peft.load_adapter(model, run / "best")
    extra = before_merge(model, tokenizer, splits) if before_merge else {}
    trainable = model.num_parameters(trainable_only=True)
    merged_count = peft.merged_parameter_count(model)
    routing = adamix.routing_report(model, start)
    # Test once, on the deployed model: every mixture merged into one module. (Its outputs equal the
    # unmerged model's "average" inference exactly; tests/test_adamix.py checks that.)
    peft.merge(model)
    test_accuracy = evaluate(model, tokenizer, splits["test"], cfg.eval_batch_size) if cfg.test else None
    result = {
        "config": asdict(cfg), "history": state["history"], "losses": state["losses"],
        "best_epoch": state["best_epoch"], "validation_accuracy": state["best_validation"],
        "test_accuracy": test_accuracy, "merged_test_accuracy": test_accuracy, "routing": routing,
        "trainable_parameters": trainable, "merged_parameters": merged_count,
        "all_parameters": model.num_parameters(), "seconds": time.perf_counter() - started, **extra,
    }
    if run is not None:
        peft.save_adapter(model, run / "merged")
        checkpoint.save_json(run / "results.json", {k: v for k, v in result.items() if k != "losses"})
    result["model"], result["tokenizer"] = model, tokenizer
    return result


def _read_losses(pending, state, epoch, run, bar):
    """Bring the pending step losses to the host in one transfer (on a GPU: one wait per call, not per
    step), stop on the first that is not finite, and log them."""
    if not pending:
        return
    values = backend.to_numpy(xp.stack(pending)).tolist()
    first_step = state["step"] - len(pending)
    for i, value in enumerate(values):
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss became {value} at step {first_step + i} (epoch {epoch + 1}); stopping."
                + (f" The last good checkpoint in {run / 'last'} is intact." if run else "")
                + " Try a lower --lr.")
    state["losses"] += values
    pending.clear()
    bar.set_postfix(loss=f"{values[-1]:.4f}")


def decay_groups(model, weight_decay):
    """Weight decay on weight matrices; none on biases and LayerNorm parameters (the usual recipe)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = lambda n: n.endswith(".bias") or "norm" in n
    return [{"params": [(n, p) for n, p in named if not no_decay(n)], "weight_decay": weight_decay},
            {"params": [(n, p) for n, p in named if no_decay(n)], "weight_decay": 0.0}]


# ---- resumable checkpoints --------------------------------------------------------------------------

def _save_last(run, model, optimizer, state):
    """Write run/last/ as a whole: into a new folder first, then swap it in, so a crash at any moment
    leaves a complete checkpoint behind (the old one or the new one)."""
    new, last, old = run / "last.new", run / "last", run / "last.old"
    peft.save_adapter(model, new)
    saved = optimizer.state_dict()
    checkpoint.save_arrays(new / "optimizer.safetensors", saved.pop("arrays"))
    checkpoint.save_json(new / "state.json", {**state, "optimizer": saved})
    if last.exists():
        last.rename(old)
    new.rename(last)
    if old.exists():
        _remove_tree(old)


def _remove_tree(folder):
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()


# settings a resumed run may change; any other difference means another experiment
_RESUMABLE = {"epochs", "resume", "progress", "out", "eval_batch_size", "low_memory", "log_every"}


def _resume(run, cfg, model, optimizer):
    saved_cfg = checkpoint.load_json(run / "config.json")
    differing = {k: (v, getattr(cfg, k, None)) for k, v in saved_cfg.items()
                 if k not in _RESUMABLE and getattr(cfg, k, None) != v}
    if differing:
        raise ValueError(f"the checkpoint in {run} comes from another configuration; differing settings "
                         f"(saved, now): {differing}. Use another --out folder, or the same settings.")
    state = checkpoint.load_json(run / "last" / "state.json")
    peft.load_adapter(model, run / "last")
    saved = state.pop("optimizer")
    saved["arrays"] = checkpoint.load_arrays(run / "last" / "optimizer.safetensors")
    optimizer.load_state_dict(saved)
    print(f"resuming from {run / 'last'} after epoch {state['epoch']} (step {state['step']})")
    return state


def _progress(total, description, enabled):
    import sys
    from tqdm import tqdm
    return tqdm(total=total, desc=description, disable=not (enabled and sys.stdout.isatty()),
                leave=False, dynamic_ncols=True)
