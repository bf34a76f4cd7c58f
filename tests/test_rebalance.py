"""Rebalancing thin pairs before fine-tuning (``lorita.rebalance_pairs``) and the experiment setting that does it
for every fine-tuned column (``finetune_rebalance``)."""

import copy

import pytest
import torch
from torch import nn

import lorita
from lorita import LoritaError
from lorita.data import load_dataset
from lorita.profile import profile
from lorita.runs import ExperimentSpec, run_experiment
from lorita.runs.compare import Column, measure
from lorita.runs.experiment import measured_cuts_key
from lorita.train import TrainConfig, evaluate, finetune

BASE = {"name": "x", "model": "fcn", "dataset": "digits"}


def _with_small_directions(pair: nn.Module, scale: float = 1e-3) -> nn.Module:
    """``pair`` with its last two directions shrunk in both factors (as weight decay leaves them)."""
    with torch.no_grad():
        pair[0].weight[-2:].mul_(scale)
        pair[1].weight[:, -2:].mul_(scale)
    return pair


def _pairs() -> nn.Module:
    torch.manual_seed(0)
    conv = _with_small_directions(lorita.truncate(nn.Conv2d(3, 8, 3, padding=1), 6))
    linear = _with_small_directions(lorita.truncate(nn.Linear(8 * 16, 10), 7))
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), linear).eval()


def _row_norms(pair: nn.Module) -> torch.Tensor:
    return pair[0].weight.detach().flatten(1).norm(dim=1)


def test_the_products_and_the_outputs_are_unchanged():
    net, x = _pairs(), torch.randn(4, 3, 4, 4)
    before = net(x)
    products = [p.weight.detach().clone() for p in (net[0], net[3])]
    assert lorita.rebalance_pairs(net, 0.9) == 2
    assert torch.allclose(net(x), before, atol=1e-5)
    for pair, product in zip((net[0], net[3]), products):
        assert torch.allclose(pair.weight, product, atol=1e-6)


@pytest.mark.parametrize("quantile", [0.5, 0.9, 1.0])
def test_no_first_factor_row_is_shorter_than_the_layers_quantile(quantile):
    net = _pairs()
    floors = [torch.quantile(_row_norms(p), quantile) for p in (net[0], net[3])]
    longer = [_row_norms(p) > f for p, f in zip((net[0], net[3]), floors)]
    kept = [_row_norms(p)[m].clone() for p, m in zip((net[0], net[3]), longer)]
    lorita.rebalance_pairs(net, quantile)
    for pair, floor, mask, norms in zip((net[0], net[3]), floors, longer, kept):
        assert torch.all(_row_norms(pair) >= floor * (1 - 1e-5))
        assert torch.allclose(_row_norms(pair)[mask], norms)  # rows above the floor as they were


def test_a_zero_direction_and_a_model_without_pairs_are_left_as_they_are():
    pair = _with_small_directions(lorita.truncate(nn.Linear(6, 5), 4), scale=0.0)
    first, second = pair[0].weight.clone(), pair[1].weight.clone()
    lorita.rebalance_pairs(nn.Sequential(pair), 0.9)
    assert torch.equal(pair[0].weight[-2:], first[-2:]) and torch.equal(pair[1].weight[:, -2:], second[:, -2:])
    dense = nn.Sequential(nn.Linear(4, 4))
    state = copy.deepcopy(dense.state_dict())
    assert lorita.rebalance_pairs(dense) == 0
    assert all(torch.equal(v, state[k]) for k, v in dense.state_dict().items())
    assert lorita.rebalance_pairs(nn.Sequential(_with_small_directions(lorita.truncate(nn.Linear(6, 5), 4))), 0) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_pair_stays_finite_and_computes_the_same(dtype):
    pair = _with_small_directions(lorita.truncate(nn.Linear(16, 12), 8), scale=1e-6)  # below float16's floor/max
    x = torch.randn(5, 16)
    before = pair(x)
    pair.to(dtype)
    lorita.rebalance_pairs(nn.Sequential(pair), 0.9)
    assert all(torch.isfinite(p).all() for p in pair.parameters())
    assert torch.allclose(pair.float()(x), before, atol=0.05)


def test_a_bias_on_the_first_factor_is_scaled_with_its_row():
    torch.manual_seed(0)
    pair = lorita.LowRankLinear(6, 5, rank=4)
    pair[0] = nn.Linear(6, 4)  # a first factor with its own bias
    _with_small_directions(pair)
    x = torch.randn(3, 6)
    before = pair(x)
    assert lorita.rebalance_pairs(nn.Sequential(pair), 0.9) == 1
    assert torch.allclose(pair(x), before, atol=1e-6)


def test_shared_quantized_and_non_finite_factors_are_refused_before_anything_changes():
    first = _with_small_directions(lorita.truncate(nn.Linear(6, 5), 4))
    other = lorita.truncate(nn.Linear(6, 5), 4)
    other[0] = first[0]  # two pairs, one first factor
    shared = nn.Sequential(first, other)
    state = copy.deepcopy(shared.state_dict())
    with pytest.raises(LoritaError, match=r"pairs '0' and '1' share a factor's tensor"):
        lorita.rebalance_pairs(shared)
    assert all(torch.equal(v, state[k]) for k, v in shared.state_dict().items())
    quantized = lorita.quantize(nn.Sequential(_with_small_directions(lorita.truncate(nn.Linear(6, 5), 4))), "int8")
    with pytest.raises(LoritaError, match=r"pair '0': a factor's weight is computed on access"):
        lorita.rebalance_pairs(quantized)
    clean, broken = (_with_small_directions(lorita.truncate(nn.Linear(6, 5), 4)) for _ in range(2))
    with torch.no_grad():
        broken[0].weight[0, 0] = float("nan")
    state = copy.deepcopy(clean.state_dict())
    with pytest.raises(LoritaError, match=r"layer '1' has NaN in its weight"):
        lorita.rebalance_pairs(nn.Sequential(clean, broken))
    assert all(torch.equal(v, state[k]) for k, v in clean.state_dict().items())  # checked before any change


