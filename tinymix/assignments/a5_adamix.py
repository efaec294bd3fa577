"""A5: AdaMix. Student file: lessons/assignments/a5_adamix.py."""
from .. import adamix, backend
from .. import functional as F
from ..grading.compare import describe, integer
from ..nn import Linear, Module
from ..tensor import Tensor
from .checks import Case, Generator, Leaf, Mismatch, _linear, _shape


# ---- A5: AdaMix --------------------------------------------------------------------------------------

def stochastic_route(num_experts, rng):
    """AdaMix's routing decision (docs/adamix.md section 3): the ONE expert that the whole batch goes
    through on this forward call, uniform over 0 .. num_experts - 1, drawn from the host generator
    `rng` (a numpy.random.Generator) with one rng.integers draw, as the library's Mixture draws from
    backend.host_rng: a seed then gives the library's routes, on every backend. Returns an int."""
    return int(rng.integers(num_experts))


def _route_cases(draw):
    checks = [Case(f"50 routes among {n} experts, generator seed {k}", (n, draw.state(k)), repeat=50)
              for n, k in [(4, 0), (8, 1), (1, 2)]]
    checks.append(_mixture_case(draw))
    checks.append(Case("uniform: 4000 routes among 5 experts", (5, draw.state(3)), repeat=4000, expected=None,
                       judge=_uniform_routes))
    return checks


def _mixture_case(draw):
    """The routes a library Mixture in training draws, and the generator state it draws them from."""
    backend.manual_seed(0 if draw.seed is None else [draw.seed, 0])
    mixture = adamix.Mixture([Linear(3, 2) for _ in range(4)]).train()
    state = Generator(backend.host_rng.bit_generator.state)    # the state the mixture is about to draw from
    x = Tensor(draw.rand((2, 3), 0))
    routes = []
    for _ in range(20):
        mixture(x)
        routes.append(mixture.route.index)
    backend.manual_seed(0)
    return Case("the routes of an adamix.Mixture in training, same generator state", (4, state), repeat=20,
                expected=routes, judge=_same_routes)


def _same_routes(expected, got):
    for call, (route, drawn) in enumerate(zip(expected, got)):
        if integer(drawn) != route:
            raise Mismatch(f"forward call {call}: the Mixture routed to expert {route}, your draw from the "
                           f"same generator state gave {describe(drawn)}")


def _uniform_routes(expected, got):
    bad = [r for r in got if integer(r) is None or not 0 <= integer(r) < 5]
    if bad:
        raise Mismatch(f"a route must be an int in 0 .. 4, got {describe(bad[0])}")
    counts = [sum(integer(r) == e for r in got) for e in range(5)]
    if not all(700 <= c <= 900 for c in counts):   # 800 expected, standard deviation about 25
        raise Mismatch(f"routes are not uniform: expert counts {counts}, expected about 800 each")


def average_experts(weights):
    """The uniform mean of M experts' weights: the one weight with which an AdaMix Mixture acts in
    "average" inference (docs/adamix.md section 6). weights: a list of M Tensors of one shape (out, in).
    Returns a Tensor (out, in) through which gradients reach every expert."""
    return adamix.Mixture([_linear(w) for w in weights]).averaged_weights()[0]


def _average_cases(draw):
    return [Case(f"{m} experts of {_shape(shape)}",
                 ([Leaf(draw.rand(shape, 10 * i + e), f"expert {e}") for e in range(m)],), gradients=True)
            for i, (m, shape) in enumerate([(4, (3, 5)), (1, (2, 2)), (3, (4, 1))])]


def symmetric_kl(p_logits, q_logits):
    """AdaMix's consistency loss (docs/adamix.md section 4) between two passes' logits, Tensors (N, C):

        0.5 * [ KL(softmax(q) || softmax(p)) + KL(softmax(p) || softmax(q)) ]

    each KL summed over the classes and averaged over the N rows. In each direction the target (the
    left distribution) is a constant: no gradient flows through it. Returns a scalar Tensor."""
    return F.symmetric_kl(p_logits, q_logits)


def _symmetric_kl_cases(draw):
    checks = []
    for i, (shape, scale, same) in enumerate([((4, 3), 1.0, False), ((2, 5), 3.0, False), ((1, 2), 1.0, False),
                                              ((3, 4), 1.0, True)]):
        p = draw.rand(shape, 2 * i, scale)
        q = p.copy() if same else draw.rand(shape, 2 * i + 1, scale)
        checks.append(Case(f"p, q {_shape(shape)} (scale {scale})" + (", p == q" if same else ""),
                           (Leaf(p, "p"), Leaf(q, "q")), gradients=True))
    return checks


def adamix_loss(logits_1, logits_2, targets, consistency_weight):
    """The AdaMix objective for one batch seen twice with independent routes (docs/adamix.md section 4):
    cross-entropy of pass 1's logits plus consistency_weight times the symmetric KL between the passes.
    Only pass 1 carries the task loss. logits_1, logits_2: Tensors (N, C); targets: (N,) integers.
    You may use tinymix.functional.cross_entropy and your symmetric_kl (Task A5.3). Returns a
    scalar Tensor."""
    passes = iter((logits_1, logits_2))
    loss, _, _ = adamix.two_pass_loss(lambda: next(passes), lambda z: F.cross_entropy(z, targets),
                                      consistency_weight)
    return loss


def _adamix_loss_cases(draw):
    return [Case(f"logits 4x3, consistency_weight={weight}", (Leaf(draw.rand((4, 3), 2 * i), "logits_1"),
                 Leaf(draw.rand((4, 3), 2 * i + 1), "logits_2"), draw.labels(4, 3, i), weight), gradients=True)
            for i, weight in enumerate((1.0, 0.0, 100.0))]


def merge_experts(expert_weights, expert_biases):
    """AdaMix merging (docs/adamix.md section 6): collapse a mixture of M Linear experts into ONE Linear
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


def _merge_cases(draw):
    checks = []
    for i, (m, out, d, bias) in enumerate([(4, 3, 5, True), (2, 4, 2, False), (1, 2, 3, True)]):
        weights = [draw.rand((out, d), 10 * i + e, 0.02, "float32") for e in range(m)]
        biases = [draw.rand((out,), 50 + 10 * i + e, 0.02, "float32") for e in range(m)] if bias else None
        label = "with biases" if bias else "expert_biases=None"
        checks.append(Case(f"{m} experts of {_shape((out, d))}, {label}", (weights, biases)))
    return checks
