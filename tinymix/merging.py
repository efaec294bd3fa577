"""Merging operators: several updates of the same weights -> one update. And the question they let us ask
about AdaMix: is the plain mean of its experts (adamix.py §6) the best way to merge them?

Every operator takes n task vectors tau_1..tau_n of one shape (each an update: a fine-tuned weight minus
its start, theta_i - theta_0; a LoRA's update Delta W = (alpha / r) B A; an adapter's own weights, whose
start is "no adapter") and returns one update tau_m; the merged weights are theta_0 + tau_m. The scale
lambda of each is chosen on validation only (choose_scale, with a scoring function from the caller).

    mean             tau_m = lambda (1/n) sum_i tau_i                        (AdaMix's merge at lambda = 1)
    task-arithmetic  tau_m = lambda sum_i tau_i                              (Ilharco et al., ICLR 2023)
    ties             trim, elect a sign, disjoint mean; times lambda          (Yadav et al., NeurIPS 2023)
    pcb              balance, drop, rescale; times lambda                     (Du et al., NeurIPS 2024)

A LoRA is merged through its product Delta W = B A, never factor by factor: TIES or PCB applied to the
A's and B's separately is a different (and meaningless) operation, since (B1 + B2)(A1 + A2) != B1 A1 + B2 A2.

The AdaMix question (merge_mixtures): each mixture of M experts is one merging problem, its experts the
task vectors.
- AdaMix-LoRA (B shared): the experts' updates are Delta W_k = (alpha / r) B A_k. The mean is exact in
  the factors, mean_k B A_k = B mean_k A_k, and so is task arithmetic, sum_k B A_k = B sum_k A_k: both
  are written as ONE LoRA of rank r. TIES and PCB act entry by entry on Delta W_k, so their result has,
  in general, full rank: it is deployed as its best rank-r approximation (truncated SVD), the size of
  one LoRA, and the relative error of that truncation is reported. With no side shared, A and B draw
  their experts independently (adamix.py: one route per side), so the updates are all M x M products
  B_j A_k, whose mean is mean(B) mean(A): again the plain merge.
- AdaMix-adapter (up shared): the experts' down-projections (weight and bias, flattened into one vector
  per expert) are merged; the shared up-projection stays. The adapter has a GELU between its two
  projections, so no merge of the down-projections is exact; AdaMix's mean is one choice among these.

Deviations from the papers' released code, and why:
- TIES keeps k = int(k% x d) entries of each task vector (the paper's top-k%, and PEFT's count; ties at
  the threshold are all kept). The TIES authors' code keeps one more (it thresholds at the
  (d - k)-th smallest magnitude, inclusive). Its sign election sends a zero sum to the vector's
  majority sign; here to +1, as PEFT's "total" method does. Neither matters off ties and exact zeros.
- PCB follows the released code (its file pcb-merging.py), not the paper's equations where they
  differ: exp and tanh, where the paper writes a softmax. Where a min-max normalisation meets a constant
  row (max = min) the released code divides 0 by 0 (NaN); here that row normalises to 0 (a constant
  row carries no ranking). A keep ratio that leaves no entry of a task vector above its threshold is an
  error instead of NaN. The released code's PCB for NLP (task_para_att_merge) clips at 1%, not 0.01%,
  and its vision script balances against sum_j sign(tau_j) minmax(|tau_j|); neither is followed here.
- The released scripts flatten a whole model into one vector per task; here the unit is one mixture
  (one site), since AdaMix's expert k of one layer and expert k of another were never trained together
  (each layer draws its own route).
"""
import contextlib
import math

from . import adamix, backend, peft
from .backend import xp
from .nn import Linear, Parameter

OPERATORS = ("mean", "task-arithmetic", "ties", "pcb")
KEEP = {"ties": 0.2, "pcb": 0.1}      # the share of entries kept: TIES's k (its paper's 20%), PCB's ratio
                                     # (the default of its released pcb-merging.py)
MULTIPLIERS = (0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)   # the default grid of lambda (see default_grid)


def _stack(deltas):
    """The task vectors as one (n, d) float32 array, and the shape of one of them."""
    deltas = [xp.asarray(t, dtype=xp.float32) for t in deltas]
    if not deltas:
        raise ValueError("merging needs at least one task vector")
    shape = deltas[0].shape
    if any(t.shape != shape for t in deltas):
        raise ValueError(f"task vectors of different shapes cannot be merged: {sorted({t.shape for t in deltas})}")
    return xp.stack([t.reshape(-1) for t in deltas]), shape


