"""lorita.runs.measured_cuts: a killed experiment resumes past the cuts it measured, ending as an uninterrupted one."""

import dataclasses
import json
import logging

import pytest

from lorita import LoritaError
from lorita.prune import available as torch_pruning_installed
from lorita.runs import ExperimentSpec, compare, run_experiment
from lorita.runs.folder import mark, write_json
from lorita.runs.measured_cuts import MEASURED_CUTS, MeasuredCuts, cut_from_json
from lorita.runs.set_aside import resume_path
from lorita.sweep import SweepPoint
from lorita.train import loop

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


def _stop_at(monkeypatch, cut: int) -> tuple[list, list]:
    """``compare.measure`` counted, with Ctrl-C as cut number ``cut`` starts while ``stop`` holds ``[cut]``
    (``stop.clear()`` lets every cut through); returns (the columns of every cut started, stop)."""
    real, calls, stop = compare.measure, [], [cut]

    def counted(*args, **kwargs):
        calls.append(args[0].label)
        if stop and len(calls) == stop[0]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "measure", counted)
    return calls, stop


def _sweeps_counted(monkeypatch) -> list:
    """The depths' sweeps measured (not taken from a record), counted from now on."""
    import lorita.runs.experiment as experiment
    real, swept = experiment.sweep, []
    monkeypatch.setattr(experiment, "sweep", lambda *a, **k: swept.append(1) or real(*a, **k))
    return swept


def test_a_killed_experiment_resumes_past_the_cuts_it_measured_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch,
                                                                                                caplog):
    whole = run_experiment(ExperimentSpec.from_flat(FLAT), tmp_path / "whole", progress=False)
    swept = _sweeps_counted(monkeypatch)
    calls, stop = _stop_at(monkeypatch, 9)  # a kill part-way through the columns
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ExperimentSpec.from_flat(FLAT), out, progress=False)
    record = json.loads((out.with_name("killed.partial") / MEASURED_CUTS).read_text())
    assert len(record["cuts"]) == 8 and record["key"]["seed"] == 0
    assert sorted(record["sweeps"]) == ["depth 1", "depth 2"] and len(swept) == 2
    stop.clear()
    before = len(calls)
    with caplog.at_level(logging.INFO, logger="lorita.runs"):
        again = run_experiment(ExperimentSpec.from_flat(FLAT), out, progress=False, resume=True)
    assert len(swept) == 2  # neither depth swept again
    assert "the sweep of depth 2 was measured before from this seed's data and trained models: taken" in caplog.text
    assert _without_seconds(again["runs"][0]["depths"]) == _without_seconds(whole["runs"][0]["depths"])
    assert "8 cuts measured before found in" in caplog.text
    assert "8 of the 8 cuts recorded before were measured from this seed's data and trained models: taken" in \
        caplog.text
    total = len(json.loads((out / MEASURED_CUTS).read_text())["cuts"])
    assert len(calls) - before == total - 8  # only the cuts not measured before (and the one the kill cut short)
    for label, column in whole["runs"][0]["columns"].items():
        assert _without_seconds(again["runs"][0]["columns"][label]) == _without_seconds(column), label
    assert again["runs"][0]["headline"] == whole["runs"][0]["headline"]
    assert not resume_path(out).exists()


def test_each_cut_is_bound_to_every_training_and_each_sweep_to_those_it_cuts(tmp_path, monkeypatch):
    """The fine-tuned columns cut shorter trainings made after the sweeps: the cuts' fingerprint covers them."""
    import lorita.runs.experiment as experiment
    real, seen = experiment.inputs_fingerprint, []

    def listed(data, folder, side, settings):
        seen.append((side, sorted(p.name for p in folder.iterdir() if (p / "model.lorita").is_file()),
                     "target" in settings, "lorita_train" in settings))
        return real(data, folder, side, settings)

    monkeypatch.setattr(experiment, "inputs_fingerprint", listed)
    run_experiment(ExperimentSpec.from_flat(FLAT), tmp_path / "exp", progress=False)
    sweeps, cuts = ["depth1", "depth2"], ["depth1", "depth1-short", "depth2", "depth2-short"]
    assert seen == [(False, sweeps, True, False), (True, sweeps, True, False),  # a sweep: the trainings it cuts
                    (False, cuts, True, False), (True, cuts, True, True)]


