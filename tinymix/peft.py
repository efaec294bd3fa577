"""Parameter-efficient fine-tuning: adapters, LoRA, BitFit, full fine-tuning, and AdaMix mixtures of
the first two — injected into a frozen Transformer with an API in the spirit of HF PEFT and loralib:

    model = get_peft_model(SequenceClassifier(minilm, 2), AdaMixConfig(module="adapter"))
    print_trainable_parameters(model)   # trainable params: N || all params: M || trainable%: P
    ... train ...
    merge(model)                        # AdaMix -> one adapter per layer
    save_adapter(model, "runs/x")       # only the trained weights: safetensors + adapter_config.json
"""
import contextlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import adamix, backend
from .store import checkpoint
from . import functional as F
from .nn import Dropout, Linear, Module, Parameter, kaiming_uniform
from .backend import xp
from .transformer import Transformer

PLACEMENTS = ("ffn", "houlsby", "pfeiffer")
SHARING = ("up", "down", "none", "both")
LORA_TARGETS = ("query", "key", "value", "attention_output", "intermediate", "output")


# ---- the single modules ----------------------------------------------------------------------------

class Adapter(Module):
    """Bottleneck adapter  h + up(gelu(down(h))),  down: d -> r, up: r -> d, both with bias.
    `down` and `up` are Linear layers or AdaMix Mixtures of them. linear=True: h + up(down(h)), no
    nonlinearity (LiST's adapter)."""

    def __init__(self, down, up, linear=False):
        self.down, self.up, self.linear = down, up, linear

    def forward(self, h):
        inner = self.down(h)
        return h + self.up(inner if self.linear else F.gelu(inner))


class LoRALinear(Module):
    """A frozen Linear plus a low-rank update:  W x + b + (alpha / r) * B A dropout(x).
    A: (r, in) Kaiming-uniform, B: (out, r) zeros, so the update starts at 0. `lora_A` and `lora_B`
    are Linear layers or AdaMix Mixtures of them. merge() folds the update into W (zero added
    latency); unmerge() takes it out again."""

    def __init__(self, base, lora_A, lora_B, alpha, rank, dropout):
        self.base, self.lora_A, self.lora_B = base, lora_A, lora_B
        self.scaling = alpha / rank
        self.dropout = Dropout(dropout)
        self.merged = False
        self.merged_update = None

    def forward(self, x):
        out = self.base(x)
        if self.merged:
            if self.training:
                raise RuntimeError(f"this {type(self).__name__} is merged into its weight; call unmerge() "
                                   "before training")
            return out
        return out + self.update(x)

    def update(self, x):
        """The low-rank update's output (the part merge() folds into W); a variant overrides this alone."""
        return self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    def delta_weight(self):
        """(alpha / r) B A, with mixtures at their current inference behaviour (averaged by default)."""
        A = _effective_weight(self.lora_A)          # (r, in)
        B = _effective_weight(self.lora_B)          # (out, r)
        return (B @ A) * self.scaling               # (out, in)

    def merge(self):
        if not self.merged:  # idempotent
            self.merged_update = self.delta_weight()
            self.base.weight.data = self.base.weight.data + self.merged_update
            self.merged = True

    def unmerge(self):
        if self.merged:
            self.base.weight.data = self.base.weight.data - self.merged_update
            self.merged, self.merged_update = False, None


def _effective_weight(layer):
    """The weight a layer applies at inference: a Mixture's average, or its fixed expert's."""
    if not isinstance(layer, adamix.Mixture):
        return layer.weight.data
    if layer.inference == "fixed":
        return layer.experts[layer.fixed_expert].weight.data
    if layer.inference == "random":
        raise ValueError("cannot fold a LoRA mixture in 'random' inference mode (a different expert per "
                         "example); set_inference_mode(model, 'average') or 'fixed' first")
    return layer.averaged_weights()[0].data


# ---- configs ---------------------------------------------------------------------------------------

