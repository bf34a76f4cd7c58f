"""``lorita evaluate``: accuracy and size of a run's model on its validation and test data."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import lorita
from lorita.cli.common import dataset_of, write_json
from lorita.errors import LoritaError

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


def evaluate_run(run_dir: str | Path) -> tuple[dict, "lorita.Profile"]:
    """Evaluate ``run_dir/model.lorita`` on the run's own validation and test splits."""
    from lorita.train import evaluate

    run_dir = Path(run_dir)
    if not (run_dir / "model.lorita").is_file():
        raise LoritaError(f"{run_dir} has no model.lorita: is it a finished 'lorita train' or 'lorita compress' run?")
    data = dataset_of(run_dir)
    model = lorita.load(run_dir / "model.lorita").eval()
    example = torch.zeros(1, data.in_channels, data.image_size, data.image_size)
    counts = lorita.profile(lorita.merge(model), example)
    val_acc, val_loss = evaluate(model, data.val)
    test_acc, test_loss = evaluate(model, data.test)
    return {"val_acc": val_acc, "val_loss": val_loss, "test_acc": test_acc, "test_loss": test_loss,
            "params": counts.params, "macs": counts.macs, "flops": counts.flops}, counts


def run(args: argparse.Namespace) -> int:
    result, counts = evaluate_run(args.run)
    print(f"{args.run}: val {result['val_acc']:.2f}% (loss {result['val_loss']:.4f}), "
          f"test {result['test_acc']:.2f}% (loss {result['test_loss']:.4f})")
    print(f"params {counts.params:,}  MACs/example {counts.macs:,}  FLOPs/example {counts.flops:,} (= 2 x MACs)")
    if args.layers:
        print(counts.table())
    if args.write:
        write_json(Path(args.run) / "evaluation.json", result)
    return 0
