"""PHM layers, the PHM adapter (Compacter-style) and MixPHM (Jiang and Zheng, "MixPHM: Redundancy-Aware
Parameter-Efficient Tuning for Low-Resource Visual Question Answering", CVPR 2023), top to bottom, as the
official code (jingjing12110/MixPHM: mixphm/phm_moe.py, compacter/hypercomplex/layers.py,
losses/r2_loss.py, modeling_t5.py, scripts/vqav2_vlt5_mixphm.sh) computes them.

    model = inject(SequenceClassifier(minilm, 2), MixPHMConfig())
    loss = task_loss + redundancy_regularizer(model, attention_mask)     # after each training forward
    merge(model)                                                         # the official inference: one PHM adapter

1. A PHM linear layer (Zhang et al., ICLR 2021) builds its (in, out) matrix from Kronecker products:

        H = sum_{s=1..n} A_s (x) W_s,      y = x H + b,      W_s = L_s R_s  (low rank)

   A_s (n, n) are the "rules"; W_s (in/n, out/n) is the product of L_s (in/n, k) and R_s (k, out/n),
   k = phm_rank. Parameters: n^3 (rules) + n k (in/n + out/n) + out, against in * out + out for a
   Linear. As the official MixPHM script has it (shared_phm_rule=True, learn_phm=True), ONE trainable
   rule tensor (n, n, n) is shared by every PHM layer of the model; it is a parameter of the model
   itself (`model.phm_rule`), counted once. Initialisation as the code: rules ~ N(0, 0.01), each L_s and
   R_s Glorot-uniform with gain sqrt(2), bias 0. H is built once per forward call, on the graph, so its
   gradient follows from the Kronecker sum's (the autograd engine derives it; gradient-checked).

2. The PHM adapter sits where tinymix's "ffn" adapter does (after the FFN output, before dropout and the
   residual add: the official code's T5 feed-forward placement):

        h + scale * up(dropout(gelu_tanh(down(h))))

   down: d -> d / reduction_factor, up: back to d, both PHM layers; GELU in its tanh form ("gelu_new"),
   dropout 0.5, scale (the code's ada_alpha) 1. Defaults from the official script: n 4, phm_rank 8,
   reduction_factor 12 (bottleneck 32 on MiniLM).

3. MixPHM: the same adapter with M = 4 experts of the up-projection and ONE shared down-projection
   (the script's sharing_down=1, sharing_up=0: the reverse of AdaMix's default, which shares the up
   side). In training each forward call routes the whole batch through one expert drawn uniformly at
   random; the experts start identical (the code deep-copies one initialised layer). This is AdaMix's
   routing, so an `adamix.Mixture` of PHM layers holds the experts unchanged (a PHM layer offers the
   `weight` and `bias` a Mixture reads). No consistency loss: the MixPHM code path has none.

4. Redundancy regularisation (losses/r2_loss.py): the adapter's output u = scale * up(...) is
   decorrelated from its input h (the frozen model's hidden state). Over the batch's real tokens, with
   each token's feature vector scaled to unit length,

        C = u_hat^T h_hat   (d, d),      R = lambda * sum_{i != j} C_ij^2 / B,   lambda = 3.9e-3,

   B the batch size; averaged over the layers and weighted 0.2 (red_w). The code's second term, a
   Jensen-Shannon estimate of the mutual information between the adapter's tokens and the mean of the
   encoder's final states, weighted 0.2 x 0.2, is `alignment_loss` below.

5. Merging. MixPHM's inference (inference_level 3) averages the experts' PARAMETERS, L, R and b
   (uniform weights, the softmax of zeros); the result is one PHM adapter of a single expert's size:
   merge(model) (how="factors"). That average is NOT the average of the experts: H is bilinear in L
   and R, so mean(L) mean(R) != mean(L R). Averaging the experts' dense maps H instead (how="dense",
   which is AdaMix's merge, adamix.merge_experts) IS exact: the down-projection is shared and the up
   projection is the adapter's last map, so mean_k up_k(z) = (mean_k H_k) z + mean_k b_k, the mean of
   the experts' outputs; but the merged up-projection is then a dense (bottleneck, d) Linear, and the
   PHM compression is lost. The Mixture's "average" inference before merging is the dense, exact one.
   No merge folds the adapter into the frozen weights (the GELU in it is not linear), and no merge is
   undone: as AdaMix's, it replaces the mixtures.

Against AdapterHub's PHM layers (the `adapters` package, checked with 1.3.0: tests/
test_adapterhub_neighbours.py). Its PHMLayer is the same function: H = kronecker_product(rule, W).sum(0),
W = W_left @ W_right, indexed as here, with one (n, n, n) rule per adapter (shared_phm_rule, held in the
model's shared_parameters as `model.phm_rule` here), so the weights go across as they are. This PHM
adapter is BnConfig(phm_layer=True, phm_dim=4, phm_rank=8, reduction_factor=12, non_linearity="gelu_new",
scaling=1.0) in the "ffn" placement (mh_adapter False, output_adapter True, original_ln_before False,
original_ln_after True, residual_before_ln True: the bottleneck export's), and a MixPHM after merge(model)
is one such adapter; both give MiniLM's sentence embeddings to about 2e-6. AdapterHub's own Compacter
configs compute other functions:
- placement: CompacterConfig (double_seq_bn) puts a second PHM adapter on the attention's output
  (Houlsby's placement): it is this adapter plus that one. CompacterPlusPlusConfig (seq_bn) reads the
  layer's output, LN(z + u(LN(z))) with z the output LayerNorm's input, where this one works on the FFN's
  output before the residual add;
- activation: their "gelu" is the exact GELU; MixPHM's code uses the tanh form ("gelu_new");
- defaults: reduction_factor 32, phm_rank 1 and rules N(0, 1e-4) (phm_init_range), against 12, 8 and
  N(0, 0.01) here (phm_init_range=0.01 gives these rules);
- W's initialisation: AdapterHub's init_W draws every W slice from Glorot's NORMAL distribution with gain 1
  whatever hypercomplex_nonlinearity says (its first branch tests only that the string is not empty), so
  its "glorot-uniform" is never uniform; MixPHM's code draws Glorot-uniform with gain sqrt(2), as here;
- dropout (training only): AdapterHub drops the adapter's output, MixPHM's code the GELU's output
  before the up-projection.
An unmerged MixPHM (M up-projection experts, one drawn per training call, their dense average at
inference) has no AdapterHub form.

Deviations from the official code, and why:
- Only the factorised (low-rank) W_s of the official runs is built (factorized_phm=True); the full W_s
  and the factorised rules are Compacter options MixPHM does not use.
- The redundancy term uses the layers of tinymix's one encoder (the code averages encoder and decoder
  stacks of VL-T5), and normalises with x / sqrt(|x|^2 + 1e-24) (the code: x / max(|x|, 1e-12)); padded
  tokens are masked out of C rather than gathered away, which gives the same C.
- The official evaluation averages the experts' factors at every eval call; here merge(model) does it
  once, explicitly. Before it, a model in eval mode uses the Mixture's exact dense average (see 5).
- The learned-gate variant (add_gate) and the token/sentence-level random inference of the code are
  not built: the MixPHM script uses neither.
"""
import copy
import math
from dataclasses import dataclass

