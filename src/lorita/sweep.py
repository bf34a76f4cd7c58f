"""Accuracy-vs-size sweeps over the global threshold, and picking cuts on validation data.

A sweep cuts one merged model at many global thresholds and records, for each cut, its
size against the original architecture and its accuracy on validation (used to choose)
and test data (only reported). METHOD.md section 5: the cut is chosen on validation data.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import torch
from torch import nn

from lorita.cutspec import Threshold
from lorita.metric import ACCURACY, Metric
from lorita.profile import profile
from lorita.ranks import global_thresholds
from lorita.select import choose_ranks
from lorita.spectra import Spectra
from lorita.svd_cache import SVDCache

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class SweepPoint:
    """One cut: threshold, sizes (absolute and as fractions of the original) and its validation and test figures
    (accuracy in %, or loss: the sweep's ``Metric``)."""

    threshold: float
    params: int
    macs: int
    params_kept: float
    macs_kept: float
    val: float
    test: float | None  # None: not measured (sweeps that test only the chosen cuts)
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


def sweep(model: nn.Module | Spectra, example_input: torch.Tensor, val: Callable[[nn.Module], float],
          test: Callable[[nn.Module], float] | None, *, points: int = 40, refine_targets: Iterable[float] = (),
          refine_steps: int = 6, progress: Callable[[int], None] | None = None, metric: Metric = ACCURACY,
          how: Threshold | None = None) -> list[SweepPoint]:
    """Cut a merged ``model`` at ``points`` global thresholds, then bisect near each validation target.

    ``val`` / ``test``: model -> its figure on validation / test data, in ``metric`` (accuracy
    by default; a loss is lower-is-better). ``refine_targets``: validation figures whose
    boundary is refined with up to ``refine_steps`` extra cuts each, between the strongest
    passing and the weakest failing threshold found so far. ``test=None`` skips test data
    during the sweep (for models where evaluation is costly); fill in the chosen cuts
    afterwards with :func:`measure_test`. ``model`` may be the model's ``lorita.spectra.Spectra``,
    shared with later cuts (spectra, costs and each layer's SVD are then computed once in
    all); a plain model gets its own, with an ``SVDCache``. ``how``: the ``Threshold`` whose
    threshold is swept (its ``calibrate`` and ``multiple`` apply to every cut; default
    ``Threshold(0.0)``). Returns points sorted by threshold.

    Example:
        >>> net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> acc = lambda m: 100.0
        >>> pts = sweep(net, torch.zeros(1, 16), acc, acc, points=3)
        >>> len(pts) >= 1
        True
    """
    spectra = model if isinstance(model, Spectra) else Spectra(model, example_input, svd_cache=SVDCache())
    how = how if how is not None else Threshold(0.0)
    original = spectra.profile
    candidates = global_thresholds(spectra.values(how.whitened), spectra.costs("params")[0])
    done: dict[float, SweepPoint] = {}

    def cut(threshold: float) -> SweepPoint:
        if threshold not in done:
            at = dataclasses.replace(how, threshold=threshold)
            ranks = choose_ranks(spectra, at).ranks
            small = spectra.cut(ranks, whitened=at.whitened)
            size = profile(small, spectra.example_input)
            done[threshold] = SweepPoint(threshold, size.params, size.macs, size.params / original.params,
                                         size.macs / max(original.macs, 1), val(small),
                                         None if test is None else test(small), ranks)
            if progress is not None:
                progress(1)
        return done[threshold]

    # Threshold 0 keeps every layer dense: the uncompressed model is a point of its own curve.
    for t in [0.0, *pick_thresholds(candidates, points)]:
        cut(t)
    for target in refine_targets:
        for _ in range(refine_steps):
            ordered = sorted(done)
            passing = [t for t in ordered if metric.within(done[t].val, target)]
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


def smallest_within(items: Iterable[T], target: float, *, val: Callable[[T], float | None] = lambda p: p.val,
                    size: Callable[[T], float | None] = lambda p: p.params, metric: Metric = ACCURACY) -> T | None:
    """The item with the smallest ``size`` whose ``val`` (validation figure) reaches ``target`` in ``metric``.

    The one rule behind every "smallest model within the budget" choice: sweep points here,
    compress run folders in ``lorita.report``. Items whose ``val`` or ``size`` is None are
    skipped; ties go to the better ``val``.

    Example:
        >>> a = SweepPoint(0.1, 90, 90, 0.9, 0.9, 91.0, 90.5, {})
        >>> b = SweepPoint(0.5, 20, 20, 0.2, 0.2, 88.0, 87.0, {})
        >>> smallest_within([a, b], 90.0).params
        90
    """
    passing = [p for p in items if val(p) is not None and size(p) is not None and metric.within(val(p), target)]
    return min(passing, key=lambda p: (size(p), -metric.score(val(p)))) if passing else None


def choose_cuts(points: list[SweepPoint], targets: dict[str, float],
                metric: Metric = ACCURACY) -> dict[str, SweepPoint | None]:
    """For each named validation target (e.g. views ``"b"`` and ``"a"``), the smallest cut within it.

    Example:
        >>> a = SweepPoint(0.1, 90, 90, 0.9, 0.9, 91.0, 90.5, {})
        >>> b = SweepPoint(0.5, 20, 20, 0.2, 0.2, 88.0, 87.0, {})
        >>> {view: p.params for view, p in choose_cuts([a, b], {"b": 90.0, "a": 87.5}).items()}
        {'b': 90, 'a': 20}
    """
    return {name: smallest_within(points, target, metric=metric) for name, target in targets.items()}


def measure_test(model: nn.Module | Spectra, point: SweepPoint, test: Callable[[nn.Module], float]) -> SweepPoint:
    """Set ``point.test`` (if not measured yet) by cutting ``model`` (or its ``Spectra``) again at ``point``'s ranks.

    Example:
        >>> net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> pts = sweep(net, torch.zeros(1, 16), lambda m: 100.0, None, points=2)
        >>> measure_test(net, pts[0], lambda m: 99.0).test
        99.0
    """
    if point.test is None:
        spectra = model if isinstance(model, Spectra) else Spectra(model)
        point.test = test(spectra.cut(point.ranks))
    return point


def as_dict(point: SweepPoint, metric: Metric = ACCURACY) -> dict:
    """Plain-JSON form of a sweep point, its figures under ``metric``'s keys (``val_acc``, ``test_acc``, ...).

    Example:
        >>> sorted(as_dict(SweepPoint(0.1, 90, 90, 0.9, 0.9, 91.0, None, {})))[-2:]
        ['threshold', 'val_acc']
    """
    out = dataclasses.asdict(point)
    return {(metric.val if k == "val" else metric.test if k == "test" else k): v for k, v in out.items()}


def as_dicts(points: list[SweepPoint], metric: Metric = ACCURACY) -> list[dict]:
    """Plain-JSON form of sweep points."""
    return [as_dict(p, metric) for p in points]