def test_a_side_s_inputs_are_its_trainings_and_those_of_neither_side(tmp_path):
    from lorita.data.datasets import load_dataset
    from lorita.runs.measured_cuts import inputs_fingerprint
    data = load_dataset("digits")
    for name in ("depth1", "depth1-short", "depth2", "depth2-short", "warm-start", "small-dense-4"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.lorita").write_bytes(name.encode())
        (tmp_path / name / "results.json").write_text("{}")
    before = {side: inputs_fingerprint(data, tmp_path, side) for side in (False, True, None)}
    for name, changed in (("depth2-short", {True, None}), ("warm-start", {True, None}), ("depth1", {False, None}),
                          ("small-dense-4", {False, True, None})):
        (tmp_path / name / "model.lorita").write_bytes(b"trained again")
        after = {side: inputs_fingerprint(data, tmp_path, side) for side in (False, True, None)}
        assert {side for side in after if after[side] != before[side]} == changed, name
        before = after
    assert inputs_fingerprint(data, tmp_path, False, {"plain_train": {}}) != before[False]  # its settings count


def _measured(monkeypatch) -> list:
    """The labels of the cuts ``compare.measure`` measures from now on (each size of a column once)."""
    real, labels = compare.measure, []
    monkeypatch.setattr(compare, "measure", lambda column, *a, **k: labels.append(column.label) or real(column, *a,
                                                                                                         **k))
    return labels


@pytest.mark.parametrize("setting, measured", [({"lorita_train": {"weight_decay": 0.002}}, True),
                                               ({"init": "default", "init_scale": 0.5}, True),
                                               ({"plain_train": {"weight_decay": 0.002}, "target_train": {}}, False)])
def test_a_setting_that_changes_one_side_takes_the_other_side_s_cuts_from_the_run_it_reuses(tmp_path, monkeypatch,
                                                                                            caplog, setting,
                                                                                            measured):
    """A grid setting of one side: the other side's trainings (a LoRITa init scale leaves the plain trainings as
    they were) and cuts are taken from the run it names in reuse, the changed side's measured; its figures are
    what the run it reuses measured."""
    base = run_experiment(ExperimentSpec.from_flat(FLAT), tmp_path / "base", progress=False)
    labels, swept = _measured(monkeypatch), _sweeps_counted(monkeypatch)
    with caplog.at_level(logging.INFO, logger="lorita.runs"):
        grid = run_experiment(ExperimentSpec.from_flat({**FLAT, **setting, "reuse": [str(tmp_path / "base")]}),
                              tmp_path / "grid", progress=False)
    columns = grid["runs"][0]["columns"]
    lorita = {label for label, column in columns.items() if column["lorita"]}
    assert labels and set(labels) == (lorita if measured else set(columns) - lorita)  # the changed side only
    reused = ["depth1", "depth1-short"] if measured else ["depth2", "depth2-short"]
    assert all(f"{name}: reused from" in caplog.text for name in reused)
    for label in set(columns) - set(labels):
        assert _without_seconds(columns[label]["cuts"]) == _without_seconds(base["runs"][0]["columns"][label]["cuts"])
    other = "1" if measured else "2"  # the depth of the side left as it was: its sweep taken, not swept again
    assert len(swept) == 1 and grid["runs"][0]["depths"][other]["sweep"] == base["runs"][0]["depths"][other]["sweep"]


@pytest.mark.parametrize("setting", [{"plain_finetune_epochs": 2}, {"prune_importance": "l2"}])
def test_a_setting_that_leaves_a_side_s_trainings_takes_its_sweep(tmp_path, monkeypatch, setting):
    """A plain setting that changes only the fine-tuned or pruned columns: the plain model is the base's, so is
    its sweep (the cuts without fine-tuning are the same models); the columns the setting changes are measured."""
    if not torch_pruning_installed():
        pytest.skip("Torch-Pruning is not installed (the [test] extra has it)")
    flat = {**FLAT, "torch_pruning": True, "train": {**FLAT["train"], "epochs": 3}}
    base = run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "base", progress=False)
    labels, swept = _measured(monkeypatch), _sweeps_counted(monkeypatch)
    grid = run_experiment(ExperimentSpec.from_flat({**flat, **setting, "reuse": [str(tmp_path / "base")]}),
                          tmp_path / "grid", progress=False)
    assert swept == [] and grid["runs"][0]["depths"]["1"]["sweep"] == base["runs"][0]["depths"]["1"]["sweep"]
    assert labels and not any(grid["runs"][0]["columns"][label]["lorita"] for label in labels)


