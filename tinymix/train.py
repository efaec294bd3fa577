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
import contextlib
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from . import adamix, backend, data, methods, peft, runfolder, selftrain, validate
from .store import checkpoint
from . import functional as F
from .backend import xp
from .optim import AdamW, clip_grad_norm, linear_warmup_decay
from .pretrained import load_pretrained
from .tensor import no_grad
from .transformer import SequenceClassifier

TASK = methods.CLASSIFICATION    # the methods it offers and their default rates: methods.py


@dataclass
class TrainConfig:
    method: str = "adamix"           # one of methods.names("classification")
    task: str = "movie-reviews"      # or amazon, nyt, tweets, all-domains (data.load_domain), or a folder
                                     # with train.tsv / dev.tsv / test.tsv (SST-2 layout)
    model: str = "minilm-l6"
    seed: int = 0
    epochs: int = 2
    train_size: int = 0              # use the first N training sentences (0 = all)
    train_sample: int = -1           # >= 0: instead, N sentences drawn at random with this seed (a few-shot split)
    select_on_validation: bool = True    # False: no validation at all (true few-shot); the last epoch is kept
    checkpoint_every: int = 1        # epochs between checkpoints (the last epoch always gets one)
    patience: int = 0                # stop once validation has not improved for this many epochs (0: never;
                                     # `epochs` stays the maximum, and the schedule is laid out over it)
    self_training: int = 0           # LiST's self-training sessions after training (selftrain.py; 0: none):
                                     # the rest of the training split, its labels hidden, is the unlabelled pool
    self_training_steps: int = 100   # student steps per session
    unlabelled_batch: int = 16       # unlabelled sentences per student step (LiST's)
    batch_size: int = 32
    lr: float = 0.0                  # 0: the method's default rate (methods.py)
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
    expert_init: str = "official"    # identical LoRA A-experts, independent adapter ones (docs/adamix.md §7)
    expert_updates: str = "dense"    # "dense": an expert routed once is stepped at every later step, with
                                     # a zero gradient when not routed (the official code); "lazy": only
                                     # when routed (docs/adamix.md §7b)
    bottleneck: int = 16
    lora_rank: int = 4
    lora_alpha: float = 32.0
    out: str = ""                    # run folder ("" = nothing written)
    test: bool = True                # evaluate the merged model on test at the end; a learning-rate
                                     # search sets False, so that test is read only after the choice
    log_every: int = 10              # read the losses back (and check them) every N steps: on a GPU
                                     # each read waits for the device, so not every step
    resume: bool = False             # continue the run in `out` from its newest complete checkpoint
    progress: bool = True
    overwrite: bool = False          # replace the run in `out` (a fresh run into a folder holding one is refused)

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Check every setting (validate.py); a ValueError names the flag, the value and what is valid.
        The settings both tasks share are checked in methods.check_settings; the upper bound of
        max_length depends on the model and is checked when it loads."""
        check = validate.check_range
        methods.check_settings(self, TASK)
        validate.check_text("task", self.task)
        if self.task not in CLASSIFICATION_TASKS and not Path(self.task).is_dir():
            raise ValueError(f"unknown task {self.task!r}: use {', '.join(CLASSIFICATION_TASKS)} or a folder "
                             "holding train.tsv, dev.tsv and test.tsv")
        check("epochs", self.epochs, 1, integer=True)
        check("train_size", self.train_size, 0, integer=True, why="0 means all")
        check("train_sample", self.train_sample, -1, integer=True, why="-1: the first --train-size sentences")
        check("checkpoint_every", self.checkpoint_every, 1, integer=True)
        check("patience", self.patience, 0, integer=True, why="0: train every epoch")
        check("self_training", self.self_training, 0, integer=True, why="0: no self-training")
        check("self_training_steps", self.self_training_steps, 1, integer=True)
        check("unlabelled_batch", self.unlabelled_batch, 1, integer=True)
        if self.self_training and not self.train_size:
            raise ValueError("--self-training learns from the training sentences left out by --train-size: give "
                             "--train-size (e.g. 30, the few-shot regime)")
        validate.check_bool("select_on_validation", self.select_on_validation)
        if self.patience and not self.select_on_validation:
            raise ValueError("--patience stops on a validation plateau, and --no-select-on-validation reads no "
                             "validation: leave one of them out")
        if self.train_sample >= 0 and not self.train_size:
            raise ValueError("--train-sample draws --train-size sentences at random: give --train-size too")
        for name in ("eval_batch_size", "log_every"):
            check(name, getattr(self, name), 1, integer=True)
        check("max_length", self.max_length, 3, integer=True, why="a [CLS] token, a word and a [SEP] token")
        check("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        for name in ("resume", "overwrite"):
            validate.check_bool(name, getattr(self, name))
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one of them")


CLASSIFICATION_TASKS = ("movie-reviews",) + data.OUT_OF_DOMAIN + ("all-domains",)


def load_splits(task, seed=0):
    with reading(task):
        if task == "movie-reviews":
            return data.load_movie_reviews(seed)
        if task in data.OUT_OF_DOMAIN:                 # a sentiment domain of its own (data.load_domain)
            return data.load_domain(task, seed)
        if task == "all-domains":
            return data.load_all_domains(seed)
        folder = Path(task)
        return {"train": data.load_tsv(folder / "train.tsv"), "validation": data.load_tsv(folder / "dev.tsv"),
                "test": data.load_tsv(folder / "test.tsv")}


@contextlib.contextmanager
def reading(what):
    """Out of memory while reading data is the data's size, not a setting: say so (the CLI's advice for
    a MemoryError, a smaller --batch-size, would not help)."""
    try:
        yield
    except MemoryError:
        raise ValueError(f"out of memory while reading the data ({what}): the data set does not fit in this "
                         "machine's memory; use a smaller file (--batch-size and the other settings do not "
                         "change how much data is read)") from None


def build_model(cfg, num_labels=2, total_steps=0):
    backbone, tokenizer = load_pretrained(cfg.model, max_length=cfg.max_length)
    positions = backbone.config.max_positions
    validate.check_range("max_length", cfg.max_length, 3, positions, integer=True,
                         why=f"{cfg.model} has {positions} positions")
    model = peft.get_peft_model(SequenceClassifier(backbone, num_labels), methods.peft_config(cfg, total_steps))
    fit_to_positions(model, tokenizer)
    return model, tokenizer


def fit_to_positions(model, tokenizer):
    """A prefix takes the model's first positions (neighbours/prefix.py): truncate sentences to the rest."""
    transformer = peft._transformer(model)
    room = transformer.config.max_positions - transformer.position_offset
    if tokenizer.max_length > room:
        print(f"note: the prefix takes {transformer.position_offset} of the model's {transformer.config.max_positions} "
              f"positions, so sentences are truncated to {room} tokens")
        tokenizer.tokenizer.enable_truncation(room)
        tokenizer.max_length = room


