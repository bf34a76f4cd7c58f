"""The converged study's plan in numbers (docs/converged/PLAN.md): exposures and expected CPU minutes.

Usage:
    python experiments/converged_plan.py runs/cost-fcn.json runs/cost-cnn.json [--reference-epoch 2.2]

Reads the epoch costs measured by ``benchmarks/study_cost.py`` and prints, for every model
and epoch budget of the plan: the penalty exposure of each recipe of the grid (exact, from
``lorita.train.exposure``), the expected minutes of one seed's comparison (every column) and
of the grid on seed 0, and the total over the planned seeds. ``--reference-epoch``: the idle
machine's seconds for one epoch of the plain FCN (docs/RESULTS.md: 25-28 s for 12 epochs,
about 2.2 s each); every measured figure is scaled by that over the measured plain-FCN epoch
of the same run, so that a run on a loaded machine still plans for an idle one.

The cost model of one seed (budget E epochs, fine-tuning f = the split's share, t = E - f):
trainings (plain E and t, LoRITa N=2 E and t, and one more plain E and t for alternatives that
chose another plain setting), the smaller dense model (``SMALL_SIZES`` trainings of E epochs
at 10-20% of the params), fine-tuned columns (``FT_COLUMNS`` x ``CUTS`` cuts, each: cut,
BatchNorm re-estimation, f fine-tuning epochs of a 20% model, validation and test passes),
un-fine-tuned columns (``NOFT_COLUMNS`` sweeps of ``SWEEP`` cuts, each re-estimated and
evaluated on validation) and ``OVERHEAD`` for what is not modelled (Torch-Pruning's steps,
Gram matrices, reports).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lorita.train import TrainConfig
from lorita.train.exposure import penalty_exposure, steps_per_epoch

CUTS = 6  # fixed sizes 5/10/20/30% + 2 bisection steps near the target
SWEEP = 30  # global thresholds of an un-fine-tuned column's sweep
FT_COLUMNS = 4  # plain + SVD + FT, plain + whitened SVD + FT, Torch-Pruning + FT, LoRITa N=2 + FT
NOFT_COLUMNS = 3  # plain + SVD, plain + whitened SVD, LoRITa N=2 (all with BatchNorm re-estimation)
SMALL_SIZES = 6  # trainings of the smaller dense model: 4 fixed sizes + 2 bisection steps
BN_SHARE = 200 / 422 / 3  # BatchNorm re-estimation: 200 forward batches of a 422-step epoch, a third of a step each
OVERHEAD = 1.10
FT_SHARE = 1 / 6  # the base split: the last sixth of the epochs fine-tune the cut
TRAIN_EXAMPLES = 54_000

# model -> (the cost file's model text, the small dense model's cost rows, budgets -> seeds, recipe, converged budget)
PLAN = {
    "fcn": {"measured": "fcn", "small": ["fcn:width=96", "fcn:width=160"],
            "budgets": {15: 5, 30: 5, 60: 10, 120: 5}, "converged": 60,
            "recipe": dict(lr=0.05, weight_decay=1e-3, momentum=0.9, schedule="cosine", batch_size=128)},
    "cnn": {"measured": None, "small": None, "budgets": {}, "converged": None,
            "recipe": dict(lr=0.05, weight_decay=1e-3, momentum=0.9, schedule="cosine", batch_size=128)},
}


def grid(recipe: dict, epochs: int) -> dict[str, tuple[TrainConfig, int]]:
    """Every setting of the declared grid: name -> (training recipe of its trained model, depth)."""
    f = max(1, round(epochs * FT_SHARE))
    base = dict(recipe, epochs=epochs - f)
    lorita = {
        "g0 base": (TrainConfig(**base), 2),
        "g1 warm-up 2": (TrainConfig(**base, warmup_epochs=2), 2),
        "g2 lr/2, wd x2": (TrainConfig(**dict(base, lr=recipe["lr"] / 2, weight_decay=recipe["weight_decay"] * 2)), 2),
        "g3 init middle": (TrainConfig(**base), 2),
        "g4 FT 1/3": (TrainConfig(**dict(base, epochs=epochs - 2 * f)), 2),
    }
    plain = {
        "p0 base": (TrainConfig(**dict(recipe, epochs=epochs)), 1),
        "p1 wd 5e-4": (TrainConfig(**dict(recipe, epochs=epochs, weight_decay=5e-4)), 1),
        "p2 wd 2e-3": (TrainConfig(**dict(recipe, epochs=epochs, weight_decay=2e-3)), 1),
        "p3 lr 0.1": (TrainConfig(**dict(recipe, epochs=epochs, lr=0.1)), 1),
    }
    return {**lorita, **plain}


def exposures(recipe: dict, budgets) -> list[str]:
    steps = steps_per_epoch(TRAIN_EXAMPLES, recipe["batch_size"])
    lines = []
    for epochs in budgets:
        for name, (config, depth) in grid(recipe, epochs).items():
            lines.append(f"| {epochs} | {name} | {depth} | {config.epochs} | {config.lr:g} | {config.weight_decay:g} | "
                         f"{penalty_exposure(config, steps, depth):.1f} |")
    return lines


def _row(rows: list[dict], model: str, depth: int) -> dict:
    for row in rows:
        text = row["model"] + ("" if not row["kwargs"] else ":" + ";".join(f"{k}={json.dumps(v)}"
                                                                          for k, v in row["kwargs"].items()))
        if (text == model or row["model"] == model and not row["kwargs"]) and row["depth"] == depth:
            return row
    raise SystemExit(f"no measured row for {model} at depth {depth}; run benchmarks/study_cost.py for it")


def seed_seconds(costs: dict, epochs: int) -> dict:
    """Expected seconds of one seed's whole comparison at ``epochs``, by part."""
    f = max(1, round(epochs * FT_SHARE))
    t = epochs - f
    c1, c2 = costs["c1"], costs["c2"]
    cut = costs["cut"] + BN_SHARE * c1 + f * costs["ft_epoch"] + costs["val"] + costs["test"]
    return {"trainings": 2 * (epochs + t) * c1 + (epochs + t) * c2,
            "small dense": SMALL_SIZES * epochs * costs["small"],
            "fine-tuned cuts": FT_COLUMNS * CUTS * cut,
            "sweeps": NOFT_COLUMNS * (SWEEP * (costs["val"] + BN_SHARE * c1) + 4 * costs["test"])}


