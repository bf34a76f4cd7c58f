"""Rank selection on bare spectra: known answers, budget optimality, the search driver, errors."""

import itertools
import math

import pytest
import torch

from lorita.errors import LoritaError
from lorita.ranks import (
    LayerCost,
    break_even_rank,
    budget_ranks,
    energy_ranks,
    global_ranks,
    global_thresholds,
    is_worth_cutting,
    search_threshold,
    total_cost,
    uniform_ranks,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------------------- costs


@pytest.mark.parametrize("m, n", [(1, 1), (1, 10), (2, 2), (3, 3), (4, 100), (10, 10), (512, 784), (64, 576)])
def test_break_even_is_largest_rank_cheaper_than_dense(m, n):
    r = break_even_rank(m, n)
    assert r * (m + n) < m * n or r == 0
    assert (r + 1) * (m + n) >= m * n
    assert r < min(m, n)
    assert all(is_worth_cutting(m, n, q) for q in range(1, r + 1))
    assert not is_worth_cutting(m, n, r + 1)


def test_break_even_is_the_one_compress_uses():
    import importlib

    compress, linalg = importlib.import_module("lorita.compress"), importlib.import_module("lorita.linalg")
    assert break_even_rank is linalg.break_even_rank is compress.break_even_rank
    m, n = 10**9, 10**9 + 7  # integer arithmetic: exact where m*n/(m+n) in floats is not
    r = break_even_rank(m, n)
    assert r * (m + n) < m * n <= (r + 1) * (m + n)


def test_layer_cost_prices_ranks_and_dense():
    c = LayerCost(out_features=16, in_features=9 * 8, positions=49)  # a 3x3 conv 8 -> 16 on a 7x7 map
    assert c.max_rank == 16 and c.break_even == (16 * 72 - 1) // 88 == 13
    assert c.dense("params") == 16 * 72 and c.dense("macs") == 49 * 16 * 72
    assert c.at_rank(2, "params") == 2 * 88 and c.at_rank(2, "macs") == 49 * 2 * 88
    assert c.at_rank(14, "params") == c.dense("params")  # above break-even: stays dense
    assert c.at_rank(None, "macs") == c.dense("macs")
    assert total_cost({"x": 2}, {"x": c}, "params", fixed=5) == 5 + 2 * 88


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: LayerCost(0, 3), r"LayerCost\.out_features must be an integer >= 1, got 0"),
        (lambda: LayerCost(3, 3, positions=2.5), r"LayerCost\.positions must be an integer >= 1, got 2\.5"),
        (lambda: LayerCost(3, 3).dense("flops"), r"metric must be one of 'params', 'macs', got 'flops'"),
        (lambda: is_worth_cutting(4, 4, 0),
         r"rank must be an integer between 1 and min\(out, in\) = 4 \(its weight is 4x4\), got 0"),
        (lambda: is_worth_cutting(4, 4, 5), r"rank must be an integer between 1 and min\(out, in\) = 4"),
        (lambda: break_even_rank(0, 4), r"m must be an integer >= 1 \(a layer dimension\), got 0"),
        (lambda: total_cost({"y": 1}, {"x": LayerCost(2, 2)}), r"no LayerCost for layers \['y'\]; known layers: \['x'\]"),
    ],
)
def test_cost_errors(call, match):
    with pytest.raises(LoritaError, match=match):
        call()


# ---------------------------------------------------------------------------- uniform / energy / global


def test_uniform_known_answers():
    spectra = {"a": torch.linspace(1, 0.1, 10), "b": torch.ones(3), "c": t(1.0)}
    assert uniform_ranks(spectra, 0.3) == {"a": 3, "b": 1, "c": 1}  # 0.3*10 = 3.0000000000000004 in floats
    assert uniform_ranks(spectra, 0.25) == {"a": 3, "b": 1, "c": 1}  # ceil(2.5), ceil(0.75)
    assert uniform_ranks(spectra, 1.0) == {"a": 10, "b": 3, "c": 1}
    assert uniform_ranks(spectra, 1e-9) == {"a": 1, "b": 1, "c": 1}