def evaluate(model, tokenizer, split, batch_size=128, per_example=False):
    """Accuracy of the model in eval mode. Sentences are batched by length (less padding);
    the result does not depend on the order. per_example: (accuracy, "0110..."), one character per
    sentence in the split's order, 1 where the prediction is right (for intervals that resample the
    test set, stats.paired_bootstrap)."""
    model.eval()
    order = sorted(range(len(split)), key=lambda i: len(split.texts[i]))
    right = [0] * len(split)
    with no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            ids, mask = tokenizer([split.texts[i] for i in chosen])
            predictions = backend.to_numpy(model(ids, mask).data.argmax(axis=-1))
            for p, i in zip(predictions.tolist(), chosen):
                right[i] = int(int(p) == split.labels[i])
    accuracy = sum(right) / len(split)
    return (accuracy, "".join(map(str, right))) if per_example else accuracy


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


def train(cfg, splits=None, before_merge=None):
    """Fine-tune, select on validation, merge, evaluate the merged model on test. Returns a dict.
    `before_merge(model, tokenizer, splits)`, if given, runs on the best unmerged model and returns a
    dict added to the result (compare uses it for random- and fixed-routing inference).
    With cfg.out, the run folder is locked while training (runfolder.py)."""
    cfg.validate()                      # again: a config's fields can be changed after it was made
    run = runfolder.RunFolder(cfg.out).open(cfg) if cfg.out else None
    try:
        return _train(cfg, splits, before_merge, run)
    finally:
        if run is not None:
            run.close()