@dataclass
class AdapterConfig:
    bottleneck: int = 16
    placement: str = "ffn"          # "ffn" (AdaMix's code), "houlsby", "pfeiffer"
    linear: bool = False            # True: no GELU between the projections (LiST's adapter)
    init_std: float = 0.0           # > 0: both projections' weights drawn from N(0, init_std^2), biases 0
                                    # (LiST's init); 0: the usual init (lesson 08: a near-identity start)
    method = "adapter"


@dataclass
class LoRAConfig:
    rank: int = 4
    alpha: float = 32.0
    dropout: float = 0.1
    target_modules: tuple = ("query", "value")
    method = "lora"


@dataclass
class AdaMixConfig:
    module: str = "adapter"         # mix "adapter"s or "lora"s
    num_experts: int = 4
    sharing: str = "up"             # which projection all experts share: up (adapter up / LoRA B)
    inference: str = "average"      # "average" (AdaMix proper), "random", "fixed"
    fixed_expert: int = 0
    expert_init: str = "official"   # as the official code: identical copies of the LoRA A-experts,
                                    # independent adapter experts; or "identical" / "independent" for all
    consistency_weight: float = 1.0
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    method = "adamix"


@dataclass
class BitFitConfig:
    method = "bitfit"


@dataclass
class FullFineTuneConfig:
    method = "full"


CONFIGS = {c.method: c for c in (AdapterConfig, LoRAConfig, AdaMixConfig, BitFitConfig, FullFineTuneConfig)}
# The neighbours' configs, which tinymix/neighbours/ registers when it is imported (methods.py imports it):
# {config.method: (config class, the module that injects and counts it, its deploy function or None)}
NEIGHBOURS = {}


def config_to_dict(config):
    """Plain JSON data (tuples become lists), so a config compares equal to itself read back."""
    return json.loads(json.dumps({"method": config.method, **asdict(config)}))


def _neighbour(config):
    """The module of tinymix/neighbours/ that injects `config`, or None for the configs above."""
    found = NEIGHBOURS.get(getattr(config, "method", None))
    return found[1] if found is not None and isinstance(config, found[0]) else None


def config_from_dict(data):
    data = dict(data)
    method = data.pop("method", None)
    neighbours = {name: config for name, (config, _, _) in NEIGHBOURS.items()}
    if method in neighbours:             # their tuples (target modules) come back from JSON as lists
        return neighbours[method](**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    if method not in CONFIGS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join([*CONFIGS, *neighbours])}")
    if method == "adamix":
        data["adapter"] = AdapterConfig(**data.get("adapter", {}))
        lora = dict(data.get("lora", {}))
        lora["target_modules"] = tuple(lora.get("target_modules", ("query", "value")))
        data["lora"] = LoRAConfig(**lora)
    if method == "lora":
        data["target_modules"] = tuple(data.get("target_modules", ("query", "value")))
    return CONFIGS[method](**data)


# ---- injection -------------------------------------------------------------------------------------

def _transformer(model):
    if isinstance(model, Transformer):
        return model
    if isinstance(getattr(model, "transformer", None), Transformer):
        return model.transformer
    raise TypeError(f"{type(model).__name__} holds no tinymix Transformer to adapt")


def _module(config):
    """(kind, settings) of the module a config injects at each site: ("adapter", AdapterConfig) or
    ("lora", LoRAConfig) — for AdaMix, the kind it mixes — or (None, None) for BitFit and full."""
    if config.method == "adamix":
        return config.module, getattr(config, config.module, None)
    if config.method in ("adapter", "lora"):
        return config.method, config
    return None, None


