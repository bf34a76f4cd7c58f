"""``select_ranks``: choose how many singular values each layer of a model keeps.

The glue between a model and the pure math in ``lorita.ranks``: read the spectrum
(``lorita.spectrum``), price each layer (``layer_costs``), run a strategy, and for
the accuracy strategy compress and evaluate candidate cuts (``search_accuracy``).
Composed models are merged first; every size is that of the original, uncomposed
architecture. Feed the result to ``lorita.compress(model, ranks=...)``.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Literal, get_args

import torch
from torch import nn

from lorita.checks import check_choice, check_fraction, check_int, check_number
from lorita.compose import merge
from lorita.compress import compress, layer_shape, spectrum
from lorita.errors import LoritaError
from lorita.latency import keep_faster, latency_budget
from lorita.profile import profile
from lorita.ranks import (
    METRICS,
    LayerCost,
    Metric,
    SearchResult,
    budget_ranks,
    energy_ranks,
    global_ranks,
    global_thresholds,
    search_threshold,
    uniform_ranks,
)
from lorita.probe import example_args, observe
from lorita.svd_cache import SVDCache
from lorita.targets import check_model, scan_layers

log = logging.getLogger(__name__)

__all__ = ["AccuracySearch", "STRATEGIES", "Strategy", "layer_costs", "search_accuracy", "select_ranks"]

Strategy = Literal["uniform", "energy", "global", "budget", "accuracy"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)

# strategy -> (required options, optional options)
_OPTIONS: dict[Strategy, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "uniform": (("ratio",), ("example_input",)),
    "energy": (("energy",), ("example_input",)),
    "global": (("threshold",), ("example_input",)),
    "budget": ((), ("params", "flops", "latency", "example_input", "latency_aware")),
    "accuracy": (("evaluate",), ("max_drop", "finetune", "max_evals", "example_input")),
}
assert tuple(_OPTIONS) == STRATEGIES


def layer_costs(model: nn.Module, example_input: Any = None,
                metric: Metric = "params") -> tuple[dict[str, LayerCost], float]:
    """``LayerCost`` of every compressible layer, and the cost of everything else, in ``metric``.

    ``metric="params"`` needs no input (positions are 1). ``metric="macs"`` runs the
    (merged) model once on ``example_input`` with forward hooks to count each layer's
    output positions per example (``H_out*W_out`` for a conv, tokens for a linear on
    ``(B, T, C)``; a layer called twice counts twice), and measures the other MACs
    with ``lorita.profile``. ``fixed`` (the second value) is per example, like the
    costs: biases, norms and layers that cannot be cut. Given an ``example_input``,
    layers whose parent reads their weight instead of calling them cannot be cut and
    count in ``fixed`` (``lorita.probe.weight_readers``).

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
        >>> costs, fixed = layer_costs(net)
        >>> costs["0"], fixed
        (LayerCost(out_features=6, in_features=8, positions=1), 8)
    """
    check_model(model, "layer_costs")
    check_choice("metric", metric, METRICS)
    base = merge(model)  # the original architecture (a plain copy when nothing is composed)
    shapes = {name: layer_shape(module) for name, module in _layers(base, example_input).items()}
    if metric == "params":
        dense = sum(m * n for m, n in shapes.values())
        return {name: LayerCost(m, n) for name, (m, n) in shapes.items()}, sum(p.numel() for p in base.parameters()) - dense
    args = example_args(example_input)
    batch = int(args[0].shape[0]) if args[0].dim() else 1
    outputs = _output_numels(base, list(shapes), args)
    costs = {}
    for name, (m, n) in shapes.items():
        if outputs[name] == 0:
            raise LoritaError(f"layer {name!r} did not run on example_input, so its MACs are unknown; "
                              "pass an input that runs every Linear/Conv2d layer of the model")
        costs[name] = LayerCost(m, n, max(1, round(outputs[name] / (batch * m))))
    total = profile(base, args).macs / batch
    fixed = total - sum(c.dense("macs") for c in costs.values())
    return costs, max(0.0, fixed)


def select_ranks(model: nn.Module, strategy: Strategy, **options) -> dict[str, int]:
    """Rank per compressible layer (by module name) for ``lorita.compress(model, ranks=...)``.

    Strategies and their options:
        ``"uniform"``, ``ratio=``: the same fraction of singular values in every layer.
        ``"energy"``, ``energy=``: per layer, that fraction of ``sum(sigma^2)``.
        ``"global"``, ``threshold=``: keep ``sigma / sigma_max(layer) >= threshold``.
        ``"budget"``, ``params=`` or ``flops=`` (a fraction of the original model's
        total; ``flops`` needs ``example_input=``): least loss within that size.
        ``latency_aware=True`` (needs ``example_input=`` at the deployment batch size)
        then keeps dense every layer whose thin pair is not faster on this machine
        (``lorita.latency.keep_faster``), so the result can exceed the budget.
        ``latency=`` (a fraction of the dense model's time; needs ``example_input=`` at
        the deployment batch size and layout): the cut whose *measured* time on this
        machine is at most that fraction, rank allocated by measured time saved per unit
        of lost spectrum, layers with no faster pair left dense
        (``lorita.latency.latency_budget``, which also reports the predicted and measured
        latency and can choose channels_last).
        ``"accuracy"``, ``evaluate=`` (model -> accuracy in percent on validation data),
        ``max_drop=1.0`` (points), ``finetune=None`` (model -> model, run on each
        candidate before evaluating), ``max_evals=12``: the strongest global cut within
        the drop; see ``search_accuracy`` for the steps and the chosen model.
    A rank above a layer's break-even rank means it stays dense. ``example_input=`` (any
    strategy; pass one batch the model accepts) runs the model once and leaves out the
    layers whose parent reads their weight instead of calling them (they cannot be cut
    usefully: ``lorita.compress``); without it every eligible layer gets a rank.

    Example:
        >>> net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> ranks = select_ranks(net, "budget", params=0.5)
        >>> small = compress(net, ranks=ranks)
    """
    if strategy not in _OPTIONS:
        raise LoritaError(f"unknown strategy {strategy!r}; strategies: {', '.join(STRATEGIES)}")
    required, optional = _OPTIONS[strategy]
    missing = [k for k in required if k not in options]
    unexpected = sorted(set(options) - set(required) - set(optional))
    usage = ", ".join([f"{k}=" for k in required] + [f"{k}= (optional)" for k in optional])
    if missing or unexpected:
        what = f"missing {', '.join(k + '=' for k in missing)}" if missing else f"unexpected {', '.join(k + '=' for k in unexpected)}"
        raise LoritaError(f"strategy {strategy!r}: {what}; it takes {usage}")
    check_model(model, "select_ranks")
    if strategy == "accuracy":
        return search_accuracy(model, **options).ranks
    if strategy == "budget":
        return _budget(model, **options)
    spectra = spectrum(model, example_input=options.get("example_input"))
    _check_any(spectra)
    if strategy == "uniform":
        return uniform_ranks(spectra, options["ratio"])
    if strategy == "energy":
        return energy_ranks(spectra, options["energy"])
    return global_ranks(spectra, options["threshold"])


def _budget(model: nn.Module, params: float | None = None, flops: float | None = None, latency: float | None = None,
            example_input: Any = None, latency_aware: bool = False) -> dict[str, int]:
    if not isinstance(latency_aware, bool):
        raise LoritaError(f"latency_aware must be True or False, got {latency_aware!r}")
    if latency is not None:
        if params is not None or flops is not None:
            raise LoritaError("strategy 'budget' takes exactly one of params=, flops= or latency=, e.g. "
                              "select_ranks(model, 'budget', latency=0.5, example_input=x)")
        if latency_aware:
            raise LoritaError("latency= already times every layer on this machine; drop latency_aware=True")
        if example_input is None:
            raise LoritaError("strategy 'budget' with latency= needs example_input= at the deployment batch size "
                              "and layout (e.g. torch.randn(64, 3, 32, 32)) to time the model on")
        return latency_budget(model, latency, example_input).ranks
    if latency_aware and example_input is None:
        raise LoritaError("strategy 'budget' with latency_aware=True needs example_input= at the deployment "
                          "batch size (e.g. torch.randn(1, 3, 32, 32)) to time each layer on")
    if (params is None) == (flops is None):
        raise LoritaError("strategy 'budget' takes exactly one of params=, flops= or latency= (a fraction in (0, 1] "
                          "of the original model's total), e.g. select_ranks(model, 'budget', params=0.3)")
    if flops is not None and example_input is None:
        raise LoritaError("strategy 'budget' with flops= needs example_input= (e.g. torch.randn(1, 3, 32, 32)) "
                          "to count each layer's output positions")
    metric, target = ("params", params) if params is not None else ("macs", flops)  # FLOPs = 2 x MACs: same fraction
    label = "params" if metric == "params" else "flops"
    check_fraction(label, target, meaning=f"the fraction of the original model's {label} to keep")
    base = merge(model)
    spectra = spectrum(base, example_input=example_input)
    _check_any(spectra)
    costs, fixed = layer_costs(base, example_input, metric)
    try:
        ranks = budget_ranks(spectra, costs, target, metric=metric, fixed=fixed)
    except LoritaError as err:  # name the option the user gave, not the internal one
        raise LoritaError(str(err).replace("target=", f"{label}=").replace("pass a target", f"pass {label}")) from None
    if latency_aware:
        ranks = keep_faster(base, ranks, example_input)
    return ranks


@dataclass
class AccuracySearch:
    """Outcome of ``search_accuracy``.

    ``ranks``: the chosen cut (every layer at full rank when no cut stayed within the
    drop). ``model``: the model that was evaluated at that cut (compressed, and
    fine-tuned when ``finetune`` was given), or the merged uncompressed model when no
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
    check_model(model, "search_accuracy")
    if not callable(evaluate):
        raise LoritaError(f"evaluate must be a callable model -> accuracy (percent), got {type(evaluate).__name__}")
    if finetune is not None and not callable(finetune):
        raise LoritaError(f"finetune must be a callable model -> model or None, got {type(finetune).__name__}")
    check_int("max_evals", max_evals)
    check_number("max_drop", max_drop, minimum=0, meaning="accuracy points")
    base = merge(model)
    spectra = spectrum(base, example_input=example_input)
    _check_any(spectra)
    shapes = {name: layer_shape(module) for name, module in _layers(base, example_input).items()}
    # only thresholds that build distinct compressed models: no evaluation is spent twice on one model
    thresholds = global_thresholds(spectra, {name: LayerCost(m, n) for name, (m, n) in shapes.items()})

    baseline = _accuracy(evaluate, base, "the uncompressed model", baseline=True)
    if not thresholds:  # no layer is worth cutting, even at rank 1: nothing to search
        log.info("no layer of this model is worth cutting; keeping it dense")
        empty = SearchResult(0.0, baseline, False, baseline, baseline - max_drop, ())
        return AccuracySearch(global_ranks(spectra, 0.0), base, empty)
    best: dict[str, Any] = {}  # the model at the largest threshold found within the drop so far
    cache = SVDCache()  # each layer's SVD once, not once per try

    def evaluate_at(threshold: float) -> float:
        candidate = compress(base, ranks=global_ranks(spectra, threshold), svd_cache=cache)
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
        return AccuracySearch(global_ranks(spectra, 0.0), base, result)
    return AccuracySearch(global_ranks(spectra, result.threshold), best["model"], result)


# ----------------------------------------------------------------------------
# helpers


def _layers(base: nn.Module, example_input: Any = None) -> dict[str, nn.Module]:
    """The compressible layers, under the names ``lorita.spectrum`` uses (with the same ``example_input``)."""
    return {name: layer.module for name, layer in scan_layers(base, example_input=example_input).layers.items()}


def _check_any(spectra: dict) -> None:
    if not spectra:
        raise LoritaError("the model has no compressible layer (Linear or Conv2d with groups=1), "
                          "so there are no ranks to select")


def _output_numels(model: nn.Module, names: list[str], args: tuple) -> dict[str, int]:
    """Total output elements of each named module over one forward pass (calls add up)."""
    counts = {name: 0 for name in names}

    def count(name):
        def hook(module, inputs, output):
            counts[name] += output.numel()
        return hook

    observe(model, args, {name: count(name) for name in names})
    return counts


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
