"""Experiment configs stay valid; `lorita experiment` runs a tiny one end to end."""

import doctest
import glob
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lorita import LoritaError
from lorita.cli import main
from lorita.data import list_datasets
from lorita.runs import ExperimentSpec, load_spec, run_experiment
from lorita.runs.data import TEXT_DATASETS
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
    assert spec.setup.model in list_models() and spec.setup.dataset in [*list_datasets(), *TEXT_DATASETS]
    assert isinstance(spec.recipe.train, TrainConfig)  # every recipe field validated
    assert ExperimentSpec.from_flat(spec.flat()) == spec  # results.json records the spec it can be read back from
    if reduced:
        assert spec.setup.dataset in ("fashion-mnist", "fortunes")  # runs on CPU here, no download


@pytest.mark.slow
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
    for depth, info in results["depths"].items():
        b = info["views"]["b"]
        cut_folder = out / f"depth{depth}-cut"
        assert (b is not None) == cut_folder.is_dir()  # every view-(b) cut is saved, and only those
    b = results["depths"]["1"]["views"]["b"]
    assert b is not None  # the plain model is always within its own target (its uncut point)
    cut = json.loads((out / "depth1-cut" / "results.json").read_text())
    assert cut["after_cut"]["test_acc"] == b["test_acc"]  # the saved cut run measures the same model, exactly
    assert cut["source"] == "depth1"  # relative: the experiment folder was renamed from its staging name
    assert main(["evaluate", str(out / "depth1-cut")]) == 0  # so the cut run finds its data after the move


