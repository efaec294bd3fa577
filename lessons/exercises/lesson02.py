"""Lesson 02's exercises: the best finite-difference step, and a fused op that passes gradcheck."""
from exercises import Exercise, Wrong


def _best_forward_step():
    """The step with the smallest forward-difference error for lesson 02's f at 0.4, in float64,
    measured over the same grid of steps as the lesson's figure."""
    from tinymix import Tensor
    from tinymix.backend import host, xp
    x = Tensor(0.4, requires_grad=True, dtype=xp.float64)
    ((x * 1.3).tanh() * x.exp()).backward()
    exact = float(x.grad)
    f = lambda v: xp.tanh(v * 1.3) * xp.exp(v)
    steps = host.logspace(-12, -0.5, 47)
    point = xp.asarray(0.4, dtype="float64")
    errors = [abs(float((f(point + e) - f(point)) / e) - exact) for e in steps]
    return float(steps[int(host.argmin(errors))])


def _verify_step(answer):
    try:
        step = float(answer)
    except (TypeError, ValueError):
        raise Wrong(f"the step should be a number, got {answer!r}") from None
    best = _best_forward_step()
    if not (step > 0 and best / 10 <= step <= best * 10):
        raise Wrong(f"{step:.0e} is more than a factor of 10 from the measured best step")


def _verify_cube(cube):
    from tinymix import Tensor, backend, gradcheck
    from tinymix.backend import xp
    x = Tensor(backend.host_normal((3, 4), 1.0), requires_grad=True)
    out = cube(x)
    if not isinstance(out, Tensor):
        raise Wrong(f"cube must return a Tensor (from Tensor._make), got {type(out).__name__}")
    if not xp.allclose(out.data, x.data ** 3, atol=1e-6):
        raise Wrong("cube(x) does not equal x ** 3")
    if tuple(out._parents) != (x,):
        raise Wrong(f"cube(x) is a chain of {len(out._parents)}-parent ops, not one node whose only parent is x")
    try:
        gradcheck(cube, x)
    except AssertionError as error:
        raise Wrong(f"gradcheck disagrees with your backward: {str(error)[:200]}") from None


EXERCISES = {
    "02.1": Exercise(
        task="the step e at which the forward difference in float64 is most accurate",
        verify=_verify_step,
        hint="minimise e/2 + u/e over e: set the derivative to zero"),
    "02.2": Exercise(
        task="cube(x) as one fused op with its own backward",
        verify=_verify_cube,
        hint="d(x^3)/dx = 3 x^2, so backward(g) accumulates g * 3 * x.data ** 2 into x; "
             "the op's parents are (x,)"),
}
