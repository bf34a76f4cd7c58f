"""Command-line flags from the library's own types, for ``lorita``'s commands and for scripts (benchmarks).

The training-recipe flags are generated from ``TrainConfig``'s fields (type, default, help),
so a new field appears on every command and script that trains without being written twice.

Example:
    >>> import argparse
    >>> args = argparse.ArgumentParser(parents=[train_flags(epochs=3)]).parse_args(["--lr", "0.1"])
    >>> train_config_from(args).epochs, train_config_from(args).lr
    (3, 0.1)
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Literal

from lorita import jsonio
from lorita.errors import LoritaError
from lorita.train import TrainConfig

__all__ = ["parse_assignments", "train_config_from", "train_flags"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def train_flags(**defaults: Any) -> argparse.ArgumentParser:
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
    """A TrainConfig from flags parsed with ``train_flags`` (``override`` wins).

    Example:
        >>> args = argparse.ArgumentParser(parents=[train_flags()]).parse_args(["--epochs", "3"])
        >>> train_config_from(args).epochs
        3
    """
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    values.update(override)
    return TrainConfig(**values)


def parse_assignments(pairs: list[str] | None) -> dict[str, Any]:
    """``["width=256", "dim=64"]`` -> ``{"width": 256, "dim": 64}`` (values parsed as JSON when they can be).

    Example:
        >>> parse_assignments(["width=256", "mlp_ratio=2.5", "name=x"])
        {'width': 256, 'mlp_ratio': 2.5, 'name': 'x'}
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LoritaError(f"expected KEY=VALUE, got {pair!r} (e.g. width=256)")
        out[key] = jsonio.parse_value(value, key)
    return out
