"""BatchNorm folding: same eval outputs, BatchNorm gone, only layers that feed a BatchNorm alone."""

import pytest
import torch
from torch import nn

from lorita import LoritaError
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
    folded = fold_batchnorm(model)
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model(x), atol=1e-10, rtol=1e-10)
    remaining = [m for m in folded.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert not remaining
    assert len(batchnorm_pairs(model)) == sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())


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
