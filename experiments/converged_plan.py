"""The converged study's plan in numbers (docs/converged/PLAN.md): exposures and expected minutes.

Usage:
    python experiments/converged_plan.py runs/cost-fcn.json runs/cost-cnn.json [--reference-epoch 2.2]

Reads the epoch costs measured by ``benchmarks/study_cost.py`` and prints: the penalty
exposure of every recipe of the grid at the converged budgets and of the base recipe at every
budget (exact, ``lorita.train.exposure``, with the 422 steps of a 54,000-image epoch at batch
128); then, in the planned order, the expected minutes of each block of runs and the running
total. ``--reference-epoch``: the idle machine's seconds for one epoch of the plain FCN
(docs/RESULTS.md: 25-28 s for its 12 epochs, about 2.2 s each); every measured figure is scaled
by that over the plain-FCN epoch measured in the same run, so a measurement on a loaded machine
still plans for an idle one (an approximation: the load need not slow convolutions and matrix
products alike).

The cost model of one seed at a budget of E epochs (f = the fine-tuning share, t = E - f):
trainings (plain E and t, LoRITa N=2 t, and LoRITa N=2 E where that column runs), the smaller
dense model (``SMALL_SIZES`` trainings of E epochs), the fine-tuned columns (``FT_COLUMNS`` x
``CUTS`` cuts, each: the cut, BatchNorm re-estimation, f fine-tuning epochs of a 20% model,
validation and test passes) and the un-fine-tuned columns (sweeps of ``SWEEP`` cuts, each
re-estimated and scored on validation), times ``OVERHEAD`` for what is not modelled
(Torch-Pruning's steps, Gram matrices, reports). The grid on seed 0 adds: LoRITa g1-g3 (a
t-epoch training and its cuts each) and g4 (the longer fine-tuning), the plain settings p1-p3
(plain E and t, the three fine-tuned alternatives' cuts, two sweeps each) and p4, Taylor
importance for Torch-Pruning, and the small dense model at p1-p3 at one size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lorita.train import TrainConfig
from lorita.train.exposure import penalty_exposure, steps_per_epoch

CUTS = 6  # a fine-tuned column: fixed sizes 5/10/20/30% + 2 bisection steps near the target
SWEEP = 30  # global thresholds of an un-fine-tuned column's sweep
FT_COLUMNS = 4  # plain + SVD + FT, plain + whitened SVD + FT, Torch-Pruning + FT, LoRITa N=2 + FT
SMALL_SIZES = 6  # trainings of the smaller dense model: 4 fixed sizes + 2 bisection steps
BN_SHARE = 200 / 422 / 3  # BatchNorm re-estimation: 200 forward batches of a 422-step epoch, ~1/3 of a step each
OVERHEAD = 1.10
FT_SHARE = 1 / 6  # the base split: the last sixth of the epochs fine-tune the cut
TRAIN_EXAMPLES = 54_000
SEEDS_0_4, SEEDS_5_9 = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
CNN_BUDGET = 12  # the CNN's converged budget, at which the candidates are compared

MODELS = {
    "fcn": {"measured": "fcn", "small": ["fcn:width=96", "fcn:width=160"],
            "recipe": dict(lr=0.05, weight_decay=1e-3, momentum=0.9, schedule="cosine", batch_size=128),
            "plain_grid": {"p1 wd 5e-4": dict(weight_decay=5e-4), "p2 wd 2e-3": dict(weight_decay=2e-3),
                           "p3 lr 0.1": dict(lr=0.1)}},
    "vgg_small": {"measured": 'vggcfg:cfg=[8,"M",16,"M",32,"M",64,"M"]',  # the same stack as the zoo's vgg_small
                  "small": ['vggcfg:cfg=[8,"M",16,"M",32,"M",64,"M"]'],  # narrower ones cost at most this
                  "recipe": dict(lr=0.05, weight_decay=5e-3, momentum=0.9, schedule="cosine", batch_size=128),
                  "plain_grid": {"p1 wd 1e-3": dict(weight_decay=1e-3), "p2 wd 2e-3": dict(weight_decay=2e-3),
                                 "p3 lr 0.1": dict(lr=0.1)}},
}

# The order of the runs: (model, epochs, seeds, LoRITa N=2 without fine-tuning too, grid on seed 0, optional)
ORDER = [
    ("fcn", 60, SEEDS_0_4, True, True, False),
    ("vgg_small", 12, SEEDS_0_4, True, True, False),
    ("fcn", 15, SEEDS_0_4, False, False, False),
    ("fcn", 30, SEEDS_0_4, False, False, False),
    ("fcn", 60, SEEDS_5_9, False, False, False),
    ("vgg_small", 6, SEEDS_0_4, False, False, True),
    ("fcn", 120, [0, 1, 2], False, False, True),
    ("vgg_small", 24, SEEDS_0_4, True, True, True),
]


def split(epochs: int) -> tuple[int, int]:
    """(fine-tuning epochs, training epochs) of the base split."""
    f = max(1, round(epochs * FT_SHARE))
    return f, epochs - f


def grid(spec: dict, epochs: int) -> dict[str, tuple[TrainConfig, int]]:
    """Every setting of the declared grid: name -> (the recipe of its trained model, depth)."""
    recipe = spec["recipe"]
    f, t = split(epochs)
    lorita = {
        "g0 base": (TrainConfig(**recipe, epochs=t), 2),
        "g1 warm-up 2 epochs": (TrainConfig(**recipe, epochs=t, warmup_epochs=2), 2),
        "g2 lr/2, weight decay x2": (TrainConfig(**dict(recipe, lr=recipe["lr"] / 2,
                                                        weight_decay=recipe["weight_decay"] * 2), epochs=t), 2),
        "g3 init_scale 0.76": (TrainConfig(**recipe, epochs=t), 2),
        "g4 fine-tune 1/3": (TrainConfig(**recipe, epochs=epochs - 2 * f), 2),
    }
    plain = {"p0 base": (TrainConfig(**recipe, epochs=epochs), 1)}
    plain.update({name: (TrainConfig(**dict(recipe, **change), epochs=epochs), 1)
                  for name, change in spec["plain_grid"].items()})
    return {**lorita, **plain}


def exposure_lines() -> list[str]:
    steps = steps_per_epoch(TRAIN_EXAMPLES, 128)
    lines = ["| model | budget E | setting | depth | epochs trained | lr | weight decay | exposure |",
             "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for model, epochs, _, _, with_grid, _ in ORDER:
        if (model, epochs) in seen:
            continue
        seen.add((model, epochs))
        settings = grid(MODELS[model], epochs)
        if not with_grid:
            settings = {k: v for k, v in settings.items() if k in ("g0 base", "p0 base")}
        for name, (config, depth) in settings.items():
            lines.append(f"| {model} | {epochs} | {name} | {depth} | {config.epochs} | {config.lr:g} | "
                         f"{config.weight_decay:g} | {penalty_exposure(config, steps, depth):.1f} |")
    return lines


def _text(row: dict) -> str:
    """A measured row's model as study_cost.py was given it."""
    return row["model"] + ("" if not row["kwargs"] else ":" + ";".join(
        f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in row["kwargs"].items()))


