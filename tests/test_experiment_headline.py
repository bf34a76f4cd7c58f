"""results.json's headline: the column named before the runs, and the bar as issue 25 sets it."""

from lorita.metric import ACCURACY
from lorita.runs.experiment import _bar, _headline
from lorita.runs.experiment_spec import Report

COLUMNS = {"LoRITa N=2 + FT": {"lorita": True, "chosen": {"params_kept": 0.3, "macs_kept": 0.3, "test_acc": 90.0,
                                                          "val_acc": 90.5}},
           "LoRITa N=2": {"lorita": True, "chosen": {"params_kept": 0.1, "macs_kept": 0.1, "test_acc": 89.0,
                                                     "val_acc": 90.1}},
           "plain + SVD + FT": {"lorita": False, "chosen": {"params_kept": 0.2, "macs_kept": 0.2, "test_acc": 90.0,
                                                            "val_acc": 90.2}}}


def test_the_headline_is_the_pre_registered_column_never_a_smaller_lorita_one():
    named = _headline(COLUMNS, 90.0, 12, ACCURACY, "LoRITa N=2 + FT")
    assert named["lorita"]["label"] == "LoRITa N=2 + FT" and named["ratio"] == 0.3 / 0.2
    free = _headline(COLUMNS, 90.0, 12, ACCURACY)  # no column named: the smallest LoRITa one (the demo's)
    assert free["lorita"]["label"] == "LoRITa N=2" and free["ratio"] == 0.1 / 0.2


def test_a_pre_registered_column_that_misses_has_no_ratio_even_when_another_lorita_column_reaches():
    columns = {**COLUMNS, "LoRITa N=2 + FT": {"lorita": True, "chosen": None}}
    head = _headline(columns, 90.0, 12, ACCURACY, "LoRITa N=2 + FT")
    assert head["lorita"] is None and head["ratio"] is None
    assert head["best_alternative"]["label"] == "plain + SVD + FT"


def _paired(geomean, ci, n):
    return {"ratio_over_seeds": {"geomean_ratio": geomean, "ci95": ci, "n": n}}


def test_the_bar_asks_the_geometric_mean_five_seeds_and_an_interval_below_one():
    report = Report(bar_ratio=0.5, pre_registered="LoRITa N=2 + FT")
    assert _bar(report, 0.4, _paired(0.45, [0.3, 0.9], 5))["bar_met"] is True
    assert _bar(report, 0.4, _paired(0.45, [0.3, 1.2], 5))["bar_met"] is False  # a tie not excluded
    assert _bar(report, 0.4, _paired(0.45, [0.3, 0.9], 3))["bar_met"] is False  # too few seeds
    assert _bar(report, 0.4, _paired(0.55, [0.5, 0.6], 5))["bar_met"] is False  # above the bar
    assert _bar(report, 0.4, _paired(None, None, 5))["bar_met"] is False  # a seed missed
    assert "geometric mean over at least 5 seeds" in _bar(report, 0.4, _paired(0.45, [0.3, 0.9], 5))["bar"]


def test_without_a_named_column_the_bar_is_the_ratio_of_the_means():
    report = Report(bar_ratio=0.5)
    assert _bar(report, 0.4, None)["bar_met"] is True and _bar(report, 0.6, None)["bar_met"] is False
    assert _bar(report, None, None)["bar_met"] is False
