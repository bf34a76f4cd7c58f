"""``lorita compress``: cut a trained run to low rank, optionally fine-tune, into a new folder."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

import lorita
from lorita.cli.common import dataset_of, prepare_out, read_json, train_config_of, write_json
from lorita.errors import LoritaError
from lorita.linalg import check_finite
from lorita.targets import skipped_layers

EXAMPLE = """example:
  lorita compress runs/fcn-d3 --energy 0.95 --out runs/fcn-d3-e95
  lorita compress runs/fcn-d3 --strategy budget --flops 0.3 --finetune-epochs 5 --out runs/fcn-d3-f30
  lorita compress runs/fcn-d3 --strategy accuracy --max-drop 1.0 --out runs/fcn-d3-acc
"""


def add_parser(sub) -> None:
    p = sub.add_parser("compress", help="cut a trained run to low rank (truncated SVD, two thin layers)",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder written by 'lorita train'")
    p.add_argument("--strategy", choices=["uniform", "energy", "global", "budget", "accuracy"],
                   help="rank selection (default: energy if --energy, uniform if --ratio)")
    p.add_argument("--energy", type=float, help="energy strategy: fraction of sum(sigma^2) kept per layer")
    p.add_argument("--ratio", type=float, help="uniform strategy: fraction of singular values kept per layer")
    p.add_argument("--threshold", type=float, help="global strategy: keep sigma/sigma_max >= threshold")
    p.add_argument("--params", type=float, help="budget strategy: target fraction of the original params")
    p.add_argument("--flops", type=float, help="budget strategy: target fraction of the original FLOPs")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy strategy: validation points allowed")
    p.add_argument("--max-evals", type=int, default=12, help="accuracy strategy: evaluations allowed")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune the cut model (default 0: no)")
    p.add_argument("--finetune-lr", type=float, help="fine-tuning learning rate (default: the run's lr / 10)")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def strategy_options(args: argparse.Namespace) -> tuple[str, dict]:
    """(strategy, options) from the flags, with a clear error for a wrong combination."""
    strategy = args.strategy or ("energy" if args.energy is not None else "uniform" if args.ratio is not None else None)
    if strategy is None:
        raise LoritaError("say how to cut: --energy E, --ratio R, or --strategy with its option "
                          "(e.g. --strategy budget --flops 0.3)")
    needs = {"uniform": ["ratio"], "energy": ["energy"], "global": ["threshold"], "budget": [], "accuracy": []}
    options = {k: getattr(args, k) for k in needs[strategy]}
    missing = [f"--{k}" for k, v in options.items() if v is None]
    if strategy == "budget":
        if (args.params is None) == (args.flops is None):
            raise LoritaError("--strategy budget takes exactly one of --params or --flops (target fractions)")
        options = {"params": args.params} if args.params is not None else {"flops": args.flops}
    if strategy == "accuracy":
        options = {"max_drop": args.max_drop, "max_evals": args.max_evals}
    if missing:
        raise LoritaError(f"--strategy {strategy} needs {', '.join(missing)}")
    return strategy, options


def run(args: argparse.Namespace) -> int:
    results = compress_run(args.run, args.out, *strategy_options(args), finetune_epochs=args.finetune_epochs,
                           finetune_lr=args.finetune_lr, overwrite=args.overwrite, progress=not args.no_progress)
    kept = results["kept"]
    final = results["after_finetune"] or results["after_cut"]
    print(f"{args.out}: params kept {100 * kept['params']:.1f}%, MACs kept {100 * kept['macs']:.1f}%, "
          f"test {results['before']['test_acc']:.2f}% -> {final['test_acc']:.2f}%")
    return 0


def _finetune_fn(data, source_config: dict, epochs: int, lr: float | None, progress: bool):
    from lorita.train import TrainConfig, train

    base = TrainConfig.from_dict(source_config["train"])
    config = dataclasses.replace(base, epochs=epochs, lr=lr if lr is not None else base.lr / 10,
                                 warmup_epochs=0, schedule="cosine")

    def finetune(model):
        result = train(model, data, config, progress=progress)
        if result.best_state is not None:
            model.load_state_dict(result.best_state)
        return model.cpu().eval()

    return finetune, config


def compress_run(source: str | Path, out: str | Path, strategy: str, options: dict, *, finetune_epochs: int = 0,
                 finetune_lr: float | None = None, overwrite: bool = False, progress: bool = True,
                 data=None) -> dict:
    """Compress the run in ``source`` into ``out`` and return its results.json content."""
    from lorita.select import search_accuracy, select_ranks
    from lorita.train import evaluate

    source = Path(source)
    read_json(source / "results.json", "'lorita train'")
    if not (source / "model.lorita").is_file():
        raise LoritaError(f"{source} has no model.lorita: did 'lorita train' finish there?")
    if finetune_epochs < 0:
        raise LoritaError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    train_config = train_config_of(source)
    start = time.time()
    data = data if data is not None else dataset_of(source)
    merged = lorita.merge(lorita.load(source / "model.lorita"), inplace=True).eval()  # no second copy
    for name, p in merged.named_parameters():  # a damaged model: name the layer before anything is written
        check_finite(p.detach(), name)
    example = torch.zeros(1, data.in_channels, data.image_size, data.image_size)
    original = lorita.profile(merged, example)
    before_val, before_test = evaluate(merged, data.val)[0], evaluate(merged, data.test)[0]
    finetune, ft_config = (None, None)
    if finetune_epochs:
        finetune, ft_config = _finetune_fn(data, train_config, finetune_epochs, finetune_lr, progress)
    prepare_out(out, overwrite)
    out = Path(out)
    write_json(out / "config.json", {"command": "compress", "source": str(source), "strategy": strategy,
                                     "options": options, "finetune": ft_config.to_dict() if ft_config else None})
    search = None
    evaluations = 2  # before: validation and test
    if strategy == "accuracy":
        found = search_accuracy(merged, lambda m: evaluate(m, data.val)[0], finetune=None, **options)
        ranks, search = found.ranks, found.search
        evaluations += found.evaluations
    elif strategy == "budget" and "flops" in options:
        ranks = select_ranks(merged, strategy, example_input=example, **options)
    else:
        ranks = select_ranks(merged, strategy, **options)
    small = lorita.compress(merged, ranks=ranks).eval()
    cut = lorita.profile(small, example)
    after_cut = {"params": cut.params, "macs": cut.macs, "flops": cut.flops,
                 "val_acc": evaluate(small, data.val)[0], "test_acc": evaluate(small, data.test)[0]}
    after_finetune = None
    if finetune is not None:
        small = finetune(small)
        after_finetune = {"val_acc": evaluate(small, data.val)[0], "test_acc": evaluate(small, data.test)[0]}
    lowrank = {n: m.rank for n, m in small.named_modules() if isinstance(m, (lorita.LowRankLinear, lorita.LowRankConv2d))}
    results = {
        "command": "compress", "source": str(source), "strategy": strategy, "options": options,
        "ranks": {n: int(r) for n, r in ranks.items()}, "dense_layers": sorted(set(ranks) - set(lowrank)),
        "skipped_layers": skipped_layers(merged),
        "original": {"params": original.params, "macs": original.macs, "flops": original.flops},
        "before": {"val_acc": before_val, "test_acc": before_test},
        "after_cut": after_cut, "after_finetune": after_finetune,
        "kept": {k: cut_value / max(getattr(original, k), 1) for k, cut_value in
                 (("params", cut.params), ("macs", cut.macs), ("flops", cut.flops))},
        "evaluations": evaluations,
        "search": [dataclasses.asdict(s) for s in search.steps] if search is not None else None,
        "seconds": time.time() - start,
        "units": {"params": "count", "macs": "multiply-accumulates per example", "flops": "2 x MACs per example",
                  "acc": "percent"},
    }
    lorita.save(small, out / "model.lorita")
    write_json(out / "results.json", results)
    return results
