"""``lorita report``: a Markdown summary and plots from run folders (read from files, nothing recomputed)."""

from __future__ import annotations

import argparse

from lorita.cli.options import output_options, require

EXAMPLE = """example:
  lorita report runs/fcn-d1 runs/fcn-d3 runs/fcn-d3-e95 --out runs/report
  lorita report runs/smol-80 runs/smol-60 --out runs/smol-report     # pretrained language models: perplexities
"""


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="Markdown summary and plots of run folders",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                       parents=[output_options(default_out="report")])
    p.add_argument("runs", nargs="+",
                   help="run folders (train and compress, a pretrained language model's compress runs included)")
    p.add_argument("--max-drop", type=float,
                   help="budget of the comparison: accuracy points (default 1), or for language models (trained with "
                        "--select-by val_loss, or pretrained and cut) nats of validation loss (default ln 1.02 = "
                        "0.0198: perplexity + 2%%)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import lorita
    from lorita.report import check_max_drop, read_runs, write_report
    from lorita.runs import RunOutput, write_json
    from lorita.runs.folder import mark

    require("matplotlib", command="report")
    runs = read_runs(args.runs)  # every run folder is read and checked before anything is written
    check_max_drop(args.max_drop, runs)
    output = RunOutput(args.out, overwrite=args.overwrite, inputs=[(r.path, "a run it reports on") for r in runs])
    with output as folder:
        write_json(folder / "config.json", mark({"command": "report", "lorita_version": lorita.__version__,
                                                 "runs": [str(r.path) for r in runs], "max_drop": args.max_drop}))
        path = write_report(runs, folder, max_drop=args.max_drop)
        text = path.read_text(encoding="utf-8")
    print(text)
    print(f"written: {args.out}/report.md")
    return 0
