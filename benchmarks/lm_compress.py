"""A pretrained LM (SmolLM2-135M, packaged) cut to a share of its params by every method, with recovery.

For each params budget and method: cut a fresh copy of the dense model, measure perplexity on
held-out text (validation documents of the calibration sources; the test documents and the
Debian licence texts for the report), optionally recover by fine-tuning, measure again. Methods:

* ``plain``: plain SVD of each weight, ranks by ``budget_ranks`` on the plain spectra;
* ``whitened``: SVD-LLM whitening (Cholesky of the calibration Gram), non-uniform ranks from
  the whitened spectra under the whole-model budget;
* ``whitened-update``: the same plus the closed-form refit of the second factor on the cut
  model's own inputs, block by block (``lorita.lm.cut``);
* ``lorita``: ``lorita.lm.induce`` (compose with ``preserve``, weight decay on the factors, merge)
  for part of the training budget, then ``whitened-update`` and recovery with the rest;
* ``width``: structured pruning of the MLP channels with Torch-Pruning's group L2-norm importance
  (``lorita.lm.width``; Torch-Pruning itself does not finish building its graph of a Llama here);
* ``width-act``: the same pruning with channels ranked by their activations on the calibration
  windows (Wanda-SP / FLAP's importance; ``lorita.lm.width.activation_importance``);
* ``width-refit``: ``width-act`` plus the closed-form refit of ``down_proj`` on the kept channels
  (``lorita.lm.width.refit_down_proj``; what ``LMCompression(method="width")`` does);
* ``width-global``: ``width-refit`` with widths that differ by block, one ranking of the channels'
  shares of their block's importance over all blocks (``prune_width(allocation="global")``).

Every figure is printed as it is measured and the whole run written to ``--json``. Heavy: run
it under the machine-wide lock, e.g.

    flock /work/locks/heavy python benchmarks/lm_compress.py --budgets 0.8 --methods whitened \\
        --json docs/lm/probe.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import resource
import sys
import time
from pathlib import Path

import torch

from lorita.lm.corpus import CALIBRATION_SOURCES, random_windows, read_documents, encode, tokenized_splits
from lorita.lm.cut import count_params, lm_cut
from lorita.lm.deploy import generate, load_lm, save_lm, speed
from lorita.lm.induce import induce, penalty_exposure
from lorita.lm.perplexity import perplexity
from lorita.lm.pipeline import LMCompression
from lorita.lm.recover import LEARNING_RATES, RecoveryRecipe, recover
from lorita.lm.sources import load_pretrained, resolve_source
from lorita.lm.width import prune_width, pruned_linears
from lorita.runs.experiment import machine
from lorita.runs.lm import write_lm_run
from lorita.runs.output import RunOutput
from procmem import guard, reset_peak, status_mb

METHODS = ("plain", "whitened", "whitened-update", "lorita", "width", "width-act", "width-refit", "width-global")
PROMPTS = ("The meaning of life is", "A list in Python is", "Once upon a time,")


def deployed(model, tokenizer, prompt_ids, args) -> dict:
    """Batch-1 speed and greedy samples of a model, when ``--speed`` asks for them."""
    if not args.speed:
        return {}
    timing = speed(model, prompt_ids, new_tokens=args.new_tokens, repeats=args.repeats).to_dict()
    samples = {p: generate(model, tokenizer, p, new_tokens=24) for p in PROMPTS}
    log(f"  prefill {timing['prefill_tokens_per_s']:.0f} tok/s, decode {timing['decode_tokens_per_s']:.1f} tok/s")
    return {"speed": timing, "samples": samples}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def texts(tokenizer, eval_tokens: int, seed: int) -> tuple[dict, dict]:
    """Token streams: ``train`` (per calibration source), and the evaluation streams by name."""
    splits = {name: tokenized_splits(tokenizer, name, seed=seed) for name in CALIBRATION_SOURCES}
    licences = encode(tokenizer, read_documents("licenses"))
    evals = {f"{name}-val": s.val[:eval_tokens] for name, s in splits.items()}
    evals.update({f"{name}-test": s.test[:eval_tokens] for name, s in splits.items()})
    evals["licenses"] = licences[:eval_tokens]
    return splits, evals


def measure(model, evals: dict, which: list[str], context: int) -> dict:
    tic = time.perf_counter()
    out = {name: perplexity(model, evals[name], context=context).ppl for name in which}
    log(f"  ppl {', '.join(f'{k} {v:.3f}' for k, v in out.items())} ({time.perf_counter() - tic:.0f} s)")
    return out


def cut(model, method: str, budget: float, calibration, args) -> dict:
    if method.startswith("width"):
        return prune_width(model, budget, calibration=None if method == "width" else calibration,
                           update=method in ("width-refit", "width-global"),
                           allocation="global" if method == "width-global" else "uniform")
    done = lm_cut(model, calibration, params=budget, whiten=method != "plain",
                  update=method in ("whitened-update", "lorita"), multiple=args.multiple)
    return done.to_dict()


def recipe(args, steps: int, mode: str = "full", **changes) -> RecoveryRecipe:
    """The recovery recipe the flags describe, for ``steps`` steps."""
    values = dict(steps=steps, batch_size=args.batch, context=args.train_context, lr=args.lr if mode == "full"
                  else args.lora_lr, warmup=args.warmup, distill=args.distill, mode=mode, lora_rank=args.lora_rank,
                  eval_every=args.eval_every, eval_tokens=args.train_eval_tokens, seed=args.seed,
                  seconds=60 * args.recovery_minutes)
    return RecoveryRecipe(**{**values, **changes})


def cached_cut(dense, method: str, budget: float, calibration, args) -> tuple[object, dict]:
    """A fresh cut of the dense model, or the one ``--cut-cache`` holds for the same method, budget and calibration."""
    folder = None
    if args.cut_cache is not None and method != "lorita":
        folder = args.cut_cache / f"{method}-{budget:g}-c{args.calibration}x{args.calibration_context}-m{args.multiple}"
        if (folder / "cut.json").is_file():
            model, _ = load_lm(folder, tokenizer=False)
            log(f"  the cut loaded from {folder}")
            return model, json.loads((folder / "cut.json").read_text())
    model = copy.deepcopy(dense)
    tic = time.perf_counter()
    base_mb = status_mb("VmRSS")
    reset_peak()
    info = cut(model, method, budget, calibration, args)
    info["cut_seconds"] = time.perf_counter() - tic
    info["cut_memory_mb"] = {"before": base_mb, "peak": status_mb("VmHWM"),
                             "model": sum(p.numel() * p.element_size() for p in dense.parameters()) / 1e6}
    memory = info["cut_memory_mb"]
    log(f"  cut in {info['cut_seconds']:.0f} s; resident memory {memory['before']:.0f} MB before, "
        f"{memory['peak']:.0f} MB at the peak (the model: {memory['model']:.0f} MB)")
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        save_lm(model, None, folder)
        (folder / "cut.json").write_text(json.dumps(info))
    return model, info


def one(dense, method: str, budget: float, calibration, splits, evals, args, extras) -> dict:
    log(f"{method} at {budget:g} of the params")
    row = {"method": method, "budget": budget}
    train_ids = [s.train for s in splits.values()]
    val_ids = [s.val for s in splits.values()]
    teacher = dense if args.distill > 0 else None
    if method == "lorita":
        model = copy.deepcopy(dense)
        how = recipe(args, args.induce_steps, lr=args.induce_lr, weight_decay=args.induce_decay, seconds=0.0,
                     optimizer=args.induce_optimizer)
        log(f"  induce: {how.steps} steps, penalty exposure {penalty_exposure(how):.3g}")
        result = induce(model, train_ids, val_ids, how, teacher=teacher)
        row["induce"] = {**result.to_dict(), "recipe": how.to_dict(), "exposure": penalty_exposure(how)}
        row["after_induce"] = measure(model, evals, args.report, args.context)
        info = cut(model, method, budget, calibration, args)
    else:
        model, info = cached_cut(dense, method, budget, calibration, args)
    row["cut"] = {k: v for k, v in info.items() if k != "ranks"}
    row["ranks"] = info.get("ranks")
    row["kept"] = count_params(model) / count_params(dense)
    log(f"  kept {row['kept']:.4f} of the params")
    row["after_cut"] = None if args.skip_before else measure(model, evals, args.report, args.context)
    steps = args.steps - (args.induce_steps if method == "lorita" else 0)
    for index, mode in enumerate(args.recovery if steps > 0 else []):
        last = index == len(args.recovery) - 1
        recovered = model if last else copy.deepcopy(model)  # every mode starts from the same cut; the last keeps it
        how = recipe(args, steps, mode)
        layers = pruned_linears(recovered) if method.startswith("width") else None
        base_mb = status_mb("VmRSS")
        reset_peak()
        result = recover(recovered, train_ids, val_ids, how, layers=layers, teacher=teacher)
        row[f"recovery_{mode}"] = {**result.to_dict(), "recipe": how.to_dict(),
                                   "memory_mb": {"before": base_mb, "peak": status_mb("VmHWM")},
                                   "ppl": measure(recovered, evals, args.report, args.context)}
        log(f"  recovery ({mode}, {result.steps} steps) in {result.seconds:.0f} s, resident memory {base_mb:.0f} MB "
            f"before, {status_mb('VmHWM'):.0f} MB at the peak")
        if args.save_run is not None:
            save_run(recovered, row, how, f"{method}-{budget:g}-{mode}", args)
    row.update(deployed(model, extras["tokenizer"], extras["prompt"], args))
    return row


def save_run(model, row: dict, how: RecoveryRecipe, name: str, args) -> None:
    """The recovered model as a language-model run folder (``lorita evaluate RUN --text FILE`` reads it)."""
    compression = LMCompression(params=row["budget"], windows=args.calibration, window=args.calibration_context,
                                multiple=args.multiple, recovery=how, eval_tokens=args.eval_tokens,
                                context=args.context, seed=args.seed)
    with RunOutput(args.save_run / name, overwrite=True) as folder:
        write_lm_run(folder, resolve_source(args.source), compression, model, {"benchmark": row})
    log(f"  saved as a run: {args.save_run / name}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="smollm2-135m")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.9, 0.8, 0.7, 0.6])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--calibration", type=int, default=64, help="calibration windows")
    p.add_argument("--calibration-context", type=int, default=256)
    p.add_argument("--multiple", type=int, default=1, help="round cut ranks to this multiple")
    p.add_argument("--context", type=int, default=512, help="evaluation window (tokens)")
    p.add_argument("--eval-tokens", type=int, default=4096, help="tokens of each evaluation text")
    p.add_argument("--report", nargs="+", default=["fortunes-val", "python-docs-val"],
                   help="evaluation texts measured (fortunes/python-docs -val/-test, licenses)")
    p.add_argument("--steps", type=int, default=0, help="training steps after the cut (lorita: in all)")
    p.add_argument("--recovery", nargs="+", default=["full"], choices=["full", "lora"])
    p.add_argument("--recovery-minutes", type=float, default=0.0,
                   help="wall-clock budget of each recovery (then --steps is the most): equal for every mode")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--train-context", type=int, default=256)
    p.add_argument("--lr", type=float, default=LEARNING_RATES["full"])
    p.add_argument("--lora-lr", type=float, default=LEARNING_RATES["lora"])
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--warmup", type=float, default=0.05, help="share of the training steps warming up")
    p.add_argument("--distill", type=float, default=0.0, help="weight of the dense model's prediction in the target")
    p.add_argument("--eval-every", type=int, default=0, help="validation every N training steps (0: start and end)")
    p.add_argument("--train-eval-tokens", type=int, default=2048, help="validation tokens of each source in training")
    p.add_argument("--cut-cache", type=Path, help="save each cut here and reuse it in later runs")
    p.add_argument("--save-run", type=Path, help="save each recovered model here as a run folder (lorita evaluate)")
    p.add_argument("--skip-before", action="store_true",
                   help="do not measure the dense model and the cut before recovery (known from an earlier run)")
    p.add_argument("--induce-steps", type=int, default=0)
    p.add_argument("--induce-lr", type=float, default=1e-3)
    p.add_argument("--induce-decay", type=float, default=1e-2)
    p.add_argument("--induce-optimizer", default="sgd", choices=["sgd", "adamw"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", action="store_true", help="time prefill/decode at batch 1 and generate samples")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-rss-gb", type=float, default=8.0,
                   help="stop the run if it holds more memory than this (the lorita method's induce step holds "
                        "6.0-6.1 GB, docs/LM.md; the other methods under 4)")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    guard(args.max_rss_gb)
    torch.manual_seed(args.seed)
    tic = time.perf_counter()
    dense, tokenizer = load_pretrained(args.source)
    log(f"loaded {args.source}: {count_params(dense):,} params in {time.perf_counter() - tic:.0f} s")
    splits, evals = texts(tokenizer, args.eval_tokens, args.seed)
    log("tokens: " + ", ".join(f"{n} train {len(s.train)} val {len(s.val)} test {len(s.test)}"
                               for n, s in splits.items()) + f", licenses {len(evals['licenses'])} (capped)")
    calibration = random_windows([s.train for s in splits.values()], args.calibration, args.calibration_context,
                                 seed=args.seed)
    out = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "machine": machine(),
           "dense": {"params": count_params(dense),
                     "ppl": None if args.skip_before else measure(dense, evals, args.report, args.context)},
           "rows": []}
    extras = {"tokenizer": tokenizer, "prompt": evals["licenses"][: args.prompt_tokens]}
    out["dense"].update(deployed(dense, tokenizer, extras["prompt"], args))
    for budget in args.budgets:
        for method in args.methods:
            out["rows"].append(one(dense, method, budget, calibration, splits, evals, args, extras))
            out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=1))
    log(f"done in {time.perf_counter() - tic:.0f} s; peak RSS {out.get('peak_rss_mib', 0):.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
