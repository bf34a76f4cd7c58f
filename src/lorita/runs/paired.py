"""LoRITa against the best alternative over seeds: the statistics that can decide (docs/METHOD.md section 5).

Input: the per-seed runs of an experiment (``results.json``'s ``runs``), each with its view-(b)
target and its columns; a column has ``lorita`` (bool), ``chosen`` (its smallest model
reaching the target, chosen on validation: ``params_kept``, ``val_acc``, ``test_acc``; None
when none does) and ``cuts`` (every model measured, with the requested ``size``).

* Size at the target. Per seed: the pre-registered LoRITa column's params kept, the best
  alternative's (the non-LoRITa column keeping the fewest params at the target, a tie going to
  the better validation figure, then to the first label in alphabetical order:
  ``smallest_at_target``; when none reaches it, the uncut plain model, 100%), and the log of
  their ratio. Over seeds: the geometric mean ratio and its paired t 95% interval
  (``lorita.stats``). A seed where the pre-registered column misses the target has no ratio;
  the geometric mean is then None: a miss is a failure of the column, not a seed to leave out.
* Accuracy at fixed sizes. Per size and seed: the pre-registered column's test accuracy
  minus the alternative's whose validation accuracy at that size is highest (chosen on
  validation, like everything else; a tie goes to the cut keeping fewer params, then to the
  first label in alphabetical order); the mean difference and its paired t interval.
"""

from __future__ import annotations

from typing import Sequence

from lorita.choice import best_at_size, smallest_at_target
from lorita.errors import LoritaError
from lorita.metric import ACCURACY, Metric
from lorita.stats import geometric_mean_ratio, mean_interval

UNCUT = "plain (uncut)"  # the alternative when no alternative column reaches the target: the whole model


def _column(run: dict, label: str) -> dict:
    columns = run.get("columns") or {}
    if label not in columns:
        raise LoritaError(f"seed {run.get('seed')}: no column {label!r}; the columns are {sorted(columns)}")
    return columns[label]


def seed_ratio(run: dict, pre_registered: str, metric: Metric = ACCURACY) -> dict:
    """One seed's sizes at the target: the pre-registered column's, the best alternative's, their log ratio.

    Example:
        >>> run = {"seed": 0, "target_val_acc": 90.0, "columns": {
        ...     "LoRITa N=2 + FT": {"lorita": True, "chosen": {"params_kept": 0.05}},
        ...     "plain + SVD + FT": {"lorita": False, "chosen": {"params_kept": 0.10}},
        ...     "Torch-Pruning + FT": {"lorita": False, "chosen": None}}}
        >>> r = seed_ratio(run, "LoRITa N=2 + FT")
        >>> r["best_alternative"], r["best_alternative_params_kept"], round(r["ratio"], 3)
        ('plain + SVD + FT', 0.1, 0.5)
    """
    ours = _column(run, pre_registered)
    if not ours.get("lorita"):
        raise LoritaError(f"the pre-registered column {pre_registered!r} is not a LoRITa column")
    best = smallest_at_target(run["columns"], lorita=False, metric=metric)  # a tie: on ``metric``'s validation figure
    label, theirs = (UNCUT, 1.0) if best is None else (best[0], best[1]["params_kept"])
    kept = None if ours.get("chosen") is None else ours["chosen"]["params_kept"]
    ratio = None if kept is None else kept / theirs
    return {"seed": run.get("seed"), metric.target: run.get(metric.target), "lorita_params_kept": kept,
            "best_alternative": label, "best_alternative_params_kept": theirs, "ratio": ratio}


