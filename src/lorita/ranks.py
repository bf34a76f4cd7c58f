"""Rank selection on bare spectra: how many singular values each layer keeps.

Everything here is pure math on ``spectra``, a ``dict[str, Tensor]`` mapping a
layer name to its singular values (1-D, descending), and on ``LayerCost``
records. No module is touched: ``lorita.select`` turns a model into spectra and
costs and the chosen ranks back into a compressed model.

A layer ``m x n`` kept at rank ``r`` becomes two thin layers costing
``r * (m + n)`` instead of ``m * n``. That only saves something up to the
break-even rank (the largest ``r`` with ``r * (m + n) < m * n``); a rank above
it means the layer stays dense.

Strategies: ``uniform_ranks`` (same fraction of values per layer),
``energy_ranks`` (fraction of ``sigma^2`` per layer), ``global_ranks`` (one
threshold on ``sigma / sigma_max`` pooled over layers), ``budget_ranks`` (least
loss under a params or MACs budget), ``measured_ranks`` (least loss under a budget of
measured costs, e.g. seconds) and ``search_threshold`` (the strongest
global cut whose accuracy stays within a drop, by bisection).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence, get_args

import torch

from lorita.checks import check_choice, check_fraction, check_int, check_number
from lorita.errors import BudgetOutOfReach, LoritaError
from lorita.linalg import break_even_rank, check_rank, energy_rank, ratio_rank

__all__ = [
    "LayerCost",
    "SearchResult",
    "SearchStep",
    "break_even_rank",
    "budget_ranks",
    "energy_ranks",
    "global_ranks",
    "global_thresholds",
    "is_worth_cutting",
    "measured_ranks",
    "round_ranks",
    "search_threshold",
    "total_cost",
    "uniform_ranks",
]

Metric = Literal["params", "macs"]
METRICS: tuple[Metric, ...] = get_args(Metric)


# ----------------------------------------------------------------------------
# costs


def is_worth_cutting(m: int, n: int, r: int) -> bool:
    """True when two thin layers of rank ``r`` are cheaper than the dense ``m x n`` one.

    ``break_even_rank(m, n)`` (from ``lorita.linalg``, importable here too) is the largest such rank.

    Example:
        >>> is_worth_cutting(512, 784, 309), is_worth_cutting(512, 784, 310)
        (True, False)
    """
    largest = break_even_rank(m, n)  # checks m and n
    return check_rank("rank", r, m, n) <= largest


@dataclass(frozen=True)
class LayerCost:
    """Size of one compressible layer, enough to price it at any rank.

    ``out_features`` is m (``C_out`` for a conv), ``in_features`` is n
    (``C_in * kh * kw``), ``positions`` the output positions per example
    (``H_out * W_out`` for a conv, tokens for a transformer linear, 1 for an
    MLP). Dense: ``m * n`` params and ``positions * m * n`` MACs; rank ``r``:
    ``r * (m + n)`` params and ``positions * r * (m + n)`` MACs. Biases are not
    affected by the cut and are not counted here.

    Example:
        >>> c = LayerCost(out_features=64, in_features=3 * 3 * 3, positions=32 * 32)
        >>> c.dense("params"), c.at_rank(8, "params"), c.at_rank(8, "macs")
        (1728, 728, 745472)
    """

    out_features: int
    in_features: int
    positions: int = 1

    def __post_init__(self) -> None:
        for field in ("out_features", "in_features", "positions"):
            check_int(f"LayerCost.{field}", getattr(self, field))

    @property
    def max_rank(self) -> int:
        """``min(m, n)``: the largest meaningful rank."""
        return min(self.out_features, self.in_features)

    @property
    def break_even(self) -> int:
        """The largest rank that is still cheaper than the dense layer (0 if none)."""
        return break_even_rank(self.out_features, self.in_features)

    def dense(self, metric: Metric = "params") -> int:
        """Cost of the uncut layer in ``metric`` ("params" or "macs")."""
        return self._scale(metric) * self.out_features * self.in_features

    def at_rank(self, r: int | None, metric: Metric = "params") -> int:
        """Cost at rank ``r`` (two thin layers), or dense when ``r`` is None or not worth cutting."""
        if r is None or not is_worth_cutting(self.out_features, self.in_features, r):
            return self.dense(metric)
        return self._scale(metric) * r * (self.out_features + self.in_features)

    def _scale(self, metric: Metric) -> int:
        check_choice("metric", metric, METRICS)
        return self.positions if metric == "macs" else 1


def total_cost(
    ranks: Mapping[str, int | None],
    costs: Mapping[str, LayerCost],
    metric: Metric = "params",
    fixed: float = 0,
) -> float:
    """``fixed`` plus every layer's cost at its rank (None or above break-even: dense).

    Example:
        >>> costs = {"a": LayerCost(10, 10), "b": LayerCost(4, 100)}
        >>> total_cost({"a": 2, "b": 4}, costs), total_cost({"a": None, "b": None}, costs)
        (440, 500)
    """
    unknown = sorted(set(ranks) - set(costs))
    if unknown:
        raise LoritaError(f"no LayerCost for layers {unknown}; known layers: {sorted(costs)}")
    return fixed + sum(costs[name].at_rank(r, metric) for name, r in ranks.items())


# ----------------------------------------------------------------------------
# strategies on spectra


def uniform_ranks(spectra: Mapping[str, torch.Tensor], ratio: float) -> dict[str, int]:
    """Keep ``ceil(ratio * k)`` of the ``k`` singular values of every layer (at least 1).

    Example:
        >>> import torch
        >>> uniform_ranks({"fc": torch.linspace(1, 0.1, 10)}, 0.3)
        {'fc': 3}
    """
    ratio = check_fraction("ratio", ratio, meaning="keep this fraction of each layer's singular values")
    # ratio_rank treats near-integers as integers: 0.3 * 10 is 3.0000000000000004 in floats
    return {name: min(ratio_rank(len(sigma), ratio), len(sigma)) for name, sigma in _check_spectra(spectra).items()}


def energy_ranks(spectra: Mapping[str, torch.Tensor], energy: float) -> dict[str, int]:
    """Per layer, the smallest ``r`` whose ``sum(sigma[:r]^2)`` reaches ``energy`` of the total.

    An all-zero layer keeps rank 1.

    Example:
        >>> import torch
        >>> energy_ranks({"fc": torch.tensor([3.0, 2.0, 1.0, 0.0])}, 0.9)
        {'fc': 2}
    """
    energy = check_fraction("energy", energy, meaning="keep this fraction of each layer's sum of sigma^2")
    # energy_rank gives a relative slack of 1e-12, so energy=1.0 and exact fractions survive rounding
    return {name: energy_rank(sigma, energy) for name, sigma in _check_spectra(spectra).items()}


def global_thresholds(
    spectra: Mapping[str, torch.Tensor], costs: Mapping[str, LayerCost] | None = None
) -> list[float]:
    """Every distinct value of ``sigma / sigma_max`` over all layers, ascending.

    Each is a threshold for ``global_ranks`` that gives a different cut, so a
    sweep over this list visits every distinct global cut. With ``costs``, only
    cuts that give a different compressed model are kept (a rank above a
    layer's break-even rank leaves it dense, so many thresholds build the same
    model): the smallest threshold of each such cut, and none where every layer
    stays dense.

    Example:
        >>> import torch
        >>> spectra = {"a": torch.tensor([4.0, 2.0, 1.0]), "b": torch.tensor([4.0, 1.0])}
        >>> global_thresholds(spectra)
        [0.25, 0.5, 1.0]
        >>> global_thresholds(spectra, {"a": LayerCost(3, 12), "b": LayerCost(2, 2)})  # "a" cut below rank 3
        [0.5, 1.0]
    """
    spectra = _check_spectra(spectra)
    values = torch.unique(torch.cat([_normalised(s) for s in spectra.values()]))  # ascending
    if costs is None:
        return values.tolist()
    _check_costs(spectra, costs)
    keep = torch.zeros(len(values), dtype=torch.bool)
    previous = None
    cuts = []
    for name, sigma in spectra.items():
        ascending = _normalised(sigma).flip(0)
        kept = len(sigma) - torch.searchsorted(ascending, values, side="left")  # (T,) values >= each threshold
        kept = kept.clamp_min(1)
        cuts.append(torch.where(kept <= costs[name].break_even, kept, torch.zeros_like(kept)))  # 0: dense
    cuts = torch.stack(cuts, 1)  # (T, layers)
    for i in range(len(values)):
        if cuts[i].any() and (previous is None or not torch.equal(cuts[i], previous)):
            keep[i] = True
        previous = cuts[i]
    return values[keep].tolist()


def global_ranks(spectra: Mapping[str, torch.Tensor], threshold: float) -> dict[str, int]:
    """Keep every singular value with ``sigma / sigma_max(layer) >= threshold`` (at least 1 per layer).

    ``threshold=0`` keeps everything; ``threshold=1`` keeps only the values
    equal to their layer's largest.

    Example:
        >>> import torch
        >>> global_ranks({"a": torch.tensor([2.0, 1.0]), "b": torch.tensor([4.0, 1.0])}, 0.5)
        {'a': 2, 'b': 1}
    """
    threshold = _check_threshold(threshold)
    return {
        name: max(1, int((_normalised(sigma) >= threshold).sum()))
        for name, sigma in _check_spectra(spectra).items()
    }


def round_ranks(ranks: Mapping[str, int], full: Mapping[str, int], multiple: int) -> dict[str, int]:
    """Every rank rounded up to a multiple of ``multiple`` (what vectorised kernels run best), or to its layer's
    full rank ``full[name]`` (``min(m, n)``: dense) where that comes first; a layer keeps at least the rank it
    was given. Names not in ``full`` are left as they are. (Budgets allocate in multiples instead:
    ``budget_ranks(..., step=)``, so that rounding cannot break them.)

    Example:
        >>> round_ranks({"a": 13, "b": 3, "c": 40}, {"a": 64, "b": 64, "c": 40}, 8)
        {'a': 16, 'b': 8, 'c': 40}
    """
    multiple = check_int("multiple", multiple, meaning="ranks in multiples of it; 1: any rank")
    return {name: min(-(-r // multiple) * multiple, full[name]) if name in full else r for name, r in ranks.items()}


def budget_ranks(
    spectra: Mapping[str, torch.Tensor],
    costs: Mapping[str, LayerCost],
    target: float,
    *,
    metric: Metric = "params",
    fixed: float = 0,
    step: int = 1,
) -> dict[str, int]:
    """Ranks with the least loss whose total cost is at most ``target`` of the original.

    The original total is ``fixed + sum of dense layer costs`` in ``metric``
    ("params" or "macs"); ``fixed`` is everything the cut does not change
    (biases, norms, layers that are not compressible) in the same unit.

    Loss is the relative energy each layer drops, ``sum(sigma[r:]^2) /
    sum(sigma^2)`` (its squared relative Frobenius error), summed over layers.
    It does not depend on the scale of each layer's weight, like ``global_ranks``.

    Greedy: start every layer at its cheapest form (rank ``step``, or dense where
    even that does not pay), then repeatedly take the move with the largest
    loss removed per unit of cost that still fits: ``step`` more ranks (1 by
    default; 8 or 16 keep every rank a multiple of it), or a jump to the dense
    layer (it keeps every value, at cost ``m*n - r*(m+n)``).
    Moves that remove nothing are never taken, and a move that no longer
    fits is dropped. Ties go to the layer name, then the lower rank. So the
    result meets the target, and no layer can take its next move without
    exceeding it (unless that move would gain nothing).

    What the greedy guarantees: when every layer's gain per unit cost never
    rises along its moves (falling spectra where the jump to dense is never the
    better deal), each prefix of the greedy's moves has the least loss of all
    allocations costing no more than it (Lagrangian argument), so the result
    is within one move's gain of the optimum at the target. Otherwise it is a
    heuristic (the exact problem is a knapsack); on real networks each move is
    a small part of the budget and the gap is small.

    Returns ranks between 1 and ``min(m, n)``; a dense layer gets ``min(m, n)``.
    Raises BudgetOutOfReach (a LoritaError) when even the cheapest form of every layer misses the
    target, saying the smallest fraction that can be reached.

    Example:
        >>> import torch
        >>> spectra = {"a": torch.tensor([4.0, 2.0, 1.0, 0.5]), "b": torch.tensor([1.0, 1.0, 1.0, 1.0])}
        >>> costs = {"a": LayerCost(4, 100), "b": LayerCost(4, 100)}
        >>> budget_ranks(spectra, costs, target=0.6)   # the flat layer needs the rank
        {'a': 1, 'b': 3}
    """
    spectra = _check_spectra(spectra)
    target = check_fraction("target", target, meaning="the kept fraction of the original params or MACs")
    step = check_int("step", step, meaning="ranks move in steps of it")
    _check_costs(spectra, costs)
    check_choice("metric", metric, METRICS)
    check_number("fixed", fixed, minimum=0, meaning="cost outside the compressible layers")

    original = fixed + sum(costs[name].dense(metric) for name in spectra)
    budget = target * original

    names = sorted(spectra)
    rank: dict[str, int] = {}
    dense: dict[str, bool] = {}
    gains: dict[str, list[float]] = {}
    tails: dict[str, list[float]] = {}
    for name in names:
        c = costs[name]
        sq = (spectra[name] * spectra[name]).tolist()
        total = sum(sq)
        gains[name] = [v / total if total > 0 else 0.0 for v in sq]
        tail, acc = [0.0] * (len(sq) + 1), 0.0
        for i in range(len(sq) - 1, -1, -1):
            acc += gains[name][i]
            tail[i] = acc  # tail[r] = relative energy dropped at rank r
        tails[name] = tail
        rank[name] = step
        dense[name] = c.break_even < step
    spent = fixed + sum(costs[n].dense(metric) if dense[n] else costs[n].at_rank(step, metric) for n in names)
    if spent > budget:
        cheapest = spent / original
        raise BudgetOutOfReach(
            f"target={target:g} of the original {metric} cannot be met: even rank {step} in every "
            f"compressible layer keeps {cheapest:.4f} of it ({spent:g} of {original:g}); "
            f"pass a target >= {math.ceil(cheapest * 1e4) / 1e4:g}"
        )

    heap: list[tuple[float, str, int, int, int]] = []

    def push_moves(name: str) -> None:
        c, r = costs[name], rank[name]
        m, n = c.out_features, c.in_features
        scale = c.positions if metric == "macs" else 1
        if dense[name]:
            return
        if r + step <= min(c.break_even, len(gains[name])):  # step more ranks: step * (m + n)
            gain, cost = sum(gains[name][r:r + step]), scale * step * (m + n)
            if gain > 0:
                heapq.heappush(heap, (-gain / cost, name, r, 0, cost))
        gain, cost = tails[name][r], scale * (m * n - r * (m + n))  # jump to the dense layer
        if gain > 0:
            heapq.heappush(heap, (-gain / cost, name, r, 1, cost))

    for name in names:
        push_moves(name)
    while heap:
        _, name, r, kind, cost = heapq.heappop(heap)
        if dense[name] or rank[name] != r or spent + cost > budget:
            continue  # stale, or does not fit (it never will: the budget left only shrinks)
        spent += cost
        if kind == 0:
            rank[name] = r + step
        else:
            dense[name] = True
        push_moves(name)
    return {name: costs[name].max_rank if dense[name] else rank[name] for name in names}


def measured_ranks(
    spectra: Mapping[str, torch.Tensor],
    options: Mapping[str, Sequence[tuple[int, float]]],
    budget: float,
    *,
    fixed: float = 0.0,
) -> dict[str, int]:
    """Ranks with the least loss whose total measured cost, ``fixed + sum of each layer's cost``, is at most ``budget``.

    ``options[name]`` lists the forms a layer can take as ``(rank, cost)`` pairs, any order,
    for instance the measured seconds of its thin pair at a few ranks; the dense layer is the
    pair ``(min(m, n), its cost)``, and a layer must have it (it keeps every value). Costs
    are what the caller measured, so they need not grow with the rank: a form that keeps
    less for no less cost than another (a lower rank that is not cheaper) is never chosen,
    and a pair no cheaper than dense neither. Loss is as in ``budget_ranks``: the relative
    energy each layer drops, summed. ``fixed`` (any sign) is the cost outside the layers.

    Greedy: every layer starts at its cheapest form; then, repeatedly, the move with the
    most energy kept per unit of cost that still fits. The moves from a form are to the
    next larger form of the same layer and jumps of 2, 4, 8, ... forms and to the last
    (dense), so a layer can cross a stretch where one more rank costs much and keeps little
    (the moves stay O(forms x log forms)). Raises LoritaError naming the cheapest total
    when even that exceeds ``budget``.

    Example:
        >>> import torch
        >>> spectra = {"a": torch.tensor([4.0, 2.0, 1.0, 1.0]), "b": torch.tensor([2.0, 2.0])}
        >>> options = {"a": [(1, 1.0), (2, 2.0), (4, 5.0)], "b": [(1, 3.0), (2, 2.5)]}  # b's pair: slower
        >>> measured_ranks(spectra, options, budget=5.0)
        {'a': 2, 'b': 2}
    """
    spectra = _check_spectra(spectra)
    check_number("budget", budget, meaning="the most the chosen forms may cost, in the options' unit")
    check_number("fixed", fixed, meaning="cost outside the layers")
    unknown, missing = sorted(set(options) - set(spectra)), sorted(set(spectra) - set(options))
    if unknown or missing:
        raise LoritaError(f"options must name exactly the layers of spectra: unknown {unknown}, missing {missing}")
    chains: dict[str, list[tuple[int, float]]] = {}
    tails: dict[str, list[float]] = {}
    for name, sigma in spectra.items():
        k = len(sigma)
        pairs = sorted((check_rank(f"rank of an option for {name!r}", r, k, k), check_number(
            f"cost of {name!r} at rank {r}", c)) for r, c in options[name])
        if not pairs or pairs[-1][0] != k:
            raise LoritaError(f"options for {name!r} must include the dense layer, rank {k} (min(m, n)), with its cost")
        chain, best = [], math.inf
        for r, c in reversed(pairs):  # from dense down: keep a form only if it is cheaper than every larger one
            if c < best:
                chain.append((r, c))
                best = c
        chains[name] = chain[::-1]  # ascending rank and cost
        sq = (sigma * sigma).tolist()
        total = sum(sq)
        tail, acc = [0.0] * (k + 1), 0.0
        for i in range(k - 1, -1, -1):
            acc += sq[i] / total if total > 0 else 0.0
            tail[i] = acc
        tails[name] = tail
    names = sorted(chains)
    at = {name: 0 for name in names}  # index into the chain
    spent = fixed + sum(chains[n][0][1] for n in names)
    if spent > budget:
        raise BudgetOutOfReach(f"budget {budget:g} cannot be met: the cheapest form of every layer costs {spent:g} "
                               "in all")
    heap: list[tuple[float, str, int, int]] = []

    def push_moves(name: str) -> None:
        chain, i = chains[name], at[name]
        r0, c0 = chain[i]
        last, step, targets = len(chain) - 1, 1, set()
        while i + step < last:
            targets.add(i + step)
            step *= 2
        if i < last:
            targets.add(last)
        for j in sorted(targets):
            r1, c1 = chain[j]
            gain = tails[name][r0] - tails[name][r1]
            if gain > 0:
                heapq.heappush(heap, (-gain / (c1 - c0), name, i, j))

    for name in names:
        push_moves(name)
    while heap:
        _, name, i, j = heapq.heappop(heap)
        if at[name] != i:
            continue  # stale
        cost = chains[name][j][1] - chains[name][i][1]
        if spent + cost > budget:
            continue  # does not fit now, nor later: what is left of the budget only shrinks
        spent += cost
        at[name] = j
        push_moves(name)
    return {name: chains[name][at[name]][0] for name in names}


# ----------------------------------------------------------------------------
# accuracy search (a pure driver: the caller evaluates)


@dataclass(frozen=True)
class SearchStep:
    """One evaluation of the search: the threshold, its accuracy, and whether it stayed within the drop."""

    threshold: float
    accuracy: float
    within: bool


@dataclass(frozen=True)
class SearchResult:
    """Outcome of ``search_threshold``.

    ``threshold`` is the largest evaluated threshold found within the drop, or
    0.0 (no cut) with ``found=False`` when none was; ``accuracy`` is its
    accuracy (the baseline when nothing was found). ``steps`` lists every
    evaluation in order, ``evaluations == len(steps)``.
    """

    threshold: float
    accuracy: float
    found: bool
    baseline: float
    floor: float
    steps: tuple[SearchStep, ...]

    @property
    def evaluations(self) -> int:
        """Number of calls made to the evaluation function."""
        return len(self.steps)


def search_threshold(
    evaluate_at: Callable[[float], float],
    *,
    baseline: float,
    max_drop: float,
    thresholds: Sequence[float],
    max_evals: int = 12,
) -> SearchResult:
    """Bisect for the largest threshold whose accuracy is at least ``baseline - max_drop``.

    ``evaluate_at(threshold)`` returns an accuracy (percent); it is assumed to
    fall roughly monotonically as the threshold grows. The search bisects on
    the index of the sorted, de-duplicated ``thresholds`` (for instance
    ``global_thresholds(spectra)``), calls ``evaluate_at`` at most
    ``max_evals`` times and never twice for one threshold. It only ever
    returns a threshold that was evaluated and found within the drop; if none
    was, it returns 0.0 (no cut) with ``found=False``.

    Example:
        >>> acc = lambda t: 90.0 - 10 * t       # a toy accuracy curve
        >>> res = search_threshold(acc, baseline=90.0, max_drop=1.0, thresholds=[i / 100 for i in range(101)])
        >>> res.threshold, res.evaluations
        (0.1, 7)
    """
    check_int("max_evals", max_evals, meaning="about log2(len(thresholds)) + 1 is enough")
    check_number("max_drop", max_drop, minimum=0, meaning="accuracy points")
    check_number("baseline", baseline, meaning="an accuracy")
    candidates = sorted({_check_threshold(float(t)) for t in thresholds})
    if not candidates:
        raise LoritaError("thresholds is empty; pass the candidates to search, e.g. global_thresholds(spectra)")

    floor = baseline - max_drop
    steps: list[SearchStep] = []
    lo, hi = -1, len(candidates)  # candidates[lo] is within (lo=-1: no cut), candidates[hi] is not
    while hi - lo > 1 and len(steps) < max_evals:
        mid = (lo + hi) // 2
        accuracy = float(evaluate_at(candidates[mid]))
        within = accuracy >= floor  # NaN counts as not within
        steps.append(SearchStep(candidates[mid], accuracy, within))
        if within:
            lo = mid
        else:
            hi = mid
    good = [s for s in steps if s.within]
    if not good:
        return SearchResult(0.0, float(baseline), False, float(baseline), floor, tuple(steps))
    best = max(good, key=lambda s: s.threshold)
    return SearchResult(best.threshold, best.accuracy, True, float(baseline), floor, tuple(steps))


# ----------------------------------------------------------------------------
# validation


def _check_threshold(value: float) -> float:
    return check_fraction("threshold", value, low_open=False,
                          meaning="cut sigma / sigma_max below it; 0 keeps everything")


def _check_spectra(spectra: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validate and return float64 copies, in the caller's order."""
    if not isinstance(spectra, Mapping) or not spectra:
        raise LoritaError(
            "spectra is empty: pass a dict of layer name -> singular values, e.g. lorita.spectrum(model); "
            "a model with no compressible layer has nothing to select"
        )
    out = {}
    for name, sigma in spectra.items():
        s = torch.as_tensor(sigma).detach().to("cpu", torch.float64)
        if s.dim() != 1 or s.numel() == 0:
            raise LoritaError(f"spectrum of {name!r} must be a non-empty 1-D tensor of singular values, got shape {tuple(s.shape)}")
        if not torch.isfinite(s).all():
            raise LoritaError(f"spectrum of {name!r} contains NaN or inf; check the layer's weights (the SVD of a NaN weight is NaN)")
        if (s < 0).any():
            raise LoritaError(f"spectrum of {name!r} has negative values; singular values are >= 0 (use torch.linalg.svdvals)")
        if (s[1:] > s[:-1] * (1 + 1e-6)).any():
            raise LoritaError(f"spectrum of {name!r} is not in descending order; sort it with s.sort(descending=True).values")
        out[name] = s
    return out


def _check_costs(spectra: Mapping[str, torch.Tensor], costs: Mapping[str, LayerCost]) -> None:
    unknown = sorted(set(costs) - set(spectra))
    missing = sorted(set(spectra) - set(costs))
    if unknown:
        raise LoritaError(f"costs has unknown layers {unknown}; layers in spectra: {sorted(spectra)}")
    if missing:
        raise LoritaError(f"costs is missing layers {missing}; pass a LayerCost for every layer in spectra")
    for name, c in costs.items():
        if not isinstance(c, LayerCost):
            raise LoritaError(f"costs[{name!r}] must be a LayerCost, got {type(c).__name__}")
        if len(spectra[name]) > c.max_rank:
            raise LoritaError(
                f"spectrum of {name!r} has {len(spectra[name])} values but its LayerCost is "
                f"{c.out_features} x {c.in_features} (at most {c.max_rank}); pass matching costs"
            )


def _normalised(sigma: torch.Tensor) -> torch.Tensor:
    """``sigma / sigma_max`` in float64; an all-zero layer gives zeros."""
    top = sigma.max()
    return sigma / top if top > 0 else torch.zeros_like(sigma)
