"""What one epoch of each model of the converged study costs on this machine (docs/converged/PLAN.md).

For each model (a zoo name with optional ``key=value`` arguments) and each depth, trains one
epoch with ``lorita.train.train`` on ``--max-train`` training images (Fashion-MNIST, batch
128, the demo's SGD recipe), times the training steps and one evaluation of the full
validation split, and extrapolates to a full epoch of the whole training split (54,000
images): ``seconds/epoch = steps x seconds/step + validation pass``. Also times one
fine-tuning epoch of a model cut to 20% of the params (SVD, global threshold), which is what
every fine-tuned column pays per cut and epoch, and one evaluation of the test split.

    flock /work/locks/heavy python benchmarks/study_cost.py --models fcn "vgg16:width_multiplier=0.125" \
        --depths 1 2 --max-train 6400 --json runs/study-cost.json

Run it on an idle machine (wall clock); the figures are for planning, not claims.
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


def epoch_cost(name: str, kwargs: dict, depth: int, data, batch_size: int) -> dict:
    torch.manual_seed(0)
    if name == "vggcfg":  # a VGG-style stack not in the zoo (a candidate): vggcfg:cfg=[16,"M",32,"M"]
        plain, exclude = VGG(kwargs["cfg"], in_channels=1, image_size=28, num_classes=10), None
    else:
        plain, exclude = create_model(name, num_classes=10, in_channels=1, image_size=28, **kwargs), paper_exclude(name)
    model = lorita.compose(plain, depth=depth, exclude=exclude or None) if depth > 1 else plain
    config = TrainConfig(epochs=1, batch_size=batch_size, device="cpu")
    result = train(model, data, config)
    model.eval()
    tic = time.perf_counter()
    evaluate(model, data.val)
    val_seconds = time.perf_counter() - tic
    steps = math.ceil(len(data.train) / batch_size)
    step_seconds = (result.seconds - val_seconds) / steps
    full_steps = math.ceil(FULL_TRAIN / batch_size)
    example = data.example_input()
    counts = lorita.profile(lorita.merge(model), example)
    return {"model": name, "kwargs": kwargs, "depth": depth, "params": counts.params, "macs": counts.macs,
            "step_seconds": step_seconds, "val_seconds": val_seconds,
            "epoch_seconds": full_steps * step_seconds + val_seconds, "merged": lorita.merge(model).eval()}


def finetune_cost(merged, data, batch_size: int) -> dict:
    example = data.example_input()
    tic = time.perf_counter()
    made = svd_cutter(merged, example)(0.2)
    cut_seconds = time.perf_counter() - tic
    if made is None:
        return {"cut_seconds": cut_seconds, "ft_epoch_seconds": None, "test_seconds": None}
    small, _ = made
    result = train(small, data, TrainConfig(epochs=1, batch_size=batch_size, lr=0.005, device="cpu"))
    steps = math.ceil(len(data.train) / batch_size)
    tic = time.perf_counter()
    evaluate(small.eval(), data.val)
    val_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    evaluate(small, data.test)
    test_seconds = time.perf_counter() - tic
    step = (result.seconds - val_seconds) / steps
    return {"cut_seconds": cut_seconds, "ft_epoch_seconds": math.ceil(FULL_TRAIN / batch_size) * step + val_seconds,
            "test_seconds": test_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["fcn"])
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-train", type=int, default=6400, help="training images timed (then extrapolated)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    data = DataSpec("fashion-mnist", max_train=args.max_train).load()
    rows = []
    print(f"torch threads {torch.get_num_threads()}; {args.max_train} training images timed, "
          f"extrapolated to {FULL_TRAIN}")
    print("| model | depth | params | MACs | s/step | val pass s | s/epoch (54k) | cut s | FT epoch s (20% cut) | test pass s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for text in args.models:
        name, kwargs = parse_model(text)
        for depth in args.depths:
            row = epoch_cost(name, kwargs, depth, data, args.batch_size)
            merged = row.pop("merged")
            row.update(finetune_cost(merged, data, args.batch_size) if depth == 1 else {})
            rows.append(row)
            ft = row.get("ft_epoch_seconds")
            print(f"| {text} | {depth} | {row['params']:,} | {row['macs']:,} | {row['step_seconds']:.4f} | "
                  f"{row['val_seconds']:.2f} | {row['epoch_seconds']:.1f} | "
                  f"{row.get('cut_seconds', float('nan')):.2f} | {'-' if ft is None else f'{ft:.1f}'} | "
                  f"{row.get('test_seconds') or float('nan'):.2f} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "threads": torch.get_num_threads(), "max_train": args.max_train}, f, indent=1)


if __name__ == "__main__":
    main()
