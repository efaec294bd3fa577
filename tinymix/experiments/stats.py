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

Many claims at once. A page that judges k claims, each at 95% alone, expects k/20 false verdicts
when nothing is going on. Each claim's interval is also a test with a p-value (p_value: the paired
t-test; p < 0.05 exactly when the 95% interval excludes 0, or lies inside the equivalence margin), and
Holm's step-down correction (holm) keeps the chance of ANY false verdict among a task's k claims at
5%: sort the p-values, compare the smallest with 0.05/k, the next with 0.05/(k-1), ..., and stop at
the first that fails. verdicts() applies it to a family of claims.

Seeds are not the only noise. The test set is one sample of sentences too: a second test set would
give other scores. paired_bootstrap draws both (seeds and test examples, with replacement; the same
examples for both arms, so the pairing holds) and gives an interval that includes test-sampling
variance beside the seed-only t interval.
"""
import math
import statistics

from ..backend import host

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


def t_tail(t, df):
    """P(T >= t) for Student's t with df degrees of freedom (the regularised incomplete beta function,
    I_x(df/2, 1/2) / 2 at x = df / (df + t^2), for t >= 0)."""
    if t < 0:
        return 1.0 - t_tail(-t, df)
    return 0.5 * incomplete_beta(df / (df + t * t), df / 2.0, 0.5)


def incomplete_beta(x, a, b):
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (modified Lentz's
    method), using the symmetry I_x(a, b) = 1 - I_(1-x)(b, a) where the fraction converges slowly."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - incomplete_beta(1.0 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny, c, d = 1e-300, 1.0, 0.0
    f = None
    for m in range(0, 400):
        for step in (0, 1):                               # the fraction's even and odd terms
            if m == 0 and step == 0:
                numerator = 1.0
            elif step == 0:
                numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            else:
                numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f = c * d if f is None else f * c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * (f - 1.0) / a


def p_value(interval, kind="greater", margin=0.0):
    """The two-sided p-value that matches the 95% interval's verdict: for "greater" claims, of the
    paired t-test of 'no difference' (p < 0.05 exactly when the interval excludes 0); for "equivalent"
    claims, whichever way the interval decides: equivalence within +-margin (two one-sided tests, p < 0.05
    exactly when the interval lies inside the margin: held), or a difference beyond the margin (the t-test
    of 'the difference is within the margin', p < 0.05 exactly when the interval lies wholly outside it:
    refuted). Both cannot be below 0.05 at once. None without an interval."""
    d = interval.get("differences") or []
    if len(d) < 2:
        return None
    n, mean, sd = len(d), statistics.mean(d), statistics.stdev(d)
    if sd == 0:
        return 0.0 if (mean != 0 if kind == "greater" else abs(mean) != margin) else 1.0
    se = sd / math.sqrt(n)
    if kind == "greater":
        return min(1.0, 2.0 * t_tail(abs(mean) / se, n - 1))
    if kind == "equivalent":
        above_low = t_tail((mean + margin) / se, n - 1)          # p of "the difference is <= -margin"
        below_high = t_tail((margin - mean) / se, n - 1)         # p of "the difference is >= +margin"
        equivalent = 2.0 * max(above_low, below_high)
        beyond = 2.0 * t_tail((abs(mean) - margin) / se, n - 1)  # p of "the difference is within the margin"
        return min(1.0, equivalent, beyond)
    raise ValueError(f"unknown kind of claim {kind!r}")


def holm(p_values, alpha=0.05):
    """Holm's step-down correction of a family of p-values (None: no test). Returns the adjusted
    p-values, in the given order: p_(i) * (k - i + 1), made non-decreasing in sorted order, at most 1.
    A claim stands at family-wise level alpha when its adjusted p-value is below alpha."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    k, adjusted, running = len(tested), [None] * len(p_values), 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (k - rank) * p))
        adjusted[i] = running
    return adjusted


def verdicts(claims, alpha=0.05):
    """Verdicts for a family of claims, corrected by Holm. claims: [(interval, kind, margin)]. Returns
    [{"p", "p_holm", "raw", "verdict"}]: `raw` is each claim judged alone (verdict()), `verdict` the
    corrected one: a held or refuted verdict stands only when its Holm-adjusted p is below alpha."""
    raw = [verdict(interval, kind, margin) for interval, kind, margin in claims]
    p = [p_value(interval, kind, margin) for interval, kind, margin in claims]
    adjusted = holm(p, alpha)
    out = []
    for r, pi, pa in zip(raw, p, adjusted):
        corrected = r if r not in ("held", "refuted") or (pa is not None and pa < alpha) else "inconclusive"
        out.append({"p": pi, "p_holm": pa, "raw": r, "verdict": corrected})
    return out


def paired_bootstrap(left, right, score, resamples=2000, seed=0, level=0.95):
    """An interval for the mean paired difference that includes test-sampling variance.
    left, right: {seed: host array of per-example statistics, shape (examples, k)} on ONE test set
    (the same examples in the same order for every seed and both arms); score: maps the column sums of
    a sample of rows to the score (accuracy: rows [correct], score = lambda s, n: s[0] / n; corpus
    BLEU: rows of n-gram matches and lengths, score = BLEU of the sums). Each resample draws the seeds
    with replacement and the test examples with replacement (one draw of examples for all seeds and
    both arms: the pairing holds). Returns {"n", "mean", "low", "high", "resamples"}."""
    seeds = sorted(set(left) & set(right))
    if len(seeds) < 2:
        return {"n": len(seeds), "mean": None, "low": None, "high": None, "resamples": 0}
    rng = host.random.default_rng(seed)
    examples = len(left[seeds[0]])
    L = host.stack([host.asarray(left[s], dtype=host.float64).reshape(examples, -1) for s in seeds])
    R = host.stack([host.asarray(right[s], dtype=host.float64).reshape(examples, -1) for s in seeds])
    full = [score(L[i].sum(axis=0), examples) - score(R[i].sum(axis=0), examples) for i in range(len(seeds))]
    means = []
    for _ in range(resamples):
        drawn_seeds = rng.integers(0, len(seeds), size=len(seeds))
        rows = rng.integers(0, examples, size=examples)
        counts = host.bincount(rows, minlength=examples).astype(host.float64)
        sums_l, sums_r = counts @ L, counts @ R                            # (seeds, k): the resample's sums
        means.append(statistics.mean(score(sums_l[i], examples) - score(sums_r[i], examples) for i in drawn_seeds))
    low, high = host.quantile(host.asarray(means), [(1 - level) / 2, (1 + level) / 2])
    return {"n": len(seeds), "mean": float(statistics.mean(full)), "low": float(low), "high": float(high),
            "resamples": resamples}


def mean_std(values):
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
