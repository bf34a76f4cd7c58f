"""compose / merge exactness on every zoo model (small widths, float64, eval mode).

float64: the merged forward differs from the composed one only by summation order,
~1e-13 relative through these depths; 1e-8 is tight against any real mistake (O(1)).
"""

import pytest
import torch

import lorita
from lorita.composed import COMPOSED_TYPES
from lorita.models import create_model, list_models

SMALL = {"fcn": {"width": 32}, "vgg16": {"width_multiplier": 0.125}, "vgg_small": {}, "vit": {"dim": 32, "depth": 2, "heads": 2},
         "resnet20": {}, "resnet56": {}}
TOL = dict(atol=1e-8, rtol=1e-8)


def test_table_covers_the_zoo():
    assert sorted([*SMALL, "gpt"]) == sorted(list_models())


def test_gpt_compose_merge_exact():
    torch.manual_seed(0)
    model = create_model("gpt", vocab_size=20, context=8, dim=16, depth=2, heads=2).double().eval()
    x = torch.randint(0, 20, (2, 8))
    composed = lorita.compose(model, depth=3, exclude=["head"])
    assert sum(isinstance(m, COMPOSED_TYPES) for m in composed.modules()) == 12  # q, k, v, proj, fc1, fc2 x 2
    merged = lorita.merge(composed)
    torch.testing.assert_close(merged(x), composed(x), **TOL)
    fresh = create_model("gpt", vocab_size=20, context=8, dim=16, depth=2, heads=2)
    fresh.load_state_dict(merged.state_dict(), strict=True)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)])
def test_zoo_compose_merge_exact(name, in_channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=in_channels, image_size=size, **SMALL[name])
    model = model.double().eval()
    x = torch.randn(2, in_channels, size, size, dtype=torch.float64)
    composed = lorita.compose(model, depth=3)
    assert sum(isinstance(m, COMPOSED_TYPES) for m in composed.modules()) >= 3
    merged = lorita.merge(composed)
    torch.testing.assert_close(merged(x), composed(x), **TOL)
    fresh = create_model(name, num_classes=10, in_channels=in_channels, image_size=size, **SMALL[name])
    fresh.load_state_dict(merged.state_dict(), strict=True)
    preserved = lorita.compose(model, depth=2, init="preserve")
    torch.testing.assert_close(preserved(x), model(x), **TOL)