def test_a_recorded_sweep_that_does_not_suit_the_model_is_swept_again(tmp_path, monkeypatch, caplog):
    swept = _sweeps_counted(monkeypatch)
    calls, stop = _stop_at(monkeypatch, 2)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ExperimentSpec.from_flat(FLAT), out, progress=False)
    path = out.with_name("killed.partial") / MEASURED_CUTS
    record = json.loads(path.read_text())
    record["sweeps"]["depth 1"]["points"] = []  # no uncut point
    record["sweeps"]["depth 2"]["points"][1]["ranks"] = {"no.such.layer": 2}
    path.write_text(json.dumps(record))
    stop.clear()
    with caplog.at_level(logging.INFO, logger="lorita.runs"):
        run_experiment(ExperimentSpec.from_flat(FLAT), out, progress=False, resume=True)
    assert len(swept) == 4 and "the sweep of depth 2 recorded before does not suit the trained model" in caplog.text
    assert "1 of the 1 cuts recorded before were measured from this seed's data" in caplog.text


def test_cuts_recorded_from_other_data_are_measured_again(tmp_path, monkeypatch, caplog):
    """The trainings are taken up (same config, same data folder), but the folder's files changed in between: the
    recorded cuts were measured on other data, so every cut is measured again."""
    from test_data import make_idx_folder
    make_idx_folder(tmp_path / "data", gz=False, n_train=60, n_test=20, size=8)
    flat = {**FLAT, "dataset": "mnist", "data_dir": str(tmp_path / "data"), "small_dense": False,
            "model_kwargs": {"width": 8, "hidden_layers": 1}}
    calls, stop = _stop_at(monkeypatch, 5)
    swept = _sweeps_counted(monkeypatch)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False)
    images = tmp_path / "data" / "t10k-images-idx3-ubyte"
    raw = bytearray(images.read_bytes())
    raw[-1] ^= 0xFF  # one test pixel changed
    images.write_bytes(bytes(raw))
    stop.clear()
    before = len(calls)
    with caplog.at_level(logging.INFO, logger="lorita.runs"):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False, resume=True)
    assert "depth1: reused from" in caplog.text  # the trainings' config names the same folder
    assert "0 of the 4 cuts recorded before were measured from this seed's data" in caplog.text
    assert len(calls) - before == len(json.loads((out / MEASURED_CUTS).read_text())["cuts"])  # every one again
    assert len(swept) == 4  # and both depths swept again


