"""The columns of a converged comparison in ``lorita experiment``: BatchNorm re-estimated after every cut, the
smaller dense model, iterative Torch-Pruning, each column's exposure, and the pre-registered column's statistics
over seeds (docs/converged/PLAN.md)."""

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import lorita.runs.train as runs_train
from lorita import LoritaError, load, merge
from lorita.batchnorm import recalibrate_batchnorm
from lorita.cutspec import Budget, Ranks
from lorita.data import load_dataset
from lorita.prune import available as torch_pruning_installed
from lorita.report.demo import headline_line, left_out_lines
from lorita.runs import ExperimentSpec, run_experiment
from lorita.runs.alternatives import training_batches
from lorita.runs.compare import svd_cutter
from lorita.runs.compress import compress_model
from lorita.runs.config import RunConfig
from lorita.runs.experiment_spec import column_depth, column_label
from lorita.runs.reuse import copy_stopped_run, stopped_at
from lorita.runs.small_dense import SMALL_DENSE
from lorita.runs.train import example_input
from lorita.spectra import Spectra
from lorita.train import TrainConfig, evaluate

BASE = {"name": "x", "model": "fcn", "dataset": "digits"}


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)).eval()


def test_compress_model_reestimates_batchnorm_on_the_recipes_training_batches():
    data = load_dataset("digits")
    recipe = TrainConfig(batch_size=32, seed=3, device="cpu")
    small, results = compress_model(_bn_net(), data, Ranks({"1": 4}), recipe=recipe, batchnorm=5, progress=False)
    expected, _ = compress_model(_bn_net(), data, Ranks({"1": 4}), progress=False)
    recalibrate_batchnorm(expected, training_batches(data, 32, 3)(), max_batches=5)
    assert torch.equal(small[2].running_mean, expected[2].running_mean)
    assert torch.equal(small[2].running_var, expected[2].running_var)
    assert results["after_cut"]["val_acc"] == evaluate(expected, data.val)[0]
    assert results["batchnorm_batches"] == 5


def test_compress_model_batchnorm_needs_the_recipe():
    with pytest.raises(LoritaError, match=r"batchnorm=N needs recipe="):
        compress_model(_bn_net(), load_dataset("digits"), Ranks({"1": 4}), batchnorm=5, progress=False)


@pytest.mark.parametrize("kwargs,message", [
    ({"batchnorm": -1}, r"batchnorm must be an integer >= 0"),
    ({"small_dense": 1}, r"small_dense must be true or false"),
    ({"prune_importance": "random"}, r"prune_importance must be one of 'l1', 'l2', 'taylor'"),
    ({"prune_rounds": 0}, r"prune_rounds must be an integer >= 1"),
    ({"prune_rounds": 3, "finetune_epochs": 2, "train": {"epochs": 6}},
     r"prune_rounds \(3\) must be at most the plain side's fine-tuning epochs \(2\)"),
    ({"pre_registered": "LoRITa N=2 + FT"}, r"pre_registered must be one of this experiment's LoRITa columns "
                                            r"\(LoRITa N=2, LoRITa N=3\), got 'LoRITa N=2 \+ FT'"),
    ({"pre_registered": "plain + SVD", "depths": [1, 2]}, r"LoRITa columns \(LoRITa N=2\), got 'plain \+ SVD'"),
    ({"lorita_train": {"epochs": 3}}, r"lorita_train may not change epochs: every column shares them"),
    ({"plain_train": {"seed": 3}}, r"plain_train may not change seed"),
    ({"plain_train": {"lr": -1}}, r"plain_train: lr must be a finite number > 0"),
    ({"lorita_train": {"bogus": 1}}, r"lorita_train: unknown TrainConfig key\(s\): bogus"),
    ({"lorita_train": [1]}, r"lorita_train must be an object"),
    ({"reuse": "runs/base"}, r"reuse must be a list of earlier experiments' folders, got 'runs/base'"),
    ({"target_train": {"epochs": 2}}, r"target_train may not change epochs"),
    ({"lorita_finetune_epochs": 2}, r"lorita_finetune_epochs needs fine-tuned columns: set finetune_epochs too"),
    ({"finetune_epochs": 1, "plain_finetune_epochs": 20}, r"plain_finetune_epochs must be an integer from 1 to 19"),
    ({"finetune_epochs": 3, "plain_finetune_epochs": 2, "prune_rounds": 3},
     r"prune_rounds \(3\) must be at most the plain side's fine-tuning epochs \(2\)"),
    ({"cut_rule": "global"}, r"cut_rule must be one of 'loss', 'threshold', got 'global'"),
    ({"lorita_cut_rule": "global"}, r"lorita_cut_rule must be one of 'loss', 'threshold', got 'global'"),
])
def test_bad_column_fields(kwargs, message):
    with pytest.raises(LoritaError, match=message):
        ExperimentSpec.from_flat({**BASE, **kwargs})