def _per_task(weights, n):
    """Per-task weights as an (n, 1) column (all 1 when None)."""
    if weights is None:
        return xp.ones((n, 1), dtype=xp.float32)
    column = xp.asarray(weights, dtype=xp.float32).reshape(-1, 1)
    if column.shape[0] != n:
        raise ValueError(f"{column.shape[0]} weights for {n} task vectors")
    return column


# ---- mean and task arithmetic ---------------------------------------------------------------------------

def mean(deltas, scale=1.0):
    """tau_m = lambda (1/n) sum_i tau_i: AdaMix's merge (lambda = 1)."""
    stacked, shape = _stack(deltas)
    return (stacked.mean(axis=0) * xp.float32(scale)).reshape(shape)


def task_arithmetic(deltas, scale=1.0, weights=None):
    """tau_m = lambda sum_i w_i tau_i (w_i = 1 unless given). At lambda = 1/n it is the mean."""
    stacked, shape = _stack(deltas)
    weighted = stacked * _per_task(weights, len(stacked))
    return (weighted.sum(axis=0) * xp.float32(scale)).reshape(shape)


# ---- TIES: trim, elect sign, disjoint merge ------------------------------------------------------------

def trim(delta, density):
    """Keep the k = int(density * d) entries of largest magnitude, zero the rest (ties at the k-th
    largest magnitude are all kept). density 1 keeps everything; k = 0 keeps nothing."""
    delta = xp.asarray(delta, dtype=xp.float32)
    d = delta.size
    k = int(density * d)
    if k >= d:
        return delta.copy()
    if k <= 0:
        return xp.zeros_like(delta)
    magnitude = xp.abs(delta)
    threshold = xp.partition(magnitude.reshape(-1), d - k)[d - k]       # the k-th largest magnitude
    return xp.where(magnitude >= threshold, delta, xp.float32(0))


def elect_sign(trimmed):
    """gamma = sgn(sum_i trimmed_i), entry by entry, over the stacked (n, ...) trimmed vectors: the sign
    with more total mass wins; a sum of exactly 0 elects +1."""
    return xp.where(trimmed.sum(axis=0) >= 0, xp.float32(1), xp.float32(-1))


def disjoint_mean(trimmed, sign, weights=None):
    """tau_m^p = sum_{i in A^p} w_i trimmed_i^p / |A^p|,  A^p = {i : sgn(trimmed_i^p) = gamma^p}: the mean
    over the tasks that agree with the elected sign (a trimmed 0 agrees with no sign); 0 where none does."""
    agree = (xp.sign(trimmed) == sign).astype(xp.float32)
    weighted = trimmed.reshape(len(trimmed), -1) * _per_task(weights, len(trimmed))
    total = (weighted.reshape(trimmed.shape) * agree).sum(axis=0)
    return total / xp.maximum(agree.sum(axis=0), xp.float32(1))


def ties(deltas, scale=1.0, density=KEEP["ties"], weights=None):
    """TIES-merging:
        trimmed_i = keep the top-k% magnitudes of tau_i            (trim, k% = density)
        gamma     = sgn(sum_i trimmed_i)                           (elect_sign)
        tau_m     = lambda mean_{i: sgn(trimmed_i) = gamma} w_i trimmed_i   (disjoint_mean)
    With per-task weights w_i, as PEFT: the sign is elected on the unweighted trimmed vectors."""
    stacked, shape = _stack(deltas)
    trimmed = xp.stack([trim(t, density) for t in stacked])
    merged = disjoint_mean(trimmed, elect_sign(trimmed), weights)
    return (merged * xp.float32(scale)).reshape(shape)


# ---- PCB-merging: intra- and inter-balancing, drop, rescale ------------------------------------------

def clip_quantiles(rows, low, high):
    """Each row of `rows` (n, d) clamped between its own sorted values at positions int(d * low) and
    int(d * (1 - high) - 1): the released code's index rule, kept exactly (so with d < 1 / high the
    largest entry is clamped to the second largest)."""
    d = rows.shape[1]
    ordered = xp.sort(rows, axis=1)
    lowest = ordered[:, int(d * low)].reshape(-1, 1)
    highest = ordered[:, int(d * (1 - high) - 1)].reshape(-1, 1)
    return xp.minimum(xp.maximum(rows, lowest), highest)


