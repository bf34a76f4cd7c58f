"""``lorita compress``: cut a trained run, or a pretrained language model, to low rank into a new folder.

SOURCE is a run folder written by ``lorita train``, or a pretrained causal language model: a
packaged name (``smollm2-135m``), a ``.gguf`` file or a Hugging Face model folder (the
``lorita[lm]`` extra). A language model is cut to ``--params P`` of its whole params
(embeddings included, a tied head counted once) with whitened SVD and the closed-form update,
calibrated on ``--texts`` (default: the packaged English text), then recovered by fine-tuning
the thin layers (``--recovery``)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lorita.cli.options import output_options, require
from lorita.cutspec import Accuracy, Budget, CutSpec, Energy, Latency, Rank, Ratio, Threshold
from lorita.errors import LoritaError
from lorita.lm.pipeline import METHODS, LMCompression
from lorita.lm.recover import RecoveryRecipe, recovery_recipe
from lorita.lm.width import ALLOCATIONS
from lorita.metric import LOSS, metric_named

EXAMPLE = """example:
  lorita compress runs/fcn-d3 --energy 0.95 --out runs/fcn-d3-e95
  lorita compress runs/fcn-d3 --strategy budget --flops 0.3 --finetune-epochs 5 --out runs/fcn-d3-f30
  lorita compress runs/fcn-d3 --strategy accuracy --max-drop 1.0 --out runs/fcn-d3-acc
  lorita compress runs/r20 --latency 0.5 --batch 64 --out runs/r20-lat50     # measured time, this machine
  lorita compress runs/fcn-d3 --energy 0.95 --int8 --out runs/fcn-d3-e95-int8  # then int8 weights
  lorita compress smollm2-135m --params 0.8 --out runs/smol-80    # a pretrained LM (lorita[lm]): 80% of its params
  lorita compress model.gguf --params 0.9 --recovery lora --texts notes/ --out runs/mine-90
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
# flags a language model's cut takes besides --params (None: not given), and the trained-run flags it refuses
_LM_ONLY = ("method", "width_allocation", "seed", "texts", "recovery", "recovery_steps", "recovery_minutes", "distill")
LM_RECOVERY_MINUTES = 10.0  # the default recovery's wall-clock budget: a 135M model trains ~1 step / 40 s on 2 cores
_RUN_ONLY = ("strategy", "energy", "ratio", "threshold", "rank", "flops", "latency", "batch", "channels_last",
             "max_drop", "max_evals", "finetune_lr", "int8")


