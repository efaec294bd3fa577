"""tinymix/experiments/stats.py against worked examples: Student's t tails, the paired t-test's
p-value and its agreement with the 95% interval, Holm's correction (a published-style table), the
verdicts it changes, and a bootstrap that sees test-sampling variance."""
import math

import pytest

from tinymix.backend import host
from tinymix.experiments import stats


@pytest.mark.parametrize("t, df, tail", [(2.776, 4, 0.025), (12.706, 1, 0.025), (2.0, 10, 0.036694),
                                         (1.0, 30, 0.162654), (0.0, 3, 0.5), (-2.0, 10, 1 - 0.036694)])
def test_t_tails_match_the_table(t, df, tail):
    assert stats.t_tail(t, df) == pytest.approx(tail, abs=2e-5)


def test_p_below_five_per_cent_exactly_when_the_interval_excludes_zero():
    for differences in ([0.5, 0.9, 0.7, 1.1, 0.4], [0.5, -0.9, 0.7, 1.1, 0.4], [-0.2, -0.3, -0.25, -0.1, -0.35],
                        [0.1, 0.2, -0.05, 0.3, 0.0], [1.0, 1.01, 0.99, 1.02, 0.98]):
        interval = stats.paired_difference(dict(enumerate(differences)), dict.fromkeys(range(5), 0.0))
        p = stats.p_value(interval)
        excludes = interval["low"] > 0 or interval["high"] < 0
        assert (p < 0.05) == excludes, (differences, p, interval)


def test_a_known_paired_t_test():
    """d = (1, 2, 3, 4, 5) - 2.5: mean 0.5, sd 1.5811, t = 0.7071 with 4 df, two-sided p = 0.5185."""
    interval = stats.paired_difference({i: i + 1.0 for i in range(5)}, dict.fromkeys(range(5), 2.5))
    assert stats.p_value(interval) == pytest.approx(0.5185, abs=1e-4)


def test_equivalence_p_matches_the_interval_inside_or_wholly_outside_the_margin():
    """p < 0.05 exactly when the interval decides the claim: inside the margin (held) or wholly outside
    it (refuted); an interval across a margin's edge decides nothing."""
    for differences, margin in (([0.1, -0.2, 0.05, 0.0, 0.1], 1.0), ([0.1, -0.2, 0.05, 0.0, 0.1], 0.2),
                                ([2.0, 2.5, 1.5, 2.2, 1.8], 1.0), ([0.6, 0.9, 0.2, 1.1, 0.4], 1.0),
                                ([-2.0, -2.5, -1.5, -2.2, -1.8], 1.0)):
        interval = stats.paired_difference(dict(enumerate(differences)), dict.fromkeys(range(5), 0.0))
        inside = -margin < interval["low"] and interval["high"] < margin
        outside = interval["high"] < -margin or interval["low"] > margin
        assert stats.verdict(interval, "equivalent", margin) == ("held" if inside else "refuted" if outside
                                                                 else "inconclusive")
        assert (stats.p_value(interval, "equivalent", margin) < 0.05) == (inside or outside)


def test_a_refuted_equivalence_can_stand_after_holm():
    """An 'about equal' claim whose interval lies far outside its margin is refuted, and its p-value
    (of 'the difference is within the margin') is small enough to survive the family's correction."""
    far = stats.paired_difference(dict(enumerate([-5.9, -6.4, -5.1, -7.0, -5.0])), dict.fromkeys(range(5), 0.0))
    near = stats.paired_difference(dict(enumerate([0.3, -0.8, 0.5, -0.2, 1.0])), dict.fromkeys(range(5), 0.0))
    judged = stats.verdicts([(far, "equivalent", 1.0), (near, "greater", 0.0), (near, "greater", 0.0)])
    assert judged[0]["raw"] == "refuted" and judged[0]["verdict"] == "refuted" and judged[0]["p_holm"] < 0.05


