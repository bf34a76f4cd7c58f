"""LoRITa against the alternatives a user has, at one validation target (docs/METHOD.md section 5).

Each method is a *column*: a trained model, a way to cut it to a requested fraction of the
original parameters, and whether the cut is fine-tuned. Every column is measured at the
same fixed sizes (accuracy compared point by point), then its crossing of the target is
bisected in log-size; the smallest cut whose validation accuracy (after fine-tuning, if
any) reaches the target is the column's answer. Test accuracy is only reported.

SVD-family columns (plain + SVD, LoRITa) cut as their ``Budget`` says: by default one global
threshold on ``sigma / sigma_max`` (the paper's "global" rule), the smallest threshold whose cut
keeps at most the requested size; with ``rule="loss"`` the least-loss allocation within that size.
Torch-Pruning removes channels until the size is met (``lorita.runs.alternatives.iterative_prune_cutter``).
Fine-tuning keeps the best epoch on validation, the cut itself included.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from lorita.cutspec import Budget
from lorita.metric import ACCURACY, Metric
from lorita.profile import Profile, profile
from lorita.rebalance import rebalance_pairs
from lorita.select import BudgetOutOfReach, choose_ranks
from lorita.spectra import Spectra
from lorita.sweep import smallest_within
from lorita.train import TrainConfig, finetune

log = logging.getLogger(__name__)

FIXED_SIZES = (0.05, 0.1, 0.2, 0.3)  # params fractions every column is measured at
EXPAND = (0.5, 0.75, 1.0)  # tried when no fixed size is good enough

Cutter = Callable[[float], "tuple[nn.Module, dict] | None"]


@dataclass
class Cut:
    """One model of one column: the size asked for and obtained, its validation and test figures (in the
    experiment's ``Metric``) and its cost in seconds.

    ``val``/``test`` are the deployed model's (after fine-tuning when the column fine-tunes);
    ``*_cut`` before it. ``finetune_epoch_kept`` is 0 when no fine-tuning epoch beat the cut
    itself on validation. ``seconds``: cutting plus fine-tuning.
    """

    size: float
    params_kept: float
    macs_kept: float
    val: float
    test: float
    val_cut: float
    test_cut: float
    finetune_epoch_kept: int
    seconds: float
    detail: dict


@dataclass
class Column:
    """A method: its label, whether it is LoRITa, the cutter (size -> model), the fine-tuning recipe (None: no
    fine-tuning), and the seconds and epochs spent training its model; ``exposure``: its training's penalty
    exposure (``lorita.train.exposure``), ``between_epochs``: fine-tuning epochs the cutter itself spends (between
    pruning rounds), ``refine``: the bisection steps of its crossing of the target (None: the experiment's),
    ``rebalance``: the quantile its cut's thin pairs are rebalanced to before fine-tuning
    (``lorita.rebalance.rebalance_pairs``; None: fine-tuned as cut)."""

    label: str
    lorita: bool
    cutter: Cutter
    finetune: TrainConfig | None
    train_seconds: float
    epochs: int
    exposure: float | None = None
    between_epochs: int = 0
    refine: int | None = None
    rebalance: float | None = None


def svd_cutter(spectra: Spectra, how: Budget | None = None) -> Cutter:
    """Cut the model of ``spectra`` to a requested fraction of its params as ``how`` says, the fraction
    replaced (default ``Budget(params=1.0, rule="threshold")``: the smallest global threshold that keeps at most
    the requested params; ``calibrate=N``: whitened, on the spectra's calibration batches). None where no
    cut of that kind is that small.

    Example:
        >>> net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> small, detail = svd_cutter(Spectra(net, torch.zeros(1, 32)))(0.5)
        >>> sum(p.numel() for p in small.parameters()) <= 0.5 * sum(p.numel() for p in net.parameters())
        True
    """
    how = how if how is not None else Budget(params=1.0, rule="threshold")

    def cut(size: float):
        at = dataclasses.replace(how, **{how.label: size})
        try:
            choice = choose_ranks(spectra, at)
        except BudgetOutOfReach:
            return None  # even the strongest cut keeps more than ``size``
        small = spectra.cut(choice.ranks, whitened=at.whitened)
        return small, {"threshold": choice.report, "ranks": {k: int(v) for k, v in choice.ranks.items()}}

    return cut


def measure(column: Column, size: float, data, original: Profile, example: torch.Tensor, progress: bool,
            metric: Metric = ACCURACY) -> Cut | None:
    """Cut ``column`` to ``size``, fine-tune if it does, and measure it in ``metric`` (None: the size is out of
    reach)."""
    tic = time.time()
    made = column.cutter(size)
    if made is None:
        return None
    small, detail = made
    counts = profile(small, example)
    val_cut, test_cut = metric.measure(small, data.val), metric.measure(small, data.test)
    val, test, kept = val_cut, test_cut, 0
    if column.finetune is not None:
        if column.rebalance is not None:  # the product unchanged: the cut's figures above stand
            rebalance_pairs(small, column.rebalance)
        same = column.finetune.select_by == metric.val  # epochs scored as the metric scores: compared directly
        kept, score, _ = finetune(small, data, column.finetune, start_score=metric.score(val_cut) if same else None)
        small = small.cpu().eval()
        if kept:  # else the cut model itself, its scores as measured
            val = metric.unscore(score) if same else metric.measure(small, data.val)
            test = metric.measure(small, data.test)
    return Cut(size, counts.params / original.params, counts.macs / max(original.macs, 1), val, test, val_cut,
               test_cut, kept, time.time() - tic, {**detail, "model": small})


def search(column: Column, target: float, data, original: Profile, example: torch.Tensor, *, sizes=FIXED_SIZES,
           refine: int = 3, progress: bool = False, metric: Metric = ACCURACY,
           recorded: Callable | None = None) -> list[Cut]:
    """Measure ``column`` at ``sizes``, then bisect (in log-size, ``refine`` more cuts) where it crosses ``target``.

    ``recorded(label, size, compute)``: each cut through a record of cuts measured before
    (``lorita.runs.measured_cuts``), else measured now. Returns every cut measured, smallest size first.
    """
    done: dict[float, Cut | None] = {}

    def at(size: float) -> Cut | None:
        size = round(size, 6)
        if size not in done:
            def compute() -> Cut | None:
                return measure(column, size, data, original, example, progress, metric)
            done[size] = compute() if recorded is None else recorded(column.label, size, compute)
            cut = done[size]
            log.info("  %s at %.1f%% of the params: %s", column.label, 100 * size,
                     "out of reach" if cut is None else f"val {cut.val:.4g}, kept {100 * cut.params_kept:.1f}%")
        return done[size]

    for size in sizes:
        at(size)
    for size in EXPAND:  # no fixed size is good enough: look further up
        if any(c is not None and metric.within(c.val, target) for c in done.values()):
            break
        at(size)
    for _ in range(refine):
        measured = sorted((s, c) for s, c in done.items() if c is not None)
        passing = [s for s, c in measured if metric.within(c.val, target)]
        if not passing:
            break
        low = min(passing)
        failing = [s for s, c in measured if s < low and not metric.within(c.val, target)]
        floor = max(failing) if failing else None
        if floor is None:
            unreachable = [s for s, c in done.items() if c is None and s < low]
            floor = max(unreachable) if unreachable else low / 2
        middle = math.sqrt(floor * low)
        if middle / floor < 1.02:  # within 2%: the crossing is found
            break
        at(middle)
    return [c for _, c in sorted(done.items()) if c is not None]


def chosen(cuts: list[Cut], target: float, metric: Metric = ACCURACY) -> Cut | None:
    """The smallest cut (params kept) whose validation figure reaches ``target``.

    Example:
        >>> a = Cut(0.1, 0.1, 0.1, 90.0, 89.5, 89.0, 88.0, 1, 1.0, {})
        >>> b = Cut(0.05, 0.05, 0.05, 88.0, 87.5, 87.0, 86.0, 1, 1.0, {})
        >>> chosen([a, b], 89.0).size
        0.1
    """
    return smallest_within(cuts, target, size=lambda c: c.params_kept, metric=metric)


def as_dict(cut: Cut | None, metric: Metric = ACCURACY) -> dict | None:
    """Plain-JSON form of a cut (without the model it holds), its figures under ``metric``'s keys."""
    if cut is None:
        return None
    out = dataclasses.asdict(dataclasses.replace(cut, detail={}))
    keys = {"val": metric.val, "test": metric.test, "val_cut": f"{metric.val}_cut", "test_cut": f"{metric.test}_cut"}
    out = {keys.get(k, k): v for k, v in out.items()}
    out["detail"] = {k: v for k, v in cut.detail.items() if k != "model"}
    return out