def _check(config, transformer):
    """Validate a config against the model before anything is changed."""
    hidden = transformer.config.hidden_size
    if config.method == "adamix":
        if config.num_experts < 1:
            raise ValueError(f"num_experts must be at least 1, got {config.num_experts}")
        if config.sharing not in SHARING:
            raise ValueError(f"unknown sharing {config.sharing!r}: choose one of {SHARING}")
        if config.inference not in adamix.INFERENCE_MODES:
            raise ValueError(f"unknown inference mode {config.inference!r}: choose one of {adamix.INFERENCE_MODES}")
        if not 0 <= config.fixed_expert < config.num_experts:
            raise ValueError(f"fixed_expert {config.fixed_expert} is not one of the {config.num_experts} experts")
        if config.module not in ("adapter", "lora"):
            raise ValueError(f"AdaMix mixes 'adapter' or 'lora' modules, got {config.module!r}")
        if config.expert_init not in adamix.EXPERT_INITS:
            raise ValueError(f"unknown expert_init {config.expert_init!r}: choose one of {adamix.EXPERT_INITS}")
    kind, settings = _module(config)
    if kind == "adapter":
        adapter = settings
        if not 1 <= adapter.bottleneck <= hidden:
            raise ValueError(f"bottleneck must be between 1 and the hidden size {hidden}, got {adapter.bottleneck}")
        if adapter.placement not in PLACEMENTS:
            raise ValueError(f"unknown adapter placement {adapter.placement!r}: choose one of {PLACEMENTS}")
    if kind == "lora":
        lora = settings
        unknown = [t for t in lora.target_modules if t not in LORA_TARGETS]
        if unknown or not lora.target_modules:
            raise ValueError(f"unknown LoRA target modules {unknown or '(none given)'}; available: {LORA_TARGETS}")
        sites = _lora_sites(transformer.layers[0])
        for target in lora.target_modules:
            layer = getattr(*sites[target])
            smaller = min(layer.in_features, layer.out_features)
            if not 1 <= lora.rank <= smaller:
                raise ValueError(f"LoRA rank must be between 1 and min(d_in, d_out) = {smaller}, got "
                                 f"{lora.rank} (target '{target}')")


@contextlib.contextmanager
def _init_stream(key):
    """Draw a module's initial weights from a generator of its own, keyed by (draw, layer, site, side,
    expert), then go back to the running generator. So at one seed every method starts from the same
    numbers wherever they share a module: the single adapter IS AdaMix's expert 0 plus its shared
    up-projection, the single LoRA's A is every AdaMix-LoRA A-expert's start (paired seeds, compare)."""
    running = backend.host_rng.bit_generator.state
    backend.host_rng.bit_generator.state = backend.host_generator(list(key)).bit_generator.state
    try:
        yield
    finally:
        backend.host_rng.bit_generator.state = running


def _projection(config, make_linear, shared, key, route=None):
    """A plain Linear if this side is shared by all experts (or there is no mixture), else a Mixture.
    Expert k starts from the init stream key + (k,); a plain Linear from key + (0,), as expert 0."""
    expert = itertools.count()

    def make():
        with _init_stream(key + (next(expert),)):
            return make_linear()

    if config.method != "adamix" or shared:
        return make()
    init = config.expert_init
    if init == "official":                      # §7: the LoRA code deep-copies, the adapter code does not
        init = "identical" if config.module == "lora" else "independent"
    return adamix.make_mixture(make, config.num_experts, init, route)


def _make_adapter(config, hidden, key):
    settings = _module(config)[1]
    r, std = settings.bottleneck, getattr(settings, "init_std", 0.0)
    sharing = getattr(config, "sharing", "both")
    linear = (lambda a, b: _normal_linear(a, b, std)) if std > 0 else Linear
    down = _projection(config, lambda: linear(hidden, r), sharing in ("down", "both"), key + (0,))
    up = _projection(config, lambda: linear(r, hidden), sharing in ("up", "both"), key + (1,))
    return Adapter(down, up, getattr(settings, "linear", False))


def _normal_linear(n_in, n_out, std):
    """A Linear whose weight is drawn from N(0, std^2) and whose bias is 0."""
    layer = Linear(n_in, n_out)
    layer.weight.data = backend.host_normal(layer.weight.shape, std)
    layer.bias.data = xp.zeros_like(layer.bias.data)
    return layer


def _lora_sites(block):
    """LoRA target name -> (the module that holds the Linear, its attribute name)."""
    return {"query": (block.attention, "query"), "key": (block.attention, "key"),
            "value": (block.attention, "value"), "attention_output": (block.attention, "output"),
            "intermediate": (block, "intermediate"), "output": (block, "output")}


