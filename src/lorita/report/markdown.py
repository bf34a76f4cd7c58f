"""Markdown summary of run folders: a table of train runs, a table of compress runs,
a comparison at an accuracy budget (1 point by default; docs/METHOD.md section 5), a pretrained language model's
compress runs with the smallest within a perplexity budget (x 1.02 by default), and the plots.

Every number comes from the run folders' files; nothing is recomputed.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
import os
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

from lorita.atomic import atomic_write_text
from lorita.checks import check_number, is_number
from lorita.cutspec import cut_from_dict
from lorita.errors import LoritaError
from lorita.metric import ACCURACY, LOSS, Metric
from lorita.profile import human
from lorita.report.plots import plot_compression, plot_perplexity, plot_ranks, plot_spectra, plot_training_curves
from lorita.report.runs import Run, find_source, lm_method, lm_recovery, lm_texts, read_runs, source_key, source_name
from lorita.sweep import smallest_within

log = logging.getLogger(__name__)

NA = "n/a"
PLOTS = (  # (file name, function, caption)
    ("training_curves.png", plot_training_curves, "Validation accuracy per epoch"),
    ("spectra.png", plot_spectra, "Normalised singular values per layer"),
    ("compression.png", plot_compression, "Test accuracy vs params kept"),
    ("ranks.png", plot_ranks, "Kept rank per layer"),
    ("perplexity.png", plot_perplexity, "Perplexity vs params kept (language models)"),
)




def _acc(value) -> str:
    return f"{value:.2f}" if is_number(value) else NA


def _loss(value) -> str:
    """A loss with its perplexity: ``'1.2345 (ppl 3.44)'``."""
    if not is_number(value):
        return NA
    return f"{value:.4f} (ppl {_times(value, '.3g')})"


def _times(nats: float, spec: str) -> str:
    """The factor ``e^nats`` (a perplexity, or a ratio of two) formatted with ``spec``; ``inf`` past a float's range.

    Example:
        >>> _times(0.0198, ".3f"), _times(800.0, ".3f")
        ('1.020', 'inf')
    """
    return format(math.exp(nats), spec) if nats < 700 else "inf"


def _count(value) -> str:
    return human(int(value)) if is_number(value) else NA


def _int(value) -> str:
    return str(int(value)) if is_number(value) else NA


def _kept(fraction) -> str:
    return f"{100 * fraction:.1f}" if is_number(fraction) else NA


def _seconds(value) -> str:
    if not is_number(value):
        return NA
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


# Markdown's link, image, emphasis, code and table characters, backslash-escaped in text from run files
_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_[]~!|"})


def escape(text) -> str:
    r"""``text`` (a folder name, a model name from config.json, ...) as literal Markdown table text:
    ``<``, ``>`` and ``&`` as HTML entities (no tag, image or script reaches a viewer), Markdown's
    link, emphasis and code characters backslash-escaped, line breaks and other control
    characters as spaces.

    Example:
        >>> escape("<img src=x> [a](javascript:b) *c*")
        '&lt;img src=x&gt; \\[a\\](javascript:b) \\*c\\*'
    """
    text = html.escape(str(text), quote=False).translate(_MARKDOWN)
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)


def _section(config: dict, key: str) -> dict:
    """``config[key]`` when it is an object, else empty (a damaged config.json shows as n/a)."""
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]  # every cell: run files' text
    return lines


def _train_table(trains: list[Run]) -> list[str]:
    losses = any(run.metric is LOSS for run in trains)  # language models: their loss and perplexity too
    head = ["run", "model", "dataset", "depth", "epochs", "best epoch", "val acc %", "test acc %",
            *(["val loss", "test loss"] if losses else []), "params", "MACs", "seconds"]
    rows = []
    for run in trains:
        model = _section(run.config, "model").get("name", NA)
        dataset = _section(run.config, "dataset").get("name", NA)
        epochs = run.results.get("epochs", len(run.metrics) or None)
        rows.append([run.name, model, dataset, _int(run.depth), _int(epochs), _int(run.get("best_epoch")),
                     _acc(run.get("val_acc")), _acc(run.get("test_acc")),
                     *([_loss(run.get("val_loss")), _loss(run.get("test_loss"))] if losses else []),
                     _count(run.get("params")), _count(run.get("macs")), _seconds(run.get("seconds"))])
    chosen = "the best epoch's (by validation loss for a language model trained with --select-by val_loss)" \
        if losses else "the best epoch's"
    return [*_table(head, rows), "",
            "MACs = multiply-accumulates per example; FLOPs = 2 x MACs. Params and MACs are those of the merged "
            f"model (the original architecture). Val figures are {chosen}; test figures are that model's."
            + (" Losses in nats per prediction (per character for text), with their perplexity." if losses else "")]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def ranks_summary(results: dict) -> str:
    """``'6 layers cut, 2 dense'`` from a compress results.json.

    Example:
        >>> ranks_summary({"ranks": {"a": 3, "b": 9, "c": 2}, "dense_layers": ["b"]})
        '2 layers cut, 1 dense'
    """
    ranks = results.get("ranks")
    if not isinstance(ranks, dict):
        return NA
    dense = set(results.get("dense_layers") or [])
    cut = sum(1 for name in ranks if name not in dense)
    return f"{_plural(cut, 'layer')} cut, {len(dense)} dense"


def _strategy(results: dict) -> str:
    """How the run was cut: its kind (``"cut"``, or the ``"strategy"`` of runs from before it) and the options
    that differ from the kind's defaults."""
    cut = results.get("cut")
    if isinstance(cut, dict):
        text = str(cut.get("kind") or NA)
        try:
            how = cut_from_dict(cut)
            defaults = {f.name: f.default for f in dataclasses.fields(how)}
            options = {k: v for k, v in how.to_dict().items()
                       if k != "kind" and (defaults[k] is dataclasses.MISSING or v != defaults[k])}
        except LoritaError:  # a damaged or unknown cut: shown as written
            options = {k: v for k, v in cut.items() if k != "kind"}
    else:
        text, options = str(results.get("strategy") or NA), results.get("options")
    if isinstance(options, dict):
        shown = [f"{k}={v:g}" if is_number(v) else f"{k}={v}" for k, v in options.items()
                 if isinstance(v, (str, int, float, bool)) and len(str(v)) <= 16][:3]
        if shown:
            text += " (" + ", ".join(shown) + ")"
    return text


