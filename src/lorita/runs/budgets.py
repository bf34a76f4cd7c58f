"""The same seed across epoch budgets: does LoRITa's ratio fall, and does the accuracy its factored training gives
up before any cut close, as one seed trains longer? (docs/converged/PLAN.md, the epoch-budget curve.)

Input: per budget (epochs), the per-seed runs of an experiment (``results.json``'s ``runs``), each with its
columns (``lorita.runs.paired``), its plain model's plateau test (``plateau``) and the uncut models of each depth
(``depths``: ``{"1": {"uncompressed": {"val_acc", ...}}, "2": ...}``). Per seed and budget:

* ``ratio``: the pre-registered column's params kept over the best alternative's at the target
  (``lorita.runs.paired.seed_ratio``; None where the column misses the target);
* ``gap``: the start-up gap, the plain model's validation accuracy minus the depth-N model's, both uncut and
  trained the whole budget (points; positive: the factored model is behind);
* ``plain_gain``: what the plain model's best validation accuracy gained over the last fifth of its epochs (the
  plateau test's ``gain``; under 0.1 point is a plateau);
* ``plain_val``: the plain model's best validation accuracy (uncut, trained the whole budget).

Across budgets (``budget_steps``): from each budget to the next (the nearest larger one at least two seeds ran
as well, where there is one), per seed run at both, what the plain model's best validation accuracy gained and
how the gap moved, with the mean and paired t interval over those seeds. Under a
schedule that decays to zero within each budget (cosine), the last fifth of every run still gains while the lr
anneals, so the plateau test can fail at every budget; whether a longer budget still pays is what the plain
model's gain from one budget to the next shows.

Nothing is recomputed from models: every figure is read from the runs as they were recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lorita.errors import LoritaError
from lorita.runs.paired import seed_ratio
from lorita.stats import mean_interval


def _uncut_val_acc(run: dict, depth: int) -> float:
    depths = run.get("depths") or {}
    entry = depths.get(str(depth)) or depths.get(depth)
    if not entry or "uncompressed" not in entry:
        raise LoritaError(f"seed {run.get('seed')}: no uncut depth-{depth} model in the run (its depths: "
                          f"{sorted(map(str, depths))}); pass the depth of the pre-registered column")
    return float(entry["uncompressed"]["val_acc"])


def seed_at_budget(run: dict, pre_registered: str, depth: int = 2) -> dict:
    """One seed at one budget: ``{"ratio", "gap", "plain_gain", "plain_val"}`` (module docstring).

    Example:
        >>> run = {"seed": 0, "target_val_acc": 90.0, "plateau": {"plateau": False, "gain": 0.4},
        ...        "depths": {"1": {"uncompressed": {"val_acc": 91.0}}, "2": {"uncompressed": {"val_acc": 90.2}}},
        ...        "columns": {"L": {"lorita": True, "chosen": {"params_kept": 0.06}},
        ...                    "A": {"lorita": False, "chosen": {"params_kept": 0.05}}}}
        >>> {k: round(v, 3) for k, v in seed_at_budget(run, "L").items()}
        {'ratio': 1.2, 'gap': 0.8, 'plain_gain': 0.4, 'plain_val': 91.0}
    """
    gain = (run.get("plateau") or {}).get("gain")
    plain = _uncut_val_acc(run, 1)
    return {"ratio": seed_ratio(run, pre_registered)["ratio"], "gap": plain - _uncut_val_acc(run, depth),
            "plain_gain": None if gain is None else float(gain), "plain_val": plain}


def seeds_across_budgets(runs_by_budget: Mapping[int, Sequence[dict]], pre_registered: str,
                         depth: int = 2) -> list[dict]:
    """Each seed's figures at every budget it ran: ``[{"seed", "at": {epochs: seed_at_budget(...)}}]``, by seed;
    a budget a seed has not run is absent from its ``at``.

    Example:
        >>> def run(seed, kept, plain, factored):
        ...     return {"seed": seed, "target_val_acc": 90.0, "plateau": {"gain": 0.3},
        ...             "depths": {"1": {"uncompressed": {"val_acc": plain}},
        ...                        "2": {"uncompressed": {"val_acc": factored}}},
        ...             "columns": {"L": {"lorita": True, "chosen": kept and {"params_kept": kept}},
        ...                         "A": {"lorita": False, "chosen": {"params_kept": 0.1}}}}
        >>> rows = seeds_across_budgets({12: [run(0, 0.2, 91.0, 90.0), run(1, None, 91.0, 89.5)],
        ...                              24: [run(0, 0.1, 91.5, 91.0)]}, "L")
        >>> [(r["seed"], sorted(r["at"])) for r in rows], rows[0]["at"][24]["ratio"], rows[1]["at"][12]["ratio"]
        ([(0, [12, 24]), (1, [12])], 1.0, None)
    """
    if not runs_by_budget:
        raise LoritaError("no budgets given: pass {epochs: the runs of that budget}")
    seeds: dict[int, dict[int, dict]] = {}
    for epochs, runs in sorted(runs_by_budget.items()):
        for run in runs:
            at = seeds.setdefault(run["seed"], {})
            if epochs in at:
                raise LoritaError(f"seed {run['seed']} appears twice at {epochs} epochs")
            at[epochs] = seed_at_budget(run, pre_registered, depth)
    return [{"seed": seed, "at": at} for seed, at in sorted(seeds.items())]


def _next_budget(rows: Sequence[dict], low: int, budgets: Sequence[int]) -> int | None:
    """The budget a step from ``low`` goes to: the nearest larger one that at least two seeds ran as well as
    ``low`` (an interval needs two), else the nearest larger one any seed ran as well; None when there is none."""
    shared = [(high, sum(low in row["at"] and high in row["at"] for row in rows)) for high in budgets if high > low]
    return next((high for high, n in shared if n >= 2), next((high for high, n in shared if n >= 1), None))


def budget_steps(rows: Sequence[dict], level: float = 0.95) -> list[dict]:
    """From each budget to the next (``rows`` from ``seeds_across_budgets``), over the seeds run at both: the plain
    model's gain in best validation accuracy (``plain``) and the change of the gap before any cut (``gap``; negative:
    it closes), with the interval's ``level``, each ``{"differences": per seed, "mean", "ci": paired t interval or
    None, "t", ...}`` (``lorita.stats.mean_interval``). "The next" is the nearest larger budget that at least two
    seeds ran as well (so a budget only one seed has run is stepped over, not made the end of every step through
    it), else the nearest any seed ran as well; a budget no seed ran with a larger one has no step.

    Example:
        >>> rows = [{"seed": s, "at": {12: {"plain_val": 91.0, "gap": 0.8}, 24: {"plain_val": 91.0 + d, "gap": 0.5}}}
        ...         for s, d in ((0, 0.25), (1, 0.5))]
        >>> step = budget_steps(rows)[0]
        >>> step["from"], step["to"], step["seeds"], step["plain"]["mean"], round(step["gap"]["mean"], 2)
        (12, 24, [0, 1], 0.375, -0.3)
        >>> rows[0]["at"][18] = {"plain_val": 91.1, "gap": 0.6}  # one seed at 18 epochs: 12 -> 24 stays
        >>> [(s["from"], s["to"], s["seeds"]) for s in budget_steps(rows)]
        [(12, 24, [0, 1]), (18, 24, [0])]
    """
    budgets = sorted({epochs for row in rows for epochs in row["at"]})
    steps = []
    for low in budgets:
        high = _next_budget(rows, low, budgets)
        if high is None:
            continue
        both = [row for row in rows if low in row["at"] and high in row["at"]]
        step = {"from": low, "to": high, "seeds": [row["seed"] for row in both], "level": level}
        for name, key in (("plain", "plain_val"), ("gap", "gap")):
            differences = [row["at"][high][key] - row["at"][low][key] for row in both]
            step[name] = {"differences": differences, **mean_interval(differences, level)}
        steps.append(step)
    return steps