def test_uniform_exact_fractions_are_not_rounded_up():
    for k in range(1, 41):
        spectra = {"w": torch.ones(k)}
        for p in range(1, k + 1):
            assert uniform_ranks(spectra, p / k)["w"] == p, (p, k)
    for tenths in range(1, 11):  # decimal ratios: 0.1, 0.2, ... of 10 and 100 values
        ratio = tenths / 10
        assert uniform_ranks({"w": torch.ones(10)}, ratio)["w"] == tenths
        assert uniform_ranks({"w": torch.ones(100)}, ratio)["w"] == 10 * tenths


def test_energy_known_answers():
    spectra = {"a": t(3.0, 2.0, 1.0, 0.0), "b": t(1.0, 1.0, 1.0, 1.0), "z": torch.zeros(4)}
    # a: sigma^2 = 9, 4, 1, 0 (total 14); b: 1 each (total 4)
    assert energy_ranks(spectra, 0.5) == {"a": 1, "b": 2, "z": 1}  # 9 >= 7; exactly 2 of 4
    assert energy_ranks(spectra, 0.9) == {"a": 2, "b": 4, "z": 1}  # 13 >= 12.6; 3.6 needs 4
    assert energy_ranks(spectra, 1.0) == {"a": 3, "b": 4, "z": 1}  # the zero value is never needed
    assert energy_ranks({"a": t(3.0, 4.0 / 3, 1.0)}, 0.75)["a"] == 1  # 9 of 12 exactly


def test_global_known_answers_and_thresholds():
    spectra = {"a": t(2.0, 1.0, 0.5), "b": t(4.0, 1.0), "z": torch.zeros(2)}
    # normalised: a = 1, .5, .25; b = 1, .25; z = 0, 0
    assert global_thresholds(spectra) == [0.0, 0.25, 0.5, 1.0]
    assert global_ranks(spectra, 0.0) == {"a": 3, "b": 2, "z": 2}
    assert global_ranks(spectra, 0.25) == {"a": 3, "b": 2, "z": 1}
    assert global_ranks(spectra, 0.3) == {"a": 2, "b": 1, "z": 1}
    assert global_ranks(spectra, 1.0) == {"a": 1, "b": 1, "z": 1}


def test_global_thresholds_visit_every_distinct_cut():
    gen = torch.Generator().manual_seed(0)
    spectra = {f"l{i}": torch.rand(k, generator=gen).sort(descending=True).values for i, k in enumerate((5, 8, 3))}
    cuts = [tuple(global_ranks(spectra, th).values()) for th in global_thresholds(spectra)]
    assert len(set(cuts)) == len(cuts)  # every candidate is a different cut ...
    for th in torch.linspace(0, 1, 101).tolist():  # ... and every cut is one of them
        assert tuple(global_ranks(spectra, th).values()) in set(cuts) | {(1, 1, 1)}
    for th in global_thresholds(spectra):  # the threshold keeps the value it came from
        for name, s in spectra.items():
            norm = (s.double() / s.double().max()).tolist()
            assert global_ranks(spectra, th)[name] == max(1, sum(v >= th for v in norm))


def test_global_thresholds_with_costs_keep_one_per_distinct_compressed_model():
    gen = torch.Generator().manual_seed(2)
    shapes = {"a": (6, 30), "b": (8, 8), "c": (5, 40)}
    spectra = {n: torch.rand(min(m, k), generator=gen).sort(descending=True).values for n, (m, k) in shapes.items()}
    costs = {n: LayerCost(m, k) for n, (m, k) in shapes.items()}

    def model_of(th):  # what compress builds: the rank where it is worth cutting, else dense
        return tuple(r if is_worth_cutting(*shapes[n], r) else None for n, r in global_ranks(spectra, th).items())

    every = global_thresholds(spectra)
    kept = global_thresholds(spectra, costs)
    assert set(kept) < set(every) and kept == sorted(kept)
    assert len({model_of(th) for th in kept}) == len(kept)  # all different ...
    assert {model_of(th) for th in kept} == {model_of(th) for th in every} - {(None, None, None)}  # ... and all of them
    for th in kept:  # the smallest threshold giving its model
        earlier = [u for u in every if u < th]
        assert not earlier or model_of(earlier[-1]) != model_of(th)