def _chain(run: Run, key: str = "test_acc", show=_acc) -> str:
    parts = [show(run.get("before", key)), show(run.get("after_cut", key))]
    if run.get("after_finetune") is not None:
        parts.append(show(run.get("after_finetune", key)))
    return " → ".join(parts)


def _compress_table(cuts: list[Run]) -> list[str]:
    losses = any(run.metric is LOSS for run in cuts)  # language models: the loss chain too
    head = ["run", "source", "strategy", "ranks", "params kept %", "MACs kept %",
            "test acc % (before → cut → fine-tune)", *(["test loss (before → cut → fine-tune)"] if losses else []),
            "evaluations", "seconds"]
    rows = [[run.name, source_name(run), _strategy(run.results), ranks_summary(run.results),
             _kept(run.get("kept", "params")), _kept(run.get("kept", "macs")), _chain(run),
             *([_chain(run, "test_loss", _loss)] if losses else []),
             _int(run.get("evaluations")), _seconds(run.get("seconds"))] for run in cuts]
    return [*_table(head, rows), "",
            "Kept % are of the original, uncomposed architecture (params; MACs = multiply-accumulates per example, "
            "FLOPs = 2 x MACs). The third accuracy appears only when the run fine-tuned after the cut."]


def _ppl(value) -> str:
    return f"{value:.2f}" if is_number(value) else NA


def _perplexity_chain(run: Run, text: str) -> str:
    dense, cut, recovered = (run.get(stage, text, "ppl") for stage in ("dense", "after_cut", "after_recovery"))
    parts = [_ppl(dense), _ppl(cut)] + ([_ppl(recovered)] if run.get("after_recovery") is not None else [])
    final = recovered if run.get("after_recovery") is not None else cut
    ratio = f" ({final / dense:.2f}x)" if is_number(final) and is_number(dense) and dense > 0 else ""
    return " → ".join(parts) + ratio


def _recovery(run: Run) -> str:
    mode, steps = lm_recovery(run), run.get("recovery", "steps")
    return f"{mode}, {_int(steps)} steps" if mode != "none" and is_number(steps) else mode