def _inject_lora(config, block, key):
    """Wrap each target Linear of a block in a LoRALinear. With AdaMix, all targets of a layer use
    one expert index per side: the first target in forward order draws it, the others follow."""
    lora = _module(config)[1]
    sharing = getattr(config, "sharing", "both")
    routes = [None, None]                                    # the A-side and B-side routes of this layer
    for target in sorted(lora.target_modules, key=LORA_TARGETS.index):   # forward order
        holder, name = _lora_sites(block)[target]
        base = getattr(holder, name)
        make_A = lambda: _lora_linear(kaiming_uniform((lora.rank, base.in_features), base.in_features))
        make_B = lambda: _lora_linear(xp.zeros((base.out_features, lora.rank), dtype=xp.float32))
        sides = []
        for i, (make, shared) in enumerate(((make_A, sharing in ("down", "both")),
                                            (make_B, sharing in ("up", "both")))):
            site = (len(PLACEMENTS) + LORA_TARGETS.index(target), i)
            layer = _projection(config, make, shared, key + site, routes[i])
            if isinstance(layer, adamix.Mixture) and routes[i] is None:
                routes[i] = layer.route
            sides.append(layer)
        setattr(holder, name, LoRALinear(base, sides[0], sides[1], lora.alpha, lora.rank, lora.dropout))


def _lora_linear(weight):
    out_features, in_features = weight.shape
    layer = Linear(in_features, out_features, bias=False)
    layer.weight = Parameter(weight)
    return layer


def require_fresh(model):
    """A model gets one method's modules: injecting into a model that has some is an error."""
    if getattr(model, "peft_config", None) is not None:
        raise RuntimeError(f"this model already has {model.peft_config.method} modules injected; "
                           "build a fresh model to inject again")


def get_peft_model(model, config):
    """Inject the modules of `config` into the model's Transformer, in place, and freeze everything
    except them and the task head. Returns the model."""
    require_fresh(model)
    neighbour = _neighbour(config)
    if neighbour is not None:          # tinymix/neighbours/: each module injects its own config
        return neighbour.inject(model, config)
    transformer = _transformer(model)
    hidden = transformer.config.hidden_size
    if config.method not in CONFIGS:
        raise ValueError(f"unknown method {config.method!r}")
    _check(config, transformer)
    model.requires_grad_(False)
    kind, settings = _module(config)
    draw = int(backend.host_rng.integers(2**31))     # one draw for every method: paired initial weights
    for layer, block in enumerate(transformer.layers):
        if kind == "adapter":
            placement = settings.placement
            site = lambda name: (draw, layer, PLACEMENTS.index(name))
            if placement in ("ffn", "houlsby"):
                block.ffn_adapter = _make_adapter(config, hidden, site("ffn"))
            if placement == "houlsby":
                block.attention_adapter = _make_adapter(config, hidden, site("houlsby"))
            if placement == "pfeiffer":
                block.output_adapter = _make_adapter(config, hidden, site("pfeiffer"))
        elif kind == "lora":
            _inject_lora(config, block, (draw, layer))
    if config.method == "full":
        model.requires_grad_(True)
    elif config.method == "bitfit":
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.requires_grad = True
    if hasattr(model, "classifier"):
        model.classifier.requires_grad_(True)
    if config.method == "adamix":
        adamix.set_inference_mode(model, config.inference, config.fixed_expert)
    model.peft_config = config
    model.peft_merged = False
    return model


# ---- counting ---------------------------------------------------------------------------------------
# One rule everywhere: "all parameters" = model.num_parameters() of the model as trained (the frozen base
# and every trainable parameter, every expert of every mixture included), not of the merged model.

def merged_parameter_count(model):
    """Trainable parameters of the deployed model: each Mixture counts as one expert."""
    extra = sum((m.num_experts - 1) * m.experts[0].num_parameters() for m in adamix.mixtures(model))
    return model.num_parameters(trainable_only=True) - extra


