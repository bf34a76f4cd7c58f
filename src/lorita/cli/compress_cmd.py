"""``lorita compress``: cut a trained run to low rank, optionally fine-tune, into a new folder."""

from __future__ import annotations

import argparse

from lorita.cli.options import output_options, require
from lorita.cutspec import Accuracy, Budget, CutSpec, Energy, Latency, Rank, Ratio, Threshold
from lorita.errors import LoritaError

EXAMPLE = """example:
  lorita compress runs/fcn-d3 --energy 0.95 --out runs/fcn-d3-e95
  lorita compress runs/fcn-d3 --strategy budget --flops 0.3 --finetune-epochs 5 --out runs/fcn-d3-f30
  lorita compress runs/fcn-d3 --strategy accuracy --max-drop 1.0 --out runs/fcn-d3-acc
  lorita compress runs/r20 --latency 0.5 --batch 64 --out runs/r20-lat50     # measured time, this machine
  lorita compress runs/fcn-d3 --energy 0.95 --int8 --out runs/fcn-d3-e95-int8  # then int8 weights
"""

# --channels-last value -> the layout of lorita.latency.latency_budget
_LAYOUTS = {"auto": "auto", "on": "channels_last", "off": "contiguous"}
# flag -> (the strategy it belonged to before lorita.cutspec, the way to cut it builds from the flags)
_FLAGS = {
    "energy": ("energy", lambda a, shared: Energy(a.energy, **shared)),
    "ratio": ("uniform", lambda a, shared: Ratio(a.ratio, **shared)),
    "threshold": ("global", lambda a, shared: Threshold(a.threshold, **shared)),
    "params": ("budget", lambda a, shared: Budget(params=a.params, **shared)),
    "flops": ("budget", lambda a, shared: Budget(flops=a.flops, **shared)),
    "rank": ("rank", lambda a, shared: Rank(a.rank, **shared)),
    "latency": ("budget", lambda a, shared: Latency(a.latency, batch=1 if a.batch is None else a.batch,
                                                    layout=_LAYOUTS[a.channels_last or "auto"], **shared)),
}
_ACCURACY = ("max_drop", "max_evals")


def add_parser(sub) -> None:
    p = sub.add_parser("compress", help="cut a trained run to low rank (truncated SVD, two thin layers)",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                       parents=[output_options()])
    p.add_argument("run", help="a run folder written by 'lorita train'")
    p.add_argument("--strategy", choices=["uniform", "energy", "global", "budget", "accuracy"],
                   help="rank selection (default: the one its option names, e.g. energy for --energy)")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--energy", type=float, help="energy strategy: fraction of sum(sigma^2) kept per layer")
    cut.add_argument("--ratio", type=float, help="uniform strategy: fraction of singular values kept per layer")
    cut.add_argument("--threshold", type=float, help="global strategy: keep sigma/sigma_max >= threshold")
    cut.add_argument("--rank", type=int, help="the same rank in every layer")
    cut.add_argument("--params", type=float, help="budget strategy: target fraction of the original params")
    cut.add_argument("--flops", type=float, help="budget strategy: target fraction of the original FLOPs")
    cut.add_argument("--latency", type=float,
                     help="budget strategy: the cut model's measured time on this machine, as a fraction of the "
                          "dense model's (ranks allocated by measured time; results.json records predicted and "
                          "measured latency)")
    p.add_argument("--batch", type=int, help="--latency: the batch size to time at (default 1)")
    p.add_argument("--channels-last", nargs="?", const="on", choices=sorted(_LAYOUTS), default=None,
                   help="--latency: memory layout of image models: auto (default: channels_last where the dense "
                        "model measures faster in it), on (--channels-last alone) or off (NCHW)")
    p.add_argument("--max-drop", type=float, help="accuracy strategy: validation points allowed (default 1)")
    p.add_argument("--max-evals", type=int, help="accuracy strategy: evaluations allowed (default 12)")
    p.add_argument("--calibrate", type=int, default=0, metavar="N",
                   help="whitened (activation-aware) cuts, as in SVD-LLM: calibrated on N batches of the run's "
                        "training data, with any way to cut (--energy then counts output energy)")
    p.add_argument("--multiple", type=int, default=1, metavar="M",
                   help="every rank a multiple of M (8 or 16 suit vectorised kernels) or the layer's full rank")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune the cut model (default 0: no)")
    p.add_argument("--finetune-lr", type=float, help="fine-tuning learning rate (default: the run's lr / 10)")
    p.add_argument("--int8", action="store_true",
                   help="then store the weights in int8, one scale per output channel (lorita.quantize; "
                        "docs/QUANTIZE.md)")
    p.set_defaults(func=run)