def ratio_over_seeds(runs: Sequence[dict], pre_registered: str, level: float = 0.95,
                     metric: Metric = ACCURACY) -> dict:
    """Per-seed ratios and, when every seed has one, their geometric mean with its paired t interval.

    Returns ``{"pre_registered", "per_seed", "n", "geomean_ratio", "ci95", "log_sd", "t", "missed",
    "reached_only"}`` (``missed``: the seeds where the column misses the target; ``ci95`` None with one seed).
    ``reached_only``: where some seeds miss and at least two reach the target, ``{"seeds", "geomean_ratio",
    "ci95"}`` over those that reach it (a sensitivity figure that can only flatter the column: the plan's
    figure stays "no geometric mean"); None otherwise.

    Example:
        >>> runs = [{"seed": s, "target_val_acc": 90.0, "columns": {
        ...     "L": {"lorita": True, "chosen": {"params_kept": k}},
        ...     "A": {"lorita": False, "chosen": {"params_kept": 0.2}}}} for s, k in enumerate([0.1, 0.1, 0.1])]
        >>> out = ratio_over_seeds(runs, "L")
        >>> round(out["geomean_ratio"], 6), [round(x, 6) for x in out["ci95"]]
        (0.5, [0.5, 0.5])
    """
    if not runs:
        raise LoritaError("no runs to compare: pass one per seed (results.json's 'runs')")
    per_seed = [seed_ratio(run, pre_registered, metric) for run in runs]
    missed = [r["seed"] for r in per_seed if r["ratio"] is None]
    out = {"pre_registered": pre_registered, "per_seed": per_seed, "n": len(per_seed), "missed": missed,
           "geomean_ratio": None, "ci95": None, "log_sd": None, "t": None, "reached_only": None}
    reached = [r for r in per_seed if r["ratio"] is not None]
    if not missed:
        stats = geometric_mean_ratio([r["ratio"] for r in per_seed], level)
        out.update(geomean_ratio=stats["geomean"], ci95=stats["ci"], log_sd=stats["log_sd"], t=stats["t"])
    elif len(reached) >= 2:
        stats = geometric_mean_ratio([r["ratio"] for r in reached], level)
        out["reached_only"] = {"seeds": [r["seed"] for r in reached], "geomean_ratio": stats["geomean"],
                               "ci95": stats["ci"]}
    return out


def _at_size(column: dict, size: float) -> dict | None:
    for cut in column.get("cuts") or []:
        if cut is not None and abs(cut["size"] - size) < 1e-9:
            if "val_acc" not in cut or "test_acc" not in cut:
                raise LoritaError("fixed-size differences compare accuracies; these cuts have none (an experiment "
                                  "judged by loss?)")
            return cut
    return None


def fixed_size_differences(runs: Sequence[dict], pre_registered: str, sizes: Sequence[float],
                           level: float = 0.95) -> list[dict]:
    """Per size: the paired test-accuracy differences (pre-registered column minus the alternative best on
    validation at that size), their mean and t interval. Seeds where either side has no cut at that size are
    left out of that size (``n`` says how many remain).

    Example:
        >>> def col(lorita, accs):
        ...     return {"lorita": lorita, "cuts": [{"size": 0.1, "val_acc": v, "test_acc": t} for v, t in accs]}
        >>> runs = [{"seed": s, "columns": {"L": col(True, [(90, 89.0 + d)]), "A": col(False, [(89, 88.0)]),
        ...          "B": col(False, [(88, 89.5)])}} for s, d in enumerate([0.5, 1.0, 1.5])]
        >>> row = fixed_size_differences(runs, "L", [0.1])[0]
        >>> row["alternatives"], row["mean"], round(row["ci"][0], 3)
        (['A', 'A', 'A'], 2.0, 0.758)
    """
    rows = []
    for size in sizes:
        diffs, picked, seeds = [], [], []
        for run in runs:
            ours = _at_size(_column(run, pre_registered), size)
            found = best_at_size({label: cut for label, c in run["columns"].items() if not c.get("lorita")
                                  for cut in [_at_size(c, size)] if cut is not None})
            if ours is None or found is None:
                continue
            label, best = found
            diffs.append(ours["test_acc"] - best["test_acc"])
            picked.append(label)
            seeds.append(run.get("seed"))
        row = {"size": size, "seeds": seeds, "alternatives": picked, "differences": diffs}
        row.update(mean_interval(diffs, level) if diffs else {"n": 0, "mean": None, "sd": None, "ci": None, "t": None})
        rows.append(row)
    return rows