def test_more_calibration_batches_than_the_data_gives_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """--calibrate 10^18 used the ~11 batches that exist and recorded 10^18."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"common": {"model": "fcn", "model_kwargs": {"width": 8, "hidden_layers": 1}},
                                  "full": {"dataset": "digits", "calibrate": 10**18,
                                           "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}}}))

    def never(*args, **kwargs):
        raise AssertionError("trained before the calibration was checked")

    monkeypatch.setattr("lorita.runs.experiment.train_run", never)
    out = tmp_path / "out"
    assert main(["experiment", str(config), "--out", str(out), "--no-progress"]) == 2
    assert "calibrate=1000000000000000000, but the training data gives 21 batches of 64" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_warm_start_keeps_total_epochs_equal(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--dataset", "digits", "--epochs", "4", "--finetune-epochs", "1", "--warm-start-epochs", "2",
                 "--width", "16", "--hidden-layers", "1", "--depths", "1", "2", "--points", "3", "--sizes", "0.5",
                 "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "depth2" / "config.json").read_text())
    assert config["compose"]["init"] == "preserve" and config["source"] == "../warm-start/model.lorita"
    assert config["train"]["epochs"] == 2  # 2 plain + 2 composed = 4, as every column
    short = json.loads((out / "depth2-short" / "config.json").read_text())
    assert short["train"]["epochs"] == 1  # 2 plain + 1 composed + 1 fine-tuning
    warm = json.loads((out / "warm-start" / "results.json").read_text())
    lorita_col = json.loads((out / "results.json").read_text())["runs"][0]["columns"]["LoRITa N=2"]
    assert lorita_col["train_seconds"] > warm["train_seconds"]  # its compute includes the warm start


@pytest.mark.parametrize("kwargs,message", [
    ({"depths": [2, 3]}, r"depths must include 1"),
    ({"depths": [1, 2, 1]}, r"depths must name each depth once, got \[1, 2, 1\]"),
    ({"max_drop": -1}, r"max_drop \(accuracy points\) must be a finite number >= 0"),
    ({"max_drop": float("nan")}, r"max_drop \(accuracy points\) must be a finite number >= 0, got nan"),
    ({"points": 1}, r"points must be an integer >= 2"),
    ({"points": "40"}, r"points must be an integer >= 2, got '40'"),
    ({"refine_steps": -1}, r"refine_steps must be an integer >= 0"),
    ({"init": "xavier"}, r"init must be one of 'auto', 'default', 'preserve', 'balanced', got 'xavier'"),
    ({"depths": "abc"}, r"depths must be a list of integers from 1 to 64"),
    ({"depths": [1, 2.5]}, r"depths must be a list of integers from 1 to 64"),
    ({"train": {"seed": 2**64}}, r"seed must be an integer from 0 to 2\^64 - 1"),
    ({"train": {"device": "meta"}}, r"device 'meta' holds no values"),
    ({"seeds": [0, 2**64]}, r"seeds must be a list of distinct integers from 0 to 2\^64 - 1"),
    ({"samples": 100}, r"samples generates text from the chosen models; 'digits' is an image dataset"),
    ({"data_dir": "/data"}, r"dataset 'digits' is bundled with scikit-learn and reads no files"),
    ({"steps_per_epoch": 5}, r"steps_per_epoch \(--steps-per-epoch\) sets the batches of a text epoch"),
    ({"warm_start_lr": 1e300}, r"warm_start_lr must be a finite number > 0 and <= 1e\+06"),
    ({"depths": [1, 65]}, r"depths must be a list of integers from 1 to 64 \(the most a lorita model file holds\)"),
    ({"train": "sgd"}, r"train must be an object of training-recipe fields"),
    ({"train": {"lr": -1}}, r"lr must be a finite number > 0"),
    ({"model_kwargs": [1]}, r"model_kwargs must be an object"),
    ({"exclude": "head"}, r"exclude must be a list of module names"),
    ({"test_every_cut": "no"}, r"test_every_cut must be true or false"),
    ({"max_train": 0}, r"max_train \(a positive number of examples\) must be an integer >= 1"),
    ({"warm_start_epochs": 20}, r"warm_start_epochs must be an integer from 0 to 19"),
    ({"finetune_epochs": 20}, r"finetune_epochs must be an integer from 0 to 19"),
    ({"metric": "bleu"}, r"metric must be one of 'val_acc', 'val_loss'"),
    ({"seeds": [0, 0]}, r"seeds must be a list of distinct integers"),
    ({"bar_ratio": 0}, r"bar_ratio must be a finite number > 0"),
])
def test_bad_spec(kwargs, message):
    with pytest.raises(LoritaError, match=message):
        ExperimentSpec.from_flat({"name": "x", "model": "fcn", "dataset": "digits", **kwargs})


@pytest.mark.parametrize("content,message", [
    (b"null", r"must hold a JSON object with 'common', 'full' and 'reduced' sections"),
    (b"[]", r"must hold a JSON object"),
    (b"{\"common\": 5, \"full\": {}}", r"the 'common' section must be an object"),
    (b"{\"common\": {}, \"full\": \"x\"}", r"the 'full' section must be an object"),
    (b"{\"common\": {}, \"full\": {\"dataset\": \"digits\"}}", r"missing model"),
    (b"{\"common\": {\"model\": \"fcn\"}, \"reduced\": {}}", r"has no 'full' section"),
    (b"\xff\xfe{\"common\"", r"is not UTF-8 text"),
    (b"{\"common\": {\"model\": \"fcn\"", r"is not valid JSON"),
    (b"{\"common\": {\"model\": 5}, \"full\": {\"dataset\": \"digits\"}}", r"model must be a non-empty string"),
    (b"{\"common\": {\"model\": \"fcn\", \"train\": \"fast\"}, \"full\": {\"dataset\": \"digits\"}}",
     r"train must be an object"),
])
def test_malformed_config_is_a_clear_error(content, message, tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(LoritaError, match=message):
        load_spec(path)


def test_config_folder_is_a_clear_error(tmp_path):
    with pytest.raises(LoritaError, match="is a folder"):
        load_spec(tmp_path)


def test_unknown_config_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"common": {"model": "fcn", "modle_kwargs": {}}, "full": {"dataset": "digits"}}))
    with pytest.raises(LoritaError, match=r"unknown keys \['modle_kwargs'\]"):
        load_spec(path)


def test_field_and_recipe_overrides(capsys):
    spec = load_spec("experiments/gpt_fortunes.json", reduced=True, train_override={"lr": 0.002},
                     warm_start_epochs=14)
    assert spec.recipe.train.lr == 0.002 and spec.recipe.warm_start_epochs == 14
    assert spec.recipe.train.optimizer == "adamw"
    with pytest.raises(LoritaError, match=r"unknown keys \['warm_start'\]"):
        load_spec("experiments/gpt_fortunes.json", reduced=True, warm_start=3)
    assert main(["experiment", "experiments/gpt_fortunes.json", "--reduced", "--set", "warm_start_epochs", "--out",
                 "x"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_init_override():
    path = "experiments/vgg16_cifar10.json"
    assert load_spec(path, reduced=True).recipe.init == "auto"  # the configs leave it to compose's default
    assert load_spec(path, reduced=True, init="balanced").recipe.init == "balanced"
    assert load_spec(path, reduced=True, init=None).recipe.init == "auto"  # no flag: the config's
    spec = load_spec(path, reduced=True, init="default", init_scale=0.6, model_kwargs_override={"width_multiplier": 0.5})
    assert (spec.recipe.init, spec.recipe.init_scale, spec.setup.model_kwargs["width_multiplier"]) == ("default", 0.6, 0.5)


def test_cli_records_the_data_folder_whole(tmp_path, monkeypatch, capsys):
    import lorita.runs
    seen = {}

    def capture(spec, *args, **kwargs):
        seen["data_dir"] = spec.setup.data_dir
        raise LoritaError("captured")
    monkeypatch.setattr(lorita.runs, "run_experiment", capture)
    config = str(Path("experiments/vgg16_cifar10.json").resolve())
    monkeypatch.chdir(tmp_path)  # a relative --data-dir: a resume from elsewhere must read the same folder
    assert main(["experiment", config, "--reduced", "--data-dir", "data", "--no-progress", "--out", "x"]) == 2
    assert seen["data_dir"] == str(tmp_path / "data") and "captured" in capsys.readouterr().err


def test_a_data_folder_in_the_config_is_recorded_whole_too(tmp_path, monkeypatch):
    config = json.loads(Path("experiments/vgg16_cifar10.json").read_text())
    config["common"]["data_dir"] = "data"
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)  # read from the current folder, as before; kept as that folder's absolute path
    assert load_spec(path, reduced=True).setup.data_dir == str(tmp_path / "data")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_spec(path, reduced=True, data_dir="~/d").setup.data_dir == str(tmp_path / "home" / "d")
    with pytest.raises(LoritaError, match="data_dir"):
        load_spec(path, reduced=True, data_dir="")


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
    run["recipe"]["init"] = "auto"
    assert table.rows(run)[0].startswith("| vgg | 10 | 2 |")
    run["recipe"]["init_scale"] = 0.6
    assert table.rows(run)[0].startswith("| vgg (init auto, scale 0.6) | 10 | 2 |")


def test_results_table_skips_results_that_are_not_experiments(tmp_path, capsys):
    table = _results_table()
    view = {"params_kept": 0.25, "macs_kept": 0.2, "test_acc": 90.0}
    depth = {"uncompressed": {"val_acc": 91.0, "test_acc": 90.5}, "views": {"a": view, "b": view}}
    experiment = {"command": "experiment", "name": "fcn", "depths": {"2": depth}, "recipe": {"epochs": 3},
                  "seconds": 60}
    (tmp_path / "e.json").write_text(json.dumps(experiment))
    (tmp_path / "t.json").write_text(json.dumps({"command": "train", "val_acc": 90.0}))
    assert table.main([str(tmp_path / "t.json"), str(tmp_path / "e.json")]) == 0
    out, err = capsys.readouterr()
    assert "| fcn (init default) | 3 | 2 |" in out and "skipped" in err and "t.json" in err


@pytest.mark.parametrize("script", ["experiments/results_table.py", "experiments/recipes.py"])
def test_table_scripts_answer_help_and_a_missing_file_with_a_message(script, tmp_path):
    run = lambda *args: subprocess.run([sys.executable, script, *args], capture_output=True, text=True)  # noqa: E731
    helped = run("--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage:") and "results.json" in helped.stdout
    missing = run(str(tmp_path / "none.json"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr and "none.json" in missing.stderr


@pytest.mark.parametrize("path", sorted(glob.glob("experiments/*.json")), ids=lambda p: p.split("/")[-1])
def test_every_config_compares_against_fine_tuned_alternatives(path):
    # A headline against plain SVD alone is the comparison docs/METHOD.md calls too weak.
    for reduced in (False, True):
        spec = load_spec(path, reduced=reduced)
        assert spec.columns.finetune_epochs > 0, f"{path} ({'reduced' if reduced else 'full'}) has no fine-tuned columns"
        if spec.setup.model != "vit":  # the ViT's Torch-Pruning column is off, and its config says why
            assert spec.columns.torch_pruning is not False


@pytest.mark.slow
def test_a_language_experiment_is_judged_by_loss_stored_as_measured(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):  # a small corpus of its own: evaluations stay cheap
        (corpus / f"{i:02d}.txt").write_text(f"entry {i}: the quick brown fox jumps over {i % 7} lazy dogs.\n" * 3)
    spec = ExperimentSpec.from_flat({
        "name": "tiny-lm", "model": "gpt", "dataset": "text", "data_dir": str(corpus), "metric": "val_loss",
        "max_drop": 0.05,
        "model_kwargs": {"dim": 16, "depth": 1, "heads": 2, "context": 16}, "depths": [1, 2], "points": 3,
        "sizes": [0.5], "steps_per_epoch": 2, "finetune_epochs": 1, "torch_pruning": False,
        "train": {"epochs": 2, "batch_size": 8, "device": "cpu", "optimizer": "adamw", "lr": 0.003,
                  "select_by": "val_loss"}})
    results = run_experiment(spec, tmp_path / "lm", progress=False)
    run = results["runs"][0]
    target = run["target_val_loss"]
    assert target == run["depths"]["1"]["uncompressed"]["val_loss"] + 0.05  # a loss target: worse is higher
    for info in run["depths"].values():
        assert all("val_loss" in p and "val_acc" not in p and p["val_loss"] > 0 for p in info["sweep"])
        b = info["views"]["b"]
        assert b is None or b["val_loss"] <= target  # within the target: no higher than it
    for column in run["columns"].values():
        for cut in column["cuts"]:
            assert cut["val_loss"] > 0 and "val_acc" not in cut and "val_loss_cut" in cut
        if column["chosen"] is not None:
            assert column["chosen"]["val_loss"] <= target
    assert "val_loss" in (results["headline"]["best_alternative"] or {"val_loss": 0})