def add_parser(sub) -> None:
    p = sub.add_parser("compress", help="cut a trained run to low rank (truncated SVD, two thin layers)",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                       parents=[output_options()])
    p.add_argument("run", metavar="SOURCE",
                   help="a run folder written by 'lorita train', or a pretrained language model: a packaged name "
                        "(smollm2-135m), a .gguf file or a Hugging Face model folder")
    p.add_argument("--strategy", choices=["uniform", "energy", "global", "budget", "accuracy"],
                   help="rank selection (default: the one its option names, e.g. energy for --energy)")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--energy", type=float, help="energy strategy: fraction of sum(sigma^2) kept per layer")
    cut.add_argument("--ratio", type=float, help="uniform strategy: fraction of singular values kept per layer")
    cut.add_argument("--threshold", type=float, help="global strategy: keep sigma/sigma_max >= threshold")
    cut.add_argument("--rank", type=int, help="the same rank in every layer")
    cut.add_argument("--params", type=float,
                     help="budget strategy: target fraction of the original params (a language model: of the whole "
                          "model's, embeddings included, a tied head counted once)")
    cut.add_argument("--flops", type=float, help="budget strategy: target fraction of the original FLOPs")
    cut.add_argument("--latency", type=float,
                     help="budget strategy: the cut model's measured time on this machine, as a fraction of the "
                          "dense model's (ranks allocated by measured time; results.json records predicted and "
                          "measured latency)")
    p.add_argument("--batch", type=int, help="--latency: the batch size to time at (default 1)")
    p.add_argument("--channels-last", nargs="?", const="on", choices=sorted(_LAYOUTS), default=None,
                   help="--latency: memory layout of image models: auto (default: channels_last where the dense "
                        "model measures faster in it), on (--channels-last alone) or off (NCHW)")
    p.add_argument("--max-drop", type=float,
                   help="accuracy strategy: validation accuracy points allowed (default 1); for a language model "
                        "trained with --select-by val_loss, nats of validation loss (default ln 1.02 = 0.0198: "
                        "perplexity + 2%%)")
    p.add_argument("--max-evals", type=int, help="accuracy strategy: evaluations allowed (default 12)")
    p.add_argument("--calibrate", type=int, metavar="N",
                   help="whitened (activation-aware) cuts, as in SVD-LLM: calibrated on N batches of the run's "
                        "training data, with any way to cut (--energy then counts output energy); a language model "
                        "is always whitened, on N windows of 256 tokens (fewer where the model reads fewer at once; "
                        "default 64)")
    p.add_argument("--multiple", type=int, default=1, metavar="M",
                   help="every rank a multiple of M (8 or 16 suit vectorised kernels) or the layer's full rank")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="fine-tune the cut model this many epochs, keeping the best validation epoch, or the cut "
                   "model itself when no epoch beats it (default 0: no)")
    p.add_argument("--finetune-lr", type=float, help="fine-tuning learning rate (default: the run's lr / 10)")
    p.add_argument("--int8", action="store_true",
                   help="then store the weights in int8, one scale per output channel (lorita.quantize; "
                        "docs/QUANTIZE.md)")
    lm = p.add_argument_group("pretrained language models (SOURCE a packaged name, .gguf file or model folder)")
    lm.add_argument("--method", choices=METHODS,
                    help="low-rank (the default: whitened SVD of the blocks' linears into thin pairs, ranks chosen "
                         "across the model) or width (the MLP channels pruned, ranked by their activations on the "
                         "calibration windows, down_proj refitted on the kept ones; the better of the two on "
                         "SmolLM2-135M in docs/LM.md)")
    lm.add_argument("--width-allocation", choices=ALLOCATIONS,
                    help="with --method width: every block keeps the same MLP width (uniform, the default) or the "
                         "widths differ, one ranking of the channels over all blocks (global; docs/LM.md)")
    lm.add_argument("--seed", type=int, metavar="S",
                    help="seed of the texts' split into training, validation and test documents and of the "
                         "calibration windows' draw (default 0): a second seed of a measurement")
    lm.add_argument("--texts", nargs="+", metavar="TEXT",
                    help="calibration, recovery and validation text, each split by document: fortunes, python-docs, "
                         "debian-handbook (apt-get install debian-handbook), or folders of UTF-8 files, one document "
                         "each (default: fortunes python-docs)")
    lm.add_argument("--recovery", choices=["full", "lora", "none"],
                    help="fine-tune the thin layers after the cut: a LoRA side path merged into them (lora, the "
                         "default: it recovered more per minute than full in docs/LM.md), both factors (full), or "
                         "not at all (none)")
    lm.add_argument("--recovery-steps", type=int, metavar="N",
                    help=f"recovery steps of {RecoveryRecipe().batch_size} windows of {RecoveryRecipe().context} "
                         f"tokens (default {RecoveryRecipe().steps}, as many as --recovery-minutes allows)")
    lm.add_argument("--recovery-minutes", type=float, metavar="M",
                    help=f"wall-clock budget of the recovery's training steps (default {LM_RECOVERY_MINUTES:g}; 0: "
                         "none, every step runs); the step count is fitted to it from the first steps' time")
    lm.add_argument("--distill", type=float, metavar="W",
                    help="weight of the dense model's prediction in each recovery token's target (0, the default: "
                         "the next token of the text only; 1: distillation from the dense model, which then stays "
                         "in memory during the recovery)")
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
    if wrong:
        raise LoritaError(f"{', '.join(wrong)} do(es) not apply to --strategy {strategy}; give only its own option, "
                          "or leave --strategy out (each of --energy, --ratio, --threshold, --rank, --params, "
                          "--flops and --latency says the way to cut by itself)")
    if accuracy and strategy != "accuracy":
        raise LoritaError(f"{', '.join('--' + k.replace('_', '-') for k in accuracy)} go(es) with --strategy "
                          f"accuracy, not {strategy}; leave it out, or cut with --strategy accuracy")
    if (args.batch is not None or args.channels_last is not None) and args.latency is None:
        raise LoritaError("--batch and --channels-last go with --latency (they say how the latency is measured)")
    shared = {"calibrate": args.calibrate or 0, "multiple": args.multiple, "int8": args.int8}
    if strategy == "accuracy":
        return Accuracy(**accuracy, **shared)
    if not given:
        needs = {"budget": "takes exactly one of params or flops (a target fraction of the size) or latency (a target "
                           "fraction of the measured time)", "global": "needs threshold", "uniform": "needs ratio",
                 "energy": "needs energy"}
        raise LoritaError(f"strategy {strategy!r} {needs[strategy]}")
    return _FLAGS[given[0]][1](args, shared)


