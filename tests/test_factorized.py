"""The factorized baseline (Khodak et al., ICLR 2021): Frobenius decay's value and gradient, the spectrally
initialised model at a params budget, training with a penalty in place of weight decay, and its column."""

import copy
import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lorita import LoritaError, compress
from lorita.cli import main
from lorita.data import load_dataset
from lorita.factorized import FrobeniusDecay, factorized_for_params
from lorita.lowrank import LowRankConv2d, LowRankLinear
from lorita.profile import count_params
from lorita.runs import ExperimentSpec, run_experiment
from lorita.runs.config import ModelSpec
from lorita.runs.factorized import FACTORIZED, factorized_cutter, kept_dense
from lorita.runs.plan import planned_trainings
from lorita.train import TrainConfig, train


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))


def test_frobenius_decay_is_half_the_coefficient_times_the_products_squared_norm():
    small = compress(_conv_net(), ranks={"0": 2, "3": 3})
    assert isinstance(small[0], LowRankConv2d) and isinstance(small[3], LowRankLinear)
    decay = FrobeniusDecay(small, 0.01)
    dense = sum((m[1].weight.flatten(1) @ m[0].weight.flatten(1)).square().sum() for m in (small[0], small[3]))
    assert torch.allclose(decay(), 0.005 * dense, rtol=1e-6)
    # its gradient is the product's weight decay carried back to each factor: d/dA = c B^T (B A), d/dB = c (B A) A^T
    decay().backward()
    a, b = small[3][0].weight, small[3][1].weight
    product = (b @ a).detach()
    assert torch.allclose(a.grad, 0.01 * b.detach().T @ product, rtol=1e-5, atol=1e-9)
    assert torch.allclose(b.grad, 0.01 * product @ a.detach().T, rtol=1e-5, atol=1e-9)
    c, f = small[0][0].weight, small[0][1].weight  # the conv pair: (r, C_in, k, k) then 1x1 (C_out, r, 1, 1)
    kernel = (f.flatten(1) @ c.flatten(1)).detach()
    assert torch.allclose(c.grad.flatten(1), 0.01 * f.detach().flatten(1).T @ kernel, rtol=1e-5, atol=1e-9)
    assert torch.allclose(f.grad.flatten(1), 0.01 * kernel @ c.detach().flatten(1).T, rtol=1e-5, atol=1e-9)
    assert small[3][1].bias.grad is None  # biases keep the optimizer's weight decay
    assert [id(p) for p in decay.parameters()] == [id(small[0][0].weight), id(small[0][1].weight), id(a), id(b)]


def test_frobenius_decay_refuses_a_model_without_pairs_and_a_bad_coefficient():
    with pytest.raises(LoritaError, match=r"no low-rank pair .* cut it first"):
        FrobeniusDecay(_conv_net(), 1e-3)
    with pytest.raises(LoritaError, match=r"coefficient must be a finite number >= 0"):
        FrobeniusDecay(compress(_conv_net(), ranks={"0": 2}), -1.0)
    with pytest.raises(LoritaError, match=r"needs the model \(an nn.Module\) whose pairs it decays, got NoneType"):
        FrobeniusDecay(None, 1e-3)