def _train(cfg, splits, before_merge, run):
    started = time.perf_counter()
    backend.manual_seed(cfg.seed)
    splits = splits or load_splits(cfg.task)
    if len(splits["train"]) == 0:
        raise ValueError("the training split is empty")
    train_split = splits["train"]
    unlabelled = None
    if cfg.train_size:
        chosen = (range(min(cfg.train_size, len(train_split))) if cfg.train_sample < 0
                  else sample_indices(len(train_split), cfg))
        left = sorted(set(range(len(train_split))) - set(chosen))          # self-training's unlabelled pool
        unlabelled = data.Split([train_split.texts[i] for i in left], [train_split.labels[i] for i in left])
        train_split = data.Split([train_split.texts[i] for i in chosen], [train_split.labels[i] for i in chosen])
    num_labels = data.class_count({**splits, "train": train_split})   # classes 0..K-1, K >= 2
    say_classes(train_split)
    model, tokenizer = build_model(cfg, num_labels, math.ceil(len(train_split) / cfg.batch_size) * cfg.epochs)
    start = adamix.expert_weights(model)
    lr = methods.learning_rate(cfg, TASK)
    print(say_learning_rate(cfg, lr, TASK))
    optimizer = AdamW(decay_groups(model, cfg.weight_decay), lr=lr, lazy=cfg.expert_updates == "lazy")
    state = {"epoch": 0, "step": 0, "best_validation": -1.0, "best_epoch": -1, "history": [], "losses": [],
             "task_losses": [], "consistency_losses": []}
    if run is not None:
        found = run.begin(cfg)
        if found is not None:
            state = run.load_checkpoint(found, model, optimizer)
            methods.load_step_state(cfg, model, run.method_state(found))
        run.record(cfg, found)
    best_weights = None
    for epoch in range(state["epoch"], cfg.epochs):
        if plateaued(cfg, state):          # checked first too: a run resumed after its plateau stops at once
            break
        weights = _epoch(cfg, epoch, model, tokenizer, optimizer, lr, train_split, splits, state, run)
        best_weights = weights if weights is not None else best_weights
    if plateaued(cfg, state) and state["epoch"] < cfg.epochs:
        print(f"stopped after epoch {state['epoch']}: validation has not improved for {cfg.patience} epoch(s) "
              f"(the best: epoch {state['best_epoch']})")
    if best_weights is not None:                      # the best epoch was in this session
        model.load_state_dict(best_weights, strict=False)
    elif run is not None and state["best_epoch"] > 0:  # ... or before a resume: its checkpoint is kept
        kept = run.checkpoint_folder(state["best_epoch"])
        peft.load_adapter(model, kept if kept.is_dir() else run.path / "best")   # best/: an earlier layout
    if cfg.self_training:                       # LiST: sessions of teacher / student on the unlabelled pool
        extra_history = selftrain.self_train(cfg, model, tokenizer, train_split, unlabelled.texts, lr,
                                             hidden_labels=unlabelled.labels)
        state["self_training"] = extra_history
    if run is not None:
        peft.save_adapter(model, run.path / "best")
    extra = before_merge(model, tokenizer, splits) if before_merge else {}
    return _merge_and_test(cfg, model, tokenizer, splits, state, start, run, started, extra)


