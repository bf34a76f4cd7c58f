"""Penalty exposure and the plateau test: the recipe's exposure is the sum over the steps the loop really takes."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from lorita.data import Split
from lorita.errors import LoritaError
from lorita.train import TrainConfig, train
from lorita.train.exposure import describe_exposure, epoch_learning_rates, penalty_exposure, steps_per_epoch
from lorita.train.plateau import plateau_test


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (y * 200 + 20).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return SimpleNamespace(train=Split(x, y, [0.5], [0.4]), val=Split(x[:16], y[:16], [0.5], [0.4]))


def _lr_of_every_step(model, data, config):
    """Train and record the learning rate of every optimizer step the loop takes."""
    seen = []

    def hook(event, info):
        if event == "train_start":
            info["optimizer"].register_step_post_hook(lambda opt, *_: seen.append(opt.param_groups[0]["lr"]))

    train(model, data, config, callbacks=[hook])
    return seen


@pytest.mark.parametrize("n,batch", [(100, 16), (97, 16), (33, 16), (64, 16)])  # 97 = 6*16 + 1: the 1 is dropped
def test_exposure_equals_the_sum_over_the_steps_the_loop_takes(n, batch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.Linear(8, 2))
    config = TrainConfig(epochs=5, batch_size=batch, lr=0.1, momentum=0.8, weight_decay=2e-3, warmup_epochs=2,
                         schedule="cosine", device="cpu")
    lrs = _lr_of_every_step(model, _data(n), config)
    steps = steps_per_epoch(n, batch)
    assert len(lrs) == 5 * steps
    expected = 3 * 2e-3 * sum(lrs) / (1 - 0.8)
    assert penalty_exposure(config, steps, depth=3) == pytest.approx(expected, rel=1e-12)


def test_adamw_exposure_has_no_momentum_divisor():
    sgd = TrainConfig(epochs=4, lr=0.01, weight_decay=0.1, momentum=0.9, schedule="constant")
    adamw = TrainConfig(epochs=4, lr=0.01, weight_decay=0.1, optimizer="adamw", schedule="constant")
    assert penalty_exposure(adamw, 10, 2) == pytest.approx(2 * 0.1 * 0.01 * 40)
    assert penalty_exposure(sgd, 10, 2) == pytest.approx(10 * penalty_exposure(adamw, 10, 2))


def test_exposure_grows_with_depth_and_the_plateau_schedule_gives_an_upper_bound():
    cfg = TrainConfig(epochs=6, lr=0.05, weight_decay=1e-3, schedule="plateau", plateau_patience=0)
    bound = penalty_exposure(cfg, 100, 1)
    assert penalty_exposure(cfg, 100, 3) == pytest.approx(3 * bound)
    assert epoch_learning_rates(cfg) == [0.05] * 6
    used = [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005]  # what a run with reductions records in metrics.csv
    assert penalty_exposure(cfg, 100, 1, used) < bound
    assert "at most" in describe_exposure(cfg, 100, 2)
    assert "at most" not in describe_exposure(TrainConfig(epochs=6), 100, 2)


def test_the_demo_recipe_exposure_matches_the_documented_figure():
    # the demo (12 epochs, SGD 0.05 cosine, weight decay 5e-4, momentum 0.9, 54,000 images, batch 128) at N=2:
    # METHOD.md section 5 places the recipes measured so far at about 0.2 to 1.3
    cfg = TrainConfig(epochs=12, lr=0.05, weight_decay=5e-4)
    steps = steps_per_epoch(54000, 128)
    assert steps == 422
    value = penalty_exposure(cfg, steps, 2)
    assert value == pytest.approx(2 * 5e-4 * 422 * sum(epoch_learning_rates(cfg)) / 0.1)
    assert 1.0 < value < 1.5


def test_exposure_refuses_what_is_not_a_recipe():
    with pytest.raises(LoritaError, match="needs a TrainConfig"):
        penalty_exposure({"epochs": 3}, 10, 2)
    with pytest.raises(LoritaError, match="steps must be an integer"):
        penalty_exposure(TrainConfig(), 0, 2)
    with pytest.raises(LoritaError, match="learning rates must be numbers >= 0"):
        penalty_exposure(TrainConfig(), 10, 2, [0.1, math.nan])


def test_plateau_uses_the_best_so_far_over_the_last_fifth():
    rising = [{"val_acc": a} for a in (80, 85, 88, 89, 89.5, 89.8, 90.0, 90.1, 90.3, 90.5)]
    result = plateau_test(rising)
    assert result["window_epochs"] == 2 and result["gain"] == pytest.approx(0.4)  # 90.5 - 90.1
    assert result["plateau"] is False
    overfits = [{"val_acc": a} for a in (80, 85, 88, 89, 89.5, 89.8, 90.0, 90.1, 89.9, 89.7)]
    assert plateau_test(overfits)["plateau"] is True and plateau_test(overfits)["gain"] == 0.0
    flat = [{"val_acc": a} for a in (80, 85, 88, 90.0, 90.02, 90.05)]  # ceil(6 / 5) = 2 epochs in the window
    assert plateau_test(flat)["plateau"] is True and plateau_test(flat)["window_epochs"] == 2


def test_plateau_on_a_loss_is_a_fall_and_a_single_epoch_cannot_be_judged():
    losses = [{"val_loss": v} for v in (2.0, 1.5, 1.2, 1.1, 0.9)]
    assert plateau_test(losses, key="val_loss")["gain"] == pytest.approx(0.2)
    assert plateau_test([{"val_acc": 90.0}]) == {"plateau": False, "gain": None, "window_epochs": 1,
                                                 "min_gain": 0.1, "key": "val_acc"}
    with pytest.raises(LoritaError, match="no 'val_acc'"):
        plateau_test([{"val_loss": 1.0}])
    with pytest.raises(LoritaError, match="diverged"):
        plateau_test([{"val_acc": 1.0}, {"val_acc": math.nan}])


def test_a_train_run_records_its_exposure_and_plateau_test(tmp_path, caplog):
    from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, train_run

    config = RunConfig(ModelSpec("fcn", {"width": 8, "hidden_layers": 1},
                                 {"num_classes": 10, "in_channels": 1, "image_size": 8}),
                       DataSpec("digits"), ComposeSpec(depth=2), TrainConfig(epochs=2, device="cpu"))
    data = config.dataset.load()
    with caplog.at_level("INFO", logger="lorita.runs.train"):
        train_run(tmp_path / "run", config, data, progress=False)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    steps = steps_per_epoch(len(data.train), 128)
    assert results["steps_per_epoch"] == steps
    assert results["penalty_exposure"] == pytest.approx(penalty_exposure(config.train, steps, 2))
    assert set(results["plateau"]) == {"plateau", "gain", "window_epochs", "min_gain", "key"}
    assert any("penalty exposure" in r.getMessage() for r in caplog.records)
