"""Flags shared by several commands: output folder options, the training recipe, model arguments, extras.

The training-recipe flags and ``KEY=VALUE`` model arguments come from ``lorita.flags`` (scripts
and benchmarks use them from there too).
"""

from __future__ import annotations

import argparse
import importlib.util

from lorita.errors import LoritaError
from lorita.flags import parse_assignments, train_config_from, train_flags

__all__ = ["EXTRAS", "build", "output_options", "parse_model_args", "require", "train_config_from",
           "train_options"]


def folder_name(text: str) -> str:
    """``--out``'s value: an empty one is refused here, where it is still told apart from ``.``.

    Example:
        >>> folder_name("runs/first")
        'runs/first'
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: give a new folder name, e.g. --out runs/first")
    return text


def output_options(default_out: str | None = None) -> argparse.ArgumentParser:
    """A parent parser with ``--out``, ``--overwrite`` and ``--no-progress``."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    if default_out is None:
        g.add_argument("--out", required=True, type=folder_name,
                       help="run folder to create (built in OUT.partial, moved when complete)")
    else:
        g.add_argument("--out", default=default_out, type=folder_name, help=f"output folder (default: {default_out})")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder (only one lorita wrote; swapped in when the new one is complete)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


train_options = train_flags  # one flag per TrainConfig field (lorita.flags)


def build() -> argparse.ArgumentParser:
    """A parser with just the training-recipe flags (for the examples and tests)."""
    return argparse.ArgumentParser(parents=[train_options()])


parse_model_args = parse_assignments  # KEY=VALUE pairs, values as JSON (lorita.flags)


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
