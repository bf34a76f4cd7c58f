"""Choosing ranks: ``choose_ranks(model, how)``, one entry point for every way to cut.

``how`` is a ``lorita.cutspec`` object (``Energy(0.95)``, ``Budget(params=0.3)``,
``Latency(0.5, batch=64)``, ...); ``choose_ranks`` runs the handler registered for its class
(``register_cut``) on the model's ``lorita.spectra.Spectra``: the glue between a model and the
pure math in ``lorita.ranks``. Composed models are merged first; every size is that of the
original, uncomposed architecture. ``cut`` chooses and compresses in one call;
``select_ranks(model, "budget", params=0.3)`` is the older spelling, kept for existing code.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, get_args

from torch import nn

from lorita.cutspec import (Accuracy, Budget, CutSpec, Energy, Latency, Rank, Ranks, Ratio, Threshold,
                            cut_from_strategy)
from lorita.errors import BudgetOutOfReach, LoritaError
from lorita.latency import keep_faster, latency_budget
from lorita.linalg import check_rank
from lorita.metric import ACCURACY_MAX_DROP
from lorita.quantize import quantize
from lorita.ranks import (budget_ranks, energy_ranks, global_ranks, global_thresholds, round_ranks, total_cost,
                          uniform_ranks)
from lorita.search import AccuracySearch, search_accuracy, search_spectra
from lorita.spectra import Spectra, layer_costs
from lorita.targets import check_model, resolve_ranks

log = logging.getLogger(__name__)

__all__ = ["AccuracySearch", "BudgetOutOfReach", "Choice", "STRATEGIES", "Strategy", "choose_ranks", "cut",
           "layer_costs", "register_cut", "search_accuracy", "select_ranks"]


@dataclass
class Choice:
    """What ``choose_ranks`` found: the rank of each layer, for ``how``.

    ``report``: what the way to cut measured on the way (a ``lorita.latency.LatencyBudget``,
    the ``lorita.ranks.SearchResult`` of an accuracy search, the threshold of a threshold
    budget), else None. ``model``: the compressed model when choosing already built it (the
    accuracy search evaluates candidates), else None.
    """

    ranks: dict[str, int]
    how: CutSpec
    report: Any = None
    model: nn.Module | None = None


Handler = Callable[..., Choice]
_HANDLERS: dict[type, Handler] = {}


def register_cut(kind: type[CutSpec]) -> Callable[[Handler], Handler]:
    """Register ``handler(how, spectra, **context) -> Choice`` for the ``CutSpec`` class ``kind``.

    ``context`` holds ``evaluate`` and ``finetune`` (accuracy searches), ``baseline`` and the
    latency timing options (``timer``, ``cache``, ``cache_file``); a handler takes what it needs.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class Half(CutSpec):
        ...     kind = "half-example"
        >>> @register_cut(Half)
        ... def _half(how, spectra, **context):
        ...     return Choice({name: max(1, min(s) // 2) for name, s in spectra.shapes.items()}, how)
        >>> choose_ranks(nn.Sequential(nn.Linear(8, 6)), Half()).ranks
        {'0': 3}
    """
    if not (isinstance(kind, type) and issubclass(kind, CutSpec)):
        raise LoritaError(f"register_cut takes a CutSpec subclass, got {kind!r}")

    def register(handler: Handler) -> Handler:
        _HANDLERS[kind] = handler
        return handler

    return register


def choose_ranks(model: nn.Module | Spectra, how: CutSpec, *, example_input: Any = None,
                 batches: Iterable[Any] | None = None, **context) -> Choice:
    """The ranks ``how`` chooses for ``model`` (or for a ``Spectra`` of it, shared with other cuts).

    ``example_input`` (one batch the model accepts): leaves out the layers whose parent reads
    their weight (a cut there saves nothing), and is what FLOPs and latency are measured on;
    without it every eligible layer gets a rank. ``batches``: calibration inputs for a
    whitened cut (``how.calibrate`` of them are read). ``context``: ``evaluate`` (model ->
    score on validation data) and ``finetune`` for ``Accuracy``; ``timer``, ``cache``,
    ``cache_file`` for ``Latency`` and latency-aware budgets. A rank above a layer's
    break-even rank means it stays dense. Feed ``.ranks`` to ``lorita.compress(model, ranks=...)``,
    or use ``cut``.

    Example:
        >>> from lorita.compress import compress
        >>> net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> choice = choose_ranks(net, Budget(params=0.5))
        >>> size = lambda m: sum(p.numel() for p in m.parameters())
        >>> sorted(choice.ranks), size(compress(net, ranks=choice.ranks)) <= 0.5 * size(net)
        (['0', '2'], True)
    """
    handler = _handler(how, context, "choose_ranks")
    if isinstance(model, Spectra):
        if example_input is not None or batches is not None:
            raise LoritaError("example_input= and batches= belong to the Spectra (Spectra(model, example_input, "
                              "batches=...)); it already has its own")
        spectra = model
    else:
        check_model(model, "choose_ranks", replaces=True)
        spectra = Spectra(model, example_input, batches=batches)
    spectra.require_layers()
    if how.whitened:
        spectra.calibrate(how.calibrate)
    choice = handler(how, spectra, **context)
    if how.multiple > 1 and not how.budgeted:
        choice.ranks = round_ranks(choice.ranks, spectra.full_ranks, how.multiple)
    return choice


def _handler(how: CutSpec, context: dict, caller: str):
    """The registered handler of ``how``, after checking that it reads every option in ``context``."""
    if not isinstance(how, CutSpec):
        raise LoritaError(f"how must be a way to cut (lorita.cutspec: Energy(0.9), Budget(params=0.3), ...), "
                          f"got {type(how).__name__}")
    handler = _HANDLERS.get(type(how))
    if handler is None:
        raise LoritaError(f"no handler for {type(how).__name__}; register one with lorita.select.register_cut")
    unknown = sorted(set(context) - _context_names(handler))
    if unknown:
        raise LoritaError(f"{caller} got unknown option(s) {', '.join(k + '=' for k in unknown)}; it takes "
                          "example_input=, batches=, and for the way to cut: evaluate=, finetune=, baseline= "
                          "(Accuracy), timer=, cache=, cache_file= (Latency and latency-aware budgets)")
    return handler


def cut(model: nn.Module | Spectra, how: CutSpec, **options) -> tuple[nn.Module, Choice]:
    """The model cut as ``how`` says (a copy, eval mode; with ``how.int8`` then in int8) and the ``Choice`` behind
    it; ``options`` as in ``choose_ranks``.

    Example:
        >>> net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> small, choice = cut(net, Energy(0.5))
        >>> type(small[0]).__name__
        'LowRankLinear'
    """
    _handler(how, {k: v for k, v in options.items() if k not in ("example_input", "batches")}, "cut")
    spectra = model if isinstance(model, Spectra) else Spectra(model, options.pop("example_input", None),
                                                               batches=options.pop("batches", None))
    choice = choose_ranks(spectra, how, **options)
    small = choice.model if choice.model is not None else spectra.cut(choice.ranks, whitened=how.whitened)
    return (quantize(small, "int8") if how.int8 else small), choice


# ----------------------------------------------------------------------------
# the handlers, one per way to cut


@register_cut(Ranks)
def _given(how: Ranks, spectra: Spectra, **_) -> Choice:
    if how.multiple == 1:
        return Choice(dict(how.ranks), how)  # checked where the model is cut
    # rounding caps a rank at its layer's full rank and rounds only canonical names: check and resolve them first
    resolved = resolve_ranks(how.ranks, spectra.scan.layers.values(), spectra.scan.skipped)
    for name, (given, rank) in resolved.items():
        check_rank(f"rank for {given!r}", rank, *spectra.shapes[name])
    return Choice({name: rank for name, (_, rank) in resolved.items()}, how)


@register_cut(Rank)
def _rank(how: Rank, spectra: Spectra, **_) -> Choice:
    return Choice({name: min(how.rank, full) for name, full in spectra.full_ranks.items()}, how)


@register_cut(Ratio)
def _ratio(how: Ratio, spectra: Spectra, **_) -> Choice:
    return Choice(uniform_ranks(spectra.values(how.whitened), how.ratio), how)


@register_cut(Energy)
def _energy(how: Energy, spectra: Spectra, **_) -> Choice:
    return Choice(energy_ranks(spectra.values(how.whitened), how.energy), how)


@register_cut(Threshold)
def _threshold(how: Threshold, spectra: Spectra, **_) -> Choice:
    return Choice(global_ranks(spectra.values(how.whitened), how.threshold), how)


_TIMING = ("timer", "cache", "cache_file")  # the context a latency measurement takes
_SEARCH = ("evaluate", "finetune", "baseline")  # the context an accuracy search takes


def _context_names(handler: Handler) -> set[str]:
    """The context options a handler can use: the built-in ones and any keyword a registered handler names."""
    named = [p.name for p in list(inspect.signature(handler).parameters.values())[2:]
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return {*_SEARCH, *_TIMING, *named}


def _timing(context: dict) -> dict:
    return {k: context[k] for k in _TIMING if k in context}


@register_cut(Budget)
def _budget(how: Budget, spectra: Spectra, **context) -> Choice:
    if how.metric == "macs" and spectra.example_input is None:
        raise LoritaError("flops= needs example_input= (e.g. torch.randn(1, 3, 32, 32)) to count each layer's "
                          "output positions")
    if how.latency_aware and spectra.example_input is None:
        raise LoritaError("latency_aware=True needs example_input= at the deployment batch size "
                          "(e.g. torch.randn(1, 3, 32, 32)) to time each layer on")
    values = spectra.values(how.whitened)
    costs, fixed = spectra.costs(how.metric)
    if how.rule == "threshold":
        return _threshold_budget(how, values, costs, fixed, spectra.full_ranks)
    try:
        ranks = budget_ranks(values, costs, how.fraction, metric=how.metric, fixed=fixed, step=how.multiple)
    except LoritaError as err:  # name the option the user gave, not the internal one
        label = how.label
        message = str(err).replace("target=", f"{label}=").replace("pass a target", f"pass {label}")
        raise type(err)(message) from None
    if how.latency_aware:
        ranks = keep_faster(spectra.model, ranks, spectra.example_input, **_timing(context))
    return Choice(ranks, how)


def _threshold_budget(how: Budget, values: dict, costs: dict, fixed: float, full: dict) -> Choice:
    """The weakest global threshold whose cut (ranks rounded up to ``how.multiple``) keeps at most the budget;
    ``report`` is that threshold."""
    original = fixed + sum(c.dense(how.metric) for c in costs.values())
    candidates = global_thresholds(values, costs)

    def ranks_at(threshold: float) -> dict[str, int]:
        ranks = global_ranks(values, threshold)
        return ranks if how.multiple == 1 else round_ranks(ranks, full, how.multiple)

    def fits(threshold: float) -> bool:
        return total_cost(ranks_at(threshold), costs, how.metric, fixed) / original <= how.fraction

    lo, hi = 0, len(candidates)  # the first candidate whose cut fits
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    if lo == len(candidates):
        raise BudgetOutOfReach(f"{how.label}={how.fraction:g} cannot be met with one global threshold: even the "
                               "strongest cut keeps more")
    return Choice(ranks_at(candidates[lo]), how, report=candidates[lo])


@register_cut(Latency)
def _latency(how: Latency, spectra: Spectra, **context) -> Choice:
    if spectra.example_input is None:
        raise LoritaError("latency= needs example_input= at the deployment batch size and layout "
                          "(e.g. torch.randn(64, 3, 32, 32)) to time the model on")
    found = latency_budget(spectra, how, **_timing(context))
    return Choice(found.ranks, how, report=found)


@register_cut(Accuracy)
def _accuracy(how: Accuracy, spectra: Spectra, *, evaluate: Callable[[nn.Module], float] | None = None,
              finetune: Callable[[nn.Module], nn.Module] | None = None, baseline: float | None = None,
              **_) -> Choice:
    if evaluate is None:
        raise LoritaError("an accuracy search needs evaluate= (model -> accuracy in percent on validation data)")
    max_drop = ACCURACY_MAX_DROP if how.max_drop is None else how.max_drop  # compress_model resolves it by metric
    found = search_spectra(spectra, evaluate, max_drop=max_drop, finetune=finetune, max_evals=how.max_evals,
                           whitened=how.whitened, baseline=baseline, multiple=how.multiple)
    return Choice(found.ranks, how, report=found, model=found.model if found.search.found else None)


# ----------------------------------------------------------------------------
# select_ranks: the older spelling, (strategy, options)

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
_CONTEXT = ("example_input", "evaluate", "finetune")  # arguments of the call, not of the way to cut


def select_ranks(model: nn.Module, strategy: Strategy, **options) -> dict[str, int]:
    """Rank per compressible layer (by module name) for ``lorita.compress(model, ranks=...)``.

    The older spelling of ``choose_ranks(model, how).ranks``, kept for existing code: each
    strategy is a way to cut of ``lorita.cutspec``.
        ``"uniform"``, ``ratio=``: ``Ratio``, the same fraction of singular values in every layer.
        ``"energy"``, ``energy=``: ``Energy``, per layer that fraction of ``sum(sigma^2)``.
        ``"global"``, ``threshold=``: ``Threshold``, keep ``sigma / sigma_max(layer) >= threshold``.
        ``"budget"``, ``params=`` or ``flops=`` (a fraction of the original model's total;
        ``flops`` needs ``example_input=``), ``latency_aware=``: ``Budget``, least loss within
        that size. ``latency=`` (a fraction of the dense model's measured time; needs
        ``example_input=`` at the deployment batch size and layout): ``Latency``.
        ``"accuracy"``, ``evaluate=`` (model -> accuracy in percent on validation data),
        ``max_drop=1.0`` (points), ``finetune=None`` (model -> model, run on each candidate
        before evaluating), ``max_evals=12``: ``Accuracy``, the strongest global cut within
        the drop (``search_accuracy`` also returns the chosen model).
    ``example_input=`` (any strategy; one batch the model accepts) leaves out the layers whose
    parent reads their weight instead of calling them (see ``lorita.compress``).

    Example:
        >>> net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> ranks = select_ranks(net, "budget", params=0.5)
        >>> ranks == choose_ranks(net, Budget(params=0.5)).ranks
        True
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
    check_model(model, "select_ranks", replaces=True)
    context = {k: options.pop(k) for k in _CONTEXT if k in options}
    if strategy == "budget":
        if sum(options.get(k) is not None for k in ("params", "flops", "latency")) != 1:
            raise LoritaError("strategy 'budget' takes exactly one of params=, flops= or latency= (a fraction in "
                              "(0, 1] of the original model's total), e.g. select_ranks(model, 'budget', params=0.3)")
        if options.get("latency") is not None and options.pop("latency_aware", False):
            raise LoritaError("latency= already times every layer on this machine; drop latency_aware=True")
    return choose_ranks(model, cut_from_strategy(strategy, options), **context).ranks
