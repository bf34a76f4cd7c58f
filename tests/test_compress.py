"""compress / truncate / spectrum: exact identities and counting formulas.

Float64 models throughout: an SVD and a rebuilt forward pass are exact to ~1e-13 for
these sizes, so 1e-10 is tight while leaving room for summation order.
"""

import math

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lorita
from lorita.errors import LoritaWarning
from lorita.linalg import break_even_rank
from lorita.lowrank import LOWRANK_TYPES, weight_matrix
from tiny_models import TABLE, build, example

TIGHT = dict(atol=1e-10, rtol=1e-10)
IDS = [row[0] for row in TABLE]


def plain_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


@pytest.mark.parametrize("name,builder,shape", TABLE, ids=IDS)
def test_full_rank_truncation_equals_dense(name, builder, shape):
    model = build(builder)
    x = example(shape)
    for layer_name, layer in plain_layers(model).items():
        pair = lorita.truncate(layer, min(weight_matrix(layer).shape), layer_name)
        probe = torch.randn(2, layer.in_features, dtype=torch.float64) if isinstance(layer, nn.Linear) else \
            torch.randn(2, layer.in_channels, 7, 7, dtype=torch.float64)
        torch.testing.assert_close(pair(probe), layer(probe), **TIGHT)
    # The model-level call keeps everything dense at full rank (above break-even) and equal.
    full = lorita.compress(model, ratio=1.0)
    assert not any(isinstance(m, LOWRANK_TYPES) for m in full.modules())
    torch.testing.assert_close(full(x), model(x), **TIGHT)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_weight_error_is_the_dropped_singular_values(rank):
    torch.manual_seed(0)
    for layer in (nn.Linear(9, 7).double(), nn.Conv2d(3, 6, (2, 3), stride=2).double()):
        sigma = torch.linalg.svdvals(weight_matrix(layer))
        pair = lorita.truncate(layer, rank)
        first, second = pair[0].weight.reshape(rank, -1), pair[1].weight.reshape(-1, rank)
        error = torch.linalg.matrix_norm(second @ first - weight_matrix(layer))
        assert math.isclose(error.item(), sigma[rank:].square().sum().sqrt().item(), rel_tol=1e-9)
        torch.testing.assert_close(pair[1].bias, layer.bias, atol=0, rtol=0)


def test_params_and_macs_follow_the_formulas():
    m, n, r = 40, 30, 5
    net = nn.Sequential(nn.Linear(n, m), nn.ReLU(), nn.Conv2d(4, 12, 3, padding=1, bias=False))
    small = lorita.compress(net, ranks={"0": r, "2": 2})
    x_lin, x_conv = torch.randn(1, n), torch.randn(1, 4, 6, 6)
    lin = lorita.profile(small[0], x_lin)
    assert lin.params == r * (m + n) + m  # thin pair plus the original bias
    assert lin.macs == r * (m + n) and lin.flops == 2 * r * (m + n)
    conv = lorita.profile(small[2], x_conv)
    positions = 6 * 6
    assert conv.params == 2 * (4 * 9 + 12)
    assert conv.macs == positions * 2 * (4 * 9 + 12)
    dense = lorita.profile(net[2], x_conv)
    assert dense.macs == positions * 4 * 9 * 12 and dense.params == 4 * 9 * 12


def test_break_even_rule():
    assert break_even_rank(40, 30) == 17  # 17*70 = 1190 < 1200; 18*70 = 1260 >= 1200
    assert break_even_rank(10, 1) == 0  # a 10x1 layer can never be cut
    net = nn.Sequential(nn.Linear(30, 40))
    assert isinstance(lorita.compress(net, ranks={"0": 17})[0], lorita.LowRankLinear)
    kept = lorita.compress(net, ranks={"0": 18})[0]
    assert type(kept) is nn.Linear and torch.equal(kept.weight, net[0].weight)


def test_energy_and_ratio_pick_the_expected_ranks():
    layer = nn.Linear(6, 6, bias=False).double()
    u, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    sigma = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1, 0.0], dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(u @ torch.diag(sigma) @ v.T)
    net = nn.Sequential(layer)
    total = sigma.square().sum()  # 21.26; 16/21.26 = 0.75, 20/21.26 = 0.94
    assert lorita.compress(net, energy=0.75)[0].rank == 1
    assert lorita.compress(net, energy=0.76)[0].rank == 2
    assert float(sigma[:2].square().sum() / total) < 0.95
    assert type(lorita.compress(net, energy=0.95)[0]) is nn.Linear  # rank 3 >= break-even 2 for 6x6
    assert lorita.compress(net, ratio=0.2)[0].rank == 2  # ceil(0.2 * 6) = 2
    assert lorita.compress(net, ratio=1 / 6)[0].rank == 1