def _lm_table(lms: list[Run]) -> list[str]:
    texts = lm_texts(lms)
    head = ["run", "model", "method", "params kept %", "params", *[f"{escape(t)} perplexity" for t in texts],
            "recovery", "minutes"]
    rows = []
    for run in lms:
        total = run.get("seconds", "total")
        rows.append([run.name, source_name(run), lm_method(run), _kept(run.get("params", "kept")),
                     f"{_count(run.get('params', 'cut'))} of {_count(run.get('params', 'dense'))}",
                     *[_perplexity_chain(run, t) if run.get("dense", t) is not None else NA for t in texts],
                     _recovery(run), f"{total / 60:.1f}" if is_number(total) else NA])
    return [*_table(head, rows), "",
            "Perplexity on each text's validation documents, the same token windows at every stage: dense → cut → "
            "after recovery (fine-tuning of the thin layers) when the run had one, and in brackets the last over "
            "the dense model's. Params kept are of the whole model (embeddings included, a tied head counted once)."]


def _lm_excess(run: Run, text: str) -> float | None:
    """How many nats of loss an "lm" run's deployed model (after recovery if any, else the cut) adds on ``text`` over
    its own dense model on the same windows; None where either is missing."""
    stage = "after_recovery" if run.get("after_recovery") is not None else "after_cut"
    final, dense = run.get(stage, text, "nll"), run.get("dense", text, "nll")
    return final - dense if is_number(final) and is_number(dense) else None


def _lm_model(run: Run) -> str:
    """Which pretrained model an "lm" run cut: its packaged name, or the whole path of the file or folder it read
    (the same relative path typed in two folders names two models); the text its command line gave for an older
    record without the path."""
    source = run.results.get("source")
    source = source if isinstance(source, dict) else {}
    folder, file = source.get("folder"), source.get("gguf_file")
    if source.get("kind") in ("gguf", "folder") and isinstance(folder, str) and folder:
        return os.path.join(folder, file) if source["kind"] == "gguf" and isinstance(file, str) else folder
    text = source.get("text")
    return text if isinstance(text, str) and text else source_name(run)


def _lm_comparison(lms: list[Run], budget: float) -> list[str]:
    """For each pretrained model and text, the "lm" run with the fewest params whose perplexity stays within
    ``budget`` nats of loss (perplexity x e^budget) of its own dense model's."""
    def kept(run: Run) -> float | None:
        value = run.get("params", "kept")
        return value if is_number(value) else None

    groups: dict[str, list[Run]] = {}  # by the model's file or folder (or packaged name); shown by its name
    for run in lms:
        groups.setdefault(_lm_model(run), []).append(run)
    shown = [source_name(members[0]) for members in groups.values()]
    head = ["model", "text", "budget", "chosen run", "method", "params kept %", "perplexity"]
    bar = f"x {_times(budget, '.3f')} of dense"
    rows = []
    for (source, members), name in zip(groups.items(), shown):
        name = name if shown.count(name) == 1 else source  # two models of one name: the whole path
        for text in lm_texts(members):
            measured = [run for run in members if _lm_excess(run, text) is not None and kept(run) is not None]
            best = smallest_within(measured, budget, val=lambda r: _lm_excess(r, text), size=kept, metric=LOSS)
            if best is not None:
                rows.append([name, text, bar, best.name, lm_method(best), _kept(kept(best)),
                             _perplexity_chain(best, text)])
                continue
            if measured:
                closest = min(measured, key=lambda r: _lm_excess(r, text))
                missing = f"none of {_plural(len(measured), 'run')} reaches it (closest: {closest.name}, x " \
                    f"{_times(_lm_excess(closest, text), '.3f')})"
            else:
                missing = "no run with its perplexities and params on this text"
            rows.append([name, text, bar, missing, NA, NA, NA])
    return [*_table(head, rows), "",
            "For each pretrained model and text, the run with the fewest params whose perplexity (after recovery if "
            "any, else after the cut) stays within the budget of its own dense model's on the same windows: the "
            "model's own as the reference (view (a)), as nothing was trained beside it. These perplexities are of the "
            "text's validation documents, which also choose the run, and the cut was calibrated (and recovered) on "
            "the same texts' training documents, to which the dense model was not adapted: a recovered cut can beat "
            "it there (below 1x). Read the choice as what that size keeps on these texts; `lorita evaluate RUN "
            "--text FILE` measures a text the run never saw. Only the runs given are compared: a finer sweep of "
            "sizes gives a finer answer."]


