"""The grid's choices on seed 0, as docs/converged/PLAN.md fixes them, from the grid's experiment folders.

Usage:
    python experiments/converged_choose.py runs/converged/fcn-e60 --seed 0 --json docs/converged/fcn-e60-grid.json

Reads ``<budget folder>/<setting>/seed<S>/results.json`` for every setting run (base, g1-g5, p1-p4,
taylor, r1) and prints every setting's result, then the choices, made on validation data only, ties
to the base:

1. the target's plain model: among base (p0) and p1-p3, the plain model (``depth1``) with the
   highest validation accuracy;
2. the alternatives' setting: among base, p1-p4 and r1, the one under which the best alternative (the
   non-LoRITa column keeping the fewest params at the target) keeps the fewest;
3. Torch-Pruning's importance: L1 (base) against Taylor (``taylor``), by the params Torch-Pruning
   + FT keeps at the target;
4. LoRITa's setting: among base, g1-g5 (g5: amendment 3, the FCN at 120 epochs only) and r1, the one
   under which the pre-registered column keeps the fewest params at the target (missing the target
   counts as keeping everything).

r1 (amendment 4) changes how every SVD-family column shares its ranks out among the layers (the
least-loss allocation instead of one global threshold), on both sides: it is a candidate of both
choices 2 and 4, so each side takes it or not on its own figures.

A setting not run is reported as such (with ``--config``, only the config's own) and is not a candidate. Nothing
is recomputed.

With ``--config`` (the study's config, whose ``settings`` hold each setting's overrides) it also prints the
overrides of the four choices together (``combined``): what the seeds then run as one setting (amendment 1: "the
seeds whose chosen setting differs run again"). Each choice gives only its own side's part: the alternatives'
setting its plain recipe, split or cut rule (``plain_cut_rule``), the target's its plain recipe as
``target_train`` (left out where it is the alternatives' recipe: the plain model then sets the target), Taylor its
importance, LoRITa's setting its recipe, init, split or cut rule (``lorita_cut_rule``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lorita import jsonio
from lorita.atomic import atomic_write_text
from lorita.choice import smallest_at_target
from lorita.errors import LoritaError
from lorita.runs.experiment_spec import LORITA_SIDE, PLAIN_SIDE, config_settings
from lorita.runs.output_file import check_output_file, json_with
from lorita.runs.paired import UNCUT

LORITA = tuple(f"g{i}" for i in range(1, 6))
PLAIN = ("p1", "p2", "p3")
SPLIT = ("p4",)
BOTH = ("r1",)  # settings that change how both sides cut (amendment 4)


def _read(folder: Path, setting: str, seed: int) -> dict | None:
    """A setting's results.json (None where it has not run) with its plain model's validation accuracy; one that
    is damaged or not an experiment's ends the script with a message."""
    path = folder / setting / f"seed{seed}" / "results.json"
    if not path.is_file():
        return None
    try:
        results = jsonio.read(path, allow_nan=True)
        plain = jsonio.read(path.parent / "depth1" / "results.json", allow_nan=True)
        if not isinstance(results, dict) or not isinstance(results.get("spec"), dict) or \
                not isinstance(results.get("runs"), list) or not isinstance(plain, dict) or "val_acc" not in plain:
            raise LoritaError(f"{path.parent} does not hold a finished 'lorita experiment' seed")
    except LoritaError as error:
        raise SystemExit(f"{error}; rerun setting {setting!r}, or move its folder away") from None
    return {**results, "plain_val_acc": plain["val_acc"]}


def _kept(run: dict, label: str) -> float:
    """The params a column keeps at the target (1.0: it misses it: the uncut model)."""
    chosen = run["columns"].get(label, {}).get("chosen")
    return 1.0 if chosen is None else chosen["params_kept"]


def _best_alternative(run: dict) -> tuple[float, str]:
    best = smallest_at_target(run["columns"], lorita=False)  # the experiment's rule, ties included
    return (1.0, UNCUT) if best is None else (best[1]["params_kept"], best[0])


def _pick(scores: dict[str, float], lower: bool) -> str:
    """The setting with the best score; the base on a tie (and when nothing else beats it strictly)."""
    best = "base"
    for setting, score in scores.items():
        if (score < scores[best]) if lower else (score > scores[best]):
            best = setting
    return best


