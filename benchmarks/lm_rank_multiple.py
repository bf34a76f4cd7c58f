"""Does rounding a pretrained LM's cut ranks (or MLP widths) to multiples of 8 or 16 make it faster?

Two measurements, every time paired (``lorita.latency.compare_latency``: the models timed in turn, the
median over rounds of each one's time over a reference's, so the machine's drift moves both alike):

* ``layers``: SmolLM2-135M's linear shapes (q/o 576x576, k/v 576->192, gate/up 576->1536, down
  1536->576) as thin pairs (``LowRankLinear``) at every rank from ``--ranks`` (default 112 to 144),
  and its MLP (576 -> w -> 576, two linears) at every width from ``--widths`` (default 1008 to 1032),
  at batch 1 with one token (decode) and with 128 tokens (prefill). For each size that is not a
  multiple of 8, the *excess*: its time over the straight line between the two multiples of 8 around
  it. Rounding can only pay where the excess is clearly above 1.
* ``model``: the whole model cut by ``lm_cut`` (whitened + update, ``lorita compress``'s low-rank
  cut) to ``--params`` with ranks in multiples of 1, 8 and 16; params kept, perplexity (no
  recovery) on the validation documents of the calibration sources and the Debian licence texts,
  and prefill (128-token prompt) and decode (``--new-tokens`` greedy tokens with the KV cache)
  time at batch 1, each over the multiple-of-1 cut's, the dense model beside them.

Heavy (about 25 minutes on 2 cores, three cuts): run it alone, under the machine-wide lock, e.g.

    flock /work/locks/heavy python benchmarks/lm_rank_multiple.py --json docs/lm/rank-multiple/run.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from lm_texts import calibration_and_validation
from torch import nn

from lorita.latency import compare_latency
from lorita.lm.cut import count_params, lm_cut
from lorita.lm.perplexity import perplexity
from lorita.lm.sources import load_pretrained
from lorita.lowrank import LowRankLinear
from lorita.runs.experiment import machine

SHAPES = {"q/o 576x576": (576, 576), "k/v 576->192": (576, 192), "gate/up 576->1536": (576, 1536),
          "down 1536->576": (1536, 576)}
TOKENS = {"decode (1 token)": 1, "prefill (128 tokens)": 128}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def mlp(width: int, hidden: int = 576) -> nn.Module:
    return nn.Sequential(nn.Linear(hidden, width, bias=False), nn.Linear(width, hidden, bias=False))


def excess(fractions: dict[int, float], step: int = 8) -> dict[int, float]:
    """Each size's time over the straight line between the multiples of ``step`` around it (sizes not multiples).

    Example:
        >>> excess({8: 1.0, 9: 1.5, 16: 2.0})
        {9: 1.3333333333333333}
    """
    out = {}
    for size, t in fractions.items():
        low, high = size - size % step, size - size % step + step
        if size % step and low in fractions and high in fractions:
            line = fractions[low] + (fractions[high] - fractions[low]) * (size - low) / step
            out[size] = t / line
    return out


def number(value: float | None) -> str:
    """A ratio as the tables print it (``-``: none, where the sizes hold no pair of multiples to compare)."""
    return "-" if value is None else f"{value:.3f}"


def reference(sizes: list[int]) -> int:
    """The size the others are timed against: the first multiple of 16 among them, else the first.

    Example:
        >>> reference([120, 121, 128]), reference([120, 121])
        (128, 120)
    """
    return next((size for size in sizes if size % 16 == 0), sizes[0])


def sweep(build, sizes: list[int], inputs: int, tokens: int, reference: int, repeats: int) -> dict:
    """Paired times of ``build(size)`` for every size on ``(1, tokens, inputs)``, over ``build(reference)``'s."""
    torch.manual_seed(0)
    models = {size: build(size).eval() for size in sizes}
    x = torch.randn(1, tokens, inputs)
    seconds, fractions = compare_latency({str(s): m for s, m in models.items()}, x, reference=str(reference),
                                         repeats=repeats)
    fractions = {int(k): v for k, v in fractions.items()}
    over = excess(fractions)
    eights = {k: v for k, v in excess(fractions, 16).items() if k % 16 == 8}  # a multiple of 8 against 16's line
    return {"reference": reference, "seconds": {int(k): v for k, v in seconds.items()}, "fractions": fractions,
            "excess": over, "median_excess": statistics.median(over.values()) if over else None,
            "max_excess": max(over.values()) if over else None,
            "excess_of_8_over_16": eights, "median_excess_of_8_over_16": statistics.median(eights.values())
            if eights else None}


