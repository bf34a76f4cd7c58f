"""select_ranks on tiny models: each strategy, budgets measured on the compressed model, the accuracy search."""

import warnings

import pytest
import torch
from torch import nn

import lorita
from lorita.errors import LoritaError, LoritaWarning
from lorita.lowrank import LOWRANK_TYPES
from lorita.ranks import LayerCost, energy_ranks, global_ranks, uniform_ranks
from lorita.select import STRATEGIES, layer_costs, search_accuracy, select_ranks


@torch.no_grad()
def decaying(model, q=0.9):
    """Give every weight singular values falling like q^i, as LoRITa training does, so cuts degrade gently."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            w = module.weight.reshape(module.weight.shape[0], -1)
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            s = s[0] * q ** torch.arange(len(s), dtype=s.dtype)
            module.weight.copy_((u * s @ vh).reshape(module.weight.shape))
    return model


def mlp():
    torch.manual_seed(0)
    return decaying(nn.Sequential(nn.Linear(24, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 5)))


def cnn():
    torch.manual_seed(0)
    return decaying(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),  # (B, 8, 8, 8)
        nn.Conv2d(8, 12, 3, stride=2), nn.ReLU(),  # (B, 12, 3, 3)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4),
    ))


MODELS = {"mlp": (mlp, (2, 24)), "cnn": (cnn, (2, 3, 8, 8))}


def n_lowrank(model):
    return sum(isinstance(m, LOWRANK_TYPES) for m in model.modules())


def agreement(reference, x):
    """Percent of inputs whose argmax matches the reference model's: a deterministic stand-in for accuracy."""
    with torch.no_grad():
        target = reference(x).argmax(1)

    def evaluate(model):
        with torch.no_grad():
            return 100.0 * (model(x).argmax(1) == target).float().mean().item()

    return evaluate


# ---------------------------------------------------------------------------- per-layer strategies


@pytest.mark.parametrize("kind", list(MODELS))
def test_simple_strategies_match_the_math_on_the_spectrum(kind):
    model = MODELS[kind][0]()
    spectra = lorita.spectrum(model)
    assert select_ranks(model, "uniform", ratio=0.5) == uniform_ranks(spectra, 0.5)
    assert select_ranks(model, "energy", energy=0.8) == energy_ranks(spectra, 0.8)
    assert select_ranks(model, "global", threshold=0.4) == global_ranks(spectra, 0.4)
    small = lorita.compress(model, ranks=select_ranks(model, "uniform", ratio=0.25))
    assert n_lowrank(small) > 0  # the ranks are usable as they are


def test_layer_costs_count_positions_and_fixed():
    model, x = cnn(), torch.randn(2, 3, 8, 8)
    costs, fixed = layer_costs(model, x, "macs")
    assert costs == {"0": LayerCost(8, 27, 64), "2": LayerCost(12, 72, 9), "6": LayerCost(4, 12, 1)}
    assert fixed == 0  # profile counts no bias adds: the compressible layers are all the MACs
    assert sum(c.dense("macs") for c in costs.values()) == lorita.profile(model, x).macs / 2
    costs, fixed = layer_costs(model)
    assert costs["2"] == LayerCost(12, 72) and fixed == 8 + 12 + 4  # biases


def test_layer_costs_on_tokens_and_a_composed_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.LayerNorm(10), nn.Linear(10, 3))
    composed = lorita.compose(net, depth=3)
    costs, fixed = layer_costs(composed, torch.randn(2, 7, 6), "macs")  # 7 tokens
    assert costs == {"0": LayerCost(10, 6, 7), "2": LayerCost(3, 10, 7)}  # the original shapes
    _, fixed_params = layer_costs(composed)
    assert fixed_params == 10 + 20 + 3  # biases and the norm: against the uncomposed model


# ---------------------------------------------------------------------------- budget


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("target", [0.3, 0.6])
def test_budget_params_meets_target_on_the_compressed_model(kind, target):
    build, shape = MODELS[kind]
    model = build()
    small = lorita.compress(model, ranks=select_ranks(model, "budget", params=target))
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in small.parameters())
    assert n_lowrank(small) > 0
    assert after <= target * before
    assert after > 0.6 * target * before  # it uses the budget, not a trivially tiny model


@pytest.mark.parametrize("kind", list(MODELS))
def test_budget_flops_meets_target_on_the_compressed_model(kind):
    build, shape = MODELS[kind]
    model, x = build(), torch.randn(*shape)
    target = 0.5
    small = lorita.compress(model, ranks=select_ranks(model, "budget", flops=target, example_input=x))
    before, after = lorita.profile(model, x), lorita.profile(small, x)
    assert n_lowrank(small) > 0
    assert after.flops <= target * before.flops


def test_budget_on_a_composed_model_is_against_the_original_size():
    model = mlp()
    composed = lorita.compose(model, depth=2)
    ranks = select_ranks(composed, "budget", params=0.4)
    small = lorita.compress(composed, ranks=ranks)
    assert sum(p.numel() for p in small.parameters()) <= 0.4 * sum(p.numel() for p in model.parameters())


def test_budget_unreachable_names_the_option():
    with pytest.raises(LoritaError, match=r"params=0.01 .* cannot be met: .* pass params >= 0\.\d+"):
        select_ranks(mlp(), "budget", params=0.01)


# ---------------------------------------------------------------------------- accuracy


def counted(fn):
    calls = []

    def wrapped(model):
        calls.append(model)
        return fn(model)

    return wrapped, calls


