"""``lorita models`` and ``lorita datasets``: what is available here."""

from __future__ import annotations

import argparse


def add_parsers(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo", description="List the zoo's models and their options.",
                       epilog="example:\n  lorita models", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run_models)
    p = sub.add_parser("datasets", help="which datasets are available here, and where",
                       description="Show each dataset, whether its files were found, where, and how to get it.",
                       epilog="example:\n  lorita datasets --data-dir ~/data",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder to look in (MNIST, CIFAR)")
    p.set_defaults(func=run_datasets)


def run_models(args: argparse.Namespace) -> int:
    from lorita.models import list_models
    from lorita.models.registry import model_kwargs

    for name in list_models():
        options = ", ".join(f"{k}={v}" for k, v in model_kwargs(name).items()) or "(no options)"
        print(f"{name:10s} {options}")
    return 0


def run_datasets(args: argparse.Namespace) -> int:
    from lorita.data import dataset_status
    from lorita.data.text import text_dataset_status

    for row in [*dataset_status(args.data_dir), *text_dataset_status(args.data_dir)]:
        if row["available"]:
            print(f"{row['name']:14s} available   {row['found_at']}")
        elif row.get("damaged"):
            print(f"{row['name']:14s} damaged     {row['damaged']}")
            print(f"{'':14s}             {row['how_to_get']}")
        else:
            print(f"{row['name']:14s} missing     looked in: {', '.join(row['looked_in']) or '-'}")
            print(f"{'':14s}             {row['how_to_get']}")
    return 0
