"""A compact table from one or more ``benchmarks/peers.py`` runs (e.g. several seeds).

For each model, budget and method: test accuracy after fine-tuning and of the cut alone
(no fine-tuning), one value per run (``/``-separated, in the order given) and their mean,
and MACs kept. Rows a run lacks show ``-``; means are over the runs that have the row. Files given the
same label (``--names``, or the same seed by default) are one run split over several
invocations (e.g. extra ``--budgets`` with ``--reuse-runs``): their rows are merged.

    python benchmarks/peers_summary.py runs/peers/results.json runs/peers-fcn-seed1/results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METHOD_ORDER = ("lorita-d2", "lorita-d3", "svd", "torch-pruning")
LABELS = {"lorita-d2": "LoRITa N=2", "lorita-d3": "LoRITa N=3", "svd": "SVD (plain)",
          "torch-pruning": "Torch-Pruning"}


def _cell(values: list[float | None]) -> str:
    shown = [v for v in values if v is not None]
    if not shown:
        return "-"
    runs = " / ".join("-" if v is None else f"{v:.2f}" for v in values)
    return runs if len(values) == 1 else f"{runs} (mean {sum(shown) / len(shown):.2f})"


def summary(results: list[dict], names: list[str]) -> str:
    """Markdown: one row per (model, budget, method) over every run in ``results``.

    Example:
        >>> row = {"method": "svd", "budget": 0.5, "test_acc": 90.0, "test_acc_cut": 80.0, "macs_kept": 0.5}
        >>> run = {"models": {"fcn": {"rows": [row], "uncompressed": {}, "recipe": {"seed": 0}}}}
        >>> print(summary([run], ["seed 0"]).splitlines()[2])
        | fcn | 0.5 | SVD (plain) | 50.0% | 90.00 | 80.00 |
    """
    lines = [f"| model | MACs budget | method | MACs kept | test acc after FT (%) [{', '.join(names)}] "
             f"| test acc of the cut, no FT (%) |", "|---|---|---|---|---|---|"]
    models = sorted({m for r in results for m in r["models"]})
    for model in models:
        rows = {}
        for i, run in enumerate(results):
            for row in run["models"].get(model, {}).get("rows", []):
                rows.setdefault((row["budget"], row["method"]), [None] * len(results))[i] = row
        for budget, method in sorted(rows, key=lambda k: (-k[0], METHOD_ORDER.index(k[1])
                                                          if k[1] in METHOD_ORDER else 99)):
            found = rows[(budget, method)]
            kept = [r["macs_kept"] for r in found if r is not None]
            lines.append(f"| {model} | {budget:g} | {LABELS.get(method, method)} | {100 * max(kept):.1f}% "
                         f"| {_cell([r and r['test_acc'] for r in found])} "
                         f"| {_cell([r and r['test_acc_cut'] for r in found])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="results.json files written by benchmarks/peers.py")
    p.add_argument("--names", nargs="+", help="a label per file (default: 'seed N' from its recipe)")
    args = p.parse_args(argv)
    results = []
    for path in args.results:
        try:
            run = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"error: cannot read {path}: {err}", file=sys.stderr)
            return 1
        if not isinstance(run, dict) or not isinstance(run.get("models"), dict) or \
                not all("rows" in info and "recipe" in info for info in run["models"].values()):
            print(f"error: {path} is not a results.json written by benchmarks/peers.py", file=sys.stderr)
            return 1
        results.append(run)
    if args.names and len(args.names) != len(results):
        print(f"error: --names takes one label per results file ({len(results)}), got {len(args.names)}",
              file=sys.stderr)
        return 2
    labels = args.names or [f"seed {next(iter(r['models'].values()))['recipe'].get('seed', '?')}" for r in results]
    merged: dict[str, dict] = {}
    for label, run in zip(labels, results):
        into = merged.setdefault(label, {"models": {}})
        for model, info in run["models"].items():
            into["models"].setdefault(model, {"rows": []})["rows"].extend(info["rows"])
    print(summary(list(merged.values()), list(merged)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
