"""``search_accuracy``: the strongest global cut whose validation score stays within a drop.

The model side of ``lorita.ranks.search_threshold`` (a pure bisection driver): the thresholds
that build distinct compressed models, a compressed (and optionally fine-tuned) candidate
per tried threshold, the caller's evaluation of each.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from lorita.checks import check_int, check_number
from lorita.errors import LoritaError, LoritaWarning
from lorita.ranks import SearchResult, global_ranks, global_thresholds, round_ranks, search_threshold
from lorita.spectra import Spectra
from lorita.svd_cache import SVDCache
from lorita.targets import check_model

log = logging.getLogger(__name__)

__all__ = ["AccuracySearch", "search_accuracy", "search_spectra"]


@dataclass
class AccuracySearch:
    """Outcome of ``search_accuracy``.

    ``ranks``: the chosen cut (every layer at full rank when no cut stayed within the
    drop). ``model``: the model that was evaluated at that cut (compressed, and
    fine-tuned when ``finetune`` was given), or the uncompressed (merged) model when no
    cut was found. ``search``: thresholds tried, accuracies, baseline and floor.
    """

    ranks: dict[str, int]
    model: nn.Module
    search: SearchResult

    @property
    def evaluations(self) -> int:
        """Calls made to ``evaluate``, the baseline included."""
        return self.search.evaluations + 1


def search_accuracy(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    *,
    max_drop: float = 1.0,
    finetune: Callable[[nn.Module], nn.Module] | None = None,
    max_evals: int = 12,
    example_input: Any = None,
) -> AccuracySearch:
    """The strongest global cut whose ``evaluate`` stays within ``max_drop`` points of the baseline.

    The baseline is ``evaluate`` on the uncompressed (merged) model, one call. Then a
    bisection (``lorita.ranks.search_threshold``) over the global thresholds that
    build distinct compressed models compresses at each tried threshold, runs ``finetune`` on it if given, and
    evaluates it: at most ``max_evals`` more calls, never the same threshold twice.
    ``evaluate`` should put the model in eval mode and use held-out validation data,
    not the test set, and return a number (percent); a candidate that evaluates to NaN
    counts as outside the drop. The returned model is one that was evaluated within the
    drop. ``example_input`` (optional): leave out the layers whose parent reads their
    weight instead of calling them (see ``lorita.compress``).

    Example:
        >>> net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> x = torch.randn(64, 16)
        >>> agree = lambda m: 100.0 * (m(x).argmax(1) == net(x).argmax(1)).float().mean().item()
        >>> found = search_accuracy(net, agree, max_drop=5.0, max_evals=6)
        >>> found.evaluations <= 7 and agree(found.model) >= 95.0
        True
    """
    check_model(model, "search_accuracy", replaces=True)
    _check(evaluate, finetune, max_evals, max_drop)
    return search_spectra(Spectra(model, example_input), evaluate, max_drop=max_drop, finetune=finetune,
                          max_evals=max_evals)


def search_spectra(spectra: Spectra, evaluate: Callable[[nn.Module], float], *, max_drop: float = 1.0,
                   finetune: Callable[[nn.Module], nn.Module] | None = None, max_evals: int = 12,
                   whitened: bool = False, baseline: float | None = None, multiple: int = 1) -> AccuracySearch:
    """``search_accuracy`` on a model's ``Spectra`` (whitened cuts with ``whitened=True``, calibrated first).
    ``baseline``: the uncompressed model's score when the caller already measured it (not evaluated again);
    ``multiple``: every candidate's ranks rounded up to it (``lorita.ranks.round_ranks``)."""
    _check(evaluate, finetune, max_evals, max_drop)
    spectra.require_layers()
    values = spectra.values(whitened)

    def ranks_at(threshold: float) -> dict[str, int]:
        ranks = global_ranks(values, threshold)
        return ranks if multiple == 1 else round_ranks(ranks, spectra.full_ranks, multiple)

    # only thresholds that build distinct compressed models: no evaluation is spent twice on one model
    thresholds = global_thresholds(values, spectra.costs("params")[0])
    if baseline is None:
        baseline = _accuracy(evaluate, spectra.model, "the uncompressed model", baseline=True)
    if not thresholds:  # no layer is worth cutting, even at rank 1: nothing to search
        log.info("no layer of this model is worth cutting; keeping it dense")
        empty = SearchResult(0.0, baseline, False, baseline, baseline - max_drop, ())
        return AccuracySearch(ranks_at(0.0), spectra.model, empty)
    if 0 <= baseline <= 1 <= max_drop:  # every score of 0 or more is within the drop: a fraction, not a percent?
        warnings.warn(f"evaluate gave {baseline:.4g} for the uncompressed model and max_drop is {max_drop:g} points, "
                      "so every cut that scores 0 or more passes; if evaluate returns a fraction, return percent "
                      "(100 x correct / total)", LoritaWarning, stacklevel=3)
    best: dict[str, Any] = {}  # the model at the largest threshold found within the drop so far
    cache = spectra.cache if spectra.cache is not None else SVDCache()  # each layer's SVD once, not once per try

    def evaluate_at(threshold: float) -> float:
        candidate = spectra.cut(ranks_at(threshold), whitened=whitened, svd_cache=cache)
        if finetune is not None:
            candidate = finetune(candidate)
            if not isinstance(candidate, nn.Module):
                raise LoritaError(f"finetune must return the fine-tuned model (end it with `return model`), "
                                  f"got {type(candidate).__name__}")
        accuracy = _accuracy(evaluate, candidate, f"the model cut at threshold {threshold:.6g}")
        log.info("threshold %.6g: accuracy %.4g (baseline %.4g)", threshold, accuracy, baseline)
        if accuracy >= baseline - max_drop and threshold > best.get("threshold", -1.0):
            best.update(threshold=threshold, model=candidate)
        return accuracy

    result = search_threshold(evaluate_at, baseline=baseline, max_drop=max_drop, thresholds=thresholds,
                              max_evals=max_evals)
    if not result.found:
        log.info("no cut stayed within %.4g points of %.4g; keeping the model dense", max_drop, baseline)
        return AccuracySearch(ranks_at(0.0), spectra.model, result)
    return AccuracySearch(ranks_at(result.threshold), best["model"], result)


def _check(evaluate, finetune, max_evals, max_drop) -> None:
    if not callable(evaluate):
        raise LoritaError(f"evaluate must be a callable model -> accuracy (percent), got {type(evaluate).__name__}")
    if finetune is not None and not callable(finetune):
        raise LoritaError(f"finetune must be a callable model -> model or None, got {type(finetune).__name__}")
    check_int("max_evals", max_evals)
    check_number("max_drop", max_drop, minimum=0, meaning="points of accuracy, or nats of loss")


def _accuracy(evaluate: Callable[[nn.Module], float], model: nn.Module, what: str, *, baseline: bool = False) -> float:
    """``float(evaluate(model))``, a real number; NaN is an error for the baseline, a failed cut otherwise."""
    value = evaluate(model)
    # NaN passes here (a failed cut), and so do numpy scalars: not lorita.checks.is_number
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    is_scalar_tensor = isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool
    if not (is_real or is_scalar_tensor):
        raise LoritaError(f"evaluate must return an accuracy (a number, in percent), got {type(value).__name__} "
                          f"{value!r:.40} for {what}")
    value = float(value)
    if baseline and math.isnan(value):
        raise LoritaError(f"evaluate returned NaN for {what}; it must return an accuracy in percent")
    return value
