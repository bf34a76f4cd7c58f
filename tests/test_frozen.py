"""A layer frozen by the user (``requires_grad=False``) stays frozen through every lorita transformation that
replaces it: compose, merge, compress, quantize and load. Fine-tuning after a cut must not train a frozen backbone."""

import pytest
import torch
from torch import nn

import lorita


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    net[0].requires_grad_(False)  # a frozen layer
    net[2].weight.requires_grad_(False)  # a frozen weight, its bias trained
    return net


def _flags(model: nn.Module) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}


def _expected(model: nn.Module) -> dict[str, bool]:
    """Layer 0 frozen whole, layer 2 all but its bias, layer 4 trained, whatever the layers' parameters are called."""
    return {name: not (name.startswith("0.") or (name.startswith("2.") and not name.endswith("bias")))
            for name, _ in model.named_parameters()}


@pytest.mark.parametrize("transform", [
    lambda m: lorita.compose(m, depth=2, init="preserve"),
    lambda m: lorita.merge(lorita.compose(m, depth=3)),
    lambda m: lorita.compress(m, ranks={"0": 2, "2": 3, "4": 2}),
    lambda m: lorita.compress(lorita.compose(m, depth=2), ratio=0.3),
    lambda m: lorita.quantize(lorita.compress(m, ranks={"0": 2, "2": 3, "4": 2})),
], ids=["compose", "merge", "compress", "compress-composed", "quantize-cut"])
def test_frozen_layers_stay_frozen(transform):
    out = transform(_net())
    assert _flags(out) == _expected(out)
    assert not all(_flags(out).values()) and any(_flags(out).values())  # both kinds present: the check bites


def test_load_freezes_as_the_given_architecture_does(tmp_path):
    lorita.save(lorita.compress(_net(), ranks={"0": 2, "2": 3, "4": 2}), tmp_path / "m.lorita")
    again = lorita.load(tmp_path / "m.lorita", model=_net)
    assert _flags(again) == _expected(again)
    fresh = lorita.load(tmp_path / "m.lorita", model=lambda: nn.Sequential(
        nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)))
    assert all(_flags(fresh).values())  # the flags come from the architecture, not the file
