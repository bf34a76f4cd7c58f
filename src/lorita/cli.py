"""The ``lorita`` command line (subcommands arrive with the CLI issue)."""

from __future__ import annotations

import argparse

import lorita


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lorita", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lorita {lorita.__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0
