"""The language experiment's costs: a GPT training step at depth 2 and 3 against plain, and the cut models' speed.

Two parts:

* ``train``: one training step (forward, backward, AdamW step) of the zoo ``gpt`` at the reduced
  recipe's size (or ``--dim/--depth/--context``), plain against LoRITa depth 2 and 3 in each
  forward mode (``sequential``, ``fused``, ``auto``). Target: depth-3 ``auto`` near 1.0x plain.
* ``infer`` (with ``--run EXPERIMENT_FOLDER``, a ``lorita experiment experiments/gpt_fortunes.json``
  output): the forward time of each saved cut (``depthN-cut``) against the plain model, at
  batch 1 and 32, and the params/MACs kept.

CPU time (``time.process_time``) with one thread, the median of the repeats, configurations
round-robin: other jobs on the machine barely move it (the wall clock is printed too).

    python benchmarks/gpt_speed.py                                   # the train part (about a minute)
    python benchmarks/gpt_speed.py --run runs/gpt-adamw --parts infer
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import lorita
from lorita.models import create_model


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median CPU and wall milliseconds of ``fn()`` over ``repeats`` calls (after one warm-up)."""
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(1000 * (time.process_time() - c))
        wall.append(1000 * (time.perf_counter() - w))
    return statistics.median(cpu), statistics.median(wall)


def train_part(args) -> list[str]:
    rows = []
    x = torch.randint(0, args.vocab, (args.batch, args.context))
    configs = [(1, "auto")] + [(d, m) for d in (2, 3) for m in ("sequential", "fused", "auto")]
    steps = {}
    for depth, mode in configs:
        torch.manual_seed(0)
        model = create_model("gpt", vocab_size=args.vocab, context=args.context, dim=args.dim, depth=args.layers,
                             heads=args.heads)
        if depth > 1:
            model = lorita.compose(model, depth=depth, exclude=["head"], mode=mode)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

        def step(model=model, opt=opt):
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[(depth, mode)] = step
    samples = {key: [] for key in steps}
    for _ in range(args.repeats):  # round-robin, so a slow spell hits every configuration alike
        for key, step in steps.items():
            samples[key].append(timed(step, 1))
    base = statistics.median(c for c, _ in samples[(1, "auto")])
    for (depth, mode), values in samples.items():
        cpu = statistics.median(c for c, _ in values)
        wall = statistics.median(w for _, w in values)
        rows.append(f"| {depth} | {mode} | {cpu:.1f} | {wall:.1f} | {cpu / base:.2f}x |")
    head = [f"GPT dim {args.dim}, {args.layers} blocks, context {args.context}, batch {args.batch}, AdamW; "
            f"{torch.get_num_threads()} thread(s); median of {args.repeats}", "",
            "| depth | mode | step CPU ms | step wall ms | CPU vs plain |", "|---|---|---|---|---|"]
    return head + rows


@torch.inference_mode()
def infer_part(args) -> list[str]:
    run = Path(args.run)
    plain = lorita.merge(lorita.load(run / "depth1" / "model.lorita")).eval()
    context = plain.context
    rows = ["| model | params kept | MACs kept | b1 CPU ms | b32 CPU ms | speed-up b1 | speed-up b32 |",
            "|---|---|---|---|---|---|---|"]
    example = torch.zeros(1, context, dtype=torch.long)
    base_counts = lorita.profile(plain, example)
    inputs = {b: torch.randint(0, 100, (b, context)) for b in (1, 32)}
    base = {b: timed(lambda b=b: plain(inputs[b]), args.repeats)[0] for b in inputs}
    rows.append(f"| plain (uncompressed) | 100% | 100% | {base[1]:.2f} | {base[32]:.2f} | 1.00x | 1.00x |")
    for cut in sorted(run.glob("depth*-cut")):
        model = lorita.load(cut / "model.lorita").eval()
        counts = lorita.profile(model, example)
        ms = {b: timed(lambda b=b: model(inputs[b]), args.repeats)[0] for b in inputs}
        rows.append(f"| {cut.name} | {100 * counts.params / base_counts.params:.1f}% | "
                    f"{100 * counts.macs / base_counts.macs:.1f}% | {ms[1]:.2f} | {ms[32]:.2f} | "
                    f"{base[1] / ms[1]:.2f}x | {base[32] / ms[32]:.2f}x |")
    return [f"Forward of the cut models of {run} (context {context}); {torch.get_num_threads()} thread(s); "
            f"median of {args.repeats}", "", *rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=("train", "infer"), default=["train"])
    p.add_argument("--run", help="an experiment folder of experiments/gpt_fortunes.json (for --parts infer)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2, help="transformer blocks")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--vocab", type=int, default=114)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = []
    if "train" in args.parts:
        lines += train_part(args) + [""]
    if "infer" in args.parts:
        if not args.run:
            p.error("--parts infer needs --run EXPERIMENT_FOLDER")
        lines += infer_part(args)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
