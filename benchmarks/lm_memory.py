"""Where a language model's cut (and recovery) spends its memory: resident memory at every step, on SmolLM2-135M.

Loads the packaged model, keeps it as the dense reference (as ``lorita compress`` does), and cuts a
copy with ``lorita.lm.cut.lm_cut`` while a logging handler on ``lorita.lm`` records, at each of its
debug messages (one per block and pass), the resident memory (``VmRSS``) and the peak since the
previous message (``VmHWM``, reset after each). Prints one line per message and a summary: the
resident memory before the cut and the cut's peak, in MB and in multiples of the model's size.

    flock /work/locks/heavy python benchmarks/lm_memory.py --calibration 64 --log /work/notes/lm2-mem.log
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

from lorita.lm.corpus import CALIBRATION_SOURCES, random_windows, tokenized_splits
from lorita.lm.cut import lm_cut
from lorita.lm.recover import RecoveryRecipe, recover
from lorita.lm.sources import load_pretrained
from procmem import guard, reset_peak, status_mb


class Steps(logging.Handler):
    """At each record: the message, resident memory now and its peak since the last record (then reset)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.rows: list[dict] = []
        self.tic = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        row = {"t": round(time.perf_counter() - self.tic, 1), "rss": round(status_mb("VmRSS")),
               "peak": round(status_mb("VmHWM")), "what": record.getMessage()}
        self.rows.append(row)
        print(f"{row['t']:8.1f} s  rss {row['rss']:6d} MB  peak {row['peak']:6d} MB  {row['what']}", flush=True)
        reset_peak()


def model_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="smollm2-135m")
    p.add_argument("--params", type=float, default=0.8)
    p.add_argument("--calibration", type=int, default=64, help="calibration windows of --window tokens")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--no-update", action="store_true")
    p.add_argument("--plain", action="store_true", help="plain SVD (no calibration pass): a quick cut of the same size")
    p.add_argument("--recovery-steps", type=int, default=0, help="then this many recovery steps (0: none)")
    p.add_argument("--recovery-mode", default="full", choices=["full", "lora"])
    p.add_argument("--distill", action="store_true", help="recovery by distillation from the dense model")
    p.add_argument("--max-rss-gb", type=float, default=6.0, help="stop the run if it holds more memory than this")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    guard(args.max_rss_gb)
    steps = Steps()
    lm_logger = logging.getLogger("lorita.lm")
    lm_logger.setLevel(logging.DEBUG)
    lm_logger.addHandler(steps)
    lm_logger.propagate = False
    dense, tokenizer = load_pretrained(args.source)
    splits = [tokenized_splits(tokenizer, name) for name in CALIBRATION_SOURCES]
    calibration = random_windows([s.train for s in splits], args.calibration, args.window)
    model = copy.deepcopy(dense)
    size = model_mb(dense)
    before = status_mb("VmRSS")
    reset_peak()
    lm_cut(model, calibration, params=args.params, whiten=not args.plain, update=not args.no_update)
    summary = {"model_mb": size, "rss_before_cut_mb": before, "cut_peak_mb": max(r["peak"] for r in steps.rows)}
    summary["cut_over_model"] = (summary["cut_peak_mb"] - before) / size
    print(f"model {size:.0f} MB; resident {before:.0f} MB before the cut, {summary['cut_peak_mb']:.0f} MB at its "
          f"peak: {summary['cut_over_model']:.2f}x the model on top", flush=True)
    if args.recovery_steps:
        start = len(steps.rows)
        before = status_mb("VmRSS")
        reset_peak()
        recipe = RecoveryRecipe(steps=args.recovery_steps, mode=args.recovery_mode, distill=float(args.distill),
                                eval_tokens=512)
        done = recover(model, [s.train for s in splits], [s.val for s in splits], recipe,
                       teacher=dense if args.distill else None)
        summary["recovery"] = done.to_dict()
        print(f"recovery: {done.steps} steps of {recipe.batch_size} x {recipe.context} tokens in {done.seconds:.0f} s "
              f"({done.seconds / done.steps:.1f} s a step, validation included)", flush=True)
        peak = max([r["peak"] for r in steps.rows[start:]] + [status_mb("VmHWM")])
        summary.update({"rss_before_recovery_mb": before, "recovery_peak_mb": peak,
                        "recovery_over_model": (peak - before) / size})
        print(f"recovery: resident {before:.0f} MB before, {peak:.0f} MB at its peak: "
              f"{summary['recovery_over_model']:.2f}x the model on top", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "summary": summary,
                                         "steps": steps.rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