def test_compress_on_composed_model_merges_first():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 4)).double()
    composed = lorita.compose(net, depth=3)
    x = torch.randn(3, 20, dtype=torch.float64)
    direct = lorita.compress(composed, ranks={"0": 5})
    via_merge = lorita.compress(lorita.merge(composed), ranks={"0": 5})
    torch.testing.assert_close(direct(x), via_merge(x), **TIGHT)
    assert isinstance(direct[0], lorita.LowRankLinear) and type(direct[2]) is nn.Linear


def test_spectrum_names_and_values():
    model = build(TABLE[3][1])  # nested
    spec = lorita.spectrum(model)
    assert list(spec) == ["stem.0", "body.conv", "head.1.0", "head.1.2"]
    torch.testing.assert_close(spec["body.conv"], torch.linalg.svdvals(model.body.conv.weight.reshape(5, -1)))
    composed = lorita.compose(model, depth=3)
    merged_spec = lorita.spectrum(lorita.merge(composed))
    for key, values in lorita.spectrum(composed).items():
        torch.testing.assert_close(values, merged_spec[key], **TIGHT)


def test_compressed_model_keeps_dtype_and_shared_layer():
    from tiny_models import Shared
    model = build(Shared)
    small = lorita.compress(model, ranks={"mid": 2})
    assert small.mid is small.mid and isinstance(small.mid, lorita.LowRankLinear)
    assert {p.dtype for p in small.parameters()} == {torch.float64}
    x = example((3, 6))
    assert small(x).shape == (3, 2)


