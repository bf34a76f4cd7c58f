"""lorita.train.finetune: the best validation epoch, or the model as it was when no epoch beats it."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lorita.data import Split
from lorita.train import TrainConfig, evaluate, finetune


def data():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (90,), generator=g)
    x = (torch.randint(0, 60, (90, 1, 2, 2), generator=g) + 90 * y.view(-1, 1, 1, 1)).to(torch.uint8)
    return SimpleNamespace(train=Split(x[:60], y[:60], [0.4], [0.3]), val=Split(x[60:], y[60:], [0.4], [0.3]))


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_an_epoch_that_beats_the_start_is_kept():
    model, d = net(), data()
    start = evaluate(model, d.val)[0]
    kept = finetune(model, d, TrainConfig(epochs=4, batch_size=10, lr=0.2, device="cpu"))
    assert kept.epoch == kept.result.best_epoch >= 1 and kept.score == kept.result.best_val_acc > start
    assert all(torch.equal(v, kept.result.best_state[k]) for k, v in model.state_dict().items())
    assert evaluate(model, d.val)[0] == kept.score


def test_the_model_as_it_was_is_kept_when_no_epoch_beats_it():
    model, d = net(), data()
    finetune(model, d, TrainConfig(epochs=6, batch_size=10, lr=0.2, device="cpu"))
    trained, acc = state(model), evaluate(model, d.val)[0]
    # a learning rate that wrecks the weights: every epoch scores below the start
    kept = finetune(model, d, TrainConfig(epochs=2, batch_size=10, lr=50.0, momentum=0.0, device="cpu"))
    assert kept.epoch == 0 and kept.score == acc and kept.result.best_val_acc < acc
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())


def test_a_tie_keeps_the_start_and_a_given_start_score_is_the_bar():
    model, d = net(), data()
    before = state(model)
    kept = finetune(model, d, TrainConfig(epochs=2, batch_size=10, lr=0.2, device="cpu"), start_score=100.0)
    assert kept.epoch == 0 and kept.score == 100.0  # no epoch can beat 100%: the start stays
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("select_by", ["val_acc", "val_loss"])
def test_the_start_is_scored_by_the_recipe_s_select_by(select_by):
    model, d = net(), data()
    acc, loss = evaluate(model, d.val)
    recipe = TrainConfig(epochs=1, batch_size=10, lr=50.0, momentum=0.0, device="cpu", select_by=select_by)
    kept = finetune(model, d, recipe)
    assert kept.epoch == 0 and kept.score == (acc if select_by == "val_acc" else -loss)


def test_a_compressed_run_keeps_its_cut_model_when_fine_tuning_cannot_beat_it():
    from lorita.cutspec import Ranks
    from lorita.runs import compress_model

    d = data()
    d.test, d.example_input = d.val, lambda: torch.zeros(1, 1, 2, 2)
    model = net()
    finetune(model, d, TrainConfig(epochs=8, batch_size=10, lr=0.2, device="cpu"))
    model.eval()
    assert evaluate(model, d.val)[0] == 100.0  # separable: nothing left to gain on validation
    recipe = TrainConfig(epochs=2, batch_size=10, lr=0.05, device="cpu")
    small, results = compress_model(model, d, Ranks({"1": 4}), finetune=recipe, progress=False)
    cut, finetuned = results["after_cut"], results["after_finetune"]
    assert cut["val_acc"] == 100.0 and finetuned["epoch_kept"] == 0  # a tie keeps the cut model
    assert finetuned["val_loss"] == cut["val_loss"] and finetuned["test_loss"] == cut["test_loss"]


def test_a_pair_of_datasets_is_taken_as_train_takes_it():
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (40,), generator=g)
    x = torch.randn(40, 1, 2, 2, generator=g) + y.view(-1, 1, 1, 1).float()
    pair = (TensorDataset(x[:30], y[:30]), TensorDataset(x[30:], y[30:]))
    model = net()
    start = evaluate(model, _split(pair[1]))[0]
    kept = finetune(model, pair, TrainConfig(epochs=3, batch_size=10, lr=0.2, device="cpu"))
    assert kept.score >= start and (kept.epoch == 0) == (kept.score == start)


def _split(dataset):
    from lorita.train.user_data import DatasetSplit
    return DatasetSplit(dataset, "val")


def test_a_fine_tuning_that_diverges_gives_the_model_its_starting_weights_back():
    from lorita.errors import LoritaError

    model, d = net(), data()
    before = state(model)
    with pytest.raises(LoritaError, match="training diverged"):
        finetune(model, d, TrainConfig(epochs=1, batch_size=10, lr=1e6, momentum=0.0, device="cpu"))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_compressed_model_fine_tuned_by_loss_is_compared_by_loss_not_by_accuracy():
    from lorita.cutspec import Ranks
    from lorita.runs import compress_model

    d = data()
    d.test, d.example_input = d.val, lambda: torch.zeros(1, 1, 2, 2)
    model = net()
    finetune(model, d, TrainConfig(epochs=8, batch_size=10, lr=0.2, device="cpu"))
    by_loss = TrainConfig(epochs=3, batch_size=10, lr=0.1, device="cpu", select_by="val_loss")
    small, results = compress_model(model.eval(), d, Ranks({"1": 1, "3": 1}), finetune=by_loss, progress=False)
    cut, finetuned = results["after_cut"], results["after_finetune"]
    assert finetuned["epoch_kept"] >= 1 and finetuned["val_loss"] < cut["val_loss"]  # minus a loss vs a percentage


def test_a_column_fine_tuned_by_loss_is_measured_in_the_experiment_s_accuracy():
    from lorita.profile import profile
    from lorita.runs.compare import Column, measure, svd_cutter
    from lorita.spectra import Spectra

    d = data()
    d.test = d.val
    model = net()
    finetune(model, d, TrainConfig(epochs=8, batch_size=10, lr=0.2, device="cpu"))
    example = torch.zeros(1, 1, 2, 2)
    by_loss = TrainConfig(epochs=3, batch_size=10, lr=0.1, device="cpu", select_by="val_loss")
    column = Column("svd + FT", False, svd_cutter(Spectra(model.eval(), example)), by_loss, 0.0, 8)
    cut = measure(column, 0.8, d, profile(model, example), example, progress=False)
    assert cut.finetune_epoch_kept >= 1  # the epochs' minus-losses were not compared with the cut's percentage
    assert cut.val == evaluate(cut.detail["model"], d.val)[0]  # in accuracy, the experiment's metric
