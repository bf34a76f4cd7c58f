"""Latency-aware ranks (lorita.latency) with a fake timer, and full-rank pairs on the zoo.

The fake timer prices a module by its weight count plus a fixed overhead per layer, so
which layers stay dense is known exactly; nothing here depends on the machine's speed.
"""

import json
import random

import pytest
import torch
from torch import nn

import lorita
import lorita.latency as latency_module
from lorita.latency import call_times, keep_faster, latency_budget, layer_latencies, measure_latency
from lorita.linalg import break_even_rank
from lorita.lowrank import LOWRANK_TYPES, LowRankConv2d, LowRankLinear
from lorita.models import create_model
from lorita.targets import replace_module, scan_layers
from test_probe import LazyTable  # builds a table on its first call and keeps it

OVERHEAD = 1000  # fake "seconds" each extra layer of a pair costs


class FakeTimer:
    """Seconds = weights + OVERHEAD per extra layer; records what it was called on."""

    def __init__(self):
        self.calls = []

    def __call__(self, module, x):
        self.calls.append((type(module).__name__, tuple(x.shape)))
        weights = sum(p.numel() for n, p in module.named_parameters() if n.endswith("weight"))
        return float(weights + (OVERHEAD if isinstance(module, LOWRANK_TYPES) else 0))


def net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, stride=2, padding=1),  # "0": 64 x 27, input (2, 3, 8, 8)
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),  # "2": 64 x 576, input (2, 64, 4, 4)
        nn.Flatten(),
        nn.Linear(64 * 16, 32),  # "4": 32 x 1024
        nn.ReLU(),
        nn.Linear(32, 10),  # "6": 10 x 32
    )


X = torch.randn(2, 3, 8, 8)


