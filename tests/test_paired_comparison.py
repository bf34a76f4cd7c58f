"""Over seeds: per-seed ratios against the best alternative, fixed-size differences, K sizes, summary.json."""

import json
import math

import pytest

from lorita.errors import LoritaError
from lorita.metric import LOSS
from lorita.report.converged import (SEED_KEYS, STUDY_KEYS, check_study, many_sizes_markdown, paired_lines,
                                     pooled_plateau, study_entry, write_summary)
from lorita.runs.many_sizes import many_sizes
from lorita.runs.paired import UNCUT, fixed_size_differences, ratio_over_seeds, seed_ratio
from lorita.stats import mean_interval

SIZES = (0.05, 0.1)


def _column(lorita, kept, accs, ft=0, train_seconds=100.0):
    """accs: {size: (val, test)}."""
    cuts = [{"size": s, "params_kept": s, "val_acc": v, "test_acc": t, "seconds": 10.0} for s, (v, t) in accs.items()]
    return {"lorita": lorita, "finetune_epochs": ft, "train_seconds": train_seconds, "cuts": cuts,
            "chosen": None if kept is None else {"params_kept": kept, "val_acc": 90.0, "test_acc": 89.0}}


def _run(seed, ours, svd, tp, shift=0.0):
    return {"seed": seed, "target_val_acc": 90.0 + seed / 10, "columns": {
        "LoRITa N=2 + FT": _column(True, ours, {0.05: (89.0, 88.5 + shift), 0.1: (90.0, 89.5 + shift)}, ft=2),
        "LoRITa N=3": _column(True, 0.01, {0.05: (95.0, 95.0)}),  # better, but not the pre-registered column
        "plain + SVD + FT": _column(False, svd, {0.05: (88.0, 88.0), 0.1: (89.0, 89.0)}, ft=2),
        "Torch-Pruning + FT": _column(False, tp, {0.05: (88.5, 87.0), 0.1: (88.0, 89.9)}, ft=2)}}


def test_the_ratio_is_the_pre_registered_column_against_the_smallest_alternative():
    r = seed_ratio(_run(0, 0.06, 0.12, 0.10), "LoRITa N=2 + FT")
    assert r["best_alternative"] == "Torch-Pruning + FT" and r["ratio"] == pytest.approx(0.6)
    assert set(SEED_KEYS) <= set(r)
    none = seed_ratio(_run(1, 0.06, None, None), "LoRITa N=2 + FT")
    assert none["best_alternative"] == UNCUT and none["best_alternative_params_kept"] == 1.0
    with pytest.raises(LoritaError, match="not a LoRITa column"):
        seed_ratio(_run(0, 0.06, 0.12, 0.10), "plain + SVD + FT")
    with pytest.raises(LoritaError, match="no column 'LoRITa N=4'"):
        seed_ratio(_run(0, 0.06, 0.12, 0.10), "LoRITa N=4")


def test_geometric_mean_and_interval_over_seeds():
    runs = [_run(s, k, 0.1, 0.2) for s, k in enumerate([0.04, 0.05, 0.07, 0.06, 0.05])]
    out = ratio_over_seeds(runs, "LoRITa N=2 + FT")
    logs = [math.log(k / 0.1) for k in (0.04, 0.05, 0.07, 0.06, 0.05)]
    inner = mean_interval(logs)
    assert out["n"] == 5 and out["missed"] == []
    assert out["geomean_ratio"] == pytest.approx(math.exp(inner["mean"]))
    assert out["ci95"] == pytest.approx([math.exp(x) for x in inner["ci"]])


def test_a_seed_that_misses_the_target_leaves_no_geometric_mean():
    runs = [_run(0, 0.05, 0.1, 0.2), _run(1, None, 0.1, 0.2), _run(2, 0.05, 0.1, 0.2)]
    out = ratio_over_seeds(runs, "LoRITa N=2 + FT")
    assert out["missed"] == [1] and out["geomean_ratio"] is None and out["ci95"] is None
    assert out["per_seed"][1]["lorita_params_kept"] is None
    # the seeds that reach it, apart (never in place of the missing mean): both ratios 0.5, so 0.5 [0.5, 0.5]
    alone = out["reached_only"]
    assert alone["seeds"] == [0, 2] and alone["geomean_ratio"] == pytest.approx(0.5)
    assert alone["ci95"] == pytest.approx([0.5, 0.5])
    line = next(text for text in paired_lines({"pre_registered": "LoRITa N=2 + FT", "ratio_over_seeds": out})
                if text.startswith("No geometric mean"))
    assert line.endswith("0 2: geometric mean 0.500, paired t 95% interval [0.500, 0.500].")
    one_reached = ratio_over_seeds(runs[:2], "LoRITa N=2 + FT")
    assert one_reached["reached_only"] is None and ratio_over_seeds(runs[::2], "LoRITa N=2 + FT")["reached_only"] \
        is None  # one seed reaching it has no interval; no miss needs no stand-in


