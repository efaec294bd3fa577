"""Every fine-tuning method, in one table: what it builds, its default learning rate for each task,
and whether it trains with AdaMix's two passes. Both training loops (train.py: classification on
MiniLM; e2e/finetune.py: data-to-text on the tiny GPT), the command line and the experiments take
their methods from here, so a new method is one entry below (and, if it needs a new kind of module,
its config in peft.py, or a module of tinymix/neighbours/ registered in peft.NEIGHBOURS). An entry may add a
term to the loss (extra_loss) and work after each optimizer step (after_step); both loops call them
through task_loss and after_step below.

    method = METHODS["adamix-lora"]
    model = peft.get_peft_model(model, method.build(settings_of(cfg)))
    lr = cfg.lr or method.lr["e2e"]

A method's settings (bottleneck, LoRA rank, number of experts, ...) are the fields of `Settings`; a
task's config holds those it offers, and the rest keep the defaults below. `check_settings` checks
the fields every task shares, once, for both configs.
"""
from dataclasses import dataclass, fields

from . import adamix, peft, validate
from .neighbours import adalora, ft_top, hadamard, loretta, phm, prefix, unipelt

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
    total_steps: int = 0        # the run's optimizer steps (AdaLoRA's budget schedule), from the loop


def settings_of(config, total_steps=0):
    """The Settings of a task's config (TrainConfig, NLGConfig): its fields, defaults for the rest."""
    found = {f.name: getattr(config, f.name) for f in fields(Settings) if hasattr(config, f.name)}
    return Settings(**found, total_steps=total_steps)


def _adapter(placement):
    return lambda s: peft.AdapterConfig(s.bottleneck, placement)


def _lora(s):
    return peft.LoRAConfig(s.lora_rank, s.lora_alpha, s.lora_dropout)


def _adamix(module):
    return lambda s: peft.AdaMixConfig(module=module, num_experts=s.num_experts, sharing=s.sharing,
                                       inference=s.inference, consistency_weight=s.consistency_weight,
                                       expert_init=s.expert_init, adapter=_adapter("ffn")(s), lora=_lora(s))


