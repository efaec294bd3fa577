"""AdaLoRA — Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning (Zhang, Chen, Bukharin, He,
Cheng, Chen, Zhao, ICLR 2023), top to bottom, as its official code (loralib's SVDLinear and RankAllocator)
and Hugging Face PEFT's AdaLoRA compute it.

    model = inject(SequenceClassifier(minilm, 2), AdaLoRAConfig(init_r=6, target_r=4, total_step=320))
    allocator = RankAllocator(model, model.peft_config)
    for step in range(320):
        loss = task_loss + orthogonal_regularizer(model, config.orth_reg_weight)
        loss.backward(); optimizer.step()
        allocator.update_and_allocate(model, step)      # after the step, BEFORE the gradients are cleared
        model.zero_grad()

1. The update is in SVD form. Each adapted Linear W (out, in) computes

        h = W x + b + (alpha / r) * P diag(lambda) Q x

   with P = lora_B (out, r) "left singular vectors", lambda = lora_E (r, 1) "singular values" and
   Q = lora_A (r, in) "right singular vectors"; r = init_r. Initialisation as the official code: P and Q
   ~ N(0, 0.02), lambda = 0, so the update starts at 0 while P and Q already carry gradient directions.
   The scaling is fixed at alpha / (init_r + 1e-5) for the whole run (the code's `ranknum` never changes
   when triplets are masked, and the 1e-5 is theirs: kept, so outputs match PEFT to float32 rounding).

2. P and Q are kept near-orthogonal by a regulariser added to the loss (the code's form: Frobenius norm,
   not squared, averaged over every P and Q matrix of the model):

        R = weight * mean over matrices ( ||Q Q^T - I||_F , ||P^T P - I||_F )

   weight 0.1 (the official GLUE scripts). PEFT's default is 0.5; set orth_reg_weight=0.5 for that.

3. Importance. After every optimizer step, while the gradients still exist, for every entry theta of
   P, lambda and Q:
        I = |theta * dL/dtheta|                     sensitivity (theta already updated, as in the code)
        I_bar <- beta1 I_bar + (1 - beta1) I        smoothed sensitivity
        U_bar <- beta2 U_bar + (1 - beta2) |I - I_bar|   uncertainty
        s = I_bar * U_bar
   Triplet i of a matrix scores  s(lambda_i) + mean_j s(Q_ij) + mean_j s(P_ji).

4. Budget: the number of triplets kept, counted over ALL adapted matrices together. With b0 = the sum of
   init_r and bT = target_r times the number of matrices, a cubic schedule over the total_step steps:
        b(t) = b0                                                    t <= tinit
        b(t) = int(bT + (b0 - bT) (1 - (t - tinit) / (T - tinit - tfinal))^3)    otherwise
        b(t) = bT                                                    t > T - tfinal
   Every deltaT steps in the middle phase, the lambda of every triplet whose score is at or below the
   (b0 - b)-th smallest score is set to 0. Masking only zeroes lambda: P and Q stay, and a masked
   lambda may grow back after the next step if its triplet becomes important again. At t = T - tfinal
   the allocation is final (PEFT's order: mask once more at bT, drop the scores); afterwards every step
   masks the same triplets.

5. merge(): fold (alpha / r) P diag(lambda) Q into W (zero added latency); unmerge() takes it out.
   Deployed, an adapter holds only its kept triplets: kept * (in + out + 1) numbers per matrix.

Deviations from the official code, and why:
- The phases follow PEFT's AdaLoraModel.update_and_allocate, which differs from loralib's only at
  t = T - tfinal, where PEFT always masks (loralib only if t is a multiple of deltaT); both keep the
  same final triplets, because the scores stop changing after t = T - tfinal - 1.
- A budget equal to b0 masks nothing. (PEFT's torch.kthvalue(k=0) would raise; loralib's too.)
- Ties: as in both codes, every triplet AT the threshold score is masked, so tied scores can mask
  more than asked; real scores are floats and practically never tie.
- Defaults: target_modules, alpha and dropout are those of tinymix's LoRAConfig, so AdaLoRA and LoRA
  differ only in what AdaLoRA changes; init_r, target_r, tinit, tfinal, deltaT, beta1 and beta2 are
  PEFT's AdaLoraConfig defaults; orth_reg_weight is the official 0.1, not PEFT's 0.5. At tinymix's scale
  (320 steps) scale the schedule down, e.g. tinit 30, tfinal 120, deltaT 10.
"""
from dataclasses import dataclass

from .. import backend, peft
from .. import functional as F
from ..backend import xp
from ..nn import Dropout, Module, Parameter
from ..tensor import Tensor