def layers(args) -> dict:
    ranks = list(range(args.ranks[0], args.ranks[1] + 1))
    widths = list(range(args.widths[0], args.widths[1] + 1))
    if not ranks or not widths or min(ranks[0], widths[0]) < 1:
        raise SystemExit(f"--ranks and --widths are LOW HIGH with 1 <= LOW <= HIGH, got {args.ranks} and {args.widths}")
    out = {}
    for shape, (fan_in, fan_out) in SHAPES.items():
        for what, tokens in TOKENS.items():
            key = f"pair {shape}, {what}"
            ref = reference(ranks)
            out[key] = sweep(lambda r, i=fan_in, o=fan_out: LowRankLinear(i, o, r, bias=False), ranks, fan_in,
                             tokens, ref, args.repeats)
            log(f"{key}: excess off multiples of 8 median {number(out[key]['median_excess'])}, "
                f"max {number(out[key]['max_excess'])}")
    for what, tokens in TOKENS.items():
        key = f"MLP 576->w->576, {what}"
        ref = reference(widths)
        out[key] = sweep(mlp, widths, 576, tokens, ref, args.repeats)
        log(f"{key}: excess off multiples of 8 median {number(out[key]['median_excess'])}, "
            f"max {number(out[key]['max_excess'])}")
    return out


class Decode(nn.Module):
    """``model.generate`` of ``new_tokens`` greedy tokens from a prompt, as one call (``compare_latency`` times it)."""

    def __init__(self, model: nn.Module, new_tokens: int):
        super().__init__()
        self.model, self.new_tokens = model, new_tokens

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.new_tokens,
                                   min_new_tokens=self.new_tokens, do_sample=False,
                                   pad_token_id=getattr(self.model.config, "eos_token_id", None) or 0)


def whole_model(args) -> dict:
    dense, tokenizer = load_pretrained(args.source)
    calibration, evals = calibration_and_validation(tokenizer, windows=args.calibration,
                                                    context=args.calibration_context, eval_tokens=args.eval_tokens,
                                                    seed=args.seed)
    models, rows = {"dense": dense}, {}
    rows["dense"] = {"params": count_params(dense),
                     "ppl": {k: perplexity(dense, v, context=args.context).ppl for k, v in evals.items()}}
    log(f"dense: {rows['dense']}")
    for multiple in args.multiples:
        model = copy.deepcopy(dense)
        done = lm_cut(model, calibration, params=args.params, multiple=multiple)
        name = f"multiple {multiple}"
        rows[name] = {"params": count_params(model), "kept": done.kept, "cut_seconds": done.seconds["total"],
                      "layers_cut": sum(isinstance(m, LowRankLinear) for m in model.modules()),
                      "ranks_off_multiple_of_8": sum(1 for m in model.modules()
                                                     if isinstance(m, LowRankLinear) and m.rank % 8),
                      "ranks": dict(done.ranks),
                      "ppl": {k: perplexity(model, v, context=args.context).ppl for k, v in evals.items()}}
        models[name] = model
        log(f"{name}: kept {done.kept:.4f}, {rows[name]['layers_cut']} layers cut, cut in "
            f"{done.seconds['total']:.0f} s, ppl {rows[name]['ppl']}")
    prompt = evals["licenses"][: args.prompt_tokens].view(1, -1)
    reference = f"multiple {args.multiples[0]}"
    with torch.inference_mode():
        prefill = compare_latency(models, prompt, reference=reference, repeats=args.model_repeats)
        log(f"prefill over {reference}: {prefill[1]}")
        decoding = {k: Decode(m, args.new_tokens) for k, m in models.items()}
        decode = compare_latency(decoding, prompt[:, :8], reference=reference, repeats=args.model_repeats)
        log(f"decode over {reference}: {decode[1]}")
    return {"rows": rows, "reference": reference,
            "prefill": {"prompt_tokens": args.prompt_tokens, "seconds": prefill[0], "fractions": prefill[1]},
            "decode": {"prompt_tokens": 8, "new_tokens": args.new_tokens, "seconds": decode[0],
                       "fractions": decode[1]}}