# ---------------------------------------------------------------------------- budget


def relative_loss(spectra, ranks, costs):
    loss = 0.0
    for name, s in spectra.items():
        sq = (s.double() ** 2).tolist()
        r = len(sq) if not is_worth_cutting(costs[name].out_features, costs[name].in_features, ranks[name]) else ranks[name]
        loss += sum(sq[r:]) / sum(sq)
    return loss


def all_allocations(spectra, costs):
    """Every meaningful state per layer: ranks 1..break-even, plus dense (min(m, n))."""
    options = []
    for name in spectra:
        c = costs[name]
        options.append([*range(1, min(c.break_even, len(spectra[name])) + 1), c.max_rank])
    for combo in itertools.product(*options):
        yield dict(zip(spectra, combo))


def geometric(first, q, k):
    return torch.tensor([first * q**i for i in range(k)], dtype=torch.float64)


def test_budget_is_optimal_on_a_concave_problem():
    # Each layer 4 x 40 (break-even 3, dense = rank 4): steeply falling sigma^2 makes every
    # layer's gain per unit cost non-increasing along its moves, jump to dense included, where
    # greedy is provably optimal among allocations costing no more (Lagrangian argument).
    # Different scales check that the loss is per-layer relative.
    spectra = {"a": geometric(10.0, 0.5, 4), "b": geometric(0.1, 0.6, 4), "c": geometric(3.0, 0.4, 4)}
    costs = {name: LayerCost(4, 40) for name in spectra}
    fixed = 100
    original = fixed + 3 * 160
    for target in [x / 100 for x in range(48, 101)]:
        ranks = budget_ranks(spectra, costs, target, fixed=fixed)
        spent = total_cost(ranks, costs, fixed=fixed)
        assert spent <= target * original
        loss = relative_loss(spectra, ranks, costs)
        best = min(
            relative_loss(spectra, alt, costs)
            for alt in all_allocations(spectra, costs)
            if total_cost(alt, costs, fixed=fixed) <= spent
        )
        assert loss <= best + 1e-12, (target, ranks)


def test_budget_meets_target_and_is_within_one_step():
    gen = torch.Generator().manual_seed(1)
    shapes = [(8, 20, 1), (16, 12, 4), (6, 30, 9), (10, 10, 2)]
    for trial in range(6):
        spectra, costs = {}, {}
        for i, (m, n, p) in enumerate(shapes):
            k = min(m, n)
            spectra[f"l{i}"] = (torch.rand(k, generator=gen) ** (trial + 1)).sort(descending=True).values
            costs[f"l{i}"] = LayerCost(m, n, p)
        for metric in ("params", "macs"):
            fixed = 37
            original = total_cost({n: None for n in costs}, costs, metric, fixed)
            for target in (0.3, 0.5, 0.7, 0.9, 1.0):
                ranks = budget_ranks(spectra, costs, target, metric=metric, fixed=fixed)
                spent = total_cost(ranks, costs, metric, fixed)
                assert spent <= target * original
                left = target * original - spent
                for name, r in ranks.items():
                    c = costs[name]
                    assert 1 <= r <= c.max_rank
                    if not is_worth_cutting(c.out_features, c.in_features, r):
                        continue  # dense: nothing more to add
                    # the next move (one rank, or dense from break-even) must not fit
                    nxt = r + 1 if r < c.break_even else None
                    assert c.at_rank(nxt, metric) - c.at_rank(r, metric) > left, (trial, metric, target, name)


