"""LoRETTA (Yang, Zhou, Wong, Zhang, "LoRETTA: Low-Rank Economic Tensor-Train Adaptation for
Ultra-Low-Parameter Fine-Tuning of Large Language Models", NAACL 2024), top to bottom, as its official
code (yifanycc/loretta: tensor_layers/layers.py and low_rank_tensors.py, tuners/loretta_rep.py and
loretta_adp.py, utils/tensor_util.py, mapping.py, the BERT GLUE script's defaults) computes it.

    model = inject(SequenceClassifier(minilm, 2), LorettaRepConfig())     # TT-factorised LoRA on q, v
    model = inject(SequenceClassifier(minilm, 2), LorettaAdpConfig())     # TT adapters after W_O and FFN out

1. A tensor-train linear layer. Its weight W (in, out) is never stored: the in * out numbers, viewed
   as a tensor of shape (n_1, ..., n_D) (the factors of `in` followed by those of `out`), are a tensor
   train of cores G_k (r_{k-1}, n_k, r_k), r_0 = r_D = 1, all inner ranks = tensor_rank:

        W[i_1, ..., i_D] = G_1[:, i_1, :] G_2[:, i_2, :] ... G_D[:, i_D, :]        y = x W + b

   sum_k r_{k-1} n_k r_k numbers instead of in * out. The forward contracts the cores left to right
   (one matrix product per core) into W and applies it; the backward is the autograd engine's, through
   those products (gradient-checked). Initialisation as the code: every core N(0, 1) / sqrt(r_k) times
   (1 / (in + out))^(1 / 2D), so W has a standard deviation near sqrt(1 / (in + out)); a bias, where
   there is one, U(+-1 / sqrt(out)).

   The shapes: the code takes them from a table keyed by hidden size, which has no entry for tinymix's
   384 (nor 128). Here each side is factored by `factorize`: factors of 8 while they divide, the rest
   in the middle (768 -> 8, 12, 8; 384 -> 8, 6, 8; 8 -> 8). With 384 x 8 -> (8, 6, 8, 8) and tensor
   rank 5, a LoRA factor costs 40 + 150 + 200 + 40 = 430 numbers instead of 3,072; the table's
   768 x 8 -> (8, 8, 12, 8) costs what (8, 12, 8, 8) does here (only the inner order differs).

2. LoRETTA_rep: LoRA (tinymix's LoRALinear, unchanged) whose A (r, in) and B (out, r) are TT layers
   without bias:  h = W_0 x + b_0 + (alpha / r) B A dropout(x).  Defaults from the code and its BERT
   script: r 8, tensor rank 5, alpha 16, dropout 0.05, on query and value. B is NOT zero at the start
   (the code's TT init for both), so the model changes at step 0; init_zero=True zeroes B's last core
   instead (LoRA's start; an ablation, not the method). Every LayerNorm trains too. merge() folds
   (alpha / r) B A into W_0 exactly, as for LoRA.

3. LoRETTA_adp: a bottleneck adapter after the attention output dense and the FFN output dense layers
   (the code's BERT targets ".*\\.output\\.dense"; tinymix's "houlsby" slots):
        h + scale * up(relu(down(h)))
   down (d -> 64) and up (64 -> d) are TT layers with biases; README defaults: bottleneck 64, ReLU,
   dropout 0, scale 1, tensor rank 5. The adapter is nonlinear: no merge into the frozen weights.

Deviations from the official code, and why:
- Shapes: as in 1 (the table has no 384).
- The sequence-classification head: the code replaces RoBERTa's classifier dense layer (d -> d) by a
  TT layer and trains it. tinymix's head is one Linear(d, labels) with no dense layer before it, so the
  head trains as for every other method.
- LayerNorms under LoRETTA_adp: the code's loop that unfreezes them tests a stale loop variable (`n`,
  the LAST parameter's name, not `name`), so with RoBERTa/DeBERTa heads (last parameter
  classifier...bias) no LayerNorm trains. That effective behaviour is the default here
  (train_layer_norms=False); True gives what the code meant.
- The code's rank-pruning masks and quantised forwards are options LoRETTA's runs do not use.
"""
import math
from dataclasses import dataclass

