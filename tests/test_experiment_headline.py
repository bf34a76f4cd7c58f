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


def _paired(geomean, ci, n, missed=()):
    return {"ratio_over_seeds": {"geomean_ratio": geomean, "ci95": ci, "n": n, "missed": list(missed)}}


def test_the_bar_asks_the_geometric_mean_five_seeds_and_an_interval_below_one_and_says_what_falls_short():
    report = Report(bar_ratio=0.5, pre_registered="LoRITa N=2 + FT")
    met = _bar(report, 0.4, _paired(0.45, [0.3, 0.9], 5))
    assert met["bar_met"] is True and met["bar_short_of"] == []
    assert "geometric mean over at least 5 seeds" in met["bar"]
    assert _bar(report, 0.4, _paired(0.45, [0.3, 1.2], 5))["bar_short_of"] == [
        "the interval's upper end 1.200 not below 1"]  # a tie not excluded
    assert _bar(report, 0.4, _paired(0.45, None, 1))["bar_short_of"] == ["1 seed run, 5 needed"]
    assert _bar(report, 0.4, _paired(0.55, [0.5, 0.6], 5))["bar_short_of"] == ["geometric mean 0.550 above 0.5"]
    missed = _bar(report, 0.4, _paired(None, None, 5, missed=[1, 3]))
    assert missed["bar_met"] is False and missed["bar_short_of"] == ["it misses the target on seeds 1, 3"]


def test_without_a_named_column_the_bar_is_the_ratio_of_the_means():
    report = Report(bar_ratio=0.5)
    assert _bar(report, 0.4, None)["bar_met"] is True and _bar(report, 0.6, None)["bar_met"] is False
    assert _bar(report, None, None)["bar_met"] is False
