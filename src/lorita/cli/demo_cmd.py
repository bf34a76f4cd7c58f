"""``lorita demo``: LoRITa against plain training on real data, compressed, with a report and plots.

Trains the FCN with depth 1 (plain baseline) and depths 2 and 3 (LoRITa) under one recipe,
sweeps the global cut of each on validation data, picks the smallest model within
``--max-drop`` points (METHOD.md section 5: view (b) against the plain model's accuracy,
view (a) against each model's own) and reports test accuracy for those cuts.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

import lorita
from lorita.cli.common import prepare_out, write_json
from lorita.cli.compress_cmd import compress_run
from lorita.cli.train_cmd import add_train_options, train_config_from, train_run
from lorita.sweep import as_dicts, smallest_within, sweep

EXAMPLE = """example:
  lorita demo                                # Fashion-MNIST, about 10 minutes on 2 CPU cores
  lorita demo --out runs/demo --epochs 30 --overwrite
  lorita demo --dataset digits --epochs 5 --width 64 --out runs/quick
"""

# The recipe tuned on validation data (docs/DEMO.md has the measurements behind it).
DEFAULTS = dict(epochs=12, batch_size=128, lr=0.05, weight_decay=5e-4, width=512, hidden_layers=3)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main job: LoRITa vs plain training, compressed, report + plots",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--dataset", default="fashion-mnist", help="default fashion-mnist (falls back to digits)")
    p.add_argument("--data-dir", help="folder with the dataset files")
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3], help="depths to train (1 = plain baseline)")
    p.add_argument("--width", type=int, default=DEFAULTS["width"], help="FCN hidden width")
    p.add_argument("--hidden-layers", type=int, default=DEFAULTS["hidden_layers"])
    p.add_argument("--init", choices=["default", "preserve", "balanced"], default="default")
    p.add_argument("--factor-side", choices=["input", "smaller"], default="input")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget in points (default 1)")
    p.add_argument("--points", type=int, default=40, help="cuts per sweep before refining (default 40)")
    add_train_options(p)
    p.set_defaults(epochs=DEFAULTS["epochs"], batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["lr"],
                   weight_decay=DEFAULTS["weight_decay"])
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _load_data(args):
    from lorita.data import DataNotFoundError, load_dataset

    try:
        return load_dataset(args.dataset, args.data_dir, seed=args.seed)
    except DataNotFoundError as err:
        if args.dataset != "fashion-mnist":
            raise
        print(f"note: Fashion-MNIST not found ({str(err).splitlines()[0]}); using scikit-learn's digits instead. "
              "Install it with: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return load_dataset("digits", seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from lorita.train import evaluate

    start = time.time()
    if 1 not in args.depths:
        from lorita.errors import LoritaError
        raise LoritaError("--depths must include 1: the plain baseline every comparison is made against")
    out = prepare_out(args.out, args.overwrite)
    data = _load_data(args)
    config = train_config_from(args)
    progress = not args.no_progress
    trained = {}
    for depth in sorted(set(args.depths)):
        print(f"[demo] training depth {depth} on {data.name} ({config.epochs} epochs)", file=sys.stderr)
        run_config = {
            "command": "train", "lorita_version": lorita.__version__,
            "model": {"name": "fcn", "num_classes": data.num_classes, "in_channels": data.in_channels,
                      "image_size": data.image_size,
                      "kwargs": {"width": args.width, "hidden_layers": args.hidden_layers}},
            "dataset": {"name": data.name, "data_dir": args.data_dir, "val_fraction": 0.1, "seed": args.seed},
            "compose": {"depth": depth, "init": args.init, "mode": "auto", "factor_side": args.factor_side,
                        "exclude": []},
            "train": config.to_dict(),
        }
        trained[depth] = train_run(out / f"depth{depth}", run_config, data, progress=progress)
    example = torch.zeros(1, data.in_channels, data.image_size, data.image_size)
    val = lambda m: evaluate(m, data.val)[0]
    test = lambda m: evaluate(m, data.test)[0]
    plain_target = trained[1]["val_acc"] - args.max_drop
    depths = {}
    for depth, res in trained.items():
        print(f"[demo] sweeping cuts of depth {depth}", file=sys.stderr)
        merged = lorita.merge(lorita.load(out / f"depth{depth}" / "model.lorita")).eval()
        own_target = res["val_acc"] - args.max_drop
        bar = _bar(progress, f"sweep depth {depth}")
        points = lorita_sweep(merged, example, val, test, args.points, [plain_target, own_target], bar)
        views = {}
        for view, target in (("b", plain_target), ("a", own_target)):
            chosen = smallest_within(points, target)
            views[view] = None if chosen is None else {**asdict(chosen), "target_val_acc": target}
        depths[depth] = {"uncompressed": res, "views": views, "sweep": as_dicts(points)}
    cuts = _save_cuts(out, depths, data, progress)
    results = _summarize(depths, args, data, time.time() - start)
    write_json(out / "results.json", results)
    from lorita.cli.demo_report import write_demo_report

    report = write_demo_report(out, results, cuts)
    print(report.read_text())
    print(f"[demo] done in {results['seconds']:.0f} s: {report}", file=sys.stderr)
    return 0


def _bar(enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, unit="cut", leave=False)


def lorita_sweep(model, example, val, test, points, targets, bar):
    try:
        return sweep(model, example, val, test, points=points, refine_targets=targets,
                     progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def _save_cuts(out: Path, depths: dict, data, progress: bool) -> list[Path]:
    """Each depth's view-(b) cut as a compress run folder (model, ranks, results)."""
    folders = []
    for depth, info in depths.items():
        chosen = info["views"]["b"]
        if chosen is None:
            continue
        folder = out / f"depth{depth}-cut"
        compress_run(out / f"depth{depth}", folder, "global", {"threshold": chosen["threshold"]},
                     progress=progress, data=data)
        folders.append(folder)
    return folders


def _summarize(depths: dict, args, data, seconds: float) -> dict:
    plain = depths[1]["views"]["b"]
    lorita_best = None
    for depth, info in depths.items():
        chosen = info["views"]["b"]
        if depth > 1 and chosen is not None and (lorita_best is None or chosen["params"] < lorita_best[1]["params"]):
            lorita_best = (depth, chosen)
    ratio = None
    if plain is not None and lorita_best is not None:
        ratio = lorita_best[1]["params_kept"] / plain["params_kept"]
    return {
        "command": "demo", "dataset": data.name, "max_drop": args.max_drop,
        "recipe": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                   "weight_decay": args.weight_decay, "schedule": args.schedule, "optimizer": args.optimizer,
                   "width": args.width, "hidden_layers": args.hidden_layers, "init": args.init,
                   "factor_side": args.factor_side, "seed": args.seed},
        "depths": {str(d): info for d, info in depths.items()},
        "headline": {"best_lorita_depth": lorita_best[0] if lorita_best else None,
                     "params_kept_ratio_vs_plain": ratio,
                     "bar": "LoRITa keeps at most half the parameters the plain model keeps (view b)",
                     "bar_met": ratio is not None and ratio <= 0.5 and not math.isnan(ratio)},
        "seconds": seconds,
        "machine": _machine(),
    }


def _machine() -> str:
    import os
    import platform

    return f"{platform.machine()} {os.cpu_count()} CPU(s), torch {torch.__version__}, threads {torch.get_num_threads()}"
