"""`train --task e2e` and `compare --task e2e`: the data-to-text task's own flags."""
import argparse

from ..e2e import finetune
from ..e2e.finetune import NLGConfig
from ..experiments import e2e as e2e_experiment
from ..experiments import protocol
from .flags import add_config_flags, config_from_args


def parse_args(argv):
    """`train --task e2e ...` or `compare --task e2e ...`: the data-to-text task's own flags."""
    parser = argparse.ArgumentParser(prog="python -m tinymix", description=finetune.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    p = commands.add_parser("train", help="fine-tune the tiny GPT on the e2e task, decode and score")
    p.add_argument("--task", choices=["e2e"], required=True)
    add_config_flags(p, NLGConfig)
    p.set_defaults(run=train_command)
    p = commands.add_parser("compare", help="the e2e comparison under the fair protocol")
    p.add_argument("--task", choices=["e2e"], required=True)
    protocol.add_flags(p, e2e_experiment.GRID, default_out="runs/compare-e2e")
    add_config_flags(p, NLGConfig, skip=("method", "seed", "out", "progress", "lr", "test", "diagnostics"))
    p.set_defaults(run=compare_command)
    return parser.parse_args(argv)


def compare_command(args):
    e2e_experiment.compare_command(args, config_from_args(args, NLGConfig(progress=False)))


def train_command(args):
    result = finetune.train(config_from_args(args, NLGConfig()))
    test = ("test not read (--no-test)" if "bleu" not in result else
            f"BLEU {result['bleu']:.1f} (held-out families {result['bleu_held_out']:.1f}), slot errors "
            f"{result['slot_error_rate']:.1f}%")
    print(f"{finetune.LABELS[result['config']['method']]}: {test}; validation BLEU {result['validation_bleu']:.1f}, "
          f"best validation loss {result['best_validation_loss']:.3f}; trainable params "
          f"{result['trainable_parameters']:,d}, merged {result['merged_parameters']:,d}; {result['seconds']:.0f} s")
    for sample in result.get("samples", [])[:3]:
        print(f"  {sample['prompt']}\n    -> {sample['output']}")


def is_e2e(argv):
    """True for `train ... --task e2e` and `compare ... --task e2e` (also --task=e2e)."""
    if not argv or argv[0] not in ("train", "compare"):
        return False
    return any(a == "--task=e2e" or (a == "--task" and nxt == "e2e") for a, nxt in zip(argv, argv[1:] + [""]))
