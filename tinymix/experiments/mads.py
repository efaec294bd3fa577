"""Mesh adaptive direct search (MADS): tuning a recipe by search, with a fixed budget of evaluations.

A run's validation score is a black box f(x) of its settings x (log10 of the learning rate, the
consistency weight, ...): no gradient, one evaluation costs a whole training run, and two evaluations
at the same x differ by the seed's noise. MADS (Audet & Dennis, 2006; the method the NOMAD solver
implements) minimises such an f with nothing but evaluations, and its rules are few:

  - Every variable lives in a box [low, high]; the search works on the box scaled to [0, 1]^n.
  - The POLL SIZE D (the frame) is the distance the next trial points lie from the best point x;
    the MESH SIZE d = min(D, D^2) is the grid every trial point is rounded to: x + d * (integers).
    Because d shrinks faster than D, more and more directions fit on the frame as D shrinks: in the
    limit the poll directions are dense, which is what MADS's convergence proof needs.
  - One ITERATION: an optional speculative search (after a success by a step s, go on by 2s, as the
    frame doubled), then the POLL: the 2n points x +- D * h_i, where h_1..h_n are the columns of an
    orthogonal matrix (a Householder reflection of a direction that changes every iteration:
    OrthoMADS), rounded to the mesh. The poll is opportunistic: it stops at the first point better than x.
  - Success (a better point): it becomes x and the frame grows, D <- 2D (at most 1).
    Failure (none better): D <- D / 2.
  - Points outside the box are never evaluated (the "extreme barrier": f = +inf). An integer variable
    is rounded to an integer, and its mesh never gets finer than 1.
  - A point already evaluated is looked up, not run again; the search stops when the evaluation
    budget is spent or D falls below `min_poll_size`.

    result = minimise(f, [Variable("log10_lr", -5, -2)], start=[-3.5], budget=12)
    result.best_x, result.best_f, result.history       # every evaluation, in order

Used by the experiment protocol to tune each arm's recipe with the SAME budget of evaluations.
"""
import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Variable:
    name: str
    low: float
    high: float
    integer: bool = False

    def __post_init__(self):
        if not self.high > self.low:
            raise ValueError(f"variable {self.name!r}: high ({self.high}) must be above low ({self.low})")


@dataclass
class Result:
    best_x: list
    best_f: float
    history: list = field(default_factory=list)     # [(x, f, what: "start" | "search" | "poll")]
    poll_size: float = 1.0
    stopped: str = ""                                 # "budget" or "poll size"


def halton(index, base):
    """The index-th element (index >= 1) of the van der Corput sequence in `base`: a well-spread number
    in (0, 1)."""
    value, fraction = 0.0, 1.0
    while index:
        fraction /= base
        index, digit = divmod(index, base)
        value += digit * fraction
    return value


PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def poll_directions(n, iteration):
    """2n directions: +- the columns of the Householder matrix H = I - 2 v v^T / |v|^2 for a
    quasi-random v that changes with the iteration. H is orthogonal, so the columns and their negatives
    span R^n positively (every direction of descent is within 90 degrees of one of them)."""
    if n > len(PRIMES):
        raise ValueError(f"at most {len(PRIMES)} variables")
    v = [2.0 * halton(iteration + 1, PRIMES[i]) - 1.0 for i in range(n)]
    norm2 = sum(c * c for c in v) or 1.0
    columns = [[(1.0 if i == j else 0.0) - 2.0 * v[i] * v[j] / norm2 for i in range(n)] for j in range(n)]
    return columns + [[-c for c in column] for column in columns]


def minimise(f, variables, start, budget, min_poll_size=1e-3, initial_poll_size=0.25):
    """Minimise f(x) (x: a list, one value per variable, in the variables' own units) with at most
    `budget` evaluations, starting from `start`. Returns a Result."""
    if budget < 1:
        raise ValueError(f"the budget must be at least one evaluation, not {budget}")
    if not 0 < min_poll_size <= initial_poll_size <= 1:
        raise ValueError(f"need 0 < min_poll_size ({min_poll_size}) <= initial_poll_size ({initial_poll_size}) <= 1")
    if len(start) != len(variables):
        raise ValueError(f"start has {len(start)} values for {len(variables)} variables")
    n = len(variables)
    spans = [v.high - v.low for v in variables]

    def to_unit(x):
        return [(x[i] - v.low) / spans[i] for i, v in enumerate(variables)]

    def from_unit(u, mesh):
        """Round the scaled point u to the mesh (and integers to integers), back in the variables' units."""
        x = []
        for i, v in enumerate(variables):
            step = max(mesh, 1.0 / spans[i]) if v.integer else mesh
            value = v.low + round(u[i] / step) * step * spans[i]
            x.append(float(round(value)) if v.integer else value)
        return x

    cache, history = {}, []
    result = Result(best_x=None, best_f=math.inf, history=history, poll_size=initial_poll_size)

    def evaluate(x, what):
        """f(x), or +inf outside the box; a point seen before is not run again. True on a new best."""
        key = tuple(round(c, 12) for c in x)
        if key in cache:
            return False
        if any(not v.low - 1e-12 <= c <= v.high + 1e-12 for v, c in zip(variables, x)):
            cache[key] = math.inf
            return False
        value = float(f(list(x)))
        cache[key] = value
        history.append((list(x), value, what))
        if value < result.best_f:
            result.best_x, result.best_f = list(x), value
            return True
        return False

    x0 = [float(round(c)) if v.integer else float(c) for v, c in zip(variables, start)]
    evaluate(x0, "start")
    if result.best_x is None:
        raise ValueError(f"the start {start} lies outside the box")
    poll, last_step, iteration = initial_poll_size, None, 0
    while len(history) < budget:
        if poll < min_poll_size:
            result.stopped = "poll size"
            break
        mesh = min(poll, poll * poll)
        centre = to_unit(result.best_x)
        success = False
        if last_step is not None:                                     # speculative search: go on
            success = evaluate(from_unit([c + 2 * s for c, s in zip(centre, last_step)], mesh), "search")
        for direction in ([] if success else poll_directions(n, iteration)):
            if len(history) >= budget:
                break
            trial = from_unit([c + poll * d for c, d in zip(centre, direction)], mesh)
            if evaluate(trial, "poll"):
                success = True
                break
        if success:
            new = to_unit(result.best_x)
            last_step = [a - b for a, b in zip(new, centre)]
            poll = min(1.0, 2.0 * poll)
        else:
            last_step = None
            poll /= 2.0
        iteration += 1
    else:
        result.stopped = "budget"
    result.poll_size = poll
    return result
