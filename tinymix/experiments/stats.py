"""Paired differences and their 95% confidence intervals, and the verdict they support.

Seed s trains every arm from the same data order and the same shared initial weights (protocol.py), so
two arms are compared seed by seed: d_s = score(A, s) - score(B, s). With n seeds,
    mean d  +-  t(0.975, n - 1) * sd(d) / sqrt(n)
is the 95% confidence interval of the mean difference (Student's t: the d_s are assumed roughly normal;
with 5 seeds that is an assumption, and the page says so).

Verdicts, at this budget:
- "A >= B" claims: held if the whole interval is above 0, refuted if it is below 0, inconclusive if
  it contains 0 (the data cannot tell the two apart).
- "A ~ B" claims (equivalence within a margin m): held if the interval lies inside (-m, m), refuted
  if it lies wholly outside it, inconclusive otherwise.
"""
import math
import statistics

# Student's t, 97.5% quantile, by degrees of freedom (standard table values)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile(df):
    """t(0.975, df); between table rows the next smaller df is used (a slightly wider interval)."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two paired values")
    return T_975[max(k for k in T_975 if k <= df)]


def paired_difference(left, right):
    """left, right: {seed: score}. The mean paired difference over the seeds both have, its 95% CI."""
    seeds = sorted(set(left) & set(right))
    d = [left[s] - right[s] for s in seeds]
    if len(d) < 2:
        return {"n": len(d), "mean": d[0] if d else None, "low": None, "high": None, "differences": d}
    mean = statistics.mean(d)
    half = t_quantile(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return {"n": len(d), "mean": mean, "low": mean - half, "high": mean + half, "differences": d}


def verdict(interval, kind="greater", margin=0.0):
    """'held' / 'refuted' / 'inconclusive' for "left >= right" (kind "greater") or "left ~ right"
    (kind "equivalent", within +-margin); 'not enough seeds' without an interval."""
    low, high = interval["low"], interval["high"]
    if low is None:
        return "not enough seeds"
    if kind == "greater":
        return "held" if low > 0 else "refuted" if high < 0 else "inconclusive"
    if kind == "equivalent":
        return "held" if -margin < low and high < margin else \
            "refuted" if low >= margin or high <= -margin else "inconclusive"
    raise ValueError(f"unknown kind of claim {kind!r}")


def mean_std(values):
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
