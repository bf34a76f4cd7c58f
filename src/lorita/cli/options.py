"""Flags shared by several commands: output folder options, the training recipe, model arguments, extras.

The training-recipe flags are generated from ``TrainConfig``'s fields (type, default, help),
so a new field appears on every command that trains without being written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import typing
from typing import Any, Literal

from lorita import jsonio
from lorita.errors import LoritaError
from lorita.train import TrainConfig


def output_options(default_out: str | None = None) -> argparse.ArgumentParser:
    """A parent parser with ``--out``, ``--overwrite`` and ``--no-progress``."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    if default_out is None:
        g.add_argument("--out", required=True, help="run folder to create (built in OUT.partial, moved when complete)")
    else:
        g.add_argument("--out", default=default_out, help=f"output folder (default: {default_out})")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder (only one lorita wrote; swapped in when the new one is complete)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def train_options(**defaults: Any) -> argparse.ArgumentParser:
    """A parent parser with one flag per ``TrainConfig`` field (``defaults`` override the field defaults)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("training recipe")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        default = defaults.get(f.name, f.default)
        help_text = f.metadata.get("help", "")
        if typing.get_origin(kind) is Literal:
            g.add_argument(_flag(f.name), choices=typing.get_args(kind), default=default, help=help_text)
        elif kind in (bool, bool | None):
            g.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            optional = [t for t in typing.get_args(kind) if t is not type(None)]
            kind = optional[0] if optional else kind  # "float | None": a float flag whose default is None
            g.add_argument(_flag(f.name), type=kind, default=default, help=help_text or None)
    return p


def train_config_from(args: argparse.Namespace, **override: Any) -> TrainConfig:
    """A TrainConfig from parsed flags (``override`` wins).

    Example:
        >>> args = build().parse_args(["--epochs", "3"])
        >>> train_config_from(args).epochs
        3
    """
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    values.update(override)
    return TrainConfig(**values)


def build() -> argparse.ArgumentParser:
    """A parser with just the training-recipe flags (for the examples and tests)."""
    return argparse.ArgumentParser(parents=[train_options()])


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
            raise LoritaError(f"expected KEY=VALUE, got {pair!r} (e.g. width=256)")
        out[key] = jsonio.parse_value(value, key)
    return out


# module -> what it is for, and the extra that installs it
EXTRAS = {"matplotlib": ("plots", "cli"), "tqdm": ("progress bars", "cli"), "sklearn": ("the digits dataset", "data"),
          "torch_pruning": ("the Torch-Pruning column", "prune")}


def require(*modules: str, command: str) -> None:
    """Fail at once, naming the extra to install, when an optional dependency a command needs is missing.

    Example:
        >>> require("json", command="demo")
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        what = ", ".join(f"{m} ({EXTRAS[m][0]})" if m in EXTRAS else m for m in missing)
        extras = sorted({EXTRAS[m][1] for m in missing if m in EXTRAS})
        raise LoritaError(f"lorita {command} needs {what}; install it in lorita's clone with: "
                          f"pip install -e '.[{','.join(extras)}]'")