class TwoNames(nn.Module):
    """One Linear registered under two names (aliases): one layer, known as "first"."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(16, 16)
        self.second = self.first
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(torch.relu(self.second(torch.relu(self.first(x)))))


def test_ranks_may_name_a_layer_by_any_of_its_names():
    small = lorita.compress(TwoNames(), ranks={"second": 2})
    assert small.first is small.second and small.first.rank == 2
    with pytest.raises(lorita.LoritaError, match=r"ranks names unknown layer 'third'; layers that can be compressed: "
                                                 r"first, head$"):
        lorita.compress(TwoNames(), ranks={"third": 2})


def test_compress_leaves_argument_untouched():
    model = build(TABLE[0][1])
    before = [p.clone() for p in model.parameters()]
    lorita.compress(model, ratio=0.2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


LINEAR_ATTRIBUTES = ("in_features", "out_features")
CONV_ATTRIBUTES = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                   "padding_mode", "transposed", "output_padding")


def test_compressed_layers_read_like_the_layers_they_replace():
    # A parent that reads .stride / .bias / .in_features of its child sees the original's values.
    net = nn.Sequential(nn.Linear(16, 12), nn.Conv2d(6, 8, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                                                     padding_mode="reflect"))
    small = lorita.compress(net, ranks={"0": 2, "1": 2})
    assert isinstance(small[0], lorita.LowRankLinear) and isinstance(small[1], lorita.LowRankConv2d)
    for attr in LINEAR_ATTRIBUTES:
        assert getattr(small[0], attr) == getattr(net[0], attr), attr
    for attr in CONV_ATTRIBUTES:
        assert getattr(small[1], attr) == getattr(net[1], attr), attr
    for original, layer in zip(net, small):
        torch.testing.assert_close(layer.bias, original.bias, atol=0, rtol=0)
        assert layer.weight.shape == original.weight.shape


class ReadsWeight(nn.Module):
    """A parent that uses ``proj`` through its weight and bias only (torchvision Swin style)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(32, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(torch.relu(F.linear(x, self.proj.weight, self.proj.bias)))


def test_layer_read_through_its_weight_is_left_dense_with_example_input():
    torch.manual_seed(0)
    model, x = ReadsWeight().double(), torch.randn(3, 32, dtype=torch.float64)
    with pytest.warns(LoritaWarning, match=r"proj: its parent reads its \.weight/\.bias"):
        small = lorita.compress(model, ranks={"proj": 2, "head": 1}, example_input=x)
    assert type(small.proj) is nn.Linear and isinstance(small.head, lorita.LowRankLinear)
    assert set(lorita.spectrum(model, example_input=x)) == {"head"}
    assert set(lorita.select_ranks(model, "energy", energy=0.9, example_input=x)) == {"head"}


def test_layer_read_through_its_weight_is_left_dense_without_example_input():
    # no forward pass: the parent's forward source reads self.proj.weight and never calls proj
    model = ReadsWeight().double()
    with pytest.warns(LoritaWarning, match=r"proj: its parent reads its \.weight/\.bias"):
        small = lorita.compress(model, ranks={"proj": 2, "head": 1})
    assert type(small.proj) is nn.Linear and isinstance(small.head, lorita.LowRankLinear)
    assert set(lorita.spectrum(model)) == {"head"}


class HiddenReader(ReadsWeight):
    """Reads ``proj``'s weight through ``getattr``: invisible in the source, found only by running."""

    def forward(self, x):
        layer = getattr(self, "p" + "roj")
        return self.head(torch.relu(F.linear(x, layer.weight, layer.bias)))


def test_a_cut_layer_read_by_its_parent_warns_once_and_profile_says_what_ran():
    # no probe finds it: proj is cut, the parent reads the pair's rank-r weight and bias (right values,
    # no compute saved), the first forward warns naming it, and profile says its MACs ran in the parent
    torch.manual_seed(0)
    model, x = HiddenReader().double(), torch.randn(3, 32, dtype=torch.float64)
    small = lorita.compress(model, ranks={"proj": 2})
    pair = small.proj
    with pytest.warns(LoritaWarning, match=r"read the dense \.weight of layer 'proj' \(LowRankLinear\)"):
        y = small(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small(x)  # once per layer
        pair.weight  # read outside a forward pass: nothing to say
    expected = model.head(torch.relu(F.linear(x, pair[1].weight @ pair[0].weight, model.proj.bias)))
    torch.testing.assert_close(y, expected, **TIGHT)
    counted = lorita.profile(small, x)
    rows = {row.name: row for row in counted.layers}
    assert rows["proj"].note.startswith("read by its parent") and rows["proj"].macs == 0
    assert not rows["head"].note
    # what ran: the rank-2 weight rebuilt (32x2 @ 2x32), the dense 32x32 map on 3 rows, the head
    assert counted.macs == 32 * 2 * 32 + 3 * 32 * 32 + 3 * 32 * 4
    assert "* read by its parent" in str(counted)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_registered_linear_subclass_is_checked_numerically(scale):
    class Matmul(nn.Linear):  # own forward; the plain linear map only when scale == 1
        def forward(self, x):
            return scale * (x @ self.weight.T) + self.bias

    Matmul.__qualname__ = f"Matmul{int(scale)}"
    torch.manual_seed(0)
    model = nn.Sequential(Matmul(16, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    assert "overrides Linear.forward" in lorita.targets.skipped_layers(model)["0"]
    lorita.targets.register_linear_subclass(Matmul)
    if scale != 1.0:
        assert "its forward differs from Linear.forward" in lorita.targets.skipped_layers(model)["0"]
        return
    assert lorita.targets.skipped_layers(model) == {}
    x = torch.randn(3, 16, dtype=torch.float64)
    composed = lorita.compose(model, depth=3, init="preserve")
    torch.testing.assert_close(composed(x), model(x), **TIGHT)
    assert type(lorita.merge(composed)[0]) is Matmul  # merged back into its own class
    assert isinstance(lorita.compress(model, ranks={"0": 2})[0], lorita.LowRankLinear)


def test_ranks_naming_an_excluded_layer_is_refused_as_such():
    net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    assert [type(m) for m in lorita.compress(net, ratio=0.25, exclude=["0", "4"])] == \
        [nn.Linear, nn.ReLU, lorita.LowRankLinear, nn.ReLU, nn.Linear]
    with pytest.raises(lorita.LoritaError, match=r"ranks names '0', which exclude leaves out"):  # was "unknown"
        lorita.compress(net, ranks={"0": 4, "2": 4}, exclude=["0"])
    with pytest.raises(lorita.LoritaError, match=r"exclude names unknown module '9'.* Layers that can be compressed"):
        lorita.compress(net, ratio=0.25, exclude=["9"])