def plateaued(cfg, state):
    """--patience: the last `patience` epochs brought no better validation accuracy."""
    return cfg.patience > 0 and state["best_epoch"] > 0 and state["epoch"] - state["best_epoch"] >= cfg.patience


def sample_indices(available, cfg):
    """The few-shot split `cfg.train_sample`: train_size training sentences drawn without replacement by
    their own generator (the same on every backend, and independent of the run's seed)."""
    if cfg.train_size > available:
        raise ValueError(f"--train-size {cfg.train_size}: the training split has only {available} sentences")
    return sorted(backend.host.random.default_rng([cfg.train_sample, 7919]).choice(
        available, cfg.train_size, replace=False).tolist())


def _epoch(cfg, epoch, model, tokenizer, optimizer, lr, train_split, splits, state, run):
    """One epoch: its steps, then accuracy on validation and a checkpoint. Returns the trainable
    weights if this epoch is the best so far, else None."""
    steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup * total_steps)
    consistency_weight = methods.consistency_weight(cfg)
    explain = lambda *where: nan_message(cfg, lr, run, *where)
    model.train()
    bar = progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress)
    # Each epoch's randomness (order, routes, dropout) is seeded by (seed, epoch): a resumed run
    # repeats exactly what an uninterrupted one does, on NumPy and on CuPy.
    backend.manual_seed([cfg.seed, epoch])
    pending = []                                  # this epoch's losses not yet read back
    for texts, labels in length_grouped_batches(train_split, cfg.batch_size, backend.host_rng):
        optimizer.lr = lr * linear_warmup_decay(state["step"], warmup_steps, total_steps)
        ids, mask = tokenizer(texts)
        targets = backend.to_numpy(labels).astype("int64")
        objective = (lambda: model(ids, mask),
                     methods.task_loss(cfg, model, lambda logits: F.cross_entropy(logits, targets), mask),
                     consistency_weight)
        optimizer.zero_grad()
        loss, task, consistency = adamix.two_pass_backward(*objective, low_memory=cfg.low_memory)
        clip_grad_norm(model.trainable_parameters(), cfg.max_grad_norm, as_float=False)  # no GPU wait
        optimizer.step()
        methods.after_step(cfg, model, state["step"])
        state["step"] += 1
        consistency = consistency.data if consistency is not None else xp.zeros_like(loss.data)
        pending.append(xp.stack([loss.data, task.data, consistency]))   # stays on the device until read
        bar.update(1)
        if len(pending) == cfg.log_every:
            _read_losses(pending, state, epoch, bar, explain)
    _read_losses(pending, state, epoch, bar, explain)
    bar.close()
    # True few-shot (select_on_validation False): no validation is read; every epoch counts as the best
    # so far, so the last one is kept.
    accuracy = evaluate(model, tokenizer, splits["validation"], cfg.eval_batch_size) if cfg.select_on_validation \
        else None
    state["history"].append({"epoch": epoch + 1, "validation_accuracy": accuracy,
                             "mean_loss": sum(state["losses"][-steps_per_epoch:]) / steps_per_epoch})
    spreads = [mixture["spread"] for mixture in adamix.routing_report(model).values()]
    if spreads:          # AdaMix: how far apart its experts are after each epoch (0: all alike; routing_report)
        state["history"][-1]["expert_spread"] = sum(spreads) / len(spreads)
    print(f"epoch {epoch + 1}: " + (f"validation accuracy {accuracy:.4f}" if accuracy is not None
                                     else f"mean loss {state['history'][-1]['mean_loss']:.4f} (no validation)"))
    state["epoch"] = epoch + 1
    best_weights = None
    last = epoch + 1 == cfg.epochs
    if accuracy is None and last:
        state["best_epoch"] = epoch + 1            # best_validation stays -1: nothing was selected
        best_weights = {n: p.data.copy() for n, p in model.named_parameters() if p.requires_grad}
    elif accuracy is not None and accuracy > state["best_validation"]:
        state["best_validation"], state["best_epoch"] = accuracy, epoch + 1
        best_weights = {n: p.data.copy() for n, p in model.named_parameters() if p.requires_grad}
    if run is not None and (last or (epoch + 1) % cfg.checkpoint_every == 0):
        run.save_checkpoint(model, optimizer, state, methods.step_state(cfg, model))
    return best_weights