from .. import backend, peft
from .. import functional as F
from ..backend import xp
from ..nn import Dropout, Module, ModuleList, Parameter


# ---- 1. the tensor-train linear layer ----------------------------------------------------------------

def factorize(n):
    """n as factors: 8 as often as it divides (leaving more than 1), the rest in the middle, so the
    end cores (rank 1 on one side) stay at 8: 384 -> [8, 6, 8], 768 -> [8, 12, 8], 8 -> [8]."""
    eights = 0
    while n > 8 and n % 8 == 0:
        eights, n = eights + 1, n // 8
    factors = [8] * eights
    if n > 1 or not factors:
        factors.insert((eights + 1) // 2, n)
    return factors


class TTLinear(Module):
    """y = x W + b with W (in, out) a tensor train of cores G_k (r_{k-1}, n_k, r_k)."""

    def __init__(self, in_features, out_features, rank, bias=True):
        self.in_features, self.out_features = in_features, out_features
        self.shape = factorize(in_features) + factorize(out_features)
        ranks = [1] + [rank] * (len(self.shape) - 1) + [1]
        spread = (1 / (in_features + out_features)) ** (1 / (2 * len(self.shape)))
        self.cores = ModuleList()
        for k, n in enumerate(self.shape):
            core = backend.host_normal((ranks[k], n, ranks[k + 1]), spread / math.sqrt(ranks[k + 1]))
            setattr(self.cores, str(k), _Core(core))
        self.bias = None
        if bias:
            bound = 1 / math.sqrt(out_features)
            self.bias = Parameter(backend.host_uniform((out_features,), -bound, bound))

    def full(self):
        """W (in, out), contracted from the cores on the graph: one matrix product per core."""
        cores = [c.core for c in self.cores]
        out = cores[0].reshape(-1, cores[0].shape[2])                          # (n_1, r_1)
        for core in cores[1:]:
            r, n, r_next = core.shape
            out = (out @ core.reshape(r, n * r_next)).reshape(-1, r_next)      # (n_1 ... n_k, r_k)
        return out.reshape(self.in_features, self.out_features)

    @property
    def weight(self):
        """W^T (out, in): the Linear-shaped weight (what LoRALinear folds, a Mixture averages)."""
        return self.full().transpose(1, 0)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class _Core(Module):
    """One TT core as a named parameter: cores.k.core."""

    def __init__(self, data):
        self.core = Parameter(data)


def tt_parameters(in_features, out_features, rank, bias=True):
    """The closed form: sum_k r_{k-1} n_k r_k, plus the bias."""
    shape = factorize(in_features) + factorize(out_features)
    ranks = [1] + [rank] * (len(shape) - 1) + [1]
    return sum(ranks[k] * n * ranks[k + 1] for k, n in enumerate(shape)) + (out_features if bias else 0)


# ---- 2. LoRETTA_rep ----------------------------------------------------------------------------------

@dataclass
class LorettaRepConfig:
    rank: int = 8                    # LoRA's r
    tensor_rank: int = 5
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: tuple = ("query", "value")
    train_layer_norms: bool = True
    init_zero: bool = False          # an ablation: B's last core at 0, so the update starts at 0
    method = "loretta_rep"


# ---- 3. LoRETTA_adp ----------------------------------------------------------------------------------

class TTAdapter(Module):
    """h + scale * up(relu(down(dropout(h)))), down and up TT layers with biases."""

    def __init__(self, hidden, bottleneck, tensor_rank, dropout, scale):
        self.down = TTLinear(hidden, bottleneck, tensor_rank)
        self.up = TTLinear(bottleneck, hidden, tensor_rank)
        self.dropout = Dropout(dropout)
        self.scale = scale

    def forward(self, h):
        return h + self.up(self.down(self.dropout(h)).relu()) * self.scale


@dataclass
class LorettaAdpConfig:
    bottleneck: int = 64
    tensor_rank: int = 5
    dropout: float = 0.0
    scale: float = 1.0
    train_layer_norms: bool = False  # what the official code does in effect (see the deviations)
    method = "loretta_adp"


# ---- injection and counting --------------------------------------------------------------------------

def _check(config, transformer):
    if config.tensor_rank < 1:
        raise ValueError(f"tensor_rank must be at least 1, got {config.tensor_rank}")
    if not 0 <= config.dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
    if config.method == "loretta_rep":
        peft._check(peft.LoRAConfig(rank=config.rank, target_modules=config.target_modules), transformer)
    elif not 1 <= config.bottleneck <= transformer.config.hidden_size:
        raise ValueError(f"bottleneck must be between 1 and the hidden size {transformer.config.hidden_size}, "
                         f"got {config.bottleneck}")


def inject(model, config):
    """LoRETTA_rep or LoRETTA_adp into every layer, in place; everything else frozen except the task
    head (and the LayerNorms where the config says). Draws one number from the running generator, as
    peft.get_peft_model does."""
    peft.require_fresh(model)
    if config.method not in ("loretta_rep", "loretta_adp"):
        raise ValueError(f"unknown LoRETTA method {config.method!r}")
    transformer = peft._transformer(model)
    _check(config, transformer)
    model.requires_grad_(False)
    draw = int(backend.host_rng.integers(2**31))
    hidden = transformer.config.hidden_size
    for index, block in enumerate(transformer.layers):
        if config.method == "loretta_rep":
            for target in config.target_modules:
                holder, name = peft._lora_sites(block)[target]
                base = getattr(holder, name)
                with peft._init_stream((draw, index, peft.LORA_TARGETS.index(target))):
                    A = TTLinear(base.in_features, config.rank, config.tensor_rank, bias=False)
                    B = TTLinear(config.rank, base.out_features, config.tensor_rank, bias=False)
                if config.init_zero:
                    last = B.cores[len(B.shape) - 1].core
                    last.data = xp.zeros_like(last.data)
                setattr(holder, name, peft.LoRALinear(base, A, B, config.alpha, config.rank, config.dropout))
        else:
            for site, slot in enumerate(("attention_adapter", "ffn_adapter")):
                with peft._init_stream((draw, index, site)):
                    adapter = TTAdapter(hidden, config.bottleneck, config.tensor_rank, config.dropout, config.scale)
                setattr(block, slot, adapter)
    if config.train_layer_norms:
        for name, module in model.named_modules():
            if name.endswith("norm"):
                module.requires_grad_(True)
    if hasattr(model, "classifier"):
        model.classifier.requires_grad_(True)
    model.peft_config, model.peft_merged = config, False
    return model


def count(model):
    """(trainable parameters, deployed trainable parameters): the same numbers; LoRETTA has no
    mixture, and a folded rep update (peft.merge(model, fold_lora=True)) costs nothing at inference."""
    return model.num_parameters(trainable_only=True), peft.merged_parameter_count(model)


def merge(model):
    """LoRETTA_rep: fold every (alpha / r) B A into its frozen weight (LoRALinear.merge); unmerge with
    unmerge(model). LoRETTA_adp's adapters are nonlinear and cannot be folded: a clear error."""
    if model.peft_config.method != "loretta_rep":
        raise ValueError("LoRETTA_adp cannot be merged: its adapters have a ReLU between two layers")
    for _, module in model.named_modules():
        if isinstance(module, peft.LoRALinear):
            module.merge()
    model.peft_merged = True
    return model


def unmerge(model):
    for _, module in model.named_modules():
        if isinstance(module, peft.LoRALinear):
            module.unmerge()
    model.peft_merged = False
    return model