def _given(args: argparse.Namespace, names) -> list[str]:
    """The flags among ``names`` (argparse destinations) the command line gave."""
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) not in (None, False)]


def lm_from_args(args: argparse.Namespace) -> LMCompression:
    """How a pretrained language model is compressed, from the flags; a trained run's flag is refused.

    Example:
        >>> from lorita.cli import build_parser
        >>> how = lm_from_args(build_parser().parse_args(["compress", "m.gguf", "--out", "y", "--params", "0.8",
        ...                                                "--recovery", "lora"]))
        >>> how.params, how.recovery.mode, how.recovery.seconds, how.texts
        (0.8, 'lora', 600.0, ('fortunes', 'python-docs'))
    """
    wrong = _given(args, _RUN_ONLY) + (["--finetune-epochs"] if args.finetune_epochs else [])
    if wrong:
        raise LoritaError(f"{', '.join(wrong)} do(es) not apply to a pretrained language model, which is cut to "
                          "--params P of its params (with --method, --width-allocation, --seed, --calibrate, "
                          "--multiple, --texts, --recovery, --recovery-steps, --recovery-minutes, --distill)")
    if args.params is None:
        raise LoritaError("say how much of the language model to keep: --params P (e.g. --params 0.8, the fraction "
                          "of its whole params)")
    if args.recovery == "none" and (args.recovery_steps is not None or args.recovery_minutes is not None
                                    or args.distill is not None):
        raise LoritaError("--recovery-steps, --recovery-minutes and --distill go with --recovery full or lora, not none")
    minutes = LM_RECOVERY_MINUTES if args.recovery_minutes is None else args.recovery_minutes
    if not isinstance(minutes, float) or not 0 <= minutes < 1e6:
        raise LoritaError(f"--recovery-minutes must be a number of minutes >= 0, got {minutes}")
    if args.recovery_steps is not None and not 1 <= args.recovery_steps <= 10**9:
        raise LoritaError(f"--recovery-steps must be a number of steps from 1 to 10^9, got {args.recovery_steps}")
    mode = args.recovery or "lora"
    values = {"calibrate": ("windows", args.calibrate), "texts": ("texts", args.texts),
              "method": ("method", args.method),
              "width_allocation": ("allocation", args.width_allocation), "seed": ("seed", args.seed)}
    try:
        recovery = None if mode == "none" else recovery_recipe(
            mode, seconds=60 * minutes,
            **({"steps": args.recovery_steps} if args.recovery_steps is not None else {}),
            **({"distill": args.distill} if args.distill is not None else {}))
        return LMCompression(params=args.params, multiple=args.multiple, recovery=recovery,
                             **{key: value for key, value in values.values() if value is not None})
    except LoritaError as err:
        raise _named_by_flag(err) from None


_FLAG_OF_FIELD = {"params": "--params", "windows": "--calibrate", "multiple": "--multiple", "seed": "--seed",
                  "allocation": "--width-allocation", "method": "--method", "distill": "--distill"}


def _named_by_flag(err: LoritaError) -> LoritaError:
    """``err`` about a field of ``LMCompression`` or its recovery recipe, led by the flag that set it.

    Example:
        >>> str(_named_by_flag(LoritaError("windows must be an integer >= 1, got 0")))
        '--calibrate: windows must be an integer >= 1, got 0'
    """
    text = str(err)
    field = text.split("=")[0].split(" ")[0]
    return LoritaError(f"{_FLAG_OF_FIELD[field]}: {text}") if field in _FLAG_OF_FIELD else err