def _merge_and_test(cfg, model, tokenizer, splits, state, start, run, started, extra):
    """Count, merge, test the deployed model once; save the merged adapter and the results."""
    trainable = model.num_parameters(trainable_only=True)
    merged_count = peft.deployed_parameter_count(model)
    total = model.num_parameters()      # "all": before merging, every expert counted (peft.py's rule)
    routing = adamix.routing_report(model, start)
    # Test once, on the deployed model: every mixture merged into one module. (Its outputs equal the
    # unmerged model's "average" inference exactly; tests/test_adamix.py checks that.)
    peft.merge(model)
    test_accuracy, test_correct = (evaluate(model, tokenizer, splits["test"], cfg.eval_batch_size, per_example=True)
                                   if cfg.test else (None, None))
    result = {
        "config": {**asdict(cfg), "lr": methods.learning_rate(cfg, TASK)},       # the rate used, not 0
        "history": state["history"], "losses": state["losses"],
        "best_epoch": state["best_epoch"], "epochs_trained": state["epoch"],
        **({"self_training": state["self_training"]} if "self_training" in state else {}),
        "validation_accuracy": state["best_validation"] if cfg.select_on_validation else None,
        "test_accuracy": test_accuracy, "merged_test_accuracy": test_accuracy, "routing": routing,
        "test_correct": test_correct,      # per test sentence, in order: 1 right, 0 wrong (merged model)
        "trainable_parameters": trainable, "merged_parameters": merged_count,
        "all_parameters": total, "seconds": time.perf_counter() - started, **extra,
        "loss_terms": loss_series(state, methods.consistency_weight(cfg)),
    }
    if run is not None:
        result["config_history"] = run.history
        peft.save_adapter(model, run.path / "merged")
        checkpoint.save_json(run.path / "results.json",
                             {k: v for k, v in result.items() if k not in ("losses", "loss_terms")})
        checkpoint.save_json(run.path / "losses.json", result["loss_terms"])
    result["model"], result["tokenizer"] = model, tokenizer
    return result


def _read_losses(pending, state, epoch, bar, explain):
    """Bring the pending step losses to the host in one transfer (on a GPU: one wait per call, not per
    step), stop on the first that is not finite (explain(value, step, epoch) says why), and log them."""
    if not pending:
        return
    rows = backend.to_numpy(xp.stack(pending)).tolist()      # per step: loss, task loss, consistency
    first_step = state["step"] - len(pending)
    for i, (value, _, _) in enumerate(rows):
        if not math.isfinite(value):
            raise FloatingPointError(explain(value, first_step + i, epoch + 1))
    for key, column in zip(("losses", "task_losses", "consistency_losses"), zip(*rows)):
        state.setdefault(key, []).extend(column)     # setdefault: a checkpoint from before these were kept
    pending.clear()
    bar.set_postfix(loss=f"{rows[-1][0]:.4f}")


