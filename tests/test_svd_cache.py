"""SVDCache: reused SVDs give exactly the cuts fresh SVDs give, and are recomputed when weights change."""

import copy
import importlib

import pytest
import torch
from torch import nn

import lorita
import lorita.linalg
from lorita.svd_cache import SVDCache

# lorita.compress is also the function exported at the root; these are the modules
COMPRESS_MODULE = importlib.import_module("lorita.compress")
CACHE_MODULE = importlib.import_module("lorita.svd_cache")


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 32),
                         nn.ReLU(), nn.Linear(32, 5)).double()


RANKS = {"0": 2, "3": 4, "5": 2}


def _same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_cached_cut_equals_fresh_cut():
    net, cache = _net(), SVDCache()
    _same(lorita.compress(net, ranks=RANKS, svd_cache=cache), lorita.compress(net, ranks=RANKS))
    assert cache.computed == 3


def test_repeated_cuts_run_each_svd_once():
    net, cache = _net(), SVDCache()
    for ranks in (RANKS, {"0": 1, "3": 8}, {"3": 2, "5": 1}):
        _same(lorita.compress(net, ranks=ranks, svd_cache=cache), lorita.compress(net, ranks=ranks))
    assert cache.computed == 3 and len(cache) == 3


def test_composed_model_through_the_cache():
    composed, cache = lorita.compose(_net(), depth=3), SVDCache()
    for _ in range(2):
        _same(lorita.compress(composed, ranks=RANKS, svd_cache=cache), lorita.compress(composed, ranks=RANKS))
    assert cache.computed == 3


def test_changed_weights_are_recomputed():
    net, cache = _net(), SVDCache()
    lorita.compress(net, ranks=RANKS, svd_cache=cache)
    with torch.no_grad():
        net[3].weight.mul_(-2.0)  # in place: bumps the version counter
    _same(lorita.compress(net, ranks=RANKS, svd_cache=cache), lorita.compress(net, ranks=RANKS))
    assert cache.computed == 4  # only the changed layer again


def test_another_module_under_the_same_name_is_recomputed():
    net, cache = _net(), SVDCache()
    lorita.compress(net, ranks=RANKS, svd_cache=cache)
    other = copy.deepcopy(net)
    with torch.no_grad():
        other[0].weight.add_(1.0)
    _same(lorita.compress(other, ranks=RANKS, svd_cache=cache), lorita.compress(other, ranks=RANKS))
    assert cache.computed == 6


@pytest.fixture
def svd_calls(monkeypatch):
    """Shapes of every SVD run through lorita's svd() (every decomposition of these small layers: LAPACK's
    route in lorita.linalg; compress and the cache decompose through lorita.linalg, never directly)."""
    calls = []
    real = lorita.linalg.svd

    def counting(matrix, **kwargs):
        calls.append(tuple(matrix.shape))
        return real(matrix, **kwargs)

    monkeypatch.setattr(lorita.linalg, "svd", counting)
    for module in (COMPRESS_MODULE, CACHE_MODULE):
        assert not hasattr(module, "svd")  # no route around the counter
    return calls


def test_energy_runs_one_svd_per_layer(svd_calls):
    net = _net()
    small = lorita.compress(net, energy=0.5)
    assert len(svd_calls) == 3  # one per layer: the SVD that picks the rank also makes the cut
    ranks = {name: m[0].out_features if isinstance(m, lorita.LowRankLinear) else m[0].out_channels
             for name, m in small.named_modules() if isinstance(m, (lorita.LowRankLinear, lorita.LowRankConv2d))}
    _same(small, lorita.compress(net, ranks=ranks))


def test_search_accuracy_runs_each_svd_once(svd_calls):
    net = _net()
    x = torch.randn(16, 3, 6, 6, dtype=torch.float64)
    found = lorita.search_accuracy(net, lambda m: 100.0 - float((m(x) - net(x)).detach().norm() / net(x).detach().norm()),
                                   max_drop=50.0, max_evals=6)
    assert found.evaluations >= 3
    assert len(svd_calls) <= 3  # at most one SVD per layer, however many cuts were tried


def test_decomposition_with_too_few_components():
    w = torch.randn(6, 4, dtype=torch.float64)
    u, s, vh = lorita.linalg.svd(w)
    with pytest.raises(lorita.LoritaError, match="fewer than rank 3"):
        lorita.linalg.truncated_factors(w, 3, decomposition=(u[:, :2], s[:2], vh[:2]))


def test_svd_cache_of_the_wrong_type():
    with pytest.raises(lorita.LoritaError, match="svd_cache must be a lorita.svd_cache.SVDCache"):
        lorita.compress(_net(), ranks=RANKS, svd_cache={})


def test_cache_keeps_directions_up_to_break_even_and_every_value():
    net, cache = _net(), SVDCache()
    u, s, vh = cache.get("3", net[3])  # 32 x 288: break-even 28, 32 values
    assert u.shape == (32, lorita.linalg.break_even_rank(32, 288)) and vh.shape == (28, 288) and s.shape == (32,)
    assert u.dtype == torch.float64 and s.dtype == torch.float64  # a float64 model keeps float64


def test_float32_cache_cuts_within_float32_rounding_of_fresh_cuts():
    net = _net().float()
    cache = SVDCache()
    assert cache.get("3", net[3])[0].dtype == torch.float32 and cache.get("3", net[3])[1].dtype == torch.float64
    cached, fresh = lorita.compress(net, ranks=RANKS, svd_cache=cache), lorita.compress(net, ranks=RANKS)
    for (key, a), b in zip(cached.state_dict().items(), fresh.state_dict().values()):
        # the factors are formed from float32 U, Vh instead of float64 ones: a few float32 ulps of the largest entry
        assert float((a - b).abs().max()) <= 8 * torch.finfo(torch.float32).eps * float(b.abs().max()), key


def test_energy_cuts_one_layer_at_a_time(monkeypatch):
    # inplace=True: when a layer is decomposed, the layers before it are already cut (each decomposition is
    # used and dropped before the next: at most one layer's SVD is alive, whatever the model's size)
    net = _net()
    real = COMPRESS_MODULE.energy_cut
    seen = []

    def spying(matrix, energy, **kwargs):
        seen.append([type(net[i]).__name__ for i in (0, 3, 5)])
        return real(matrix, energy, **kwargs)

    monkeypatch.setattr(COMPRESS_MODULE, "energy_cut", spying)
    lorita.compress(net, energy=0.5, inplace=True)
    assert seen == [["Conv2d", "Linear", "Linear"], ["LowRankConv2d", "Linear", "Linear"],
                    ["LowRankConv2d", "LowRankLinear", "Linear"]]