def test_factorized_for_params_is_the_largest_uniform_cut_within_the_budget():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    before = copy.deepcopy(net.state_dict())
    budget = 0.3 * count_params(net)
    small, ratio = factorized_for_params(net, budget, exclude="2")
    assert type(small[2]) is nn.Linear  # excluded: dense
    assert count_params(small) <= budget
    # the spectral init is lorita's cut of the fresh model at that rank fraction; the model itself is unchanged
    same = compress(net, ratio=ratio, exclude="2")  # (the search's SVD cache differs by float32 rounding)
    assert all(torch.allclose(v, same.state_dict()[k], atol=1e-6) for k, v in small.state_dict().items())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    # one rank more in the only layer cut (the fraction up by 1/64: rank ceil(64 f) + 1) no longer fits
    assert count_params(compress(net, ratio=ratio + 1 / 64, exclude="2")) == count_params(small) + 128 > budget
    # spectral: the two factors balanced, each carrying the square root of the fresh weight's singular values
    u, sv, vh = torch.linalg.svd(net[0].weight.detach().double())
    a, b, r = small[0][0].weight.detach().double(), small[0][1].weight.detach().double(), small[0].rank
    torch.testing.assert_close(a @ a.T, torch.diag(sv[:r]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.T @ b, torch.diag(sv[:r]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b @ a, u[:, :r] @ torch.diag(sv[:r]) @ vh[:r], atol=1e-5, rtol=1e-5)
    assert factorized_for_params(net, 100) is None  # rank 1 everywhere keeps more
    whole, full = factorized_for_params(net, count_params(net))  # no cut saves params within the whole budget
    assert full == 1.0 and [type(m) for m in whole] == [type(m) for m in net]


def _step_data():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    return x, y, (TensorDataset(x, y), TensorDataset(x, y))


def test_one_training_step_with_the_penalty_is_sgd_on_loss_plus_penalty_with_no_decay_on_the_factors():
    torch.manual_seed(0)
    net = compress(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), ranks={"0": 2})
    x, y, data = _step_data()
    config = TrainConfig(epochs=1, batch_size=16, lr=0.1, momentum=0.0, weight_decay=0.05, label_smoothing=0.0,
                         schedule="constant", device="cpu")
    expected = copy.deepcopy(net)
    decay = FrobeniusDecay(expected, 0.05)
    loss = nn.functional.cross_entropy(expected(x), y) + decay()
    loss.backward()
    factors = {id(p) for p in decay.parameters()}
    with torch.no_grad():
        for p in expected.parameters():
            p -= 0.1 * (p.grad + (0.0 if id(p) in factors else 0.05 * p))
    seen = {}
    train(net, data, config, penalty=FrobeniusDecay(net, 0.05),
          callbacks=[lambda event, info: seen.setdefault(event, [g["weight_decay"] for g in
                                                                 info["optimizer"].param_groups])])
    assert seen["train_start"] == [0.05, 0.0]  # the rest decayed by the optimizer, the factors by the penalty
    for (name, p), q in zip(net.named_parameters(), expected.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-7), name


def _penalised(seed=0):
    torch.manual_seed(seed)
    return compress(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), ranks={"0": 2})


def test_a_run_with_the_penalty_resumes_as_if_uninterrupted_and_only_with_it(tmp_path):
    _, _, data = _step_data()
    config = TrainConfig(epochs=3, batch_size=8, lr=0.05, weight_decay=0.01, device="cpu")
    whole = _penalised()
    train(whole, data, config, penalty=FrobeniusDecay(whole, 0.01))
    resumed = _penalised()
    train(resumed, data, {**config.to_dict(), "epochs": 1}, out_dir=tmp_path / "r",
          penalty=FrobeniusDecay(resumed, 0.01))
    train(resumed, data, config, out_dir=tmp_path / "r", resume=True, penalty=FrobeniusDecay(resumed, 0.01))
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    other = _penalised()
    with pytest.raises(LoritaError, match=r"resumes only with the same penalty"):
        train(other, data, config, out_dir=tmp_path / "r", resume=True)
    plain = _penalised()
    train(plain, data, {**config.to_dict(), "epochs": 1}, out_dir=tmp_path / "p")
    groups = r"3 parameter\(s\) at weight decay 0.01 and 2 parameter\(s\) at weight decay 0:"
    with pytest.raises(LoritaError, match=r"was trained with 5 parameter\(s\) at weight decay 0.01, this run has "
                                          + groups):
        train(plain, data, config, out_dir=tmp_path / "p", resume=True, penalty=FrobeniusDecay(plain, 0.01))


def test_train_refuses_a_penalty_on_another_models_parameters_or_a_non_penalty():
    net = compress(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), ranks={"0": 2})
    _, _, data = _step_data()
    config = TrainConfig(epochs=1, batch_size=16, device="cpu")
    with pytest.raises(LoritaError, match=r"not trainable parameters of the model being trained"):
        train(net, data, config, penalty=FrobeniusDecay(copy.deepcopy(net), 1e-3))
    with pytest.raises(LoritaError, match=r"penalty must be callable and have .parameters\(\)"):
        train(net, data, config, penalty=0.1)


SPEC = {"name": "fd", "model": "fcn", "dataset": "digits", "model_kwargs": {"width": 16, "hidden_layers": 1},
        "depths": [1, 2], "points": 3, "refine_steps": 0, "sizes": [0.5], "refine_sizes": 0, "torch_pruning": False,
        "factorized": True, "factorized_refine": 0, "train": {"epochs": 2, "batch_size": 64, "device": "cpu"}}


