"""tinymix/grading/compare.py judges a float answer at the scale of the expected values: rounding at
the near-zero entries of a large output passes, a real error at any size fails."""
import pytest

from tinymix.backend import host
from tinymix.grading import compare as grading_compare
from tinymix.grading.compare import Mismatch
from tinymix.grading.wire import Array


def compare(expected, got):
    """The grader's comparison of an answer `got` with the expected values, both host arrays."""
    grading_compare.compare(Array(expected), Array(got))


def test_rounding_at_the_near_zero_entries_of_a_large_output_passes():
    expected = host.array([100.0, -80.0, 3e-7, 0.0])
    got = expected + host.array([3e-4, -2e-4, 4e-6, -3e-6])      # sums of size 100 in another order
    compare(expected, got)


def test_a_real_error_fails_at_every_scale():
    for expected, wrong in ((host.array([100.0, 1.0]), host.array([100.0, 1.01])),
                            (host.array([1e-3, 2e-3]), host.array([1e-3, 2.1e-3])),
                            (host.array([0.0, 0.5]), host.array([1e-4, 0.5]))):
        with pytest.raises(Mismatch, match="values off by more than"):
            compare(expected, wrong)


def test_a_tiny_output_is_not_judged_below_the_absolute_floor():
    compare(host.array([1e-16, 0.0]), host.array([0.0, 1e-12]))     # float64 noise on exact zeros