def test_column_depth_inverts_column_label():
    depths = [1, 2, 3, 4]
    assert all(column_depth(column_label(d, ft), depths) == d for d in depths for ft in (False, True))
    assert column_depth("LoRITa N=5 + FT", depths) is None  # a depth the experiment did not run
    assert column_depth("Torch-Pruning + FT", depths) is None and column_depth(SMALL_DENSE, depths) is None


def test_the_pre_registered_column_may_be_a_fine_tuned_one():
    spec = ExperimentSpec.from_flat({**BASE, "depths": [1, 2], "finetune_epochs": 1, "train": {"epochs": 3},
                                     "pre_registered": "LoRITa N=2 + FT"})
    assert spec.lorita_columns() == ["LoRITa N=2", "LoRITa N=2 + FT"]
    assert ExperimentSpec.from_flat(spec.flat()) == spec


@pytest.mark.slow
def test_each_side_trains_with_its_own_changes_and_split(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lorita.runs.experiment")
    spec = ExperimentSpec.from_flat({
        "name": "sides", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
        "depths": [1, 2], "points": 3, "refine_steps": 0, "sizes": [0.5], "refine_sizes": 0, "finetune_epochs": 1,
        "lorita_finetune_epochs": 2, "torch_pruning": False, "lorita_train": {"weight_decay": 0.002},
        "plain_train": {"lr": 0.02}, "target_train": {}, "small_dense": True, "small_dense_refine": 0,
        "train": {"epochs": 4, "batch_size": 64, "lr": 0.05, "weight_decay": 0.001, "device": "cpu"}})
    results = run_experiment(spec, tmp_path / "sides", progress=False)
    recipes = {name: json.loads((tmp_path / "sides" / name / "config.json").read_text())["train"]
               for name in ("depth1", "depth2", "depth1-short", "depth2-short")}
    assert [(r["lr"], r["weight_decay"], r["epochs"]) for r in recipes.values()] == [
        (0.02, 0.001, 4), (0.05, 0.002, 4), (0.02, 0.001, 3), (0.05, 0.002, 2)]
    columns = results["runs"][0]["columns"]
    assert columns["LoRITa N=2 + FT"]["finetune_epochs"] == 2 and columns["plain + SVD + FT"]["finetune_epochs"] == 1
    assert all(c["epochs"] == 4 for c in columns.values())  # equal total epochs on both sides
    assert columns[SMALL_DENSE]["exposure"] == columns["plain + SVD"]["exposure"]  # the plain side's recipe
    # The target is set by the plain model of target_train (the base recipe here), not by plain_train's.
    target = json.loads((tmp_path / "sides" / "depth1-target" / "results.json").read_text())
    assert json.loads((tmp_path / "sides" / "depth1-target" / "config.json").read_text())["train"]["lr"] == 0.05
    run = results["runs"][0]
    assert run["target_run"] == "depth1-target" and run["target_val_acc"] == target["val_acc"] - 1.0
    assert run["plateau"] == target["plateau"]
    # Before the first training, the plan: every training, each side's recipe, and its exposure as it ran.
    logged = [r.getMessage() for r in caplog.records if "seed 0 plans " in r.getMessage()]
    assert [m.split(" plans ")[1].split(":")[0] for m in logged] == [
        "depth1", "depth2", "depth1-target", "depth1-short", "depth2-short",
        "(one narrower model per size its search tries)"]
    for line in logged[:5]:
        folder = line.split(" plans ")[1].split(":")[0]
        ran = json.loads((tmp_path / "sides" / folder / "results.json").read_text())["penalty_exposure"]
        assert f"penalty exposure {ran:.2f} (" in line
    assert "weight decay 0.002" in logged[4] and "; 2 epochs of" in logged[4] and "; 3 epochs of" in logged[3]
    report = (tmp_path / "sides" / "report.md").read_text()  # the header says where a side's recipe differs
    assert ("Per side: the alternatives' models train with lr 0.02; LoRITa's models train with weight decay 0.002 "
            "and fine-tune 2 epochs (2 + 2); the target's plain model trains with the common recipe. ") in report


TINY = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 16, "hidden_layers": 1},
        "depths": [1, 2], "points": 4, "refine_steps": 1, "sizes": [0.3, 0.5], "refine_sizes": 1,
        "finetune_epochs": 2, "batchnorm": 3, "small_dense": True, "small_dense_refine": 1, "prune_rounds": 2,
        "torch_pruning": torch_pruning_installed(), "pre_registered": "LoRITa N=2 + FT", "seeds": [0, 1],
        "train": {"epochs": 3, "batch_size": 32, "device": "cpu"}}