def test_the_factorized_column_is_planned_and_validated():
    plan = planned_trainings(ExperimentSpec.from_flat(SPEC), 1280, torch_pruning=False)
    assert plan[-1].columns == (FACTORIZED,) and plan[-1].recipe == plan[0].recipe  # the plain side's recipe
    with pytest.raises(LoritaError, match=r"factorized must be true or false"):
        ExperimentSpec.from_flat({**SPEC, "factorized": "yes"})
    with pytest.raises(LoritaError, match=r"factorized_refine must be an integer >= 0"):
        ExperimentSpec.from_flat({**SPEC, "factorized_refine": -1})
    with pytest.raises(LoritaError, match=r"equals the plain model's weight decay only under SGD; the plain side's "
                                          r"optimizer is 'adamw'"):
        ExperimentSpec.from_flat({**SPEC, "plain_train": {"optimizer": "adamw"}})


def test_the_experiment_measures_the_factorized_column(tmp_path):
    results = run_experiment(ExperimentSpec.from_flat(SPEC), tmp_path / "fd", progress=False)
    column = results["runs"][0]["columns"][FACTORIZED]
    assert column["epochs"] == 2 and column["exposure"] == results["runs"][0]["columns"]["plain + SVD"]["exposure"]
    at_half = [c for c in column["cuts"] if c["size"] == 0.5]
    assert at_half and at_half[0]["params_kept"] <= 0.5
    saved = json.loads((tmp_path / "fd" / "results.json").read_text())
    assert FACTORIZED in saved["runs"][0]["columns"]


def test_the_factorized_cutter_keeps_the_classifier_dense_and_the_size_asked(monkeypatch):
    data = load_dataset("digits")
    spec = ModelSpec("fcn", {"width": 32, "hidden_layers": 2}, data.model_inputs)
    original = count_params(spec.build())
    seen = {}

    def groups(event, info):  # what the column's own training decays, and how
        if event == "train_start":
            seen.update({id(p): g["weight_decay"] for g in info["optimizer"].param_groups for p in g["params"]})

    import lorita.runs.factorized as column

    trained, made = column.train, []

    def watched(model, data, recipe, penalty=None, **kwargs):
        made.append((model, penalty))
        return trained(model, data, recipe, penalty=penalty, callbacks=[groups], **kwargs)

    monkeypatch.setattr(column, "train", watched)
    model, detail = factorized_cutter(spec, data, TrainConfig(epochs=1, device="cpu", weight_decay=1e-3), original)(0.3)
    trained_model, penalty = made[0]
    factors = {id(p) for p in penalty.parameters()}
    assert penalty.coefficient == 1e-3 and factors  # Frobenius decay at the recipe's weight decay ...
    for p in trained_model.parameters():  # ... in place of the factors' weight decay; the rest keeps it
        assert seen[id(p)] == (0.0 if id(p) in factors else 1e-3)
    assert type(model.head) is nn.Linear  # a uniform rank fraction would make it rank 1 of 10
    assert isinstance(model.blocks[0][0], LowRankLinear) and count_params(model) == detail["params"] <= 0.3 * original


def test_a_cnn_keeps_its_first_conv_and_classifier_dense():
    spec = ModelSpec("vgg_small", {"width_multiplier": 0.125}, {"num_classes": 10, "in_channels": 1, "image_size": 28})
    model = spec.build()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    kept = kept_dense(model, ["features.4"])
    assert kept == ["features.4", convs[0], [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]]
    small, _ = factorized_for_params(model, 0.5 * count_params(model), exclude=kept)
    assert all(not isinstance(small.get_submodule(n), (LowRankConv2d, LowRankLinear)) for n in kept)
    assert any(isinstance(m, LowRankConv2d) for m in small.modules())


def test_the_dry_run_lists_the_factorized_search(tmp_path, capsys):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"full": {**SPEC, "factorized": False}}))
    assert main(["experiment", str(config), "--out", str(tmp_path / "out"), "--set", "factorized=true",
                 "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "(one factorized model per size its search tries): 2 epochs for factorized + Frobenius decay" in printed
    assert "2 trainings a seed, 4 epochs in all, x 1 seed(s): 4 epochs of 21 steps, plus the factorized model's " \
           "search" in printed
