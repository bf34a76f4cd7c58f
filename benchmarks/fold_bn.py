"""Does folding BatchNorm into the preceding layer before the cut help? Measured on trained runs.

For each run folder (written by `lorita train` / `lorita demo`), sweeps the global cut of the
merged model with and without BatchNorm folded in, and prints the smallest cut within
--max-drop points of the model's own validation accuracy (chosen and reported on
validation data only; test data is not used here).

Usage: python benchmarks/fold_bn.py runs/demo/depth1 runs/demo/depth2 [--points 30]
"""

import argparse
import json
import sys

import torch

import lorita
from lorita.errors import LoritaError
from lorita.runs import data_of
from lorita.fold import fold_batchnorm
from lorita.sweep import smallest_within, sweep
from lorita.train import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--max-drop", type=float, default=1.0)
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        data = data_of(run)
        example = torch.zeros(1, data.in_channels, data.image_size, data.image_size)
        val = lambda m: evaluate(m, data.val)[0]
        merged = lorita.merge(lorita.load(f"{run}/model.lorita")).eval()
        target = val(merged) - args.max_drop
        for label, model in (("as trained", merged), ("BatchNorm folded", fold_batchnorm(merged, example))):
            points = sweep(model, example, val, val, points=args.points, refine_targets=[target])
            chosen = smallest_within(points, target)
            rows.append({"run": run, "variant": label, "target_val_acc": target,
                         "params_kept": None if chosen is None else chosen.params_kept,
                         "macs_kept": None if chosen is None else chosen.macs_kept,
                         "val_acc": None if chosen is None else chosen.val})
            kept = "-" if chosen is None else f"{100 * chosen.params_kept:.1f}% params, {100 * chosen.macs_kept:.1f}% MACs"
            print(f"{run:28s} {label:17s} target {target:.2f}: {kept}", flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    try:
        main()
    except LoritaError as err:  # a run folder that is not there or not a training run
        sys.exit(f"fold_bn.py: error: {err}")