# ---- 1. the layer ------------------------------------------------------------------------------------

class SVDLinear(Module):
    """A frozen Linear plus  (alpha / r) P diag(lambda) Q dropout(x)  (lora_B, lora_E, lora_A)."""

    def __init__(self, base, rank, alpha, dropout):
        self.base = base
        self.rank = rank
        self.lora_A = Parameter(backend.host_normal((rank, base.in_features), 0.02))    # Q (r, in)
        self.lora_E = Parameter(xp.zeros((rank, 1), dtype=xp.float32))                  # lambda (r, 1)
        self.lora_B = Parameter(backend.host_normal((base.out_features, rank), 0.02))   # P (out, r)
        self.scaling = alpha / (rank + 1e-5)          # the official code's alpha / (ranknum + 1e-5)
        self.dropout = Dropout(dropout)
        self.kept = backend.host.ones(rank, dtype=bool)   # which triplets the allocator keeps (host)
        self.merged = False
        self.merged_update = None

    forward = peft.LoRALinear.forward         # the frozen Linear plus update(), unless merged

    def update(self, x):
        return F.linear(F.linear(self.dropout(x), self.lora_A * self.lora_E), self.lora_B) * self.scaling

    def delta_weight(self):
        """(alpha / r) P diag(lambda) Q, (out, in)."""
        return (self.lora_B.data @ (self.lora_A.data * self.lora_E.data)) * self.scaling

    merge = peft.LoRALinear.merge            # the same fold as LoRA's: W += delta_weight(), idempotent
    unmerge = peft.LoRALinear.unmerge