from .. import adamix, backend, peft
from .. import functional as F
from ..backend import xp
from ..nn import Dropout, Module, Parameter
from ..tensor import Tensor


# ---- 1. the PHM layer --------------------------------------------------------------------------------

class PHMLinear(Module):
    """y = x H + b,  H = sum_s A_s (x) (L_s R_s), the rules A (n, n, n) shared and held outside."""

    def __init__(self, in_features, out_features, rules, rank):
        n = rules.shape[0]
        self.in_features, self.out_features, self.n, self.rank = in_features, out_features, n, rank
        self.shared = (rules,)        # a tuple, so the shared rules are not this layer's own parameter
        p, q = in_features // n, out_features // n
        self.W_left = Parameter(_glorot_slices((n, p, rank)))      # L_s (in/n, k)
        self.W_right = Parameter(_glorot_slices((n, rank, q)))     # R_s (k, out/n)
        self.bias = Parameter(xp.zeros(out_features, dtype=xp.float32))

    @property
    def weight(self):
        """The dense (out, in) matrix H^T, on the graph: what a Linear would hold."""
        rules, n = self.shared[0], self.n
        W = self.W_left @ self.W_right                                  # (n, in/n, out/n)
        p, q = W.shape[1], W.shape[2]
        kron = rules.reshape(n, n, 1, n, 1) * W.reshape(n, 1, p, 1, q)   # (n, n, p, n, q): A_s[i,j] W_s[k,l]
        H = kron.sum(axis=0).reshape(n * p, n * q)                       # H[i p + k, j q + l]
        return H.transpose(1, 0)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


