"""Every bad argument raises LoritaError with a message that says what is wrong."""

import math

import pytest
import torch
from torch import nn

import lorita
from lorita import LoritaError


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.BatchNorm1d(6), nn.Linear(6, 3))


@pytest.mark.parametrize("kwargs,message", [
    ({"ranks": {"0": 7}}, r"rank for '0' must be an integer between 1 and min\(out, in\) = 6 \(its weight is 6x8\), got 7"),
    ({"ranks": {"0": 0}}, r"between 1 and min\(out, in\) = 6.*got 0"),
    ({"ranks": {"0": 2.5}}, r"must be an integer"),
    ({"ranks": {"fc9": 2}}, r"ranks names unknown layer 'fc9'; layers that can be compressed: 0, 3"),
    ({"energy": 1.5}, r"energy must be a number in \(0, 1\], got 1.5"),
    ({"energy": 0.0}, r"energy must be a number in \(0, 1\], got 0.0"),
    ({"energy": math.nan}, r"energy must be a number in \(0, 1\]"),
    ({"ratio": -0.1}, r"ratio must be a number in \(0, 1\], got -0.1"),
    ({"energy": 0.9, "ratio": 0.5}, r"exactly one of ranks=, energy= or ratio= \(got energy and ratio\)"),
    ({}, r"exactly one of ranks=, energy= or ratio= \(got none\)"),
    ({"ranks": [2]}, r"ranks must be a dict of module name -> rank"),
])
def test_compress_bad_arguments(kwargs, message):
    with pytest.raises(LoritaError, match=message):
        lorita.compress(net(), **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"depth": 0}, r"depth must be an integer >= 1"),
    ({"depth": 2.0}, r"depth must be an integer >= 1"),
    ({"init": "random"}, r"init must be one of \('default', 'preserve', 'balanced'\), got 'random'"),
    ({"mode": "fast"}, r"mode must be one of \('sequential', 'fused', 'auto'\)"),
    ({"targets": ["fc"]}, r"unknown module name 'fc'\. Layers that can be composed: 0, 3"),
    ({"targets": ["2"]}, r"module '2' is not a Linear or Conv2d layer, so it cannot be composed; layers that can: 0, 3"),
    ({"targets": r"conv\d"}, r"no layer matched targets='conv\\\\d' exclude=None\. Layers that could have matched: 0, 3"),
    ({"targets": "("}, r"targets is not a valid regular expression"),
    ({"exclude": r".*"}, r"no layer matched.*Layers that could have matched: 0, 3"),
])
def test_compose_bad_arguments(kwargs, message):
    with pytest.raises(LoritaError, match=message):
        lorita.compose(net(), **kwargs)


def test_compose_twice_is_refused():
    with pytest.raises(LoritaError, match=r"already composed \(e.g. '0'\); call lorita.merge\(model\) first"):
        lorita.compose(lorita.compose(net(), depth=2), depth=2)


def test_close_name_is_suggested():
    model = nn.Sequential()
    model.add_module("encoder", nn.Linear(4, 4))
    with pytest.raises(LoritaError, match=r"unknown module name 'encodr'\. Did you mean encoder\?"):
        lorita.compose(model, targets=["encodr"])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_weight_is_named(bad, tmp_path):
    model = net()
    with torch.no_grad():
        model[3].weight[0, 0] = bad
    kind = "NaN" if math.isnan(bad) else "Inf"
    with pytest.raises(LoritaError, match=rf"layer '3' has {kind} in its weight"):
        lorita.compress(model, energy=0.9)
    with pytest.raises(LoritaError, match=rf"layer '3' has {kind}"):
        lorita.spectrum(model)
    with pytest.raises(LoritaError, match=rf"layer '3' has {kind}"):
        lorita.compose(model, init="preserve")
    path = tmp_path / "m.lorita"
    with pytest.raises(LoritaError, match=rf"layer '3.weight' has {kind}"):
        lorita.save(model, path)
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing written


def test_not_a_module():
    for verb in (lorita.compose, lorita.merge):
        with pytest.raises(LoritaError, match=r"needs an nn.Module, got dict"):
            verb({})
    with pytest.raises(LoritaError, match=r"example_input must be a tensor"):
        lorita.profile(net(), [1, 2])


def test_truncate_refuses_grouped_conv():
    with pytest.raises(LoritaError, match=r"only Linear and Conv2d with groups=1"):
        lorita.truncate(nn.Conv2d(4, 4, 3, groups=2), 1)