def cut_from_args(args: argparse.Namespace) -> CutSpec:
    """The way to cut the flags say (``lorita.cutspec``); a flag that does not belong to it is refused.

    Example:
        >>> from lorita.cli import build_parser
        >>> cut_from_args(build_parser().parse_args(["compress", "runs/x", "--out", "y", "--flops", "0.3"]))
        Budget(calibrate=0, multiple=1, int8=False, params=None, flops=0.3, rule='loss', latency_aware=False)
    """
    given = [k for k in _FLAGS if getattr(args, k) is not None]
    accuracy = {k: getattr(args, k) for k in _ACCURACY if getattr(args, k) is not None}
    strategy = args.strategy or (_FLAGS[given[0]][0] if given else "accuracy" if accuracy else None)
    if strategy is None:
        raise LoritaError("say how to cut: --energy E, --ratio R, --threshold T, --rank R, --params P, --flops F, "
                          "--latency L, or --strategy accuracy (e.g. --strategy budget --flops 0.3)")
    wrong = [f"--{k.replace('_', '-')}" for k in given if _FLAGS[k][0] != strategy]
    if accuracy and strategy != "accuracy":
        wrong += [f"--{k.replace('_', '-')}" for k in accuracy]
    if wrong:
        raise LoritaError(f"{', '.join(wrong)} do(es) not apply to --strategy {strategy}; give only its own option")
    if (args.batch is not None or args.channels_last is not None) and args.latency is None:
        raise LoritaError("--batch and --channels-last go with --latency (they say how the latency is measured)")
    shared = {"calibrate": args.calibrate, "multiple": args.multiple, "int8": args.int8}
    if strategy == "accuracy":
        return Accuracy(**accuracy, **shared)
    if not given:
        needs = {"budget": "takes exactly one of params or flops (a target fraction of the size) or latency (a target "
                           "fraction of the measured time)", "global": "needs threshold", "uniform": "needs ratio",
                 "energy": "needs energy"}
        raise LoritaError(f"strategy {strategy!r} {needs[strategy]}")
    return _FLAGS[given[0]][1](args, shared)


def run(args: argparse.Namespace) -> int:
    from lorita.runs import compress_run

    how = cut_from_args(args)
    if args.finetune_epochs and not args.no_progress:
        require("tqdm", command="compress")
    results = compress_run(args.run, args.out, how, finetune_epochs=args.finetune_epochs,
                           finetune_lr=args.finetune_lr, overwrite=args.overwrite, progress=not args.no_progress)
    kept = results["kept"]
    final = results.get("after_int8") or results["after_finetune"] or results["after_cut"]
    print(f"{args.out}: params kept {100 * kept['params']:.1f}%, MACs kept {100 * kept['macs']:.1f}%, "
          f"test {results['before']['test_acc']:.2f}% -> {final['test_acc']:.2f}%")
    if "latency" in results:
        lat = results["latency"]
        print(f"latency at batch {lat['batch']} ({lat['layout']}): asked {lat['latency']:.3f}, predicted "
              f"{lat['predicted']:.3f}, measured {lat['measured']:.3f} (the compressed model: "
              f"{lat['final']['measured']:.3f}) of the dense model's {1e3 * lat['dense_s']:.2f} ms")
    return 0
