"""How to cut: one small frozen dataclass per way to choose the ranks of a model's layers.

``Ranks`` (given), ``Ratio``, ``Energy``, ``Threshold``, ``Budget`` (params or FLOPs/MACs),
``Latency`` (measured time) and ``Accuracy`` (validation search) each check their values
when made, with a LoritaError naming the field, and round-trip through JSON as
``{"kind": ..., field: value, ...}`` (``to_dict`` / ``cut_from_dict``): what a compress
run's ``config.json`` stores. ``lorita.select.choose_ranks(model, how)`` runs the handler
registered for the class (``lorita.select.register_cut``). Options every cut has:

* ``calibrate``: whitened (activation-aware, SVD-LLM) cuts: the rank choice reads each
  layer's whitened spectrum and the cut minimises the output error on this many
  calibration batches (``lorita.whiten``); 0 (default): plain SVD of the weights.
* ``multiple``: every rank a multiple of this (8 or 16 suit vectorised kernels) or the
  layer's full rank: rounded up where the cut keeps at least what it asks for (energy,
  thresholds, given ranks, the accuracy search's candidates: ``lorita.ranks.round_ranks``);
  allocated in multiples where it keeps at most (``Budget``, ``Latency``: ``budgeted``
  kinds, whose handlers take it); 1 (default): any rank.
* ``int8``: after the cut (and any fine-tuning), store the weights in int8, one scale per
  output channel (``lorita.quantize``; ``lorita.runs.compress.compress_model``).

A new way to cut is one dataclass here (a ``kind`` and a ``check``), one handler in
``lorita.select`` and one flag in ``lorita.cli.compress_cmd``. A new option of every cut is a
field of ``CutSpec``: read when ranks are chosen (``lorita.select.choose_ranks``, as
``multiple``), or after the cut by ``lorita.select.cut`` and ``lorita.runs.compress.compress_model``
(where a step such as re-estimating BatchNorm statistics or int8 quantisation of the cut model
belongs).

Example:
    >>> how = Energy(0.95, calibrate=8)
    >>> how.to_dict()
    {'kind': 'energy', 'energy': 0.95, 'calibrate': 8, 'multiple': 1, 'int8': False}
    >>> cut_from_dict(how.to_dict()) == how
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, get_args

from lorita.checks import check_choice, check_fraction, check_int, check_number, is_int
from lorita.errors import LoritaError

__all__ = ["KINDS", "LAYOUTS", "RULES", "Accuracy", "Budget", "CutSpec", "Energy", "Latency", "Rank", "Ranks",
           "Ratio", "Threshold", "cut_from_dict", "cut_from_strategy"]

# the memory layouts a latency budget can time in (lorita.latency.latency_budget)
Layout = Literal["input", "auto", "contiguous", "channels_last"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
Rule = Literal["loss", "threshold"]  # how a budget shares ranks out among the layers
RULES: tuple[Rule, ...] = get_args(Rule)

MAX_BATCH = 65536  # a latency budget's batch: the model is timed on a batch this large, on this machine

KINDS: dict[str, type["CutSpec"]] = {}  # kind -> class, filled as each class is defined


@dataclass(frozen=True)
class CutSpec:
    """What every way to cut shares: whitening (``calibrate`` batches) and a rank ``multiple``.

    Subclasses set ``kind`` (the JSON name) and check their own fields in ``check``.
    """

    kind: ClassVar[str] = ""
    budgeted: ClassVar[bool] = False  # a budget: its handler allocates in multiples (rounding up could break it)
    calibrate: int = field(default=0, kw_only=True)
    multiple: int = field(default=1, kw_only=True)
    int8: bool = field(default=False, kw_only=True)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            KINDS[cls.kind] = cls

    def __post_init__(self) -> None:
        check_int("calibrate", self.calibrate, minimum=0, meaning="training batches for whitened cuts; 0: plain SVD")
        check_int("multiple", self.multiple, meaning="ranks in multiples of it; 1: any rank")
        if not isinstance(self.int8, bool):
            raise LoritaError(f"int8 must be True or False, got {self.int8!r}")
        self.check()

    def check(self) -> None:
        """Validate (and normalise, with ``_set``) the fields of this way to cut."""

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: normalised values are set once, in check()

    @property
    def whitened(self) -> bool:
        """Whether the cut is calibrated (whitened SVD)."""
        return self.calibrate > 0

    def to_dict(self) -> dict:
        """``{"kind": ..., field: value, ...}``, plain JSON: the kind's own fields, then the options every cut has."""
        names = [f.name for f in dataclasses.fields(self) if f.name not in _SHARED] + list(_SHARED)
        return {"kind": self.kind, **{name: _plain(getattr(self, name)) for name in names}}


_SHARED = ("calibrate", "multiple", "int8")  # the options every way to cut has


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


MAX_SEARCH_STEPS = 1000  # the most rounds, repeats or points a latency search may be asked for


