"""lorita.sweep: the accuracy-vs-size sweep bisects each target's boundary; choosing cuts on validation."""

import pytest
import torch
from torch import nn

import lorita
from lorita.compress import layer_shape
from lorita.ranks import LayerCost, global_thresholds
from lorita.sweep import SweepPoint, choose_cuts, smallest_within, sweep
from lorita.targets import scan_layers


def kept_fraction(model: nn.Module) -> float:
    """A stand-in 'accuracy': the percentage of the original weights kept (falls as the cut deepens)."""
    return 100.0 * sum(p.numel() for p in model.parameters()) / ORIGINAL


torch.manual_seed(0)
NET = nn.Sequential(nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 8))
ORIGINAL = sum(p.numel() for p in NET.parameters())


def test_refinement_brackets_the_target_between_neighbouring_thresholds():
    target = 55.0
    points = sweep(NET, torch.zeros(1, 48), kept_fraction, None, points=3, refine_targets=[target], refine_steps=20)
    passing = [p for p in points if p.val >= target]
    failing = [p for p in points if p.val < target]
    assert passing and failing
    strongest_pass = max(p.threshold for p in passing)
    weakest_fail = min(p.threshold for p in failing if p.threshold > strongest_pass)
    layers = scan_layers(NET).layers
    costs = {name: LayerCost(*layer_shape(layers[name].module)) for name in layers}
    between = [t for t in global_thresholds(lorita.spectrum(NET), costs) if strongest_pass < t < weakest_fail]
    assert between == []  # no distinct cut left between the last pass and the first failure


def test_without_refinement_the_bracket_is_coarser():
    target = 55.0
    coarse = sweep(NET, torch.zeros(1, 48), kept_fraction, None, points=3, refine_targets=[target], refine_steps=0)
    fine = sweep(NET, torch.zeros(1, 48), kept_fraction, None, points=3, refine_targets=[target], refine_steps=20)
    assert len(fine) > len(coarse)
    assert smallest_within(fine, target).params <= smallest_within(coarse, target).params


def test_threshold_zero_is_the_uncut_model():
    points = sweep(NET, torch.zeros(1, 48), kept_fraction, kept_fraction, points=4)
    assert points[0].threshold == 0.0 and points[0].params_kept == 1.0 and points[0].val == pytest.approx(100.0)


def test_choose_cuts_per_view():
    a = SweepPoint(0.1, 90, 90, 0.9, 0.9, 91.0, 90.5, {})
    b = SweepPoint(0.5, 20, 20, 0.2, 0.2, 88.0, 87.0, {})
    chosen = choose_cuts([a, b], {"b": 90.0, "a": 87.5, "none": 95.0})
    assert chosen["b"] is a and chosen["a"] is b and chosen["none"] is None
