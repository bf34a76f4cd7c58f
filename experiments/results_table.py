"""A Markdown table from ``lorita experiment`` / ``lorita demo`` runs: one row per run and depth.

Usage: python experiments/results_table.py runs/*/results.json
Every figure is read from results.json: cuts chosen on validation data, test accuracy
only reported, sizes against the original architecture, FLOPs = 2 x MACs. Results of other
commands (train, compress, evaluate runs) are skipped with a note on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _acc(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def rows(results: dict) -> list[str]:
    """Table rows for one run's results.json.

    Example:
        >>> view = {"params_kept": 0.5, "macs_kept": 0.4, "test_acc": 88.0}
        >>> depth = {"uncompressed": {"val_acc": 90.0, "test_acc": 89.5}, "views": {"a": view, "b": None}}
        >>> run = {"name": "x", "depths": {"2": depth}, "recipe": {"epochs": 3, "init": "auto"}, "seconds": 60}
        >>> rows(run)[0]
        '| x | 3 | 2 | 90.00 / 89.50 | - | - | - | 50.0% | 40.0% | 88.00 | 1.0 |'
    """
    recipe = results["recipe"]
    init = recipe.get("init", "default")  # runs made before init "auto" was the default say "default"
    scale = f", scale {recipe['init_scale']:g}" if recipe.get("init_scale") is not None else ""
    label = results["name"] if init == "auto" and not scale else f"{results['name']} (init {init}{scale})"
    out = []
    for depth, info in results["depths"].items():
        b, a = info["views"]["b"], info["views"]["a"]
        u = info["uncompressed"]
        out.append(f"| {label} | {results['recipe']['epochs']} | {depth} "
                   f"| {_acc(u['val_acc'])} / {_acc(u['test_acc'])} "
                   f"| {_pct(b and b['params_kept'])} | {_pct(b and b['macs_kept'])} | {_acc(b and b['test_acc'])} "
                   f"| {_pct(a and a['params_kept'])} | {_pct(a and a['macs_kept'])} | {_acc(a and a['test_acc'])} "
                   f"| {results['seconds'] / 60:.1f} |")
    return out


HEADER = ["| run | epochs | depth | uncompressed val / test acc (%) | view (b): params kept | FLOPs kept "
          "| test acc (%) | view (a): params kept | FLOPs kept | test acc (%) | minutes (whole run) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]


def main(paths: list[str]) -> int:
    lines = list(HEADER)
    for path in paths:
        try:
            results = json.loads(Path(path).read_text())
            if not isinstance(results, dict) or results.get("command") != "experiment" or "recipe" not in results:
                what = results.get("command", "unknown") if isinstance(results, dict) else "unknown"
                print(f"skipped {path}: the results of a {what} run, not of an experiment or demo", file=sys.stderr)
                continue
            lines += rows(results)
        except (OSError, json.JSONDecodeError, KeyError) as err:
            print(f"error: {path} is not a readable experiment results.json ({err!r})", file=sys.stderr)
            return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results.json files of lorita experiment / demo runs")
    sys.exit(main(parser.parse_args().results))
