"""Summaries of run folders: a Markdown report and PNG plots, read from the files the CLI wrote.

Example:
    >>> from lorita.report import write_report
    >>> write_report(["runs/fcn-d1", "runs/fcn-d3", "runs/fcn-d3-cut"], "report")  # doctest: +SKIP
    PosixPath('report/report.md')
"""

from lorita.report.markdown import check_max_drop, summarize, write_report
from lorita.report.plots import plot_compression, plot_perplexity, plot_ranks, plot_spectra, plot_training_curves
from lorita.report.runs import Run, read_run, read_runs

__all__ = [
    "Run", "check_max_drop", "plot_compression", "plot_perplexity", "plot_ranks", "plot_spectra",
    "plot_training_curves", "read_run", "read_runs", "summarize", "write_report",
]