@pytest.mark.slow
def test_every_column_of_the_converged_comparison(tmp_path):
    out = tmp_path / "tiny"
    results = run_experiment(ExperimentSpec.from_flat(TINY), out, progress=False)
    run = results["runs"][0]
    columns = run["columns"]
    expected = {"plain + SVD", "LoRITa N=2", "plain + SVD + FT", "LoRITa N=2 + FT", SMALL_DENSE}
    if torch_pruning_installed():
        expected.add("Torch-Pruning + FT")
        assert columns["Torch-Pruning + FT"]["finetune_epochs"] == 2  # one epoch between the rounds, one after
        assert all(c["detail"]["rounds"] == 2 and c["detail"]["between_epochs"] == 1
                   for c in columns["Torch-Pruning + FT"]["cuts"])
    assert set(columns) == expected
    folder = out / "seed0"
    for label, column in columns.items():  # each column's exposure is its training run's
        source = {"plain + SVD": "depth1", "LoRITa N=2": "depth2", "LoRITa N=2 + FT": "depth2-short",
                  SMALL_DENSE: "depth1"}.get(label, "depth1-short")
        trained = json.loads((folder / source / "results.json").read_text())
        assert column["exposure"] == trained["penalty_exposure"] > 0
        if label != SMALL_DENSE:  # every cut re-estimated; the small dense model is trained, not cut
            assert all(c["detail"]["batchnorm_batches"] == 3 for c in column["cuts"])
    assert run["plateau"] == json.loads((folder / "depth1" / "results.json").read_text())["plateau"]
    small = columns[SMALL_DENSE]["cuts"]
    assert small and all(c["finetune_epoch_kept"] == 0 and c["params_kept"] <= c["size"] for c in small)

    # A fixed-size cut is scored after re-estimation on the seed's shuffled training batches: recomputed exactly.
    data = ExperimentSpec.from_flat(TINY).setup.data_spec(0).load()
    plain = merge(load(folder / "depth1" / "model.lorita")).eval()
    cut = next(c for c in columns["plain + SVD"]["cuts"] if c["size"] == 0.5)
    model, _ = svd_cutter(Spectra(plain, example_input(data)))(0.5)
    recalibrate_batchnorm(model, training_batches(data, 32, 0)(), max_batches=3)
    assert cut["val_acc"] == evaluate(model, data.val)[0]
    # The saved view-(b) cut is the swept one, re-estimated the same way.
    view = run["depths"]["1"]["views"]["b"]
    saved = json.loads((folder / "depth1-cut" / "results.json").read_text())
    assert saved["after_cut"]["val_acc"] == view["val_acc"]
    was_cut = saved["after_cut"]["params"] < saved["original"]["params"]  # an uncut point is the model itself
    assert saved.get("batchnorm_batches") == (3 if was_cut else None)

    paired = results["paired"]
    assert paired["pre_registered"] == "LoRITa N=2 + FT"
    ratio = paired["ratio_over_seeds"]
    assert ratio["n"] == 2 and [r["seed"] for r in ratio["per_seed"]] == [0, 1]
    for r, seed_run in zip(ratio["per_seed"], results["runs"]):
        ours = seed_run["columns"]["LoRITa N=2 + FT"]["chosen"]
        assert r["lorita_params_kept"] == (None if ours is None else ours["params_kept"])
    assert [row["size"] for row in paired["fixed_size_differences"]] == [0.3, 0.5]
    assert [m["seed"] for m in paired["many_sizes"]] == [0, 1]
    assert {row["label"] for row in paired["many_sizes"][0]["rows"]} == expected
    report = (out / "report.md").read_text()
    assert "## LoRITa N=2 + FT (named before the runs) against the best alternative" in report
    assert f"LoRITa N=2 + FT {columns['LoRITa N=2 + FT']['exposure']:.2f}" in report
    assert "of 2 seeds plateaued" in report and "K sizes from one training (seed 0)" in report


