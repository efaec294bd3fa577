"""The Hadamard adapter (Chen, Fu, Fan, Du, Lou, Han, Zhang, Li, Xiao, "Hadamard Adapter: An Extreme
Parameter-Efficient Adapter Tuning Method for Pre-trained Language Models", CIKM 2023), and the same
module as AdaMix experts, whose average merges exactly.

    model = inject(SequenceClassifier(minilm, 2), HadamardConfig())                 # one per layer
    model = inject(SequenceClassifier(minilm, 2), HadamardConfig(num_experts=4))     # AdaMix over it
    merge(model)           # experts -> their mean; then every adapter folded into the output projection

1. In every layer, the multi-head self-attention's output A (B, T, d) becomes

        A' = w * A + b          (element-wise; w, b in R^d shared by all tokens; w = 1, b = 0 at the start)

   and the LayerNorm after the attention sublayer trains with it; everything else is frozen except the
   task head. Trainable on MiniLM: 6 x 2 x 384 adapter + 6 x 2 x 384 LayerNorm numbers + the head.
   Where exactly A is taken is not settled by what could be read (no official code is public; the
   paper's own text could not be read here): the summaries write A as the concatenated heads,
   Concat_h(softmax(Q_h K_h^T / sqrt(d_k)) V_h), i.e. BEFORE the attention output projection ("context",
   the default here), and place the adapter "between the self-attention and the LayerNorm", which also
   fits AFTER the projection ("output": tinymix's attention_adapter slot, before dropout and the
   residual). Both are built; both are affine maps of the same A, so everything below holds for both.

2. Merging into the frozen weights is exact, because the adapter is affine and sits next to a Linear
   (W_O, b_O) with nothing nonlinear between:
        context:  W_O (w * A + b) + b_O = (W_O diag(w)) A + (W_O b + b_O)
        output:   w * (W_O A + b_O) + b = (diag(w) W_O) A + (w * b_O + b)
   merge() writes these into W_O and b_O and takes the adapters out (the deployed model has no extra
   parameters and no extra latency); unmerge() puts the original W_O, b_O and the adapters back.

3. AdaMix over Hadamard experts: M experts (w_k, b_k), one drawn at random per forward call in training
   (an `adamix.Mixture`, unchanged: an expert offers it the (d, d) matrix diag(w) as `weight`), the
   consistency loss from the training loop as for any mixture. Averaging the experts is EXACT, unlike
   the adapter's (GELU) case: the module is linear in (w, b), so
        mean_k (w_k * A + b_k) = (mean_k w_k) * A + mean_k b_k,
   the mean of the experts' outputs; merge() replaces each mixture by that one expert, then folds it.
   All experts necessarily start identical (w = 1, b = 0).

Deviations, and why:
- The paper's two-stage schedule (first the classifier alone on the frozen model, then the adapters
  and LayerNorms) belongs to the training loop, which is not built here; inject() does stage two.
- The paper's removal of adapters from "redundant" layers (0.022% of parameters) is not built.
- In eval mode before merging, a mixture computes its average through the (d, d) diag(w) matrix that
  a Mixture reads: exact, but d times the cost of the element-wise form; merge() removes it.
"""
from dataclasses import dataclass

from .. import adamix, peft
from ..backend import xp
from ..nn import Module, Parameter
from ..tensor import Tensor

POSITIONS = ("context", "output")


class Hadamard(Module):
    """x -> scale * x + bias, element-wise over the last axis; scale = 1, bias = 0 at the start."""

    def __init__(self, dim):
        self.in_features = self.out_features = dim
        self.scale = Parameter(xp.ones(dim, dtype=xp.float32))
        self.bias = Parameter(xp.zeros(dim, dtype=xp.float32))

    @property
    def weight(self):
        """diag(scale) (d, d), on the graph: the Linear an adamix.Mixture averages and applies."""
        return self.scale.reshape(-1, 1) * Tensor(xp.eye(self.in_features, dtype=self.scale.dtype))

    def forward(self, x):
        return x * self.scale + self.bias


class BeforeLinear(Module):
    """A frozen Linear whose input first goes through a Hadamard adapter (or a Mixture of them): the
    "context" position, on the attention output projection's input."""

    def __init__(self, adapter, base):
        self.adapter, self.base = adapter, base

    def forward(self, x):
        return self.base(self.adapter(x))


@dataclass
class HadamardConfig:
    position: str = "context"        # "context": the concatenated heads; "output": after W_O
    num_experts: int = 1             # more than 1: AdaMix's random routing over Hadamard experts
    train_layer_norm: bool = True    # the LayerNorm after the attention sublayer (the paper: yes)
    method = "hadamard"


