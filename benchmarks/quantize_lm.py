"""int8 after the cut on a pretrained LM (SmolLM2-135M, packaged): four variants, size, speed, perplexity.

Variants: ``dense fp32`` (the packaged model, dequantized to float32 by transformers),
``dense int8`` (``lorita.quantize(dense, "int8")``), ``low-rank fp32`` (``lorita.lm.cut.lm_cut``:
whitened SVD, non-uniform ranks under the whole-model budget ``--params``, closed-form
update of the second factor unless ``--no-update``; no recovery) and ``low-rank int8`` (the cut quantized). For each:
the ``lorita.save`` file's bytes, prefill and decode speed at batch 1
(``lorita.lm.deploy.speed``: a ``--prompt-tokens`` prompt from the licence texts, greedy
decode of ``--new-tokens``), and perplexity on the fortunes validation windows
(``lorita.lm.perplexity``: the first ``--eval-tokens`` tokens of the held-out fortunes
documents, windows of 512, as docs/LM.md).

Two steps, each short enough for one turn of a shared machine's lock:

    flock /work/locks/heavy python benchmarks/quantize_lm.py cut --out runs/quantize-lm
    flock /work/locks/heavy python benchmarks/quantize_lm.py measure --out runs/quantize-lm

``cut`` writes the cut model to ``OUT/low-rank-fp32/`` (``lorita.lm.deploy.save_lm``);
``measure`` reads it back, builds the other variants, writes the four ``.lorita`` files,
``results.json`` and ``report.md`` in ``OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

import lorita
from lorita.atomic import atomic_write_text
from lorita.lm.corpus import CALIBRATION_SOURCES, random_windows, tokenized_splits
from lorita.lm.cut import count_params, lm_cut
from lorita.lm.deploy import load_lm, save_lm, speed
from lorita.lm.perplexity import perplexity
from lorita.lm.sources import load_pretrained
from lm_compress import log, texts
from quantize import cpu_name

VARIANTS = ("dense fp32", "dense int8", "low-rank fp32", "low-rank int8")
CUT_FOLDER = "low-rank-fp32"


def quantized(model):
    """The int8 copy; the tied head (one tensor with the embedding) is left in float, as lorita.quantize says."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"lorita\.quantize left")
        return lorita.quantize(model, "int8").eval()


def step_cut(args) -> None:
    tic = time.perf_counter()
    model, tokenizer = load_pretrained(args.source)
    log(f"loaded {args.source} in {time.perf_counter() - tic:.0f} s")
    splits = [tokenized_splits(tokenizer, name, seed=args.seed) for name in CALIBRATION_SOURCES]
    calibration = random_windows([s.train for s in splits], args.calibration, args.calibration_context,
                                 seed=args.seed)
    done = lm_cut(model, calibration, params=args.params, whiten=True, update=args.update)
    log(f"cut to {done.kept:.4f} of the params in {done.seconds['total']:.0f} s")
    folder = args.out / CUT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    save_lm(model, tokenizer, folder)
    info = {"params": args.params, "update": args.update, "calibration_windows": args.calibration,
            "calibration_context": args.calibration_context, **done.to_dict()}
    atomic_write_text(args.out / "cut.json", json.dumps(info, indent=1) + "\n")


def measure_one(name: str, model, args, fortunes, prompt) -> dict:
    path = args.out / f"{name.replace(' ', '-')}.lorita"
    lorita.save(model, path)
    tic = time.perf_counter()
    ppl = perplexity(model, fortunes, context=512).ppl
    seconds = time.perf_counter() - tic
    timing = speed(model, prompt, new_tokens=args.new_tokens, repeats=args.repeats).to_dict()
    row = {"bytes": path.stat().st_size, "params": count_params(model), "fortunes_val_ppl": ppl,
           "ppl_seconds": seconds, **timing}
    log(f"{name}: {row['bytes'] / 2**20:.1f} MiB, fortunes val ppl {ppl:.3f}, prefill "
        f"{timing['prefill_tokens_per_s']:.0f} tok/s, decode {timing['decode_tokens_per_s']:.1f} tok/s")
    return row


def step_measure(args) -> None:
    tic = time.perf_counter()
    dense, tokenizer = load_pretrained(args.source)
    log(f"loaded {args.source} in {time.perf_counter() - tic:.0f} s")
    _, evals = texts(tokenizer, args.eval_tokens, args.seed)
    fortunes, prompt = evals["fortunes-val"], evals["licenses"][: args.prompt_tokens]
    rows = {}
    rows["dense fp32"] = measure_one("dense fp32", dense.eval(), args, fortunes, prompt)
    rows["dense int8"] = measure_one("dense int8", quantized(dense), args, fortunes, prompt)
    del dense
    cut, _ = load_lm(args.out / CUT_FOLDER, tokenizer=False)
    rows["low-rank fp32"] = measure_one("low-rank fp32", cut.eval(), args, fortunes, prompt)
    rows["low-rank int8"] = measure_one("low-rank int8", quantized(cut), args, fortunes, prompt)
    results = {"machine": f"{cpu_name()} ({os.cpu_count()} cores seen)", "torch": torch.__version__,
               "threads": torch.get_num_threads(), "command": "python benchmarks/quantize_lm.py " + " ".join(
                   sys.argv[1:]), "cut": json.loads((args.out / "cut.json").read_text()), "variants": rows}
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(args.out / "report.md", report(results))
    print(report(results))


def report(results: dict) -> str:
    rows = results["variants"]
    base = rows["low-rank fp32"]
    lines = [f"Machine: {results['machine']}; torch {results['torch']}, {results['threads']} thread(s). "
             f"Cut: {results['cut']['params']:g} of the params asked, {results['cut']['kept']:.4f} kept.", "",
             "| variant | file (MB) | vs low-rank fp32 | fortunes val ppl | prefill tok/s | decode tok/s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for variant in VARIANTS:
        r = rows[variant]
        lines.append(f"| {variant} | {r['bytes'] / 1e6:.1f} | {r['bytes'] / base['bytes']:.3f}x | "
                     f"{r['fortunes_val_ppl']:.2f} | {r['prefill_tokens_per_s']:.0f} | {r['decode_tokens_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["cut", "measure"])
    p.add_argument("--source", default="smollm2-135m")
    p.add_argument("--out", type=Path, default=Path("runs/quantize-lm"))
    p.add_argument("--params", type=float, default=0.8, help="share of the whole model's params the cut keeps")
    p.add_argument("--calibration", type=int, default=32, help="calibration windows")
    p.add_argument("--update", action=argparse.BooleanOptionalAction, default=True,
                   help="refit each second factor after the cut (--no-update: the whitened SVD alone, faster)")
    p.add_argument("--calibration-context", type=int, default=256)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (step_cut if args.step == "cut" else step_measure)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
