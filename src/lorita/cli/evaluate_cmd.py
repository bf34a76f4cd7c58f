"""``lorita evaluate``: accuracy and size of a run's model on its validation and test data; a language-model run's
perplexity on a text, beside its source model's on the same windows."""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
from pathlib import Path

from lorita import jsonio
from lorita.errors import LoritaError

EXAMPLE = """example:
  lorita evaluate runs/fcn-d3
  lorita evaluate runs/fcn-d3-e95 --write     # also writes evaluation.json into the run
  lorita evaluate runs/smol-80 --text /usr/share/common-licenses/GPL-3 --json   # a language-model run
"""


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="validation/test accuracy, params and FLOPs of a run's model (a language "
                                        "model: perplexity on a text)",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder (train or compress)")
    p.add_argument("--text", metavar="FILE",
                   help="a compressed pretrained language model's run (docs/LM.md): score it and its source model on "
                        "this UTF-8 text (a file, a folder of them, or fortunes / python-docs / licenses), the same "
                        "windows")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--write", action="store_true", help="write evaluation.json into the run folder")
    p.add_argument("--layers", action="store_true", help="print the per-layer profile table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorita.runs import evaluate_run, write_json
    from lorita.runs.lm import is_lm_run

    if is_lm_run(args.run):
        return run_lm(args)
    if args.text is not None:
        _refuse_text(Path(args.run))
    if args.json and args.layers:
        raise LoritaError("--layers prints a table; leave it out with --json")
    if args.write:
        _check_writable(Path(args.run))
    result, counts = evaluate_run(args.run)
    if args.json:
        print(json.dumps(json_safe(result)))
    else:
        if "val_ppl" in result:  # a language model trained on text: perplexity first, accuracy of the next token
            print(f"{args.run}: val loss {result['val_loss']:.4f} (perplexity {result['val_ppl']:.3g}), test loss "
                  f"{result['test_loss']:.4f} (perplexity {result['test_ppl']:.3g}); next-token accuracy val "
                  f"{result['val_acc']:.2f}%, test {result['test_acc']:.2f}%")
        else:
            print(f"{args.run}: val {result['val_acc']:.2f}% (loss {result['val_loss']:.4f}), "
                  f"test {result['test_acc']:.2f}% (loss {result['test_loss']:.4f})")
        print(f"params {counts.params:,}  MACs/example {counts.macs:,}  FLOPs/example {counts.flops:,} (= 2 x MACs)")
    if args.layers:
        print(counts.table())
    if args.write:
        write_json(Path(args.run) / "evaluation.json", json_safe(result))
    return 0


def json_safe(figures: dict) -> dict:
    """``figures`` with a number past a float's range (a perplexity of a huge loss: inf) or NaN as None, JSON's
    null (``Infinity`` is not JSON, and lorita's own reader refuses it).

    Example:
        >>> json_safe({"val_ppl": float("inf"), "val_loss": 9e3})
        {'val_ppl': None, 'val_loss': 9000.0}
    """
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in figures.items()}


def _refuse_text(run: Path) -> None:
    """``--text`` given for a folder that is not a language-model run: say what it is and what to do instead."""
    from lorita.runs.folder import is_marked, read_json
    from lorita.runs.lm import names_lm_source

    compress_first = (f"compress it first (lorita compress {run} --params P --out RUN, docs/LM.md), then evaluate "
                      "RUN with --text")
    if names_lm_source(run):
        raise LoritaError(f"{run} is a pretrained language model, not a run: {compress_first}")
    if not run.is_dir():
        raise LoritaError(f"{run} does not exist or is not a folder: give a run folder")
    if (run / "config.json").is_file():
        read_json(run / "config.json", "lorita")  # a damaged one: its own message
    if not is_marked(run):
        raise LoritaError(f"{run} is not a run folder lorita wrote (no marked config.json): --text scores a "
                          "compressed pretrained language model's run (docs/LM.md)")
    raise LoritaError(f"--text scores a compressed pretrained language model ('lorita compress SOURCE --params "
                      f"P', docs/LM.md); {run} is a run of lorita's own training, scored on its own "
                      "validation and test data: leave --text out")


def _check_writable(run: Path) -> None:
    """``--write``, before anything is evaluated: into a run folder lorita wrote (not through a link), where
    ``evaluation.json`` is absent or a file."""
    from lorita.runs.folder import is_marked

    if run.is_symlink():
        raise LoritaError(f"{run} is a symbolic link; --write writes only into a run folder itself: give its own "
                          "path, or leave out --write")
    if not is_marked(run):
        raise LoritaError(f"{run} is not a run folder lorita wrote (no marked config.json), so --write does not "
                          "write into it; leave out --write (--json prints the figures)")
    if not os.access(run, os.W_OK | os.X_OK):  # found now, not after the evaluation's minutes
        raise LoritaError(f"{run} is not writable by this user, so --write cannot put evaluation.json there; make it "
                          "writable, or leave out --write (--json prints the figures)")
    path = run / "evaluation.json"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):  # lorita writes no links: one here is the user's, neither followed nor replaced
        raise LoritaError(f"{path} is there and is not a file; move it away, or leave out --write")
    if not _is_evaluation(path):
        raise LoritaError(f"{path} is there and is not an evaluation --write wrote (no val_loss and test_loss), "
                          "so it is not replaced; move it away, or leave out --write")


def _is_evaluation(path: Path) -> bool:
    """Whether ``path`` holds what ``--write`` writes: a JSON object with ``val_loss`` and ``test_loss``."""
    try:
        figures = jsonio.read(path, allow_nan=True)
    except LoritaError:
        return False
    return isinstance(figures, dict) and {"val_loss", "test_loss"} <= figures.keys()


def run_lm(args: argparse.Namespace) -> int:
    from lorita.runs.lm import evaluate_lm_run

    if args.text is None:
        raise LoritaError(f"{args.run} is a language-model run: say which text to score it on, --text FILE (e.g. "
                          "--text /usr/share/common-licenses/GPL-3)")
    if args.write or args.layers:
        raise LoritaError("--write and --layers apply to trained runs; a language-model run prints its perplexity "
                          "(--json for JSON)")
    result = evaluate_lm_run(args.run, args.text)
    if args.json:
        print(json.dumps(json_safe(result)))
    else:
        print(f"{args.run}: perplexity {result['ppl']:.3f} on {args.text} ({result['tokens']} tokens), the source "
              f"model {result['dense_ppl']:.3f} ({result['ppl'] / result['dense_ppl']:.2f}x)")
    return 0
