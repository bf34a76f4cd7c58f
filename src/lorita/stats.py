"""Paired statistics over seeds: Student t intervals and the geometric mean of size ratios.

The comparisons of docs/METHOD.md section 5 are paired by seed (the seed fixes the split, the
initialisation and the batch order of every column), so the right interval for a mean
difference over ``n`` seeds is the paired t interval ``mean +- t(n - 1) * sd / sqrt(n)``: with
3 seeds its multiplier is 4.30, not 2. Ratios of sizes are compared on the log scale: the
mean of the per-seed log ratios and its t interval, exponentiated, give the geometric mean
ratio and its 95% interval.

The t quantile is computed here (no SciPy needed): the t distribution's CDF has a closed
form for whole degrees of freedom (Abramowitz and Stegun 26.7.3 and 26.7.4), which is
inverted by bisection.
"""

from __future__ import annotations

import math
from typing import Sequence

from lorita.checks import check_int, check_number, is_number
from lorita.errors import LoritaError


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` (whole) degrees of freedom.

    Example:
        >>> t_cdf(0.0, 5), round(t_cdf(12.706204736, 1), 6)
        (0.5, 0.975)
    """
    check_int("df (degrees of freedom)", df)
    t = check_number("t", t)
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), the sum to cos^(df-3)
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= (2 * k) / (2 * k + 1) * c * c
            total += term
        inside = 2.0 / math.pi * (theta + s * c * total)
    else:  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...), the sum to cos^(df-2)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c * c
            total += term
        inside = s * total
    return 0.5 + math.copysign(0.5 * inside, t)  # inside = P(|T| <= |t|)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` whole degrees of freedom (bisection on :func:`t_cdf`).

    Example:
        >>> round(t_quantile(0.975, 2), 3), round(t_quantile(0.975, 4), 3), round(t_quantile(0.975, 9), 3)
        (4.303, 2.776, 2.262)
    """
    check_number("p", p, minimum=0, maximum=1, low_open=True, high_open=True)
    check_int("df (degrees of freedom)", df)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    hi = 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _values(values: Sequence[float], what: str) -> list[float]:
    out = list(values)
    if not all(is_number(v) for v in out):
        raise LoritaError(f"{what} must be finite numbers, got {out!r}")
    return [float(v) for v in out]


def mean_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean of ``values`` (per-seed paired differences) and its two-sided t interval at ``level``.

    Returns ``{"n", "mean", "sd", "ci": [low, high] | None, "t": multiplier | None}``; with one
    value there is no spread, so no interval.

    Example:
        >>> r = mean_interval([1.0, 2.0, 3.0])
        >>> r["mean"], round(r["t"], 3), [round(x, 3) for x in r["ci"]]
        (2.0, 4.303, [-0.484, 4.484])
    """
    check_number("level", level, minimum=0, maximum=1, low_open=True, high_open=True)
    xs = _values(values, "values")
    if not xs:
        raise LoritaError("mean_interval needs at least one value (one per seed)")
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "ci": None, "t": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    t = t_quantile(0.5 + level / 2, n - 1)
    half = t * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci": [mean - half, mean + half], "t": t}


def geometric_mean_ratio(ratios: Sequence[float], level: float = 0.95) -> dict:
    """Geometric mean of per-seed size ratios and its t interval, computed on the log scale.

    Returns ``{"n", "geomean", "ci": [low, high] | None, "log_ratios", "log_mean", "log_sd", "t"}``.

    Example:
        >>> r = geometric_mean_ratio([0.5, 0.5, 0.5])
        >>> round(r["geomean"], 6), [round(x, 6) for x in r["ci"]]
        (0.5, [0.5, 0.5])
    """
    xs = _values(ratios, "ratios")
    if any(x <= 0 for x in xs):
        raise LoritaError(f"ratios must be > 0 (params kept by one column over another's), got {xs!r}")
    logs = [math.log(x) for x in xs]
    inner = mean_interval(logs, level)
    ci = None if inner["ci"] is None else [math.exp(inner["ci"][0]), math.exp(inner["ci"][1])]
    return {"n": inner["n"], "geomean": math.exp(inner["mean"]), "ci": ci, "log_ratios": logs,
            "log_mean": inner["mean"], "log_sd": inner["sd"], "t": inner["t"]}
