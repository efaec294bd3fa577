"""UniPELT (Mao, Mathias, Hou, Almahairi, Ma, Han, Yih, Khabsa, "UniPELT: A Unified Framework for
Parameter-Efficient Language Model Tuning", ACL 2022): prefix-tuning, an adapter and LoRA in every layer,
each behind a learned gate that looks at the input, so the model chooses per example and per layer how
much of each sub-module to use. AP = gated prefix + gated adapter; APL = AP + gated LoRA.

    model = inject(SequenceClassifier(minilm, 2), UniPELTConfig(modules="APL"))
    ... train ...
    deploy(model)     # the prefix MLP replaced by its output; the gates stay (nothing else can be folded)

Every gate, as the official code computes it (BERT, read in its modeling_bert.py, adapters/modeling.py and
lora_layers.py): a Linear d -> 1 on the sub-module's own input, a sigmoid per token, averaged over the
sequence's T positions (padding included), one number per example:

    g(x) = mean_t sigmoid(x_t w + b)                      x (B, T, d) -> (B,)

In layer l, with x the layer's input (the attention's input in BERT's post-LN layout):
- prefix (prefix.py, unshifted positions as this code has them): keys and values [g_P(x) P_K ; K],
  [g_P(x) P_V ; V]; P = 10, trained through the MLP d -> 512 -> 2 L d, removable afterwards.
- LoRA on W_q and W_v, r = 8: W x + b + g_L(x) B A x, one gate per matrix. The gate REPLACES alpha / r
  (the official layer overwrites its `scaling` with the gate; alpha = 16 is then unused).
- adapter, Pfeiffer's as adapter-transformers runs it, on the FFN sublayer. With z = x' + FFN(x') the
  input of the layer's output LayerNorm (x' the attention sublayer's output),

      y = LN(z);   out = LN(z + g_A(y) up(relu(down(y))))          bottleneck d / 16, biases

  i.e. the adapter reads the layer's usual output, and its gated update joins the FFN's output before
  the same (frozen) LayerNorm is applied again. tinymix's own adapter placements differ: "ffn" puts
  h + up(gelu(down(h))) on the FFN output h before the residual (AdaMix's code), "pfeiffer" adds
  up(gelu(down(out))) after the output LayerNorm with no second LayerNorm; here UniPELT's is rebuilt by
  wrapping the output LayerNorm, with ReLU as the official default.
Initialisation as the official model gets it: gates, adapter and prefix layers N(0, 0.02) with zero
biases (BERT's init; every gate starts near 0.5), LoRA A Kaiming-uniform and B = 0. Trained: prefix
(embedding, MLP), adapters, LoRA factors, every gate, and the task head; the LayerNorms stay frozen.

Against AdapterHub's UniPELTConfig (the `adapters` package, checked with 1.3.0: tests/
test_adapterhub_neighbours.py), a ConfigUnion of PrefixTuningConfig(prefix_length=10),
SeqBnConfig(reduction_factor=16) and LoRAConfig(r=8, alpha=2, on q and v), each with use_gating=True: the
same function, gate for gate (APL; AP is its first two parts). Its prefix gate (shared_gating: one for
keys and values) reads the attention's input, each LoRA gate the layer's input and replaces alpha / r,
its seq_bn adapter computes LN(z + g(y) up(relu(down(y)))), every gate averages the sigmoid over all
positions, padding included, and the prefix leaves the positions unshifted. With the same weights,
MiniLM's sentence embeddings agree to about 1e-6 and every gate value to 1e-5. Only the initialisation
differs: AdapterHub adds its modules after BERT's initialisation, so the prefix's embedding (N(0, 1)) and
MLP and the prefix and LoRA gates' biases keep PyTorch's defaults, where the official code (and this one)
gives them BERT's N(0, 0.02) and zero biases.

Counts on MiniLM's shape (d = 384, L = 6, head 770), trainable while training / deployed:
    AP    prefix 2,564,864 / 46,080 + prefix gates 2,310 + adapters and gates 115,350
          = 2,683,294 / 164,510 (incl. head)
    APL   + LoRA factors and gates 78,348 = 2,761,642 / 242,858

Gated modules cannot be merged into static weights: each gate depends on the input, so g(x) B A x is
not W' x for any fixed W', and the adapter's update sits inside a LayerNorm that its gate scales per
example. merge() refuses, and so does each gated LoRA layer (the official LoRA layer's merge-at-eval
path would fold in whatever gate the last batch left in `scaling`). The deployed model keeps every
gate and sub-module: inference_cost() measures what that costs against merged LoRA and a plain adapter.

Deviations, and why:
- Encoder only. The official code is BERT's; the gates' mean runs over every position, later ones
  included, so a causal decoder (the e2e task) would see the future through them.
- The optional central gate and BitFit of the official code are not built (off by default there).
- The gate averages over padding positions too, as the official code does: a padded sentence's gates
  depend on its padding. Kept for fidelity.
"""
import time
from dataclasses import dataclass

