"""Every command of `python3 -m tinymix` and its flags: the package's only argument parser (the
grader's is `python3 -m tinymix.grade`). What the commands do is in commands.py."""
import argparse
import textwrap

from . import commands
from .flags import add_config_flags

from .helptext import field_help

TASK_HELP = field_help()["task"] + " (default: movie-reviews)"


class WholeNames(argparse.HelpFormatter):
    """Help wrapped between words only: a name such as adamix-lora is never split at its hyphen."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser(description=""):
    from ..e2e.finetune import NLGConfig
    from ..methods import CLASSIFICATION, names
    from ..train import TrainConfig
    parser = argparse.ArgumentParser(prog="python3 -m tinymix", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands_ = parser.add_subparsers(dest="command", metavar="command")
    add_command = lambda name, **settings: commands_.add_parser(name, formatter_class=WholeNames, **settings)

    p = add_command("main", help="the main job (also what runs with no command): AdaMix-adapter, the single "
                             "adapter it mixes and a linear probe on the same data, budget and seed")
    add_config_flags(p, TrainConfig, defaults=commands.MAIN_JOB)
    p.set_defaults(run=commands.main_job)

    p = add_command("train", help=f"fine-tune MiniLM on sentiment (methods: {', '.join(names(CLASSIFICATION))}), "
                             "or with --task e2e the tiny GPT on data-to-text")
    p.add_argument("--task", default=None, help=TASK_HELP)
    add_config_flags(p, {"movie-reviews": TrainConfig, "e2e": NLGConfig}, skip=("task",))
    p.set_defaults(run=commands.train_command)

    p = add_command("eval", help="evaluate a saved adapter folder")
    p.add_argument("adapter", help="an adapter folder: a run's merged/ (the deployed model, e.g. runs/main/merged) "
                   "or best/ (the unmerged model: for AdaMix it still holds every expert)")
    p.add_argument("--split", default="test", help="train, validation or test of the movie reviews; amazon, nyt or "
                   "tweets (out-of-domain sentiment); or the path of a TSV file with a header and then "
                   "`sentence<TAB>label` lines (default: %(default)s)")
    p.add_argument("--inference", default="average", help="AdaMix only, and only on a best/ folder (merged/ has no "
                   "experts left): average = the experts averaged, as merged; random = a random expert per layer "
                   "and call; fixed = the expert --expert (default: %(default)s)")
    p.add_argument("--expert", type=int, default=0, help="the expert for --inference fixed, 0..M-1 (default: %(default)s)")
    p.add_argument("--model", default=None, help="the backbone the adapter was trained on: minilm-l6 or "
                   "random-tiny (default: the run's own, read from config.json in the folder above the adapter's; "
                   "minilm-l6 where there is none)")
    p.add_argument("--max-length", type=int, default=64, help="tokens per sentence, [CLS] and [SEP] included "
                   "(default: %(default)s)")
    p.set_defaults(run=commands.eval_command)

    p = add_command("export", help="write a LoRA or AdaMix-LoRA adapter as a Hugging Face PEFT LoRA "
                             "folder (an AdaMix mixture is merged first), an AdaLoRA as a PEFT AdaLoRA folder; "
                             "with --format adapterhub an adapter or AdaMix-adapter as an AdapterHub adapter folder, "
                             "with --format transformers full fine-tuning or BitFit as a whole BertModel folder, "
                             "and the tiny GPT (data/tiny_gpt, or an e2e run's merged/) as a GPT2LMHeadModel folder")
    p.add_argument("adapter", help="an adapter folder of a run: its merged/ or best/ (e.g. runs/lora/merged); "
                   "--format peft: a LoRA, AdaMix-LoRA or AdaLoRA run, --format adapterhub: an adapter (any "
                   "placement) or AdaMix-adapter run, --format transformers: a full or bitfit run, a tiny GPT "
                   "checkpoint folder (data/tiny_gpt), the merged/ of a --task e2e run, or minilm-l6 (MiniLM itself: the "
                   "base model the PEFT and AdapterHub folders load onto, as a local folder)")
    p.add_argument("--format", choices=["peft", "adapterhub", "transformers"], default="peft", help="peft: Hugging "
                   "Face PEFT's folder; adapterhub: AdapterHub's bottleneck-adapter folder, weights in safetensors "
                   "(load it with use_safetensors=True); transformers: a BertModel folder for "
                   "AutoModel.from_pretrained, for the tiny GPT a GPT2LMHeadModel folder for "
                   "AutoModelForCausalLM.from_pretrained (default: peft)")
    p.add_argument("--out", required=True, help="the folder to write")
    p.set_defaults(run=commands.export_command)

    p = add_command("import-peft", help="turn a Hugging Face PEFT LoRA for all-MiniLM-L6-v2 into a "
                             "tinymix adapter folder")
    p.add_argument("peft_folder", help="the folder holding adapter_config.json and adapter_model.safetensors")
    p.add_argument("--out", required=True, help="the tinymix adapter folder to write")
    p.set_defaults(run=commands.import_peft_command)

    p = add_command("import-adapterhub", help="turn an AdapterHub bottleneck adapter for "
                             "all-MiniLM-L6-v2 into a tinymix adapter folder")
    p.add_argument("hub_folder", help="the folder holding adapter_config.json and adapter.safetensors")
    p.add_argument("--out", required=True, help="the tinymix adapter folder to write")
    p.set_defaults(run=commands.import_adapterhub_command)

    p = add_command("merge", help="merge an AdaMix run's experts by task arithmetic, TIES or PCB instead of "
                             "their mean, the scale chosen on the run's validation split")
    p.add_argument("adapter", help="a run's best/ folder: AdaMix's experts before merging (e.g. runs/main/best)")
    p.add_argument("--operator", default=None, help="mean (AdaMix's own merge), task-arithmetic, ties or pcb")
    p.add_argument("--out", required=True, help="the folder to write: the merged adapter (as a run's merged/, for "
                   "eval) and merge.json (the operator, the scale chosen, the validation accuracy at each scale)")
    p.add_argument("--scale-grid", default=None, help="the scales lambda tried, comma-separated (default: "
                   "0.4,0.6,...,2.0; task-arithmetic: those divided by the number of experts M, so that its 1/M is "
                   "the mean; mean: none)")
    p.add_argument("--keep", type=float, default=None, help="ties and pcb: the share of each expert's entries kept, "
                   "in (0, 1] (default: ties 0.2, pcb 0.1)")
    p.set_defaults(run=commands.merge_command)

    p = add_command("compare", help="methods, ablations and the paper's claims under a fair protocol "
                             "(tuned learning rates, paired seeds, confidence intervals); with --task e2e the "
                             "data-to-text comparison")
    _compare_flags(p, NLGConfig)
    p.set_defaults(run=commands.compare_command)

    p = add_command("fetch", help="download the pinned assets into the cache and verify them")
    p.add_argument("names", nargs="*", help="minilm, movie-reviews, shakespeare (default: all)")
    p.set_defaults(run=commands.fetch_command)

    p = add_command("pretrain-gpt", help="pretrain the tiny GPT on Shakespeare and restaurant texts")
    _pretrain_flags(p)
    p.set_defaults(run=commands.pretrain_command)

    p = add_command("bench", help="speed benchmarks: ratios against the machine's matmul and PyTorch")
    _bench_flags(p)
    p.set_defaults(run=commands.bench_command)

    p = add_command("demo", help="fit a tiny MLP with the autograd engine")
    p.add_argument("--steps", type=int, default=500, help="gradient-descent steps (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.1, help="the step size (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the initial weights and data (default: %(default)s)")
    p.set_defaults(run=commands.demo)
    return parser


def _compare_flags(parser, nlg_config):
    from ..experiments import e2e, nlu
    parser.add_argument("--task", default="movie-reviews", help=TASK_HELP)
    both = parser.add_argument_group("both tasks")
    both.add_argument("--train-size", type=int, default=None,
                      help="training examples (default: the --regime's; --task e2e: 2000)")
    both.add_argument("--model", default=None, help="the pretrained backbone (default: minilm-l6, random-tiny "
                      "for a smoke run; --task e2e: tiny-gpt)")
    both.add_argument("--seeds", type=int, default=5, help="final seeds per arm (default: %(default)s)")
    both.add_argument("--tuning", choices=("grid", "mads"), default="grid",
                      help="grid: each arm's rate from the shared grid; mads: each arm's recipe (rate, AdaMix's "
                      "consistency weight, clipping) by mesh adaptive direct search, --tuning-budget evaluations "
                      "each (default: %(default)s)")
    both.add_argument("--tuning-budget", type=int, default=4,
                      help="--tuning mads: evaluations per arm, each at every tuning seed (default: %(default)s, "
                      "the grid's size)")
    both.add_argument("--tuning-seeds", type=int, default=1,
                      help="seeds per learning rate in the search (default: %(default)s)")
    both.add_argument("--lr-grid", default=None, help="the learning rates every arm is tried at (default: "
                      f"{_rates(nlu.GRID)}; --task e2e: {_rates(e2e.GRID)})")
    both.add_argument("--suite", choices=("adamix", "neighbours", "merging", "domains", "mos", "porting", "surgery"),
                      default="adamix",
                      help="adamix: AdaMix, its modules, ablations and the paper's claims; neighbours: the "
                      "neighbour methods against AdaMix and the modules they build on, with their papers' "
                      "claims (give it the AdaMix comparison's --out to reuse its runs); merging: AdaMix's "
                      "experts merged by task arithmetic, TIES and PCB against their mean (movie reviews; "
                      "give --lr-from the AdaMix comparison's folder); domains: a LoRA per sentiment domain "
                      "(movies, Amazon, NYT, tweets) merged by each operator, against the experts and one LoRA "
                      "on all four; mos: MOS's per-task adapters on a class-incremental stream of the four "
                      "domains, against forgetting baselines; porting (--task e2e): LoRA patches "
                      "carried from the tiny GPT to its evolved version data/tiny_gpt_v2 without training "
                      "(PortLLM), and the negative flips of re-training (MUSCLE); surgery (--task e2e): "
                      "Model Surgery on the tiny GPT, a probe's direction added to 95 FFN rows")
    both.add_argument("--arms", default="", help="comma-separated arms, named as their folders "
                      "(e.g. adamix,adamix-no-sharing; default: every arm)")
    both.add_argument("--workers", type=int, default=2, help="parallel runs, one BLAS thread each (default: %(default)s)")
    both.add_argument("--lr-from", default="", help="take every arm's learning rate from another comparison's "
                      "folder instead of searching (its results.json); the report says so")
    both.add_argument("--report-only", action="store_true",
                      help="train nothing: report on the finished runs and list the missing ones")
    both.add_argument("--out", default=None, help="the comparison's folder: one run folder per arm and seed, "
                      "results.json and results.md (default: runs/compare; --task e2e: runs/compare-e2e)")
    reviews = parser.add_argument_group("classification only (--task movie-reviews or a folder)")
    reviews.add_argument("--regime", choices=sorted(nlu.REGIMES), default=None,
                         help="small: 1,000 training sentences, 10 epochs; full: all 7,568, 3 epochs; fewshot: 30 "
                         "sentences, a random split per seed, 100 epochs of batch 4, no validation read (needs "
                         "--lr-from) (default: small)")
    reviews.add_argument("--epochs", type=int, default=None, help="override the regime's epochs")
    reviews.add_argument("--random-runs", type=int, default=None,
                         help="random-routing inference runs per AdaMix model (default: 3)")
    add_config_flags(parser.add_argument_group("--task e2e only"), nlg_config, skip=commands.E2E_COMPARE_SKIP)
    parser.set_defaults(config_fields=[])           # the e2e config's flags: commands.compare_command checks them


def _rates(grid):
    return ",".join(f"{lr:g}" for lr in grid)


def _pretrain_flags(parser):
    from ..e2e import gpt_folder, pretrain
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps (default 1500)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per step (default 8)")
    parser.add_argument("--lr", type=float, default=6e-3, help="peak learning rate (default 6e-3)")
    parser.add_argument("--seed", type=int, default=0, help="weights, batches and the E2E texts (default 0)")
    parser.add_argument("--e2e-texts", type=int, default=pretrain.E2E_TEXTS,
                        help=f"E2E-style restaurant texts in the corpus; 0 for Shakespeare only "
                             f"(default {pretrain.E2E_TEXTS})")
    parser.add_argument("--e2e-descriptions", type=int, default=pretrain.E2E_DESCRIPTIONS,
                        help=f"descriptions of one restaurant in each text, 1 to 5 (default {pretrain.E2E_DESCRIPTIONS})")
    parser.add_argument("--e2e-share", type=float, default=pretrain.E2E_SHARE,
                        help=f"share of each batch's windows taken from them (default {pretrain.E2E_SHARE})")
    parser.add_argument("--e2e-data-seed", type=int, default=0,
                        help="the E2E split whose training combinations they use: the data seed the NLG "
                             "task will use (default 0, nlg's default)")
    parser.add_argument("--out", default=None,
                        help=f"folder for model.safetensors, config.json, tokenizer.json (default "
                             f"{gpt_folder.DEFAULT_OUT}, with --fast {gpt_folder.DEFAULT_FAST_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace the checkpoint in --out")
    parser.add_argument("--continue-from", default=None, metavar="FOLDER",
                        help="continue pretraining this checkpoint (its tokenizer and shape kept) instead of "
                             "starting fresh: an evolved base, e.g. --continue-from data/tiny_gpt")
    parser.add_argument("--fast", action="store_true",
                        help="a smoke run: 20 steps of batch 4 on a 32-token context, on three plays and "
                             "250 E2E texts")


def _bench_flags(parser):
    parser.add_argument("--random-init", action="store_true", default=None,
                        help="random weights of MiniLM's shape (default when the weights are not cached)")
    parser.add_argument("--quick", action="store_true", help="a toy model and two tiny batches (for tests)")
    parser.add_argument("--batches", type=int, default=4, help="batches of 32 sentences per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (inference: 2 more)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--json", metavar="FILE", help="also write every measurement to FILE as JSON")
