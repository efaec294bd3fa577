"""AdaMix — Mixture-of-Adaptations (Wang et al., EMNLP 2022), top to bottom.

Read this file in order; each step names the section of docs/adamix.md it implements.

  1. A Mixture holds M experts of one Linear layer (adapter down/up projections, LoRA A/B).     (§1)
  2. Training: each forward call routes the WHOLE batch through ONE expert drawn uniformly at
     random from the host generator — a step costs what a single module costs.               (§3)
  3. Some projections are shared: one Linear instead of a Mixture (default: the up-projection /
     LoRA B).                                                                                (§5)
  4. Two forward passes with independent routes are tied by a symmetric-KL consistency loss;
     a low-memory variant keeps one pass's activations at a time by recomputing pass 2.     (§4)
  5. Inference: "average" — each Mixture acts as ONE Linear whose weights are the uniform mean of
     its experts' (AdaMix proper); "random" — a random expert per example; "fixed" — expert k.  (§6)
  6. merge(): replace every Mixture by that averaged Linear, so the deployed model has the size and
     cost of one adapter / LoRA.                                                             (§6, §8)
  7. Diagnostics a user of a mixture expects: how often each expert was routed, how far each moved
     from its start, and how far the experts drifted apart.

A Mixture is a drop-in replacement for a Linear: the Adapter and LoRALinear of peft.py hold either.
"""
from . import backend
from . import functional as F
from .backend import xp
from .nn import Linear, Module, ModuleList, Parameter
from .tensor import Tensor, no_grad, stack

INFERENCE_MODES = ("average", "random", "fixed")


class Route:
    """The expert index for one forward pass, shareable between mixtures: AdaMix-LoRA's query and
    value A-mixtures of a layer use the same index (the query's mixture draws it, the value's
    reads it; Attention computes the query first)."""

    def __init__(self):
        self.index = None  # an int in training; a host array of one index per example for "random"


# ---- 1-3. the mixture and its stochastic routing ---------------------------------------------------

class Mixture(Module):
    """M experts of one Linear layer; each call uses one of them, or their average."""

    def __init__(self, experts, route=None):
        if len(experts) < 1:
            raise ValueError("a Mixture needs at least one expert")
        self.experts = ModuleList(experts)
        self.num_experts = len(experts)
        self.draws_route = route is None          # the owner of a route draws; the others follow it
        self.route = route if route is not None else Route()
        self.inference = "average"
        self.fixed_expert = 0
        self.route_counts = [0] * self.num_experts   # training calls routed to each expert (diagnostics)

    def forward(self, x):
        if self.training:
            if self.draws_route:                                     # §3: one draw per call, whole batch
                self.route.index = backend.host_choice(self.num_experts)
            self.route_counts[self.route.index] += 1
            return self.experts[self.route.index](x)
        if self.inference == "average":
            return F.linear(x, *self.averaged_weights())
        if self.inference == "fixed":
            return self.experts[self.fixed_expert](x)
        return self._random_per_example(x)

    def averaged_weights(self):
        """(mean of the experts' weights, mean of their biases or None): recomputed at every call,
        so it always reflects the current experts (never a cached, stale copy)."""
        weight = stack([e.weight for e in self.experts]).mean(axis=0)       # (out, in)
        has_bias = self.experts[0].bias is not None
        bias = stack([e.bias for e in self.experts]).mean(axis=0) if has_bias else None
        return weight, bias

    def _random_per_example(self, x):
        """Inference with a random expert for each example (the official code's default flag)."""
        batch = x.shape[0]
        if self.draws_route:
            self.route.index = backend.host_rng.integers(self.num_experts, size=batch)
        index = backend.from_numpy(self.route.index)                        # (B,)
        weights = stack([e.weight for e in self.experts])[index]            # (B, out, in)
        squeeze = x.ndim == 2
        h = x.reshape(batch, 1, x.shape[-1]) if squeeze else x              # (B, T, in)
        out = h @ weights.transpose(0, 2, 1)                                # (B, T, out)
        if self.experts[0].bias is not None:
            biases = stack([e.bias for e in self.experts])[index]           # (B, out)
            out = out + biases.reshape(batch, 1, -1)
        return out.reshape(batch, -1) if squeeze else out

    def averaged(self):
        """§6: ONE Linear holding the uniform mean of the experts' weights and biases."""
        first = self.experts[0]
        merged = Linear(first.in_features, first.out_features, bias=first.bias is not None)
        weight, bias = self.averaged_weights()
        trainable = first.weight.requires_grad
        merged.weight = Parameter(weight.data.copy(), requires_grad=trainable)
        if bias is not None:
            merged.bias = Parameter(bias.data.copy(), requires_grad=trainable)
        return merged


