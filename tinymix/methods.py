"""Every fine-tuning method, in one table: what it builds, its default learning rate for each task,
and whether it trains with AdaMix's two passes. Both training loops (train.py: classification on
MiniLM; e2e/finetune.py: data-to-text on the tiny GPT), the command line and the experiments take
their methods from here, so a new method is one entry below (and, if it needs a new kind of module,
its config in peft.py).

    method = METHODS["adamix-lora"]
    model = peft.get_peft_model(model, method.build(settings_of(cfg)))
    lr = cfg.lr or method.lr["e2e"]

A method's settings (bottleneck, LoRA rank, number of experts, ...) are the fields of `Settings`; a
task's config holds those it offers, and the rest keep the defaults below. `check_settings` checks
the fields every task shares, once, for both configs.
"""
from dataclasses import dataclass, fields

from . import adamix, peft, validate

CLASSIFICATION, E2E = "classification", "e2e"
EXPERT_UPDATES = ("dense", "lazy")
MAX_EXPERTS = 64                # each expert gets about 1/M of the updates: far more than this learn nothing


@dataclass
class Settings:
    """What a method may be built from, with the defaults a task that does not offer a setting gets."""
    bottleneck: int = 16
    lora_rank: int = 4
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1
    num_experts: int = 4
    sharing: str = "up"
    inference: str = "average"
    consistency_weight: float = 1.0
    expert_init: str = "official"


def settings_of(config):
    """The Settings of a task's config (TrainConfig, NLGConfig): its fields, defaults for the rest."""
    return Settings(**{f.name: getattr(config, f.name) for f in fields(Settings) if hasattr(config, f.name)})


def _adapter(placement):
    return lambda s: peft.AdapterConfig(s.bottleneck, placement)


def _lora(s):
    return peft.LoRAConfig(s.lora_rank, s.lora_alpha, s.lora_dropout)


def _adamix(module):
    return lambda s: peft.AdaMixConfig(module=module, num_experts=s.num_experts, sharing=s.sharing,
                                       inference=s.inference, consistency_weight=s.consistency_weight,
                                       expert_init=s.expert_init, adapter=_adapter("ffn")(s), lora=_lora(s))


@dataclass(frozen=True)
class Method:
    name: str
    label: str                  # for tables and printed results
    build: object               # Settings -> the peft config that get_peft_model injects
    lr: dict                    # {task: its default learning rate}; a task not named does not offer it
    two_passes: bool = False    # AdaMix: two passes per step and the consistency loss between them


# Default rates. Classification: 3e-3 won a small sweep on validation (AdaMix, 1,280 sentences: 1e-3
# 71.8%, 3e-3 80.2%, 1e-2 79.6%); full fine-tuning updates 22.6M weights and takes the usual BERT-sized
# rate. e2e: the rate `compare --task e2e` chose on validation BLEU (docs/results_e2e.md), from one grid
# for every method, at 1,200 steps without clipping.
METHODS = {m.name: m for m in (
    Method("adamix", "AdaMix-adapter", _adamix("adapter"), {CLASSIFICATION: 3e-3, E2E: 3e-3}, two_passes=True),
    Method("adamix-lora", "AdaMix-LoRA", _adamix("lora"), {CLASSIFICATION: 3e-3, E2E: 1e-3}, two_passes=True),
    Method("adapter", "adapter", _adapter("ffn"), {CLASSIFICATION: 3e-3, E2E: 1e-2}),
    Method("houlsby", "Houlsby adapters", _adapter("houlsby"), {CLASSIFICATION: 3e-3}),
    Method("pfeiffer", "Pfeiffer adapter", _adapter("pfeiffer"), {CLASSIFICATION: 3e-3}),
    Method("lora", "LoRA", _lora, {CLASSIFICATION: 3e-3, E2E: 1e-2}),
    Method("bitfit", "BitFit", lambda s: peft.BitFitConfig(), {CLASSIFICATION: 3e-3}),
    Method("full", "full fine-tuning", lambda s: peft.FullFineTuneConfig(), {CLASSIFICATION: 1e-4, E2E: 1e-3}),
)}
ALIASES = {"adamix-adapter": "adamix"}


def names(task):
    """The methods a task offers, in the table's order."""
    return tuple(name for name, method in METHODS.items() if task in method.lr)


def peft_config(config):
    """The peft config of a task's config (its method and settings)."""
    return METHODS[config.method].build(settings_of(config))


def learning_rate(config, task):
    """config.lr, or the method's default rate for the task when it is 0."""
    return config.lr or METHODS[config.method].lr[task]


def consistency_weight(config):
    """The weight of the consistency loss: the config's for a two-pass method, 0 for the others."""
    return config.consistency_weight if METHODS[config.method].two_passes else 0.0


def check_settings(config, task):
    """Check the settings every task shares (validate.py: each error names the flag, the value and what
    is valid). Each task's config checks its own fields after these."""
    check = validate.check_range
    validate.check_choice("method", config.method, names(task))
    validate.check_text("model", config.model)
    check("seed", config.seed, 0, integer=True)
    for name in ("batch_size", "bottleneck", "lora_rank"):
        check(name, getattr(config, name), 1, integer=True)
    check("lr", config.lr, 0.0, why="0: the method's default rate")
    check("weight_decay", config.weight_decay, 0.0)
    check("warmup", config.warmup, 0.0, 1.0, why="the share of the steps spent warming up")
    check("num_experts", config.num_experts, 1, MAX_EXPERTS, integer=True)
    validate.check_choice("sharing", config.sharing, peft.SHARING)
    if hasattr(config, "inference"):
        validate.check_choice("inference", config.inference, adamix.INFERENCE_MODES)
        if config.inference != "average" and not METHODS[config.method].two_passes:
            raise ValueError(f"--inference {config.inference}: --method {config.method} has no mixture of experts to "
                             "route between (only adamix and adamix-lora have one): leave --inference out")
    check("consistency_weight", config.consistency_weight, 0.0)
    validate.check_choice("expert_init", config.expert_init, adamix.EXPERT_INITS)
    validate.check_choice("expert_updates", config.expert_updates, EXPERT_UPDATES)
    check("lora_alpha", config.lora_alpha, 0.0, low_open=True)
    if hasattr(config, "lora_dropout"):
        check("lora_dropout", config.lora_dropout, 0.0, 1.0, high_open=True)
    validate.check_text("out", config.out)
    for name in ("low_memory", "test", "progress"):
        validate.check_bool(name, getattr(config, name))
