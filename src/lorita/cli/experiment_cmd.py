"""``lorita experiment``: run one of the paper's setups from a JSON config (full or reduced recipe)."""

from __future__ import annotations

import argparse
import sys

from lorita.cli.options import output_options, parse_model_args, require
from lorita.compose import COMPOSE_INITS
from lorita.errors import LoritaError

EXAMPLE = """example:
  lorita experiment experiments/fcn_fashion_mnist.json --reduced --out runs/fcn-fmnist
  lorita experiment experiments/fcn_fashion_mnist.json --reduced --out runs/fcn-fmnist --resume   # after a kill
  lorita experiment experiments/resnet20_cifar10.json --data-dir ~/data --out runs/r20   # full recipe (GPU)
  lorita experiment experiments/vgg16_cifar10.json --reduced --init balanced --out runs/vgg16-balanced
  lorita experiment experiments/converged/fcn.json --out runs/fcn --dry-run   # each training's epochs and exposure
"""


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="run a paper setup from experiments/*.json",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                       parents=[output_options()])
    p.add_argument("config", help="an experiment config (experiments/*.json)")
    p.add_argument("--reduced", action="store_true", help="the reduced recipe: CPU, Fashion-MNIST, 8 to 25 min on 2 cores")
    p.add_argument("--data-dir", help="folder with the dataset files (CIFAR, MNIST)")
    p.add_argument("--init", choices=COMPOSE_INITS,
                   help="init of the composed factors, overriding the config's (default: the config's)")
    p.add_argument("--seeds", type=int, nargs="+", help="one run per seed, the headline their mean (default: the config's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a config field (JSON value), e.g. --set warm_start_epochs=14 --set train.lr=0.01 "
                        "--set model_kwargs.width=128")
    p.add_argument("--resume", action="store_true",
                   help="take up a killed or failed run of OUT (OUT.partial, kept as OUT.resume): its finished "
                        "trainings are reused and the one it was in continues from its last epoch; same config and "
                        "flags")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything and print each seed's trainings (epochs, penalty exposure), then stop: "
                        "nothing is trained, created or replaced")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> tuple[dict[str, dict], dict]:
    """``--set`` and the flags that set a config's field (--data-dir, --init, --seeds), as ``load_spec`` takes them:
    the ``train.`` and ``model_kwargs.`` keys apart, and each field given once."""
    nested: dict[str, dict] = {"train": {}, "model_kwargs": {}}
    fields = {}
    for key, value in parse_model_args(args.set).items():
        prefix, dot, name = key.partition(".")
        if dot and (prefix not in nested or not name):
            raise LoritaError(f"--set {key}: a dotted name is train.FIELD or model_kwargs.KEY "
                              "(e.g. --set train.lr=0.01 --set model_kwargs.width=128)")
        if key in ("path", "reduced", "train_override", "model_kwargs_override"):  # load_spec's own arguments
            raise LoritaError(f"--set {key}: an experiment config has no field {key!r}"
                              + ("; for the reduced recipe pass --reduced" if key == "reduced" else ""))
        if value is None and not dot:  # load_spec takes None for "not given": the config's value would stay
            raise LoritaError(f"--set {key}=null would leave the config's {key} as it is; give a value, or write "
                              f"null into the config itself")
        if dot:
            nested[prefix][name] = value
        else:
            fields[key] = value
    for key, flag in (("data_dir", args.data_dir), ("init", args.init), ("seeds", args.seeds)):
        if key in fields and flag is not None:
            raise LoritaError(f"--set {key} and --{key.replace('_', '-')} both given: give one of them")
        fields[key] = fields.get(key, flag)
    return nested, fields


def run(args: argparse.Namespace) -> int:
    from lorita.runs import load_spec, plan_experiment, run_experiment

    nested, fields = _overrides(args)
    spec = load_spec(args.config, reduced=args.reduced, train_override=nested["train"],
                     model_kwargs_override=nested["model_kwargs"], **fields)
    if args.dry_run and args.resume:
        raise LoritaError("--dry-run does not take up a killed run (that moves OUT.partial aside); plan it with "
                          "--dry-run on another --out, or run --resume without --dry-run")
    if args.dry_run:
        plan = plan_experiment(spec, args.out, overwrite=args.overwrite, config_path=args.config)
        print("\n".join(plan.lines()))
        return 0
    require("matplotlib", *([] if args.no_progress else ["tqdm"]), command="experiment")
    results = run_experiment(spec, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                             config_path=args.config, resume=args.resume)
    print(open(f"{args.out}/report.md", encoding="utf-8").read())
    print(f"[{spec.name}] done in {results['seconds']:.0f} s", file=sys.stderr)
    return 0
