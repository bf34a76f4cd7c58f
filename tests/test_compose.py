"""compose / merge identities over the table of tiny models.

Tolerances: the exactness tests run in float64, where a product of three O(1) factors and
a forward pass of a few layers is exact to ~1e-15 relative; 1e-10 leaves room for the
different summation order of fused, sequential and merged forms while still catching any
real error (a wrong factor order or a dropped bias is O(1)). The float32 test uses 1e-5,
~100 x float32's epsilon for these sizes.
"""

import copy

import pytest
import torch
from torch import nn

import lorita
from lorita.composed import COMPOSED_TYPES, ComposedConv2d, ComposedLinear
from lorita.errors import LoritaWarning
from tiny_models import TABLE, build, example

TIGHT = dict(atol=1e-10, rtol=1e-10)
IDS = [row[0] for row in TABLE]


def composed_layers(model):
    return [m for m in model.modules() if isinstance(m, COMPOSED_TYPES)]


@pytest.mark.parametrize("name,builder,shape", TABLE, ids=IDS)
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_merge_equals_composed_and_restores_architecture(name, builder, shape, depth):
    original = build(builder)
    x = example(shape)
    composed = lorita.compose(original, depth=depth)
    assert composed_layers(composed), "nothing was composed"
    # Fresh factors: the composed model is a different function (the test is not trivial).
    assert not torch.allclose(composed(x), original(x), atol=1e-3)
    merged = lorita.merge(composed)
    torch.testing.assert_close(merged(x), composed(x), **TIGHT)
    assert not composed_layers(merged)
    assert [type(m) for m in merged.modules()] == [type(m) for m in original.modules()]
    assert {k: v.shape for k, v in merged.state_dict().items()} == {k: v.shape for k, v in original.state_dict().items()}
    fresh = build(builder)
    fresh.load_state_dict(merged.state_dict(), strict=True)
    torch.testing.assert_close(fresh(x), composed(x), **TIGHT)


@pytest.mark.parametrize("name,builder,shape", TABLE, ids=IDS)
@pytest.mark.parametrize("side", ["input", "smaller"])
def test_preserve_init_keeps_outputs(name, builder, shape, side):
    original = build(builder)
    x = example(shape)
    composed = lorita.compose(original, depth=3, init="preserve", factor_side=side)
    torch.testing.assert_close(composed(x), original(x), **TIGHT)
    torch.testing.assert_close(lorita.merge(composed)(x), original(x), **TIGHT)


@pytest.mark.parametrize("name,builder,shape", TABLE, ids=IDS)
def test_sequential_and_fused_agree_in_value_and_gradient(name, builder, shape):
    x = example(shape)
    base = lorita.compose(build(builder), depth=3)
    outs, grads = {}, {}
    for mode in ("sequential", "fused", "auto"):
        model = copy.deepcopy(base)
        for layer in composed_layers(model):
            layer.mode = mode
        out = model(x)
        out.square().sum().backward()
        outs[mode] = out.detach()
        grads[mode] = [p.grad.clone() for p in model.parameters()]
    for mode in ("fused", "auto"):
        torch.testing.assert_close(outs[mode], outs["sequential"], **TIGHT)
        for g, ref in zip(grads[mode], grads["sequential"]):
            torch.testing.assert_close(g, ref, **TIGHT)


def test_auto_picks_the_cheaper_form():
    linear = ComposedLinear(512, 512, depth=3, mode="auto")
    assert not linear.use_fused(8)  # small batch: sequential (8*3*512^2 < 2*512^3 + 8*512^2)
    assert linear.use_fused(4096)  # large batch: fused
    conv = ComposedConv2d.from_conv(nn.Conv2d(64, 64, 3, padding=1), depth=3)
    seq, fused = conv.costs(128 * 32 * 32)
    assert fused < seq and conv.use_fused(128 * 32 * 32)


def test_float32_merge_within_float32_rounding():
    original = build(TABLE[2][1], dtype=torch.float32)
    x = example(TABLE[2][2], dtype=torch.float32)
    composed = lorita.compose(original, depth=3)
    torch.testing.assert_close(lorita.merge(composed)(x), composed(x), atol=1e-5, rtol=1e-5)


