"""The model zoo: shapes for every model and input kind, errors, config round-trip, sizes."""

import json

import pytest
import torch
from torch import nn

from lorita.errors import LoritaError
from lorita.models import create_model, list_models, paper_exclude

torch.set_num_threads(1)

# Small settings per model, so the parametrised table stays fast on CPU.
SMALL = {
    "fcn": {"width": 32, "hidden_layers": 2},
    "vgg16": {"width_multiplier": 0.125},
    "vgg_small": {},
    "resnet20": {},
    "resnet56": {},
    "vit": {"dim": 32, "depth": 2, "heads": 4},
}
INPUTS = [(1, 28), (3, 32), (1, 8)]  # (in_channels, image_size)


def test_table_covers_every_image_model():
    from lorita.models.registry import IMAGE_INPUTS, model_inputs
    assert sorted(SMALL) == [m for m in list_models() if model_inputs(m) == IMAGE_INPUTS]
    assert model_inputs("gpt") == ("vocab_size",)  # the language model: tests/test_gpt.py


@pytest.mark.parametrize("in_channels,image_size", INPUTS)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_shape(name, in_channels, image_size):
    torch.manual_seed(0)
    net = create_model(name, num_classes=7, in_channels=in_channels, image_size=image_size, **SMALL[name])
    out = net(torch.randn(2, in_channels, image_size, image_size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,in_channels,image_size", [("vgg16", 3, 32), ("vit", 1, 28), ("fcn", 1, 28)])
def test_default_width_forward(name, in_channels, image_size):
    net = create_model(name, num_classes=10, in_channels=in_channels, image_size=image_size)
    assert net(torch.randn(2, in_channels, image_size, image_size)).shape == (2, 10)


def test_fcn_default_is_784_512_512_512_10():
    net = create_model("fcn")
    sizes = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]
    assert sizes == [(784, 512), (512, 512), (512, 512), (512, 10)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == 3


def test_vgg16_has_13_convs_and_512_classifier():
    net = create_model("vgg16", in_channels=3, image_size=32)
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 13
    assert net.classifier.in_features == 512


@pytest.mark.parametrize("name,low,high", [("resnet20", 0.26e6, 0.28e6), ("resnet56", 0.84e6, 0.87e6)])
def test_resnet_param_counts(name, low, high):
    # He et al. 2016 table 6: ResNet20 0.27M, ResNet56 0.85M (option-A shortcuts have no parameters).
    n = sum(p.numel() for p in create_model(name, in_channels=3, image_size=32).parameters())
    assert low < n < high


@pytest.mark.parametrize("name", sorted(SMALL))
def test_lorita_config_round_trip(name):
    net = create_model(name, num_classes=5, in_channels=3, image_size=32, **SMALL[name])
    config = net.lorita_config
    assert json.loads(json.dumps(config)) == config
    twin = create_model(config["zoo"], **config["kwargs"])
    assert twin.lorita_config == config
    a, b = net.state_dict(), twin.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_lorita_config_fills_in_defaults():
    kwargs = create_model("vit", image_size=32, dim=64).lorita_config["kwargs"]
    assert kwargs == {
        "num_classes": 10, "in_channels": 1, "image_size": 32,
        "patch_size": 4, "dim": 64, "depth": 6, "heads": 4, "mlp_ratio": 2.0,
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_calls_every_linear_and_conv_module(name):
    # Another part of the library swaps Linear/Conv2d for composed layers: forward
    # must call the module, never read its weight. Wrapping each in a Sequential
    # hides `.weight`, so any direct access would raise here.
    torch.manual_seed(0)
    net = create_model(name, in_channels=3, image_size=8, **SMALL[name]).eval()
    x = torch.randn(2, 3, 8, 8)
    before = net(x)
    targets = [n for n, m in net.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
    assert targets
    for full in targets:
        parent_name, _, child = full.rpartition(".")
        parent = net.get_submodule(parent_name)
        setattr(parent, child, nn.Sequential(getattr(parent, child)))
    torch.testing.assert_close(net(x), before, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_only_standard_layers(name):
    net = create_model(name, in_channels=3, image_size=8, **SMALL[name])
    for module in net.modules():
        assert not isinstance(module, nn.MultiheadAttention)
        if any(True for _ in module.parameters(recurse=False)):
            assert type(module) in (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


def test_vit_attention_is_stacked_qkv_and_proj():
    net = create_model("vit", dim=32, depth=1)
    attn = net.blocks[0].attn
    assert (attn.qkv.in_features, attn.qkv.out_features) == (32, 96)
    assert (attn.proj.in_features, attn.proj.out_features) == (32, 32)
    assert not any("pos_embed" in k for k in net.state_dict())  # buffer, rebuilt from config


def test_paper_exclude():
    net = create_model("vit", dim=32, depth=1)
    names = dict(net.named_modules())
    assert paper_exclude("vit") == ["patch_embed", "head"]
    assert all(n in names for n in paper_exclude("vit"))
    for name in ("fcn", "vgg16", "resnet20", "resnet56"):
        assert paper_exclude(name) == []


def test_unknown_name_lists_known_and_suggests_closest():
    with pytest.raises(LoritaError, match=r"unknown model 'resnet2'.*resnet56.*Did you mean 'resnet20'"):
        create_model("resnet2")
    with pytest.raises(LoritaError, match="known models: fcn, gpt, resnet20"):
        paper_exclude("alexnet")


def test_unknown_kwarg_names_allowed_ones():
    with pytest.raises(LoritaError, match=r"unknown keyword argument\(s\) \['depth'\].*allowed: \['width_multiplier'\]"):
        create_model("vgg16", depth=3)
    with pytest.raises(LoritaError, match="allowed: none"):
        create_model("resnet20", width=2)


def test_vit_image_size_not_divisible_by_patch():
    with pytest.raises(LoritaError, match="image_size 28 is not divisible by patch_size 8"):
        create_model("vit", image_size=28, patch_size=8)


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("fcn", {"width": 0}, "width must be an integer from 1"),
        ("gpt", {"context": 100000, "vocab_size": 64},
         "context must be an integer of magnitude at most 65,536, got 100,000"),
        ("fcn", {"num_classes": 2.5}, "num_classes must be an integer"),
        ("vgg16", {"width_multiplier": -1}, "width_multiplier must be a number > 0"),
        ("vit", {"dim": 30, "heads": 4}, "not divisible by heads"),
        ("vit", {"dim": 6, "heads": 2}, "divisible by 4"),
        ("fcn", {"width": torch.tensor(8)}, "plain JSON values"),
    ],
)
def test_bad_arguments(name, kwargs, message):
    with pytest.raises(LoritaError, match=message):
        create_model(name, **kwargs)
