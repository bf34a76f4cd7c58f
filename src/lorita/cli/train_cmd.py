"""``lorita train``: train a zoo model with LoRITa (depth 3 unless --depth says otherwise; --depth 1 trains it plain)
into a run folder."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path

from lorita.cli.options import output_options, parse_model_args, require, train_config_from, train_options
from lorita.data.datasets import canonical_name, reads_same_folder, recorded_folder
from lorita.train import TrainConfig
from lorita.errors import LoritaError
from lorita.compose import COMPOSE_INITS, FACTOR_SIDES
from lorita.composed import MODES

EXAMPLE = """example:
  lorita train --model fcn --dataset fashion-mnist --depth 3 --epochs 20 --out runs/fcn-d3
  lorita train --from runs/fcn-plain --depth 3 --epochs 4 --lr 0.02 --weight-decay 2e-3 --out runs/fcn-cont
  lorita train --model resnet20 --dataset cifar10 --data-dir ~/data --depth 2 --schedule plateau --out runs/r20
  lorita train --resume --out runs/fcn-d3                # a killed run: on from its last epoch
  lorita train --resume --out runs/fcn-d3 --epochs 40    # a finished run: trained further
  torchrun --nproc_per_node=2 -m lorita train --model fcn --dataset digits --epochs 5 --out runs/ddp
"""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (LoRITa depth 3 by default, plain with --depth 1)",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                       parents=[train_options(), output_options()])
    p.add_argument("--model", help="zoo model: see 'lorita models' (not needed with --from)")
    p.add_argument("--from", dest="source", metavar="RUN_OR_FILE",
                   help="continue a trained model (a run folder or a .lorita file) as LoRITa: composed with "
                        "--init preserve, so it starts with the same outputs; fresh optimizer and schedule")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option, e.g. width=256")
    p.add_argument("--dataset", help="see 'lorita datasets' (default: the --from run's, else fashion-mnist)")
    p.add_argument("--data-dir", help="folder with the dataset files (MNIST, CIFAR)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="images: training data held out for selection (text is split 90/5/5 by entry)")
    p.add_argument("--steps-per-epoch", type=int, help="text: training batches per epoch (default: about one pass)")
    p.add_argument("--depth", type=int, default=3, help="factors per layer (1 = plain training)")
    p.add_argument("--init", choices=COMPOSE_INITS,
                   help="factor init (default: auto: the paper's where a normalisation layer follows, scaled to the "
                        "layer's own norm elsewhere; 'default' is the paper's everywhere; with --from: preserve)")
    p.add_argument("--init-scale", type=float, metavar="S",
                   help="with --init default or auto: the factors' product starts at S times the layer's own norm "
                        "(default: as the init gives it; docs/INIT.md)")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="composed layers: factors one after another, their product first, or the cheaper per call")
    p.add_argument("--factor-side", choices=FACTOR_SIDES, default="input",
                   help="where a Linear's square factors sit: in x in (the authors'), or min(in, out) (cheaper)")
    p.add_argument("--exclude", nargs="*", default=None,
                   help="layers left plain (default: the paper's choice for the model, e.g. ViT patch_embed, head)")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run (OUT.partial), or extend a finished one with --epochs N; the flags "
                        "left out take the run's own values (its config.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorita.models import paper_exclude
    from lorita.models.registry import resolve_args
    from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, train_config_of, train_run
    from lorita.runs.data import TEXT_DATASETS
    from lorita.runs.folder import staging_path
    from lorita.runs.train import load_source, resumed_config
    from lorita.train.distributed import resolve_device

    if not args.no_progress:
        require("tqdm", command="train")
    saved = None  # with --resume, the run's own config, whose flags the command line left out
    if args.resume:
        saved = resumed_config(args.out)
        if saved is None:
            _nothing_to_resume(args.out, staging_path(args.out))
        saved = _take_the_runs_flags(args, saved)
    train = train_config_from(args)
    resolve_device(train.device)  # a device this machine lacks: refused before any work
    source, source_path = None, None
    if args.source is not None:
        if args.init not in (None, "preserve"):
            raise LoritaError(f"--from continues a trained model, which --init {args.init} would throw away; "
                              "leave --init out (it is 'preserve' with --from)")
        if args.model_arg:
            raise LoritaError("--model-arg does not apply with --from: the architecture is the trained model's")
        source, model, source_path = load_source(args.source)
        if args.model is not None and args.model != model.name:
            raise LoritaError(f"--model {args.model} but --from {args.source} holds a {model.name}; leave --model out")
        dataset = args.dataset
        if dataset is None and Path(args.source).is_dir():
            dataset = train_config_of(args.source).dataset.name
    else:
        if args.model is None:
            raise LoritaError("say which model to train: --model NAME (see 'lorita models'), or --from RUN_OR_FILE")
        model = ModelSpec(args.model, parse_model_args(args.model_arg))
        resolve_args(model.name, model.kwargs, inputs_given=False)  # unknown model or argument: before the data
        dataset = args.dataset
    exclude = paper_exclude(model.name) if args.exclude is None else args.exclude
    init = args.init or ("preserve" if source is not None else "auto")
    compose = ComposeSpec(args.depth, init, args.mode, args.factor_side, exclude, args.init_scale)
    data_dir = args.data_dir
    if saved is None and data_dir:  # a new run records its folder whole: a resume from anywhere reads it ("" refused)
        data_dir = recorded_folder(data_dir)
    data_spec = DataSpec(dataset or "fashion-mnist", data_dir, args.val_fraction, train.seed,
                         max_train=None if saved is None else saved.dataset.max_train,  # no flag sets it
                         steps_per_epoch=args.steps_per_epoch)
    data_spec.check_applies()
    if "val_fraction" in args.given and data_spec.name in TEXT_DATASETS:
        raise LoritaError(f"--val-fraction sets an image dataset's validation split; text ({data_spec.name!r}) is "
                          "always split 90/5/5 by entry: leave it out")
    data = data_spec.load(model=model, train=train)
    inputs = data.model_inputs
    if source is not None and any(model.inputs.get(k) != v for k, v in inputs.items()):
        raise LoritaError(f"--from {args.source} was built for {model.inputs}, but {data.name} gives {inputs}; "
                          "continue it on data of the same shape")
    recorded_source = str(source_path) if source_path is not None else saved.source if saved is not None else None
    config = RunConfig(ModelSpec(model.name, model.kwargs, inputs),
                       dataclasses.replace(data_spec, name=data_spec.name if data_spec.name in TEXT_DATASETS
                                           else data.name), compose, train,
                       source=recorded_source)  # a resumed run's model is not read again (--from left out)
    run = train_run(args.out, config, data, overwrite=args.overwrite, resume=args.resume,
                    progress=not args.no_progress, source=source)
    if run is not None:
        r = run.results
        if train.select_by == "val_loss":  # chosen by loss (language models): loss and perplexity, not accuracy
            figures = (f"val loss {r['val_loss']:.4f} (perplexity {math.exp(r['val_loss']):.3g}), "
                       f"test loss {r['test_loss']:.4f} (perplexity {math.exp(r['test_loss']):.3g})")
        else:
            figures = f"val {r['val_acc']:.2f}%, test {r['test_acc']:.2f}%"
        print(f"{args.out}: depth {args.depth}, best epoch {r['best_epoch']}, {figures}")
    return 0


# the flags a run's config.json sets, each with how to read it from that config
_RUN_FLAGS = {
    "model": lambda c: c.model.name,
    "model_arg": lambda c: [f"{k}={json.dumps(v)}" for k, v in c.model.kwargs.items()] or None,
    "source": lambda c: c.source,
    "dataset": lambda c: c.dataset.name,
    "data_dir": lambda c: c.dataset.data_dir,
    "val_fraction": lambda c: c.dataset.val_fraction,
    "steps_per_epoch": lambda c: c.dataset.steps_per_epoch,
    **{f: (lambda c, f=f: getattr(c.compose, f)) for f in ("depth", "init", "mode", "factor_side", "exclude",
                                                           "init_scale")},
}


def _model_file(source: str) -> str:
    """A --from as load_source reads it: a run folder's model.lorita, resolved."""
    path = Path(source)
    return str((path / "model.lorita" if path.is_dir() else path).resolve())