def _final(run: Run, key: str):
    """A figure of the deployed model: after fine-tuning when there was some, else after the cut."""
    if run.get("after_finetune") is not None:
        return run.get("after_finetune", key)
    return run.get("after_cut", key)


def _reference(train: Run, trains: list[Run], metric: Metric) -> Run | None:
    """The plain (depth 1) train run on the same model and dataset, best on validation by ``metric``."""
    def key(run):
        return (_section(run.config, "model").get("name"), _section(run.config, "dataset").get("name"))
    plain = [t for t in trains if t.depth == 1 and key(t) == key(train) and is_number(t.get(metric.val))]
    return max(plain, key=lambda t: metric.score(t.get(metric.val)), default=None)


def _smallest_within(members: list[Run], target: float, metric: Metric) -> Run | None:
    def number(value):
        return value if is_number(value) else None
    return smallest_within(members, target, val=lambda r: number(_final(r, metric.val)),
                           size=lambda r: number(r.get("kept", "params")), metric=metric)


# how each metric's comparison is worded: the validation figure, its budget, the test figure shown
_WORDS = {ACCURACY: ("accuracy", "val acc %", "test acc %", _acc, "point below", "-"),
          LOSS: ("loss", "val loss", "test loss", _loss, "nats above", "+")}


def _comparison(cuts: list[Run], runs: list[Run], budget: float, metric: Metric = ACCURACY) -> list[str]:
    """The comparison table of the compress runs judged by ``metric``, at ``budget`` (its units)."""
    name, val_head, test_head, show, side, sign = _WORDS[metric]
    digits = metric.digits
    trains = [r for r in runs if r.kind == "train"]
    groups: dict[str, list[Run]] = {}
    for run in cuts:
        groups.setdefault(source_key(run), []).append(run)
    head = ["source", "view", f"target ({val_head})", "chosen run", "params kept %", "MACs kept %", test_head]
    rows = []
    for members in groups.values():
        train = find_source(members[0], runs)
        label = train.label if train is not None else source_name(members[0])
        own = next((r.get("before", metric.val) for r in members if is_number(r.get("before", metric.val))), None)
        ref = _reference(train, trains, metric) if train is not None else None
        views = [("(a) own", own, "own", f"no uncompressed validation {name} in results.json")]
        views.append(("(b) common", ref.get(metric.val) if ref is not None else None,
                      ref.name if ref is not None else "", "no depth-1 run of this model and dataset given"))
        for view, base, whose, missing in views:
            if not is_number(base):
                rows.append([label, view, NA, missing, NA, NA, NA])
                continue
            target = metric.target_for(base, budget)
            best = _smallest_within(members, target, metric)
            target_text = f"{target:.{digits}f} ({whose} {base:.{digits}f} {sign} {budget:.4g})"
            if best is None:
                rows.append([label, view, target_text, f"none of {_plural(len(members), 'run')} reaches it",
                             NA, NA, NA])
            else:
                rows.append([label, view, target_text, best.name, _kept(best.get("kept", "params")),
                             _kept(best.get("kept", "macs")), show(_final(best, metric.test))])
    unit = "point" if metric is ACCURACY else "nats"
    return [*_table(head, rows), "",
            f"For each source model, the compress run with the fewest params whose validation {name} (after "
            f"fine-tuning if any) reaches the target; its test {name} is reported. "
            f"View (a): {budget:.4g} {side} the model's own uncompressed {name} (the paper's). View (b): "
            f"{budget:.4g} {unit} {side.split()[1]} the plain depth-1 model's, the same absolute bar for every depth "
            "(the fair one). Only the compress runs given are compared: a finer sweep of cuts gives a finer answer."]


def _comparisons(cuts: list[Run], runs: list[Run], budget: float | None, sub: str) -> list[str]:
    """One comparison section per metric the compress runs are judged by (``budget``: None for each one's own
    default, 1 point of accuracy or ln 1.02 nats of loss)."""
    lines = []
    for metric in (ACCURACY, LOSS):
        judged = [run for run in cuts if run.metric is metric]
        if not judged:
            continue
        drop = metric.default_drop if budget is None else budget
        title = f"a {drop:g}-point budget" if metric is ACCURACY else \
            f"a {drop:.4g}-nat budget of validation loss (perplexity x {_times(drop, '.3g')})"
        lines += [f"{sub} Comparison at {title}", "", *_comparison(judged, runs, drop, metric), ""]
    return lines