EXPERT_INITS = ("official", "independent", "identical")


def make_mixture(make_expert, num_experts, expert_init="independent", route=None):
    """M experts from `make_expert()`: each initialised on its own (the official adapter code), or
    M identical copies of the first (the official LoRA code's deep copy after init, §7). Which one
    "official" means depends on the module, so peft.py resolves it before calling this."""
    if num_experts < 1:
        raise ValueError(f"num_experts must be at least 1, got {num_experts}")
    if expert_init not in ("independent", "identical"):
        raise ValueError(f"expert_init must be 'independent' or 'identical', got {expert_init!r}")
    experts = [make_expert() for _ in range(num_experts)]
    if expert_init == "identical":
        for expert in experts[1:]:
            expert.load_state_dict(experts[0].state_dict())
    return Mixture(experts, route)


def mixtures(model):
    """Every Mixture inside a model."""
    return [m for _, m in model.named_modules() if isinstance(m, Mixture)]


# ---- 4. consistency regularisation -----------------------------------------------------------------

def consistency_loss(logits_1, logits_2, target_mask=None):
    """§4: symmetric KL between the two passes' predictions, each side's target detached.
    Classification: logits (B, classes). Language modelling: logits (B, T, V) with target_mask (B, T)
    marking the target tokens — the KL is averaged over those tokens only (each target position
    weighs 1 / number of targets, every other position 0)."""
    if target_mask is None:
        return F.symmetric_kl(logits_1, logits_2)
    count = int(target_mask.sum())                  # a host mask: counting it costs the GPU nothing
    if count == 0:
        raise ValueError("target_mask marks no target token: the consistency loss would be 0 / 0")
    weights = backend.from_numpy(target_mask.astype("float32") / count)      # (B, T)
    return F.symmetric_kl(logits_1, logits_2, weights)


def two_pass_loss(forward, task_loss, consistency_weight, target_mask=None):
    """One AdaMix training objective: pass 1 carries the task loss; pass 2 (same batch, fresh routes
    and dropout) only enters through the consistency term.
        loss = task_loss(z1) + weight * symKL(z1, z2)
    Returns (loss, task, consistency) — the last two as tensors for logging."""
    logits_1 = forward()
    task = task_loss(logits_1)
    if consistency_weight == 0:
        return task, task, None
    logits_2 = forward()
    consistency = consistency_loss(logits_1, logits_2, target_mask)
    return task + consistency * consistency_weight, task, consistency


def two_pass_backward(forward, task_loss, consistency_weight, target_mask=None, low_memory=False):
    """two_pass_loss(...) and its backward. Returns (loss, task, consistency), detached.
    low_memory=True keeps ONE pass's activations alive at a time instead of two — the same gradients
    for the price of one more forward pass (recomputation):
      1. pass 1, recording its graph -> z1
      2. pass 2 without a graph -> z2; its routes' generator state and its dropout masks are kept
      3. the loss on detached copies of z1 and z2 -> backward gives dLoss/dz1 and dLoss/dz2
         (cheap: it touches the logits only)
      4. pass 1's backward from dLoss/dz1; its activations are freed
      5. pass 2 again, with its graph, replaying the same routes and dropout masks, so it computes
         the same z2 -> its backward from dLoss/dz2"""
    detached = lambda *tensors: tuple(t if t is None else t.detach() for t in tensors)
    if not low_memory or consistency_weight == 0:
        loss, task, consistency = two_pass_loss(forward, task_loss, consistency_weight, target_mask)
        loss.backward()
        return detached(loss, task, consistency)
    logits_1 = forward()
    routes, masks = backend.host_rng.bit_generator.state, []
    with no_grad(), F.dropout_tape(masks):
        z2 = forward().data
    leaf_1, leaf_2 = Tensor(logits_1.data, requires_grad=True), Tensor(z2, requires_grad=True)
    leaves = iter((leaf_1, leaf_2))
    loss, task, consistency = two_pass_loss(lambda: next(leaves), task_loss, consistency_weight, target_mask)
    loss.backward()
    logits_1.backward(leaf_1.grad)
    del logits_1                                                  # pass 1's graph is released
    backend.host_rng.bit_generator.state = routes                 # the same route draws again ...
    with F.dropout_tape(masks, replay=True):                      # ... and the same dropout masks
        logits_2 = forward()
    logits_2.backward(leaf_2.grad)
    return detached(loss, task, consistency)