def _row(rows: list[dict], model: str, depth: int) -> dict:
    for row in rows:
        if _text(row) == model and row["depth"] == depth:
            return row
    raise SystemExit(f"no measured row for {model} at depth {depth}; run benchmarks/study_cost.py for it")


def measured_costs(rows: list[dict], spec: dict, scale: float) -> dict:
    one, two = _row(rows, spec["measured"], 1)["wall"], _row(rows, spec["measured"], 2)["wall"]
    small = [_row(rows, m, 1)["wall"]["epoch_seconds"] for m in spec["small"]]
    costs = {"c1": one["epoch_seconds"], "c2": two["epoch_seconds"], "ft_epoch": one["ft_epoch_seconds"],
             "val": one["val_seconds"], "test": one["test_seconds"], "cut": one["cut_seconds"],
             "small": sum(small) / len(small)}
    return {k: scale * v for k, v in costs.items()}


def _cut(costs: dict, f: int) -> float:
    return costs["cut"] + BN_SHARE * costs["c1"] + f * costs["ft_epoch"] + costs["val"] + costs["test"]


def _sweep(costs: dict) -> float:
    return SWEEP * (costs["val"] + BN_SHARE * costs["c1"]) + 4 * costs["test"]


def seed_seconds(costs: dict, epochs: int, no_ft_lorita: bool) -> dict:
    """Expected seconds of one seed's comparison at ``epochs``, by part."""
    f, t = split(epochs)
    trainings = (epochs + t) * costs["c1"] + t * costs["c2"] + (epochs * costs["c2"] if no_ft_lorita else 0.0)
    return {"trainings": trainings, "small dense": SMALL_SIZES * epochs * costs["small"],
            "fine-tuned cuts": FT_COLUMNS * CUTS * _cut(costs, f),
            "sweeps": (2 + int(no_ft_lorita)) * _sweep(costs)}