def tables(out: dict) -> str:
    """The run's figures as Markdown tables (what docs/LM.md quotes)."""
    lines = []
    if "layers" in out:
        lines += ["| layer, input | sizes | median excess off multiples of 8 | max "
                  "| median excess of 8-not-16 over 16's line |", "| --- | --- | --- | --- | --- |"]
        for key, row in out["layers"].items():
            sizes = sorted(int(k) for k in row["fractions"])
            eight = row.get("median_excess_of_8_over_16")
            lines.append(f"| {key} | {sizes[0]}-{sizes[-1]} | {number(row['median_excess'])} | "
                         f"{number(row['max_excess'])} | {number(eight)} |")
        lines.append("")
    if "model" in out:
        model = out["model"]
        texts = list(model["rows"]["dense"]["ppl"])
        lines += [f"| model | params | layers cut | ranks not a multiple of 8 | {' | '.join(texts)} | "
                  f"prefill time / {model['reference']} | decode time / {model['reference']} | cut s |",
                  "| --- " * (7 + len(texts)) + "|"]
        for name, row in model["rows"].items():
            lines.append(f"| {name} | {row['params'] / 1e6:.2f}M | {row.get('layers_cut', '-')} | "
                         f"{row.get('ranks_off_multiple_of_8', '-')} | "
                         + " | ".join(f"{row['ppl'][t]:.2f}" for t in texts)
                         + f" | {model['prefill']['fractions'][name]:.3f} | {model['decode']['fractions'][name]:.3f} | "
                         + (f"{row['cut_seconds']:.0f}" if "cut_seconds" in row else "-") + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", default=["layers", "model"], choices=["layers", "model"])
    p.add_argument("--ranks", type=int, nargs=2, default=[112, 144], metavar=("LOW", "HIGH"))
    p.add_argument("--widths", type=int, nargs=2, default=[1008, 1032], metavar=("LOW", "HIGH"))
    p.add_argument("--repeats", type=int, default=7, help="rounds of the layer sweeps")
    p.add_argument("--source", default="smollm2-135m")
    p.add_argument("--params", type=float, default=0.8)
    p.add_argument("--multiples", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--calibration", type=int, default=64, help="calibration windows (lorita compress's default)")
    p.add_argument("--calibration-context", type=int, default=256)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--model-repeats", type=int, default=9, help="rounds of the whole-model timings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--table", action="store_true", help="print the tables of the --json run already made, run nothing")
    args = p.parse_args(argv)
    if args.table:
        if not args.json.is_file():
            raise SystemExit(f"--table prints a run already made: {args.json} is not a file (run without --table)")
        print(tables(json.loads(args.json.read_text(encoding="utf-8"))))
        return 0
    tic = time.perf_counter()
    out = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "machine": machine(),
           "torch_threads": torch.get_num_threads()}
    for part in args.parts:
        out[part] = layers(args) if part == "layers" else whole_model(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    log(f"done in {time.perf_counter() - tic:.0f} s")
    print(tables(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
