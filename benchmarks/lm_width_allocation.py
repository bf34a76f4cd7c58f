"""Width pruning of a pretrained LM with one width for every block, or widths that differ by block.

Prunes SmolLM2-135M's MLP channels (``lorita.lm.width.prune_width`` with the activation ranking
and the ``down_proj`` refit, as ``lorita compress --method width`` does) to each params budget,
and prints the perplexity of each pruned model, before any recovery, on the validation documents
of the calibration sources (the choice is made on these) and on the Debian licence texts (never
seen; reported only). Allocations:

* ``uniform``: every block keeps the same width (``allocation="uniform"``, the default);
* ``median``: one ranking over all blocks of each channel's importance over its block's median
  (``allocation="global"``: ``lorita.lm.width.global_widths`` with its default, ``over_median``);
* ``share``: the same ranking with each importance divided by its block's sum (its share of
  the block);
* ``zscore``: FLAP's standardisation, ``(importance - block mean) / block standard deviation``.

The last two are passed to ``global_widths`` as its ``normalize`` here only: they were measured
against the median (docs/LM.md), and lost. Heavy (about 10 minutes on 2 cores): run it under the
machine-wide lock, e.g.

    flock /work/locks/heavy python benchmarks/lm_width_allocation.py --json docs/lm/width-allocation/before.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from lm_texts import calibration_and_validation

from lorita.lm import width
from lorita.lm.cut import count_params
from lorita.lm.perplexity import perplexity
from lorita.lm.sources import load_pretrained
from lorita.runs.experiment import machine

ALLOCATIONS = ("uniform", "share", "median", "zscore")  # the order of the committed run
NORMALIZE = {
    "share": lambda s: s.double() / s.double().sum().clamp_min(1e-300),
    "median": width.over_median,
    "zscore": lambda s: (s.double() - s.double().mean()) / s.double().std().clamp_min(1e-300),
}
LIBRARY = width.global_widths


def allocated(normalize):
    """``global_widths`` with its normalisation replaced (what ``prune_width(allocation="global")`` calls)."""
    return lambda scores, total: LIBRARY(scores, total, normalize=normalize)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default="smollm2-135m")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.8, 0.6])
    p.add_argument("--allocations", nargs="+", default=list(ALLOCATIONS), choices=ALLOCATIONS)
    p.add_argument("--calibration", type=int, default=64, help="calibration windows (lorita compress's default)")
    p.add_argument("--calibration-context", type=int, default=256)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    tic = time.perf_counter()
    dense, tokenizer = load_pretrained(args.source)
    calibration, evals = calibration_and_validation(tokenizer, windows=args.calibration,
                                                    context=args.calibration_context, eval_tokens=args.eval_tokens,
                                                    seed=args.seed)

    def scored(model) -> dict:
        return {name: perplexity(model, ids, context=args.context).ppl for name, ids in evals.items()}

    out = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "machine": machine(),
           "dense": scored(dense), "rows": []}
    log(f"dense: {out['dense']}")
    for budget in args.budgets:
        for allocation in args.allocations:
            model = copy.deepcopy(dense)
            width.global_widths = LIBRARY if allocation == "uniform" else allocated(NORMALIZE[allocation])
            start = time.perf_counter()
            info = width.prune_width(model, budget, calibration=calibration,
                                     allocation="uniform" if allocation == "uniform" else "global")
            seconds = time.perf_counter() - start
            ppl = scored(model)
            row = {"budget": budget, "allocation": allocation, "kept": count_params(model) / count_params(dense),
                   "widths": info["mlp_widths"], "seconds": seconds, "ppl": ppl}
            out["rows"].append(row)
            log(f"{budget:g} {allocation}: kept {row['kept']:.4f}, widths {min(row['widths'])}-{max(row['widths'])}, "
                + ", ".join(f"{k} {v:.2f}" for k, v in ppl.items()))
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=1))
    width.global_widths = LIBRARY
    log(f"done in {time.perf_counter() - tic:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
