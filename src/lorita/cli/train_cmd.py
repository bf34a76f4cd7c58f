"""``lorita train``: train a zoo model with LoRITa (or plain, depth 1) into a run folder."""

from __future__ import annotations

import argparse

from lorita.cli.options import output_options, parse_model_args, require, train_config_from, train_options
from lorita.composed import INITS, MODES
from lorita.runs.config import FACTOR_SIDES

EXAMPLE = """example:
  lorita train --model fcn --dataset fashion-mnist --depth 3 --epochs 20 --out runs/fcn-d3
  lorita train --model resnet20 --dataset cifar10 --data-dir ~/data --depth 2 --schedule plateau --out runs/r20
  torchrun --nproc_per_node=2 -m lorita train --model fcn --dataset digits --epochs 5 --out runs/ddp
"""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (LoRITa with --depth >= 2, plain with --depth 1)",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                       parents=[train_options(), output_options()])
    p.add_argument("--model", required=True, help="zoo model: see 'lorita models'")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option, e.g. width=256")
    p.add_argument("--dataset", default="fashion-mnist", help="see 'lorita datasets' (default: fashion-mnist)")
    p.add_argument("--data-dir", help="folder with the dataset files (MNIST, CIFAR)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="training data held out for selection")
    p.add_argument("--depth", type=int, default=3, help="factors per layer (1 = plain training)")
    p.add_argument("--init", choices=INITS, default="default")
    p.add_argument("--mode", choices=MODES, default="auto")
    p.add_argument("--factor-side", choices=FACTOR_SIDES, default="input")
    p.add_argument("--exclude", nargs="*", default=None,
                   help="layers left plain (default: the paper's choice for the model, e.g. ViT patch_embed, head)")
    p.add_argument("--resume", action="store_true", help="continue a killed run (OUT.partial), or extend a finished one")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorita.models import model_inputs, paper_exclude
    from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, train_run

    if not args.no_progress:
        require("tqdm", command="train")
    train = train_config_from(args)
    kwargs = parse_model_args(args.model_arg)
    exclude = paper_exclude(args.model) if args.exclude is None else args.exclude
    data_spec = DataSpec(args.dataset, args.data_dir, args.val_fraction, train.seed)
    compose = ComposeSpec(args.depth, args.init, args.mode, args.factor_side, exclude)
    model_inputs(args.model)  # an unknown model is named before the data is read
    data = data_spec.load()
    inputs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "image_size": data.image_size}
    config = RunConfig(ModelSpec(args.model, kwargs, inputs), DataSpec(data.name, args.data_dir, args.val_fraction,
                                                                       train.seed), compose, train)
    run = train_run(args.out, config, data, overwrite=args.overwrite, resume=args.resume,
                    progress=not args.no_progress)
    if run is not None:
        r = run.results
        print(f"{args.out}: depth {args.depth}, best epoch {r['best_epoch']}, "
              f"val {r['val_acc']:.2f}%, test {r['test_acc']:.2f}%")
    return 0
