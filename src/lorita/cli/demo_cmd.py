"""``lorita demo``: LoRITa against plain training on real data, compressed, with a report and plots.

Trains the FCN with depth 1 (plain baseline) and depths 2 and 3 (LoRITa) under one recipe,
sweeps the global cut of each on validation data, picks the smallest model within
``--max-drop`` points (METHOD.md section 5: view (b) against the plain model's accuracy,
view (a) against each model's own) and reports test accuracy for those cuts.
"""

from __future__ import annotations

import argparse
import sys

from lorita.cli.train_cmd import add_train_options, train_config_from
from lorita.composed import INITS

EXAMPLE = """example:
  lorita demo                                # Fashion-MNIST, about 10 minutes on 2 CPU cores
  lorita demo --out runs/demo --epochs 30 --overwrite
  lorita demo --dataset digits --epochs 5 --width 64 --out runs/quick
"""

# The recipe measured in docs/RESULTS.md (cuts chosen on validation data).
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
    p.add_argument("--init", choices=INITS, default="default")
    p.add_argument("--factor-side", choices=["input", "smaller"], default="input")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget in points (default 1)")
    p.add_argument("--points", type=int, default=40, help="cuts per sweep before refining (default 40)")
    add_train_options(p)
    p.set_defaults(epochs=DEFAULTS["epochs"], batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["lr"],
                   weight_decay=DEFAULTS["weight_decay"])
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorita.experiment import ExperimentSpec, run_experiment

    spec = ExperimentSpec(
        name="demo", model="fcn", dataset=args.dataset, data_dir=args.data_dir,
        model_kwargs={"width": args.width, "hidden_layers": args.hidden_layers}, depths=sorted(set(args.depths)),
        init=args.init, factor_side=args.factor_side, exclude=[], train=train_config_from(args).to_dict(),
        max_drop=args.max_drop, points=args.points, fallback_to_digits=args.dataset == "fashion-mnist")
    results = run_experiment(spec, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    report = f"{args.out}/report.md"
    print(open(report).read())
    print(f"[demo] done in {results['seconds']:.0f} s: {report}", file=sys.stderr)
    return 0