def nan_message(cfg, lr, run, value, step, epoch):
    """Why a loss turned NaN, and what to do: the settings far above their defaults, and how to go on
    from the last complete checkpoint (only if there is one) with a lower learning rate."""
    suspects = ["lr", "max_grad_norm", "weight_decay"]
    suspects += ["lora_alpha"] if "lora" in cfg.method else []
    suspects += ["consistency_weight"] if methods.METHODS[cfg.method].two_passes else []
    defaults = {f.name: f.default for f in fields(TrainConfig)} | {"lr": methods.METHODS[cfg.method].lr[TASK]}
    found = validate.extreme_settings(replace(cfg, lr=lr), defaults, suspects)
    text = f"loss became {value} at step {step} (epoch {epoch}); stopping. "
    text += (f"Likely cause: {', '.join(found)}. " if found else
             "No setting is far above its default; a lower learning rate is the usual remedy. ")
    others = [s for s in found if not s.startswith("--lr ")]
    complete = run.complete(quick=True) if run is not None else []
    lower = min(lr / 10, defaults["lr"])
    if complete:
        text += (f"The last complete checkpoint is {complete[-1]}; to continue from it with a lower learning "
                 f"rate: python3 -m tinymix train --out {cfg.out} --resume --lr {lower:g}")
        if others:
            text += " (the other settings cannot change on --resume: start again with --overwrite to change them)"
    elif run is not None:
        text += (f"No checkpoint was saved (the first is written after epoch 1): start again with --overwrite "
                 f"and {' and '.join(others) + ' nearer its default' if others else f'a lower --lr (e.g. {lower:g})'}.")
    else:
        text += f"Nothing was saved (no --out): run again with {'those nearer their defaults' if others else 'a lower --lr'}."
    return text


def decay_groups(model, weight_decay):
    """Weight decay on weight matrices; none on biases and LayerNorm parameters (the usual recipe)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = lambda n: n.endswith(".bias") or "norm" in n
    return [{"params": [(n, p) for n, p in named if not no_decay(n)], "weight_decay": weight_decay},
            {"params": [(n, p) for n, p in named if no_decay(n)], "weight_decay": 0.0}]


def progress(total, description, enabled):
    """The progress of both training loops (this one and e2e/finetune.py): tqdm's bar on a terminal,
    plain lines (ProgressLines) otherwise."""
    import sys
    from tqdm import tqdm
    if enabled and not sys.stdout.isatty():
        return ProgressLines(total, description)
    return tqdm(total=total, desc=description, disable=not enabled, leave=False, dynamic_ncols=True)


def loss_series(state, consistency_weight):
    """losses.json: per step, the training loss and its two terms (loss = task + weight * consistency;
    consistency is 0 for a one-pass method), for re-plotting them apart."""
    return {"loss": state["losses"], "task": state.get("task_losses", []),
            "consistency": state.get("consistency_losses", []), "consistency_weight": consistency_weight}


def say_learning_rate(cfg, lr, task):
    """The line that says which learning rate a run uses, and where it came from."""
    origin = "--lr" if cfg.lr else f"{cfg.method}'s default for {task}; --lr changes it"
    return f"learning rate {lr:g} ({origin})"


def say_classes(split):
    """Print the training split's class counts, and a warning for each rare class."""
    line, warnings = data.class_summary(split)
    print(f"{len(split):,} training examples; {line}")
    for warning in warnings:
        print(f"warning: {warning}")


PROGRESS_SECONDS = 10    # off a terminal: one plain progress line at most this often


class ProgressLines:
    """What `progress` gives when output is not a terminal (a log file, CI, a notebook): a plain line
    every PROGRESS_SECONDS, with steps done, the last loss and the time left. tqdm's interface."""

    def __init__(self, total, description):
        self.total, self.description, self.done, self.postfix = total, description, 0, {}
        self.started = self.last = time.perf_counter()

    def update(self, n=1):
        self.done += n
        now = time.perf_counter()
        if now - self.last >= PROGRESS_SECONDS and self.done < self.total:
            self.last = now
            left = (now - self.started) / self.done * (self.total - self.done)
            extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
            print(f"{self.description}: step {self.done}/{self.total}{extra}, {now - self.started:.0f} s so far, "
                  f"about {left:.0f} s left", flush=True)

    def set_postfix(self, **values):
        self.postfix = values

    def close(self):
        pass