def test_fixed_size_differences_pick_the_alternative_on_validation_and_pair_by_seed():
    runs = [_run(s, 0.05, 0.1, 0.2, shift=d) for s, d in enumerate([0.0, 0.5, 1.0])]
    rows = fixed_size_differences(runs, "LoRITa N=2 + FT", SIZES)
    at5, at10 = rows
    # at 5%: Torch-Pruning has the higher validation accuracy (88.5 > 88.0), its test accuracy is 87.0
    assert at5["alternatives"] == ["Torch-Pruning + FT"] * 3
    assert at5["differences"] == pytest.approx([1.5, 2.0, 2.5])
    # at 10%: plain + SVD + FT is better on validation (89.0 > 88.0) though worse on test: validation decides
    assert at10["alternatives"] == ["plain + SVD + FT"] * 3
    assert at10["differences"] == pytest.approx([0.5, 1.0, 1.5])
    assert at10["ci"] == pytest.approx(mean_interval([0.5, 1.0, 1.5])["ci"])
    missing = fixed_size_differences(runs, "LoRITa N=2 + FT", [0.3])[0]
    assert missing["n"] == 0 and missing["mean"] is None
    by_loss = [{"seed": 0, "columns": {"LoRITa N=2 + FT": {"lorita": True, "cuts": [{"size": 0.1, "val_loss": 2.0}]}}}]
    with pytest.raises(LoritaError, match="compare accuracies"):
        fixed_size_differences(by_loss, "LoRITa N=2 + FT", [0.1])


def test_k_sizes_count_one_training_and_every_cut():
    columns = _run(0, 0.05, 0.1, 0.2)["columns"]
    rows = {r["label"]: r for r in many_sizes(columns, SIZES)}
    assert rows["LoRITa N=3"]["reached"] == 1 and rows["LoRITa N=3"]["seconds"] == 110.0
    assert rows["plain + SVD + FT"]["seconds"] == 120.0 and rows["plain + SVD + FT"]["at"][0.1]["test_acc"] == 89.0
    table = many_sizes_markdown(list(rows.values()), SIZES)
    assert "| LoRITa N=3 | 0 | 95.00 | - | 100 | 10 | 110 |" in table
    with pytest.raises(LoritaError, match="has no 'cuts'"):
        many_sizes({"x": {}}, SIZES)


def _entry(**change):
    runs = [_run(s, 0.05, 0.1, 0.2) for s in range(3)]
    values = dict(model="fcn", dataset="fashion-mnist", epochs=60, exposure=12.7, plateau=True,
                  comparison=ratio_over_seeds(runs, "LoRITa N=2 + FT"),
                  alternatives=["plain + SVD + FT", "Torch-Pruning + FT"], small_model_baseline=True)
    values.update(change)
    return study_entry(**values)


def test_summary_has_exactly_the_schema_and_round_trips(tmp_path):
    entry = _entry()
    assert list(entry) == list(STUDY_KEYS) and all(list(r) == list(SEED_KEYS) for r in entry["per_seed"])
    path = tmp_path / "summary.json"
    write_summary(path, [entry, _entry(epochs=12, exposure=2.5)])
    back = json.loads(path.read_text())
    assert list(back) == ["studies"] and back["studies"][0] == entry
    assert back["studies"][0]["ci95"] == pytest.approx([0.5, 0.5])


