"""Accuracy-vs-size sweeps over the global threshold, and picking cuts on validation data.

A sweep cuts one merged model at many global thresholds and records, for each cut, its
size against the original architecture and its accuracy on validation (used to choose)
and test data (only reported). METHOD.md section 5: the cut is chosen on validation data.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, TypeVar

import torch
from torch import nn

from lorita.compress import compress, layer_shape, spectrum
from lorita.profile import profile
from lorita.ranks import LayerCost, global_ranks, global_thresholds
from lorita.svd_cache import SVDCache
from lorita.targets import scan_layers

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class SweepPoint:
    """One cut: threshold, sizes (absolute and as fractions of the original) and accuracies (%)."""

    threshold: float
    params: int
    macs: int
    params_kept: float
    macs_kept: float
    val_acc: float
    test_acc: float | None  # None: not measured (sweeps that test only the chosen cuts)
    ranks: dict[str, int]


def pick_thresholds(candidates: list[float], count: int) -> list[float]:
    """``count`` thresholds spread evenly over the index of the sorted candidate list (ends included).

    Example:
        >>> pick_thresholds([0.1, 0.2, 0.3, 0.4, 0.5], 3)
        [0.1, 0.3, 0.5]
    """
    if count >= len(candidates):
        return list(candidates)
    step = (len(candidates) - 1) / (count - 1)
    return sorted({candidates[round(i * step)] for i in range(count)})


def sweep(model: nn.Module, example_input: torch.Tensor, val_acc: Callable[[nn.Module], float],
          test_acc: Callable[[nn.Module], float] | None, *, points: int = 40,
          refine_targets: Iterable[float] = (), refine_steps: int = 6,
          progress: Callable[[int], None] | None = None, svd_cache: SVDCache | None = None) -> list[SweepPoint]:
    """Cut a merged ``model`` at ``points`` global thresholds, then bisect near each validation target.

    ``refine_targets``: validation accuracies (%) whose boundary is refined with up to
    ``refine_steps`` extra cuts each, between the strongest passing and the weakest
    failing threshold found so far. ``test_acc=None`` skips test data during the sweep (for
    models where evaluation is costly); fill in the chosen cuts afterwards with
    :func:`measure_test`. ``svd_cache``: share one ``SVDCache`` with later cuts of the same
    model (each layer's SVD then runs once in all). Returns points sorted by threshold.

    Example:
        >>> net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> acc = lambda m: 100.0
        >>> pts = sweep(net, torch.zeros(1, 16), acc, acc, points=3)
        >>> len(pts) >= 1
        True
    """
    original = profile(model, example_input)
    # the example input leaves out layers whose parent reads their weight: a cut there saves nothing
    spectra = spectrum(model, example_input=example_input)
    layers = scan_layers(model, example_input=example_input).layers
    costs = {name: LayerCost(*layer_shape(layers[name].module)) for name in spectra}
    candidates = global_thresholds(spectra, costs)
    cache = svd_cache if svd_cache is not None else SVDCache()  # each layer's SVD once, not once per cut
    done: dict[float, SweepPoint] = {}

    def cut(threshold: float) -> SweepPoint:
        if threshold not in done:
            ranks = global_ranks(spectra, threshold)
            small = compress(model, ranks=ranks, svd_cache=cache).eval()
            size = profile(small, example_input)
            done[threshold] = SweepPoint(threshold, size.params, size.macs, size.params / original.params,
                                         size.macs / max(original.macs, 1), val_acc(small),
                                         None if test_acc is None else test_acc(small), ranks)
            if progress is not None:
                progress(1)
        return done[threshold]

    # Threshold 0 keeps every layer dense: the uncompressed model is a point of its own curve.
    for t in [0.0, *pick_thresholds(candidates, points)]:
        cut(t)
    for target in refine_targets:
        for _ in range(refine_steps):
            ordered = sorted(done)
            passing = [t for t in ordered if done[t].val_acc >= target]
            if not passing:
                break
            low = max(passing)  # strongest cut still within the target
            failing = [t for t in ordered if t > low]
            if not failing:
                break
            between = [t for t in candidates if low < t < min(failing)]
            if not between:
                break
            cut(between[len(between) // 2])
    return [done[t] for t in sorted(done)]


def smallest_within(items: Iterable[T], target: float, *, val: Callable[[T], float | None] = lambda p: p.val_acc,
                    size: Callable[[T], float | None] = lambda p: p.params) -> T | None:
    """The item with the smallest ``size`` whose ``val`` (validation accuracy) is at least ``target``.

    The one rule behind every "smallest model within the budget" choice: sweep points here,
    compress run folders in ``lorita.report``. Items whose ``val`` or ``size`` is None are
    skipped; ties go to the higher ``val``.

    Example:
        >>> a = SweepPoint(0.1, 90, 90, 0.9, 0.9, 91.0, 90.5, {})
        >>> b = SweepPoint(0.5, 20, 20, 0.2, 0.2, 88.0, 87.0, {})
        >>> smallest_within([a, b], 90.0).params
        90
    """
    passing = [p for p in items if val(p) is not None and size(p) is not None and val(p) >= target]
    return min(passing, key=lambda p: (size(p), -val(p))) if passing else None


def choose_cuts(points: list[SweepPoint], targets: dict[str, float]) -> dict[str, SweepPoint | None]:
    """For each named validation target (e.g. views ``"b"`` and ``"a"``), the smallest cut within it.

    Example:
        >>> a = SweepPoint(0.1, 90, 90, 0.9, 0.9, 91.0, 90.5, {})
        >>> b = SweepPoint(0.5, 20, 20, 0.2, 0.2, 88.0, 87.0, {})
        >>> {view: p.params for view, p in choose_cuts([a, b], {"b": 90.0, "a": 87.5}).items()}
        {'b': 90, 'a': 20}
    """
    return {name: smallest_within(points, target) for name, target in targets.items()}


def measure_test(model: nn.Module, point: SweepPoint, test_acc: Callable[[nn.Module], float], *,
                 svd_cache: SVDCache | None = None) -> SweepPoint:
    """Set ``point.test_acc`` (if not measured yet) by cutting ``model`` again at ``point``'s ranks.

    Example:
        >>> net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> pts = sweep(net, torch.zeros(1, 16), lambda m: 100.0, None, points=2)
        >>> measure_test(net, pts[0], lambda m: 99.0).test_acc
        99.0
    """
    if point.test_acc is None:
        point.test_acc = test_acc(compress(model, ranks=point.ranks, svd_cache=svd_cache).eval())
    return point


def as_dicts(points: list[SweepPoint]) -> list[dict]:
    """Plain-JSON form of sweep points."""
    return [asdict(p) for p in points]
