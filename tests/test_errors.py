"""Every bad argument raises LoritaError with a message that says what is wrong."""

import math

import pytest
import torch
from torch import nn

import lorita
from lorita import LoritaError
from lorita.errors import LoritaWarning


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
    ({"depth": 0}, r"depth must be an integer from 1 to 64"),
    ({"depth": 2.0}, r"depth must be an integer from 1 to 64"),
    ({"depth": 65}, r"depth must be an integer from 1 to 64 \(number of factors per layer; a lorita file holds"),
    ({"init": "random"}, r"init must be one of 'auto', 'default', 'preserve', 'balanced', got 'random'"),
    ({"mode": "fast"}, r"mode must be one of 'sequential', 'fused', 'auto', got 'fast'"),
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
    with pytest.raises(LoritaError, match=rf"layer '3' has {kind} in its weight"):
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


# ----------------------------------------------------------------------------
# hardening: odd models and odd arguments are LoritaErrors that say what to do

META = r"meta tensors have no values.*Materialise the model first, e\.g\. model\.to_empty"


def meta_net():
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.Linear(6, 3))


def test_meta_model_composes_and_merges_as_structure():
    composed = lorita.compose(meta_net(), depth=3)
    assert isinstance(composed[0], lorita.ComposedLinear) and composed[0].factors[0].is_meta
    merged = lorita.merge(composed)
    assert [type(m) for m in merged] == [nn.Linear, nn.ReLU, nn.Conv2d, nn.Linear]
    assert merged[2].weight.shape == (4, 3, 3, 3) and merged[2].weight.is_meta


@pytest.mark.parametrize("verb", [
    lambda m: lorita.compose(m, init="preserve"),
    lambda m: lorita.compose(m, init="balanced"),
    lambda m: lorita.spectrum(m),
    lambda m: lorita.compress(m, ratio=0.5),
    lambda m: lorita.compress(m, ranks={"0": 1}),
    lambda m: lorita.select_ranks(m, "energy", energy=0.9),
    lambda m: lorita.truncate(m[0], 1),
])
def test_meta_model_needs_values_for_anything_numeric(verb):
    with pytest.raises(LoritaError, match=META):
        verb(meta_net())


@pytest.mark.parametrize("call", [
    lambda: lorita.spectrum(3),
    lambda: lorita.compress(3, ratio=0.5),
    lambda: lorita.profile(3, torch.zeros(1, 8)),
    lambda: lorita.select_ranks(3, "energy", energy=0.9),
    lambda: lorita.search_accuracy(3, lambda m: 1.0),
    lambda: lorita.keep_faster(3, {}, torch.zeros(1, 8)),
    lambda: lorita.targets.skipped_layers("model"),
])
def test_non_module_arguments(call):
    with pytest.raises(LoritaError, match=r"needs an nn\.Module, got (int|str)"):
        call()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit itself is deprecated
@pytest.mark.parametrize("script", [torch.jit.script, lambda m: torch.jit.trace(m, torch.zeros(2, 8))])
def test_torchscript_models_are_refused_by_name(script):
    scripted = script(nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).eval())
    for verb in (lambda m: lorita.compose(m), lambda m: lorita.compress(m, ratio=0.5), lorita.spectrum):
        with pytest.raises(LoritaError, match=r"does not support TorchScript models.*pass the eager nn\.Module"):
            verb(scripted)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_scripted_submodule_is_left_plain_with_its_reason():
    model = nn.Sequential(torch.jit.script(nn.Linear(4, 4)), nn.Linear(4, 2))
    with pytest.warns(LoritaWarning, match=r"0: TorchScript submodule: not supported"):
        composed = lorita.compose(model, depth=2)
    assert isinstance(composed[1], lorita.ComposedLinear)


@pytest.mark.parametrize("call", [
    lambda m, x: lorita.profile(m, x),
    lambda m, x: lorita.select_ranks(m, "budget", flops=0.5, example_input=x),
    lambda m, x: lorita.select_ranks(m, "energy", energy=0.9, example_input=x),
    lambda m, x: lorita.compress(m, ratio=0.5, example_input=x),
    lambda m, x: lorita.compose(m, example_input=x),
])
def test_wrong_shaped_example_input_names_the_shape(call):
    with pytest.raises(LoritaError, match=r"the model failed on example_input, a tensor of shape \(2, 5\) "
                                          r"\(torch\.float32\): RuntimeError: .*Pass an input the model accepts"):
        call(net().eval(), torch.randn(2, 5))


