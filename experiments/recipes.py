"""The table of every recipe setting tried (one ``lorita demo`` / ``lorita experiment`` results.json each).

Usage: python experiments/recipes.py runs/recipes/*/results.json

For each setting: its target (1 point below its own plain model's validation accuracy) and, per
column, the smallest model reaching it (chosen on validation data) with its test accuracy. Then
each column's best setting, chosen by that validation-based size alone, and the headline over
those choices. Test accuracy is only reported, never used to choose.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lorita.choice import smallest_at_target


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def load(paths: list[str]) -> dict[str, dict]:
    return {Path(p).parent.name: json.loads(Path(p).read_text()) for p in paths}


def table(runs: dict[str, dict]) -> list[str]:
    """Markdown: one row per setting, one column per method (params kept / test acc at the target).

    Example:
        >>> run = {"runs": [{"target_val_acc": 90.0, "columns": {"plain + SVD": {"lorita": False,
        ...        "chosen": {"params_kept": 0.3, "test_acc": 89.5}}}}], "headline": {"ratio": None}}
        >>> table({"wd": run})[2]
        '| wd | 90.00 | 30.0% / 89.50 | - |'
    """
    labels = list(next(iter(runs.values()))["runs"][0]["columns"])
    lines = ["| setting | target (val acc %) | " + " | ".join(labels) + " | ratio (its own headline) |",
             "|---|---|" + "---|" * len(labels) + "---|"]
    for name, results in runs.items():
        run = results["runs"][0]
        cells = []
        for label in labels:
            pick = run["columns"].get(label, {}).get("chosen")
            cells.append("not reached" if pick is None else f"{_pct(pick['params_kept'])} / {pick['test_acc']:.2f}")
        ratio = results["headline"]["ratio"]
        lines.append(f"| {name} | {run['target_val_acc']:.2f} | " + " | ".join(cells)
                     + f" | {'-' if ratio is None else f'{ratio:.2f}'} |")
    return lines


def best_per_column(runs: dict[str, dict]) -> dict[str, tuple[str, dict]]:
    """Each column's setting with the smallest model at its target (validation only)."""
    best: dict[str, tuple[str, dict]] = {}
    for name, results in runs.items():
        for label, column in results["runs"][0]["columns"].items():
            pick = column["chosen"]
            if pick is not None and (label not in best or pick["params_kept"] < best[label][1]["params_kept"]):
                best[label] = (name, {**pick, "lorita": column["lorita"]})
    return best


def main(paths: list[str]) -> int:
    try:
        runs = load(paths)
    except (OSError, json.JSONDecodeError) as err:
        print(f"error: cannot read the results ({err}); give the results.json of each setting's run", file=sys.stderr)
        return 1
    lines = table(runs)
    best = best_per_column(runs)
    lines += ["", "| column | best setting (validation) | params kept | test acc (%) |", "|---|---|---|---|"]
    for label, (name, pick) in best.items():
        lines.append(f"| {label} | {name} | {_pct(pick['params_kept'])} | {pick['test_acc']:.2f} |")
    columns = {label: {"lorita": pick["lorita"], "chosen": pick} for label, (_, pick) in best.items()}
    ours, theirs = smallest_at_target(columns, lorita=True), smallest_at_target(columns, lorita=False)
    if ours and theirs:
        ratio = ours[1]["params_kept"] / theirs[1]["params_kept"]
        lines += ["", f"Each column at its best setting: {ours[0]} ({best[ours[0]][0]}) against {theirs[0]} "
                      f"({best[theirs[0]][0]}): ratio {ratio:.2f}. (Each setting's target is 1 point below its own "
                      "plain model.)"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+",
                        help="results.json of one lorita demo / experiment run per setting (its folder names it)")
    sys.exit(main(parser.parse_args().results))