def _glorot_slices(shape):
    """Each (a, b) slice uniform in +-sqrt(2) sqrt(6 / (a + b)): torch's xavier_uniform_ with gain sqrt(2)."""
    bound = math.sqrt(2) * math.sqrt(6 / (shape[1] + shape[2]))
    return backend.host_uniform(shape, -bound, bound)


def make_rules(n):
    """The shared rules, (n, n, n) ~ N(0, 0.01)."""
    return Parameter(backend.host_normal((n, n, n), 0.01))


# ---- 2-3. the adapter and its mixture -------------------------------------------------------------

class PHMAdapter(Module):
    """h + scale * up(dropout(gelu_tanh(down(h)))); `down` and `up` are PHM layers or Mixtures of them.
    In training it keeps its last (output, input) pair for the redundancy regulariser."""

    def __init__(self, down, up, dropout, scale):
        self.down, self.up = down, up
        self.dropout = Dropout(dropout)
        self.scale = scale
        self.last = None

    def forward(self, h):
        u = self.up(self.dropout(F.gelu(self.down(h), approximate=True))) * self.scale
        self.last = (u, h) if self.training else None
        return h + u


@dataclass
class PHMAdapterConfig:
    reduction_factor: int = 12       # bottleneck = hidden / reduction_factor
    n: int = 4                       # number of Kronecker terms (hypercomplex_division)
    phm_rank: int = 8
    dropout: float = 0.5
    scale: float = 1.0               # the code's ada_alpha
    method = "phm"


@dataclass
class MixPHMConfig(PHMAdapterConfig):
    num_experts: int = 4             # experts of the up-projection; the down-projection is shared
    redundancy_weight: float = 0.2   # red_w
    redundancy_lambda: float = 3.9e-3
    method = "mixphm"


def _check(config, hidden):
    if config.n < 1 or config.reduction_factor < 1 or config.phm_rank < 1:
        raise ValueError(f"n, reduction_factor and phm_rank must be at least 1, got {config.n}, "
                         f"{config.reduction_factor}, {config.phm_rank}")
    bottleneck = hidden // config.reduction_factor
    if bottleneck < 1 or hidden % config.n or bottleneck % config.n:
        raise ValueError(f"a PHM adapter needs the hidden size ({hidden}) and the bottleneck (hidden // "
                         f"reduction_factor = {bottleneck}) to be positive multiples of n = {config.n}")
    if getattr(config, "num_experts", 1) < 1:
        raise ValueError(f"num_experts must be at least 1, got {config.num_experts}")
    if not 0 <= config.dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")


def inject(model, config):
    """Put a PHM adapter (config.method "phm") or a MixPHM adapter ("mixphm") after the FFN of every
    layer, add the shared rules to the model (`model.phm_rule`), and freeze everything else except the
    task head, in place. Draws one number from the running generator, as peft.get_peft_model does."""
    peft.require_fresh(model)
    transformer = peft._transformer(model)
    hidden = transformer.config.hidden_size
    _check(config, hidden)
    model.requires_grad_(False)
    draw = int(backend.host_rng.integers(2**31))
    with peft._init_stream((draw, len(transformer.layers))):     # a key no layer uses
        model.phm_rule = make_rules(config.n)
    bottleneck = hidden // config.reduction_factor
    experts = getattr(config, "num_experts", 1)
    for index, block in enumerate(transformer.layers):
        with peft._init_stream((draw, index, 0)):
            down = PHMLinear(hidden, bottleneck, model.phm_rule, config.phm_rank)
        with peft._init_stream((draw, index, 1)):
            make_up = lambda: PHMLinear(bottleneck, hidden, model.phm_rule, config.phm_rank)
            up = make_up() if config.method == "phm" else adamix.make_mixture(make_up, experts, "identical")
        block.ffn_adapter = PHMAdapter(down, up, config.dropout, config.scale)
    if hasattr(model, "classifier"):
        model.classifier.requires_grad_(True)
    model.peft_config, model.peft_merged = config, False
    return model


def adapters(model):
    return [m for _, m in model.named_modules() if isinstance(m, PHMAdapter)]


# ---- 4. the redundancy regulariser -------------------------------------------------------------------

def _unit_rows(x):
    return x / ((x * x).sum(axis=-1, keepdims=True) + 1e-24).sqrt()


def _token_mask(attention_mask, shape, dtype):
    """(B, T, 1) weights: 1 for real tokens, 0 for padding (all 1 without a mask)."""
    if attention_mask is None:
        return Tensor(xp.ones((shape[0], shape[1], 1), dtype=dtype))
    mask = backend.host.asarray(attention_mask).reshape(shape[0], shape[1], 1).astype(dtype)
    return Tensor(backend.from_numpy(mask))