def run(args: argparse.Namespace) -> int:
    from lorita.runs import compress_run
    from lorita.runs.lm import names_lm_source

    if names_lm_source(args.run):
        return run_lm(args)
    lm_flags = _given(args, _LM_ONLY)
    if lm_flags:
        raise LoritaError(f"{', '.join(lm_flags)} apply to a pretrained language model only; {args.run} is not one "
                          "(a packaged name, a .gguf file or a Hugging Face model folder)")
    how = cut_from_args(args)
    if args.finetune_epochs and not args.no_progress:
        require("tqdm", command="compress")
    results = compress_run(args.run, args.out, how, finetune_epochs=args.finetune_epochs,
                           finetune_lr=args.finetune_lr, overwrite=args.overwrite, progress=not args.no_progress)
    kept = results["kept"]
    final = results.get("after_int8") or results["after_finetune"] or results["after_cut"]
    if metric_named(results["metric"]) is LOSS:  # a language model: its loss (nats per character) and perplexity
        shown = " -> ".join(f"{r['test_loss']:.4f} (perplexity {math.exp(min(r['test_loss'], 700)):.3g})"
                            for r in (results["before"], final))
        print(f"{args.out}: params kept {100 * kept['params']:.1f}%, MACs kept {100 * kept['macs']:.1f}%, "
              f"test loss {shown}")
    else:
        print(f"{args.out}: params kept {100 * kept['params']:.1f}%, MACs kept {100 * kept['macs']:.1f}%, "
              f"test {results['before']['test_acc']:.2f}% -> {final['test_acc']:.2f}%")
    size = (Path(args.out) / "model.lorita").stat().st_size  # the source's file may hold a composed model's factors
    print(f"{Path(args.out) / 'model.lorita'}: {size / 1024:,.0f} KiB ({'int8' if args.int8 else 'float32'} weights)")
    if results["after_finetune"] is not None:
        print(_finetuning_kept(results["after_finetune"]["epoch_kept"], args.finetune_epochs))
    if results["ranks"] and set(results["dense_layers"]) == set(results["ranks"]):
        print(f"note: no layer was cut: each of the {len(results['ranks'])} rank(s) chosen is at or above its "
              "layer's break-even rank (a thin pair there would be no smaller than the dense layer), so the model "
              "is unchanged; ask for smaller ranks (e.g. a lower --rank or --ratio)", file=sys.stderr)
    if "latency" in results:
        lat = results["latency"]
        timed = f"{lat['final']['measured']:.3f}"
        if "final_int8" in lat:
            timed = f"{timed} in float, {lat['final_int8']['measured']:.3f} with its int8 weights"
        print(f"latency at batch {lat['batch']} ({lat['layout']}): asked {lat['latency']:.3f}, predicted "
              f"{lat['predicted']:.3f}, measured {lat['measured']:.3f} (the compressed model: {timed}) of the "
              f"dense model's {1e3 * lat['dense_s']:.2f} ms")
    return 0


def _finetuning_kept(epoch: int, epochs: int) -> str:
    """What the fine-tuning kept, in a line.

    Example:
        >>> _finetuning_kept(0, 5)
        'fine-tuning: no epoch beat the cut model on validation, so the cut model is kept'
    """
    if epoch:
        return f"fine-tuning: epoch {epoch} of {epochs} kept, the best on validation"
    return "fine-tuning: no epoch beat the cut model on validation, so the cut model is kept"


def run_lm(args: argparse.Namespace) -> int:
    from lorita.lm.sources import quiet_loading
    from lorita.runs.lm import compress_lm_run

    with quiet_loading(args.no_progress):  # transformers draws its own bars while it loads a model
        results = compress_lm_run(args.run, args.out, lm_from_args(args), overwrite=args.overwrite,
                                  progress=not args.no_progress)
    params = results["params"]
    print(f"{args.out}: params kept {100 * params['kept']:.1f}% ({params['cut']:,} of {params['dense']:,}) in "
          f"{results['seconds']['total'] / 60:.1f} min")
    final = results["after_recovery"] or results["after_cut"]
    for text, dense in results["dense"].items():
        steps = [f"dense {dense['ppl']:.2f}", f"cut {results['after_cut'][text]['ppl']:.2f}"]
        if results["after_recovery"]:
            steps.append(f"recovered {final[text]['ppl']:.2f}")
        print(f"perplexity on {text} ({dense['tokens']} tokens): {' -> '.join(steps)} "
              f"({final[text]['ppl'] / dense['ppl']:.2f}x dense)")
    return 0