def test_depth_one_is_an_equal_plain_copy():
    original = build(TABLE[0][1])
    copy_ = lorita.compose(original, depth=1)
    assert copy_ is not original and not composed_layers(copy_)
    x = example(TABLE[0][2])
    torch.testing.assert_close(copy_(x), original(x), atol=0, rtol=0)


def test_the_deepest_composition_is_the_deepest_a_file_holds(tmp_path):
    """A model composed at MAX_DEPTH saves and loads; one factor more is refused before any copy is made."""
    from lorita.composed import MAX_DEPTH
    from lorita.errors import LoritaError

    original = nn.Sequential(nn.Linear(3, 2))
    deepest = lorita.compose(original, depth=MAX_DEPTH)
    lorita.save(deepest, tmp_path / "m.lorita")
    assert lorita.load(tmp_path / "m.lorita", model=nn.Sequential(nn.Linear(3, 2)))[0].depth == MAX_DEPTH
    for make in (lambda: lorita.compose(original, depth=MAX_DEPTH + 1),
                 lambda: ComposedLinear.from_linear(nn.Linear(3, 2), MAX_DEPTH + 1),
                 lambda: ComposedConv2d.from_conv(nn.Conv2d(3, 2, 1), MAX_DEPTH + 1)):
        with pytest.raises(LoritaError, match=rf"depth must be an integer from \d to {MAX_DEPTH}"):
            make()


def test_argument_is_left_untouched():
    original = build(TABLE[0][1])
    before = {k: v.clone() for k, v in original.state_dict().items()}
    lorita.merge(lorita.compose(original, depth=3))
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())
    assert not composed_layers(original)


def test_default_init_factor_shapes_follow_the_paper():
    net = nn.Sequential(nn.Linear(6, 4), nn.Conv2d(3, 5, 3))
    composed = lorita.compose(net, depth=3)
    linear, conv = composed[0], composed[1]
    assert [tuple(f.shape) for f in linear.factors] == [(6, 6), (6, 6), (4, 6)]  # N-1 square in->in maps first
    assert conv.spatial.weight.shape == (5, 3, 3, 3) and conv.spatial.bias is None
    assert [tuple(m.shape) for m in conv.mixers] == [(5, 5), (5, 5)]  # 1x1 C_out -> C_out after the kernel
    smaller = lorita.compose(net, depth=3, factor_side="smaller")[0]
    assert [tuple(f.shape) for f in smaller.factors] == [(4, 6), (4, 4), (4, 4)]


def test_balanced_init_product_is_a_default_scale_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64))
    default = lorita.compose(net, depth=3, init="default")[0].merged_weight()
    balanced = lorita.compose(net, depth=3, init="balanced")[0].merged_weight()
    # The product of three default factors is much smaller than one default layer
    # (METHOD.md section 2); the balanced init restores the single layer's scale.
    assert balanced.std() > 3 * default.std()
    assert 0.5 < balanced.std() / net[0].weight.std() < 2.0


def test_preserve_pads_zero_directions_so_they_still_learn():
    net = nn.Sequential(nn.Linear(5, 5, bias=False))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0] = 1.0  # rank 1: four zero singular directions
    composed = lorita.compose(net, depth=3, init="preserve")
    layer = composed[0]
    torch.testing.assert_close(layer.merged_weight(), net[0].weight, atol=1e-7, rtol=0)
    # Inner factors are full rank (no dead saddle), so every entry of the product gets gradient.
    for f in layer.factors[:-1]:
        assert torch.linalg.matrix_rank(f.detach().double()) == 5
    x, target = torch.randn(8, 5), torch.randn(8, 5)
    (layer(x) - target).square().sum().backward()
    assert (layer.factors[-1].grad.abs() > 0).all()
    # Without padding the zero directions would be a saddle: this factor's gradient would
    # vanish there. The product's gradient reaches every entry of the weight.
    assert (layer.factors[0].grad.abs().sum(0) > 0).all()


def test_shared_layer_stays_shared():
    from tiny_models import Shared
    original = build(Shared)
    composed = lorita.compose(original, depth=3)
    assert composed.mid is composed.mid and isinstance(composed.mid, ComposedLinear)
    merged = lorita.merge(composed)
    assert isinstance(merged.mid, nn.Linear)
    assert len(list(merged.parameters())) == len(list(original.parameters()))