def _adalora(s):
    """AdaLoRA ending at LoRA's budget (target_r = --lora-rank, init_r 1.5 times it: PEFT's 12 -> 8), its
    schedule scaled to the run as adalora.py suggests for 320 steps (tinit 30, tfinal 120, deltaT 10)."""
    T = s.total_steps
    return adalora.AdaLoRAConfig(init_r=s.lora_rank * 3 // 2, target_r=s.lora_rank, alpha=s.lora_alpha,
                                 dropout=s.lora_dropout, total_step=T or None, tinit=T * 3 // 32,
                                 tfinal=T * 3 // 8, deltaT=max(1, T // 32))


def _adalora_after_step(model, step):
    """AdaLoRA's scores and allocation, after each optimizer step (its allocator lives on the model)."""
    if getattr(model, "rank_allocator", None) is None:
        model.rank_allocator = adalora.RankAllocator(model, model.peft_config)
    model.rank_allocator.update_and_allocate(model, step)


def _adalora_state(model):
    allocator = getattr(model, "rank_allocator", None)
    return allocator.state_arrays(model) if allocator is not None else {}


def _adalora_load_state(model, arrays):
    model.rank_allocator = adalora.RankAllocator(model, model.peft_config)
    model.rank_allocator.load_state_arrays(model, arrays)


@dataclass(frozen=True)
class Method:
    name: str
    label: str                  # for tables and printed results
    build: object               # Settings -> the peft config that get_peft_model injects
    lr: dict                    # {task: its default learning rate}; a task not named does not offer it
    two_passes: bool = False    # AdaMix: two passes per step and the consistency loss between them
    extra_loss: object = None   # (model, attention mask) -> a term added to the task loss, after the forward
    after_step: object = None   # (model, step from 0) -> None, after each optimizer step, gradients still there
    state: object = None        # (model) -> {name: array}: what after_step carries between steps, for a checkpoint
    load_state: object = None   # (model, {name: array}) -> None: its inverse, on --resume


# Default rates. Classification: 3e-3 won a small sweep on validation (AdaMix, 1,280 sentences: 1e-3
# 71.8%, 3e-3 80.2%, 1e-2 79.6%); full fine-tuning updates 22.6M weights and takes the usual BERT-sized
# rate. e2e: the rate `compare --task e2e` chose on validation BLEU (docs/results_e2e.md), from one grid
# for every method, at 1,200 steps without clipping.
METHODS = {m.name: m for m in (
    Method("adamix", "AdaMix-adapter", _adamix("adapter"), {CLASSIFICATION: 3e-3, E2E: 3e-3}, two_passes=True),
    Method("adamix-lora", "AdaMix-LoRA", _adamix("lora"), {CLASSIFICATION: 3e-3, E2E: 1e-3}, two_passes=True),
    Method("adapter", "adapter", _adapter("ffn"), {CLASSIFICATION: 3e-3, E2E: 1e-2}),
    Method("houlsby", "Houlsby adapters", _adapter("houlsby"), {CLASSIFICATION: 3e-3}),
    # LiST's adapters (its paper and microsoft/LiST): after the attention output and the FFN output, a
    # linear bottleneck of 128, both projections from N(0, 0.02^2); the few-shot regime's self-training arm
    Method("list-adapter", "LiST adapter", lambda s: peft.AdapterConfig(bottleneck=128, placement="houlsby",
                                                                      linear=True, init_std=0.02),
           {CLASSIFICATION: 3e-3}),
    Method("pfeiffer", "Pfeiffer adapter", _adapter("pfeiffer"), {CLASSIFICATION: 3e-3}),
    Method("lora", "LoRA", _lora, {CLASSIFICATION: 3e-3, E2E: 1e-2}),
    Method("bitfit", "BitFit", lambda s: peft.BitFitConfig(), {CLASSIFICATION: 3e-3}),
    Method("full", "full fine-tuning", lambda s: peft.FullFineTuneConfig(), {CLASSIFICATION: 1e-4, E2E: 1e-3}),
    # The neighbours (tinymix/neighbours/), each at its paper's and official code's defaults. Rates: the
    # official ones where known (AdaLoRA's GLUE script for SST-2: 8e-4; MixPHM's script: 5e-3), else the
    # family's default (adapter-like 3e-3; LoRA-like 3e-3, e2e 1e-2; partial fine-tuning as full's).
    Method("adalora", "AdaLoRA", _adalora, {CLASSIFICATION: 8e-4, E2E: 1e-2},
           extra_loss=lambda model, mask: adalora.orthogonal_regularizer(model, model.peft_config.orth_reg_weight),
           after_step=_adalora_after_step, state=_adalora_state, load_state=_adalora_load_state),
    Method("phm", "PHM adapter", lambda s: phm.PHMAdapterConfig(), {CLASSIFICATION: 5e-3}),
    Method("mixphm", "MixPHM", lambda s: phm.MixPHMConfig(num_experts=s.num_experts), {CLASSIFICATION: 5e-3},
           extra_loss=phm.redundancy_regularizer),      # one pass: MixPHM has no consistency loss
    Method("hadamard", "Hadamard adapter", lambda s: hadamard.HadamardConfig(), {CLASSIFICATION: 3e-3, E2E: 3e-3}),
    # AdaMix over Hadamard experts (neighbours/hadamard.py §3): random routing, the consistency loss, and
    # an average that is exact (the module is affine), unlike the adapter's
    Method("adamix-hadamard", "AdaMix-Hadamard", lambda s: hadamard.HadamardConfig(num_experts=s.num_experts),
           {CLASSIFICATION: 3e-3, E2E: 3e-3}, two_passes=True),
    Method("loretta-rep", "LoRETTA-rep", lambda s: loretta.LorettaRepConfig(), {CLASSIFICATION: 3e-3, E2E: 1e-2}),
    Method("loretta-adp", "LoRETTA-adp", lambda s: loretta.LorettaAdpConfig(), {CLASSIFICATION: 3e-3}),
    Method("prefix", "prefix-tuning", lambda s: prefix.PrefixTuningConfig(), {CLASSIFICATION: 3e-3, E2E: 3e-3}),
    Method("ft-top2", "FT-Top2", lambda s: ft_top.FTTopConfig(), {CLASSIFICATION: 1e-4, E2E: 1e-3}),
    Method("unipelt", "UniPELT (APL)", lambda s: unipelt.UniPELTConfig("APL"), {CLASSIFICATION: 3e-3}),
    Method("unipelt-ap", "UniPELT (AP)", lambda s: unipelt.UniPELTConfig("AP"), {CLASSIFICATION: 3e-3}),
)}
ALIASES = {"adamix-adapter": "adamix"}


def names(task):
    """The methods a task offers, in the table's order."""
    return tuple(name for name, method in METHODS.items() if task in method.lr)


def peft_config(config, total_steps=0):
    """The peft config of a task's config (its method and settings) for a run of total_steps steps."""
    return METHODS[config.method].build(settings_of(config, total_steps))


def task_loss(config, model, loss, mask=None):
    """The loss function a loop trains with: `loss`, plus the method's own term where it has one."""
    extra = METHODS[config.method].extra_loss
    return loss if extra is None else lambda logits: loss(logits) + extra(model, mask)


def after_step(config, model, step):
    """The method's work after each optimizer step (step counts from 0), where it has any."""
    hook = METHODS[config.method].after_step
    if hook is not None:
        hook(model, step)


def step_state(config, model):
    """The method's own state between steps (AdaLoRA's scores and allocation) as named arrays; {} if none."""
    save = METHODS[config.method].state
    return save(model) if save is not None else {}


def load_step_state(config, model, arrays):
    """Give a resumed model its method's state back; `arrays` is None when the checkpoint holds none."""
    load = METHODS[config.method].load_state
    if load is None:
        return
    if arrays is None:
        raise ValueError(f"--resume: this checkpoint holds no {config.method} state between steps (it was written "
                         "before checkpoints kept it): start again with --overwrite")
    load(model, arrays)


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
