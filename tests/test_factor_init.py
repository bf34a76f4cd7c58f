"""How composed factors start: init="auto" (the default), the init_scale knob, and the small-start warning.

Ratios are of Frobenius norms computed in float64 from float32 factors: 1e-5 relative is
~100 x float32's epsilon for these sizes.
"""

import math
import warnings

import pytest
import torch
from torch import nn

import lorita
from lorita.errors import LoritaError, LoritaWarning
from lorita.factor_init import normalised_layers, start_ratio, unguarded
from lorita.models import create_model
from lorita.runs.config import ComposeSpec


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def composed_seeded(model, **kwargs):
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoritaWarning)
        return lorita.compose(model, **kwargs)


def equal_states(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name,kwargs", [("fcn", {}), ("resnet20", {}), ("vgg16", {"width_multiplier": 0.125})])
def test_auto_init_is_the_papers_on_models_with_batchnorm_after_every_layer(name, kwargs):
    # The demo's FCN (784-512-512-512-10) and the zoo CNNs start bit for bit as with the paper's init,
    # so results measured with init="default" stand for the new default.
    plain = create_model(name, num_classes=10, in_channels=1, image_size=28, **kwargs)
    auto = composed_seeded(plain, depth=3)
    paper = composed_seeded(plain, depth=3, init="default")
    assert equal_states(auto, paper)
    scaled = composed_seeded(plain, depth=3, init="default", init_scale=1.0)  # the check can fail
    assert not equal_states(scaled, paper)


def test_auto_init_scales_layers_without_normalisation_to_their_own_norm():
    plain = mlp()
    auto = composed_seeded(plain, depth=3)
    paper = composed_seeded(plain, depth=3, init="default")
    for i in (0, 2, 4):  # Linear -> ReLU -> Linear: nothing absorbs the scale, the head's input included
        assert start_ratio(auto[i], plain[i].weight) == pytest.approx(1.0, rel=1e-5)
        assert start_ratio(paper[i], plain[i].weight) < 0.5


def test_last_layer_keeps_the_papers_init_when_a_normalisation_layer_feeds_it():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(),
                          nn.Dropout(0.1), nn.Flatten(), nn.Linear(32, 4))
    auto = composed_seeded(plain, depth=3)
    paper = composed_seeded(plain, depth=3, init="default")
    assert start_ratio(auto[0], plain[0].weight) == pytest.approx(1.0, rel=1e-5)  # Linear -> ReLU -> Linear
    for i in (2, 7):  # a BatchNorm after layer 2, and before the head (through ReLU, dropout and flatten)
        assert all(torch.equal(a, p) for a, p in zip(auto[i].factors, paper[i].factors))


@pytest.mark.parametrize("scale", [0.2, 0.6, 1.0, 2.5])
def test_init_scale_sets_the_product_norm_and_keeps_the_papers_draw(scale):
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 12))
    scaled = composed_seeded(plain, depth=3, init="default", init_scale=scale)
    paper = composed_seeded(plain, depth=3, init="default")
    assert start_ratio(scaled[0], plain[0].weight) == pytest.approx(scale, rel=1e-5)
    assert start_ratio(scaled[3], plain[3].weight) == pytest.approx(scale, rel=1e-5)
    # the same random factors, each multiplied by one common number: the paper's draw, rescaled
    pairs = [(scaled[0].spatial.weight, paper[0].spatial.weight), *zip(scaled[0].mixers, paper[0].mixers),
             *zip(scaled[3].factors, paper[3].factors)]
    gains = {round((s.norm() / p.norm()).item(), 5) for s, p in pairs[:3]}
    assert len(gains) == 1
    for s, p in pairs:
        torch.testing.assert_close(s / s.norm(), p / p.norm())


def test_papers_init_without_normalisation_warns_before_training():
    with pytest.warns(LoritaWarning, match=r"no normalisation layer after them.*'0' \(0\.3.*'2' \(0\.3"):
        lorita.compose(mlp(), depth=3, init="default")
    with pytest.warns(LoritaWarning, match=r"'0' \(0\.[56]"):
        lorita.compose(mlp(), depth=2, init="default")  # 0.58: the MLP of docs/INIT.md reached 54%
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoritaWarning)
        lorita.compose(mlp(), depth=3)  # auto: no warning
        lorita.compose(mlp(), depth=3, init="default", init_scale=0.8)
        lorita.compose(create_model("gpt", vocab_size=12, dim=16, depth=1, heads=2, context=8), depth=3,
                       init="default", exclude="head")  # its own init (std 0.02) is below the paper's product
        lorita.compose(create_model("fcn", num_classes=10, in_channels=1, image_size=8, width=16), depth=3,
                       init="default")  # BatchNorm after every hidden layer


def test_auto_follows_normalisation_through_activations_and_dropout():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Dropout(0.1), nn.LayerNorm(4), nn.Linear(4, 4), nn.GELU(),
                        nn.Linear(4, 2))
    assert normalised_layers(net) & {"0", "4", "6"} == {"0"}
    assert unguarded(net, ["0", "4", "6"]) == ["4", "6"]  # the head is fed by a GELU of a Linear


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), math.inf, True, "1"])
def test_init_scale_must_be_a_positive_number(bad):
    with pytest.raises(LoritaError, match="init_scale must be"):
        lorita.compose(mlp(), depth=2, init_scale=bad)


@pytest.mark.parametrize("init", ["preserve", "balanced"])
def test_init_scale_is_refused_where_the_init_fixes_the_product(init):
    with pytest.raises(LoritaError, match="init_scale scales the paper's random factors"):
        lorita.compose(mlp(), depth=2, init=init, init_scale=1.0)
    with pytest.raises(LoritaError, match="init_scale applies to init 'default' or 'auto'"):
        ComposeSpec(depth=2, init=init, init_scale=1.0)


def test_meta_model_composes_with_auto_init():
    with torch.device("meta"):
        net = mlp()
    composed = lorita.compose(net, depth=2)  # structure only: nothing to scale
    assert composed[0].factors[0].is_meta
    with pytest.raises(LoritaError, match="init_scale"):
        lorita.compose(net, depth=2, init_scale=1.0)


def test_zero_layer_keeps_the_papers_factors():
    plain = mlp()
    with torch.no_grad():
        plain[2].weight.zero_()
    auto = composed_seeded(plain, depth=2)
    paper = composed_seeded(plain, depth=2, init="default")
    assert all(torch.equal(a, p) for a, p in zip(auto[2].factors, paper[2].factors))  # no norm to match


def test_init_scale_that_scales_no_layer_under_auto_says_so():
    guarded = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))  # head fed through ReLU
    torch.manual_seed(1)
    with pytest.warns(LoritaWarning, match=r'init_scale=0.5 changes nothing here: under init="auto"'):
        composed = lorita.compose(guarded, depth=2, init_scale=0.5)
    assert all(torch.equal(a, p) for a, p in zip(composed[0].factors,
                                                   composed_seeded(guarded, depth=2, init="default")[0].factors))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="init_scale=")  # a layer it scales: not this warning
        lorita.compose(mlp(), depth=2, init_scale=0.5)
        lorita.compose(guarded, depth=1, init_scale=0.5)  # depth 1 composes nothing: nothing to say
