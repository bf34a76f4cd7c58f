"""lorita.runs.measured_cuts: a killed experiment resumes past the cuts it measured, ending as an uninterrupted one."""

import json
import logging

import pytest

from lorita import LoritaError
from lorita.runs import ExperimentSpec, compare, run_experiment
from lorita.runs.folder import mark, write_json
from lorita.runs.measured_cuts import MEASURED_CUTS, MeasuredCuts, cut_from_json
from lorita.runs.set_aside import resume_path

FLAT = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
        "depths": [1, 2], "points": 3, "sizes": [0.3, 0.5], "finetune_epochs": 1, "small_dense": True,
        "train": {"epochs": 2, "batch_size": 64, "device": "cpu"}}


def _without_seconds(value):
    """``value`` without timings, and without the SVD cuts' global thresholds: a training taken up is read back from
    its file, and the thresholds (sigma ratios) of its cuts then differ in the 8th digit; every figure is equal."""
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if "seconds" not in k and k != "threshold"}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


def test_a_killed_experiment_resumes_past_the_cuts_it_measured_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch,
                                                                                                caplog):
    whole = run_experiment(ExperimentSpec.from_flat(FLAT), tmp_path / "whole", progress=False)
    real, calls = compare.measure, []

    def counted(*args, **kwargs):
        calls.append(args[0].label)
        if len(calls) == 9 and stop:  # a kill part-way through the columns
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "measure", counted)
    stop, out = True, tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ExperimentSpec.from_flat(FLAT), out, progress=False)
    record = json.loads((out.with_name("killed.partial") / MEASURED_CUTS).read_text())
    assert len(record["cuts"]) == 8 and record["key"]["seed"] == 0
    stop, before = False, len(calls)
    with caplog.at_level(logging.INFO, logger="lorita.runs"):
        again = run_experiment(ExperimentSpec.from_flat(FLAT), out, progress=False, resume=True)
    assert "8 cuts measured before taken from" in caplog.text
    total = len(json.loads((out / MEASURED_CUTS).read_text())["cuts"])
    assert len(calls) - before == total - 8  # only the cuts not measured before (and the one the kill cut short)
    for label, column in whole["runs"][0]["columns"].items():
        assert _without_seconds(again["runs"][0]["columns"][label]) == _without_seconds(column), label
    assert again["runs"][0]["headline"] == whole["runs"][0]["headline"]
    assert not resume_path(out).exists()


def test_a_record_of_another_experiment_or_not_lorita_s_is_not_taken(tmp_path):
    folder = tmp_path / "earlier"
    write_json(folder / "config.json", mark({"command": "experiment"}))
    cut = compare.Cut(0.1, 0.09, 0.08, 90.0, 89.5, 85.0, 84.0, 2, 3.5, {})
    MeasuredCuts(folder, {"seed": 0}, []).measure("plain + SVD + FT", 0.1, lambda: cut)
    assert MeasuredCuts(tmp_path / "other-seed", {"seed": 1}, [folder]).cuts == {}  # another key
    (folder / "config.json").unlink()
    assert MeasuredCuts(tmp_path / "unmarked", {"seed": 0}, [folder]).cuts == {}  # not a lorita folder
    write_json(folder / "config.json", mark({"command": "experiment"}))
    record = json.loads((folder / MEASURED_CUTS).read_text())
    record["cuts"]["plain + SVD + FT @ 0.1"]["val"] = "90"
    (folder / MEASURED_CUTS).write_text(json.dumps(record))
    assert MeasuredCuts(tmp_path / "damaged", {"seed": 0}, [folder]).cuts == {}  # measured again, with a warning
    with pytest.raises(LoritaError, match="must be numbers"):
        cut_from_json(record["cuts"]["plain + SVD + FT @ 0.1"])
    (tmp_path / "link").symlink_to(folder)
    assert MeasuredCuts(tmp_path / "linked", {"seed": 0}, [tmp_path / "link"]).cuts == {}
