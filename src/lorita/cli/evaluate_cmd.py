"""``lorita evaluate``: accuracy and size of a run's model on its validation and test data."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = """example:
  lorita evaluate runs/fcn-d3
  lorita evaluate runs/fcn-d3-e95 --write     # also writes evaluation.json into the run
"""


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="validation/test accuracy, params and FLOPs of a run's model",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder (train or compress)")
    p.add_argument("--write", action="store_true", help="write evaluation.json into the run folder")
    p.add_argument("--layers", action="store_true", help="print the per-layer profile table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorita.runs import evaluate_run, write_json

    result, counts = evaluate_run(args.run)
    print(f"{args.run}: val {result['val_acc']:.2f}% (loss {result['val_loss']:.4f}), "
          f"test {result['test_acc']:.2f}% (loss {result['test_loss']:.4f})")
    print(f"params {counts.params:,}  MACs/example {counts.macs:,}  FLOPs/example {counts.flops:,} (= 2 x MACs)")
    if args.layers:
        print(counts.table())
    if args.write:
        write_json(Path(args.run) / "evaluation.json", result)
    return 0