@dataclass(frozen=True)
class Ranks(CutSpec):
    """The rank of each layer, by module name; layers not named stay dense.

    Example:
        >>> Ranks({"0": 8}).ranks
        {'0': 8}
    """

    kind: ClassVar[str] = "ranks"
    ranks: Mapping[str, int]

    def check(self) -> None:
        if not isinstance(self.ranks, Mapping) or not all(isinstance(k, str) and is_int(v) and v >= 1
                                                          for k, v in self.ranks.items()):
            raise LoritaError(f"ranks must be a dict of module name -> rank (an integer >= 1), got {self.ranks!r}")
        self._set("ranks", dict(self.ranks))


@dataclass(frozen=True)
class Rank(CutSpec):
    """The same rank in every layer (a layer whose full rank is lower keeps it: it stays dense).

    Example:
        >>> Rank(64).rank
        64
    """

    kind: ClassVar[str] = "rank"
    rank: int

    def check(self) -> None:
        check_int("rank", self.rank, meaning="the rank every layer keeps")


@dataclass(frozen=True)
class Ratio(CutSpec):
    """The same fraction of singular values in every layer (``ceil(ratio * k)``, at least 1).

    Example:
        >>> Ratio(0.25).ratio
        0.25
    """

    kind: ClassVar[str] = "ratio"
    ratio: float

    def check(self) -> None:
        self._set("ratio", check_fraction("ratio", self.ratio, meaning="keep this fraction of each layer's "
                                                                       "singular values"))


@dataclass(frozen=True)
class Energy(CutSpec):
    """Per layer, the smallest rank keeping this fraction of ``sum(sigma^2)`` (of the whitened spectrum
    when calibrated: the output energy).

    Example:
        >>> Energy(0.9).energy
        0.9
    """

    kind: ClassVar[str] = "energy"
    energy: float

    def check(self) -> None:
        self._set("energy", check_fraction("energy", self.energy,
                                           meaning="keep this fraction of each layer's sum of sigma^2"))


@dataclass(frozen=True)
class Threshold(CutSpec):
    """One global threshold: keep ``sigma / sigma_max(layer) >= threshold`` (at least 1 per layer).

    Example:
        >>> Threshold(0.05).threshold
        0.05
    """

    kind: ClassVar[str] = "threshold"
    threshold: float

    def check(self) -> None:
        self._set("threshold", check_fraction("threshold", self.threshold, low_open=False,
                                              meaning="cut sigma / sigma_max below it; 0 keeps everything"))


@dataclass(frozen=True)
class Budget(CutSpec):
    """At most ``params`` or ``flops`` (exactly one: a fraction in (0, 1] of the original model's
    total; FLOPs need an example input) at the least loss.

    ``rule="loss"`` (default): the greedy least-loss allocation (``lorita.ranks.budget_ranks``);
    ``rule="threshold"``: the weakest single global threshold whose cut fits (the paper's rule,
    what the experiments' columns cut with unless their ``cut_rule`` is ``"loss"``).
    ``latency_aware=True`` (loss rule, needs the deployment-size example input) then keeps dense
    every layer whose thin pair is not faster on this machine (``lorita.latency.keep_faster``), so
    the result can exceed the budget.

    Example:
        >>> Budget(params=0.3).metric, Budget(flops=0.5).fraction
        ('params', 0.5)
    """

    kind: ClassVar[str] = "budget"
    budgeted: ClassVar[bool] = True
    params: float | None = None
    flops: float | None = None
    rule: Rule = "loss"
    latency_aware: bool = False

    def check(self) -> None:
        if (self.params is None) == (self.flops is None):
            raise LoritaError("a budget takes exactly one of params= or flops= (a fraction in (0, 1] of the original "
                              "model's total), e.g. Budget(params=0.3); a time budget is Latency(0.5)")
        label = "params" if self.params is not None else "flops"
        self._set(label, check_fraction(label, getattr(self, label),
                                        meaning=f"the fraction of the original model's {label} to keep"))
        check_choice("rule", self.rule, RULES)
        if not isinstance(self.latency_aware, bool):
            raise LoritaError(f"latency_aware must be True or False, got {self.latency_aware!r}")
        if self.latency_aware and self.rule != "loss":
            raise LoritaError("latency_aware=True goes with rule='loss'")

    @property
    def metric(self) -> str:
        """What is counted: ``"params"`` or ``"macs"`` (FLOPs = 2 x MACs: the same fraction)."""
        return "params" if self.params is not None else "macs"

    @property
    def fraction(self) -> float:
        """The kept fraction of the original total."""
        return self.params if self.params is not None else self.flops

    @property
    def label(self) -> str:
        """The option's name: ``"params"`` or ``"flops"``."""
        return "params" if self.params is not None else "flops"