@pytest.mark.parametrize("value", ["95.0", True, torch.tensor([1.0, 2.0]), None])
def test_evaluate_must_return_a_number(value):
    with pytest.raises(LoritaError, match=r"evaluate must return an accuracy \(a number, in percent\), got"):
        lorita.search_accuracy(net(), lambda m: value)
    with pytest.raises(LoritaError, match=r"evaluate must return an accuracy"):
        lorita.select_ranks(net(), "accuracy", evaluate=lambda m: value)


def test_evaluate_nan_fails_the_candidate_and_the_baseline():
    def evaluate(model):  # the uncompressed model scores; every cut is NaN
        return math.nan if any(isinstance(m, lorita.LowRankLinear) for m in model.modules()) else 90.0

    found = lorita.search_accuracy(net(), evaluate, max_evals=3)
    assert found.search.steps and not any(step.within for step in found.search.steps) and not found.search.found
    with pytest.raises(LoritaError, match=r"evaluate returned NaN for the uncompressed model"):
        lorita.search_accuracy(net(), lambda m: math.nan)


def test_nan_in_a_bias_is_named_as_the_bias():
    model = net()
    with torch.no_grad():
        model[3].bias[0] = math.nan
    with pytest.raises(LoritaError, match=r"layer '3' has NaN in its bias"):
        lorita.compress(model, ranks={"3": 1})
    with pytest.raises(LoritaError, match=r"layer '3' has NaN in its bias"):
        lorita.compose(model, init="preserve")
    composed = lorita.compose(net(), depth=2)
    with torch.no_grad():
        composed[3].bias[0] = math.nan
    with pytest.raises(LoritaError, match=r"layer '3' has NaN in its bias"):
        lorita.merge(composed)


def test_exclude_typos_raise_like_targets():
    model = nn.Sequential()
    model.add_module("body", nn.Linear(4, 4))
    model.add_module("norm", nn.LayerNorm(4))
    model.add_module("head", nn.Linear(4, 2))
    with pytest.raises(LoritaError, match=r"exclude names unknown module 'haed'\. Did you mean head\? "
                                          r"Layers that can be composed: body, head"):
        lorita.compose(model, exclude=["haed"])
    with pytest.raises(LoritaError, match=r"exclude names unknown module 'haed'"):
        lorita.compress(model, ratio=0.5, exclude=["haed"])
    with pytest.raises(LoritaError, match=r"exclude='conv\\\\d' \(a regex, full match\) matches no layer"):
        lorita.compose(model, exclude=r"conv\d")
    with pytest.raises(LoritaError, match=r"exclude names module 'norm', which is not a Linear or Conv2d layer"):
        lorita.compose(model, exclude=["norm"])
    assert isinstance(lorita.compose(model, exclude=["head"]).head, nn.Linear)  # a real name still works


def test_no_layer_matched_shows_why_each_layer_was_left_plain():
    class OwnForward(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(OwnForward(4, 4), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4))
    with pytest.raises(LoritaError, match=r"the model has no layer lorita can compose \(an nn.Linear, .*\)\. "
                                          r"Left plain: OwnForward overrides Linear\.forward \(if it computes the "
                                          r"plain linear map, opt it in with lorita\.targets\."
                                          r"register_linear_subclass\(OwnForward\)\): 0; depthwise conv"):
        lorita.compose(model)


@pytest.mark.parametrize("call, verb", [(lambda m: lorita.compress(m, ratio=0.5), "compress"),
                                        (lambda m: lorita.compose(m, depth=2), "compose")])
def test_a_cut_or_quantized_model_is_named_as_such(call, verb):
    """Not 'no layer matched targets=None': compress has no targets, and the reason is what was done to it."""
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(LoritaError, match=rf"already cut .* {verb} the model it was cut from instead"):
        call(lorita.compress(net, ratio=0.25))
    with pytest.raises(LoritaError, match=rf"quantized \(its layers are int8.*\); {verb} the float model, then "):
        call(lorita.quantize(net))
    with pytest.raises(LoritaError, match=rf"^the model has no layer lorita can {verb} \(an nn.Linear"):
        call(nn.Sequential(nn.ReLU()))