@pytest.mark.slow
def test_cut_rule_loss_cuts_every_svd_column_by_least_loss(tmp_path):
    flat = {**TINY, "seeds": [0], "calibrate": 2, "small_dense": False, "torch_pruning": False, "cut_rule": "loss"}
    results = run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "loss", progress=False)
    assert results["spec"]["cut_rule"] == "loss"
    columns = results["runs"][0]["columns"]
    data = ExperimentSpec.from_flat(flat).setup.data_spec(0).load()
    batches = training_batches(data, 32, 0)
    for label, source, how in [("plain + SVD", "depth1", Budget(params=1.0)),
                               ("LoRITa N=2", "depth2", Budget(params=1.0)),
                               ("plain + whitened SVD", "depth1", Budget(params=1.0, calibrate=2))]:
        model = merge(load(tmp_path / "loss" / source / "model.lorita")).eval()
        calibration = (x for x, _ in data.train.batches(32, seed=0, epoch=0))  # as the experiment draws them
        spectra = Spectra(model, example_input(data), batches=calibration if how.whitened else None)
        cut = next(c for c in columns[label]["cuts"] if c["size"] == 0.3)
        small, detail = svd_cutter(spectra, how)(0.3)
        assert cut["detail"]["ranks"] == detail["ranks"] and cut["detail"]["threshold"] is None  # no threshold
        recalibrate_batchnorm(small, batches(), max_batches=3)
        assert cut["val_acc"] == evaluate(small, data.val)[0]
    # the uncut columns are searched like the fine-tuned ones (the sweep cuts by threshold): their answer, when
    # they have one, is one of their own cuts
    for label in ("plain + SVD", "LoRITa N=2"):
        chosen = columns[label]["chosen"]
        assert chosen is None or (chosen["params_kept"], chosen["val_acc"]) in \
            {(c["params_kept"], c["val_acc"]) for c in columns[label]["cuts"]}


