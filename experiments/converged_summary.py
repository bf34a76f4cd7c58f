"""Pool the converged study's experiment folders into its statistics, docs/converged/summary.json and the
epoch-budget curve.

Usage:
    python experiments/converged_summary.py runs/converged/fcn-e*/base/seed* runs/converged/vgg_small-e*/base/seed* \\
        --out docs/converged/summary.json --plot docs/converged/budget_curve.png

Each folder is one ``lorita experiment`` run (one seed, as ``experiments/converged_run.py`` makes them, or
several). Folders are grouped by model, dataset and epochs; within a group every seed must appear once, and
every seed's experiment must have the same settings (defaults filled in; its seeds and reuse list aside) and the
same columns: a grid setting's seeds are pooled apart from the base's. For each
group it prints the per-seed sizes at the target, the geometric mean ratio of the pre-registered LoRITa column
(the experiment's ``pre_registered``, else ``--pre-registered``) to the best alternative with its paired t 95%
interval, the paired accuracy differences at the experiment's fixed sizes, and the first seed's K-sizes table
(``lorita.report.converged.paired_lines``); for a model run at two budgets or more, each seed's ratio, start-up
gap before any cut (its depth against depth 1) and plain model's last-fifth gain at every budget it ran, and
from each budget to the next (the nearest larger one at least two seeds ran as well, where there is one) the
plain model's gain and the gap's change over the seeds run at both
(``lorita.runs.budgets``); then
writes the summary in the schema of ``lorita.report.converged`` and, with ``--plot``, the ratio and its interval
against the epoch budget, one line per model. The exposure is
the pre-registered column's (its training run's, as results.json records it per column), the smallest over the
seeds (each seed's recipe is the same, so they agree); the plateau test the plain model's on every seed. Nothing
is recomputed from models.

``--copy-to docs/converged`` copies each folder's ``results.json`` and ``config.json``, and those of the runs in
it (``depth1/``, ``depth2-short/``, ...), to ``<copy-to>/<budget>/<setting>/<seed>/`` (the last three parts of
the folder's path, as ``experiments/converged_run.py`` names them): the raw results to commit, small JSON only.

``--fixed-sizes docs/converged/fixed_sizes.json`` writes the pooled paired accuracy differences at the fixed
sizes (``lorita.runs.paired.fixed_size_differences``: per size the seeds, the alternative best on validation on
each, the differences, their mean and t interval) of every group, which the summary's schema has no room for.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from lorita import jsonio
from lorita.atomic import atomic_write_text
from lorita.errors import LoritaError
from lorita.report.converged import (
    budgets_markdown,
    columns_markdown,
    paired_lines,
    plot_budget_curve,
    pooled_plateau,
    study_entry,
    write_summary,
)
from lorita.runs.budgets import budget_steps, seeds_across_budgets
from lorita.runs.experiment_spec import ExperimentSpec, column_depth
from lorita.runs.many_sizes import many_sizes
from lorita.runs.output_file import check_distinct, check_output_file, is_png, json_with
from lorita.runs.paired import fixed_size_differences, ratio_over_seeds
from lorita.runs.small_dense import SMALL_DENSE


def _read(path: Path) -> dict:
    """An experiment's results.json; one that is damaged or not an experiment's ends the script with a message."""
    try:
        results = jsonio.read(path, fix="rerun that seed, or leave its folder out", allow_nan=True)
    except LoritaError as error:
        raise SystemExit(str(error)) from None
    if not isinstance(results, dict) or not {"recipe", "dataset", "runs", "spec"} <= results.keys() or \
            not isinstance(results["recipe"], dict) or not isinstance(results["runs"], list):
        raise SystemExit(f"{path} is not the results.json of a finished 'lorita experiment'; rerun that seed, or "
                         "leave its folder out")
    return results


def load_groups(folders: list[Path]) -> dict[tuple, list[tuple[dict, dict]]]:
    """(model, dataset, epochs) -> [(the experiment's results, one seed's run)], each seed once, by seed."""
    groups: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
    for folder in folders:
        if not (folder / "results.json").is_file():  # a run's log, a killed run's seed<S>.resume: not a result
            print(f"skipped {folder}: not a finished experiment folder (no results.json)", file=sys.stderr)
            continue
        results = _read(folder / "results.json")
        key = (results["recipe"]["model"], results["dataset"], int(results["recipe"]["epochs"]))
        for run in results["runs"]:
            if any(r["seed"] == run["seed"] for _, r in groups[key]):
                raise SystemExit(f"seed {run['seed']} of {key} appears twice (again in {folder})")
            groups[key].append((results, run))
    return {k: sorted(v, key=lambda item: item[1]["seed"]) for k, v in groups.items()}


def _one(values: set, what: str, key: tuple):
    if len(values) != 1:
        raise SystemExit(f"{key}: the seeds' experiments differ in {what} ({sorted(map(str, values))}); pool only "
                         "runs of one plan")
    return values.pop()


def _settings(spec: dict) -> str:
    """An experiment's settings as one string, every default filled in (a setting added after a seed ran is absent
    from its spec), its seeds and the trainings it may reuse aside; a spec this lorita cannot read, as written."""
    try:
        spec = ExperimentSpec.from_flat(spec).flat()
    except LoritaError:
        pass
    return json.dumps({k: v for k, v in spec.items() if k not in ("seeds", "reuse")}, sort_keys=True)


def study(key: tuple, seeds: list[tuple[dict, dict]], default_label: str) -> tuple[dict, dict, list[str], float]:
    """The summary entry of one group, its paired comparison, the lines of its report and the bar its experiments
    name."""
    model, dataset, epochs = key
    runs = [run for _, run in seeds]
    label = _one({r["spec"].get("pre_registered") or default_label for r, _ in seeds}, "the pre-registered column",
                 key)
    sizes = _one({tuple(r["spec"]["sizes"]) for r, _ in seeds}, "the fixed sizes", key)
    bar = _one({r["headline"]["bar_ratio"] for r, _ in seeds}, "the bar", key)
    _one({_settings(r["spec"]) for r, _ in seeds}, "their settings", key)  # a grid's setting is not a seed of the base
    _one({tuple(sorted(run["columns"])) for run in runs}, "their columns", key)
    try:
        comparison = ratio_over_seeds(runs, label)
        differences = fixed_size_differences(runs, label, sizes)
    except LoritaError as error:
        raise SystemExit(f"{model} on {dataset}, {epochs} epochs: {error}") from None
    exposures = [run["columns"][label].get("exposure") for run in runs]
    if any(e is None for e in exposures):
        raise SystemExit(f"{key}: a seed's {label!r} column records no exposure (results.json from before the "
                         "exposure was recorded); rerun it")
    alternatives = sorted({name for run in runs for name, c in run["columns"].items() if not c["lorita"]})
    entry = study_entry(model=model, dataset=dataset, epochs=epochs, exposure=float(min(exposures)),
                        plateau=pooled_plateau([run.get("plateau") or {} for run in runs]), comparison=comparison,
                        alternatives=alternatives, small_model_baseline=SMALL_DENSE in alternatives)
    paired = {"pre_registered": label, "ratio_over_seeds": comparison,
              "fixed_size_differences": differences,
              "many_sizes": [{"seed": runs[0]["seed"], "rows": many_sizes(runs[0]["columns"], sizes)}]}
    lines = [f"## {model} on {dataset}, {epochs} epochs ({len(runs)} seeds)", "",
             f"exposure of {label}: {entry['exposure']:.2f}; plain model plateaued on every seed: "
             f"{entry['plateau']}; the bar: a ratio at most {bar:g} with the interval below 1", "",
             *paired_lines(paired), ""]
    for run in runs:
        lines += [f"Seed {run['seed']}'s columns at its target:", "", columns_markdown(run, label), ""]
    return entry, paired, lines, bar


def across_budgets(groups: dict[tuple, list[tuple[dict, dict]]], default_label: str) -> list[list[str]]:
    """For each model and dataset run at two budgets or more, the lines of its seeds-across-budgets table
    (``lorita.runs.budgets``)."""
    by_model: dict[tuple, dict[int, list[tuple[dict, dict]]]] = defaultdict(dict)
    for (model, dataset, epochs), seeds in groups.items():
        by_model[(model, dataset)][epochs] = seeds
    out = []
    for (model, dataset), budgets in sorted(by_model.items()):
        if len(budgets) < 2:
            continue
        label = _one({r["spec"].get("pre_registered") or default_label for seeds in budgets.values()
                      for r, _ in seeds}, "the pre-registered column", (model, dataset))
        depth = _one({column_depth(label, r["spec"].get("depths") or []) for seeds in budgets.values()
                      for r, _ in seeds}, f"the depth of {label!r}", (model, dataset))
        if depth is None or depth < 2:
            raise SystemExit(f"{model} on {dataset}, each seed across budgets: the pre-registered column {label!r} "
                             "is the cut of no factored depth the experiments ran, so it has no start-up gap")
        try:
            rows = seeds_across_budgets({e: [run for _, run in seeds] for e, seeds in budgets.items()}, label, depth)
        except LoritaError as error:
            raise SystemExit(f"{model} on {dataset}, each seed across budgets: {error}") from None
        out.append([f"## {model} on {dataset}: each seed across budgets", "",
                    budgets_markdown(rows, label, budget_steps(rows)), ""])
    return out


def check_outputs(args: argparse.Namespace) -> None:
    """Every output checked before anything is read (``lorita.runs.output_file``): none replaces an input or a
    file of another kind, none is another's path; ``--copy-to`` a folder (or a new one in an existing folder)
    where no folder's copy would land on the folder itself."""
    try:
        check_distinct({"--out": args.out, "--fixed-sizes": args.fixed_sizes, "--plot": args.plot})
        for what, path, own in (("--out", args.out, json_with("studies", "per_seed")),
                                ("--fixed-sizes", args.fixed_sizes, json_with("studies", "fixed_size_differences")),
                                ("--plot", args.plot, is_png)):
            if path is not None:
                check_output_file(path, what, inputs=args.folders, own=own)
        if args.copy_to is not None:
            if args.copy_to.exists() and not args.copy_to.is_dir() or not args.copy_to.parent.is_dir():
                raise LoritaError(f"--copy-to {args.copy_to}: give a folder (or a new one in an existing folder)")
            for folder in args.folders:
                dest = args.copy_to.resolve().joinpath(*folder.resolve().parts[-3:])
                if dest == folder.resolve() or folder.resolve() in dest.parents:
                    raise LoritaError(f"--copy-to {args.copy_to} would copy {folder} onto itself; copy elsewhere")
    except LoritaError as error:
        raise SystemExit(str(error)) from None