def grid_seconds(costs: dict, epochs: int) -> float:
    """Extra seconds of the grid on seed 0 beyond that seed's own comparison."""
    f = max(1, round(epochs * FT_SHARE))
    t = epochs - f
    c1, c2 = costs["c1"], costs["c2"]
    cut = costs["cut"] + BN_SHARE * c1 + f * costs["ft_epoch"] + costs["val"] + costs["test"]
    cut_long = cut + f * costs["ft_epoch"]
    lorita = 3 * (t * c2 + CUTS * cut) + (epochs - 2 * f) * c2 + CUTS * cut_long  # g1-g3, g4
    plain = 3 * ((epochs + t) * c1 + 3 * CUTS * cut) + (epochs - 2 * f) * c1 + 3 * CUTS * cut_long  # p1-p3, p4
    small = 3 * epochs * costs["small"]  # p1-p3 at the size nearest the crossing
    return lorita + plain + small


def measured_costs(rows: list[dict], spec: dict, scale: float) -> dict:
    one, two = _row(rows, spec["measured"], 1), _row(rows, spec["measured"], 2)
    small = [_row(rows, m, 1)["wall"]["epoch_seconds"] for m in spec["small"]]
    return {"c1": scale * one["wall"]["epoch_seconds"], "c2": scale * two["wall"]["epoch_seconds"],
            "ft_epoch": scale * one["wall"]["ft_epoch_seconds"], "val": scale * one["wall"]["val_seconds"],
            "test": scale * one["wall"]["test_seconds"], "cut": scale * one["wall"]["cut_seconds"],
            "small": scale * sum(small) / len(small)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("costs", nargs="+", help="JSON files written by benchmarks/study_cost.py")
    parser.add_argument("--reference-epoch", type=float, default=2.2,
                        help="idle seconds of one plain FCN epoch (54,000 images, batch 128, 2 threads)")
    args = parser.parse_args()
    rows = [row for path in args.costs for row in json.loads(Path(path).read_text())["rows"]]
    scale = args.reference_epoch / _row(rows, "fcn", 1)["wall"]["epoch_seconds"]
    print(f"scale to the idle machine: {scale:.3f} (reference plain FCN epoch {args.reference_epoch} s)\n")
    print("| budget | setting | depth | epochs trained | lr | weight decay | exposure |\n|---|---|---|---|---|---|---|")
    for name, spec in PLAN.items():
        if spec["budgets"]:
            print(f"| **{name}** | | | | | | |")
            print("\n".join(exposures(spec["recipe"], spec["budgets"])))
    print("\n| model | budget | seeds | minutes per seed (trainings / small dense / FT cuts / sweeps) | grid minutes "
          "| total minutes |\n|---|---|---|---|---|---|")
    total = 0.0
    for name, spec in PLAN.items():
        if not spec["budgets"]:
            continue
        costs = measured_costs(rows, spec, scale)
        for epochs, seeds in spec["budgets"].items():
            parts = {k: OVERHEAD * v / 60 for k, v in seed_seconds(costs, epochs).items()}
            per_seed = sum(parts.values())
            extra = OVERHEAD * grid_seconds(costs, epochs) / 60 if epochs == spec["converged"] else 0.0
            total += seeds * per_seed + extra
            detail = " / ".join(f"{v:.0f}" for v in parts.values())
            print(f"| {name} | {epochs} | {seeds} | {per_seed:.0f} ({detail}) | {extra:.0f} | "
                  f"{seeds * per_seed + extra:.0f} |")
    print(f"\ntotal: {total:.0f} minutes ({total / 60:.1f} hours)")


if __name__ == "__main__":
    main()
