"""A5: AdaMix. Student file: lessons/assignments/a5_adamix.py."""
import copy
import numbers

from .. import adamix, backend
from .. import functional as F
from ..nn import Linear, Module
from ..tensor import Tensor
from .checks import Compare, Mismatch, Verify, _linear, _shape, differentiate, labels, leaf, rand


# ---- A5: AdaMix --------------------------------------------------------------------------------------

def stochastic_route(num_experts, rng):
    """AdaMix's routing decision (adamix.md section 3): the ONE expert that the whole batch goes
    through on this forward call, uniform over 0 .. num_experts - 1, drawn from the host generator
    `rng` (a numpy.random.Generator) with one rng.integers draw, as the library's Mixture draws from
    backend.host_rng: a seed then gives the library's routes, on every backend. Returns an int."""
    return int(rng.integers(num_experts))


def _route_checks():
    checks = [Compare(f"50 routes among {n} experts, generator seed {seed}",
                      lambda fn, n=n, seed=seed: _routes(fn, n, seed, 50))
              for n, seed in [(4, 0), (8, 1), (1, 2)]]
    checks.append(Verify("the routes of an adamix.Mixture in training, same generator state",
                         _same_as_mixture))
    checks.append(Verify("uniform: 4000 routes among 5 experts", _uniform_routes))
    return checks


def _routes(fn, num_experts, seed, count):
    """`count` successive routes drawn by `fn` from one generator seeded with `seed`."""
    rng = backend.host_generator(seed)
    return [fn(num_experts, rng) for _ in range(count)]


def _same_as_mixture(fn):
    experts = [Linear(3, 2) for _ in range(4)]
    mixture = adamix.Mixture(experts).train()
    rng = copy.deepcopy(backend.host_rng)             # the state the mixture is about to draw from
    x = Tensor(rand((2, 3), 0))
    for call in range(20):
        mixture(x)
        got = fn(4, rng)
        if got != mixture.route.index:
            raise Mismatch(f"forward call {call}: the Mixture routed to expert {mixture.route.index}, "
                           f"your draw from the same generator state gave {got!r}")


def _uniform_routes(fn):
    routes = _routes(fn, 5, 3, 4000)
    bad = [r for r in routes if not (isinstance(r, numbers.Integral) and 0 <= r < 5)]
    if bad:
        raise Mismatch(f"a route must be an int in 0 .. 4, got {bad[0]!r} ({type(bad[0]).__name__})")
    counts = [routes.count(e) for e in range(5)]
    if not all(700 <= c <= 900 for c in counts):   # 800 expected, standard deviation about 25
        raise Mismatch(f"routes are not uniform: expert counts {counts}, expected about 800 each")


def average_experts(weights):
    """The uniform mean of M experts' weights: the one weight with which an AdaMix Mixture acts in
    "average" inference (adamix.md section 6). weights: a list of M Tensors of one shape (out, in).
    Returns a Tensor (out, in) through which gradients reach every expert."""
    return adamix.Mixture([_linear(w) for w in weights]).averaged_weights()[0]


def _average_checks():
    checks = []
    for i, (m, shape) in enumerate([(4, (3, 5)), (1, (2, 2)), (3, (4, 1))]):
        def run(fn, m=m, shape=shape, i=i):
            weights = [leaf(rand(shape, 10 * i + e)) for e in range(m)]
            return differentiate(fn(weights), **{f"expert {e}": w for e, w in enumerate(weights)})
        checks.append(Compare(f"{m} experts of {_shape(shape)}", run))
    return checks


def symmetric_kl(p_logits, q_logits):
    """AdaMix's consistency loss (adamix.md section 4) between two passes' logits, Tensors (N, C):

        0.5 * [ KL(softmax(q) || softmax(p)) + KL(softmax(p) || softmax(q)) ]

    each KL summed over the classes and averaged over the N rows. In each direction the target (the
    left distribution) is a constant: no gradient flows through it. Returns a scalar Tensor."""
    return F.symmetric_kl(p_logits, q_logits)


def _symmetric_kl_checks():
    cases = [((4, 3), 1.0, False), ((2, 5), 3.0, False), ((1, 2), 1.0, False), ((3, 4), 1.0, True)]
    checks = []
    for i, (shape, scale, same) in enumerate(cases):
        def run(fn, shape=shape, scale=scale, same=same, i=i):
            p = leaf(rand(shape, 2 * i, scale))
            q = leaf(p.data.copy() if same else rand(shape, 2 * i + 1, scale))
            return differentiate(fn(p, q), p=p, q=q)
        checks.append(Compare(f"p, q {_shape(shape)} (scale {scale})" + (", p == q" if same else ""), run))
    return checks


def adamix_loss(logits_1, logits_2, targets, consistency_weight):
    """The AdaMix objective for one batch seen twice with independent routes (adamix.md section 4):
    cross-entropy of pass 1's logits plus consistency_weight times the symmetric KL between the passes.
    Only pass 1 carries the task loss. logits_1, logits_2: Tensors (N, C); targets: (N,) integers.
    You may use tinymix.functional.cross_entropy and symmetric_kl. Returns a scalar Tensor."""
    passes = iter((logits_1, logits_2))
    loss, _, _ = adamix.two_pass_loss(lambda: next(passes), lambda z: F.cross_entropy(z, targets),
                                      consistency_weight)
    return loss


def _adamix_loss_checks():
    checks = []
    for i, weight in enumerate((1.0, 0.0, 100.0)):
        def run(fn, weight=weight, i=i):
            z1, z2 = leaf(rand((4, 3), 2 * i)), leaf(rand((4, 3), 2 * i + 1))
            return differentiate(fn(z1, z2, labels(4, 3, i), weight), logits_1=z1, logits_2=z2)
        checks.append(Compare(f"logits 4x3, consistency_weight={weight}", run))
    return checks


def merge_experts(expert_weights, expert_biases):
    """AdaMix merging (adamix.md section 6): collapse a mixture of M Linear experts into ONE Linear
    with the uniform mean of their weights and of their biases, as adamix.merge_experts does.
    expert_weights: a list of M arrays (out, in); expert_biases: a list of M arrays (out,), or None for
    experts without bias (LoRA's A and B). Returns (weight, bias): arrays, bias None without biases."""
    holder = Module()
    biases = expert_biases if expert_biases is not None else [None] * len(expert_weights)
    holder.mixture = adamix.Mixture([_linear(Tensor(w), None if b is None else Tensor(b))
                                     for w, b in zip(expert_weights, biases)])
    adamix.merge_experts(holder)                  # replaces holder.mixture by one Linear
    merged = holder.mixture
    return merged.weight.data, None if merged.bias is None else merged.bias.data


def _merge_checks():
    checks = []
    for i, (m, out, d, bias) in enumerate([(4, 3, 5, True), (2, 4, 2, False), (1, 2, 3, True)]):
        def run(fn, m=m, out=out, d=d, bias=bias, i=i):
            weights = [rand((out, d), 10 * i + e, 0.02, "float32") for e in range(m)]
            biases = [rand((out,), 50 + 10 * i + e, 0.02, "float32") for e in range(m)] if bias else None
            return fn(weights, biases)
        biases = "with biases" if bias else "expert_biases=None"
        checks.append(Compare(f"{m} experts of {_shape((out, d))}, {biases}", run))
    return checks