def test_budget_uses_macs_positions():
    # same spectra and shapes, but layer "conv" runs at 100 positions: under a MACs budget it is
    # the expensive one and gets the lower rank; under params both are alike
    s = geometric(1.0, 0.9, 8)
    spectra = {"conv": s, "fc": s.clone()}
    costs = {"conv": LayerCost(8, 72, positions=100), "fc": LayerCost(8, 72, positions=1)}
    by_params = budget_ranks(spectra, costs, 0.5, metric="params")
    by_macs = budget_ranks(spectra, costs, 0.5, metric="macs")
    assert abs(by_params["conv"] - by_params["fc"]) <= 1
    assert by_macs["conv"] < by_macs["fc"]


def test_budget_jumps_to_dense_and_skips_unprofitable_layers():
    spectra = {"flat": torch.ones(10), "head": t(1.0)}  # head is 1 x 10: even rank 1 costs 11 > 10
    costs = {"flat": LayerCost(10, 10), "head": LayerCost(1, 10)}
    # full budget: the flat layer keeps everything, which is cheapest as the dense layer (rank 10)
    assert budget_ranks(spectra, costs, 1.0) == {"flat": 10, "head": 1}
    assert budget_ranks(spectra, costs, 0.5) == {"flat": 2, "head": 1}  # 2*20 + 10 <= 55


def test_budget_is_deterministic_and_breaks_ties_by_name():
    s = geometric(1.0, 0.8, 6)
    costs = {n: LayerCost(6, 30) for n in ("b", "a", "c")}
    spectra = {n: s.clone() for n in ("c", "a", "b")}  # identical layers, odd insertion order
    first = budget_ranks(spectra, costs, 0.55)
    assert first == budget_ranks(dict(reversed(list(spectra.items()))), costs, 0.55)
    assert list(first) == ["a", "b", "c"]
    ranks = sorted(first.values(), reverse=True)
    assert ranks[0] - ranks[-1] <= 1 and first["a"] >= first["b"] >= first["c"]  # ties go to "a" first


def test_budget_unreachable_target_says_the_smallest_fraction():
    spectra = {"a": torch.ones(4)}
    costs = {"a": LayerCost(4, 40)}  # rank 1 costs 44 of 160, plus 40 fixed: 84 / 200 = 0.42
    with pytest.raises(LoritaError, match=r"target=0.3 .* keeps 0.4200 .* pass a target >= 0.42"):
        budget_ranks(spectra, costs, 0.3, fixed=40)
    assert budget_ranks(spectra, costs, 0.42, fixed=40) == {"a": 1}


# ---------------------------------------------------------------------------- search


def counting(fn):
    calls = []

    def wrapped(th):
        calls.append(th)
        return fn(th)

    return wrapped, calls


@pytest.mark.parametrize("boundary", [0, 1, 37, 63, 99, 100])
def test_search_finds_the_exact_boundary_of_a_monotone_function(boundary):
    candidates = [i / 100 for i in range(101)]
    evaluate, calls = counting(lambda th: 90.0 if th <= candidates[boundary] else 80.0)
    res = search_threshold(evaluate, baseline=90.0, max_drop=1.0, thresholds=candidates, max_evals=12)
    assert res.found and res.threshold == candidates[boundary] and res.accuracy == 90.0
    assert res.evaluations == len(calls) <= math.ceil(math.log2(len(candidates) + 1))
    assert len(set(calls)) == len(calls)  # never the same threshold twice
    assert [s.threshold for s in res.steps] == calls


def test_search_respects_max_evals_and_returns_only_evaluated_within():
    candidates = [i / 1000 for i in range(1001)]
    evaluate, calls = counting(lambda th: 95.0 - 20.0 * th)  # within for th <= 0.05
    res = search_threshold(evaluate, baseline=95.0, max_drop=1.0, thresholds=candidates, max_evals=3)
    assert res.evaluations == len(calls) == 3
    within = {s.threshold for s in res.steps if s.within}
    assert (res.threshold in within) if res.found else res.threshold == 0.0
    full = search_threshold(lambda th: 95.0 - 20.0 * th, baseline=95.0, max_drop=1.0, thresholds=candidates)
    assert full.threshold == 0.05 and full.evaluations <= 11