@pytest.mark.parametrize("kind", list(MODELS))
def test_accuracy_search_stays_within_the_drop(kind):
    build, shape = MODELS[kind]
    model = build()
    x = torch.randn(128, *shape[1:], generator=torch.Generator().manual_seed(1))
    score = agreement(model, x)
    evaluate, calls = counted(score)
    found = search_accuracy(model, evaluate, max_drop=5.0, max_evals=5)
    assert found.evaluations == len(calls) <= 5 + 1
    assert found.search.baseline == 100.0 and found.search.found
    assert {s.within for s in found.search.steps} == {True, False}  # the drop mattered: not a trivial pass
    assert score(found.model) >= 100.0 - 5.0
    assert n_lowrank(found.model) > 0
    assert found.ranks == global_ranks(lorita.spectrum(model), found.search.threshold)
    within = [s.threshold for s in found.search.steps if s.within]
    assert found.search.threshold == max(within)
    assert select_ranks(model, "accuracy", evaluate=score, max_drop=5.0, max_evals=5) == found.ranks  # deterministic


def test_accuracy_search_fine_tunes_each_candidate():
    model = mlp()
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(2))
    tuned = []

    def finetune(candidate):
        tuned.append(candidate)
        candidate.tuned = True
        return candidate

    def evaluate(candidate):
        assert candidate is model or getattr(candidate, "tuned", False) or n_lowrank(candidate) == 0
        return agreement(model, x)(candidate)

    found = search_accuracy(model, evaluate, max_drop=20.0, finetune=finetune, max_evals=3)
    assert len(tuned) == found.search.evaluations <= 3
    assert found.model.tuned  # the returned model is the fine-tuned one that was evaluated


def test_accuracy_search_without_a_good_cut_keeps_the_model_dense():
    model = mlp()
    evaluate, calls = counted(lambda m: 90.0 if n_lowrank(m) == 0 else 50.0)
    found = search_accuracy(model, evaluate, max_drop=1.0, max_evals=4)
    assert not found.search.found and found.search.threshold == 0.0 and len(calls) == found.evaluations <= 5
    assert n_lowrank(found.model) == 0 and n_lowrank(lorita.compress(model, ranks=found.ranks)) == 0


def test_accuracy_search_warns_when_evaluate_seems_to_return_a_fraction():
    """A score of 0.95 with max_drop 1 (points) lets every cut pass: the whole model went to rank 1 silently."""
    model = mlp()
    with pytest.warns(LoritaWarning, match=r"evaluate gave 0.95 .* if evaluate returns a fraction, return percent"):
        search_accuracy(model, lambda m: 0.95 if n_lowrank(m) == 0 else 0.5, max_drop=1.0, max_evals=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoritaWarning)
        search_accuracy(model, lambda m: 95.0 if n_lowrank(m) == 0 else 50.0, max_drop=1.0, max_evals=2)
        search_accuracy(model, lambda m: -0.3 if n_lowrank(m) == 0 else -0.9, max_drop=0.02, max_evals=2)  # -loss


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "strategy, options, match",
    [
        ("pca", {}, r"unknown strategy 'pca'; strategies: uniform, energy, global, budget, accuracy"),
        ("energy", {}, r"strategy 'energy': missing energy=; it takes energy="),
        ("energy", {"energy": 0.9, "ratio": 0.5}, r"strategy 'energy': unexpected ratio="),
        ("accuracy", {"max_drop": 1.0}, r"strategy 'accuracy': missing evaluate="),
        ("budget", {}, r"exactly one of params=, flops= or latency="),
        ("budget", {"params": 0.5, "flops": 0.5}, r"exactly one of params=, flops= or latency="),
        ("budget", {"flops": 0.5}, r"flops= needs example_input="),
        ("budget", {"params": 1.5}, r"params must be a number in \(0, 1\]"),
        ("budget", {"flops": 0.5, "example_input": [1, 2]}, r"example_input must be a tensor"),
        ("uniform", {"ratio": 0}, r"ratio must be a number in \(0, 1\]"),
        ("global", {"threshold": 2}, r"threshold must be a number in \[0, 1\]"),
        ("accuracy", {"evaluate": lambda m: 1.0, "max_evals": 0}, r"max_evals must be an integer >= 1, got 0"),
        ("accuracy", {"evaluate": lambda m: 1.0, "max_drop": -1}, r"max_drop must be a finite number >= 0"),
        ("accuracy", {"evaluate": lambda m: "good"}, r"evaluate must return an accuracy .* got str"),
        ("accuracy", {"evaluate": lambda m: 1.0, "finetune": lambda m: None}, r"finetune must return the fine-tuned model"),
    ],
)
def test_bad_options_raise_a_helpful_error(strategy, options, match):
    assert strategy == "pca" or strategy in STRATEGIES
    with pytest.raises(LoritaError, match=match):
        select_ranks(mlp(), strategy, **options)


def test_accuracy_search_on_a_model_too_narrow_to_cut():
    narrow = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))  # rank 1 costs 9 > 8 weights
    evaluate, calls = counted(lambda m: 75.0)
    found = search_accuracy(narrow, evaluate)
    assert len(calls) == found.evaluations == 1 and not found.search.found and found.ranks == {"0": 1, "2": 1}


def test_a_model_without_compressible_layers_is_an_error():
    with pytest.raises(LoritaError, match=r"no compressible layer"):
        select_ranks(nn.Sequential(nn.ReLU(), nn.LayerNorm(3)), "energy", energy=0.9)
    small = lorita.compress(nn.Sequential(nn.Linear(32, 32)), ratio=0.25)
    with pytest.raises(LoritaError, match=r"already cut .* cut the model it was cut from instead"):
        select_ranks(small, "energy", energy=0.9)
