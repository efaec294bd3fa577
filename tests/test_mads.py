"""tinymix/experiments/mads.py: mesh adaptive direct search finds known minima within its budget,
respects the box, integers and the budget, and never evaluates a point twice."""
import math

import pytest

from tinymix.experiments import mads
from tinymix.experiments.mads import Variable, minimise


def counted(f):
    calls = []

    def wrapped(x):
        calls.append(tuple(x))
        return f(x)
    return wrapped, calls


def test_a_one_dimensional_quadratic_is_found_to_the_mesh():
    f, calls = counted(lambda x: (x[0] + 3.2) ** 2)             # a learning rate's log10, say
    result = minimise(f, [Variable("log10_lr", -5, -2)], start=[-4.5], budget=30)
    assert abs(result.best_x[0] + 3.2) < 0.01 and result.best_f < 1e-4
    assert len(calls) == len(set(calls)) == len(result.history) <= 30


def test_rosenbrock_in_two_dimensions():
    rosenbrock = lambda x: 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2
    result = minimise(rosenbrock, [Variable("a", -2, 2), Variable("b", -2, 2)], start=[-1.2, 1.0],
                      budget=600, min_poll_size=1e-6)
    assert result.best_f < 1e-2 and math.dist(result.best_x, [1, 1]) < 0.2, result


def test_a_minimum_on_the_boundary_and_nothing_evaluated_outside_the_box():
    f, calls = counted(lambda x: x[0] + x[1])                    # minimum at the corner (0, 1)
    result = minimise(f, [Variable("a", 0, 3), Variable("b", 1, 4)], start=[2.0, 3.0], budget=80)
    assert all(0 <= a <= 3 and 1 <= b <= 4 for a, b in calls)
    assert result.best_f < 1.0 + 0.02


def test_an_integer_variable_takes_integer_values_and_its_best():
    f, calls = counted(lambda x: (x[0] - 7) ** 2 + (x[1] - 0.3) ** 2)
    result = minimise(f, [Variable("experts", 1, 16, integer=True), Variable("w", 0, 1)],
                      start=[2, 0.9], budget=60)
    assert all(float(c[0]).is_integer() for c in calls)
    assert result.best_x[0] == 7 and abs(result.best_x[1] - 0.3) < 0.02


def test_the_budget_is_the_number_of_evaluations():
    f, calls = counted(lambda x: math.sin(5 * x[0]) + x[0] ** 2)
    result = minimise(f, [Variable("a", -2, 2)], start=[1.5], budget=7)
    assert len(calls) == 7 and result.stopped == "budget"
    assert result.best_f == min(v for _, v, _ in result.history)


def test_it_stops_when_the_frame_is_smaller_than_asked():
    result = minimise(lambda x: abs(x[0]), [Variable("a", -1, 1)], start=[0.0], budget=1000, min_poll_size=1e-2)
    assert result.stopped == "poll size" and len(result.history) < 40


def test_poll_directions_span_every_direction_positively():
    """Every unit vector is within 90 degrees of some poll direction (a positive spanning set), for
    every iteration's reflection."""
    for n in (1, 2, 3):
        for iteration in range(20):
            directions = mads.poll_directions(n, iteration)
            assert len(directions) == 2 * n
            for i in range(n):                                   # orthonormal columns
                for j in range(n):
                    dot = sum(a * b for a, b in zip(directions[i], directions[j]))
                    assert abs(dot - (i == j)) < 1e-12


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="high"):
        Variable("a", 1, 1)
    with pytest.raises(ValueError, match="budget"):
        minimise(lambda x: 0, [Variable("a", 0, 1)], start=[0.5], budget=0)
    with pytest.raises(ValueError, match="min_poll_size"):
        minimise(lambda x: 0, [Variable("a", 0, 1)], start=[0.5], budget=3, min_poll_size=0)
    with pytest.raises(ValueError, match="outside the box"):
        minimise(lambda x: 0, [Variable("a", 0, 1)], start=[2.0], budget=3)