@dataclass(frozen=True)
class Latency(CutSpec):
    """The cut whose measured time on this machine is at most ``latency`` of the dense model's.

    ``batch``: the batch size to time at (None: the example input's); ``layout``: the memory
    layout (``"input"``: the example's, ``"auto"``: channels_last where the dense model
    measures faster in it, or forced ``"contiguous"`` / ``"channels_last"``). ``tolerance``,
    ``rounds``, ``repeats``, ``points``: the search, as in ``lorita.latency.latency_budget``.

    Example:
        >>> Latency(0.5, batch=64).layout
        'input'
    """

    kind: ClassVar[str] = "latency"
    budgeted: ClassVar[bool] = True
    latency: float
    batch: int | None = None
    layout: Layout = "input"
    tolerance: float = 0.1
    rounds: int = 4
    repeats: int = 3
    points: int = 8

    def check(self) -> None:
        self._set("latency", check_fraction("latency", self.latency,
                                            meaning="the cut model's time as a fraction of the dense model's"))
        if self.batch is not None:
            check_int("batch", self.batch, maximum=MAX_BATCH, meaning="the batch size the latency is measured at")
        check_choice("layout", self.layout, LAYOUTS)
        self._set("tolerance", check_fraction("tolerance", self.tolerance, high_open=True,
                                              meaning="accept a measured fraction down to latency * (1 - tolerance)"))
        for what in ("rounds", "repeats", "points"):  # each multiplies the timings: a typo would run for days
            check_int(what, getattr(self, what), maximum=MAX_SEARCH_STEPS, meaning="a search setting")


@dataclass(frozen=True)
class Accuracy(CutSpec):
    """The strongest global cut whose validation score stays within ``max_drop`` of the uncompressed
    model's, found by bisection in at most ``max_evals`` evaluations (the caller supplies the
    evaluation: ``choose_ranks(..., evaluate=)``). ``max_drop``: points of accuracy, or nats of loss for
    a run judged by loss; None: the default of what it is judged by (``lorita.metric``: 1 point, or
    ln 1.02 nats, perplexity + 2%; ``lorita.cut`` and ``choose_ranks`` take 1).

    Example:
        >>> Accuracy(max_drop=0.5).max_evals, Accuracy().max_drop
        (12, None)
    """

    kind: ClassVar[str] = "accuracy"
    max_drop: float | None = None
    max_evals: int = 12

    def check(self) -> None:
        if self.max_drop is not None:
            self._set("max_drop", check_number("max_drop", self.max_drop, minimum=0,
                                               meaning="points of accuracy, or nats of loss"))
        check_int("max_evals", self.max_evals)


def cut_from_dict(values: Any, where: str = "cut") -> CutSpec:
    """The ``CutSpec`` a ``to_dict`` wrote (an unknown kind or field is a LoritaError naming it).

    Example:
        >>> cut_from_dict({"kind": "ratio", "ratio": 0.5})
        Ratio(calibrate=0, multiple=1, int8=False, ratio=0.5)
    """
    if not isinstance(values, Mapping):
        raise LoritaError(f"{where}: a way to cut is an object such as {{\"kind\": \"ratio\", \"ratio\": 0.5}}, got "
                          f"{values!r:.60}; kinds: {', '.join(KINDS)}")
    kind = values.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise LoritaError(f"{where}: unknown way to cut {kind!r:.60}; kinds: {', '.join(KINDS)}")
    cls = KINDS[values["kind"]]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known - {"kind"})
    if unknown:
        raise LoritaError(f"{where}: the {values['kind']!r} way to cut has no field {', '.join(unknown)}; "
                          f"fields: {', '.join(sorted(known))}")
    try:
        return cls(**{k: v for k, v in values.items() if k != "kind"})
    except TypeError as err:  # a required field is missing
        raise LoritaError(f"{where}: {err}") from None


# the strategies of lorita.select_ranks and of compress runs written before CutSpec, by the kind they are now
STRATEGY_KINDS = {"ranks": "ranks", "uniform": "ratio", "energy": "energy", "global": "threshold", "budget": "budget",
                  "accuracy": "accuracy"}


def cut_from_strategy(strategy: str, options: Mapping[str, Any], ranks: Mapping[str, int] | None = None) -> CutSpec:
    """The ``CutSpec`` of a ``(strategy, options)`` pair: ``select_ranks``' arguments, or a compress run's
    config.json written before ``{"kind": ...}`` (``options`` may hold ``calibrate``).

    Example:
        >>> cut_from_strategy("budget", {"latency": 0.5, "batch": 8, "layout": "auto"})
        Latency(calibrate=0, multiple=1, int8=False, latency=0.5, batch=8, layout='auto', tolerance=0.1, rounds=4, repeats=3, points=8)
    """
    if not isinstance(strategy, str) or strategy not in STRATEGY_KINDS:
        raise LoritaError(f"unknown strategy {strategy!r:.60}; strategies: {', '.join(STRATEGY_KINDS)}")
    if not isinstance(options, Mapping):
        raise LoritaError(f"the options of strategy {strategy!r} must be a dict, got {type(options).__name__}")
    values = dict(options)
    if strategy == "ranks":
        values["ranks"] = dict(ranks or {})
    kind = STRATEGY_KINDS[strategy]
    if strategy == "budget" and values.get("latency") is not None:
        kind = "latency"
    return cut_from_dict({"kind": kind, **{k: v for k, v in values.items() if v is not None}}, f"strategy {strategy!r}")
