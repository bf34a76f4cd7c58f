"""BatchNorm folding: same eval outputs, BatchNorm gone, only layers that feed a BatchNorm alone."""

import pytest
import torch
from torch import nn

from lorita import LoritaError, LoritaWarning
from lorita.fold import batchnorm_pairs, fold_batchnorm
from lorita.models import create_model


def randomize_norms(model):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("name,kwargs,shape", [("fcn", {"width": 16}, (3, 1, 28, 28)),
                                               ("resnet20", {}, (2, 3, 32, 32)),
                                               ("vgg16", {"width_multiplier": 0.125}, (2, 3, 32, 32))])
def test_folded_model_has_the_same_outputs(name, kwargs, shape):
    torch.manual_seed(0)
    model = randomize_norms(create_model(name, in_channels=shape[1], image_size=shape[2], **kwargs).double())
    x = torch.randn(shape, dtype=torch.float64)
    folded = fold_batchnorm(model, x)
    torch.testing.assert_close(folded(x), model(x), atol=1e-10, rtol=1e-10)
    remaining = [m for m in folded.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert not remaining
    count = sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())
    assert len(batchnorm_pairs(model, x)) == count


def test_layer_with_two_consumers_is_not_folded():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x):
            y = self.fc(x)
            return self.bn(y) + y  # fc's output is also used unnormalised

    assert batchnorm_pairs(Branch()) == []


def test_untraceable_model_gives_a_clear_error():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(LoritaError, match=r"cannot trace Dynamic with torch.fx"):
        batchnorm_pairs(Dynamic())


class Twice(nn.Module):  # one Linear called twice, a BatchNorm after one of the calls
    def __init__(self):
        super().__init__()
        self.lin, self.bn, self.out = nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.cat([self.bn(self.lin(x)), self.lin(x)], 1))


class OnSequence(nn.Module):  # a Linear on (N, L, F) with L == F: BatchNorm1d normalises L, not the features
    def __init__(self):
        super().__init__()
        self.lin, self.bn = nn.Linear(4, 4), nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.lin(x))


def _tied():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4))
    net[2].weight = net[0].weight
    return net


def _parametrized():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    nn.utils.parametrizations.weight_norm(net[0])
    return net


def _hooked():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net[0].register_forward_hook(lambda module, inputs, output: output * 2)
    return net


@pytest.mark.parametrize("make,shape,why", [
    (Twice, (5, 4), "runs more than once"), (OnSequence, (5, 4, 4), "output is 3-D on example_input"),
    (_tied, (5, 4), "tied to another module"), (_parametrized, (5, 4), r"the layer: parametrized \(torch"),
    (_hooked, (5, 4), "the layer: it has forward hooks")])
def test_a_pair_folding_would_change_is_left_with_a_warning(make, shape, why):
    torch.manual_seed(0)
    model = randomize_norms(make())
    x = torch.randn(shape)
    with pytest.warns(LoritaWarning, match=rf"is not folded into .*{why}"):
        assert batchnorm_pairs(model, x) == []
    with pytest.warns(LoritaWarning):
        torch.testing.assert_close(fold_batchnorm(model, x)(x), model(x))  # the same outputs: nothing changed


def test_a_linear_before_batchnorm1d_folds_only_with_an_example_input():
    model = randomize_norms(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)))
    with pytest.warns(LoritaWarning, match="pass example_input= to fold it"):
        assert batchnorm_pairs(model) == []
    conv = randomize_norms(nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)))
    assert batchnorm_pairs(conv) == [("0", "1")]  # a Conv2d's channels are BatchNorm2d's: no input needed
