"""What one epoch of each model of the converged study costs on this machine (docs/converged/PLAN.md).

For each model (a zoo name with optional ``key=value`` arguments, ``;`` between them) and each
depth: two epochs of ``lorita.train.train`` on ``--max-train`` Fashion-MNIST training images
(batch 128, the demo's SGD recipe); the second epoch is timed (the first carries one-time
costs), less one evaluation of the validation split timed on its own, and extrapolated to a
full epoch of the whole training split (54,000 images): ``seconds/epoch = steps x seconds/step
+ validation pass``. At depth 1 also: the SVD cut to 20% of the params, one fine-tuning epoch
of that cut model (what every fine-tuned column pays per cut and epoch) and one test pass.

    flock /work/locks/heavy python benchmarks/study_cost.py --models fcn "vgg16:width_multiplier=0.125" \
        --depths 1 2 --max-train 6400 --threads 2 --json runs/study-cost.json

Two clocks: ``wall`` (``time.perf_counter``) and ``cpu`` (``time.process_time``, all threads).
On a shared machine both move with the load; divide by a reference measured in the same run
(the plain FCN's epoch, whose idle figure docs/RESULTS.md gives) to plan. The figures are for
planning, not claims.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

import lorita
from lorita.models import create_model, paper_exclude
from lorita.models.vgg import VGG
from lorita.runs.compare import svd_cutter
from lorita.runs.config import DataSpec
from lorita.train import TrainConfig, evaluate, train

FULL_TRAIN = 54_000  # Fashion-MNIST's training split less the 10% validation split


def parse_model(text: str) -> tuple[str, dict]:
    """``"vgg16:width_multiplier=0.125"`` -> ``("vgg16", {"width_multiplier": 0.125})``; ``;`` between arguments."""
    name, _, rest = text.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(";")):
        key, value = item.split("=", 1)
        kwargs[key] = json.loads(value)
    return name, kwargs


class Clock:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def last_epoch(model, data, config: TrainConfig) -> dict:
    """Train ``config.epochs`` (2) epochs; wall and cpu seconds of the last one (its val pass included):
    the first epoch carries one-time costs (allocations, caches)."""
    marks = []

    def mark(event, info):
        if event in ("train_start", "epoch_end"):
            marks.append((time.perf_counter(), time.process_time()))

    train(model, data, config, callbacks=[mark])
    return {"wall": marks[-1][0] - marks[-2][0], "cpu": marks[-1][1] - marks[-2][1]}


def epoch_cost(name: str, kwargs: dict, depth: int, data, batch_size: int) -> dict:
    torch.manual_seed(0)
    if name == "vggcfg":  # a VGG-style stack not in the zoo (a candidate): vggcfg:cfg=[16,"M",32,"M"]
        plain, exclude = VGG(kwargs["cfg"], in_channels=1, image_size=28, num_classes=10), None
    else:
        plain, exclude = create_model(name, num_classes=10, in_channels=1, image_size=28, **kwargs), paper_exclude(name)
    model = lorita.compose(plain, depth=depth, exclude=exclude or None) if depth > 1 else plain
    fit = last_epoch(model, data, TrainConfig(epochs=2, batch_size=batch_size, device="cpu"))
    model.eval()
    with Clock() as val:
        evaluate(model, data.val)
    steps = math.ceil(len(data.train) / batch_size)
    full_steps = math.ceil(FULL_TRAIN / batch_size)
    out = {"model": name, "kwargs": kwargs, "depth": depth}
    for clock in ("wall", "cpu"):
        step = (fit[clock] - getattr(val, clock)) / steps  # the epoch includes one val pass
        out[clock] = {"step_seconds": step, "val_seconds": getattr(val, clock),
                      "epoch_seconds": full_steps * step + getattr(val, clock)}
    counts = lorita.profile(lorita.merge(model), data.example_input())
    out.update(params=counts.params, macs=counts.macs, merged=lorita.merge(model).eval())
    return out


def finetune_cost(merged, data, batch_size: int) -> dict:
    with Clock() as cutting:
        made = svd_cutter(merged, data.example_input())(0.2)
    if made is None:
        return {}
    small, _ = made
    fit = last_epoch(small, data, TrainConfig(epochs=2, batch_size=batch_size, lr=0.005, device="cpu"))
    steps = math.ceil(len(data.train) / batch_size)
    with Clock() as val:
        evaluate(small.eval(), data.val)
    with Clock() as test:
        evaluate(small, data.test)
    out = {}
    for clock in ("wall", "cpu"):
        step = (fit[clock] - getattr(val, clock)) / steps
        out[clock] = {"cut_seconds": getattr(cutting, clock), "test_seconds": getattr(test, clock),
                      "ft_epoch_seconds": math.ceil(FULL_TRAIN / batch_size) * step + getattr(val, clock)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["fcn"])
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-train", type=int, default=6400, help="training images timed (then extrapolated)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = DataSpec("fashion-mnist", max_train=args.max_train).load()
    rows = []
    print(f"torch threads {torch.get_num_threads()}; {args.max_train} training images timed, "
          f"extrapolated to {FULL_TRAIN}; seconds as wall / cpu")
    print("| model | depth | params | MACs | s/step | val pass s | s/epoch (54k) | cut s | FT epoch s (20% cut) "
          "| test pass s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    both = lambda row, key, fmt: " / ".join(format(row[c][key], fmt) if key in row.get(c, {}) else "-"
                                            for c in ("wall", "cpu"))
    for text in args.models:
        name, kwargs = parse_model(text)
        for depth in args.depths:
            row = epoch_cost(name, kwargs, depth, data, args.batch_size)
            merged = row.pop("merged")
            if depth == 1:
                for clock, values in finetune_cost(merged, data, args.batch_size).items():
                    row[clock].update(values)
            rows.append(row)
            print(f"| {text} | {depth} | {row['params']:,} | {row['macs']:,} | {both(row, 'step_seconds', '.4f')} | "
                  f"{both(row, 'val_seconds', '.2f')} | {both(row, 'epoch_seconds', '.1f')} | "
                  f"{both(row, 'cut_seconds', '.2f')} | {both(row, 'ft_epoch_seconds', '.1f')} | "
                  f"{both(row, 'test_seconds', '.2f')} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "threads": torch.get_num_threads(), "max_train": args.max_train}, f, indent=1)


if __name__ == "__main__":
    main()