from .. import backend, peft
from ..nn import Linear, Module, kaiming_uniform
from ..backend import xp
from ..tensor import no_grad
from ..transformer import SequenceClassifier, Transformer, TransformerConfig
from . import prefix

MODULES = ("AP", "APL")
NOT_MERGEABLE = ("UniPELT's gates depend on each input (a sigmoid of the hidden states averaged over the "
                 "sentence), so a gated LoRA or adapter is no fixed weight update and cannot be folded into "
                 "static weights; deploy(model) removes the prefix MLP, which is all that can go")


class Gate(Module):
    """g(x) = mean over positions of sigmoid(x w + b): (B, T, d) -> (B, 1). `last` keeps the latest values."""

    def __init__(self, hidden):
        self.linear = Linear(hidden, 1)
        self.last = None

    def forward(self, x):
        z = self.linear(x)                                   # (B, T, 1)
        gate = ((z * 0.5).tanh() * 0.5 + 0.5).mean(axis=1)  # sigmoid, written without exp overflow: (B, 1)
        self.last = gate.data
        return gate


class GatedLoRALinear(peft.LoRALinear):
    """W x + b + g(x) B A x: tinymix's LoRALinear with the gate in place of alpha / r."""

    def __init__(self, base, rank, gate):
        A = peft._lora_linear(kaiming_uniform((rank, base.in_features), base.in_features))
        B = peft._lora_linear(xp.zeros((base.out_features, rank), dtype=xp.float32))
        super().__init__(base, A, B, alpha=rank, rank=rank, dropout=0.0)
        self.gate = gate

    def update(self, x):
        return self.lora_B(self.lora_A(x)) * self.gate(x).reshape(x.shape[0], 1, 1)

    def merge(self):
        raise ValueError(NOT_MERGEABLE)


class GatedAdapter(Module):
    """UniPELT's adapter around a layer's output LayerNorm (its input z = x' + FFN(x')):
    y = LN(z); LN(z + g(y) up(relu(down(y))))."""

    def __init__(self, norm, hidden, bottleneck):
        self.norm = norm
        self.down, self.up = Linear(hidden, bottleneck), Linear(bottleneck, hidden)
        self.gate = Gate(hidden)

    def forward(self, z):
        y = self.norm(z)
        update = self.up(self.down(y).relu()) * self.gate(y).reshape(y.shape[0], 1, 1)
        return self.norm(z + update)


@dataclass
class UniPELTConfig:
    modules: str = "APL"              # "AP": gated prefix + adapter; "APL": + gated LoRA
    prefix_length: int = 10
    prefix_mid: int = 512             # the prefix MLP's mid dimension
    reduction_factor: int = 16        # adapter bottleneck = hidden // reduction_factor
    lora_rank: int = 8
    lora_targets: tuple = ("query", "value")
    method = "unipelt"


