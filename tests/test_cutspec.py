"""One typed way to cut (lorita.cutspec), one entry point (lorita.select.choose_ranks) and the work shared
through a model's Spectra: each kind checks itself and round-trips through JSON, each handler gives what the
math on the spectrum gives, a new kind is one class and one handler, and nothing is computed twice."""

import dataclasses

import pytest
import torch
from torch import nn

import lorita
import lorita.latency as latency_module
import lorita.spectra as spectra_module
from lorita import LoritaError
from lorita.cutspec import (KINDS, Accuracy, Budget, CutSpec, Energy, Latency, Rank, Ranks, Ratio, Threshold,
                            cut_from_dict, cut_from_strategy)
from lorita.lowrank import LOWRANK_TYPES
from lorita.ranks import budget_ranks, energy_ranks, global_ranks, global_thresholds, total_cost, uniform_ranks
from lorita.select import BudgetOutOfReach, Choice, choose_ranks, cut, register_cut, select_ranks
from lorita.spectra import Spectra
from lorita.svd_cache import SVDCache
from lorita.sweep import sweep
from lorita.whiten import collect_grams, whitened_spectrum

EVERY_KIND = [Ranks({"0": 3}), Rank(4), Ratio(0.5), Energy(0.9, calibrate=2), Threshold(0.1), Budget(params=0.4),
              Budget(flops=0.5, rule="threshold"), Latency(0.5, batch=8, layout="auto"), Accuracy(max_drop=0.5)]