def redundancy_loss(u, h, attention_mask=None, lam=3.9e-3):
    """lambda * sum_{i != j} C_ij^2 / B, C = (unit-length u tokens)^T (unit-length h tokens) over the
    real tokens; u, h: (B, T, d)."""
    B, _, d = u.shape
    keep = _token_mask(attention_mask, u.shape, u.dtype)
    C = (_unit_rows(u) * keep).reshape(-1, d).T @ (_unit_rows(h) * keep).reshape(-1, d)     # (d, d)
    diagonal = C * Tensor(xp.eye(d, dtype=C.dtype))
    return ((C * C).sum() - (diagonal * diagonal).sum()) * (lam / B)


def redundancy_regularizer(model, attention_mask=None):
    """redundancy_weight * the mean over layers of redundancy_loss, from the last training forward."""
    config = model.peft_config
    pairs = [a.last for a in adapters(model) if a.last is not None]
    if not pairs:
        raise RuntimeError("no adapter output recorded: call this after a forward pass in training mode")
    terms = [redundancy_loss(u, h, attention_mask, config.redundancy_lambda) for u, h in pairs]
    return sum(terms[1:], terms[0]) * (config.redundancy_weight / len(terms))


def _softplus(x):
    """log(1 + e^x), stably: relu(x) + log(1 + e^-|x|)."""
    magnitude = x.relu() + (-x).relu()
    return x.relu() + (1.0 + (-magnitude).exp()).log()


def alignment_loss(u, pooled, attention_mask=None):
    """The code's Jensen-Shannon mutual-information term (MILoss, measure "JSD"): token features
    u (B, T, d) scored against every example's pooled vector (B, d); a token's own example is its
    positive, the others its negatives. Returns E_neg - E_pos (lower: more shared information)."""
    B, T, d = u.shape
    keep = backend.host.ones((B, T), dtype="float32") if attention_mask is None \
        else backend.host.asarray(attention_mask, dtype="float32").reshape(B, T)
    own = backend.host.eye(B, dtype="float32")[:, None, :] * keep[:, :, None]            # (B, T, B)
    other = (1 - backend.host.eye(B, dtype="float32"))[:, None, :] * keep[:, :, None]
    tokens = float(keep.sum())
    scores = u.reshape(B * T, d) @ pooled.T                                             # (B T, B)
    positive = Tensor(backend.from_numpy(own.reshape(B * T, B)))
    negative = Tensor(backend.from_numpy(other.reshape(B * T, B)))
    log2 = math.log(2.0)
    e_pos = (log2 - _softplus(-scores)) * positive             # the code's masked-out entries add exactly 0
    e_neg = (_softplus(-scores) + scores - log2) * negative
    return e_neg.sum() * (1 / (tokens * (B - 1))) - e_pos.sum() * (1 / tokens)


# ---- 5. counting and merging -------------------------------------------------------------------------

def count(model):
    """(trainable parameters, deployed trainable parameters after merge(model)): each mixture counts
    as one expert; the shared rules once."""
    return model.num_parameters(trainable_only=True), peft.merged_parameter_count(model)


def average_factors(mixture):
    """MixPHM's inference: ONE PHM layer holding the experts' mean L, R and b (the same shared rules)."""
    first = mixture.experts[0]
    merged = copy.copy(first)                           # the sizes and the shared rules; new factors below
    for name in ("W_left", "W_right", "bias"):
        mean = sum(getattr(e, name).data for e in mixture.experts) / mixture.num_experts
        setattr(merged, name, Parameter(mean.astype(xp.float32), requires_grad=getattr(first, name).requires_grad))
    return merged


def merge(model, how="factors"):
    """Replace every mixture of PHM layers by one layer, in place: "factors" (the official inference,
    a PHM layer of one expert's size, not the experts' mean) or "dense" (AdaMix's merge: one Linear
    with the experts' mean H, exactly the mean of their outputs)."""
    if how == "dense":
        adamix.merge_experts(model)
    elif how == "factors":
        for _, parent in list(model.named_modules()):
            for name, child in list(vars(parent).items()):
                if isinstance(child, adamix.Mixture) and isinstance(child.experts[0], PHMLinear):
                    setattr(parent, name, average_factors(child))
    else:
        raise ValueError(f"unknown merge {how!r}: choose 'factors' (MixPHM's) or 'dense' (exact)")
    model.peft_merged = True
    return model