def deployed_parameter_count(model):
    """Trainable parameters of the deployed model: merged_parameter_count, or a neighbour's own count
    (AdaLoRA's kept triplets, a prefix without its MLP)."""
    neighbour = _neighbour(getattr(model, "peft_config", None))
    return neighbour.count(model)[1] if neighbour is not None else merged_parameter_count(model)


def print_trainable_parameters(model):
    trainable, total = model.num_parameters(trainable_only=True), model.num_parameters()
    print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")
    print(f"inference-time (merged) trainable params: {deployed_parameter_count(model):,d}")
    return trainable, total


# ---- merging, saving, loading -------------------------------------------------------------------------

def merge(model, fold_lora=False):
    """Collapse every AdaMix mixture into one module (the experts' mean), in place; with fold_lora,
    also fold each LoRA update into its frozen weight. A neighbour's model is first deployed
    (its deploy in NEIGHBOURS: the prefix MLP dropped, MixPHM's experts averaged)."""
    if _neighbour(getattr(model, "peft_config", None)) is not None:
        deploy = NEIGHBOURS[model.peft_config.method][2]
        if deploy is not None:
            deploy(model)
    adamix.merge_experts(model)
    if fold_lora:
        for _, module in model.named_modules():
            if isinstance(module, LoRALinear):
                module.merge()
    model.peft_merged = True
    return model


def save_adapter(model, folder):
    """Write only the trainable weights (adapter_model.safetensors) and adapter_config.json."""
    config = getattr(model, "peft_config", None)
    if config is None:
        raise ValueError("the model has no PEFT modules: call get_peft_model(model, config) first")
    folder = Path(folder)
    arrays = {name: p.data for name, p in model.named_parameters() if p.requires_grad}
    checkpoint.save_arrays(folder / "adapter_model.safetensors", arrays)
    checkpoint.save_json(folder / "adapter_config.json", {
        "config": config_to_dict(config), "merged": model.peft_merged,
        "transformer": vars(_transformer(model).config),
        "shapes": {name: list(a.shape) for name, a in arrays.items()}})


def load_adapter(model, folder):
    """Load weights saved by save_adapter (a Hugging Face PEFT LoRA folder: export/peft_import.py). A
    model without PEFT modules gets them injected first (from the saved config); a model with different
    modules or shapes is a clear error."""
    folder = Path(folder)
    saved = checkpoint.load_json(folder / "adapter_config.json")
    if isinstance(saved, dict) and "peft_type" in saved:
        raise ValueError(f"{folder} is a Hugging Face PEFT folder: load it with "
                         "tinymix.export.peft_import.load_adapter, or turn it into a tinymix folder with "
                         "`python3 -m tinymix import-peft`")
    config = config_from_dict(saved["config"])
    base_config = vars(_transformer(model).config)
    differing = {k: (v, base_config.get(k)) for k, v in saved["transformer"].items() if base_config.get(k) != v}
    if differing:
        raise ValueError(f"adapter in {folder} was saved for another base model; differing fields "
                         f"(saved, this model): {differing}")
    if getattr(model, "peft_config", None) is None:
        get_peft_model(model, config)
        if saved["merged"]:
            merge(model)
    elif config_to_dict(model.peft_config) != config_to_dict(config):
        raise ValueError(f"adapter in {folder} has config {config_to_dict(config)}, but the model has "
                         f"{config_to_dict(model.peft_config)}")
    arrays = checkpoint.load_arrays(folder / "adapter_model.safetensors")
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    problems = sorted(set(trainable) ^ set(arrays))
    problems += [f"{k}: model {trainable[k].shape}, file {tuple(a.shape)}" for k, a in arrays.items()
                 if k in trainable and tuple(a.shape) != trainable[k].shape]
    if problems:
        raise KeyError(f"adapter in {folder} does not fit this model: mismatched keys/shapes: "
                       + "; ".join(problems[:10]))
    model.load_state_dict(arrays, strict=False)
    return model