class Unused(nn.Module):
    """Holds a Linear its forward never calls."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        return x


def test_slow_pairs_are_set_to_full_rank_and_fast_ones_kept():
    model = net()
    timer = FakeTimer()
    ranks = {"0": 4, "2": 32, "4": 2, "6": 2}
    out = keep_faster(model, ranks, X, timer=timer, repeats=1)
    # pair = r*(m+n) + 1000 against dense = m*n:
    # "0": 1364 < 1728, "2": 21480 < 36864, "4": 3112 < 32768 kept; "6": 1084 > 320 -> dense (full rank 10).
    assert out == {"0": 4, "2": 32, "4": 2, "6": 10}
    assert ranks == {"0": 4, "2": 32, "4": 2, "6": 2}  # argument untouched
    # Each layer timed on the input it really gets, dense and pair alike.
    shapes = {kind_shape[1] for kind_shape in timer.calls}
    assert shapes == {(2, 3, 8, 8), (2, 64, 4, 4), (2, 1024), (2, 32)}
    # The compressed model follows: "6" stays an nn.Linear.
    small = lorita.compress(model, ranks=out)
    assert isinstance(small[6], nn.Linear)
    assert isinstance(small[4], LowRankLinear) and isinstance(small[2], LowRankConv2d)


def test_layers_not_cut_are_not_timed_and_margin_applies():
    model = net()
    timer = FakeTimer()
    above = break_even_rank(64, 576) + 1
    out = keep_faster(model, {"2": above, "4": 2}, X, timer=timer, repeats=1)
    assert out == {"2": above, "4": 2}
    assert {s for _, s in timer.calls} == {(2, 1024)}  # only "4" was timed
    # A margin of 0.05 asks the pair to be 20x faster: 3112 > 0.05 * 32768, so "4" stays dense.
    assert keep_faster(model, {"4": 2}, X, timer=FakeTimer(), margin=0.05) == {"4": 32}


def test_cache_skips_repeated_shapes_and_round_trips_through_a_file(tmp_path):
    model = net()
    cache = {}
    timer = FakeTimer()
    keep_faster(model, {"4": 2, "6": 2}, X, timer=timer, cache=cache, repeats=3)
    assert len(timer.calls) == 2 * 2 * 3 and len(cache) == 4  # (dense, pair) x 2 layers x 3 repeats
    keep_faster(model, {"4": 2, "6": 2}, X, timer=timer, cache=cache)
    assert len(timer.calls) == 12  # everything came from the cache
    path = tmp_path / "latency.json"
    first = layer_latencies(model, {"4": 2}, X, timer=FakeTimer(), cache={}, cache_file=path)
    stored = json.loads(path.read_text())["seconds"]
    assert len(stored) == 2 and first["4"].dense_s == 32 * 1024
    # A new session (empty cache) reads the file instead of timing again.
    again = FakeTimer()
    second = layer_latencies(model, {"4": 2}, X, timer=again, cache={}, cache_file=path)
    assert again.calls == [] and second["4"] == first["4"]
    # Another batch size is another key.
    layer_latencies(model, {"4": 2}, torch.randn(5, 3, 8, 8), timer=again, cache={}, cache_file=path, repeats=1)
    assert len(again.calls) == 2 and len(json.loads(path.read_text())["seconds"]) == 4


def test_composed_models_are_timed_as_their_merged_layers():
    composed = lorita.compose(net(), depth=3)
    timer = FakeTimer()
    out = keep_faster(composed, {"6": 2}, X, timer=timer)
    assert out == {"6": 10}
    assert {name for name, _ in timer.calls} == {"Linear", "LowRankLinear"}


def test_ranks_may_name_a_layer_by_an_alias():
    shared = nn.Linear(16, 16)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(16, 2))  # "0" is also "2"
    out = keep_faster(model, {"2": 2, "4": 2}, torch.randn(1, 16), timer=FakeTimer())
    assert out == {"2": 16, "4": 2}  # the pair of "2" costs OVERHEAD more: dense, under the name given; "4" not cut


def test_bad_arguments_say_what_to_fix():
    model = net()
    with pytest.raises(lorita.LoritaError, match="unknown layer.*'nope'"):
        keep_faster(model, {"nope": 2}, X, timer=FakeTimer())
    with pytest.raises(lorita.LoritaError, match="between 1 and min"):
        keep_faster(model, {"6": 11}, X, timer=FakeTimer())
    with pytest.raises(lorita.LoritaError, match="margin"):
        keep_faster(model, {"6": 2}, X, timer=FakeTimer(), margin=0)
    with pytest.raises(lorita.LoritaError, match="did not run"):
        keep_faster(Unused(), {"unused": 1}, torch.randn(1, 4), timer=FakeTimer())
    with pytest.raises(lorita.LoritaError, match="latency_aware=True needs example_input"):
        lorita.select_ranks(nn.Sequential(nn.Linear(8, 8)), "budget", params=0.5, latency_aware=True)


def test_budget_latency_aware_returns_valid_ranks():
    # Real timings (no assertion on which layers win): the ranks are valid and only grow.
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    x = torch.randn(4, 64)
    plain = lorita.select_ranks(model, "budget", params=0.5)
    aware = lorita.select_ranks(model, "budget", params=0.5, example_input=x, latency_aware=True)
    assert set(aware) == set(plain)
    assert all(aware[k] in (plain[k], 64) for k in plain)


ZOO = [
    ("fcn", dict(width=32, hidden_layers=2), (1, 28, 28)),
    ("vgg16", dict(width_multiplier=0.0625), (3, 8, 8)),  # float64 convs are slow: small images
    ("resnet20", {}, (3, 32, 32)),
    ("vit", dict(dim=32, depth=2, heads=2), (3, 32, 32)),
]


@pytest.mark.parametrize("name,kwargs,shape", ZOO, ids=[z[0] for z in ZOO])
def test_zoo_models_with_every_layer_as_a_full_rank_pair_equal_dense(name, kwargs, shape):
    # Float64, eval mode: the SVD and the extra layer change only summation order (~1e-13).
    torch.manual_seed(0)
    dense = create_model(name, 10, shape[0], shape[1], **kwargs).double().eval()
    x = torch.randn(3, *shape, dtype=torch.float64)
    pairs = create_model(name, 10, shape[0], shape[1], **kwargs).double().eval()
    pairs.load_state_dict(dense.state_dict())
    for layer in scan_layers(pairs).layers.values():
        full = min(layer.module.weight.shape[0], layer.module.weight[0].numel())
        replace_module(pairs, layer, lorita.truncate(layer.module, full, layer.name))
    assert sum(isinstance(m, LOWRANK_TYPES) for m in pairs.modules()) == len(scan_layers(dense).layers)
    with torch.inference_mode():
        torch.testing.assert_close(pairs(x), dense(x), atol=1e-10, rtol=1e-10)


# ----------------------------------------------------------------------------
# latency_budget, with a clock that prices modules by their weights


def _weights(module):
    return sum(p.numel() for n, p in module.named_parameters() if n.endswith("weight"))


class ModelClock:
    """Seconds = weights + OVERHEAD per pair, alone or in a model. ``in_model_overhead``: what each pair costs
    inside a whole model instead (the isolated timings then mispredict, as real ones do); ``channels_last``:
    factor on everything timed in that layout. Counts the calls on whole models and on single layers."""

    def __init__(self, in_model_overhead=OVERHEAD, channels_last=1.0):
        self.in_model_overhead, self.factor = in_model_overhead, channels_last
        self.model_calls = self.layer_calls = 0

    def __call__(self, module, x, **_):  # **_: the default clock's min_seconds=
        whole = any(True for _ in module.children()) and not isinstance(module, LOWRANK_TYPES)
        pairs = sum(isinstance(m, LOWRANK_TYPES) for m in module.modules())
        seconds = _weights(module) + pairs * (self.in_model_overhead if whole else OVERHEAD)
        self.model_calls += whole
        self.layer_calls += not whole
        layout = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return float(seconds) * (self.factor if layout else 1.0)


def wide():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


W = torch.randn(4, 256)


def test_latency_budget_lands_within_the_request_and_compresses():
    # 256-wide layers: one step of 8 ranks is 3% of the model, so the 10% window can be hit
    model = wide()
    clock = ModelClock()
    found = latency_budget(model, 0.5, W, timer=clock)
    assert 0.45 <= found.measured <= 0.5  # within 10% below the request
    assert found.predicted == pytest.approx(found.measured)  # an additive clock: the prediction is exact
    assert found.dense_s == _weights(model) and found.layout == "contiguous" and found.batch == 4
    # the first try (0.463) is accepted low in the window, so one more step toward its top (0.4875) is taken
    assert len(found.rounds) == 2 and found.rounds[0]["measured"] < found.measured == found.rounds[1]["measured"]
    assert all(r <= 16 or r % 8 == 0 or r == 256 for r in found.ranks.values())
    small = lorita.compress(model, ranks=found.ranks)
    assert clock(small, W) <= 0.5 * clock(model, W)  # the real cut costs what was measured
    json.dumps(found.to_dict())
    assert found.to_dict()["measured"] == found.measured


def test_a_layer_whose_pairs_are_never_faster_stays_dense():
    found = latency_budget(net(), 0.6, X, timer=ModelClock())
    # "6" (10 x 32, 320 weights): its best pair costs 1042 > 320, so no rank is worth its time
    assert found.ranks["6"] == 10 and "6" in found.kept_dense
    assert found.layers["6"] == {"rank": 10, "cut": False, "dense_s": 320.0, "chosen_s": 320.0, "calls": 1,
                                 "input_shape": [2, 32]}
    assert all(found.layers[n]["cut"] for n in ("2", "4"))


def test_a_biased_prediction_is_corrected_by_measuring_the_cut_model():
    clock = ModelClock(in_model_overhead=6 * OVERHEAD)  # each pair costs 6x more in the model than alone
    found = latency_budget(wide(), 0.5, W, timer=clock)
    assert len(found.rounds) > 1 and found.rounds[0]["measured"] > 0.5  # the first try was too slow
    assert 0.45 <= found.measured <= 0.5
    assert found.predicted < found.measured  # the isolated timings still underestimate; the measurement decides


def test_a_cut_accepted_low_in_the_window_is_moved_toward_its_top():
    # pairs cost less in the model than alone, so the prediction is pessimistic and the first try, though
    # within the window (0.63 to 0.7), cuts deeper than 0.7 needs: one more step keeps more rank
    clock = ModelClock(in_model_overhead=0)
    first = latency_budget(wide(), 0.7, W, timer=clock, rounds=1)  # one try: no room to refine
    assert 0.63 <= first.measured < 0.7 * (1 - 0.1 / 4)
    found = latency_budget(wide(), 0.7, W, timer=clock)
    assert len(found.rounds) == 2 and found.rounds[0]["measured"] == pytest.approx(first.measured)
    assert first.measured < found.measured <= 0.7
    assert all(found.ranks[n] >= first.ranks[n] for n in first.ranks)
    assert sum(found.ranks.values()) > sum(first.ranks.values())


class SecondLookSlower(ModelClock):
    """A ModelClock whose whole-model timings of cut models numbered ``slow`` (1-based) take ``factor`` x longer:
    noise that made one measurement of a try look faster than a second one would."""

    def __init__(self, slow: range, factor: float):
        super().__init__()
        self.slow, self.factor, self.cut_calls = slow, factor, 0

    def __call__(self, module, x, **_):
        seconds = super().__call__(module, x)
        whole = any(True for _ in module.children()) and not isinstance(module, LOWRANK_TYPES)
        if whole and any(isinstance(m, LOWRANK_TYPES) for m in module.modules()):
            self.cut_calls += 1
            seconds *= self.factor if self.cut_calls in self.slow else 1.0
        return seconds


def test_a_try_measured_inside_the_window_is_timed_again_before_it_is_kept():
    samples = 2 * 3 + 1  # per measurement: 2 * repeats + 1 samples of each model, in turn
    steady = SecondLookSlower(range(0), 1.0)
    first = latency_budget(wide(), 0.5, W, timer=steady, rounds=1)
    assert 0.45 <= first.measured <= 0.5 and [len(r["looks"]) for r in first.rounds] == [3]  # inside: looked at 3x
    assert steady.cut_calls == 3 * samples
    # the second look at the first try is 20% slower: its mean (1.1 x) is over the request, so the search goes
    # on to another allocation before it comes back; the third look (steady again) is averaged in, not ignored
    noisy = SecondLookSlower(range(samples + 1, 2 * samples + 1), 1.2)
    found = latency_budget(wide(), 0.5, W, timer=noisy)
    looks = found.rounds[0]["looks"]
    assert looks[:2] == pytest.approx([first.measured, first.measured * 1.2]) and len(found.rounds) > 1
    assert found.rounds[0]["measured"] == pytest.approx(sum(looks) / len(looks))
    assert 0.45 <= found.estimated <= 0.5
    # a try measured outside the window is timed once
    outside = SecondLookSlower(range(0), 1.0)
    with pytest.raises(lorita.LoritaError, match="cannot be met"):
        latency_budget(net(), 0.05, X, timer=outside, rounds=1)
    assert outside.cut_calls == samples


class NoisyLooks(ModelClock):
    """A ModelClock whose whole-model timings of cut models are scaled by one factor per look (all its samples):
    a busy machine, where one look at a cut moves by up to ``spread`` either way."""

    def __init__(self, seed: int, spread: float, in_model_overhead: int):
        super().__init__(in_model_overhead=in_model_overhead)
        rng = random.Random(seed)
        self.factors = [1 + rng.uniform(-spread, spread) for _ in range(40)]
        self.cut_calls = 0

    def __call__(self, module, x, **_):
        seconds = super().__call__(module, x)
        whole = any(True for _ in module.children()) and not isinstance(module, LOWRANK_TYPES)
        if whole and any(isinstance(m, LOWRANK_TYPES) for m in module.modules()):
            self.cut_calls += 1
            seconds *= self.factors[(self.cut_calls - 1) // (2 * 3 + 1) % len(self.factors)]
        return seconds


def test_noisy_looks_at_a_mispredicted_cut_still_land_in_the_window():
    # Each pair costs 6x more inside the model than alone: a cut saves less than the per-layer timings say
    # (as on a real CNN at batch 32, where the search measured 0.43-0.59 for predicted 0.34-0.47), and every
    # look at a cut is off by up to 10%. Judging each try by its own one or two looks and stepping by secants
    # through them landed within [0.45, 0.5] in 14 of these 30 noise draws (13 times deeper than asked, 3 over
    # or raising); the fit over every look, and three looks at the choice, land in 25.
    within = []
    for seed in range(30):
        try:
            found = latency_budget(wide(), 0.5, W, timer=NoisyLooks(seed, 0.1, 6 * OVERHEAD))
        except lorita.LoritaError:
            continue
        exact = ModelClock(in_model_overhead=6 * OVERHEAD)  # the cut's time without the noise
        fraction = exact(lorita.compress(wide(), ranks=found.ranks), W) / exact(wide(), W)
        within.append(0.45 <= fraction <= 0.5)
        assert found.estimated <= 0.5 and len(found.rounds) <= 2 * 4  # at most twice the rounds
    assert sum(within) >= 24


class DriftingClock(ModelClock):
    """A ModelClock on a machine twice as slow for a stretch of every measurement: from the first cut sample to
    the fourth (``2 * 3 + 1`` rounds of dense then cut), dense samples 2-4 and cut samples 1-4 take 2x. The
    dense model's median comes from fast rounds and the cut's from slow ones: a ratio of medians says the cut
    takes twice its time; within each round both samples see the same machine but one."""

    def __init__(self):
        super().__init__()
        self.cuts = 0

    def __call__(self, module, x, **_):
        seconds = super().__call__(module, x)
        whole = any(True for _ in module.children()) and not isinstance(module, LOWRANK_TYPES)
        if not whole:
            return seconds
        k = self.cuts % (2 * 3 + 1)  # this call's round within its measurement
        if any(isinstance(m, LOWRANK_TYPES) for m in module.modules()):
            self.cuts += 1
            return seconds * (2.0 if k <= 3 else 1.0)
        return seconds * (2.0 if 1 <= k <= 3 else 1.0)


def test_a_cut_is_timed_against_the_dense_sample_of_its_own_round():
    steady = latency_budget(wide(), 0.5, W, timer=ModelClock())
    drifting = latency_budget(wide(), 0.5, W, timer=DriftingClock())
    assert drifting.ranks == steady.ranks
    looks = lambda found: [look for r in found.rounds for look in r["looks"]]
    assert looks(drifting) == pytest.approx(looks(steady))


def test_relative_latency_pairs_the_samples_of_one_round():
    dense, pair, clock = wide()[0], LowRankLinear(256, 256, 8), ModelClock()
    exact = clock(pair, W) / clock(dense, W)

    def drifting():  # dense, pair in turn; the machine 2x slow from the first pair sample to the third
        speeds = iter([1, 2, 2, 2, 2, 2, 1, 1, 1, 1])
        return lambda m, x: clock(m, x) * next(speeds)

    models = {"dense": dense, "pair": pair}
    found = lorita.latency.relative_latency(models, W, reference="dense", repeats=5, timer=drifting())
    assert found == {"dense": 1.0, "pair": pytest.approx(exact)}
    seconds = lorita.latency.measure_latency(models, W, repeats=5, timer=drifting())
    assert seconds["pair"] / seconds["dense"] == pytest.approx(2 * exact)  # a ratio of medians is off by 2x
    with pytest.raises(lorita.LoritaError, match="reference='cut' is not one of the models"):
        lorita.latency.relative_latency({"dense": pair}, W, reference="cut")


def test_a_layer_no_rank_can_cut_is_timed_dense_only():
    model = nn.Sequential(*wide(), nn.ReLU(), nn.Linear(10, 1))  # "6": 1 x 10, break-even 0
    found = latency_budget(model, 0.5, W, timer=ModelClock())
    assert found.ranks["6"] == 1 and "6" in found.kept_dense and found.measured <= 0.5


def test_an_unreachable_latency_says_what_can_be_reached():
    with pytest.raises(lorita.LoritaError, match=r"latency=0.05 cannot be met.*pass latency >= 0\.\d\d"):
        latency_budget(net(), 0.05, X, timer=ModelClock())


def test_latency_one_is_met_by_the_dense_model_when_every_cut_is_slower():
    clock = ModelClock(in_model_overhead=10 ** 9)  # alone a pair looks cheap; in the model every cut is slower
    found = latency_budget(net(), 1.0, X, timer=clock)
    assert found.measured == 1.0 and found.predicted == 1.0
    assert found.ranks == {"0": 27, "2": 64, "4": 32, "6": 10} and set(found.kept_dense) == set(found.ranks)
    assert found.rounds[0]["measured"] > 1  # a cut was tried and measured slower
    with pytest.raises(lorita.LoritaError, match=r"latency=0.99 cannot be met.*1 keeps the dense model"):
        latency_budget(net(), 0.99, X, timer=clock)


def test_an_unreachable_latency_is_reported_whatever_the_clock_scale():
    # the search clamps to the floor, cheapest / dense; floor * dense can round below cheapest, which
    # once surfaced as measured_ranks' "budget cannot be met" instead of this message (5 of these 60 scales)
    rng = random.Random(0)
    for _ in range(60):
        scale = rng.uniform(1e-7, 1e-5)
        with pytest.raises(lorita.LoritaError, match="latency=0.05 cannot be met on this machine"):
            latency_budget(net(), 0.05, X, timer=lambda m, x, **_: ModelClock()(m, x) * scale)


@pytest.mark.parametrize("factor,expected", [(0.5, "channels_last"), (1.0, "contiguous")])
def test_layout_auto_takes_channels_last_only_where_it_measures_faster(factor, expected):
    found = latency_budget(net(), 0.5, X, layout="auto", timer=ModelClock(channels_last=factor))
    assert found.layout == expected
    assert set(found.dense_by_layout) == {"contiguous", "channels_last"}
    assert found.dense_s == found.dense_by_layout[expected]


def test_cached_layer_timings_are_not_repeated():
    cache, clock = {}, ModelClock()
    latency_budget(net(), 0.5, X, timer=clock, cache=cache)
    first = clock.layer_calls
    assert first > 0
    again = latency_budget(net(), 0.7, X, timer=clock, cache=cache)
    assert clock.layer_calls == first and again.measured <= 0.7


def test_select_ranks_budget_latency(monkeypatch):
    model = wide()
    monkeypatch.setattr(latency_module, "time_module", ModelClock())  # the default clock, faked
    monkeypatch.setattr(latency_module, "_CACHE", {})  # (and the process's cache of it)
    ranks = lorita.select_ranks(model, "budget", latency=0.5, example_input=W)
    assert ranks == latency_budget(model, 0.5, W, timer=ModelClock()).ranks
    with pytest.raises(lorita.LoritaError, match="latency= needs example_input"):
        lorita.select_ranks(model, "budget", latency=0.5)
    with pytest.raises(lorita.LoritaError, match="exactly one of params=, flops= or latency="):
        lorita.select_ranks(model, "budget", latency=0.5, params=0.5, example_input=X)
    with pytest.raises(lorita.LoritaError, match="drop latency_aware"):
        lorita.select_ranks(model, "budget", latency=0.5, latency_aware=True, example_input=X)
    with pytest.raises(lorita.LoritaError, match="latency must be"):
        latency_budget(model, 1.5, X, timer=ModelClock())
    with pytest.raises(lorita.LoritaError, match="layout='channels_last' needs an image input"):
        latency_budget(model, 0.5, W, layout="channels_last", timer=ModelClock())


def test_the_re_aim_goes_through_the_savings_ratio_fitted_over_every_look():
    from lorita.latency import _fit_savings, _reaim

    # predicted savings 0.5 and 0.6 (fractions 0.5, 0.4); measured savings 0.4 (twice) and 0.48 (once): s = 0.8
    tried = [{"internal": 0.52, "predicted": 0.5, "looks": [0.62, 0.58], "measured": 0.6},
             {"internal": 0.41, "predicted": 0.4, "looks": [0.52], "measured": 0.52}]
    savings = _fit_savings(tried)
    assert savings == pytest.approx((2 * 0.4 * 0.5 + 0.48 * 0.6) / (2 * 0.5 ** 2 + 0.6 ** 2))
    assert savings == pytest.approx(0.8)
    # each estimate: its own looks' mean, with the fit (1 - 0.8 * saving) weighed as two looks
    assert tried[0]["estimated"] == pytest.approx((2 * 0.6 + 2 * 0.6) / 4)
    assert tried[1]["estimated"] == pytest.approx((0.52 + 2 * 0.52) / 3)
    # aiming at 0.475 asks for a predicted 1 - 0.525 / 0.8, plus the mean slack the greedy left (0.015)
    assert _reaim(tried, savings, 0.475, floor=0.1) == pytest.approx(1 - 0.525 / 0.8 + 0.015)
    assert _reaim(tried, savings, 0.2, floor=0.1) == 0.1  # never below the floor
    assert _reaim(tried, -0.3, 0.475, floor=0.1) == 0.1  # cuts saved nothing: the fastest allocation next


def test_best_layout_leaves_the_model_alone():
    from lorita.latency import best_layout

    model = net()
    assert best_layout(model, X, timer=ModelClock(channels_last=0.5))[0] == "channels_last"
    assert best_layout(model, X, timer=ModelClock(channels_last=0.98))[0] == "contiguous"  # within the 3% margin
    assert model[0].weight.is_contiguous()
    with pytest.raises(lorita.LoritaError, match="must be N x C x H x W"):
        best_layout(wide(), W)


@pytest.mark.parametrize("timing", ["measure_latency", "call_times"])
def test_a_table_the_model_caches_while_timed_still_trains(timing):
    model, x = LazyTable(), torch.randn(2, 4)
    if timing == "measure_latency":
        measure_latency({"m": model}, x, repeats=1)
    else:
        call_times(model, x, repeats=2)
    assert not model.table.is_inference()  # (it was, and backward through it failed)
    model(x).sum().backward()
    assert model.fc.weight.grad is not None


def test_a_compiled_model_compiles_off_the_clock(monkeypatch):
    compiles, clock = [], []

    def backend(graph, example_inputs):  # counts compiles, and how often the clock was read before each
        compiles.append(len(clock))
        return graph.forward

    real = latency_module.time.perf_counter
    monkeypatch.setattr(latency_module.time, "perf_counter", lambda: clock.append(1) or real())
    latency_module.time_module(torch.compile(nn.Linear(8, 8).eval(), backend=backend), torch.randn(4, 8))
    assert compiles and max(compiles) == 0  # (the first timed call recompiled for inference mode)
