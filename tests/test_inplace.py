"""compress(inplace=True) and merge(inplace=True): same result, no second copy of the model.

Memory itself is measured by benchmarks/memory.py (docs/SCALE.md), not asserted here.
"""

import math
import sys

import pytest
import torch
from torch import nn

import lorita
from lorita import LoritaError
from lorita.composed import COMPOSED_TYPES
from tiny_models import TABLE, build, example

IDS = [row[0] for row in TABLE]


@pytest.mark.parametrize("name,builder,shape", TABLE, ids=IDS)
@pytest.mark.parametrize("composed", [False, True], ids=["plain", "composed"])
def test_inplace_compress_equals_copying_compress(name, builder, shape, composed):
    x = example(shape)
    model = build(builder)
    if composed:
        model = lorita.compose(model, depth=3)
    copy_ = lorita.compress(model, ratio=0.4)
    before = model(x)
    assert not any(isinstance(m, lorita.LowRankLinear) for m in model.modules())  # default: argument untouched
    got = lorita.compress(model, ratio=0.4, inplace=True)
    assert got is model
    assert [type(m) for m in got.modules()] == [type(m) for m in copy_.modules()]
    assert any(isinstance(m, (lorita.LowRankLinear, lorita.LowRankConv2d)) for m in got.modules())
    torch.testing.assert_close(got(x), copy_(x), atol=0, rtol=0)
    assert not torch.allclose(got(x), before, atol=1e-6)  # something was cut


@pytest.mark.parametrize("name,builder,shape", TABLE, ids=IDS)
def test_inplace_merge_equals_copying_merge(name, builder, shape):
    x = example(shape)
    composed = lorita.compose(build(builder), depth=3)
    copy_ = lorita.merge(composed)
    got = lorita.merge(composed, inplace=True)
    assert got is composed and not any(isinstance(m, COMPOSED_TYPES) for m in got.modules())
    assert got.state_dict().keys() == copy_.state_dict().keys()
    torch.testing.assert_close(got(x), copy_(x), atol=0, rtol=0)


def test_inplace_refuses_bad_input_before_touching_anything():
    model = build(TABLE[0][1])
    with pytest.raises(LoritaError, match=r"rank for '2' must be an integer"):
        lorita.compress(model, ranks={"0": 2, "2": 99}, inplace=True)
    assert all(type(m) is not lorita.LowRankLinear for m in model.modules())
    composed = lorita.compose(build(TABLE[0][1]), depth=2)
    with torch.no_grad():
        composed[4].factors[0][0, 0] = math.nan
    with pytest.raises(LoritaError, match=r"layer '4' has NaN"):
        lorita.merge(composed, inplace=True)
    assert all(isinstance(composed[i], lorita.ComposedLinear) for i in (0, 2, 4))  # nothing merged


@pytest.mark.parametrize("composed", [False, True], ids=["plain", "composed"])
def test_inplace_frees_each_dense_layer_before_cutting_the_next(composed, monkeypatch):
    import weakref

    compress_module = sys.modules["lorita.compress"]  # the attribute lorita.compress is the function
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    if composed:
        model = lorita.compose(model, depth=2)
    first = weakref.ref(model[0])
    alive_when_cutting = {}
    real = compress_module.truncate

    def spy(module, rank, name, **kwargs):
        alive_when_cutting[name] = first() is not None
        return real(module, rank, name, **kwargs)

    monkeypatch.setattr(compress_module, "truncate", spy)
    lorita.compress(model, ranks={"0": 4, "2": 4}, inplace=True)
    # layer 0 (composed: its factors too) is gone by the time layer 2 is cut
    assert alive_when_cutting == {"0": not composed, "2": False}


@pytest.mark.parametrize("name,builder,shape", TABLE, ids=IDS)
def test_inplace_compose_equals_copying_compose(name, builder, shape):
    x = example(shape)
    model = build(builder)
    copy_ = lorita.compose(model, depth=3, init="preserve")
    assert not any(isinstance(m, COMPOSED_TYPES) for m in model.modules())  # default: argument untouched
    got = lorita.compose(model, depth=3, init="preserve", inplace=True)
    assert got is model
    assert [type(m) for m in got.modules()] == [type(m) for m in copy_.modules()]
    assert any(isinstance(m, COMPOSED_TYPES) for m in got.modules())
    torch.testing.assert_close(got(x), copy_(x), atol=0, rtol=0)
    plain = build(builder)
    assert lorita.compose(plain, depth=1, inplace=True) is plain


def test_inplace_compose_refuses_bad_input_before_touching_anything():
    model = build(TABLE[0][1])
    with torch.no_grad():
        model[4].weight[0, 0] = math.nan
    with pytest.raises(LoritaError, match=r"'4'.*NaN"):
        lorita.compose(model, depth=2, init="preserve", inplace=True)
    assert not any(isinstance(m, COMPOSED_TYPES) for m in model.modules())  # nothing composed


def test_inplace_compose_frees_each_plain_layer_before_composing_the_next(monkeypatch):
    import weakref

    compose_module = sys.modules["lorita.compose"]
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    first = weakref.ref(model[0])
    alive_when_composing = []
    real = compose_module._compose_layer

    def spy(module, *args):
        alive_when_composing.append(first() is not None)
        return real(module, *args)

    monkeypatch.setattr(compose_module, "_compose_layer", spy)
    lorita.compose(model, depth=2, init="preserve", inplace=True)
    assert alive_when_composing == [True, False]  # layer 0 is gone by the time layer 2 is composed
