"""Paired t statistics: the t quantile against published values, intervals that are exactly what they claim."""

import math

import pytest

from lorita.errors import LoritaError
from lorita.stats import geometric_mean_ratio, mean_interval, t_cdf, t_quantile

# two-sided 95% multipliers t(0.975, df) from any printed table
TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 20: 2.086, 30: 2.042}


@pytest.mark.parametrize("df,value", sorted(TABLE_975.items()))
def test_t_quantile_matches_the_printed_table(df, value):
    assert round(t_quantile(0.975, df), 3) == value


def test_t_quantile_approaches_the_normal_and_is_symmetric():
    assert t_quantile(0.975, 10_000) == pytest.approx(1.95996, abs=5e-4)  # t(10000) = 1.96020
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4), abs=1e-12)
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12)
    for df in (1, 2, 5, 12):
        for p in (0.6, 0.9, 0.995):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)


def test_t_cdf_of_one_and_two_degrees_of_freedom_in_closed_form():
    for t in (-3.0, -0.4, 0.0, 0.7, 5.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-15)  # Cauchy
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-15)


def test_t_functions_agree_with_scipy_where_it_is_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 7, 9, 15, 40):
        for p in (0.55, 0.8, 0.95, 0.975, 0.999):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)
        for t in (-2.5, 0.3, 1.0, 4.0):
            assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-12)


def test_mean_interval_is_mean_plus_minus_t_times_standard_error():
    values = [0.2, -0.1, 0.5, 0.4, 0.0]
    r = mean_interval(values)
    mean = sum(values) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    assert r["n"] == 5 and r["mean"] == pytest.approx(mean) and r["sd"] == pytest.approx(sd)
    half = 2.776 * sd / math.sqrt(5)
    assert r["ci"] == pytest.approx([mean - half, mean + half], abs=1e-3)
    assert mean_interval([3.0]) == {"n": 1, "mean": 3.0, "sd": None, "ci": None, "t": None}
    assert mean_interval(values, level=0.99)["ci"][0] < r["ci"][0]


def test_three_seeds_use_the_multiplier_4_30_not_2():
    r = mean_interval([1.0, 2.0, 3.0])
    assert r["t"] == pytest.approx(4.303, abs=1e-3)
    assert r["ci"][1] - r["mean"] == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)


def test_geometric_mean_ratio_is_computed_on_the_log_scale():
    ratios = [0.46, 0.55, 0.78]  # the demo's three seeds (docs/RESULTS.md)
    r = geometric_mean_ratio(ratios)
    assert r["geomean"] == pytest.approx((0.46 * 0.55 * 0.78) ** (1 / 3))
    logs = [math.log(x) for x in ratios]
    inner = mean_interval(logs)
    assert r["ci"] == pytest.approx([math.exp(inner["ci"][0]), math.exp(inner["ci"][1])])
    assert r["ci"][0] < r["geomean"] < r["ci"][1]
    assert r["ci"][1] > 0.9  # three seeds this spread cannot exclude a ratio near 1


def test_bad_values_are_refused():
    with pytest.raises(LoritaError, match="at least one value"):
        mean_interval([])
    with pytest.raises(LoritaError, match="finite numbers"):
        mean_interval([1.0, math.nan])
    with pytest.raises(LoritaError, match="ratios must be > 0"):
        geometric_mean_ratio([0.5, 0.0])
    with pytest.raises(LoritaError, match="p must be a finite number"):
        t_quantile(1.0, 3)
    with pytest.raises(LoritaError, match="df \\(degrees of freedom\\) must be an integer"):
        t_quantile(0.9, 0)