@pytest.mark.slow
def test_each_side_can_share_its_ranks_out_by_its_own_rule(tmp_path):
    flat = {**TINY, "seeds": [0], "calibrate": 2, "small_dense": False, "torch_pruning": False,
            "lorita_cut_rule": "loss"}
    results = run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "sides", progress=False)
    assert (results["spec"]["cut_rule"], results["spec"]["lorita_cut_rule"]) == ("threshold", "loss")
    columns = results["runs"][0]["columns"]
    for label, column in columns.items():  # the least-loss rule sets no threshold; the global one always does
        thresholds = [cut["detail"]["threshold"] for cut in column["cuts"]]
        assert thresholds and all((t is None) == column["lorita"] for t in thresholds), label


def test_a_cut_that_keeps_every_layer_dense_keeps_its_batchnorm_statistics():
    net = _bn_net()
    small, results = compress_model(net, load_dataset("digits"), Ranks({}), recipe=TrainConfig(device="cpu"),
                                    batchnorm=5, progress=False)
    assert torch.equal(small[2].running_mean, net[2].running_mean) and "batchnorm_batches" not in results


@pytest.mark.slow
def test_a_setting_that_changes_one_side_reuses_the_other_sides_trainings(tmp_path):
    flat = {"name": "base", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
            "depths": [1, 2], "points": 3, "refine_steps": 0, "sizes": [0.5], "refine_sizes": 0, "finetune_epochs": 1,
            "torch_pruning": False, "train": {"epochs": 3, "batch_size": 64, "device": "cpu"}}
    base = run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "base", progress=False)
    (tmp_path / "base" / "depth1-short" / "notes.txt").write_text("mine")  # not lorita's: that run is not taken
    changed = {**flat, "lorita_train": {"weight_decay": 0.003}, "reuse": [str(tmp_path / "base")]}
    grid = run_experiment(ExperimentSpec.from_flat(changed), tmp_path / "g", progress=False)

    def results(root, name):
        return json.loads((tmp_path / root / name / "results.json").read_text())

    assert results("g", "depth1") == results("base", "depth1")  # copied: the same run, its seconds included
    assert (tmp_path / "g" / "depth1" / "model.lorita").read_bytes() == \
        (tmp_path / "base" / "depth1" / "model.lorita").read_bytes()
    assert results("g", "depth1-short")["seconds"] != results("base", "depth1-short")["seconds"]  # trained again
    assert json.loads((tmp_path / "g" / "depth2" / "config.json").read_text())["train"]["weight_decay"] == 0.003
    plain, again = base["runs"][0]["columns"]["plain + SVD"], grid["runs"][0]["columns"]["plain + SVD"]
    assert again["cuts"][0]["val_acc"] == plain["cuts"][0]["val_acc"]  # the reused model cuts exactly as before
    with pytest.raises(LoritaError, match=r"an experiment whose trainings it reuses \(reuse\)"):
        run_experiment(ExperimentSpec.from_flat(changed), tmp_path / "base" / "inside", progress=False)


@pytest.mark.parametrize("ours,theirs,line", [
    (None, None, "No model, LoRITa or alternative, reached the target (validation accuracy 88.00%, 1 point below "
                 "the plain model)."),
    ({"label": "LoRITa N=2 + FT", "params_kept": 0.1}, None,
     "LoRITa (LoRITa N=2 + FT) keeps 10.0% of the parameters at the target (validation accuracy 88.00%, 1 point "
     "below the plain model); no alternative reached it."),
])
def test_the_headline_says_which_side_missed_a_target_set_by_another_plain_model(ours, theirs, line):
    results = {"seeds": [0], "headline": {"lorita": ours, "best_alternative": theirs, "target_val_acc": 88.0}}
    assert headline_line(results) == line


def _tiny_experiment(epochs: int) -> dict:
    return {"name": "base", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 8, "hidden_layers": 1},
            "depths": [1, 2], "points": 3, "refine_steps": 0, "sizes": [0.5], "refine_sizes": 0, "finetune_epochs": 1,
            "torch_pruning": False, "train": {"epochs": epochs, "batch_size": 64, "device": "cpu"}}


