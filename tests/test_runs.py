"""lorita.runs: typed run configs, reproducible training runs, in-memory compression runs."""

import json

import pytest
import torch

import lorita
from lorita import LoritaError
from lorita.cutspec import Energy, Latency, Ranks, Threshold
from lorita.runs import (ComposeSpec, CompressConfig, DataSpec, ModelSpec, RunConfig, compress_model, compress_run,
                         read_json, train_run)
from lorita.train import TrainConfig

INPUTS = {"num_classes": 10, "in_channels": 1, "image_size": 8}


def config(depth=2, seed=0):
    return RunConfig(ModelSpec("fcn", {"width": 16, "hidden_layers": 1}, INPUTS), DataSpec("digits", seed=seed),
                     ComposeSpec(depth), TrainConfig(epochs=1, batch_size=64, device="cpu", seed=seed))


@pytest.fixture(scope="module")
def data():
    return DataSpec("digits").load()


def test_run_config_round_trips_through_json():
    c = config()
    again = RunConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    assert c.to_dict()["format"] == "lorita.run"


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.update(command="compress"), r"not a training run's config"),
    (lambda d: d.update(model=[1]), r"'model' must be an object"),
    (lambda d: d["compose"].update(depth=0), r"depth must be an integer from 1 to 64"),
    (lambda d: d["train"].update(lr="fast"), r"lr must be a finite number"),
    (lambda d: d["dataset"].update(seed=-1), r"seed must be an integer from 0 to 18446744073709551615"),
    (lambda d: d["model"]["kwargs"].update(num_classes=3), r"model argument\(s\) \['num_classes'\] come from the data"),
])
def test_damaged_run_config_is_named(edit, message):
    d = config().to_dict()
    edit(d)
    with pytest.raises(LoritaError, match=message):
        RunConfig.from_dict(d, "run/config.json")


def test_compress_config_checks_its_cut_and_reads_old_configs():
    with pytest.raises(LoritaError, match="cut must be a way to cut"):
        CompressConfig("run", "magic")
    config = CompressConfig("run", Energy(0.9, calibrate=2))
    assert CompressConfig.from_dict(config.to_dict()) == config
    # a config.json written before the cut objects: strategy and options
    old = {"command": "compress", "source": "run", "strategy": "energy", "options": {"energy": 0.9, "calibrate": 2},
           "finetune": None}
    assert CompressConfig.from_dict(old) == config
    old.update(strategy="global", options={"threshold": 0.05})
    assert CompressConfig.from_dict(old).cut == Threshold(0.05)
    old.update(strategy="energy", options={"energy": 0.9, "int8": True})
    assert CompressConfig.from_dict(old).cut == Energy(0.9, int8=True)
    old.update(strategy="budget", options={"latency": 0.5, "batch": 8, "layout": "auto"})
    assert CompressConfig.from_dict(old).cut == Latency(0.5, batch=8, layout="auto")
    with pytest.raises(LoritaError, match="config.json is damaged.*unknown way to cut 'magic'"):
        CompressConfig.from_dict({**config.to_dict(), "cut": {"kind": "magic"}})


def test_the_same_run_twice_gives_the_same_model(data, tmp_path):
    a = train_run(tmp_path / "a", config(), data, progress=False)
    b = train_run(tmp_path / "b", config(), data, progress=False)
    for (key, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), key
    c = train_run(tmp_path / "c", config(seed=1), data, progress=False)
    assert not torch.equal(c.model.state_dict()["head.bias"], a.model.state_dict()["head.bias"])


def test_compress_run_from_memory_equals_from_disk(data, tmp_path):
    run = train_run(tmp_path / "run", config(), data, progress=False)
    merged = lorita.merge(run.model).eval()
    ranks = lorita.select_ranks(merged, "energy", energy=0.8)
    from_disk = compress_run(tmp_path / "run", tmp_path / "disk", Ranks(ranks), progress=False)
    small, in_memory = compress_model(merged, data, Ranks(ranks), progress=False)
    for key in ("ranks", "kept", "after_cut", "before", "cut"):
        assert from_disk[key] == in_memory[key], key
    assert read_json(tmp_path / "disk" / "config.json", "compress")["cut"] == {"kind": "ranks", "ranks": ranks,
                                                                              "calibrate": 0, "multiple": 1, "int8": False}
    assert lorita.profile(small, torch.zeros(1, 1, 8, 8)).params == from_disk["after_cut"]["params"]


def test_an_output_inside_the_data_folder_is_refused_when_the_data_is_named_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    config = RunConfig(ModelSpec("fcn", {"width": 8, "hidden_layers": 1}, INPUTS), DataSpec("mnist", "~/data"),
                       ComposeSpec(depth=2), TrainConfig(epochs=1, device="cpu"))
    with pytest.raises(LoritaError, match=r"would replace, hold or sit inside its data \(--data-dir\)"):
        train_run(tmp_path / "data" / "run", config, None, progress=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_compress_refuses_an_output_inside_its_runs_data_folder_named_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    config = RunConfig(ModelSpec("fcn", {"width": 8, "hidden_layers": 1}, INPUTS), DataSpec("digits"),
                       ComposeSpec(depth=2), TrainConfig(epochs=1, device="cpu"))
    run = train_run(tmp_path / "run", config, config.dataset.load(), progress=False)
    recorded = json.loads((run.folder / "config.json").read_text())
    recorded["dataset"]["data_dir"] = "~/data"  # as a run written by hand or an older lorita may record it
    (run.folder / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(LoritaError, match=r"would replace, hold or sit inside its data \(the run's data_dir\)"):
        compress_run(run.folder, tmp_path / "data" / "cut", Energy(0.9), progress=False)
    assert list((tmp_path / "data").iterdir()) == []
