"""How MLP channels are ranked decides width pruning of a pretrained LM: weights, activations, or chance.

Prunes SmolLM2-135M's MLP channels (``lorita.lm.width.prune_width``, the same width in every
block) to each params budget, choosing the channels kept four ways, and prints the perplexity
of each pruned model (no recovery) on the fortunes validation documents:

* ``weights``: Torch-Pruning's group L2-norm importance (``channel_importance``);
* ``activations``: Wanda-SP / FLAP's importance on the calibration windows
  (``activation_importance``: input energy to ``down_proj`` times its column norm);
* ``random``: channels kept at random (seeded), the floor any importance must beat;
* ``weights-reversed``: the weight ranking upside down (the largest weights pruned first).

Heavy (a few minutes on 2 cores): run it under the machine-wide lock, e.g.

    flock /work/locks/heavy python benchmarks/lm_width_ranking.py --json docs/lm/width-ranking.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from lorita.lm.corpus import CALIBRATION_SOURCES, random_windows, tokenized_splits
from lorita.lm.perplexity import perplexity
from lorita.lm.sources import load_pretrained
from lorita.lm import width
from lorita.runs.experiment import machine

RANKINGS = ("weights", "activations", "random", "weights-reversed")
BY_WEIGHTS = width.channel_importance  # before any ranking below stands in for it


def ranked(ranking: str, seed: int):
    """The importance function ``prune_width`` calls for each MLP under a weight-only ``ranking``."""
    if ranking == "random":
        generator = torch.Generator().manual_seed(seed)
        return lambda mlp: torch.rand(mlp.up_proj.out_features, generator=generator)
    if ranking == "weights-reversed":
        return lambda mlp: -BY_WEIGHTS(mlp)
    return BY_WEIGHTS


def pruned(dense, ranking: str, budget: float, calibration: torch.Tensor, seed: int):
    """A copy of ``dense`` with its MLP channels pruned to ``budget`` of the params, ranked by ``ranking``."""
    model = copy.deepcopy(dense)
    if ranking == "activations":
        return model, width.prune_width(model, budget, calibration=calibration, update=False)  # the ranking alone
    width.channel_importance = ranked(ranking, seed)
    try:
        info = width.prune_width(model, budget)
    finally:
        width.channel_importance = BY_WEIGHTS
    return model, info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="smollm2-135m")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.97, 0.9, 0.8])
    p.add_argument("--rankings", nargs="+", default=list(RANKINGS), choices=RANKINGS)
    p.add_argument("--calibration", type=int, default=64, help="calibration windows (as lm_compress.py)")
    p.add_argument("--calibration-context", type=int, default=256)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    dense, tokenizer = load_pretrained(args.source)
    splits = {name: tokenized_splits(tokenizer, name, seed=args.seed) for name in CALIBRATION_SOURCES}
    calibration = random_windows([s.train for s in splits.values()], args.calibration, args.calibration_context,
                                 seed=args.seed)
    ids = splits["fortunes"].val[: args.eval_tokens]
    out = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "machine": machine(),
           "dense_ppl": perplexity(dense, ids, context=args.context).ppl, "rows": []}
    print(f"dense: fortunes-val ppl {out['dense_ppl']:.2f}", flush=True)
    print("| params kept | MLP width | " + " | ".join(args.rankings) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in args.rankings) + " |")
    for budget in args.budgets:
        cells = []
        for ranking in args.rankings:
            tic = time.perf_counter()
            model, info = pruned(dense, ranking, budget, calibration, args.seed)
            ppl = perplexity(model, ids, context=args.context).ppl
            out["rows"].append({"budget": budget, "ranking": ranking, "kept": info["kept"],
                                "mlp_width": info["mlp_width"], "ppl": ppl, "seconds": time.perf_counter() - tic})
            cells.append(f"{ppl:,.1f}")
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=1))
        print(f"| {info['kept']:.1%} | {info['mlp_width']} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
