"""LoRITa against the alternatives a user has, at one validation target (docs/METHOD.md section 5).

Each method is a *column*: a trained model, a way to cut it to a requested fraction of the
original parameters, and whether the cut is fine-tuned. Every column is measured at the
same fixed sizes (accuracy compared point by point), then its crossing of the target is
bisected in log-size; the smallest cut whose validation accuracy (after fine-tuning, if
any) reaches the target is the column's answer. Test accuracy is only reported.

SVD-family columns (plain + SVD, LoRITa) cut with one global threshold on
``sigma / sigma_max`` (the paper's "global" rule): the smallest threshold whose cut keeps at
most the requested size. Torch-Pruning removes channels until the size is met
(``lorita.prune``). Fine-tuning keeps the best epoch on validation, the cut itself included.
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

import lorita
from lorita.select import layer_costs
from lorita.svd_cache import SVDCache
from lorita.sweep import smallest_within

log = logging.getLogger(__name__)

FIXED_SIZES = (0.05, 0.1, 0.2, 0.3)  # params fractions every column is measured at
EXPAND = (0.5, 0.75, 1.0)  # tried when no fixed size reaches the target

Cutter = Callable[[float], "tuple[nn.Module, dict] | None"]


@dataclass
class Cut:
    """One model of one column: the size asked for and obtained, accuracies (%) and its cost in seconds.

    ``val_acc``/``test_acc`` are the deployed model's (after fine-tuning when the column
    fine-tunes); ``*_cut`` before it. ``finetune_epoch_kept`` is 0 when no fine-tuning epoch
    beat the cut itself on validation. ``seconds``: cutting plus fine-tuning.
    """

    size: float
    params_kept: float
    macs_kept: float
    val_acc: float
    test_acc: float
    val_acc_cut: float
    test_acc_cut: float
    finetune_epoch_kept: int
    seconds: float
    detail: dict


@dataclass
class Column:
    """A method: its label, whether it is LoRITa, the cutter, the fine-tuning recipe (None: no fine-tuning),
    and the seconds spent training its model."""

    label: str
    lorita: bool
    cutter: Cutter
    finetune: object | None
    train_seconds: float
    epochs: int


def svd_cutter(merged: nn.Module, example: torch.Tensor, cache: SVDCache | None = None, *,
               calibration: dict | None = None) -> Cutter:
    """Cut ``merged`` with the smallest global threshold that keeps at most the requested params.

    ``calibration`` (layer name -> input Gram matrix, ``lorita.whiten.collect_grams``): whitened
    cuts, the threshold applied to each layer's whitened spectrum.

    Example:
        >>> net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> small, detail = svd_cutter(net, torch.zeros(1, 32))(0.5)
        >>> sum(p.numel() for p in small.parameters()) <= 0.5 * sum(p.numel() for p in net.parameters())
        True
    """
    from lorita.ranks import global_ranks, global_thresholds, total_cost

    spectra = lorita.spectrum(merged, example_input=example)
    if calibration is not None:
        from lorita.lowrank import weight_matrix
        from lorita.whiten import whitened_spectrum

        modules = dict(merged.named_modules())
        spectra = {name: whitened_spectrum(weight_matrix(modules[name]).detach(), calibration[name]).cpu()
                   for name in spectra}
    costs, fixed = layer_costs(merged, example, "params")
    original = fixed + sum(c.dense("params") for c in costs.values())
    candidates = global_thresholds(spectra, costs)
    cache = cache if cache is not None else SVDCache()

    def size_of(threshold: float) -> float:
        return total_cost(global_ranks(spectra, threshold), costs, "params", fixed) / original

    def cut(size: float):
        lo, hi = 0, len(candidates)  # find the first candidate whose cut fits
        while lo < hi:
            mid = (lo + hi) // 2
            if size_of(candidates[mid]) <= size:
                hi = mid
            else:
                lo = mid + 1
        if lo == len(candidates):
            return None  # even the strongest cut keeps more than ``size``
        ranks = global_ranks(spectra, candidates[lo])
        small = lorita.compress(merged, ranks=ranks, svd_cache=cache, calibration=calibration).eval()
        return small, {"threshold": candidates[lo], "ranks": {k: int(v) for k, v in ranks.items()}}

    return cut


def prune_cutter(model: nn.Module, example: torch.Tensor) -> Cutter:
    """Torch-Pruning (L1, global) to the requested params; None where it cannot get there.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> small, detail = prune_cutter(net, torch.zeros(1, 64))(0.5)  # doctest: +SKIP
        >>> sum(p.numel() for p in small.parameters()) <= 0.5 * sum(p.numel() for p in net.parameters())  # doctest: +SKIP
        True
    """
    from lorita.errors import LoritaError
    from lorita.prune import prune_to

    def cut(size: float):
        try:
            return prune_to(model, size, example, metric="params")
        except LoritaError as err:
            log.info("torch-pruning cannot reach %.3f of the params: %s", size, err)
            return None
        except Exception as err:  # Torch-Pruning could not trace or prune this model: no such column entry
            log.warning("torch-pruning failed on this model (%s: %s); its column stays empty", type(err).__name__, err)
            return None

    return cut


def scorer(metric: str, split) -> Callable[[nn.Module], float]:
    """``model -> score`` on ``split``, higher is better: accuracy (%), or minus the loss (nats per target).

    Example:
        >>> from lorita.data import load_dataset
        >>> data = load_dataset("digits")
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> scorer("val_loss", data.val)(net) < 0
        True
    """
    from lorita.train import evaluate

    if metric == "val_acc":
        return lambda model: evaluate(model, split)[0]
    return lambda model: -evaluate(model, split)[1]


def measure(column: Column, size: float, data, original, example: torch.Tensor, progress: bool,
            metric: str = "val_acc") -> Cut | None:
    """Cut ``column`` to ``size``, fine-tune if it does, and measure it (None: the size is out of reach).

    Scores (``val_acc``/``test_acc`` of the ``Cut``) are accuracies, or minus the loss with
    ``metric="val_loss"``: higher is better either way.
    """
    from lorita.train import train

    val_score, test_score = scorer(metric, data.val), scorer(metric, data.test)
    tic = time.time()
    made = column.cutter(size)
    if made is None:
        return None
    small, detail = made
    counts = lorita.profile(small, example)
    val_cut, test_cut = val_score(small), test_score(small)
    val, test, kept = val_cut, test_cut, 0
    if column.finetune is not None:
        before = {k: v.detach().clone() for k, v in small.state_dict().items()}
        result = train(small, data, column.finetune, progress=False)
        if result.best_score > val_cut:  # ties keep the cut model itself
            small.load_state_dict(result.best_state)
            kept, val = result.best_epoch, result.best_score
            test = test_score(small.cpu().eval())
        else:
            small.load_state_dict(before)
        small = small.cpu().eval()
    return Cut(size, counts.params / original.params, counts.macs / max(original.macs, 1), val, test, val_cut,
               test_cut, kept, time.time() - tic, {**detail, "model": small})


def search(column: Column, target: float, data, original, example: torch.Tensor, *, sizes=FIXED_SIZES,
           refine: int = 3, progress: bool = False, metric: str = "val_acc") -> list[Cut]:
    """Measure ``column`` at ``sizes``, then bisect (in log-size, ``refine`` more cuts) where it crosses ``target``.

    Returns every cut measured, smallest size first.
    """
    done: dict[float, Cut | None] = {}

    def at(size: float) -> Cut | None:
        size = round(size, 6)
        if size not in done:
            done[size] = measure(column, size, data, original, example, progress, metric)
            cut = done[size]
            log.info("  %s at %.1f%% of the params: %s", column.label, 100 * size,
                     "out of reach" if cut is None else f"val {cut.val_acc:.4g}, kept {100 * cut.params_kept:.1f}%")
        return done[size]

    for size in sizes:
        at(size)
    for size in EXPAND:  # no fixed size is good enough: look further up
        if any(c is not None and c.val_acc >= target for c in done.values()):
            break
        at(size)
    for _ in range(refine):
        measured = sorted((s, c) for s, c in done.items() if c is not None)
        passing = [s for s, c in measured if c.val_acc >= target]
        if not passing:
            break
        low = min(passing)
        failing = [s for s, c in measured if s < low and c.val_acc < target]
        floor = max(failing) if failing else None
        if floor is None:
            unreachable = [s for s, c in done.items() if c is None and s < low]
            floor = max(unreachable) if unreachable else low / 2
        middle = math.sqrt(floor * low)
        if middle / floor < 1.02:  # within 2%: the crossing is found
            break
        at(middle)
    return [c for _, c in sorted(done.items()) if c is not None]


def chosen(cuts: list[Cut], target: float) -> Cut | None:
    """The smallest cut (params kept) whose validation accuracy reaches ``target``.

    Example:
        >>> a = Cut(0.1, 0.1, 0.1, 90.0, 89.5, 89.0, 88.0, 1, 1.0, {})
        >>> b = Cut(0.05, 0.05, 0.05, 88.0, 87.5, 87.0, 86.0, 1, 1.0, {})
        >>> chosen([a, b], 89.0).size
        0.1
    """
    return smallest_within(cuts, target, size=lambda c: c.params_kept)


def as_dict(cut: Cut | None) -> dict | None:
    """Plain-JSON form of a cut (without the model it holds)."""
    if cut is None:
        return None
    out = dataclasses.asdict(dataclasses.replace(cut, detail={}))
    out["detail"] = {k: v for k, v in cut.detail.items() if k != "model"}
    return out
