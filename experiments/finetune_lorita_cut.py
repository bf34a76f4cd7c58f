"""Does fine-tuning lift a LoRITa cut, and is the split of each thin pair into two factors why it does not?

Usage:
    python experiments/finetune_lorita_cut.py runs/converged/fcn-e60/p1p3g3/seed2/depth2-short --params 0.14 \\
        --out docs/converged/finetune_lorita_cut-seed2.json

Cuts the run's merged model to ``--params`` of its params (``lorita.cut(Budget(params=...))``), then fine-tunes
the same cut four ways, as an experiment's "+ FT" columns do (the run's recipe, ``--epochs`` long, cosine from its
lr / 10, no warm-up): as cut (each pair ``S^(1/2) V^T`` and ``U S^(1/2)``); without weight decay; and with each
pair rebalanced so that no direction's first factor is smaller than the median, or the 90th percentile, of the
layer's (``lorita.rebalance_pairs``; the product unchanged: a direction whose singular value is near zero is near
zero in both factors as cut, so neither factor's gradient can grow it). Prints and writes, per variant,
validation accuracy before, at the best epoch and at the last, and what ``lorita.train.finetune`` keeps (the best
epoch, or the cut when none beats it); per layer, the cut's rank and how many kept directions lie below 1% of the
layer's largest singular value.
The test split is not read.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time

import torch

import lorita
from lorita.cutspec import Budget
from lorita.errors import LoritaError
from lorita.lowrank import LOWRANK_TYPES
from lorita.runs import data_of, train_config_of, write_json
from lorita.train import evaluate, finetune


def direction_sizes(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Per thin pair, each kept direction's size: the product of its rows' norms in the two factors.

    Example:
        >>> w = torch.diag(torch.tensor([3.0, 2.0, 1e-4]))
        >>> layer = torch.nn.Linear(3, 3, bias=False)
        >>> _ = layer.weight.data.copy_(w)
        >>> [round(s, 4) for s in direction_sizes(torch.nn.Sequential(lorita.truncate(layer, 3)))["0"].tolist()]
        [3.0, 2.0, 0.0001]
    """
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LOWRANK_TYPES):
            first, second = module[0].weight.flatten(1), module[1].weight.flatten(1)
            out[name] = (first.norm(dim=1) * second.norm(dim=0)).detach()
    return out


def variant(small, data, recipe, quantile: float | None) -> dict:
    """One fine-tuning of a copy of ``small``: validation accuracy before, best, last, and what is kept."""
    model = copy.deepcopy(small)
    if quantile is not None:
        lorita.rebalance_pairs(model, quantile)
    before = evaluate(model, data.val)[0]
    tic = time.perf_counter()
    kept = finetune(model, data, recipe)
    history = kept.result.history
    return {"val_before": before, "val_best_epoch": kept.result.best_val_acc, "best_epoch": kept.result.best_epoch,
            "val_last_epoch": history[-1]["val_acc"], "epoch_kept": kept.epoch,
            "val_kept": evaluate(model.eval(), data.val)[0], "seconds": time.perf_counter() - tic}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a 'lorita train' run folder of a LoRITa model (depth 2 or more)")
    parser.add_argument("--params", type=float, required=True, help="the fraction of the params the cut keeps")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        config, data = train_config_of(args.run), data_of(args.run)
        dense = lorita.merge(lorita.load(f"{args.run}/model.lorita"))
        small, _ = lorita.cut(dense, Budget(params=args.params))
    except LoritaError as error:
        parser.error(str(error))
    recipe = dataclasses.replace(config.train, epochs=args.epochs, lr=config.train.lr / 10, warmup_epochs=0,
                                 schedule="cosine", device="cpu")
    layers = {name: {"rank": len(s), "below_1pct_of_largest": int((s < 0.01 * s.max()).sum())}
              for name, s in direction_sizes(small).items()}
    out = {"run": args.run, "params": args.params, "recipe": {"epochs": recipe.epochs, "lr": recipe.lr,
                                                              "weight_decay": recipe.weight_decay},
           "val_uncut": evaluate(dense, data.val)[0], "val_cut": evaluate(small, data.val)[0], "layers": layers,
           "variants": {}}
    print(json.dumps({k: v for k, v in out.items() if k != "variants"}), flush=True)
    for label, quantile, decay in (("as cut", None, True), ("no weight decay", None, False),
                                   ("rebalanced at the median", 0.5, True), ("rebalanced at the 90th pct", 0.9, True)):
        use = recipe if decay else dataclasses.replace(recipe, weight_decay=0.0)
        out["variants"][label] = variant(small, data, use, quantile)
        print(label, json.dumps(out["variants"][label]), flush=True)
    if args.out:
        write_json(args.out, out)  # atomically: no half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main())
