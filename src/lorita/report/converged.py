"""``docs/converged/summary.json``: the converged study's headline per model and epoch budget.

The file's schema, exactly (no other keys; ``null`` where the pre-registered column misses the
target on a seed, and then for the geometric mean and its interval too):

    {"studies": [{"model": str, "dataset": str, "epochs": int, "exposure": float, "plateau": bool,
                  "pre_registered": str, "alternatives": [str, ...], "small_model_baseline": bool,
                  "per_seed": [{"seed": int, "target_val_acc": float,
                                "lorita_params_kept": float | null,
                                "best_alternative": str, "best_alternative_params_kept": float}],
                  "geomean_ratio": float | null, "ci95": [float, float] | null}]}

Params kept are fractions of the original architecture. ``exposure`` is the pre-registered
LoRITa column's penalty exposure (``lorita.train.exposure``); ``plateau`` whether the plain
model passed the plateau test (``lorita.train.plateau``) on every seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from lorita.atomic import atomic_write_text
from lorita.checks import is_int, is_number
from lorita.choice import smallest_at_target
from lorita.errors import LoritaError
from lorita.report.plots import figure, save_figure

STUDY_KEYS = ("model", "dataset", "epochs", "exposure", "plateau", "pre_registered", "alternatives",
              "small_model_baseline", "per_seed", "geomean_ratio", "ci95")
SEED_KEYS = ("seed", "target_val_acc", "lorita_params_kept", "best_alternative", "best_alternative_params_kept")


def study_entry(*, model: str, dataset: str, epochs: int, exposure: float, plateau: bool, comparison: dict,
                alternatives: Sequence[str], small_model_baseline: bool) -> dict:
    """One study of the summary from ``lorita.runs.paired.ratio_over_seeds``'s ``comparison``, checked.

    Example:
        >>> comparison = {"pre_registered": "LoRITa N=2 + FT", "geomean_ratio": 0.5, "ci95": [0.4, 0.6],
        ...               "per_seed": [{"seed": 0, "target_val_acc": 90.1, "lorita_params_kept": 0.05,
        ...                             "best_alternative": "plain + SVD + FT", "best_alternative_params_kept": 0.1,
        ...                             "ratio": 0.5}]}
        >>> entry = study_entry(model="fcn", dataset="fashion-mnist", epochs=60, exposure=12.7, plateau=True,
        ...                     comparison=comparison, alternatives=["plain + SVD + FT"], small_model_baseline=True)
        >>> list(entry) == list(STUDY_KEYS), list(entry["per_seed"][0]) == list(SEED_KEYS)
        (True, True)
    """
    entry = {"model": model, "dataset": dataset, "epochs": epochs, "exposure": exposure, "plateau": plateau,
             "pre_registered": comparison["pre_registered"], "alternatives": list(alternatives),
             "small_model_baseline": small_model_baseline,
             "per_seed": [{k: r[k] for k in SEED_KEYS} for r in comparison["per_seed"]],
             "geomean_ratio": comparison["geomean_ratio"], "ci95": comparison["ci95"]}
    check_study(entry)
    return entry


def _fraction(value, where: str, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not is_number(value) or not 0 < value <= 1:
        raise LoritaError(f"{where} must be a fraction of the original params in (0, 1]"
                          f"{' or null' if nullable else ''}, got {value!r}")


def check_study(entry: dict) -> None:
    """Raise LoritaError unless ``entry`` has exactly the schema's keys and types.

    Example:
        >>> check_study({"model": "fcn"})
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: study fcn: keys must be exactly ['model', 'dataset', 'epochs', 'exposure', 'plateau', 'pre_registered', 'alternatives', 'small_model_baseline', 'per_seed', 'geomean_ratio', 'ci95']; missing ['alternatives', 'ci95', 'dataset', 'epochs', 'exposure', 'geomean_ratio', 'per_seed', 'plateau', 'pre_registered', 'small_model_baseline'], extra []
    """
    if not isinstance(entry, dict):
        raise LoritaError(f"a study must be an object with the keys {list(STUDY_KEYS)}, got {type(entry).__name__}")
    name = f"study {entry.get('model')}" + (f" ({entry['epochs']} epochs)" if "epochs" in entry else "")
    if set(entry) != set(STUDY_KEYS):
        keys = set(entry)
        raise LoritaError(f"{name}: keys must be exactly {list(STUDY_KEYS)}; missing {sorted(set(STUDY_KEYS) - keys)}, "
                          f"extra {sorted(keys - set(STUDY_KEYS))}")
    for key in ("model", "dataset", "pre_registered"):
        if not isinstance(entry[key], str) or not entry[key]:
            raise LoritaError(f"{name}: {key} must be a non-empty string, got {entry[key]!r}")
    if not is_int(entry["epochs"]) or entry["epochs"] < 1:
        raise LoritaError(f"{name}: epochs must be an integer >= 1, got {entry['epochs']!r}")
    if not is_number(entry["exposure"]) or entry["exposure"] < 0:
        raise LoritaError(f"{name}: exposure must be a number >= 0, got {entry['exposure']!r}")
    for key in ("plateau", "small_model_baseline"):
        if not isinstance(entry[key], bool):
            raise LoritaError(f"{name}: {key} must be true or false, got {entry[key]!r}")
    if not isinstance(entry["alternatives"], list) or not all(isinstance(a, str) for a in entry["alternatives"]):
        raise LoritaError(f"{name}: alternatives must be a list of column names, got {entry['alternatives']!r}")
    if not isinstance(entry["per_seed"], list) or not entry["per_seed"]:
        raise LoritaError(f"{name}: per_seed must be a non-empty list, one entry per seed")
    for row in entry["per_seed"]:
        _check_seed(row, name)
    ratio, ci = entry["geomean_ratio"], entry["ci95"]
    if ratio is not None and (not is_number(ratio) or ratio <= 0):
        raise LoritaError(f"{name}: geomean_ratio must be a number > 0 or null, got {ratio!r}")
    if ci is not None and (not isinstance(ci, list) or len(ci) != 2 or not all(is_number(x) for x in ci)
                           or not ci[0] <= ci[1]):
        raise LoritaError(f"{name}: ci95 must be [low, high] with low <= high, or null; got {ci!r}")
    if ratio is None and ci is not None:
        raise LoritaError(f"{name}: ci95 without a geomean_ratio")


def _check_seed(row: dict, name: str) -> None:
    if not isinstance(row, dict) or set(row) != set(SEED_KEYS):
        raise LoritaError(f"{name}: each per_seed entry must have exactly the keys {list(SEED_KEYS)}, got {row!r}")
    where = f"{name}, seed {row['seed']}"
    if not is_int(row["seed"]) or row["seed"] < 0:
        raise LoritaError(f"{name}: seed must be an integer >= 0, got {row['seed']!r}")
    if not is_number(row["target_val_acc"]):
        raise LoritaError(f"{where}: target_val_acc must be a number, got {row['target_val_acc']!r}")
    _fraction(row["lorita_params_kept"], f"{where}: lorita_params_kept", nullable=True)
    _fraction(row["best_alternative_params_kept"], f"{where}: best_alternative_params_kept")
    if not isinstance(row["best_alternative"], str) or not row["best_alternative"]:
        raise LoritaError(f"{where}: best_alternative must be a column name, got {row['best_alternative']!r}")


def write_summary(path: str | Path, studies: Sequence[dict]) -> dict:
    """Check every study and write ``{"studies": [...]}`` to ``path`` atomically; return what was written.

    Example:
        >>> write_summary("/nonexistent/summary.json", [])
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: a summary needs at least one study
    """
    if not studies:
        raise LoritaError("a summary needs at least one study")
    for entry in studies:
        check_study(entry)
    summary = {"studies": list(studies)}
    text = json.dumps(summary, indent=1, allow_nan=False)
    atomic_write_text(path, text + "\n")
    return summary


def pooled_plateau(plateaus: Sequence[dict]) -> bool:
    """Whether every seed's plain model passed the plateau test (``lorita.train.plateau.plateau_test`` results).

    Example:
        >>> pooled_plateau([{"plateau": True}, {"plateau": False}])
        False
    """
    if not plateaus:
        raise LoritaError("no plateau tests given (one per seed's plain model)")
    return all(p.get("plateau") is True for p in plateaus)


def paired_lines(paired: dict) -> list[str]:
    """The pre-registered column against the best alternative over seeds, as Markdown lines: the per-seed sizes at
    the target, the geometric mean ratio with its paired t 95% interval, the paired test-accuracy differences at
    the fixed sizes and the first seed's K-sizes table, from ``paired``: ``{"pre_registered", "ratio_over_seeds"}``
    (``lorita.runs.paired.ratio_over_seeds``) and, for accuracy, ``"fixed_size_differences"`` and
    ``"many_sizes"``: ``[{"seed", "rows"}]`` (``lorita.runs.many_sizes``), as an experiment's results.json holds it.

    Example:
        >>> comparison = {"per_seed": [{"seed": 0, "target_val_acc": 90.0, "lorita_params_kept": 0.05,
        ...     "best_alternative": "small dense", "best_alternative_params_kept": 0.1, "ratio": 0.5}],
        ...     "geomean_ratio": 0.5, "ci95": None, "missed": []}
        >>> paired_lines({"pre_registered": "LoRITa N=2 + FT", "ratio_over_seeds": comparison})[2]
        '| 0 | 90.00 | 5.0% | small dense | 10.0% | 0.500 |'
    """
    label, comparison = paired["pre_registered"], paired["ratio_over_seeds"]
    loss = any("target_val_loss" in row for row in comparison["per_seed"])  # a run judged by validation loss
    lines = [f"| seed | target ({'val loss' if loss else 'val %'}) | {label}: params kept | best alternative | "
             "its params kept | ratio |", "|---|---|---|---|---|---|"]
    for row in comparison["per_seed"]:
        ours = "missed" if row["lorita_params_kept"] is None else f"{100 * row['lorita_params_kept']:.1f}%"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        target = row.get("target_val_loss" if loss else "target_val_acc")
        target = "-" if target is None else f"{target:.4f}" if loss else f"{target:.2f}"
        lines.append(f"| {row['seed']} | {target} | {ours} | {row['best_alternative']} | "
                     f"{100 * row['best_alternative_params_kept']:.1f}% | {ratio} |")
    if comparison["geomean_ratio"] is not None:
        ci = comparison["ci95"]
        span = "no interval (one seed)" if ci is None else f"paired t 95% interval [{ci[0]:.3f}, {ci[1]:.3f}]"
        lines += ["", f"Geometric mean ratio {comparison['geomean_ratio']:.3f}, {span}."]
    else:
        lines += ["", f"No geometric mean: {label} misses the target on seeds {comparison['missed']}."]
        reached = comparison.get("reached_only")  # results.json from before it was recorded have none
        if reached:
            low, high = reached["ci95"]
            lines[-1] += (f" The seeds that reach it alone (leaving a miss out can only flatter {label}), "
                          f"{' '.join(map(str, reached['seeds']))}: geometric mean {reached['geomean_ratio']:.3f}, "
                          f"paired t 95% interval [{low:.3f}, {high:.3f}].")
    if paired.get("fixed_size_differences"):
        lines += ["", f"| params kept | {label} minus the alternative best on validation: mean test-accuracy "
                      "difference (points) | 95% interval | seeds |", "|---|---|---|---|"]
        for row in paired["fixed_size_differences"]:
            ci = "-" if row["ci"] is None else f"[{row['ci'][0]:+.2f}, {row['ci'][1]:+.2f}]"
            mean = "-" if row["mean"] is None else f"{row['mean']:+.2f}"
            lines.append(f"| {100 * row['size']:g}% | {mean} | {ci} | {row['n']} |")
    if paired.get("many_sizes"):
        first = paired["many_sizes"][0]
        rows = [{**row, "at": {float(k): v for k, v in row["at"].items()}} for row in first["rows"]]
        sizes = sorted({size for row in rows for size in row["at"]})
        lines += ["", f"K sizes from one training (seed {first['seed']}):", "", many_sizes_markdown(rows, sizes)]
    return lines


def plot_budget_curve(studies: Sequence[dict], path: str | Path, bars: dict[str, float] | None = None) -> Path:
    """The study's central figure: per model, the geometric mean ratio (pre-registered column / best alternative)
    against the epoch budget, with its 95% interval as error bars and each point's exposure written beside it (above
    right of it for the first model, below left for the second, and so on);
    the ratio 1 and each model's bar (``bars``: model -> bar ratio) as horizontal lines, and each seed's own ratio
    (``per_seed``) as a small dot. A budget whose mean is missing (the column missed the target on a seed) is
    marked above every ratio, not left out; one run on a single seed so far shows its seed's dot only (no mean, no
    interval), and the means are joined only between neighbouring budgets that both have one. Both axes are
    logarithmic. Returns the PNG's path.

    Example:
        >>> import tempfile
        >>> entry = {"model": "fcn", "epochs": 15, "exposure": 3.0, "geomean_ratio": 0.8, "ci95": [0.6, 1.1]}
        >>> plot_budget_curve([entry, {**entry, "epochs": 60, "geomean_ratio": None, "ci95": None}],
        ...                   Path(tempfile.mkdtemp()) / "curve.png", {"fcn": 0.5}).suffix
        '.png'
    """
    if not studies:
        raise LoritaError("no studies to plot: pass the summary's studies (one per model and epoch budget)")
    fig = figure(6.4, 4.2)
    ax = fig.subplots()
    one_seed = {id(s): [r["lorita_params_kept"] / r["best_alternative_params_kept"] for r in s.get("per_seed", [])
                        if r["lorita_params_kept"] is not None] for s in studies}
    top = 1.1 * max([1.0] + [s["geomean_ratio"] for s in studies if s["geomean_ratio"] is not None]
                    + [s["ci95"][1] for s in studies if s.get("ci95")] + [r for rs in one_seed.values() for r in rs])
    for k, model in enumerate(sorted({s["model"] for s in studies})):
        rows = sorted((s for s in studies if s["model"] == model), key=lambda s: s["epochs"])
        done = [s for s in rows if s["geomean_ratio"] is not None and s.get("ci95")]  # one seed: its dot alone
        color = f"C{k}"
        if done:
            ratios = [s["geomean_ratio"] for s in done]
            low = [r - s["ci95"][0] for r, s in zip(ratios, done)]
            high = [s["ci95"][1] - r for r, s in zip(ratios, done)]
            ax.errorbar([s["epochs"] for s in done], ratios, yerr=[low, high], marker="o", capsize=4, color=color,
                        linestyle="none", label=f"{model} (geometric mean, 95% interval)")
            with_mean = {id(s) for s in done}
            for a, b in zip(rows, rows[1:]):  # a line only between neighbouring budgets that both have a mean
                if id(a) in with_mean and id(b) in with_mean:
                    ax.plot([a["epochs"], b["epochs"]], [a["geomean_ratio"], b["geomean_ratio"]], color=color)
            for s, r in zip(done, ratios):
                first = k % 2 == 0  # models alternate above right and below left: labels of near budgets collide
                ax.annotate(f"exposure {s['exposure']:.1f}", (s["epochs"], r), textcoords="offset points",
                            xytext=(6, 6) if first else (-6, -12), ha="left" if first else "right", fontsize=7,
                            color=color)
        seeds = [(s["epochs"], r) for s in rows for r in one_seed[id(s)]]
        if seeds:  # each seed's own ratio, so a budget with a miss still shows what the other seeds gave
            ax.plot([e for e, _ in seeds], [r for _, r in seeds], ".", color=color, alpha=0.6,
                    label=f"{model}: one seed's ratio")
        missed = [s["epochs"] for s in rows if s["geomean_ratio"] is None]
        if missed:  # above every ratio: a miss is worse than any ratio, never drawn where a good one would be
            ax.plot(missed, [top] * len(missed), "x", color=color, markersize=9, clip_on=False,
                    label=f"{model}: missed the target on a seed (no ratio)")
        if bars and model in bars:
            ax.axhline(bars[model], color=color, linestyle=":", linewidth=1, label=f"{model}: the bar ({bars[model]:g})")
    ax.axhline(1.0, color="gray", linewidth=1)
    ax.set_xscale("log")
    budgets = sorted({s["epochs"] for s in studies})
    ax.minorticks_off()
    ax.set_xticks(budgets, [str(e) for e in budgets])
    ax.set_xlim(budgets[0] / 2.2, budgets[-1] * 1.4)  # room left of the first budget for a label written leftwards
    ax.set_xlabel("epoch budget (every column, equal total epochs)")
    ax.set_ylabel("params kept: pre-registered LoRITa / best alternative")
    ax.set_yscale("log")  # ratios: a geometric mean and its interval are symmetric here, 0.5 as far below 1 as 2 above
    bottom = min([1.0] + list((bars or {}).values()) + [s["ci95"][0] for s in studies if s.get("ci95")]
                 + [r for rs in one_seed.values() for r in rs]) / 1.25
    ax.set_ylim(bottom, top * 1.15)
    ticks = [t for t in (0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20, 50) if bottom <= t <= top * 1.15]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Does LoRITa pay once trained long enough?")
    fig.tight_layout()
    return save_figure(fig, path)


def columns_markdown(run: dict, label: str) -> str:
    """One seed's columns at its target (an experiment's ``runs`` entry) as a Markdown table: epochs trained +
    fine-tuned, params kept, validation and test accuracy of each column's smallest cut that reaches the target;
    ``label`` (the pre-registered column) and the best alternative in bold.

    Example:
        >>> run = {"target_val_acc": 90.0, "columns": {
        ...     "A": {"lorita": False, "epochs": 15, "finetune_epochs": 2,
        ...           "chosen": {"params_kept": 0.1, "val_acc": 90.1, "test_acc": 89.5}},
        ...     "L": {"lorita": True, "epochs": 15, "finetune_epochs": 2, "chosen": None}}}
        >>> print(columns_markdown(run, "L").splitlines()[2])
        | **A** (best alternative) | 13 + 2 | **10.0%** | 90.10 | 89.50 |
    """
    columns = run["columns"]
    reached = {name: c["chosen"] for name, c in columns.items() if c.get("chosen")}
    best = (smallest_at_target(columns, lorita=False) or (None,))[0]
    lines = [f"| column (target: {run['target_val_acc']:.2f}% validation) | epochs | params kept | val % | test % |",
             "| --- | --- | --- | --- | --- |"]
    for name, column in columns.items():
        shown = f"**{name}**" + (" (best alternative)" if name == best else " (named before the runs)"
                                 if name == label else "") if name in (best, label) else name
        total, tuned = column.get("epochs"), column.get("finetune_epochs") or 0  # absent in runs before they were
        epochs = "-" if total is None else f"{total - tuned} + {tuned}"  # recorded
        chosen = reached.get(name)
        if chosen is None:
            lines.append(f"| {shown} | {epochs} | {'**missed**' if name == label else 'not reached'} | - | - |")
            continue
        kept = f"{100 * chosen['params_kept']:.1f}%"
        val, test = (f"{chosen[k]:.2f}" if is_number(chosen.get(k)) else "-" for k in ("val_acc", "test_acc"))
        lines.append(f"| {shown} | {epochs} | {f'**{kept}**' if name in (best, label) else kept} | {val} | {test} |")
    return "\n".join(lines)


def many_sizes_markdown(rows: Sequence[dict], sizes: Sequence[float]) -> str:
    """The rows of :func:`many_sizes` as a Markdown table (test accuracy at each size, then seconds).

    Example:
        >>> rows = [{"label": "A", "at": {0.1: {"test_acc": 89.0}, 0.2: None}, "seconds": 12.0,
        ...          "train_seconds": 10.0, "cut_seconds": 2.0, "finetune_epochs": 0}]
        >>> print(many_sizes_markdown(rows, [0.1, 0.2]).splitlines()[2])
        | A | 0 | 89.00 | - | 10 | 2 | 12 |
    """
    head = ["column", "FT epochs", *[f"test acc at {100 * s:g}%" for s in sizes],
            "training s", "cuts s", f"total s for all {len(sizes)}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        accs = ["-" if row["at"].get(s) is None else f"{row['at'][s]['test_acc']:.2f}" for s in sizes]
        lines.append("| " + " | ".join([row["label"], str(row["finetune_epochs"]), *accs,
                                        f"{row['train_seconds']:.0f}", f"{row['cut_seconds']:.0f}",
                                        f"{row['seconds']:.0f}"]) + " |")
    return "\n".join(lines)


def budgets_markdown(rows: Sequence[dict], label: str, steps: Sequence[dict] = ()) -> str:
    """The rows of ``lorita.runs.budgets.seeds_across_budgets`` as a Markdown table: per seed and budget, the
    ratio of ``label`` to the best alternative ("missed" where the column misses the target, "-" where the seed
    did not run that budget), the start-up gap before any cut ("gap": points of validation accuracy the uncut
    factored model is behind the plain one) and the plain model's gain over its last fifth ("plain gain"; the
    plateau test passes under 0.1), after a sentence that says so; then, per step of ``steps``
    (``lorita.runs.budgets.budget_steps``), a line with the plain model's gain from one budget to the next and the
    gap's change, mean and paired t interval over the seeds run at both.

    Example:
        >>> rows = [{"seed": 0, "at": {12: {"ratio": 1.2, "gap": 0.8, "plain_gain": 0.4},
        ...                            24: {"ratio": None, "gap": 1.1, "plain_gain": 0.05}}}]
        >>> print(budgets_markdown(rows, "L").splitlines()[4])
        | 0 | 1.200 | 0.80 | +0.40 | missed | 1.10 | +0.05 |
    """
    budgets = sorted({epochs for row in rows for epochs in row["at"]})
    head = ["seed"] + [f"{e} epochs: {what}" for e in budgets for what in ("ratio", "gap", "plain gain")]
    lines = [f"Each seed across budgets: ratio, {label}'s params kept at the target over the best alternative's "
             "(missed: it reaches the target at no size); gap, the points of validation accuracy the uncut factored "
             "model trained the whole budget is behind the plain one; plain gain, what the plain model's best "
             "validation accuracy gained over its last fifth of epochs (a plateau: under 0.1).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["seed"])]
        for epochs in budgets:
            at = row["at"].get(epochs)
            if at is None:
                cells += ["-", "-", "-"]
                continue
            gain = "-" if at["plain_gain"] is None else f"{at['plain_gain']:+.2f}"
            cells += ["missed" if at["ratio"] is None else f"{at['ratio']:.3f}", f"{at['gap']:.2f}", gain]
        lines.append("| " + " | ".join(cells) + " |")
    if steps:
        lines.append("")
    for step in steps:
        plain, gap = step["plain"], step["gap"]
        n = len(step["seeds"])
        lines.append(f"- From {step['from']} to {step['to']} epochs ({n} seed{'s' * (n != 1)}): the plain model's "
                     f"best validation accuracy {_mean_ci(plain)} points, the gap before any cut {_mean_ci(gap)} "
                     + (f"(mean, paired t {step.get('level', 0.95):.0%} interval over the seeds run at both)."
                        if n > 1 else "(one seed: no interval)."))
    return "\n".join(lines)


def _mean_ci(summary: dict) -> str:
    ci = summary.get("ci")
    return f"{summary['mean']:+.2f}" + ("" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]")