def inject(model, config):
    """Freeze a classifier's encoder and add UniPELT's gated sub-modules to every layer; in place."""
    peft.require_fresh(model)
    if config.modules not in MODULES:
        raise ValueError(f"unknown modules {config.modules!r}: choose one of {MODULES}")
    transformer = peft._transformer(model)
    tc = transformer.config
    if tc.kind != "encoder":
        raise ValueError("UniPELT is built for an encoder: its gates average over every position, so a "
                         "decoder would see later tokens through them")
    if not 1 <= tc.hidden_size // config.reduction_factor:
        raise ValueError(f"reduction_factor {config.reduction_factor} leaves no adapter bottleneck for hidden "
                         f"size {tc.hidden_size}")
    if not 1 <= config.lora_rank <= tc.hidden_size:
        raise ValueError(f"lora_rank must be between 1 and the hidden size {tc.hidden_size}, got {config.lora_rank}")
    prefix_config = prefix.PrefixTuningConfig(config.prefix_length, True, config.prefix_mid,
                                              shift_positions=False, init="bert")
    prefix.check(prefix_config, transformer)
    unknown = [t for t in config.lora_targets if t not in ("query", "key", "value")]
    if unknown:
        raise ValueError(f"unknown LoRA targets {unknown}: UniPELT's LoRA sits on 'query' and 'value' "
                         "(or 'key') of the attention")
    model.requires_grad_(False)
    hidden = tc.hidden_size
    prefix.attach(transformer, prefix_config, gates=[Gate(hidden) for _ in transformer.layers])
    for block in transformer.layers:
        block.output_norm = GatedAdapter(block.output_norm, hidden, hidden // config.reduction_factor)
        if config.modules == "APL":
            for target in config.lora_targets:
                base = getattr(block.attention, target)
                setattr(block.attention, target, GatedLoRALinear(base, config.lora_rank, Gate(hidden)))
    if hasattr(model, "classifier"):
        model.classifier.requires_grad_(True)
    model.peft_config, model.peft_merged = config, False
    return model


def gates(model):
    """{(layer, "prefix" | "adapter" | "lora_query" | ...): the latest forward's gate values (B,)}."""
    found = {}
    for i, block in enumerate(peft._transformer(model).layers):
        found[i, "prefix"] = block.attention.prefix.gate.last
        found[i, "adapter"] = block.output_norm.gate.last
        for name in ("query", "key", "value"):
            layer = getattr(block.attention, name)
            if isinstance(layer, GatedLoRALinear):
                found[i, f"lora_{name}"] = layer.gate.last
    return {key: None if value is None else value[:, 0] for key, value in found.items()}


def deploy(model):
    """The prefix MLP replaced by its output (exact); every gate and sub-module stays."""
    return prefix.deploy(model)


def merge(model):
    raise ValueError(NOT_MERGEABLE)


def count(model):
    """(trainable parameters, deployed trainable parameters: the prefix as its table, without the MLP)."""
    return prefix.count(model)


# ---- what the gates cost at inference ---------------------------------------------------------------------

def _median_seconds(models, ids, mask, repeats):
    """{name: median seconds of one eval forward}; the arms take turns in every round, so that a load
    that comes and goes (other work on the machine) falls on all of them alike."""
    times = {name: [] for name in models}
    with no_grad():
        for model in models.values():
            model.eval()(ids, mask)                          # warm up
        for _ in range(repeats):
            for name, model in models.items():
                started = time.perf_counter()
                model(ids, mask)
                times[name].append(time.perf_counter() - started)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def inference_cost(batch=16, length=64, repeats=7, seed=0):
    """Median seconds of one eval forward on MiniLM's shape (random weights) for: LoRA merged into the
    weights (the base model's cost), a static Pfeiffer adapter (tinymix's), and UniPELT AP and APL with
    the prefix deployed. Returns {arm: seconds}; ratios are against merged LoRA."""
    def fresh():
        backend.manual_seed(seed)
        return SequenceClassifier(Transformer(TransformerConfig(num_layers=6)), 2)

    ids = backend.host_generator(seed).integers(1000, 20000, size=(batch, length))
    mask = ids * 0 + 1
    lora = peft.merge(peft.get_peft_model(fresh(), peft.LoRAConfig(rank=8, alpha=16.0)), fold_lora=True)
    adapter = peft.get_peft_model(fresh(), peft.AdapterConfig(bottleneck=24, placement="pfeiffer"))
    arms = {"merged LoRA": lora, "Pfeiffer adapter": adapter,
            "UniPELT-AP": deploy(inject(fresh(), UniPELTConfig(modules="AP"))),
            "UniPELT-APL": deploy(inject(fresh(), UniPELTConfig(modules="APL")))}
    return _median_seconds(arms, ids, mask, repeats)


if __name__ == "__main__":
    seconds = inference_cost()
    for name, s in seconds.items():
        print(f"{name:18s} {1000 * s:8.1f} ms   x{s / seconds['merged LoRA']:.2f}")