def test_a_second_kill_keeps_the_cuts_either_attempt_measured(tmp_path, monkeypatch):
    calls, stop = _stop_at(monkeypatch, 9)
    out = tmp_path / "exp"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ExperimentSpec.from_flat(FLAT), out, progress=False)  # 8 cuts recorded
    import lorita.runs.experiment as experiment
    with monkeypatch.context() as patch:  # the second attempt is stopped once its seed's data is loaded
        patch.setattr(experiment, "_log_plan", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            run_experiment(ExperimentSpec.from_flat(FLAT), out, progress=False, resume=True)
    partial = out.with_name("exp.partial")
    if partial.exists():  # kept (a training had finished an epoch) or not: the record survives either way
        assert len(json.loads((partial / MEASURED_CUTS).read_text())["cuts"]) == 8
    stop.clear()
    before = len(calls)
    run_experiment(ExperimentSpec.from_flat(FLAT), out, progress=False, resume=True)
    assert len(calls) - before == len(json.loads((out / MEASURED_CUTS).read_text())["cuts"]) - 8


def test_a_record_of_another_experiment_or_not_lorita_s_is_not_taken(tmp_path, caplog):
    folder = tmp_path / "earlier"
    write_json(folder / "config.json", mark({"command": "experiment"}))
    cut = compare.Cut(0.1, 0.09, 0.08, 90.0, 89.5, 85.0, 84.0, 2, 3.5, {})
    record = MeasuredCuts(folder, {"seed": 0}, [])
    record.bind("inputs")
    record.measure("plain + SVD + FT", 0.1, lambda: cut)
    with caplog.at_level(logging.INFO, logger="lorita.runs"):
        assert MeasuredCuts(tmp_path / "other-seed", {"seed": 1}, [folder]).cuts == {}  # another key: said so
    assert f"{folder / MEASURED_CUTS}: recorded under other settings" in caplog.text
    (folder / "config.json").unlink()
    assert MeasuredCuts(tmp_path / "unmarked", {"seed": 0}, [folder]).cuts == {}  # not a lorita folder
    write_json(folder / "config.json", mark({"command": "experiment"}))
    record = json.loads((folder / MEASURED_CUTS).read_text())
    assert MeasuredCuts(tmp_path / "same", {"seed": 0}, [folder]).cuts == record["cuts"]
    record["cuts"]["plain + SVD + FT @ 0.1"]["cut"]["val"] = "90"
    (folder / MEASURED_CUTS).write_text(json.dumps(record))
    assert MeasuredCuts(tmp_path / "damaged", {"seed": 0}, [folder]).cuts == {}  # measured again, with a warning
    with pytest.raises(LoritaError, match="must be numbers"):
        cut_from_json(record["cuts"]["plain + SVD + FT @ 0.1"]["cut"])
    record["cuts"]["plain + SVD + FT @ 0.1"]["cut"]["val"] = 90.0
    record["cuts"]["plain + SVD + FT @ 0.1"]["cut"]["seconds"] = 10 ** 400  # past a float: passed over, no crash
    (folder / MEASURED_CUTS).write_text(json.dumps(record))
    assert MeasuredCuts(tmp_path / "huge", {"seed": 0}, [folder]).cuts == {}
    (tmp_path / "link").symlink_to(folder)
    assert MeasuredCuts(tmp_path / "linked", {"seed": 0}, [tmp_path / "link"]).cuts == {}
    record["cuts"]["plain + SVD + FT @ 0.1"]["cut"]["seconds"] = 3.5
    point = {"threshold": 0.0, "params": 90, "macs": 80, "params_kept": 1.0, "macs_kept": 1.0, "val": 91.0,
             "test": None, "ranks": {"fc": 4}}
    record["sweeps"] = {"depth 1": {"inputs": "inputs", "points": [point]}}
    (folder / MEASURED_CUTS).write_text(json.dumps(record))
    taken = MeasuredCuts(tmp_path / "swept", {"seed": 0}, [folder])
    assert taken.sweeps == record["sweeps"] and len(taken.cuts) == 1
    point["ranks"] = {"fc": -4}
    (folder / MEASURED_CUTS).write_text(json.dumps(record))
    damaged = MeasuredCuts(tmp_path / "bad-sweep", {"seed": 0}, [folder])
    assert damaged.sweeps == {} and len(damaged.cuts) == 1  # the sweeps passed over, the cuts taken
    record["sweeps"] = None  # sweeps that do not read: the cuts are still taken
    (folder / MEASURED_CUTS).write_text(json.dumps(record))
    assert len(MeasuredCuts(tmp_path / "bad-sweeps", {"seed": 0}, [folder]).cuts) == 1
    del record["sweeps"]  # a record from before sweeps were kept: its cuts are taken
    (folder / MEASURED_CUTS).write_text(json.dumps(record))
    assert len(MeasuredCuts(tmp_path / "older", {"seed": 0}, [folder]).cuts) == 1


def test_a_cut_is_taken_from_the_first_earlier_record_measured_from_the_same_inputs(tmp_path):
    """Several earlier runs (``reuse`` names g3 then base): each cut and sweep is taken from the first that measured
    it from this run's inputs, though an earlier-named one holds it from others."""
    cut = compare.Cut(0.1, 0.09, 0.08, 90.0, 89.5, 85.0, 84.0, 2, 3.5, {})
    point = SweepPoint(0.0, 90, 80, 1.0, 1.0, 91.0, 90.0, {"fc": 4})
    for name, inputs, val in (("g3", "other plain models", 70.0), ("base", "these plain models", 90.0)):
        write_json(tmp_path / name / "config.json", mark({"command": "experiment"}))
        record = MeasuredCuts(tmp_path / name, {"seed": 0}, [])
        record.bind(inputs)
        record.measure("plain + SVD", 0.1, lambda: dataclasses.replace(cut, val=val))
        record.bind_sweeps(inputs)
        record.sweep(1, lambda: [dataclasses.replace(point, val=val)])
    again = MeasuredCuts(tmp_path / "new", {"seed": 0}, [tmp_path / "g3", tmp_path / "base"])
    again.bind({False: "these plain models", True: "LoRITa models"})
    assert again.measure("plain + SVD", 0.1, lambda: None).val == 90.0  # base's, though g3 comes first
    again.bind_sweeps({False: "these plain models", True: "LoRITa models"})
    assert [p.val for p in again.sweep(1, lambda: [])] == [90.0]
    written = json.loads((tmp_path / "new" / MEASURED_CUTS).read_text())
    assert written["cuts"]["plain + SVD @ 0.1"]["inputs"] == written["sweeps"]["depth 1"]["inputs"] == \
        "these plain models"  # this attempt's record holds what it took


def test_set_aside_carries_the_older_attempts_record_into_the_newer(tmp_path):
    from lorita.runs.set_aside import set_aside
    out = tmp_path / "exp"
    older, newer = tmp_path / "exp.resume", tmp_path / "exp.partial"
    cut = compare.Cut(0.1, 0.09, 0.08, 90.0, 89.5, 85.0, 84.0, 2, 3.5, {})
    for folder, labels in ((older, ["a", "b"]), (newer, ["b", "c"])):
        write_json(folder / "config.json", mark({"command": "experiment"}))
        record = MeasuredCuts(folder, {"seed": 0}, [])
        record.bind(folder.name)
        for label in labels:
            record.measure(label, 0.1, lambda: cut)
        if folder == older:
            record.bind_sweeps(folder.name)
            record.sweep(1, lambda: [SweepPoint(0.0, 90, 80, 1.0, 1.0, 91.0, 90.0, {"fc": 4})])
    assert set_aside(out) == older  # a second kill: the newer attempt's folder replaces the older's
    cuts = json.loads((older / MEASURED_CUTS).read_text())["cuts"]
    assert list(json.loads((older / MEASURED_CUTS).read_text())["sweeps"]) == ["depth 1"]  # the older's sweep too
    assert {name: entry["inputs"] for name, entry in cuts.items()} == \
        {"a @ 0.1": "exp.resume", "b @ 0.1": "exp.partial", "c @ 0.1": "exp.partial"}  # the newer's own win
    write_json(newer / "config.json", mark({"command": "experiment"}))  # a third kill before any cut: kept too
    assert set_aside(out) == older and len(json.loads((older / MEASURED_CUTS).read_text())["cuts"]) == 3


def test_a_killed_experiment_continues_a_smaller_dense_model_from_its_last_epoch(tmp_path, monkeypatch, caplog):
    """The smaller dense models train as run folders of the seed (``small-dense-WIDTH``): a kill part-way through
    one keeps its epochs, and the seed's records still hold (those folders are made after the record is bound)."""
    flat = {**FLAT, "finetune_epochs": 0, "train": {**FLAT["train"], "epochs": 3}}
    whole = run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "whole", progress=False)
    real, stop, epochs = loop.save_checkpoint, [True], []

    def killed_after_one_epoch(ckpt, path):
        real(ckpt, path)
        if path.parent.name.startswith("small-dense-"):
            epochs.append(ckpt["epoch"])
            if stop and len(epochs) == 4:  # the second smaller model, after its first epoch
                raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", killed_after_one_epoch)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ExperimentSpec.from_flat(flat), out, progress=False)
    stopped = [p.name for p in out.with_name("killed.partial").iterdir() if p.name.startswith("small-dense-")]
    assert len(stopped) == 2 and epochs == [1, 2, 3, 1]
    before = len(json.loads((out.with_name("killed.partial") / MEASURED_CUTS).read_text())["cuts"])
    stop.clear()
    with caplog.at_level(logging.INFO, logger="lorita.runs"):
        again = run_experiment(ExperimentSpec.from_flat(flat), out, progress=False, resume=True)
    assert epochs[4:6] == [2, 3]  # the stopped one went on from its epoch, the finished one was a recorded cut
    assert "after epoch 1 (the same config and recipe)" in caplog.text
    assert f"{before} of the {before} cuts recorded before were measured from this seed's data and trained " \
           "models: taken" in caplog.text
    for label, column in whole["runs"][0]["columns"].items():
        assert _without_seconds(again["runs"][0]["columns"][label]) == _without_seconds(column), label
    folders = sorted(p.name for p in out.iterdir() if p.name.startswith("small-dense-"))
    assert folders == sorted(f"small-dense-{c['detail']['width']}" for c in whole["runs"][0]["columns"]["small dense"]
                             ["cuts"])  # the finished one carried over from the earlier attempt, as its cut was
    assert not resume_path(out).exists()  # so nothing of it is left behind