def _same_dataset(given: str, own: str) -> bool:
    return canonical_name(given) == canonical_name(own)


# how a given flag is compared with the run's value, where plain equality would refuse the same thing
_SAME = {"model_arg": lambda given, own: parse_model_args(given) == parse_model_args(own),
         "source": lambda given, own: own is not None and _model_file(given) == _model_file(own),
         "dataset": _same_dataset}


def _take_the_runs_flags(args: argparse.Namespace, config):
    """--resume of the run whose ``config`` (a ``RunConfig``) is given: each flag the command line leaves out takes
    the run's own value, and each it gives must equal it (--epochs excepted), checked before any of them is acted
    on; returns ``config``, or None when ``args`` does not say which flags were written (called without main():
    all count as given). The model a run continued (--from) is not read again: the checkpoint holds every weight,
    and the run's architecture rebuilds it."""
    given = getattr(args, "given", None)
    if given is None:
        return None
    own = {**{k: read(config) for k, read in _RUN_FLAGS.items()},
           **{f.name: getattr(config.train, f.name) for f in dataclasses.fields(TrainConfig)}}
    same = {**_SAME, "data_dir": lambda given, own: reads_same_folder(config.dataset.name, given, own)}
    differ = [dest for dest in sorted(given & set(own) - {"epochs"})
              if not same.get(dest, lambda a, b: a == b)(getattr(args, dest), own[dest])]
    if differ:
        flag = {"source": "--from"}
        shown = "; ".join(f"{flag.get(d, '--' + d.replace('_', '-'))}: the run has {own[d]!r}, the flags give "
                          f"{getattr(args, d)!r}" for d in differ)
        raise LoritaError(f"--resume: the flags differ from the run's config.json ({shown}); leave them out (--resume "
                          "takes the run's own; only --epochs may change), or start a new run with another --out")
    for dest, value in own.items():  # the given ones are the same, as the run writes them
        if not (dest == "epochs" and dest in given):
            setattr(args, dest, value)
    args.source = None  # given or not, not read again (config.source is recorded): the checkpoint holds all
    return config


def _nothing_to_resume(out: str, staging: Path) -> None:
    """Why --resume finds no training at ``out`` or its staging folder (never returns)."""
    if Path(out).is_symlink():  # as lorita.runs.output words it
        raise LoritaError(f"--out {out} is a symbolic link, and lorita never writes or deletes through one; remove "
                          f"the link (rm {out}) or choose another --out")
    if staging.is_symlink():
        raise LoritaError(f"{staging} is a symbolic link, and lorita never writes through one; remove the link "
                          f"(rm {staging}) or choose another --out")
    if not any(os.path.lexists(p) for p in (out, staging)):
        raise LoritaError(f"--resume: there is no run to continue at {out} (no {staging} of a killed run, no "
                          "finished run); start it without --resume")
    raise LoritaError(f"--resume: {out} holds no checkpoint.pt of a 'lorita train' run, nor does {staging}, so there "
                      "is nothing to continue; start it without --resume, or choose another --out")