# ---- 5. inference modes ----------------------------------------------------------------------------

def set_inference_mode(model, mode, expert=0):
    """How every Mixture behaves in eval mode: "average" (AdaMix proper), "random", or "fixed"."""
    if mode not in INFERENCE_MODES:
        raise ValueError(f"unknown inference mode {mode!r}: choose one of {INFERENCE_MODES}")
    for mixture in mixtures(model):
        if not 0 <= expert < mixture.num_experts:
            raise ValueError(f"fixed expert {expert} does not exist: the mixtures have "
                             f"{mixture.num_experts} experts")
        mixture.inference, mixture.fixed_expert = mode, expert


# ---- 6. merging ------------------------------------------------------------------------------------

def merge_experts(model):
    """Replace every Mixture in the model, in place, by ONE Linear with its experts' mean weights.
    Afterwards the model holds a single adapter / LoRA per site: one module's parameters and cost."""
    count = 0
    for _, parent in list(model.named_modules()):
        for name, child in list(vars(parent).items()):
            if isinstance(child, Mixture):
                setattr(parent, name, child.averaged())
                count += 1
    return count


# ---- 7. diagnostics --------------------------------------------------------------------------------

def term_gradient_norms(forward, task_loss, consistency_weight, parameters, target_mask=None):
    """(||gradient of the task term||, ||gradient of weight * consistency||), each from passes of its
    own (fresh routes): how much of a step the consistency term asks for. Leaves no gradient behind."""
    def norm_of(loss):
        loss.backward()
        total = float(xp.sqrt(sum((p.grad * p.grad).sum() for p in parameters if p.grad is not None)))
        for p in parameters:
            p.grad = None
        return total
    task = norm_of(task_loss(forward()))
    if consistency_weight == 0:
        return task, 0.0
    return task, norm_of(consistency_loss(forward(), forward(), target_mask) * consistency_weight)


def expert_weights(model):
    """{mixture name: [a copy of each expert's weight]}, on the device (no transfer): the starting
    points for routing_report."""
    return {name: [e.weight.data.copy() for e in m.experts]
            for name, m in model.named_modules() if isinstance(m, Mixture)}


def routing_report(model, start=None):
    """Per mixture: how many training calls each expert got, and how far the experts are apart — the
    mean distance of an expert from the experts' mean, relative to the mean's norm ("spread"; 0 for
    identical experts) — and, given `start` (expert_weights before training), the distance each
    expert moved ("moved", in weight units) and the distance their mean moved ("mean_moved": how far
    the merged module went). Every distance is computed on the device; all come back in ONE transfer."""
    norm = lambda a: xp.sqrt((a * a).sum()).reshape(1)
    found, pieces = [], []
    for name, mixture in model.named_modules():
        if not isinstance(mixture, Mixture):
            continue
        weights = [e.weight.data for e in mixture.experts]
        mean = sum(weights) / len(weights)
        row = [norm(mean)] + [norm(w - mean) for w in weights]
        if start is not None:
            row += [norm(w - w0) for w, w0 in zip(weights, start[name])]
            row.append(norm(mean - sum(start[name]) / len(weights)))
        found.append((name, mixture))
        pieces += row
    if not pieces:
        return {}
    values, report = iter(backend.to_numpy(xp.concatenate(pieces)).tolist()), {}
    for name, mixture in found:
        M = mixture.num_experts
        mean_norm, apart = next(values), [next(values) for _ in range(M)]
        report[name] = {"route_counts": list(mixture.route_counts), "spread": sum(apart) / M / max(mean_norm, 1e-12)}
        if start is not None:
            report[name]["moved"] = [next(values) for _ in range(M)]
            report[name]["mean_moved"] = next(values)
    return report