@torch.no_grad()
def mlp():
    """Three layers whose singular values fall like 0.8^i, as trained LoRITa layers do."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 5))
    for layer in net[::2]:
        u, s, vh = torch.linalg.svd(layer.weight, full_matrices=False)
        layer.weight.copy_(u * (s[0] * 0.8 ** torch.arange(len(s)))[None, :] @ vh)
    return net


X = torch.randn(16, 24)


def test_every_kind_is_registered_and_round_trips_through_json():
    ours = {kind for kind, cls in KINDS.items() if cls.__module__ == "lorita.cutspec"}  # (others: tests, examples)
    assert ours == {"ranks", "rank", "ratio", "energy", "threshold", "budget", "latency", "accuracy"}
    for how in EVERY_KIND:
        data = how.to_dict()
        assert data["kind"] == how.kind and list(data)[-3:] == ["calibrate", "multiple", "int8"]
        assert cut_from_dict(data) == how


@pytest.mark.parametrize("make,message", [
    (lambda: Energy(1.5), r"energy must be a number in \(0, 1\]"),
    (lambda: Ratio(0), r"ratio must be a number in \(0, 1\]"),
    (lambda: Threshold(2), r"threshold must be a number in \[0, 1\]"),
    (lambda: Budget(), r"a budget takes exactly one of params= or flops="),
    (lambda: Budget(params=0.5, flops=0.5), r"exactly one of params= or flops="),
    (lambda: Budget(params=1.5), r"params must be a number in \(0, 1\]"),
    (lambda: Budget(params=0.5, rule="greedy"), r"rule must be one of 'loss', 'threshold'"),
    (lambda: Budget(params=0.5, latency_aware=1), r"latency_aware must be True or False"),
    (lambda: Latency(0.5, layout="nhwc"), r"layout must be one of"),
    (lambda: Latency(0.5, batch=0), r"batch must be an integer from 1 to 65536"),
    (lambda: Energy(0.9, int8=1), r"int8 must be True or False"),
    (lambda: Accuracy(max_drop=-1), r"max_drop must be a finite number >= 0"),
    (lambda: Accuracy(max_evals=0), r"max_evals must be an integer >= 1"),
    (lambda: Ranks({"0": 0}), r"ranks must be a dict of module name -> rank"),
    (lambda: Energy(0.9, calibrate=-1), r"calibrate must be an integer >= 0"),
    (lambda: Budget(params=0.5, multiple=0), r"multiple must be an integer >= 1"),
    (lambda: Latency(0.5, rounds=10**12), r"rounds must be an integer from 1 to 1000 \(a search setting\)"),
    (lambda: cut_from_dict({"kind": "pca"}), r"unknown way to cut 'pca'; kinds: ranks, rank, ratio"),
    (lambda: cut_from_dict({"kind": ["energy"]}), r"unknown way to cut \['energy'\]"),
    (lambda: cut_from_dict([1, 2]), r"cut: a way to cut is an object such as .* got \[1, 2\]; kinds: ranks"),
    (lambda: cut_from_dict({"kind": "energy", "energy": "0.9"}), r"energy must be a number in \(0, 1\]"),
    (lambda: cut_from_dict({"kind": "energy", "energy": 0.9, "ratio": 0.5}), r"the 'energy' way to cut has no field ratio"),
    (lambda: cut_from_dict({"kind": "energy"}), r"missing 1 required positional argument: 'energy'"),
    (lambda: cut_from_strategy("pca", {}), r"unknown strategy 'pca'"),
])
def test_each_kind_checks_itself_when_made(make, message):
    with pytest.raises(LoritaError, match=message):
        make()


def test_each_handler_gives_the_math_on_the_spectrum():
    net = mlp()
    spectra = lorita.spectrum(net)
    costs, fixed = spectra_module.layer_costs(net)
    assert choose_ranks(net, Ratio(0.5)).ranks == uniform_ranks(spectra, 0.5)
    assert choose_ranks(net, Energy(0.8)).ranks == energy_ranks(spectra, 0.8)
    assert choose_ranks(net, Threshold(0.3)).ranks == global_ranks(spectra, 0.3)
    assert choose_ranks(net, Budget(params=0.5)).ranks == budget_ranks(spectra, costs, 0.5, fixed=fixed)
    assert choose_ranks(net, Ranks({"2": 4})).ranks == {"2": 4}
    assert choose_ranks(net, Rank(8)).ranks == {"0": 8, "2": 8, "4": 5}  # "4" (5 x 20): full rank 5, dense
    # the old spelling is the same call
    assert select_ranks(net, "global", threshold=0.3) == global_ranks(spectra, 0.3)
    assert select_ranks(net, "budget", params=0.5) == budget_ranks(spectra, costs, 0.5, fixed=fixed)


def test_a_threshold_budget_is_the_weakest_global_cut_that_fits():
    net = mlp()
    spectra = lorita.spectrum(net)
    costs, fixed = spectra_module.layer_costs(net)
    original = fixed + sum(c.dense("params") for c in costs.values())
    choice = choose_ranks(net, Budget(params=0.5, rule="threshold"))
    assert choice.ranks == global_ranks(spectra, choice.report)
    assert total_cost(choice.ranks, costs, "params", fixed) <= 0.5 * original
    weaker = [t for t in global_thresholds(spectra, costs) if t < choice.report]
    assert weaker and total_cost(global_ranks(spectra, weaker[-1]), costs, "params", fixed) > 0.5 * original
    with pytest.raises(BudgetOutOfReach, match=r"params=0.01 cannot be met with one global threshold"):
        choose_ranks(net, Budget(params=0.01, rule="threshold"))
    with pytest.raises(BudgetOutOfReach, match=r"params=0.01 of the original params cannot be met: even rank 1"):
        choose_ranks(net, Budget(params=0.01))  # the least-loss rule: the same kind of error, the size named


def test_a_new_way_to_cut_is_one_class_and_one_handler():
    @dataclasses.dataclass(frozen=True)
    class Fixed(CutSpec):
        kind = "fixed-rank-test"
        rank: int = 2

    @register_cut(Fixed)
    def _fixed(how, spectra, **_):
        return Choice({name: min(how.rank, min(shape)) for name, shape in spectra.shapes.items()}, how)

    small, choice = cut(mlp(), Fixed(3))
    assert choice.ranks == {"0": 3, "2": 3, "4": 3}
    assert [m.rank for m in small.modules() if isinstance(m, LOWRANK_TYPES)] == [3, 3, 3]
    assert cut_from_dict({"kind": "fixed-rank-test", "rank": 3, "calibrate": 0}) == Fixed(3)
    assert cut(mlp(), Fixed(3, multiple=4))[1].ranks == {"0": 4, "2": 4, "4": 4}  # the options of every cut apply
    small, _ = cut(mlp(), Fixed(3, int8=True))
    assert {type(m).__name__ for m in small.modules()} >= {"Int8Linear"} and not any(
        isinstance(m, nn.Linear) for m in small.modules())  # int8 after the cut: every layer, thin pairs included

    @dataclasses.dataclass(frozen=True)
    class Unhandled(CutSpec):
        kind = "unhandled-test"

    with pytest.raises(LoritaError, match="no handler for Unhandled; register one"):
        choose_ranks(mlp(), Unhandled())
    with pytest.raises(LoritaError, match="how must be a way to cut"):
        choose_ranks(mlp(), "energy")


def test_a_misspelt_option_is_refused_and_a_registered_handler_may_take_its_own():
    with pytest.raises(LoritaError, match="^choose_ranks got unknown option\\(s\\) evalute=; it takes example_input="):
        choose_ranks(mlp(), Budget(params=0.5), evalute=lambda m: 1.0)
    with pytest.raises(LoritaError, match="^cut got unknown option\\(s\\) exmaple_input="):  # the call the user made
        cut(mlp(), Energy(0.5), exmaple_input=torch.randn(1, 24))
    with pytest.raises(LoritaError, match="^cut got unknown option\\(s\\) calibration="):
        cut(mlp(), Energy(0.5), example_input=torch.randn(1, 24), calibration=[torch.randn(1, 24)])

    @dataclasses.dataclass(frozen=True)
    class Scaled(CutSpec):
        kind = "scaled-rank-test"

    @register_cut(Scaled)
    def _scaled(how, spectra, *, scale=1):
        return Choice({name: scale for name in spectra.shapes}, how)

    assert set(choose_ranks(mlp(), Scaled(), scale=2).ranks.values()) == {2}


def test_ranks_in_multiples_round_up_a_criterion_and_down_a_budget():
    net = mlp()
    full = {"0": 20, "2": 20, "4": 5}
    for how in (Energy(0.9), Threshold(0.2), Ratio(0.3), Ranks({"0": 3, "2": 9})):
        plain = choose_ranks(net, how).ranks
        rounded = choose_ranks(net, dataclasses.replace(how, multiple=8)).ranks
        for name, r in rounded.items():
            assert r % 8 == 0 or r == full[name], (how, name, r)
            assert plain[name] <= r < plain[name] + 8 or r == full[name]  # at least what was asked for
    size = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    for rule in ("loss", "threshold"):  # a budget allocates in multiples: it still holds
        small, choice = cut(net, Budget(params=0.6, multiple=4, rule=rule))
        assert all(r % 4 == 0 or r == full[name] for name, r in choice.ranks.items()) and size(small) <= 0.6 * size(net)
    with pytest.raises(LoritaError, match=r"params=0.3 .* cannot be met: even rank 8 in every compressible layer"):
        choose_ranks(net, Budget(params=0.3, multiple=8))
    clock = lambda m, x, **_: float(sum(p.numel() for p in m.parameters()))  # noqa: E731
    found = choose_ranks(net, Latency(0.8, multiple=4), example_input=torch.zeros(4, 24), timer=clock)
    assert all(r % 4 == 0 or r == full[name] for name, r in found.ranks.items()) and found.report.measured <= 0.8
    found = choose_ranks(net, Accuracy(max_drop=100.0, max_evals=3, multiple=8), evaluate=lambda m: 50.0)
    assert all(m.rank % 8 == 0 for m in found.model.modules() if isinstance(m, LOWRANK_TYPES))  # evaluated as cut


def test_given_ranks_in_multiples_are_checked_and_resolved_before_rounding():
    net = mlp()
    with pytest.raises(LoritaError, match=r"rank for '0' must be an integer between 1 and min\(out, in\) = 20"):
        choose_ranks(net, Ranks({"0": 10**6}, multiple=8))  # was capped at the full rank: the layer kept dense
    with pytest.raises(LoritaError, match="ranks names unknown layer 'nope'"):
        choose_ranks(net, Ranks({"nope": 4}, multiple=8))
    shared = nn.Linear(24, 24)
    aliased = nn.Sequential(shared, nn.ReLU(), shared)
    assert choose_ranks(aliased, Ranks({"2": 3}, multiple=8)).ranks == {"0": 8}  # an alias rounded too


def test_a_cut_read_from_a_file_is_an_object_and_a_strategy_a_name():
    for bad in ("ratio", ["ratio"], 3):
        with pytest.raises(LoritaError, match=r"cut: a way to cut is an object such as \{\"kind\": \"ratio\""):
            cut_from_dict(bad)
    with pytest.raises(LoritaError, match=r"unknown strategy \['x'\]"):
        cut_from_strategy(["x"], {})
    with pytest.raises(LoritaError, match="the options of strategy 'uniform' must be a dict, got list"):
        cut_from_strategy("uniform", [])


def test_whitening_is_an_option_of_every_cut():
    net = mlp()
    batches = [X[:8] * torch.linspace(0.1, 3, 24), X[8:] * torch.linspace(0.1, 3, 24)]  # unequal input scales
    grams = collect_grams(net, batches)
    whitened = {name: whitened_spectrum(net[int(name)].weight.detach(), grams[name]) for name in ("0", "2", "4")}
    assert choose_ranks(net, Energy(0.8, calibrate=2), batches=batches).ranks == energy_ranks(whitened, 0.8)
    costs, fixed = spectra_module.layer_costs(net)
    small, choice = cut(net, Budget(params=0.5, calibrate=2), batches=batches)
    assert choice.ranks == budget_ranks(whitened, costs, 0.5, fixed=fixed)
    assert sum(p.numel() for p in small.parameters()) <= 0.5 * sum(p.numel() for p in net.parameters())
    with pytest.raises(LoritaError, match="a whitened cut .* needs calibration data: pass batches="):
        choose_ranks(net, Threshold(0.2, calibrate=2))


def test_spectra_compute_each_layer_once_for_every_cut(monkeypatch):
    computed = []
    real = spectra_module.layer_spectrum
    monkeypatch.setattr(spectra_module, "layer_spectrum", lambda m, name: computed.append(name) or real(m, name))
    net = mlp()
    spectra = Spectra(net, torch.zeros(1, 24), svd_cache=SVDCache())
    for how in (Energy(0.9), Threshold(0.2), Budget(params=0.5), Budget(flops=0.5, rule="threshold"), Ratio(0.5)):
        choose_ranks(spectra, how)
    points = sweep(spectra, torch.zeros(1, 24), lambda m: 100.0, None, points=5)
    assert sorted(computed) == ["0", "2", "4"]  # the values of each layer, once
    assert spectra.cache.computed == 3 and len(points) >= 3  # and each layer's SVD, once for every cut
    assert spectra.model is net  # a plain model is used as it is, not copied
    known = lorita.spectrum(net)  # e.g. a training run's spectrum.json: not computed again
    computed.clear()
    assert Spectra(net, values=known).values() == known and computed == []


def test_latency_budget_times_the_model_without_changing_or_copying_it(monkeypatch):
    net = mlp()
    monkeypatch.setattr(latency_module, "_CACHE", {})
    before = [(p.data_ptr(), p.clone()) for p in net.parameters()]
    modules = list(net)
    copies = []
    real = latency_module.copy.deepcopy
    monkeypatch.setattr(latency_module.copy, "deepcopy", lambda m, *a: copies.append(m) or real(m, *a))
    clock = lambda m, x, **_: float(sum(p.numel() for p in m.parameters()) + 50 * sum(  # noqa: E731
        isinstance(k, LOWRANK_TYPES) for k in m.modules()))
    found = latency_module.latency_budget(net, Latency(0.6, batch=4), torch.zeros(1, 24), timer=clock)
    assert found.batch == 4 and found.measured <= 0.6
    assert copies == []  # contiguous and not an image: nothing to convert, so nothing copied
    assert list(net) == modules and all(p.data_ptr() == ptr and torch.equal(p, old)
                                        for p, (ptr, old) in zip(net.parameters(), before))
    assert choose_ranks(net, Latency(0.6, batch=4), example_input=torch.zeros(1, 24), timer=clock).ranks == \
        found.ranks


def test_the_accuracy_search_reuses_a_known_baseline():
    net, calls = mlp(), []
    x = torch.randn(64, 24)
    target = net(x).argmax(1)

    def evaluate(model):
        calls.append(model)
        with torch.no_grad():
            return 100.0 * (model(x).argmax(1) == target).float().mean().item()

    choice = choose_ranks(net, Accuracy(max_drop=5.0, max_evals=4), evaluate=evaluate, baseline=100.0)
    assert net not in calls and len(calls) == choice.report.search.evaluations <= 4
    assert choice.model is None or evaluate(choice.model) >= 95.0
