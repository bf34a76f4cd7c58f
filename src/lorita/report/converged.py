"""``docs/converged/summary.json``: the converged study's headline per model and epoch budget.

The file's schema, exactly (no other keys; ``null`` where the pre-registered column misses the
target on a seed, and then for the geometric mean and its interval too):

    {"studies": [{"model": str, "dataset": str, "epochs": int, "exposure": float, "plateau": bool,
                  "pre_registered": str, "alternatives": [str, ...], "small_model_baseline": bool,
                  "per_seed": [{"seed": int, "target_val_acc": float,
                                "lorita_params_kept": float | null,
                                "best_alternative": str, "best_alternative_params_kept": float}],
                  "geomean_ratio": float | null, "ci95": [float, float] | null}]}

Params kept are fractions of the original architecture. ``exposure`` is the pre-registered
LoRITa column's penalty exposure (``lorita.train.exposure``); ``plateau`` whether the plain
model passed the plateau test (``lorita.train.plateau``) on every seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from lorita.atomic import atomic_write_text
from lorita.checks import is_int, is_number
from lorita.errors import LoritaError

STUDY_KEYS = ("model", "dataset", "epochs", "exposure", "plateau", "pre_registered", "alternatives",
              "small_model_baseline", "per_seed", "geomean_ratio", "ci95")
SEED_KEYS = ("seed", "target_val_acc", "lorita_params_kept", "best_alternative", "best_alternative_params_kept")


def study_entry(*, model: str, dataset: str, epochs: int, exposure: float, plateau: bool, comparison: dict,
                alternatives: Sequence[str], small_model_baseline: bool) -> dict:
    """One study of the summary from ``lorita.runs.paired.ratio_over_seeds``'s ``comparison``, checked.

    Example:
        >>> comparison = {"pre_registered": "LoRITa N=2 + FT", "geomean_ratio": 0.5, "ci95": [0.4, 0.6],
        ...               "per_seed": [{"seed": 0, "target_val_acc": 90.1, "lorita_params_kept": 0.05,
        ...                             "best_alternative": "plain + SVD + FT", "best_alternative_params_kept": 0.1,
        ...                             "ratio": 0.5}]}
        >>> entry = study_entry(model="fcn", dataset="fashion-mnist", epochs=60, exposure=12.7, plateau=True,
        ...                     comparison=comparison, alternatives=["plain + SVD + FT"], small_model_baseline=True)
        >>> list(entry) == list(STUDY_KEYS), list(entry["per_seed"][0]) == list(SEED_KEYS)
        (True, True)
    """
    entry = {"model": model, "dataset": dataset, "epochs": epochs, "exposure": exposure, "plateau": plateau,
             "pre_registered": comparison["pre_registered"], "alternatives": list(alternatives),
             "small_model_baseline": small_model_baseline,
             "per_seed": [{k: r[k] for k in SEED_KEYS} for r in comparison["per_seed"]],
             "geomean_ratio": comparison["geomean_ratio"], "ci95": comparison["ci95"]}
    check_study(entry)
    return entry


def _fraction(value, where: str, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not is_number(value) or not 0 < value <= 1:
        raise LoritaError(f"{where} must be a fraction of the original params in (0, 1]"
                          f"{' or null' if nullable else ''}, got {value!r}")


def check_study(entry: dict) -> None:
    """Raise LoritaError unless ``entry`` has exactly the schema's keys and types.

    Example:
        >>> check_study({"model": "fcn"})
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: study fcn: keys must be exactly ['model', 'dataset', 'epochs', 'exposure', 'plateau', 'pre_registered', 'alternatives', 'small_model_baseline', 'per_seed', 'geomean_ratio', 'ci95']; missing ['alternatives', 'ci95', 'dataset', 'epochs', 'exposure', 'geomean_ratio', 'per_seed', 'plateau', 'pre_registered', 'small_model_baseline'], extra []
    """
    if not isinstance(entry, dict):
        raise LoritaError(f"a study must be an object with the keys {list(STUDY_KEYS)}, got {type(entry).__name__}")
    name = f"study {entry.get('model')}" + (f" ({entry['epochs']} epochs)" if "epochs" in entry else "")
    if set(entry) != set(STUDY_KEYS):
        keys = set(entry)
        raise LoritaError(f"{name}: keys must be exactly {list(STUDY_KEYS)}; missing {sorted(set(STUDY_KEYS) - keys)}, "
                          f"extra {sorted(keys - set(STUDY_KEYS))}")
    for key in ("model", "dataset", "pre_registered"):
        if not isinstance(entry[key], str) or not entry[key]:
            raise LoritaError(f"{name}: {key} must be a non-empty string, got {entry[key]!r}")
    if not is_int(entry["epochs"]) or entry["epochs"] < 1:
        raise LoritaError(f"{name}: epochs must be an integer >= 1, got {entry['epochs']!r}")
    if not is_number(entry["exposure"]) or entry["exposure"] < 0:
        raise LoritaError(f"{name}: exposure must be a number >= 0, got {entry['exposure']!r}")
    for key in ("plateau", "small_model_baseline"):
        if not isinstance(entry[key], bool):
            raise LoritaError(f"{name}: {key} must be true or false, got {entry[key]!r}")
    if not isinstance(entry["alternatives"], list) or not all(isinstance(a, str) for a in entry["alternatives"]):
        raise LoritaError(f"{name}: alternatives must be a list of column names, got {entry['alternatives']!r}")
    if not isinstance(entry["per_seed"], list) or not entry["per_seed"]:
        raise LoritaError(f"{name}: per_seed must be a non-empty list, one entry per seed")
    for row in entry["per_seed"]:
        _check_seed(row, name)
    ratio, ci = entry["geomean_ratio"], entry["ci95"]
    if ratio is not None and (not is_number(ratio) or ratio <= 0):
        raise LoritaError(f"{name}: geomean_ratio must be a number > 0 or null, got {ratio!r}")
    if ci is not None and (not isinstance(ci, list) or len(ci) != 2 or not all(is_number(x) for x in ci)
                           or not ci[0] <= ci[1]):
        raise LoritaError(f"{name}: ci95 must be [low, high] with low <= high, or null; got {ci!r}")
    if ratio is None and ci is not None:
        raise LoritaError(f"{name}: ci95 without a geomean_ratio")


def _check_seed(row: dict, name: str) -> None:
    if not isinstance(row, dict) or set(row) != set(SEED_KEYS):
        raise LoritaError(f"{name}: each per_seed entry must have exactly the keys {list(SEED_KEYS)}, got {row!r}")
    where = f"{name}, seed {row['seed']}"
    if not is_int(row["seed"]) or row["seed"] < 0:
        raise LoritaError(f"{name}: seed must be an integer >= 0, got {row['seed']!r}")
    if not is_number(row["target_val_acc"]):
        raise LoritaError(f"{where}: target_val_acc must be a number, got {row['target_val_acc']!r}")
    _fraction(row["lorita_params_kept"], f"{where}: lorita_params_kept", nullable=True)
    _fraction(row["best_alternative_params_kept"], f"{where}: best_alternative_params_kept")
    if not isinstance(row["best_alternative"], str) or not row["best_alternative"]:
        raise LoritaError(f"{where}: best_alternative must be a column name, got {row['best_alternative']!r}")


def write_summary(path: str | Path, studies: Sequence[dict]) -> dict:
    """Check every study and write ``{"studies": [...]}`` to ``path`` atomically; return what was written.

    Example:
        >>> write_summary("/nonexistent/summary.json", [])
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: a summary needs at least one study
    """
    if not studies:
        raise LoritaError("a summary needs at least one study")
    for entry in studies:
        check_study(entry)
    summary = {"studies": list(studies)}
    text = json.dumps(summary, indent=1, allow_nan=False)
    atomic_write_text(path, text + "\n")
    return summary


def pooled_plateau(plateaus: Sequence[dict]) -> bool:
    """Whether every seed's plain model passed the plateau test (``lorita.train.plateau.plateau_test`` results).

    Example:
        >>> pooled_plateau([{"plateau": True}, {"plateau": False}])
        False
    """
    if not plateaus:
        raise LoritaError("no plateau tests given (one per seed's plain model)")
    return all(p.get("plateau") is True for p in plateaus)