def _render(runs: list[Run], plots: list[tuple[str, str]], level: int = 1, budget: float | None = None) -> str:
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 5:
        raise LoritaError(f"level must be an integer from 1 to 5 (the Markdown heading level), got {level!r}")
    top, sub = "#" * level, "#" * (level + 1)
    trains = [r for r in runs if r.kind == "train"]
    cuts = [r for r in runs if r.kind == "compress"]
    lms = [r for r in runs if r.kind == "lm"]
    counts = [_plural(len(trains), "train run"), _plural(len(cuts), "compress run")]
    if lms:
        counts.append(_plural(len(lms), "language-model compress run"))
    lines = [f"{top} LoRITa report", "",
             f"{', '.join(counts)}; every number is read from the run folders (results.json, metrics.csv, "
             "spectrum.json), nothing is recomputed.", ""]
    if trains:
        lines += [f"{sub} Train runs", "", *_train_table(trains), ""]
    if cuts:
        lines += [f"{sub} Compress runs", "", *_compress_table(cuts), ""]
        lines += _comparisons(cuts, runs, budget, sub)
    if lms:
        drop = LOSS.default_drop if budget is None else budget
        lines += [f"{sub} Language-model compress runs", "", *_lm_table(lms), "",
                  f"{sub} Language models at a {drop:.4g}-nat budget (perplexity x {_times(drop, '.4g')})", "",
                  *_lm_comparison(lms, drop), ""]
    if plots:
        lines += [f"{sub} Plots", ""]
        for caption, name in plots:
            lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines)


def summarize(run_paths: Iterable[str | os.PathLike | Run], level: int = 1, max_drop: float | None = None) -> str:
    """The report's Markdown (tables only, no plots), without writing anything.

    ``level``: heading level of its title (sections one deeper), to embed it in another document.
    ``max_drop``: the budget of the comparison, in the units of what the runs are judged by: points of accuracy,
    or nats of loss for language models trained with ``select_by="val_loss"`` (None: 1 point, or ln 1.02 nats,
    the plain model's perplexity + 2%).

    Example:
        >>> print(summarize(["runs/fcn-d1", "runs/fcn-d3"]))  # doctest: +SKIP
        # LoRITa report
        ...
    """
    runs = read_runs(run_paths)
    return _render(runs, [], level, check_max_drop(max_drop, runs))


def check_max_drop(max_drop: float | None, runs: list[Run]) -> float | None:
    """``max_drop`` checked: a number >= 0, for compress runs all judged the same way (its units are theirs; a
    pretrained language model's compress runs are judged by loss).

    Example:
        >>> check_max_drop(0.5, [Run(Path("c"), "compress", {}, {"metric": "val_loss"}, [], None)])
        0.5
    """
    if max_drop is None:
        return None
    judged = {run.metric.val for run in runs if run.kind in ("compress", "lm")}
    if len(judged) > 1:
        raise LoritaError("max_drop is in points for runs judged by accuracy and in nats for language models judged "
                          "by loss, and these compress runs are judged both ways; leave it out (each gets its own "
                          "default: 1 point, ln 1.02 nats) or report the two kinds separately")
    return check_number("max_drop", max_drop, minimum=0)


def write_report(run_paths: Iterable[str | os.PathLike | Run], out_dir: str | os.PathLike,
                 max_drop: float | None = None) -> Path:
    """Write ``out_dir/report.md`` (atomically) and its PNG plots; return the report's path (``max_drop`` as in
    ``summarize``).

    ``out_dir`` is created if missing. Plots with nothing to show are left out.

    Example:
        >>> write_report(["runs/fcn-d1", "runs/fcn-d3", "runs/fcn-d3-cut"], "report")  # doctest: +SKIP
        PosixPath('report/report.md')
    """
    runs = read_runs(run_paths)
    budget = check_max_drop(max_drop, runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for name, plot, caption in PLOTS:
        if plot(runs, out / name) is not None:
            plots.append((caption, name))
    target = out / "report.md"
    atomic_write_text(target, _render(runs, plots, budget=budget))
    log.info("wrote %s", target)
    return target