def _metrics(folder: Path) -> list[str]:
    return (folder / "metrics.csv").read_text().splitlines()


def test_a_training_stopped_part_way_is_continued_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch, caplog):
    flat, killed, real_train = _tiny_experiment(3), tmp_path / "killed" / "depth2", runs_train.train

    def snapshot_after_epoch_2(model, data, config, *, out_dir=None, callbacks=(), **kwargs):
        def snapshot(event, info):  # what a kill right after epoch 2 leaves: its checkpoint written, no results
            if event == "epoch_end" and info["epoch"] == 2 and Path(out_dir).name == "depth2":
                shutil.copytree(out_dir, killed)
                (killed / ".checkpoint.pt.0a1b2c3d.tmp").write_bytes(b"half a checkpoint")  # a kill mid-write
        return real_train(model, data, config, out_dir=out_dir, callbacks=[*callbacks, snapshot], **kwargs)

    monkeypatch.setattr(runs_train, "train", snapshot_after_epoch_2)
    whole = run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "whole", progress=False)
    monkeypatch.setattr(runs_train, "train", real_train)
    assert len(_metrics(killed)) == 3  # the header and epochs 1 and 2
    with caplog.at_level(logging.INFO):
        again = run_experiment(ExperimentSpec.from_flat({**flat, "reuse": [str(tmp_path / "killed")]}),
                               tmp_path / "again", progress=False)
    assert "depth2: continued from" in caplog.text and "after epoch 2" in caplog.text
    assert "resuming from" in caplog.text and "depth1: continued" not in caplog.text
    assert not list((tmp_path / "again" / "depth2").glob(".*.tmp"))  # only the run's own files were copied
    rows = _metrics(tmp_path / "again" / "depth2")
    assert rows[:3] == _metrics(killed) and len(rows) == 4  # epochs 1 and 2 as they ran, epoch 3 continued
    first, resumed = (json.loads((tmp_path / r / "depth2" / "results.json").read_text()) for r in ("whole", "again"))
    assert resumed.pop("resumed_after_epoch") == 2 and "resumed_after_epoch" not in first
    seconds = [float(row.split(",")[-1]) for row in rows[1:]]
    assert resumed["train_seconds"] == pytest.approx(sum(seconds))  # both parts' epochs
    assert {k: v for k, v in resumed.items() if "seconds" not in k} == \
        {k: v for k, v in first.items() if "seconds" not in k}
    weights = [load(tmp_path / r / "depth2" / "model.lorita").state_dict() for r in ("whole", "again")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    def without_seconds(results):  # the experiment's results, as the uninterrupted one's but for the seconds
        return json.loads(json.dumps(results), object_hook=lambda d: {k: v for k, v in d.items()
                                                                     if "seconds" not in k and k != "folder"})

    assert without_seconds(again["runs"][0]["columns"]) == without_seconds(whole["runs"][0]["columns"])


def test_only_a_stopped_training_of_the_same_config_and_recipe_holding_only_lorita_files_is_continued(
        tmp_path, caplog):
    run_experiment(ExperimentSpec.from_flat(_tiny_experiment(2)), tmp_path / "first", progress=False)
    finished, killed = tmp_path / "first" / "depth2", tmp_path / "killed" / "depth2"
    killed.mkdir(parents=True)
    for name in ("config.json", "checkpoint.pt"):
        shutil.copyfile(finished / name, killed / name)
    config = RunConfig.from_dict(json.loads((killed / "config.json").read_text()))
    other = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=3))
    assert stopped_at(killed, config) == 2  # a kill after the last epoch, before the results: continued (no epochs)
    assert stopped_at(killed, other) is None and stopped_at(finished, config) is None
    (killed / "notes.txt").write_text("mine")  # not lorita's: the folder is not taken
    assert stopped_at(killed, config) is None
    assert copy_stopped_run(tmp_path / "killed", tmp_path / "out" / "depth2", config) is None
    assert not (tmp_path / "out").exists() and (killed / "notes.txt").read_text() == "mine"
    (killed / "notes.txt").unlink()
    written = json.loads((killed / "config.json").read_text())
    (killed / "config.json").write_text(json.dumps({**written, "train": {**written["train"], "epochs": 3}}))
    with caplog.at_level(logging.WARNING):  # config.json says 3 epochs, the checkpoint's recipe 2: not taken
        assert stopped_at(killed, other) is None
    assert "depth2: not continued (its checkpoint's recipe" in caplog.text
    (killed / "config.json").write_text(json.dumps(written))
    (killed / "checkpoint.pt").write_bytes(b"not a checkpoint")  # damaged: trained from the start, said so
    with caplog.at_level(logging.WARNING):
        assert stopped_at(killed, config) is None
    assert "cannot read checkpoint" in caplog.text
    (killed / "checkpoint.pt").unlink()
    (killed / "checkpoint.pt").symlink_to(finished / "checkpoint.pt")  # a link: not lorita's either
    assert stopped_at(killed, config) is None