def grid_seconds(costs: dict, epochs: int) -> float:
    """Extra seconds of the grid on seed 0 beyond that seed's own comparison."""
    f, t = split(epochs)
    c1, c2 = costs["c1"], costs["c2"]
    lorita = 3 * (t * c2 + CUTS * _cut(costs, f)) + (epochs - 2 * f) * c2 + CUTS * _cut(costs, 2 * f)
    plain = 3 * ((epochs + t) * c1 + 3 * CUTS * _cut(costs, f) + 2 * _sweep(costs))
    plain += (epochs - 2 * f) * c1 + 3 * CUTS * _cut(costs, 2 * f)
    taylor = CUTS * _cut(costs, f)
    small = 3 * epochs * costs["small"]
    return lorita + plain + taylor + small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("costs", nargs="+", help="JSON files written by benchmarks/study_cost.py")
    parser.add_argument("--reference-epoch", type=float, default=2.2,
                        help="idle seconds of one plain FCN epoch (54,000 images, batch 128, 2 threads)")
    args = parser.parse_args()
    rows = [row for path in args.costs for row in json.loads(Path(path).read_text())["rows"]]
    scale = args.reference_epoch / _row(rows, "fcn", 1)["wall"]["epoch_seconds"]
    print(f"measured plain FCN epoch {_row(rows, 'fcn', 1)['wall']['epoch_seconds']:.2f} s; scale to the idle "
          f"machine {scale:.3f}\n")
    costs = {name: measured_costs(rows, spec, scale) for name, spec in MODELS.items()}
    print("| model | s/epoch plain | LoRITa N=2 | FT epoch (20% cut) | val pass | test pass | small dense epoch |")
    print("|---|---|---|---|---|---|---|")
    for name, c in costs.items():
        print(f"| {name} | {c['c1']:.2f} | {c['c2']:.2f} | {c['ft_epoch']:.2f} | {c['val']:.2f} | {c['test']:.2f} | "
              f"{c['small']:.2f} |")
    print()
    print("\n".join(exposure_lines()))
    print("\n| # | model | E | seeds | min per seed (trainings / small dense / FT cuts / sweeps) | grid min | "
          "block min | running total h |\n|---|---|---|---|---|---|---|---|")
    total = 0.0
    for i, (model, epochs, seeds, no_ft, with_grid, optional) in enumerate(ORDER, 1):
        parts = {k: OVERHEAD * v / 60 for k, v in seed_seconds(costs[model], epochs, no_ft).items()}
        per_seed = sum(parts.values())
        extra = OVERHEAD * grid_seconds(costs[model], epochs) / 60 if with_grid else 0.0
        block = len(seeds) * per_seed + extra
        total += 0.0 if optional else block
        detail = " / ".join(f"{v:.0f}" for v in parts.values())
        mark = " (if time remains)" if optional else ""
        print(f"| {i} | {model}{mark} | {epochs} | {seeds[0]}-{seeds[-1]} | {per_seed:.1f} ({detail}) | {extra:.0f} | "
              f"{block:.0f} | {'-' if optional else f'{total / 60:.1f}'} |")
    print(f"\nplanned total (without the optional blocks): {total:.0f} minutes ({total / 60:.1f} hours)")
    print(f"\nCNN candidates, one seed's comparison at {CNN_BUDGET} epochs (small dense at the full model's cost):\n")
    print("| candidate | params | MACs | s/epoch plain / LoRITa N=2 / FT | minutes per seed |\n|---|---|---|---|---|")
    for row in rows:
        text = _text(row)
        if row["depth"] != 1 or row["model"] == "fcn":
            continue
        c = measured_costs(rows, {"measured": text, "small": [text]}, scale)
        minutes = OVERHEAD * sum(seed_seconds(c, CNN_BUDGET, True).values()) / 60
        print(f"| {text} | {row['params']:,} | {row['macs']:,} | {c['c1']:.1f} / {c['c2']:.1f} / {c['ft_epoch']:.1f} | "
              f"{minutes:.0f} |")


if __name__ == "__main__":
    main()
