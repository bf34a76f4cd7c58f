"""Helpers shared by the CLI commands: run folders, JSON files, rebuilding a run's data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lorita.atomic import atomic_write_text
from lorita.errors import LoritaError


def prepare_out(path: str | Path, overwrite: bool, *, resume: bool = False) -> Path:
    """Create the output folder; refuse a non-empty one unless ``overwrite`` (or ``resume``).

    ``overwrite`` only ever deletes a folder lorita wrote (it holds a config.json with a
    ``command``), never an arbitrary one.

    Example:
        >>> import tempfile
        >>> prepare_out(Path(tempfile.mkdtemp()) / "run", overwrite=False).is_dir()
        True
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LoritaError(f"--out {path} is a file; choose a folder name")
    if path.is_dir() and any(path.iterdir()):
        if resume:
            return path
        if not overwrite:
            raise LoritaError(f"output folder {path} already exists and is not empty; pass --overwrite to "
                              "replace it, or choose another --out")
        config = path / "config.json"
        if not config.is_file() or "command" not in _read_json_quiet(config):
            raise LoritaError(f"refusing to overwrite {path}: it is not a lorita run folder (no config.json "
                              "written by lorita); remove it yourself or choose another --out")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _read_json_quiet(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically.

    Example:
        >>> import tempfile
        >>> write_json(Path(tempfile.mkdtemp()) / "a.json", {"x": 1})
    """
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, what: str) -> dict:
    """Read a JSON object, with an error that says which command writes it.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.json"; write_json(p, {"x": 1}); read_json(p, "x")
        {'x': 1}
    """
    path = Path(path)
    if not path.is_file():
        raise LoritaError(f"{path} not found: is {path.parent} a run folder written by {what}?")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LoritaError(f"{path} is not valid JSON ({err}); the run may be damaged") from None
    if not isinstance(data, dict):
        raise LoritaError(f"{path} does not hold a JSON object")
    return data


def train_config_of(run: str | Path) -> dict:
    """The ``config.json`` of the training run behind ``run`` (following compress runs to their source).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); write_json(d / "config.json", {"command": "train"})
        >>> train_config_of(d)["command"]
        'train'
    """
    run = Path(run)
    seen = set()
    while True:
        config = read_json(run / "config.json", "'lorita train' or 'lorita compress'")
        if config.get("command") == "train":
            return config
        source = config.get("source")
        if config.get("command") != "compress" or not source or run.resolve() in seen:
            raise LoritaError(f"{run / 'config.json'} is neither a train nor a compress run")
        seen.add(run.resolve())
        source = Path(source)
        run = source if source.is_absolute() or source.exists() else run.parent / source


def dataset_of(run: str | Path):
    """Load the dataset (same splits, same seed) a run was trained on.

    Example:
        >>> # dataset_of("runs/fcn-d3").test  -> the test Split
    """
    from lorita.data import load_dataset

    ds = train_config_of(run).get("dataset")
    if not isinstance(ds, dict) or not isinstance(ds.get("name"), str):
        raise LoritaError(f"the training run's config.json (for {run}) has no dataset entry "
                          "({\"name\": ...}); the run may be damaged")
    return load_dataset(ds["name"], ds.get("data_dir"), val_fraction=ds.get("val_fraction", 0.1),
                        seed=ds.get("seed", 0))


def parse_model_args(pairs: list[str] | None) -> dict[str, Any]:
    """``["width=256", "dim=64"]`` -> ``{"width": 256, "dim": 64}`` (values parsed as JSON when they can be).

    Example:
        >>> parse_model_args(["width=256", "mlp_ratio=2.5", "name=x"])
        {'width': 256, 'mlp_ratio': 2.5, 'name': 'x'}
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LoritaError(f"--model-arg takes KEY=VALUE, got {pair!r} (e.g. --model-arg width=256)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
