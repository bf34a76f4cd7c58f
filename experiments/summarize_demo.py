"""Print one line per demo/experiment run folder: uncompressed accuracy and params kept at the budget.

Usage: python experiments/summarize_demo.py runs/tune/*/results.json
Every figure here is read from results.json, whose cuts were chosen on validation data.
"""

import json
import sys


def line(path: str) -> str:
    r = json.load(open(path))
    cells = []
    for depth, info in r["depths"].items():
        b = info["views"]["b"]
        kept = "-" if b is None else f"{100 * b['params_kept']:.1f}%"
        cells.append(f"d{depth}: val {info['uncompressed']['val_acc']:.2f} kept(b) {kept}")
    ratio = r["headline"]["params_kept_ratio_vs_plain"]
    ratio = "-" if ratio is None else f"{ratio:.2f}"
    return f"{path:40s} ratio {ratio}  " + " | ".join(cells)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(line(p))
