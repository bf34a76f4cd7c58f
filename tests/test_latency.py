"""Latency-aware ranks (lorita.latency) with a fake timer, and full-rank pairs on the zoo.

The fake timer prices a module by its weight count plus a fixed overhead per layer, so
which layers stay dense is known exactly; nothing here depends on the machine's speed.
"""

import json

import pytest
import torch
from torch import nn

import lorita
from lorita.latency import keep_faster, layer_latencies
from lorita.linalg import break_even_rank
from lorita.lowrank import LOWRANK_TYPES, LowRankConv2d, LowRankLinear
from lorita.models import create_model
from lorita.targets import replace_module, scan_layers

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
