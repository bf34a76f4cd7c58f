"""BatchNorm re-estimation after a cut: exact statistics, nothing else touched, nothing reset on bad input."""

import pytest
import torch
from torch import nn

import lorita
from lorita.batchnorm import recalibrate_batchnorm
from lorita.errors import LoritaError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _batches(count=5, size=16):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 6, generator=g) * 2 + 1, torch.zeros(size, dtype=torch.long)) for _ in range(count)]


def test_statistics_are_the_cumulative_average_of_the_batch_statistics_without_dropout():
    net = _net()
    batches = _batches()
    recalibrate_batchnorm(net, batches)
    bn = net[2]
    inputs = [net[0](x).detach() for x, _ in batches]  # dropout is off while re-estimating: its input is Linear's
    mean = torch.stack([h.mean(0) for h in inputs]).mean(0)
    var = torch.stack([h.var(0, unbiased=True) for h in inputs]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == len(batches)


def test_modes_momentum_and_weights_are_restored():
    net = _net().train()
    net[4].eval()  # a mixed state must come back as it was
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    recalibrate_batchnorm(net, _batches())
    assert [m.training for m in net] == [True, True, True, True, False]
    assert net[2].momentum == 0.1
    for k, v in weights.items():
        assert torch.equal(net.state_dict()[k], v), k


def test_max_batches_bounds_what_is_read():
    net = _net()
    batches = _batches(count=6)
    recalibrate_batchnorm(net, iter(batches), max_batches=2)
    expected = torch.stack([net[0](x).detach().mean(0) for x, _ in batches[:2]]).mean(0)
    torch.testing.assert_close(net[2].running_mean, expected, rtol=1e-5, atol=1e-6)
    assert int(net[2].num_batches_tracked) == 2


def test_bad_input_is_refused_before_any_statistic_is_reset():
    net = _net()
    recalibrate_batchnorm(net, _batches())
    before = net[2].running_mean.clone()
    with pytest.raises(LoritaError, match="no batches were given"):
        recalibrate_batchnorm(net, [])
    with pytest.raises(LoritaError, match="tensors or \\(inputs, targets\\) pairs"):
        recalibrate_batchnorm(net, [("not", "a tensor")])
    with pytest.raises(LoritaError, match="holds one sample"):
        recalibrate_batchnorm(net, [torch.randn(1, 6)])
    with pytest.raises(LoritaError, match=r"one tensor of shape \(16, 6\), whose items are its rows .*; pass a "
                                          r"list of batches, \[x\] for one"):
        recalibrate_batchnorm(net, torch.randn(16, 6))  # its rows are single samples of shape (6,)
    with pytest.raises(RuntimeError):  # the model's own failure, after its statistics are put back
        recalibrate_batchnorm(net, [torch.randn(8, 5)])
    with pytest.raises(LoritaError, match="max_batches must be an integer"):
        recalibrate_batchnorm(net, _batches(), max_batches=0)
    assert torch.equal(net[2].running_mean, before)
    stacked = torch.randn(3, 16, 6)  # a tensor of batches: its items are batches
    recalibrate_batchnorm(net, stacked)
    assert torch.allclose(net[2].running_mean, net[0](stacked.reshape(48, 6)).mean(0), atol=1e-5)  # no dropout


def test_a_model_without_batchnorm_is_left_as_it_is():
    net = nn.Sequential(nn.Linear(6, 3))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate_batchnorm(net, []) is net  # nothing to do, nothing read
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


def test_recalibrating_a_cut_cnn_matches_the_statistics_of_the_cut_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 8 * 8, 5)).eval()
    x = torch.randn(32, 3, 8, 8)
    for m in net.modules():  # trained-looking statistics of the uncut model
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    small = lorita.compress(net, ratio=0.25).eval()
    stale = small(x)
    recalibrate_batchnorm(small, [x[:16], x[16:]])
    fresh = small(x)
    assert not torch.allclose(stale, fresh)  # the statistics changed
    bns = [m for m in small.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 2 and all(int(m.num_batches_tracked) == 2 for m in bns)
    assert any(type(m).__name__ == "LowRankConv2d" for m in small.modules())  # it was cut
    first = small[1]

    def seen_by_second(h):  # while re-estimating, the first BatchNorm normalises with the batch's own statistics
        z = nn.functional.batch_norm(small[0](h), None, None, first.weight, first.bias, training=True, eps=first.eps)
        return small[3](small[2](z)).detach().mean((0, 2, 3))

    expected = torch.stack([seen_by_second(h) for h in (x[:16], x[16:])]).mean(0)
    torch.testing.assert_close(bns[1].running_mean, expected, rtol=1e-5, atol=1e-6)