def test_the_report_names_the_alternatives_left_out_and_a_headline_chosen_after_the_run():
    lines = left_out_lines({"spec": {"model": "fcn", "small_dense": False, "calibrate": 0, "pre_registered": None}})
    assert "the smaller dense model trained directly" in lines[0] and "whitened SVD" in lines[0]
    assert "chosen after the run" in lines[1]
    gpt = left_out_lines({"spec": {"model": "gpt", "small_dense": False, "calibrate": 0, "pre_registered": "L"}})
    assert gpt == ["Left out of this comparison: whitened SVD (`--calibrate 8`, `calibrate`). The best alternative "
                   "above is the best of the columns run."]  # no width to narrow: no smaller dense model offered
    assert left_out_lines({"spec": {"model": "vgg_small", "small_dense": True, "calibrate": 8,
                                    "pre_registered": "L"}}) == []


def test_the_headline_names_the_pre_registered_column_when_it_missed():
    runs = [{"seed": 0, "headline": {"lorita": None}}, {"seed": 1, "headline": {"lorita": {"label": "x"}}}]
    results = {"seeds": [0, 1], "spec": {"pre_registered": "LoRITa N=2 + FT"}, "runs": runs, "max_drop": 2.0,
               "headline": {"lorita": None, "best_alternative": {"label": "small dense", "params_kept": 0.2},
                            "target_val_acc": 88.0}}
    assert headline_line(results) == ("LoRITa N=2 + FT, the LoRITa column named before the run, did not reach the "
                                      "target on seed 0 (validation accuracy 88.00%, 2 points below the plain model; "
                                      "mean over 2 seeds); the best alternative, small dense, keeps 20.0% of the "
                                      "parameters there.")


def test_the_headline_says_why_a_named_column_falls_short_of_the_bar_and_reads_an_older_file_plainly():
    head = {"lorita": {"label": "LoRITa N=2 + FT", "params_kept": 0.1}, "target_val_acc": 88.0, "total_epochs": 12,
            "best_alternative": {"label": "small dense", "params_kept": 0.2}, "ratio": 0.5, "bar_ratio": 0.5,
            "bar_met": False, "bar_short_of": ["1 seed run, 5 needed"]}
    results = {"seeds": [0], "spec": {"pre_registered": "LoRITa N=2 + FT"}, "headline": head}
    assert headline_line(results).endswith("ratio **0.50** (the bar, at most 0.5, judged on the geometric mean over "
                                           "seeds below, is NOT met: 1 seed run, 5 needed).")
    older = {**results, "headline": {**head, "lorita": {"label": "LoRITa N=3", "params_kept": 0.1}}}
    assert headline_line(older).endswith("(the bar, at most 0.5, is NOT met).")  # its headline is not the named one
