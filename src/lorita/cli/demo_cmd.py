"""``lorita demo``: LoRITa against plain training on real data, compressed, with a report and plots.

Trains the FCN with depth 1 (plain baseline) and depths 2 and 3 (LoRITa) under one recipe,
sweeps the global cut of each on validation data, picks the smallest model within
``--max-drop`` points (docs/METHOD.md section 5: view (b) against the plain model's
accuracy, view (a) against each model's own) and reports test accuracy for those cuts.
"""

from __future__ import annotations

import argparse
import sys

from lorita.cli.options import output_options, require, train_config_from, train_options
from lorita.compose import COMPOSE_INITS
from lorita.runs.config import FACTOR_SIDES

EXAMPLE = """example:
  lorita demo                                # Fashion-MNIST, about 7 minutes on 2 CPU cores
  lorita demo --out runs/demo --epochs 30 --overwrite
  lorita demo --dataset digits --epochs 5 --width 64 --out runs/quick
  lorita demo --small-dense --calibrate 8 --pre-registered "LoRITa N=2 + FT" --seeds 0 1 2 3 4  # the strongest
"""

# The recipe measured in docs/RESULTS.md (cuts chosen on validation data).
DEFAULTS = dict(epochs=12, batch_size=128, lr=0.05, weight_decay=5e-4, width=512, hidden_layers=3, finetune_epochs=2)


def add_parser(sub) -> None:
    recipe = {k: v for k, v in DEFAULTS.items() if k in ("epochs", "batch_size", "lr", "weight_decay")}
    p = sub.add_parser("demo", help="the main job: LoRITa vs plain training, compressed, report + plots",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                       parents=[train_options(**recipe), output_options(default_out="runs/demo")])
    p.add_argument("--dataset", default="fashion-mnist", help="default fashion-mnist (falls back to digits)")
    p.add_argument("--data-dir", help="folder with the dataset files")
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3], help="depths to train (1 = plain baseline)")
    p.add_argument("--width", type=int, default=DEFAULTS["width"], help="FCN hidden width")
    p.add_argument("--hidden-layers", type=int, default=DEFAULTS["hidden_layers"], help="FCN hidden layers")
    p.add_argument("--init", choices=COMPOSE_INITS, default="auto",
                   help="factor init (default: auto, the paper's before each BatchNorm and at the head: the FCN "
                        "starts exactly as in the paper)")
    p.add_argument("--init-scale", type=float, metavar="S", help="see 'lorita train --help'")
    p.add_argument("--factor-side", choices=FACTOR_SIDES, default="input", help="see 'lorita train --help'")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget in points (default 1)")
    p.add_argument("--points", type=int, default=40, help="cuts per sweep before refining (default 40)")
    g = p.add_argument_group("the alternatives (equal total epochs)")
    g.add_argument("--finetune-epochs", type=int,
                   help="fine-tuned columns: train that many epochs less, cut, fine-tune (0: no such columns; "
                        f"default: {DEFAULTS['finetune_epochs']}, or epochs - 1 when --epochs is smaller)")
    g.add_argument("--finetune-lr", type=float, help="fine-tuning learning rate (default: lr / 10)")
    g.add_argument("--torch-pruning", action=argparse.BooleanOptionalAction, default=None,
                   help="the Torch-Pruning + FT column (default: when torch-pruning is installed)")
    g.add_argument("--small-dense", action="store_true",
                   help="add the smaller dense model trained directly at each size, all the epochs (one training per "
                        "size; in docs/converged the best alternative more often than any other)")
    g.add_argument("--calibrate", type=int, default=0, metavar="BATCHES",
                   help="add plain + whitened SVD (and its fine-tuned column, when there are fine-tuned columns), "
                        "calibrated on that many training batches (default 0: left out)")
    g.add_argument("--pre-registered", metavar="COLUMN",
                   help="the one LoRITa column the headline reports, named before the run, e.g. 'LoRITa N=2 + FT' "
                        "(default: the smallest LoRITa column at the target, chosen after the run)")
    g.add_argument("--sizes", type=float, nargs="+", help="params fractions every column is measured at "
                   "(default 0.05 0.1 0.2 0.3)")
    g.add_argument("--seeds", type=int, nargs="+", help="one run per seed, the headline their mean (default: --seed)")
    g.add_argument("--warm-start-epochs", type=int, default=0,
                   help="LoRITa columns train plain this many epochs, then continue composed (init preserve)")
    g.add_argument("--warm-start-lr", type=float, help="the LoRITa phase's lr after a warm start (default: --lr)")
    g.add_argument("--warm-start-weight-decay", type=float,
                   help="the LoRITa phase's weight decay after a warm start (default: --weight-decay)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorita.data import dataset_status
    from lorita.runs import ExperimentSpec, run_experiment

    needs = ["matplotlib"] + ([] if args.no_progress else ["tqdm"]) + (["torch_pruning"] if args.torch_pruning else [])
    available = {row["name"]: row["available"] for row in dataset_status(args.data_dir)}
    if args.dataset == "fashion-mnist" and not available.get("fashion-mnist"):
        needs.append("sklearn")  # the digits fallback
    require(*needs, command="demo")
    finetune_epochs = args.finetune_epochs
    if finetune_epochs is None:  # the default follows a shortened recipe instead of refusing it
        finetune_epochs = min(DEFAULTS["finetune_epochs"], max(args.epochs - 1, 0))
    spec = ExperimentSpec.from_flat(dict(
        name="demo", model="fcn", dataset=args.dataset, data_dir=args.data_dir,
        model_kwargs={"width": args.width, "hidden_layers": args.hidden_layers}, depths=sorted(set(args.depths)),
        init=args.init, init_scale=args.init_scale, factor_side=args.factor_side, exclude=[],
        train=train_config_from(args),
        max_drop=args.max_drop, points=args.points, fallback_to_digits=args.dataset == "fashion-mnist",
        seeds=args.seeds, finetune_epochs=finetune_epochs, finetune_lr=args.finetune_lr,
        torch_pruning=args.torch_pruning, warm_start_epochs=args.warm_start_epochs, warm_start_lr=args.warm_start_lr,
        warm_start_weight_decay=args.warm_start_weight_decay, small_dense=args.small_dense, calibrate=args.calibrate,
        pre_registered=args.pre_registered, **({"sizes": args.sizes} if args.sizes else {})))
    results = run_experiment(spec, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                             keep_partial=False)  # the demo has no --resume: Ctrl-C or a failure removes its folder
    report = f"{args.out}/report.md"
    print(open(report, encoding="utf-8").read())
    print(f"[demo] done in {results['seconds']:.0f} s: {report}", file=sys.stderr)
    return 0
