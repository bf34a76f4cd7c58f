"""An experiment's plan (``lorita.runs.plan``, ``lorita experiment --dry-run``): the trainings it lists are the
ones the experiment then makes, with their recipes and exposures, and a dry run creates nothing."""

import json
import os

import pytest

from lorita.cli import main
from lorita.runs import ExperimentSpec, plan_experiment, run_experiment
from lorita.runs.plan import planned_trainings
from lorita.runs.small_dense import SMALL_DENSE
from lorita.train import TrainConfig
from lorita.train.exposure import epoch_learning_rates

TINY = {"name": "plan", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
        "depths": [1, 2], "points": 3, "refine_steps": 0, "sizes": [0.5], "refine_sizes": 0,
        "torch_pruning": False, "train": {"epochs": 4, "batch_size": 64, "lr": 0.05, "weight_decay": 0.001,
                                          "device": "cpu"}}


def test_the_plan_is_what_runs_warm_start_and_fine_tuned_columns(tmp_path):
    spec = ExperimentSpec.from_flat({**TINY, "finetune_epochs": 1, "warm_start_epochs": 2,
                                     "warm_start_weight_decay": 0.004, "lorita_train": {"lr": 0.1}})
    plan = plan_experiment(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists() and os.listdir(tmp_path) == []  # checked, lock given back, nothing made
    assert [t.folder for t in plan.trainings] == ["warm-start", "depth1", "depth2", "depth1-short", "depth2-short"]
    run_experiment(spec, tmp_path / "run", progress=False)
    for training in plan.trainings:
        config = json.loads((tmp_path / "run" / training.folder / "config.json").read_text())
        results = json.loads((tmp_path / "run" / training.folder / "results.json").read_text())
        assert config["train"] == training.recipe.to_dict(), training.folder
        assert results["penalty_exposure"] == pytest.approx(training.exposure, rel=1e-12), training.folder
    depth2 = plan.trainings[2]  # after the warm start: the epochs it left, the warm start's decay, its side's lr
    assert (depth2.recipe.epochs, depth2.recipe.weight_decay, depth2.recipe.lr) == (2, 0.004, 0.1)
    assert plan.trainings[3].finetune.epochs == 1 and plan.trainings[3].finetune.lr == pytest.approx(0.005)


def test_every_column_is_served_by_one_planned_training():
    spec = ExperimentSpec.from_flat({**TINY, "finetune_epochs": 1, "calibrate": 2, "small_dense": True,
                                     "plain_train": {"weight_decay": 0.002}, "target_train": {}})
    plan = planned_trainings(spec, 1280, torch_pruning=True)
    served = [c for t in plan for c in t.columns]
    assert sorted(served) == sorted(
        ["plain + SVD", "plain + whitened SVD", "LoRITa N=2", "the target's plain model",
         "plain + SVD + FT", "plain + whitened SVD + FT", "Torch-Pruning + FT", "LoRITa N=2 + FT", SMALL_DENSE])
    by_folder = {t.folder: t for t in plan}
    assert by_folder["depth1-target"].recipe.weight_decay == 0.001  # target_train: the base recipe
    assert by_folder["depth1"].recipe.weight_decay == 0.002 == plan[-1].recipe.weight_decay  # small dense: plain's
    # exposure = depth x decay x steps x sum of the epochs' lr / (1 - momentum): 20 steps of 64 per epoch
    steps = 1280 // 64
    assert by_folder["depth1"].steps == steps
    assert by_folder["depth2"].exposure == pytest.approx(
        2 * 0.001 * steps * sum(by_folder["depth2"].recipe.lr * s for s in _cosine(4)) / 0.1)


def _cosine(epochs):
    """The cosine schedule's per-epoch factor (``lorita.train``'s default schedule), as the exposure sums it."""
    return epoch_learning_rates(TrainConfig(epochs=epochs, lr=1.0))


def test_dry_run_prints_the_plan_and_creates_nothing(tmp_path, capsys):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"full": TINY}))
    out = tmp_path / "out"
    assert main(["experiment", str(config), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "[plan] plan: fcn on digits" in printed and "nothing is trained or written" in printed
    assert "  depth2: 4 epochs for LoRITa N=2; penalty exposure " in printed
    assert "2 trainings a seed, 8 epochs in all, x 1 seed(s)" in printed
    assert sorted(os.listdir(tmp_path)) == ["cfg.json"]


def test_dry_run_refuses_what_the_run_would_refuse(tmp_path, capsys):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"full": TINY}))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    # a folder lorita did not write: refused, as the run would refuse it, and left as it was
    assert main(["experiment", str(config), "--out", str(mine), "--dry-run", "--overwrite"]) == 2
    assert "mine" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["cfg.json", "mine"]
    missing = json.dumps([str(tmp_path / "missing")])
    assert main(["experiment", str(config), "--out", str(tmp_path / "out"), "--dry-run", "--set",
                 f"reuse={missing}"]) == 2
    assert "reuse" in capsys.readouterr().err and sorted(os.listdir(tmp_path)) == ["cfg.json", "mine"]


@pytest.mark.parametrize("setting, message", [
    (["--set", "model_kwargs.width=0"], "width must be an integer from 1 to 1048576, got 0"),
    (["--set", 'exclude=["nosuch"]'], "exclude names unknown module 'nosuch'"),
    (["--set", "max_train=1"], "the training set holds 1 example")])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_model_the_zoo_or_compose_refuses_fails_before_anything_is_created(tmp_path, capsys, monkeypatch, setting,
                                                                              message, dry_run):
    import lorita.runs.experiment as experiment

    if not dry_run:  # the run checks the models before it locks its output (the plan checks the output first)
        monkeypatch.setattr(experiment, "_output", lambda *a: pytest.fail("the output was locked first"))
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"full": TINY}))
    argv = ["experiment", str(config), "--out", str(tmp_path / "out"), "--no-progress", *setting]
    assert main(argv + ["--dry-run"] * dry_run) == 2
    assert message in capsys.readouterr().err and sorted(os.listdir(tmp_path)) == ["cfg.json"]


def test_the_models_structure_check_takes_every_init_the_training_takes(tmp_path, capsys):
    """The check composes with the default init (meta tensors hold no values): init_scale and the inits that read
    the weights (balanced, preserve) pass it as their trainings do."""
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"full": TINY}))
    for extra in (["--set", "init_scale=0.5"], ["--init", "balanced"], ["--init", "preserve"]):
        assert main(["experiment", str(config), "--out", str(tmp_path / "out"), "--dry-run", *extra]) == 0, extra
