"""Tables and one plot from ``benchmarks/lm_compress.py`` runs: perplexity against the share of params kept.

    python benchmarks/lm_report.py docs/lm/table.json --text licenses --plot docs/lm/ppl-vs-params.png

Prints a markdown table (one row per method and stage, one column per budget; each cell the
perplexity on ``--text`` and its ratio to the dense model's), a table of batch-1 speed against the
dense model of the same run (``--speed`` runs), and draws perplexity against the
params kept, one line per method and stage, log scale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STAGES = (("after_cut", "cut"), ("recovery_full", "+ recovery (full)"), ("recovery_lora", "+ recovery (LoRA)"))


def _ppl(row: dict, stage: str, text: str) -> float | None:
    value = row.get(stage)
    if value is None:
        return None
    ppl = value.get("ppl", value) if stage.startswith("recovery") else value
    return ppl.get(text)


def table(runs: list[dict], text: str) -> str:
    dense = runs[0]["dense"]["ppl"][text]
    rows = [row for run in runs for row in run["rows"]]
    budgets = sorted({row["budget"] for row in rows}, reverse=True)
    lines = [f"| method | stage | {' | '.join(f'{b:.0%} of params' for b in budgets)} |",
             "| --- | --- |" + " --- |" * len(budgets)]
    lines.append(f"| dense | | {' | '.join(f'{dense:.2f}' for _ in budgets)} |")
    methods = list(dict.fromkeys(row["method"] for row in rows))
    for method in methods:
        for stage, label in STAGES:
            cells = []
            for budget in budgets:
                found = [r for r in rows if r["method"] == method and r["budget"] == budget]
                value = _ppl(found[-1], stage, text) if found else None
                cells.append("" if value is None else f"{value:.2f} ({value / dense:.2f}x)")
            if any(cells):
                lines.append(f"| {method} | {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def speed_table(runs: list[dict]) -> str:
    """Batch-1 prefill and decode speed of each model timed (``--speed``), each against the dense model timed in the
    same run (the machine's load drifts between runs)."""
    lines = ["| run | method | params kept | prefill tok/s (x dense) | decode tok/s (x dense) |",
             "| --- | --- | --- | --- | --- |"]
    for number, run in enumerate(runs, 1):
        dense = run["dense"].get("speed")
        if dense is None:
            continue
        prefill, decode = dense["prefill_tokens_per_s"], dense["decode_tokens_per_s"]
        lines.append(f"| {number} | dense | 100% | {prefill:.0f} | {decode:.1f} |")
        for row in run["rows"]:
            timed = row.get("speed")
            if timed:
                p, d = timed["prefill_tokens_per_s"], timed["decode_tokens_per_s"]
                lines.append(f"| {number} | {row['method']} at {row['budget']:.0%} | {row['kept']:.1%} | "
                             f"{p:.0f} ({p / prefill:.2f}x) | {d:.1f} ({d / decode:.2f}x) |")
    return "\n".join(lines)


def plot(runs: list[dict], text: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = runs[0]["dense"]["ppl"][text]
    rows = [row for run in runs for row in run["rows"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(row["method"] for row in rows):
        for stage, label in STAGES:
            points = sorted((r["kept"], _ppl(r, stage, text)) for r in rows
                            if r["method"] == method and _ppl(r, stage, text) is not None)
            if points:
                ax.plot(*zip(*points), marker="o", label=f"{method} {label}")
    ax.axhline(dense, color="black", linestyle="--", label="dense")
    ax.axhline(1.5 * dense, color="grey", linestyle=":", label="1.5x dense")
    ax.set_yscale("log")
    ax.set_xlabel("share of the whole model's params kept")
    ax.set_ylabel(f"perplexity ({text})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--text", default="licenses")
    p.add_argument("--plot", type=Path)
    args = p.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.runs]
    print(table(runs, args.text))
    print()
    print(speed_table(runs))
    if args.plot:
        plot(runs, args.text, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
