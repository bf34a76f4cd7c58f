"""The stronger alternatives: the smaller dense model, BatchNorm re-estimating cutters, iterative pruning."""

import dataclasses

import pytest
import torch
from torch import nn

from lorita.data import load_dataset
from lorita.errors import LoritaError
from lorita.prune import available as tp_available
from lorita.runs import ExperimentSpec, run_experiment, train_run
from lorita.runs.alternatives import iterative_prune_cutter, recalibrating, split_finetune, training_batches
from lorita.runs.config import ModelSpec
from lorita.models.registry import width_argument
from lorita.runs.small_dense import (count_params, small_dense_cutter, small_dense_folder, train_in_memory,
                                     width_for_params)
from lorita.train import TrainConfig

INPUTS = {"num_classes": 10, "in_channels": 1, "image_size": 8}
needs_tp = pytest.mark.skipif(not tp_available(), reason="torch-pruning is not installed")


@pytest.mark.parametrize("target", [500, 1000, 5000, 20_000])
def test_the_small_model_is_the_widest_within_the_target(target):
    spec = ModelSpec("fcn", {"width": 64, "hidden_layers": 2}, INPUTS)
    width, params = width_for_params(spec, target)
    assert params <= target and params == count_params(ModelSpec("fcn", {"width": width, "hidden_layers": 2},
                                                                  INPUTS).build())
    if width < 64:  # one unit wider would break the target
        assert count_params(ModelSpec("fcn", {"width": width + 1, "hidden_layers": 2}, INPUTS).build()) > target


def test_a_width_multiplier_is_searched_as_a_float():
    spec = ModelSpec("vgg16", {"width_multiplier": 0.25}, INPUTS)
    full = count_params(spec.build())
    m, params = width_for_params(spec, 0.3 * full)
    assert isinstance(m, float) and 0 < m < 0.25 and params <= 0.3 * full
    # the bisection ends on the jump: a hair wider adds a channel somewhere and breaks the target
    assert count_params(ModelSpec("vgg16", {"width_multiplier": m + 1e-12}, INPUTS).build()) > 0.3 * full


def test_models_without_a_width_and_unreachable_sizes_are_named():
    assert width_argument("fcn") == "width" and width_argument("vgg16") == "width_multiplier"
    with pytest.raises(LoritaError, match="no width argument"):
        width_argument("resnet20")
    with pytest.raises(LoritaError, match="even width=1 gives"):
        width_for_params(ModelSpec("fcn", {"width": 8}, INPUTS), 10)


def test_the_small_dense_column_trains_a_model_of_the_asked_size():
    data = load_dataset("digits")
    spec = ModelSpec("fcn", {"width": 32, "hidden_layers": 1}, data.model_inputs)
    original = count_params(spec.build())
    cut = small_dense_cutter(spec, data, TrainConfig(epochs=2, device="cpu"), original)
    model, detail = cut(0.3)
    assert count_params(model) == detail["params"] <= 0.3 * original
    assert not model.training and detail["best_epoch"] in (1, 2)
    assert cut(1e-4) is None  # no width is that small
    again, _ = cut(0.3)  # seeded: the same model twice
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_a_smaller_dense_model_trained_as_an_experiment_s_run_is_the_one_trained_in_memory(tmp_path):
    """An experiment trains each smaller dense model as a run folder of its seed; earlier versions trained it in
    memory: the same recipe gives the same model, epoch and figures either way."""
    data = load_dataset("digits")
    spec = ModelSpec("fcn", {"width": 6, "hidden_layers": 1}, data.model_inputs)
    experiment = ExperimentSpec.from_flat({"name": "e", "model": "fcn", "dataset": "digits", "depths": [1, 2],
                                           "model_kwargs": {"width": 16, "hidden_layers": 1},
                                           "train": {"epochs": 3, "batch_size": 64, "device": "cpu", "seed": 3}})
    config = dataclasses.replace(experiment.run_config(data, 1, experiment.recipe.train), model=spec)
    model, _, best_epoch = train_in_memory(data)(spec, experiment.recipe.train)
    run = train_run(tmp_path / small_dense_folder(spec), config, data, progress=False)
    assert run.results["best_epoch"] == best_epoch and run.folder.name == "small-dense-6"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), run.model.state_dict().values()))


def test_split_finetune_keeps_the_total_epochs():
    for epochs in (1, 2, 5, 8):
        for rounds in range(1, epochs + 1):
            between, last = split_finetune(TrainConfig(epochs=max(epochs, 1)), rounds)
            total = last.epochs + (0 if between is None else between.epochs * (rounds - 1))
            assert total == epochs and last.epochs >= 1 and (between is None or between.epochs >= 1)
    with pytest.raises(LoritaError, match="rounds must be an integer from 1 to 2"):
        split_finetune(TrainConfig(epochs=2), 3)


def test_recalibrating_cutter_passes_misses_through_and_refreshes_statistics():
    data = load_dataset("digits")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10)).eval()
    cut = recalibrating(lambda size: None if size < 0.1 else (net, {"x": 1}), training_batches(data, 64, 0),
                        max_batches=3)
    assert cut(0.05) is None
    model, detail = cut(0.5)
    assert detail["x"] == 1 and detail["batchnorm_batches"] == 3 and int(model[2].num_batches_tracked) == 3
    assert not model.training


@needs_tp
@pytest.mark.parametrize("importance", ["l1", "l2", "taylor"])
def test_iterative_pruning_reaches_the_size_in_rounds(importance):
    data = load_dataset("digits")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32),
                        nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)).eval()
    between, _ = split_finetune(TrainConfig(epochs=2, device="cpu"), 2)
    cut = iterative_prune_cutter(net, data.example_input(), rounds=2, between=between, data=data,
                                 importance=importance, taylor_batches=training_batches(data, 64, 0))
    small, detail = cut(0.4)
    assert count_params(small) <= 0.4 * count_params(net)
    assert detail["rounds"] == 2 and len(detail["steps"]) == 2 and detail["importance"] == importance
    assert count_params(net) == 64 * 32 + 32 + 64 + 32 * 32 + 32 + 64 + 330  # the model given is untouched
    assert small(data.example_input()).shape == (1, 10)


def test_iterative_pruning_checks_its_settings_first():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(LoritaError, match="needs between"):
        iterative_prune_cutter(net, torch.zeros(1, 64), rounds=2)
    with pytest.raises(LoritaError, match="needs taylor_batches"):
        iterative_prune_cutter(net, torch.zeros(1, 64), importance="taylor")


def test_two_sizes_that_give_one_width_train_it_once(tmp_path):
    """No model fits between 30% and 31% of this FCN: both sizes get width 2, whose run folder is made once."""
    spec = ExperimentSpec.from_flat({"name": "e", "model": "fcn", "dataset": "digits", "depths": [1, 2], "points": 3,
                                     "model_kwargs": {"width": 8, "hidden_layers": 1}, "sizes": [0.3, 0.31],
                                     "small_dense": True, "small_dense_refine": 0,
                                     "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}})
    results = run_experiment(spec, tmp_path / "e", progress=False)
    cuts = results["runs"][0]["columns"]["small dense"]["cuts"]
    at = {c["size"]: c for c in cuts}
    assert at[0.3]["detail"]["width"] == at[0.31]["detail"]["width"] == 2 and at[0.3]["val_acc"] == at[0.31]["val_acc"]
    assert sorted(p.name for p in (tmp_path / "e").glob("small-dense-*")) == \
        sorted({f"small-dense-{c['detail']['width']}" for c in cuts})