def copy_results(folder: Path, to: Path) -> list[Path]:
    """Copy the JSON results of the experiment ``folder`` (and of its runs) under ``to``; the files written."""
    dest = to.joinpath(*folder.resolve().parts[-3:])
    written = []
    for sub in [folder, *sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())]:
        for name in ("config.json", "results.json"):
            source = sub / name
            if source.is_file() and not source.is_symlink():
                target = dest / sub.relative_to(folder) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="experiment run folders")
    parser.add_argument("--pre-registered", default="LoRITa N=2 + FT",
                        help="the headline column where an experiment names none (docs/converged/PLAN.md)")
    parser.add_argument("--out", type=Path, help="write summary.json here")
    parser.add_argument("--plot", type=Path, help="write the epoch-budget curve (PNG) here")
    parser.add_argument("--copy-to", type=Path, help="copy every folder's JSON results under this folder")
    parser.add_argument("--fixed-sizes", type=Path, help="write the pooled paired differences at the fixed sizes "
                                                         "(JSON) here")
    args = parser.parse_args()
    check_outputs(args)
    entries, fixed, bars = [], [], {}
    groups = load_groups(args.folders)
    for key, seeds in sorted(groups.items()):
        entry, paired, lines, bars[key[0]] = study(key, seeds, args.pre_registered)
        entries.append(entry)
        fixed.append({"model": entry["model"], "dataset": entry["dataset"], "epochs": entry["epochs"],
                      "pre_registered": entry["pre_registered"],
                      "fixed_size_differences": paired["fixed_size_differences"]})
        print("\n".join(lines))
    for lines in across_budgets(groups, args.pre_registered):
        print("\n".join(lines))
    if args.out is not None:
        write_summary(args.out, entries)
        print(f"wrote {args.out}")
    if args.fixed_sizes is not None:
        atomic_write_text(args.fixed_sizes, json.dumps({"studies": fixed}, indent=1, allow_nan=False) + "\n")
        print(f"wrote {args.fixed_sizes}")
    if args.plot is not None:
        print(f"wrote {plot_budget_curve(entries, args.plot, bars)}")
    if args.copy_to is not None:
        copied = [path for folder in args.folders for path in copy_results(folder, args.copy_to)]
        print(f"copied {len(copied)} JSON files under {args.copy_to}")


if __name__ == "__main__":
    main()
