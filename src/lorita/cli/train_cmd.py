"""``lorita train``: train a zoo model with LoRITa (or plain, depth 1) into a run folder."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch

import lorita
from lorita.cli.common import parse_model_args, prepare_out, read_json, write_json
from lorita.composed import INITS
from lorita.errors import LoritaError

log = logging.getLogger(__name__)

EXAMPLE = """example:
  lorita train --model fcn --dataset fashion-mnist --depth 3 --epochs 20 --out runs/fcn-d3
  lorita train --model resnet20 --dataset cifar10 --data-dir ~/data --depth 2 --schedule plateau --out runs/r20
  torchrun --nproc_per_node=2 -m lorita train --model fcn --dataset digits --epochs 5 --out runs/ddp
"""


def add_train_options(p: argparse.ArgumentParser) -> None:
    """The training-recipe flags, shared with ``lorita demo`` and fine-tuning."""
    from lorita.train import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("training recipe")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (split over ranks)")
    g.add_argument("--optimizer", choices=["sgd", "adamw"], default=d.optimizer,
                   help="sgd: coupled weight decay = the LoRITa penalty; adamw: decoupled, a different penalty")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    g.add_argument("--schedule", choices=["cosine", "plateau", "constant"], default=d.schedule)
    g.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop + flip (default: on for CIFAR, off for MNIST-like data)")
    g.add_argument("--device", default=d.device, help="auto (CUDA when available), cpu, cuda, cuda:1 ...")


def train_config_from(args: argparse.Namespace, **override):
    """A TrainConfig from parsed flags (``override`` wins)."""
    from lorita.train import TrainConfig

    values = dict(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                  momentum=args.momentum, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                  schedule=args.schedule, warmup_epochs=args.warmup_epochs, seed=args.seed, augment=args.augment,
                  device=args.device)
    values.update(override)
    return TrainConfig(**values)


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (LoRITa with --depth >= 2, plain with --depth 1)",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="zoo model: see 'lorita models'")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option, e.g. width=256")
    p.add_argument("--dataset", default="fashion-mnist", help="see 'lorita datasets' (default: fashion-mnist)")
    p.add_argument("--data-dir", help="folder with the dataset files (MNIST, CIFAR)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="training data held out for selection")
    p.add_argument("--depth", type=int, default=3, help="factors per layer (1 = plain training)")
    p.add_argument("--init", choices=INITS, default="default")
    p.add_argument("--mode", choices=["auto", "sequential", "fused"], default="auto")
    p.add_argument("--factor-side", choices=["input", "smaller"], default="input")
    p.add_argument("--exclude", nargs="*", default=None,
                   help="layers left plain (default: the paper's choice for the model, e.g. ViT patch_embed, head)")
    add_train_options(p)
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorita.data import load_dataset
    from lorita.models import paper_exclude

    config = train_config_from(args)
    exclude = paper_exclude(args.model) if args.exclude is None else args.exclude
    data = load_dataset(args.dataset, args.data_dir, val_fraction=args.val_fraction, seed=args.seed)
    run_config = {
        "command": "train", "lorita_version": lorita.__version__,
        "model": {"name": args.model, "num_classes": data.num_classes, "in_channels": data.in_channels,
                  "image_size": data.image_size, "kwargs": parse_model_args(args.model_arg)},
        "dataset": {"name": data.name, "data_dir": args.data_dir, "val_fraction": args.val_fraction, "seed": args.seed},
        "compose": {"depth": args.depth, "init": args.init, "mode": args.mode, "factor_side": args.factor_side,
                    "exclude": exclude},
        "train": config.to_dict(),
    }
    results = train_run(args.out, run_config, data, overwrite=args.overwrite, resume=args.resume,
                        progress=not args.no_progress)
    if results is not None:
        print(f"{args.out}: depth {args.depth}, best epoch {results['best_epoch']}, "
              f"val {results['val_acc']:.2f}%, test {results['test_acc']:.2f}%")
    return 0


def build_model(run_config: dict):
    """The run's zoo model, composed as the config says."""
    from lorita.models import create_model

    m = run_config["model"]
    model = create_model(m["name"], num_classes=m["num_classes"], in_channels=m["in_channels"],
                         image_size=m["image_size"], **m.get("kwargs", {}))
    c = run_config["compose"]
    exclude = c.get("exclude") or None
    return lorita.compose(model, depth=c["depth"], exclude=exclude, init=c.get("init", "default"),
                          mode=c.get("mode", "auto"), factor_side=c.get("factor_side", "input"))


def train_run(out: str | Path, run_config: dict, data, *, overwrite: bool = False, resume: bool = False,
              progress: bool = True) -> dict | None:
    """Train one run into ``out`` (config.json, metrics.csv, checkpoint.pt, model.lorita, spectrum.json,
    results.json). Returns results (None on non-zero ranks under torchrun)."""
    from lorita.train import TrainConfig, evaluate, train

    main_rank = int(os.environ.get("RANK", "0")) == 0
    out = Path(out)
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise LoritaError(f"--resume: no checkpoint.pt in {out}; start the run without --resume")
        old = read_json(out / "config.json", "'lorita train'")
        diff = [k for k in ("model", "dataset", "compose") if old.get(k) != run_config.get(k)]
        if diff:
            raise LoritaError(f"--resume: the flags differ from the run's config.json in {', '.join(diff)}; "
                              "resume with the same flags (only --epochs may change)")
    if main_rank:
        prepare_out(out, overwrite, resume=resume)
        write_json(out / "config.json", run_config)
    torch.manual_seed(run_config["train"].get("seed", 0))
    model = build_model(run_config)
    config = TrainConfig.from_dict(run_config["train"])
    start = time.time()
    result = train(model, data, config, out_dir=out, resume=resume, progress=progress and main_rank)
    if not main_rank:
        return None
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    model.eval()
    val_acc, _ = evaluate(model, data.val)
    test_acc, _ = evaluate(model, data.test)
    model = model.cpu()
    merged = lorita.merge(model)
    example = torch.zeros(1, data.in_channels, data.image_size, data.image_size)
    counts = lorita.profile(merged, example)
    lorita.save(model, out / "model.lorita")
    write_json(out / "spectrum.json", {"layers": {k: v.tolist() for k, v in lorita.spectrum(merged).items()}})
    results = {"command": "train", "depth": run_config["compose"]["depth"], "epochs": config.epochs,
               "best_epoch": result.best_epoch, "val_acc": val_acc, "test_acc": test_acc,
               "params": counts.params, "macs": counts.macs, "flops": counts.flops,
               "train_seconds": result.seconds, "seconds": time.time() - start}
    write_json(out / "results.json", results)
    return results
