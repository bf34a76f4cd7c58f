"""``lorita report``: a Markdown summary and plots from run folders (read from files, nothing recomputed)."""

from __future__ import annotations

import argparse

EXAMPLE = """example:
  lorita report runs/fcn-d1 runs/fcn-d3 runs/fcn-d3-e95 --out runs/report
"""


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="Markdown summary and plots of run folders",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (train and compress)")
    p.add_argument("--out", default="report", help="folder for report.md and the plots (default: report)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorita.report import write_report

    path = write_report(args.runs, args.out)
    print(path.read_text())
    print(f"written: {path}")
    return 0