def choose(folder: Path, seed: int = 0) -> dict:
    """Every setting's figures and the four choices (see the module docstring)."""
    runs = {s: _read(folder, s, seed) for s in ("base", *LORITA, *PLAIN, *SPLIT, "taylor", *BOTH)}
    base = runs["base"]
    if base is None:
        raise SystemExit(f"no base run in {folder} (base/seed{seed}/results.json): the grid compares against it")
    label = base["spec"].get("pre_registered") or "LoRITa N=2 + FT"
    done = {s: r for s, r in runs.items() if r is not None}
    rows = {}
    for setting, results in done.items():
        run = results["runs"][0]
        alt_kept, alt = _best_alternative(run)
        rows[setting] = {"plain_val_acc": results["plain_val_acc"], "target_val_acc": run["target_val_acc"],
                         "pre_registered_kept": _kept(run, label), "best_alternative": alt,
                         "best_alternative_kept": alt_kept, "torch_pruning_kept": _kept(run, "Torch-Pruning + FT")}
    choices = {
        "target_plain": _pick({s: rows[s]["plain_val_acc"] for s in ("base", *PLAIN) if s in rows}, lower=False),
        "alternatives": _pick({s: rows[s]["best_alternative_kept"] for s in ("base", *PLAIN, *SPLIT, *BOTH)
                               if s in rows}, lower=True),
        "torch_pruning_importance": "taylor" if _pick(
            {s: rows[s]["torch_pruning_kept"] for s in ("base", "taylor") if s in rows}, lower=True) == "taylor"
        else "l1",
        "lorita": _pick({s: rows[s]["pre_registered_kept"] for s in ("base", *LORITA, *BOTH) if s in rows},
                        lower=True),
    }
    return {"folder": str(folder), "seed": seed, "pre_registered": label, "settings": rows,
            "not_run": sorted(set(runs) - set(done)), "choices": choices}


def _side(overrides: dict, plain: bool) -> dict:
    """``overrides`` of one grid setting, its part for one side (``PLAIN_SIDE`` or ``LORITA_SIDE``; the target's
    recipe is choice 1's): a both-sides ``cut_rule`` as that side's; any other key of both sides is refused."""
    out = {}
    for key, value in overrides.items():
        if key == "cut_rule":
            out["plain_cut_rule" if plain else "lorita_cut_rule"] = value
        elif key not in PLAIN_SIDE + LORITA_SIDE:
            raise SystemExit(f"a grid setting changes {key!r}, which counts for both sides: its choice cannot be "
                             "taken by one side alone; give each side its own key")
        elif key != "target_train" and (key in PLAIN_SIDE) == plain:
            out[key] = value
    return out


def combined(choices: dict, settings: dict) -> dict:
    """The overrides of the four choices together (see the module docstring); ``settings``: the config's.

    Example:
        >>> settings = {"p1": {"plain_train": {"weight_decay": 0.001}, "target_train": {}},
        ...             "r1": {"cut_rule": "loss"}, "taylor": {"prune_importance": "taylor"}}
        >>> combined({"target_plain": "p1", "alternatives": "p1", "torch_pruning_importance": "l1",
        ...           "lorita": "r1"}, settings)
        {'plain_train': {'weight_decay': 0.001}, 'lorita_cut_rule': 'loss'}
        >>> combined({"target_plain": "base", "alternatives": "p1", "torch_pruning_importance": "taylor",
        ...           "lorita": "base"}, settings)
        {'plain_train': {'weight_decay': 0.001}, 'target_train': {}, 'prune_importance': 'taylor'}
    """
    def of(name: str) -> dict:
        if name != "base" and name not in settings:
            raise SystemExit(f"the config has no setting {name!r}; pass the study's config")
        return settings.get(name, {})

    out = _side(of(choices["alternatives"]), plain=True)
    target = of(choices["target_plain"]).get("plain_train", {})
    if target != out.get("plain_train", {}):
        out["target_train"] = target
    if choices["torch_pruning_importance"] == "taylor":
        out.update(_side(of("taylor"), plain=True))
    out.update(_side(of(choices["lorita"]), plain=False))
    return out


def _settings(config: Path) -> dict:
    """The config's ``settings``; a file that is not a study's config ends the script with a message."""
    try:
        return config_settings(config)
    except LoritaError as error:
        raise SystemExit(str(error)) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a budget's folder: runs/converged/<model>-e<E>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the settings' figures and the choices here")
    parser.add_argument("--config", type=Path, help="the study's config: print the choices' overrides together")
    args = parser.parse_args()
    try:  # the output checked before any work: it may not replace the config, a result or another kind of file
        if args.json is not None:
            runs = sorted(args.folder.glob("*/seed*"))  # the settings' runs; a file beside them is the user's call
            check_output_file(args.json, "--json", inputs=[*runs, *[args.config] * (args.config is not None)],
                              own=json_with("choices"))
    except LoritaError as error:
        raise SystemExit(str(error)) from None
    settings = _settings(args.config) if args.config is not None else None  # read first: a bad file ends it here
    out = choose(args.folder, args.seed)
    if settings is not None:
        out["combined"] = combined(out["choices"], settings)
        out["not_run"] = [s for s in out["not_run"] if s in settings]  # not the grid's settings of another model
    print("| setting | plain val acc | target | pre-registered kept | best alternative | kept | Torch-Pruning kept |")
    print("|---|---|---|---|---|---|---|")
    for setting, row in out["settings"].items():
        print(f"| {setting} | {row['plain_val_acc']:.2f} | {row['target_val_acc']:.2f} | "
              f"{100 * row['pre_registered_kept']:.1f}% | {row['best_alternative']} | "
              f"{100 * row['best_alternative_kept']:.1f}% | {100 * row['torch_pruning_kept']:.1f}% |")
    print(f"not run: {', '.join(out['not_run']) or 'none'}")
    print("choices:", json.dumps(out["choices"]))
    if "combined" in out:
        print("combined:", json.dumps(out["combined"]))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