def minmax_rows(rows):
    """(x - min) / (max - min) within each row; a constant row gives 0 (the released code: NaN)."""
    low = rows.min(axis=1, keepdims=True)
    span = rows.max(axis=1, keepdims=True) - low
    return xp.where(span > 0, (rows - low) / xp.where(span > 0, span, xp.float32(1)), xp.float32(0))


def pcb_balance(tau, clip=1e-4):
    """The PCB matrix of stacked task vectors tau (n, d), as the released code computes it:
        |tau|~    = |tau| clipped to each row's [clip, 1 - clip] quantiles   (clip_quantiles)
        intra_i   = exp(n * minmax(|tau_i|~)^2)                   self-awareness: large entries of a task
        inter_i   = tanh(tau_i * sum_j tau_j)                     cross-awareness: agreement with the sum
        beta_i    = intra_i * inter_i
    Returns (sgn(tau) |tau|~, beta). inter uses the unclipped tau, as the released code does; tanh of a
    product of updates depends on their units (small updates give tanh(x) ~ x)."""
    n = tau.shape[0]
    magnitude = clip_quantiles(xp.abs(tau), clip, clip)
    intra = xp.exp(xp.float32(n) * minmax_rows(magnitude) ** 2)
    inter = xp.tanh(tau * tau.sum(axis=0))
    return xp.sign(tau) * magnitude, intra * inter


def pcb_drop(beta, ratio):
    """Drop and rescale: each row of beta (n, d) clamped from below at its sorted value at position
    int(d * (1 - ratio)), then min-max normalised, so the entries above that quantile get weights in
    (0, 1] and the rest exactly 0 (about the top `ratio` of each task vector is kept)."""
    d = beta.shape[1]
    if int(d * (1 - ratio)) > d - 2:
        raise ValueError(f"pcb with ratio {ratio:g} keeps no entry of a task vector of {d} entries (it keeps those "
                         f"above the sorted value at position int(d (1 - ratio)) = {int(d * (1 - ratio))}): give a "
                         f"ratio of at least {2 / d:.3g}")
    return minmax_rows(clip_quantiles(beta, 1 - ratio, 0))


def pcb(deltas, scale=1.0, ratio=KEEP["pcb"], clip=1e-4):
    """PCB-merging (Parameter Competition Balancing):
        (tau~, beta) = pcb_balance(tau)                           intra- and inter-balancing
        beta^        = pcb_drop(beta, ratio)                      drop all but the top ratio, rescale to [0, 1]
        tau_m        = lambda sum_i beta^_i tau~_i / max(sum_i beta^_i, 1e-12)
    Entries that every task dropped merge to 0."""
    stacked, shape = _stack(deltas)
    clipped, beta = pcb_balance(stacked, clip)
    weights = pcb_drop(beta, ratio)
    merged = (clipped * weights).sum(axis=0) / xp.maximum(weights.sum(axis=0), xp.float32(1e-12))
    return (merged * xp.float32(scale)).reshape(shape)


def merge(operator, deltas, scale=1.0, keep=None):
    """tau_m by the operator named `operator` (one of OPERATORS); `keep`: TIES's density or PCB's ratio
    (None: KEEP's default; mean and task arithmetic take none)."""
    check_operator(operator, keep)
    if operator == "mean":
        return mean(deltas, scale)
    if operator == "task-arithmetic":
        return task_arithmetic(deltas, scale)
    keep = KEEP[operator] if keep is None else keep
    return ties(deltas, scale, density=keep) if operator == "ties" else pcb(deltas, scale, ratio=keep)


def check_operator(operator, keep=None):
    """A clear ValueError for an unknown operator, or a keep share it does not take or cannot use."""
    if operator not in OPERATORS:
        raise ValueError(f"unknown merging operator {operator!r}: choose one of {', '.join(OPERATORS)}")
    if keep is None:
        return
    if operator not in KEEP:
        raise ValueError(f"--keep: {operator} keeps every entry (only ties and pcb drop some): leave --keep out")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"--keep must be a number in (0, 1], the share of each task vector's entries kept, got {keep!r}")


# ---- the scaling coefficient, chosen on validation ---------------------------------------------------

def default_grid(operator, n):
    """The lambdas to try for n task vectors. TIES and PCB average (their lambda = 1 is mean-like):
    MULTIPLIERS. Task arithmetic sums: MULTIPLIERS / n, centred on 1/n, where it is the mean. The mean
    itself: 1 alone. (The released scripts try 0.8-2.2 for TIES and PCB and 0.1-1.2 for task arithmetic,
    for n different tasks; these are n experts of one.)"""
    check_operator(operator)
    if operator == "mean":
        return (1.0,)
    divisor = n if operator == "task-arithmetic" else 1
    return tuple(round(m / divisor, 6) for m in MULTIPLIERS)