@pytest.mark.parametrize("quantile", [-0.1, 1.5, float("nan"), "0.9"])
def test_a_bad_quantile_is_refused(quantile):
    with pytest.raises(LoritaError, match="quantile must be a finite number"):
        lorita.rebalance_pairs(_pairs(), quantile)


def test_one_step_moves_a_small_direction_further_once_rebalanced():
    """Why: a step changes the product along direction i by about lr * (|a_i|^2 + |b_i|^2) times the data's
    gradient, and rebalancing raises |a_i|^2 + |b_i|^2 where both were small."""
    torch.manual_seed(1)
    x, y = torch.randn(32, 8), torch.randn(32, 5)
    moved = []
    for rebalance in (False, True):
        pair = _with_small_directions(lorita.truncate(nn.Linear(8, 5), 4), scale=1e-2)
        torch.manual_seed(1)
        if rebalance:
            lorita.rebalance_pairs(nn.Sequential(pair), 0.9)
        start = pair[1].weight[:, -1:] @ pair[0].weight[-1:]
        nn.functional.mse_loss(pair(x), y).backward()
        torch.optim.SGD(pair.parameters(), lr=0.1).step()
        moved.append(float((pair[1].weight[:, -1:] @ pair[0].weight[-1:] - start).detach().norm()))
    assert moved[1] > 10 * moved[0]


def test_a_fine_tuned_column_with_rebalance_fine_tunes_the_rebalanced_cut():
    data = load_dataset("digits")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    example = torch.zeros(1, 1, 8, 8)

    def cutter(size):
        small = copy.deepcopy(net)
        small[1] = _with_small_directions(lorita.truncate(net[1], 8))
        return small, {}

    recipe = TrainConfig(epochs=2, lr=0.05, batch_size=64, device="cpu", seed=0)
    column = Column("LoRITa N=2 + FT", True, cutter, recipe, 0.0, 2, rebalance=0.9)
    cut = measure(column, 0.5, data, profile(net, example), example, progress=False)
    expected = cutter(0.5)[0]
    lorita.rebalance_pairs(expected, 0.9)
    kept = finetune(expected, data, recipe)
    assert cut.finetune_epoch_kept == kept.epoch > 0
    assert cut.val == evaluate(expected.eval(), data.val)[0]
    plain = measure(Column("x", True, cutter, recipe, 0.0, 2), 0.5, data, profile(net, example), example,
                    progress=False)
    assert plain.val_cut == pytest.approx(cut.val_cut, abs=0.2)  # the same function before fine-tuning


@pytest.mark.parametrize("flat,message", [
    ({"finetune_rebalance": 0.9}, r"finetune_rebalance needs fine-tuned columns: set finetune_epochs too"),
    ({"finetune_rebalance": 0, "finetune_epochs": 1}, r"finetune_rebalance must be a finite number > 0 and <= 1"),
    ({"finetune_rebalance": 2, "finetune_epochs": 1}, r"finetune_rebalance must be a finite number > 0 and <= 1"),
])
def test_bad_finetune_rebalance(flat, message):
    with pytest.raises(LoritaError, match=message):
        ExperimentSpec.from_flat({**BASE, "train": {"epochs": 3}, **flat})


def test_the_setting_counts_in_the_measured_cuts_key_only_when_set():
    base = ExperimentSpec.from_flat({**BASE, "finetune_epochs": 1, "train": {"epochs": 3}})
    rebalanced = ExperimentSpec.from_flat({**base.flat(), "finetune_rebalance": 0.9})
    assert "finetune_rebalance" not in measured_cuts_key(base, 0)["spec"]  # records written before it still count
    assert measured_cuts_key(rebalanced, 0)["spec"]["finetune_rebalance"] == 0.9
    assert ExperimentSpec.from_flat(rebalanced.flat()) == rebalanced


def test_the_setting_rebalances_exactly_the_fine_tuned_columns_with_thin_pairs(tmp_path, monkeypatch):
    import lorita.runs.compare as compare

    seen, measure_now = {}, compare.measure

    def recording(column, *args, **kwargs):
        seen[column.label] = column.rebalance
        return measure_now(column, *args, **kwargs)

    monkeypatch.setattr(compare, "measure", recording)
    flat = {"name": "tiny", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 16, "hidden_layers": 1},
            "depths": [1, 2], "points": 3, "refine_steps": 1, "sizes": [0.5], "refine_sizes": 0,
            "finetune_epochs": 1, "calibrate": 2, "torch_pruning": False, "finetune_rebalance": 0.9,
            "train": {"epochs": 2, "batch_size": 32, "device": "cpu"}}
    results = run_experiment(ExperimentSpec.from_flat(flat), tmp_path / "b", progress=False)
    assert seen == {"plain + SVD": None, "LoRITa N=2": None, "plain + whitened SVD": None,
                    "plain + SVD + FT": 0.9, "plain + whitened SVD + FT": 0.9, "LoRITa N=2 + FT": 0.9}
    assert results["spec"]["finetune_rebalance"] == 0.9
    report = (tmp_path / "b" / "report.md").read_text()
    assert "each thin pair rebalanced first, no direction below its layer's 0.9 quantile" in report