def test_holm_on_a_known_table():
    """p = (0.01, 0.04, 0.03, 0.005): sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03,
    0.06, 0.04 -> made non-decreasing: 0.02, 0.03, 0.06, 0.06, given back in the original order."""
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    with_gap = stats.holm([0.2, None, 0.01])                     # an untested claim is not counted
    assert with_gap[1] is None and with_gap[0] == pytest.approx(0.2) and with_gap[2] == pytest.approx(0.02)
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]                  # capped at 1, never decreasing


def test_the_correction_turns_a_lone_win_among_many_claims_inconclusive():
    """Alone, a claim at p ~ 0.03 holds; among five claims, Holm needs p < 0.01 for the smallest."""
    weak = stats.paired_difference(dict(enumerate([0.3, 0.8, 0.1, 0.6, 0.45])), dict.fromkeys(range(5), 0.0))
    strong = stats.paired_difference(dict(enumerate([2.0, 2.2, 1.9, 2.1, 2.05])), dict.fromkeys(range(5), 0.0))
    null = stats.paired_difference(dict(enumerate([0.3, -0.4, 0.1, -0.2, 0.15])), dict.fromkeys(range(5), 0.0))
    assert 0.01 < stats.p_value(weak) < 0.05 and stats.verdict(weak) == "held"
    family = [(strong, "greater", 0.0), (weak, "greater", 0.0)] + [(null, "greater", 0.0)] * 3
    judged = stats.verdicts(family)
    assert [j["raw"] for j in judged] == ["held", "held"] + ["inconclusive"] * 3
    assert [j["verdict"] for j in judged] == ["held", "inconclusive"] + ["inconclusive"] * 3
    assert judged[1]["p_holm"] == pytest.approx(min(1.0, 4 * judged[1]["p"]))
    assert stats.verdicts([(weak, "greater", 0.0)])[0]["verdict"] == "held"            # alone it stands


def test_the_bootstrap_sees_test_sampling_variance():
    """Every seed scores the same (the t interval has zero width), yet a 200-example test set leaves
    real doubt: the bootstrap interval has the width of the binomial standard error."""
    rng = host.random.default_rng(1)
    truth = rng.random(200) < 0.8
    left = {s: truth.astype(host.float64)[:, None] for s in range(5)}
    flip = truth.copy()
    flip[rng.choice(200, 20, replace=False)] ^= True                   # right differs on 20 examples
    right = {s: flip.astype(host.float64)[:, None] for s in range(5)}
    accuracy = lambda sums, n: sums[0] / n
    interval = stats.paired_bootstrap(left, right, accuracy, resamples=1000)
    t_interval = stats.paired_difference({s: accuracy(left[s].sum(0), 200) for s in left},
                                         {s: accuracy(right[s].sum(0), 200) for s in right})
    assert t_interval["high"] - t_interval["low"] == pytest.approx(0.0, abs=1e-12)
    assert interval["mean"] == pytest.approx(t_interval["mean"])
    width = interval["high"] - interval["low"]
    expected = 2 * 1.96 * math.sqrt(20 / 200) / math.sqrt(200)     # sd of a mean of 200 +-1/0 differences
    assert 0.6 * expected < width < 1.4 * expected, (width, expected)
    same = stats.paired_bootstrap(left, left, accuracy, resamples=200)
    assert same["low"] == same["high"] == 0.0


def test_the_bootstrap_sees_seed_variance_too():
    """Two settings with the same mean number of examples that differ (16 in 300): seeds that agree,
    and seeds that disagree (0 to 40). The second interval must be the wider one."""
    rng = host.random.default_rng(2)
    base = (rng.random(300) < 0.7).astype(host.float64)[:, None]
    accuracy = lambda sums, n: sums[0] / n

    def flipped(count):
        r = base.copy()
        r[:count] = 1 - r[:count]
        return r
    left = {s: base for s in range(5)}
    agreeing = stats.paired_bootstrap(left, {s: flipped(16) for s in range(5)}, accuracy, resamples=800)
    disagreeing = stats.paired_bootstrap(left, {s: flipped(c) for s, c in enumerate([0, 10, 40, 5, 25])},
                                         accuracy, resamples=800)
    assert disagreeing["high"] - disagreeing["low"] > 1.15 * (agreeing["high"] - agreeing["low"])