def inject(model, config):
    """Place a Hadamard adapter (or a Mixture of them) on every layer's attention output, unfreeze the
    LayerNorm after it and the task head, freeze everything else; in place. Returns the model."""
    peft.require_fresh(model)
    if config.position not in POSITIONS:
        raise ValueError(f"unknown position {config.position!r}: choose one of {POSITIONS}")
    if config.num_experts < 1:
        raise ValueError(f"num_experts must be at least 1, got {config.num_experts}")
    transformer = peft._transformer(model)
    model.requires_grad_(False)
    hidden = transformer.config.hidden_size
    for block in transformer.layers:
        make = lambda: Hadamard(hidden)
        adapter = make() if config.num_experts == 1 else adamix.make_mixture(make, config.num_experts, "identical")
        if config.position == "output":
            block.attention_adapter = adapter
        else:
            block.attention.output = BeforeLinear(adapter, block.attention.output)
        if config.train_layer_norm:
            block.attention_norm.requires_grad_(True)
    if hasattr(model, "classifier"):
        model.classifier.requires_grad_(True)
    model.peft_config, model.peft_merged = config, False
    model.hadamard_folded = []        # what merge() changed, for unmerge()
    return model


def count(model):
    """(trainable parameters, deployed trainable parameters: each mixture as one expert). Folded into
    W_O by merge(), the adapters themselves add nothing at inference."""
    return model.num_parameters(trainable_only=True), peft.merged_parameter_count(model)


def _sites(model):
    """Per layer: (W_O's Linear, the adapter or mixture, its position, the module and attribute that hold
    the adapter, and what that attribute becomes without it)."""
    sites = []
    for block in peft._transformer(model).layers:
        wrapper = block.attention.output
        if isinstance(wrapper, BeforeLinear):
            sites.append((wrapper.base, wrapper.adapter, "context", block.attention, "output", wrapper.base))
        elif block.attention_adapter is not None:
            sites.append((block.attention.output, block.attention_adapter, "output", block, "attention_adapter", None))
    return sites


def _mean_expert(adapter):
    """The adapter itself, or ONE Hadamard holding a mixture's mean scale and bias (exact, see 3)."""
    if not isinstance(adapter, adamix.Mixture):
        return adapter
    if adapter.inference == "random":
        raise ValueError("cannot merge a mixture in 'random' inference mode; set_inference_mode(model, "
                         "'average') or 'fixed' first")
    experts = adapter.experts if adapter.inference == "average" else [adapter.experts[adapter.fixed_expert]]
    mean = Hadamard(adapter.experts[0].in_features)
    mean.scale.data = sum(e.scale.data for e in experts) / len(experts)
    mean.bias.data = sum(e.bias.data for e in experts) / len(experts)
    return mean


def deploy(model):
    """Each mixture replaced by ONE Hadamard holding its experts' mean scale and bias, in place (exact,
    see 3): the deployed adapter is d + d numbers per layer, as a single Hadamard adapter's, and its
    numbers stay trainable parameters, so save_adapter writes them. (peft.merge calls this first.)"""
    for block in peft._transformer(model).layers:
        wrapper = block.attention.output
        if isinstance(wrapper, BeforeLinear) and isinstance(wrapper.adapter, adamix.Mixture):
            wrapper.adapter = _mean_expert(wrapper.adapter)
        elif isinstance(block.attention_adapter, adamix.Mixture):
            block.attention_adapter = _mean_expert(block.attention_adapter)
    return model


def merge(model):
    """Fold every adapter (a mixture: its experts' mean) into its layer's attention output projection
    and take it out of the forward pass; in place. unmerge(model) undoes it exactly."""
    for linear, adapter, position, holder, name, without in _sites(model):
        expert = _mean_expert(adapter)
        w, b = expert.scale.data, expert.bias.data
        W, b_O = linear.weight.data, linear.bias.data
        model.hadamard_folded.append((linear, W, b_O, holder, name, getattr(holder, name)))
        if position == "context":
            linear.weight.data, linear.bias.data = W * w[None, :], W @ b + b_O
        else:
            linear.weight.data, linear.bias.data = w[:, None] * W, w * b_O + b
        setattr(holder, name, without)
    model.peft_merged = True
    return model


def unmerge(model):
    """The original projections and the adapters (mixtures and all) back, as before merge()."""
    for linear, weight, bias, holder, name, adapter in reversed(model.hadamard_folded):
        linear.weight.data, linear.bias.data = weight, bias
        setattr(holder, name, adapter)
    model.hadamard_folded = []
    model.peft_merged = False
    return model
