"""How should a cut share its ranks out among the layers? The two rules of ``lorita.cutspec.Budget``, measured.

For each trained run folder (``lorita train``, or a training inside a ``lorita experiment`` folder), cuts the
merged model to each size with plain and whitened SVD, each under both rules, and prints validation and test
accuracy without fine-tuning:

* ``threshold``: the paper's rule, one global threshold on ``sigma / sigma_max`` (the weakest that fits);
* ``loss``: the least-loss allocation (``lorita.ranks.budget_ranks``): per layer the relative energy dropped,
  summed, the least for the size.

BatchNorm statistics are re-estimated after each cut on ``--batchnorm`` shuffled training batches of the run's
own batch size and seed, and whitened SVD calibrates on ``--calibrate`` batches of them, as ``lorita
experiment`` does (``batchnorm``, ``calibrate``). Nothing is chosen: every cut tried is printed, with the ranks
per layer.

Usage:
    python benchmarks/cut_rules.py runs/converged/vgg_small-e12/base/seed0/depth1 \\
        runs/converged/vgg_small-e12/base/seed0/depth2 --sizes 0.1 0.2 0.3 0.5 --json /tmp/cut_rules.json

Example:
    >>> rows = measure_rules(_demo_run(), sizes=[0.5], calibrate=2, batchnorm=2)
    >>> sorted({(r["whitened"], r["rule"]) for r in rows})
    [(False, 'loss'), (False, 'threshold'), (True, 'loss'), (True, 'threshold')]
    >>> all(r["params_kept"] <= 0.5 for r in rows)
    True
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import lorita
from lorita.atomic import atomic_write_text
from lorita.batchnorm import recalibrate_batchnorm
from lorita.cutspec import RULES, Budget
from lorita.errors import LoritaError
from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, data_of, train_run
from lorita.runs.alternatives import training_batches
from lorita.runs.compare import svd_cutter
from lorita.runs.config import train_config_of
from lorita.runs.train import example_input
from lorita.spectra import Spectra
from lorita.train import evaluate


def measure_rules(run: str | Path, sizes: list[float], calibrate: int = 16, batchnorm: int = 200) -> list[dict]:
    """One row per (plain or whitened SVD, rule, size) of ``run``'s merged model: params kept (of the merged
    model), validation and test accuracy of the cut after BatchNorm re-estimation, the ranks per layer."""
    config = train_config_of(run)
    data = data_of(run)
    batch, seed = config.train.batch_size, config.train.seed
    model = lorita.merge(lorita.load(Path(run) / "model.lorita")).eval()
    example = example_input(data)
    full = lorita.profile(model, example).params
    rows = []
    for whitened in (False, True):
        calibration = (x for x, _ in data.train.batches(batch, seed=seed, epoch=0)) if whitened else None
        spectra = Spectra(model, example, batches=calibration)
        for rule in RULES:
            cutter = svd_cutter(spectra, Budget(params=1.0, rule=rule, calibrate=calibrate if whitened else 0))
            for size in sizes:
                made = cutter(size)
                if made is None:
                    continue
                small, detail = made
                recalibrate_batchnorm(small, training_batches(data, batch, seed)(), max_batches=batchnorm)
                small.eval()
                rows.append({"run": str(run), "whitened": whitened, "rule": rule, "size": size,
                             "params_kept": lorita.profile(small, example).params / full,
                             "val_acc": evaluate(small, data.val)[0], "test_acc": evaluate(small, data.test)[0],
                             "ranks": detail["ranks"]})
    return rows


def _demo_run() -> Path:
    """A one-epoch FCN on the digits (for the example)."""
    config = RunConfig(ModelSpec("fcn", {"width": 16, "hidden_layers": 1},
                                 {"num_classes": 10, "in_channels": 1, "image_size": 8}),
                       DataSpec("digits"), ComposeSpec(depth=1), lorita.TrainConfig(epochs=1, device="cpu"))
    folder = Path(tempfile.mkdtemp()) / "run"
    train_run(folder, config, config.dataset.load(), progress=False)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="trained run folders (each with model.lorita and config.json)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5],
                        help="fractions of the merged model's params")
    parser.add_argument("--calibrate", type=int, default=16, help="training batches whitened SVD calibrates on")
    parser.add_argument("--batchnorm", type=int, default=200,
                        help="training batches BatchNorm statistics are re-estimated on after each cut")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bad = [size for size in args.sizes if not 0 < size <= 1]
    if bad or args.calibrate < 1 or args.batchnorm < 0:
        raise SystemExit(f"--sizes must be fractions in (0, 1] (got {bad or args.sizes}), --calibrate at least 1 "
                         f"(got {args.calibrate}), --batchnorm at least 0 (got {args.batchnorm})")
    try:
        _print_rows(args)
    except LoritaError as err:  # a folder that is not a finished training run, data that cannot be read
        raise SystemExit(f"cut_rules: {err}") from None


def _print_rows(args) -> None:
    """Every run's rows as a Markdown table, then (``--json``) all of them in one file."""
    rows = []
    print("| run | SVD | rule | size | params kept | val acc % | test acc % | ranks |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        for row in measure_rules(run, args.sizes, args.calibrate, args.batchnorm):
            rows.append(row)
            ranks = ", ".join(f"{k} {v}" for k, v in row["ranks"].items())
            print(f"| {run} | {'whitened' if row['whitened'] else 'plain'} | {row['rule']} | {row['size']:g} | "
                  f"{100 * row['params_kept']:.1f}% | {row['val_acc']:.2f} | {row['test_acc']:.2f} | {ranks} |",
                  flush=True)
    if args.json is not None:  # written whole or not at all
        atomic_write_text(args.json, json.dumps({"calibrate": args.calibrate, "batchnorm": args.batchnorm,
                                                 "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