def test_tied_weight_is_left_plain_with_a_warning():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.lm = nn.Linear(4, 10, bias=False)
            self.lm.weight = self.emb.weight
            self.proj = nn.Linear(4, 4)

        def forward(self, idx):
            return self.lm(self.proj(self.emb(idx)))

    with pytest.warns(LoritaWarning, match=r"lm: weight tied to another module"):
        composed = lorita.compose(Tied(), depth=2)
    assert isinstance(composed.lm, nn.Linear) and isinstance(composed.proj, ComposedLinear)
    assert composed.lm.weight is composed.emb.weight
    with pytest.raises(lorita.LoritaError, match=r"cannot compose 'lm': weight tied"):
        lorita.compose(Tied(), depth=2, targets=["lm"])


def test_grouped_depthwise_transposed_are_named_in_one_warning():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 3, groups=4),
                        nn.ConvTranspose2d(4, 4, 3), nn.Conv2d(4, 2, 1))
    with pytest.warns(LoritaWarning, match=r"left 3 layer\(s\) plain: 0: grouped.*1: depthwise.*2: transposed"):
        composed = lorita.compose(net, depth=2)
    assert issubclass(LoritaWarning, UserWarning)  # filters written for UserWarning still catch it
    assert [type(m).__name__ for m in composed] == ["Conv2d", "Conv2d", "ConvTranspose2d", "ComposedConv2d"]


def test_multihead_attention_projection_is_skipped():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.attn(x, x, x)[0])

    with pytest.warns(LoritaWarning, match=r"attn.out_proj: inside nn.MultiheadAttention"):
        composed = lorita.compose(Attn(), depth=2)
    composed(torch.randn(2, 3, 8))  # still runs


@pytest.mark.parametrize("targets,exclude,expected", [
    (None, None, ["stem.0", "body.conv", "head.1.0", "head.1.2"]),
    (["conv"], None, ["body.conv"]),  # .suffix match
    (["head.1.2"], None, ["head.1.2"]),  # exact
    (r"head\..*", None, ["head.1.0", "head.1.2"]),  # one regex, full match
    (None, ["stem.0"], ["body.conv", "head.1.0", "head.1.2"]),
    (None, r".*conv", ["stem.0", "head.1.0", "head.1.2"]),
])
def test_targets_and_exclude(targets, exclude, expected):
    from tiny_models import Nested
    composed = lorita.compose(Nested(), depth=2, targets=targets, exclude=exclude)
    got = [n for n, m in composed.named_modules() if isinstance(m, COMPOSED_TYPES)]
    assert got == expected


def test_device_and_dtype_are_kept():
    net = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(1, 2, 1)).to(torch.float16)
    composed = lorita.compose(net, depth=3, init="preserve")
    assert {p.dtype for p in composed.parameters()} == {torch.float16}
    merged = lorita.merge(composed)
    assert {p.dtype for p in merged.parameters()} == {torch.float16}
    assert {p.device for p in merged.parameters()} == {net[0].weight.device}


LINEAR_ATTRIBUTES = ("in_features", "out_features")
CONV_ATTRIBUTES = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                   "padding_mode", "transposed", "output_padding")


def test_composed_layers_read_like_the_layers_they_replace():
    # Parents read these attributes of their child (transformers' MobileNet TF padding reads
    # stride, kernel_size and dilation); a composed layer answers as the original did.
    net = nn.Sequential(nn.Linear(6, 4), nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                                                   padding_mode="reflect"))
    composed = lorita.compose(net, depth=3, init="preserve")
    for attr in LINEAR_ATTRIBUTES:
        assert getattr(composed[0], attr) == getattr(net[0], attr), attr
    for attr in CONV_ATTRIBUTES:
        assert getattr(composed[1], attr) == getattr(net[1], attr), attr
    for original, layer in zip(net, composed):
        torch.testing.assert_close(layer.bias, original.bias, atol=0, rtol=0)
        torch.testing.assert_close(layer.weight, original.weight, atol=1e-6, rtol=1e-5)  # float32 product
