"""Pool the converged study's experiment folders into its statistics and docs/converged/summary.json.

Usage:
    python experiments/converged_summary.py runs/converged/fcn-e60-s* runs/converged/vgg-e30-s* \\
        --pre-registered "LoRITa N=2 + FT" --out docs/converged/summary.json

Each folder is one ``lorita experiment`` run (one or several seeds). Folders are grouped by
model, dataset and epochs; within a group every seed must appear once. For each group it
prints the per-seed sizes at the target, the geometric mean ratio of the pre-registered
LoRITa column to the best alternative with its paired t 95% interval, the paired accuracy
differences at the fixed sizes, and the K-sizes table of seed 0 (``lorita.runs.many_sizes``);
then writes the summary in the schema of ``lorita.report.converged``. The exposure is the
pre-registered column's training run's (``depth2-short/results.json``); the plateau test the
plain model's (``depth1/results.json``) on every seed. Nothing is recomputed from models.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from lorita.report.converged import pooled_plateau, study_entry, write_summary
from lorita.runs.compare import FIXED_SIZES
from lorita.runs.many_sizes import many_sizes, many_sizes_markdown
from lorita.runs.paired import fixed_size_differences, ratio_over_seeds
from lorita.runs.small_dense import SMALL_DENSE



def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _seed_folder(folder: Path, results: dict, seed: int) -> Path:
    return folder if len(results["runs"]) == 1 else folder / f"seed{seed}"


def load_groups(folders: list[Path]) -> dict[tuple, list[tuple[Path, dict]]]:
    """(model, dataset, epochs) -> [(seed folder, seed run)], each seed once."""
    groups: dict[tuple, list[tuple[Path, dict]]] = defaultdict(list)
    for folder in folders:
        results = _read(folder / "results.json")
        key = (results["recipe"]["model"], results["dataset"], int(results["recipe"]["epochs"]))
        for run in results["runs"]:
            if any(r["seed"] == run["seed"] for _, r in groups[key]):
                raise SystemExit(f"seed {run['seed']} of {key} appears twice (again in {folder})")
            groups[key].append((_seed_folder(folder, results, run["seed"]), run))
    return {k: sorted(v, key=lambda item: item[1]["seed"]) for k, v in groups.items()}


def _depth_folder(seed_folder: Path, name: str) -> dict:
    path = seed_folder / name / "results.json"
    return _read(path) if path.is_file() else {}


def study(key: tuple, seeds: list[tuple[Path, dict]], pre_registered: str, depth: int,
          sizes=FIXED_SIZES) -> tuple[dict, list[str]]:
    """The summary entry of one group and the lines of its report."""
    model, dataset, epochs = key
    runs = [run for _, run in seeds]
    comparison = ratio_over_seeds(runs, pre_registered)
    exposures = {_depth_folder(f, f"depth{depth}-short").get("penalty_exposure") for f, _ in seeds}
    exposures.discard(None)
    plateaus = [_depth_folder(f, "depth1").get("plateau") or {} for f, _ in seeds]
    alternatives = sorted({label for run in runs for label, c in run["columns"].items() if not c["lorita"]})
    entry = study_entry(model=model, dataset=dataset, epochs=epochs,
                        exposure=float(min(exposures)) if exposures else 0.0, plateau=pooled_plateau(plateaus),
                        comparison=comparison, alternatives=alternatives,
                        small_model_baseline=SMALL_DENSE in alternatives)
    lines = [f"## {model} on {dataset}, {epochs} epochs ({len(runs)} seeds)", "",
             f"exposure of {pre_registered}: {entry['exposure']:.2f}; plain model plateaued on every seed: "
             f"{entry['plateau']}", "", "| seed | target (val %) | LoRITa kept | best alternative | kept | ratio |",
             "|---|---|---|---|---|---|"]
    for row in comparison["per_seed"]:
        ours = "missed" if row["lorita_params_kept"] is None else f"{100 * row['lorita_params_kept']:.1f}%"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        lines.append(f"| {row['seed']} | {row['target_val_acc']:.2f} | {ours} | {row['best_alternative']} | "
                     f"{100 * row['best_alternative_params_kept']:.1f}% | {ratio} |")
    if comparison["geomean_ratio"] is not None:
        ci = comparison["ci95"]
        span = "no interval (one seed)" if ci is None else f"95% interval [{ci[0]:.3f}, {ci[1]:.3f}]"
        lines += ["", f"geometric mean ratio {comparison['geomean_ratio']:.3f}, {span}"]
    else:
        lines += ["", f"no geometric mean: {pre_registered} misses the target on seeds {comparison['missed']}"]
    lines += ["", "| params kept | mean test-accuracy difference (points) | 95% interval | seeds |", "|---|---|---|---|"]
    for row in fixed_size_differences(runs, pre_registered, sizes):
        ci = "-" if row["ci"] is None else f"[{row['ci'][0]:+.2f}, {row['ci'][1]:+.2f}]"
        mean = "-" if row["mean"] is None else f"{row['mean']:+.2f}"
        lines.append(f"| {100 * row['size']:g}% | {mean} | {ci} | {row['n']} |")
    lines += ["", f"K sizes from one training (seed {runs[0]['seed']}):", "",
              many_sizes_markdown(many_sizes(runs[0]["columns"], sizes), sizes), ""]
    return entry, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="experiment run folders")
    parser.add_argument("--pre-registered", default="LoRITa N=2 + FT", help="the headline column (docs/converged/PLAN.md)")
    parser.add_argument("--depth", type=int, default=2, help="the pre-registered column's depth (its exposure)")
    parser.add_argument("--sizes", type=float, nargs="+", default=list(FIXED_SIZES),
                        help="params fractions compared point by point (the experiment's sizes)")
    parser.add_argument("--out", type=Path, help="write summary.json here")
    args = parser.parse_args()
    entries = []
    for key, seeds in sorted(load_groups(args.folders).items()):
        entry, lines = study(key, seeds, args.pre_registered, args.depth, args.sizes)
        entries.append(entry)
        print("\n".join(lines))
    if args.out is not None:
        write_summary(args.out, entries)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
