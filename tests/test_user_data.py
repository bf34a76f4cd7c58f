"""lorita.train.train on the user's own (train, val) Datasets or DataLoaders."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import lorita
from lorita.errors import LoritaError
from lorita.train import TrainConfig, evaluate, train
from lorita.train.user_data import DatasetSplit, LoaderSplit


def blobs(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 6, generator=g) * 0.3 + nn.functional.one_hot(y, 6).float() * 2  # separable
    return TensorDataset(x, y)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


CONFIG = TrainConfig(epochs=3, batch_size=16, lr=0.1, device="cpu")


def test_tensor_datasets_train_and_the_run_repeats_exactly():
    data = (blobs(256, 0), blobs(48, 1))
    first, second = net(), net()
    result = train(first, data, CONFIG)
    train(second, data, CONFIG)
    assert result.best_val_acc == 100.0 and len(result.history) == 3
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_composed_model_trains_on_dataloaders_with_their_batch_size():
    loaders = (DataLoader(blobs(256, 0), batch_size=8, shuffle=True), DataLoader(blobs(48, 1), batch_size=100))
    model = lorita.compose(net(), depth=3)
    steps = []
    result = train(model, loaders, CONFIG, callbacks=[lambda event, info: steps.append(info["config"].batch_size)])
    assert result.best_val_acc == 100.0
    assert set(steps) == {8}  # the loader's batches, not the config's 16


def test_dataset_split_follows_the_batching_contract_over_ranks():
    split = DatasetSplit(blobs(10, 0), "train")
    one = [y for _, y in split.batches(4, shuffle=True, seed=3, epoch=1)]
    parts = [[y for _, y in split.batches(4, shuffle=True, seed=3, epoch=1, rank=r, world_size=2)] for r in (0, 1)]
    for whole, a, b in zip(one, *parts):
        assert torch.equal(whole, torch.cat([a, b]))  # the union over ranks is the one-process batch


@pytest.mark.parametrize("data,match", [
    ((TensorDataset(torch.zeros(4, 2)), TensorDataset(torch.zeros(4, 2))), r"\(input, target\) pairs"),
    ((blobs(8, 0), [1, 2]), "data must be a \\(train, val\\) pair"),
    ((blobs(8, 0), TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))),
     r"data\.val is empty; .* give more training images .* or a larger share; .* pass a non-empty val split"),
    ((TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)), blobs(8, 0)),
     r"^data\.train is empty; training needs samples in both train and val: pass a non-empty train split$"),
])
def test_wrong_data_is_named(data, match):
    with pytest.raises(LoritaError, match=match):
        train(net(), data, CONFIG)


def test_loaders_refused_where_lorita_must_batch():
    loader = DataLoader(blobs(8, 0), batch_size=4)
    with pytest.raises(LoritaError, match="under torchrun pass Datasets"):
        list(LoaderSplit(loader, "train").batches(4, world_size=2))
    with pytest.raises(LoritaError, match="augment"):
        train(net(), (blobs(8, 0), blobs(8, 1)), TrainConfig(epochs=1, augment=True, device="cpu"))

    class Stream(IterableDataset):
        def __iter__(self):
            return iter([])

    with pytest.raises(LoritaError, match="has no len"):
        train(net(), (Stream(), blobs(8, 1)), CONFIG)


@pytest.mark.parametrize("targets, match", [
    (torch.arange(8) % 3 - 1, r"targets span -1\.\.1, but the model gives 3 classes"),
    (torch.tensor([0, 1, -100, 3, 0, 1, 2, -100]), r"targets span 0\.\.3, .* \(-100 marks a target to skip\)$"),
    (torch.full((8,), 7), r"targets span 7\.\.7, but the model gives 3 classes \(0\.\.2\)"),
    (torch.zeros(8), r"targets must be class indices \(integers\), got dtype torch.float32"),
])
def test_targets_that_are_not_the_model_s_classes_are_named(targets, match):
    data = TensorDataset(torch.randn(8, 4), targets)
    net = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(LoritaError, match=match):
        train(net, (data, data), TrainConfig(epochs=1, batch_size=4, device="cpu"))


def test_targets_of_minus_100_are_skipped_in_training_and_evaluation():
    data = blobs(24, 0)
    x, y = data.tensors
    skipped = torch.tensor([1, 4, 5, 11, 20])
    y_skip = y.clone()
    y_skip[skipped] = -100
    kept = torch.ones(24, dtype=torch.bool)
    kept[skipped] = False
    full_batch = TrainConfig(epochs=3, batch_size=24, lr=0.1, device="cpu")  # one step per epoch: order free
    with_skipped, without = net(), net()
    a = train(with_skipped, (TensorDataset(x, y_skip), TensorDataset(x, y_skip)), full_batch)
    b = train(without, (TensorDataset(x[kept], y[kept]), TensorDataset(x[kept], y[kept])), full_batch)
    for p, q in zip(with_skipped.parameters(), without.parameters()):
        torch.testing.assert_close(p, q)  # the mean over the 19 scored targets, not over 24
    for row_a, row_b in zip(a.history, b.history, strict=True):
        assert row_a["train_acc"] == row_b["train_acc"] and row_a["val_acc"] == row_b["val_acc"]
        assert row_a["train_loss"] == pytest.approx(row_b["train_loss"], rel=1e-6)
        assert row_a["val_loss"] == pytest.approx(row_b["val_loss"], rel=1e-6)


def test_token_targets_of_minus_100_are_left_out_of_a_language_model_s_scores():
    class Tokens(nn.Module):
        def forward(self, ids):
            return nn.functional.one_hot(ids % 4, 4).float()  # predicts id % 4 at every position

    ids = torch.tensor([[0, 1, 2, 3], [1, 1, 1, 1]])
    targets = torch.tensor([[0, 1, 3, -100], [-100, -100, 1, 2]])  # 5 scored: 3 right
    acc, loss = evaluate(Tokens(), DatasetSplit(TensorDataset(ids, targets), "val"))
    assert acc == 60.0
    right, wrong = nn.functional.cross_entropy(torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([0])).item(), \
        nn.functional.cross_entropy(torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([1])).item()
    assert loss == pytest.approx((3 * right + 2 * wrong) / 5)
    with pytest.raises(LoritaError, match="every target of the split is -100"):
        evaluate(Tokens(), DatasetSplit(TensorDataset(ids, torch.full((2, 4), -100)), "val"))


def test_uint8_targets_of_class_156_are_scored_not_taken_for_minus_100():
    x, y = torch.randn(8, 4), torch.tensor([156, 156, 3, 156, 0, 156, 156, 199])  # -100 as uint8 wraps to 156
    results = []
    for targets in (y, y.to(torch.uint8)):
        torch.manual_seed(0)
        data = TensorDataset(x, targets)
        results.append(train(nn.Linear(4, 200), (data, data), TrainConfig(epochs=1, batch_size=8, device="cpu")))
    assert results[0].history[0]["train_loss"] == results[1].history[0]["train_loss"]
    assert results[0].history[0]["train_acc"] == results[1].history[0]["train_acc"]


def test_a_training_split_whose_every_target_is_minus_100_is_refused():
    data = TensorDataset(torch.randn(8, 4), torch.full((8,), -100))
    with pytest.raises(LoritaError, match="every target of the training split is -100"):
        train(nn.Linear(4, 3), (data, blobs(8, 1)), TrainConfig(epochs=1, batch_size=4, device="cpu"))


def test_int32_and_uint8_targets_train_as_int64_ones():
    x, y = torch.randn(8, 4), torch.arange(8) % 3
    results = []
    for targets in (y, y.int(), y.to(torch.uint8)):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 3))
        data = TensorDataset(x, targets)
        results.append(train(net, (data, data), TrainConfig(epochs=1, batch_size=4, device="cpu")).best_val_acc)
    assert results[0] == results[1] == results[2]
