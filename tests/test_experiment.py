"""Experiment configs stay valid; `lorita experiment` runs a tiny one end to end."""

import doctest
import glob
import importlib.util
import json

import pytest

from lorita import LoritaError
from lorita.cli import main
from lorita.data import list_datasets
from lorita.experiment import ExperimentSpec, load_spec
from lorita.models import list_models
from lorita.train import TrainConfig

CONFIGS = sorted(glob.glob("experiments/*.json"))


def test_there_is_a_config_per_paper_setup():
    names = {c.split("/")[-1][:-5] for c in CONFIGS}
    assert {"fcn_mnist", "vit_cifar10", "vgg16_cifar10", "vgg16_cifar100", "resnet20_cifar10",
            "resnet56_cifar10"} <= names


@pytest.mark.parametrize("path", CONFIGS)
@pytest.mark.parametrize("reduced", [False, True])
def test_configs_load(path, reduced):
    spec = load_spec(path, reduced=reduced)
    assert spec.model in list_models() and spec.dataset in list_datasets()
    TrainConfig.from_dict(spec.train)  # validates every recipe field
    if reduced:
        assert spec.dataset == "fashion-mnist"  # runs on CPU here, no download


@pytest.mark.parametrize("test_every_cut", [True, False])
def test_tiny_experiment_runs(tmp_path, test_every_cut):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({
        "common": {"model": "fcn", "model_kwargs": {"width": 16, "hidden_layers": 1}, "depths": [1, 2], "exclude": []},
        "full": {"dataset": "digits", "points": 4, "max_train": 600, "test_every_cut": test_every_cut,
                 "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}},
    }))
    out = tmp_path / "out"
    assert main(["experiment", str(config), "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["name"] == "tiny" and set(results["depths"]) == {"1", "2"}
    assert results["spec"]["max_train"] == 600
    for depth, info in results["depths"].items():
        chosen = {v["threshold"] for v in info["views"].values() if v is not None}
        for point in info["sweep"]:
            # Without test_every_cut, test data is touched only at the chosen cuts.
            assert (point["test_acc"] is not None) == (test_every_cut or point["threshold"] in chosen)
        b = info["views"]["b"]
        if b is not None:  # the saved cut run measures the same model: same test accuracy, exactly
            cut = json.loads((out / f"depth{depth}-cut" / "results.json").read_text())
            assert cut["after_cut"]["test_acc"] == b["test_acc"]


@pytest.mark.parametrize("kwargs,message", [
    ({"depths": [2, 3]}, r"depths must include 1"),
    ({"max_drop": -1}, r"max_drop must be >= 0"),
    ({"points": 1}, r"points must be >= 2"),
    ({"refine_steps": -1}, r"refine_steps must be >= 0"),
    ({"init": "xavier"}, r"init must be one of \('default', 'preserve', 'balanced'\), got 'xavier'"),
])
def test_bad_spec(kwargs, message):
    with pytest.raises(LoritaError, match=message):
        ExperimentSpec(name="x", model="fcn", dataset="digits", **kwargs)


def test_unknown_config_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"common": {"model": "fcn", "modle_kwargs": {}}, "full": {"dataset": "digits"}}))
    with pytest.raises(LoritaError, match=r"unknown keys \['modle_kwargs'\]"):
        load_spec(path)


def test_init_override():
    path = "experiments/vgg16_cifar10.json"
    assert load_spec(path, reduced=True).init == "default"
    assert load_spec(path, reduced=True, init="balanced").init == "balanced"
    assert load_spec(path, reduced=True, init=None).init == "default"  # no flag: the config's


def test_cli_rejects_unknown_init(capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "experiments/vgg16_cifar10.json", "--reduced", "--init", "xavier", "--out", "x"])
    assert "invalid choice: 'xavier'" in capsys.readouterr().err


def _results_table():
    spec = importlib.util.spec_from_file_location("results_table", "experiments/results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_table_names_a_non_default_init():
    table = _results_table()
    assert doctest.testmod(table).failed == 0
    view = {"params_kept": 0.25, "macs_kept": 0.2, "test_acc": 90.0}
    depth = {"uncompressed": {"val_acc": 91.0, "test_acc": 90.5}, "views": {"a": view, "b": view}}
    run = {"name": "vgg", "depths": {"2": depth}, "recipe": {"epochs": 10, "init": "balanced"}, "seconds": 120}
    assert table.rows(run) == ["| vgg (init balanced) | 10 | 2 | 91.00 / 90.50 | 25.0% | 20.0% | 90.00 "
                               "| 25.0% | 20.0% | 90.00 | 2.0 |"]
    run["recipe"]["init"] = "default"
    assert table.rows(run)[0].startswith("| vgg | 10 | 2 |")