def svd_layers(model):
    """(name, SVDLinear) for every AdaLoRA layer of a model, in a fixed order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SVDLinear)]


# ---- 2. the orthogonality regulariser ------------------------------------------------------------

def _frobenius(m):
    """||m||_F, whose gradient is m / ||m||_F, and 0 at m = 0 (as torch.norm's) instead of 0 / 0."""
    a, norm = m._sink(), xp.sqrt((m.data * m.data).sum())

    def backward(g):
        a._accumulate(g * m.data / xp.where(norm > 0, norm, 1))
    return Tensor._make(norm, (m,), backward)


def orthogonal_regularizer(model, weight):
    """weight * the mean, over every Q (lora_A) and P (lora_B) of the model, of ||Q Q^T - I||_F and
    ||P^T P - I||_F: 0 when every Q has orthonormal rows and every P orthonormal columns."""
    terms = []
    for _, layer in svd_layers(model):
        Q, P = layer.lora_A, layer.lora_B
        eye = xp.eye(layer.rank, dtype=Q.dtype)
        terms += [_frobenius(Q @ Q.T - eye), _frobenius(P.T @ P - eye)]
    if not terms:
        raise ValueError("the model has no AdaLoRA layers: inject(model, AdaLoRAConfig(...)) first")
    return sum(terms[1:], terms[0]) * (weight / len(terms))


# ---- 3-4. importance scores and the budget -----------------------------------------------------------

class RankAllocator:
    """Importance scores of every triplet, the cubic budget schedule, and the masking of the least
    important lambdas. Call update_and_allocate(model, step) after each optimizer step."""

    PARTS = ("lora_A", "lora_E", "lora_B")

    def __init__(self, model, config):
        _check_schedule(config)
        self.config = config
        layers = svd_layers(model)
        if not layers:
            raise ValueError("the model has no AdaLoRA layers: inject(model, AdaLoRAConfig(...)) first")
        self.init_budget = sum(layer.rank for _, layer in layers)
        self.target_budget = config.target_r * len(layers)
        self.sensitivity, self.uncertainty = {}, {}    # (layer name, part) -> I_bar, U_bar (device)
        self.rank_pattern = None                       # {layer name: host bool array}, once allocated

    def budget(self, step):
        """(the number of triplets to keep at `step`, whether to mask at this step)."""
        c = self.config
        if step <= c.tinit:
            return self.init_budget, False
        if step > c.total_step - c.tfinal:
            return self.target_budget, True
        remaining = 1 - (step - c.tinit) / (c.total_step - c.tfinal - c.tinit)
        budget = int((self.init_budget - self.target_budget) * remaining ** 3 + self.target_budget)
        return budget, step % c.deltaT == 0

    def update_importance(self, model):
        """§3: one step of the two moving averages, from the parameters and their gradients."""
        b1, b2 = self.config.beta1, self.config.beta2
        for name, layer in svd_layers(model):
            for part in self.PARTS:
                p = getattr(layer, part)
                if p.grad is None:
                    raise RuntimeError(f"{name}.{part} has no gradient: call update_and_allocate after "
                                       "backward() and the optimizer step, before the gradients are cleared")
                key = (name, part)
                sensitivity = xp.abs(p.data * p.grad)
                smoothed = self.sensitivity.get(key, 0) * b1 + (1 - b1) * sensitivity
                self.uncertainty[key] = (self.uncertainty.get(key, 0) * b2
                                         + (1 - b2) * xp.abs(sensitivity - smoothed))
                self.sensitivity[key] = smoothed

    def triplet_scores(self, model):
        """{layer name: (r,) device array}: s(lambda_i) + mean_j s(Q_ij) + mean_j s(P_ji)."""
        if not self.sensitivity:
            raise RuntimeError("no importance scores yet: update_and_allocate must run from the first "
                               "step on, so that the scores exist before the first allocation")
        score = lambda name, part: self.sensitivity[name, part] * self.uncertainty[name, part]
        return {name: score(name, "lora_E").reshape(-1) + score(name, "lora_A").mean(axis=1)
                + score(name, "lora_B").mean(axis=0) for name, _ in svd_layers(model)}

    def mask_to_budget(self, model, budget):
        """Zero the lambda of every triplet scored at or below the (b0 - budget)-th smallest score, over
        all layers together. Returns the rank pattern {layer name: host bool array of kept triplets}."""
        scores = self.triplet_scores(model)
        drop = self.init_budget - budget
        if drop <= 0:
            keeps = {name: xp.ones(s.shape, dtype=bool) for name, s in scores.items()}
        else:
            threshold = xp.sort(xp.concatenate(list(scores.values())))[drop - 1]    # stays on the device
            keeps = {name: s > threshold for name, s in scores.items()}
        host_keeps = backend.to_numpy(xp.concatenate(list(keeps.values())))         # one transfer
        pattern, start = {}, 0
        for name, layer in svd_layers(model):
            layer.lora_E.data = xp.where(keeps[name].reshape(-1, 1), layer.lora_E.data, 0).astype(xp.float32)
            layer.kept = host_keeps[start:start + layer.rank]
            pattern[name], start = layer.kept, start + layer.rank
        return pattern

    def state_arrays(self, model):
        """Everything the allocator carries between steps, as named arrays for a checkpoint: the two
        moving averages of every entry, which triplets each layer keeps, and whether it has allocated."""
        arrays = {f"{kind}/{name}/{part}": value for kind, table in (("sensitivity", self.sensitivity),
                                                                     ("uncertainty", self.uncertainty))
                  for (name, part), value in table.items()}
        arrays.update({f"kept/{name}": layer.kept.astype("uint8") for name, layer in svd_layers(model)})
        arrays["allocated"] = backend.host.asarray([self.rank_pattern is not None], dtype="uint8")
        return arrays

    def load_state_arrays(self, model, arrays):
        """The inverse of state_arrays, checked against the model: a checkpoint of another model or
        schedule is refused with what differs."""
        layers = dict(svd_layers(model))
        want = {f"kept/{name}" for name in layers} | {"allocated"}
        if not want <= set(arrays) or any(arrays[f"kept/{n}"].shape != (l.rank,) for n, l in layers.items()):
            raise ValueError("the checkpoint's AdaLoRA state does not fit this model (other layers or ranks): "
                             "start again with --overwrite")
        tables = {"sensitivity": {}, "uncertainty": {}}
        for key, value in arrays.items():
            kind, _, rest = key.partition("/")
            if kind in tables:
                name, _, part = rest.rpartition("/")
                if name not in layers or part not in self.PARTS:
                    raise ValueError(f"the checkpoint's AdaLoRA state names {key!r}, which this model does not have")
                tables[kind][name, part] = backend.from_numpy(value)
        self.sensitivity, self.uncertainty = tables["sensitivity"], tables["uncertainty"]
        for name, layer in layers.items():
            layer.kept = arrays[f"kept/{name}"].astype(bool)
        self.rank_pattern = {name: layer.kept for name, layer in layers.items()} if arrays["allocated"][0] else None

    def update_and_allocate(self, model, step):
        """One call per training step, after the optimizer step and before the gradients are cleared.
        Returns (budget, rank pattern or None)."""
        final = self.config.total_step - self.config.tfinal
        if step < final:
            self.update_importance(model)
            budget, mask_now = self.budget(step)
            if mask_now:
                self.rank_pattern = self.mask_to_budget(model, budget)
                return budget, self.rank_pattern
            return budget, None
        if step == final:                          # the allocation becomes final; the scores are dropped
            self.rank_pattern = self.mask_to_budget(model, self.target_budget)
            self.sensitivity, self.uncertainty = {}, {}
            return self.target_budget, self.rank_pattern
        for name, layer in svd_layers(model):      # after it: always the same triplets
            keep = backend.from_numpy(self.rank_pattern[name].reshape(-1, 1))
            layer.lora_E.data = xp.where(keep, layer.lora_E.data, 0).astype(xp.float32)
        return self.target_budget, self.rank_pattern


# ---- configuration and injection ----------------------------------------------------------------------

@dataclass
class AdaLoRAConfig:
    init_r: int = 12                         # triplets per matrix at the start
    target_r: int = 8                        # average triplets per matrix at the end
    alpha: float = 32.0
    dropout: float = 0.1
    target_modules: tuple = ("query", "value")
    tinit: int = 0                           # steps before the budget starts to fall
    tfinal: int = 0                          # steps at the final budget, at the end
    deltaT: int = 1                          # steps between two allocations
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.1             # the official scripts' weight (PEFT's default: 0.5)
    total_step: int = None                   # required: the run's number of optimizer steps
    method = "adalora"


def _check_schedule(config):
    if config.total_step is None or config.total_step <= 0:
        raise ValueError("AdaLoRA needs total_step, the run's number of optimizer steps (a positive integer)")
    if config.tinit < 0 or config.tfinal < 0 or config.tinit >= config.total_step - config.tfinal:
        raise ValueError(f"AdaLoRA's schedule needs 0 <= tinit < total_step - tfinal, got tinit {config.tinit}, "
                         f"tfinal {config.tfinal}, total_step {config.total_step}")
    if config.deltaT < 1:
        raise ValueError(f"deltaT (steps between allocations) must be at least 1, got {config.deltaT}")
    for name in ("beta1", "beta2"):
        if not 0 < getattr(config, name) < 1:
            raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {getattr(config, name)}")


def _check(config, transformer):
    _check_schedule(config)
    if not 0 <= config.target_r <= config.init_r:
        raise ValueError(f"AdaLoRA needs 0 <= target_r <= init_r, got target_r {config.target_r}, "
                         f"init_r {config.init_r}")
    if config.orth_reg_weight < 0:
        raise ValueError(f"orth_reg_weight must be at least 0, got {config.orth_reg_weight}")
    if not 0 <= config.dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
    # the LoRA checks (known targets, 1 <= rank <= min(d_in, d_out)) hold for init_r as they do for LoRA's rank
    peft._check(peft.LoRAConfig(rank=config.init_r, target_modules=config.target_modules), transformer)


def inject(model, config):
    """Wrap each target Linear of every layer in an SVDLinear, freeze everything else except the task
    head, in place. Draws one number from the running generator, as peft.get_peft_model does, so the
    data order after it is the same for every method at one seed. Returns the model."""
    peft.require_fresh(model)
    transformer = peft._transformer(model)
    _check(config, transformer)
    model.requires_grad_(False)
    draw = int(backend.host_rng.integers(2**31))
    for index, block in enumerate(transformer.layers):
        for target in config.target_modules:
            holder, name = peft._lora_sites(block)[target]
            with peft._init_stream((draw, index, peft.LORA_TARGETS.index(target))):
                layer = SVDLinear(getattr(holder, name), config.init_r, config.alpha, config.dropout)
            setattr(holder, name, layer)
    if hasattr(model, "classifier"):
        model.classifier.requires_grad_(True)
    model.peft_config, model.peft_merged = config, False
    return model


# ---- 5. counting and merging ----------------------------------------------------------------------

def count(model):
    """(trainable parameters, deployed trainable parameters): deployed, each matrix keeps only its
    allocated triplets, (in + out + 1) numbers each."""
    trainable = model.num_parameters(trainable_only=True)
    dropped = sum(int((~layer.kept).sum()) * (layer.base.in_features + layer.base.out_features + 1)
                  for _, layer in svd_layers(model))
    return trainable, trainable - dropped


def deploy(model):
    """Zero the lambda of every triplet the allocation dropped, in place: weights restored from an epoch
    before the final allocation (a loop's best epoch) then hold the final budget that count() reports."""
    for _, layer in svd_layers(model):
        keep = backend.from_numpy(layer.kept.reshape(-1, 1))
        layer.lora_E.data = xp.where(keep, layer.lora_E.data, 0).astype(xp.float32)
    return model


def merge(model):
    """Fold every AdaLoRA update into its frozen weight, in place."""
    for _, layer in svd_layers(model):
        layer.merge()
    model.peft_merged = True
    return model


def unmerge(model):
    for _, layer in svd_layers(model):
        layer.unmerge()
    model.peft_merged = False
    return model