def test_search_without_any_good_cut_returns_no_cut():
    res = search_threshold(lambda th: 10.0, baseline=90.0, max_drop=1.0, thresholds=[0.2, 0.5, 0.9])
    assert not res.found and res.threshold == 0.0 and res.accuracy == 90.0
    assert res.floor == 89.0 and all(not s.within for s in res.steps) and res.evaluations == 2


def test_search_on_a_noisy_function_never_returns_a_bad_threshold():
    gen = torch.Generator().manual_seed(3)
    noise = (torch.rand(200, generator=gen) * 4 - 2).tolist()
    candidates = [i / 199 for i in range(200)]
    table = {c: 90.0 - 10.0 * c + e for c, e in zip(candidates, noise)}
    res = search_threshold(table.__getitem__, baseline=90.0, max_drop=1.0, thresholds=candidates[::-1] + candidates)
    if res.found:
        assert table[res.threshold] >= 89.0
        assert res.threshold == max(s.threshold for s in res.steps if s.within)
    assert len({s.threshold for s in res.steps}) == res.evaluations


# ---------------------------------------------------------------------------- errors


GOOD = {"a": t(2.0, 1.0)}


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: uniform_ranks(GOOD, 0.0), r"ratio must be a number in \(0, 1\] .*got 0.0"),
        (lambda: uniform_ranks(GOOD, 1.5), r"ratio must be a number in \(0, 1\]"),
        (lambda: energy_ranks(GOOD, -0.1), r"energy must be a number in \(0, 1\]"),
        (lambda: energy_ranks(GOOD, float("nan")), r"energy must be a number in \(0, 1\]"),
        (lambda: global_ranks(GOOD, 1.1), r"threshold must be a number in \[0, 1\]"),
        (lambda: global_ranks(GOOD, -0.1), r"threshold must be a number in \[0, 1\]"),
        (lambda: budget_ranks(GOOD, {"a": LayerCost(2, 9)}, 0.0), r"target must be a number in \(0, 1\]"),
        (lambda: uniform_ranks({}, 0.5), r"spectra is empty: pass a dict .* lorita.spectrum\(model\)"),
        (lambda: energy_ranks({"a": t(1.0, float("nan"))}, 0.5), r"spectrum of 'a' contains NaN or inf"),
        (lambda: global_ranks({"a": t(1.0, 2.0)}, 0.5), r"spectrum of 'a' is not in descending order"),
        (lambda: global_ranks({"a": t(1.0, -2.0)}, 0.5), r"spectrum of 'a' has negative values"),
        (lambda: global_ranks({"a": torch.ones(2, 2)}, 0.5), r"spectrum of 'a' must be a non-empty 1-D tensor"),
        (lambda: budget_ranks(GOOD, {"a": LayerCost(2, 9), "b": LayerCost(2, 2)}, 0.5), r"costs has unknown layers \['b'\]"),
        (lambda: budget_ranks(GOOD, {}, 0.5), r"costs is missing layers \['a'\]"),
        (lambda: budget_ranks(GOOD, {"a": LayerCost(1, 9)}, 0.5), r"has 2 values but its LayerCost is 1 x 9"),
        (lambda: budget_ranks(GOOD, {"a": LayerCost(2, 9)}, 0.5, metric="flops"), r"metric must be one of"),
        (lambda: budget_ranks(GOOD, {"a": LayerCost(2, 9)}, 0.5, fixed=-1), r"fixed must be a finite number >= 0"),
        (lambda: search_threshold(float, baseline=90.0, max_drop=-1.0, thresholds=[0.5]), r"max_drop must be a finite number >= 0"),
        (lambda: search_threshold(float, baseline=90.0, max_drop=1.0, thresholds=[0.5], max_evals=0),
         r"max_evals must be an integer >= 1 \(about log2"),
        (lambda: search_threshold(float, baseline=90.0, max_drop=1.0, thresholds=[]), r"thresholds is empty"),
        (lambda: search_threshold(float, baseline=90.0, max_drop=1.0, thresholds=[2.0]), r"threshold must be a number in \[0, 1\]"),
    ],
)
def test_bad_input_raises_a_helpful_error(call, match):
    with pytest.raises(LoritaError, match=match):
        call()