def parse_grid(text):
    """'0.5,1,1.5' -> (0.5, 1.0, 1.5); every value finite and > 0, none repeated."""
    try:
        values = tuple(float(part) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"--scale-grid must be comma-separated numbers, e.g. 0.5,1,1.5; got {text!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"--scale-grid must list distinct finite numbers > 0, got {text!r}")
    return values


def neutral_scale(operator, n):
    """The lambda at which an operator leaves the experts' scale alone: 1/n for task arithmetic (the mean),
    1 for the others."""
    return 1.0 / n if operator == "task-arithmetic" else 1.0


def choose_scale(grid, score, prefer=None):
    """Try every lambda of `grid` with score(lambda) -> a number (higher is better: a validation score,
    never a test one). Returns (the best lambda, [{"scale": lambda, "score": s}, ...] in grid order).
    Of equal best scores, the lambda nearest `prefer` wins (the first in the grid when None or equally near)."""
    if not grid:
        raise ValueError("the scale grid is empty")
    tried = [{"scale": float(s), "score": float(score(s))} for s in grid]
    top = max(t["score"] for t in tried)
    distance = lambda t: 0.0 if prefer is None else abs(t["scale"] - prefer)
    best = min((t for t in tried if t["score"] == top), key=distance)
    return best["scale"], tried


# ---- the AdaMix question: an operator instead of the mean ------------------------------------------------

def _lora_sites(model):
    """Every LoRALinear whose A or B is a mixture."""
    return [m for _, m in model.named_modules() if isinstance(m, peft.LoRALinear)
            and (isinstance(m.lora_A, adamix.Mixture) or isinstance(m.lora_B, adamix.Mixture))]


def _other_mixtures(model):
    """(parent, attribute, mixture) for every mixture outside a LoRALinear (an adapter's projection)."""
    return [(parent, name, child) for _, parent in model.named_modules() if not isinstance(parent, peft.LoRALinear)
            for name, child in list(vars(parent).items()) if isinstance(child, adamix.Mixture)]


def _experts(layer):
    """A side of a LoRA (a mixture, or one Linear shared by all experts) as a list of its weights."""
    if isinstance(layer, adamix.Mixture):
        return [e.weight.data for e in layer.experts]
    return [layer.weight.data]


def lora_updates(site):
    """The updates one LoRA site's experts apply, Delta W = (alpha / r) B_j A_k, for every pair a route can
    draw (a shared side has one member): M of them when one side is shared, M x M when none is."""
    return [(B @ A) * xp.float32(site.scaling) for B in _experts(site.lora_B) for A in _experts(site.lora_A)]


def _linear(weight, bias, trainable):
    layer = Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = Parameter(xp.ascontiguousarray(weight, dtype=xp.float32), requires_grad=trainable)
    if bias is not None:
        layer.bias = Parameter(xp.ascontiguousarray(bias, dtype=xp.float32), requires_grad=trainable)
    return layer


def _trainable(layer):
    return (layer.experts[0] if isinstance(layer, adamix.Mixture) else layer).weight.requires_grad


def _summed(layer, factor):
    """One Linear holding factor * the sum of a side's experts (the side itself when it is shared)."""
    weight = xp.stack(_experts(layer)).sum(axis=0) * xp.float32(factor)
    return _linear(weight, None, _trainable(layer))


def _lora_replacement(site, operator, scale, keep, full_rank=False):
    """(new A, new B, relative error of the rank-r truncation or None) for one LoRA site. full_rank: TIES's
    or PCB's update kept whole (factors of rank min(out, in): what folding it into W deploys), not cut to r."""
    if operator == "mean":          # mean_k B_j A_k = mean(B) mean(A): adamix's own average, unchanged
        average = lambda side: side.averaged() if isinstance(side, adamix.Mixture) else side
        return average(site.lora_A), average(site.lora_B), None
    if operator == "task-arithmetic":        # lambda sum_jk B_j A_k = (sum_j B_j)(lambda sum_k A_k): exact
        return _summed(site.lora_A, scale), _summed(site.lora_B, 1.0), None
    update = merge(operator, lora_updates(site), scale, keep)              # (out, in), any rank
    rank = _experts(site.lora_A)[0].shape[0]
    U, S, Vt = xp.linalg.svd(update / xp.float32(site.scaling), full_matrices=False)
    total = float(backend.to_numpy((S * S).sum()))
    dropped = float(backend.to_numpy((S[rank:] * S[rank:]).sum()))
    error = math.sqrt(dropped / total) if total > 0 else 0.0            # ||dW - dW_r||_F / ||dW||_F
    trainable = _trainable(site.lora_A)
    kept = S.shape[0] if full_rank else rank
    return (_linear(Vt[:kept], None, trainable), _linear(U[:, :kept] * S[:kept], None, trainable), error)


def _mixture_replacement(mixture, operator, scale, keep):
    """One Linear for an adapter's mixture: the operator on its experts' (weight, bias), flattened
    into one vector per expert."""
    if operator == "mean":
        return mixture.averaged()
    first = mixture.experts[0]
    has_bias = first.bias is not None
    vectors = [xp.concatenate([e.weight.data.reshape(-1)] + ([e.bias.data] if has_bias else []))
               for e in mixture.experts]
    merged = merge(operator, vectors, scale, keep)
    size = first.weight.data.size
    weight = merged[:size].reshape(first.weight.shape)
    return _linear(weight, merged[size:] if has_bias else None, first.weight.requires_grad)


def task_vector_count(model):
    """How many task vectors each merge of the model's mixtures combines: M, or M x M for a LoRA whose
    A and B are both mixtures (every pair B_j A_k)."""
    _require_adamix(model)
    counts = [len(_experts(s.lora_A)) * len(_experts(s.lora_B)) for s in _lora_sites(model)]
    counts += [mixture.num_experts for _, _, mixture in _other_mixtures(model)]
    return max(counts)


def _require_adamix(model):
    config = getattr(model, "peft_config", None)
    method = getattr(config, "method", None)
    if method != "adamix":
        raise ValueError(f"this model has no AdaMix mixture to merge (method {method!r}): merging combines the "
                         "experts of an adamix or adamix-lora model")
    if getattr(model, "peft_merged", False) or not adamix.mixtures(model):
        raise ValueError("this AdaMix model has no experts left (it is merged, or every side is shared): merge "
                         "the unmerged model (a run's best/ folder)")


def replacements(model, operator, scale=1.0, keep=None, full_rank=False):
    """What merge_mixtures writes, without writing it: ([(parent, attribute, new module)], report)."""
    check_operator(operator, keep)
    _require_adamix(model)
    changes, errors = [], {}
    names = {id(m): name for name, m in model.named_modules()}
    lora_sites, mixtures = _lora_sites(model), _other_mixtures(model)
    for site in lora_sites:
        new_A, new_B, error = _lora_replacement(site, operator, scale, keep, full_rank)
        changes += [(site, "lora_A", new_A), (site, "lora_B", new_B)]
        if error is not None:
            errors[names[id(site)]] = error
    for parent, name, mixture in mixtures:
        changes.append((parent, name, _mixture_replacement(mixture, operator, scale, keep)))
    report = {"operator": operator, "scale": float(scale), "sites": len(lora_sites) + len(mixtures)}
    if operator in KEEP:
        report["keep"] = KEEP[operator] if keep is None else keep
    if errors:
        report["rank_truncation_error"] = errors
    return changes, report


def merge_mixtures(model, operator, scale=1.0, keep=None):
    """Replace every AdaMix mixture, in place, by ONE module merged by `operator` at scale lambda (the
    deployed model: one adapter / LoRA per site, as adamix.merge_experts gives for the mean). Returns a
    report: operator, scale, keep, the sites changed and, for a LoRA merged by TIES or PCB, the relative
    error of each site's rank-r truncation."""
    changes, report = replacements(model, operator, scale, keep)
    for parent, name, module in changes:
        setattr(parent, name, module)
    model.peft_merged = True
    return report


@contextlib.contextmanager
def merged(model, operator, scale=1.0, keep=None, full_rank=False):
    """`with merged(model, "ties", 1.2) as report:` the model merged inside the block, its experts
    back afterwards (to score many lambdas on one model). full_rank: see _lora_replacement."""
    changes, report = replacements(model, operator, scale, keep, full_rank)
    originals = [(parent, name, getattr(parent, name)) for parent, name, _ in changes]
    for parent, name, module in changes:
        setattr(parent, name, module)
    model.peft_merged = True
    try:
        yield report
    finally:
        for parent, name, module in originals:
            setattr(parent, name, module)
        model.peft_merged = False