def test_summary_refuses_a_study_off_the_schema(tmp_path):
    entry = _entry()
    for change, message in [({"extra": 1}, "extra \\['extra'\\]"), ({"epochs": 0}, "epochs must be an integer"),
                            ({"plateau": "yes"}, "plateau must be true or false"),
                            ({"ci95": [0.9, 0.1]}, "ci95 must be \\[low, high\\]"),
                            ({"geomean_ratio": None}, "ci95 without a geomean_ratio")]:
        with pytest.raises(LoritaError, match=message):
            check_study({**entry, **change})
    bad_seed = {**entry, "per_seed": [{**entry["per_seed"][0], "lorita_params_kept": 1.5}]}
    with pytest.raises(LoritaError, match="lorita_params_kept must be a fraction"):
        check_study(bad_seed)
    with pytest.raises(LoritaError, match="at least one study"):
        write_summary(tmp_path / "s.json", [])
    assert not (tmp_path / "s.json").exists()
    null_seed = {**entry, "per_seed": [{**entry["per_seed"][0], "lorita_params_kept": None}], "geomean_ratio": None,
                 "ci95": None}
    check_study(null_seed)  # a miss is recorded as null


def test_plateau_over_seeds_needs_every_seed():
    assert pooled_plateau([{"plateau": True}, {"plateau": True}]) is True
    assert pooled_plateau([{"plateau": True}, {"plateau": False}]) is False
    with pytest.raises(LoritaError, match="no plateau tests"):
        pooled_plateau([])


def test_ties_go_by_one_rule_whatever_the_columns_order():
    """At the target: fewest params, then the better validation accuracy, then the label; at a fixed size: the best
    validation accuracy, then the fewer params kept, then the label. Never the order the columns were written in."""
    def cut(kept, val, test):
        return {"size": 0.3, "params_kept": kept, "val_acc": val, "test_acc": test}

    columns = {"LoRITa N=2 + FT": {"lorita": True, "cuts": [cut(0.28, 91.0, 90.0)],
                                   "chosen": {"params_kept": 0.2, "val_acc": 91.6}},
               "plain + SVD + FT": {"lorita": False, "cuts": [cut(0.30, 91.2, 90.6)],
                                    "chosen": {"params_kept": 0.3, "val_acc": 91.5}},
               "small dense": {"lorita": False, "cuts": [cut(0.27, 91.2, 90.3)],
                               "chosen": {"params_kept": 0.3, "val_acc": 91.7}}}
    for order in (list(columns), list(reversed(columns))):
        run = {"seed": 0, "target_val_acc": 91.0, "columns": {label: columns[label] for label in order}}
        ratio = seed_ratio(run, "LoRITa N=2 + FT")
        assert ratio["best_alternative"] == "small dense"  # the same size, better on validation
        (row,) = fixed_size_differences([run], "LoRITa N=2 + FT", [0.3])
        assert row["alternatives"] == ["small dense"] and row["differences"] == [pytest.approx(-0.3)]  # fewer params


def test_a_loss_experiment_s_tie_goes_to_the_lower_validation_loss():
    """The ratio's best alternative is named as the experiment's headline names it, on the experiment's metric."""
    columns = {"A alt": {"lorita": False, "chosen": {"params_kept": 0.2, "val_loss": 1.50}},
               "B alt": {"lorita": False, "chosen": {"params_kept": 0.2, "val_loss": 1.40}},
               "L": {"lorita": True, "chosen": {"params_kept": 0.1, "val_loss": 1.45}}}
    run = {"seed": 0, "target_val_loss": 1.5, "columns": columns}
    assert seed_ratio(run, "L", LOSS)["best_alternative"] == "B alt"
    assert ratio_over_seeds([run], "L", metric=LOSS)["per_seed"][0]["best_alternative"] == "B alt"


def test_a_run_judged_by_loss_pairs_its_pre_registered_column_and_prints_its_loss_target():
    runs = [{"seed": s, "target_val_loss": 1.25, "columns": {
        "LoRITa N=2": {"lorita": True, "chosen": {"params_kept": 0.3, "val_loss": 1.2}},
        "plain + SVD": {"lorita": False, "chosen": {"params_kept": 0.6, "val_loss": 1.24}}}} for s in (0, 1)]
    comparison = ratio_over_seeds(runs, "LoRITa N=2", metric=LOSS)
    assert comparison["per_seed"][0]["target_val_loss"] == 1.25 and comparison["geomean_ratio"] == pytest.approx(0.5)
    lines = paired_lines({"pre_registered": "LoRITa N=2", "ratio_over_seeds": comparison})
    assert lines[0].startswith("| seed | target (val loss) |")
    assert lines[2] == "| 0 | 1.2500 | 30.0% | plain + SVD | 60.0% | 0.500 |"
