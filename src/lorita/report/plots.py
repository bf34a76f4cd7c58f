"""PNG plots of run folders: training curves, spectra, accuracy vs size, kept ranks.

matplotlib is imported only when a plot is drawn. Figures are drawn on the Agg
canvas directly (no pyplot), so no global backend is switched and no figure is
left open in a user's session. Each PNG is written atomically. Each function
returns the path written, or None when its runs hold nothing to plot.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Iterable

from lorita.atomic import atomic_path
from lorita.checks import is_number
from lorita.errors import LoritaError
from lorita.report.runs import Run, find_source, lm_method, lm_recovery, lm_texts, read_runs, source_key, source_name

log = logging.getLogger(__name__)

MAX_SPECTRA = 12


def figure(width: float, height: float):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise LoritaError("plots need matplotlib: pip install matplotlib "
                          "(in lorita's clone: pip install -e '.[cli]')") from err
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    fig.clear()
    log.info("wrote %s", path)
    return path


def plot_panels(panels: list[dict], path: str | os.PathLike) -> Path:
    """Side-by-side line plots, one per panel, each a dict: ``title``, ``xlabel``, ``ylabel``, ``lines``
    (label -> ``[(x, y), ...]``), and optionally ``hline`` (``(y, label)``: a dashed reference), ``xlim`` and
    ``xticks``. Used for accuracy against what a cut kept (benchmarks/peers.py).

    Example:
        >>> import tempfile
        >>> panel = {"title": "t", "xlabel": "x", "ylabel": "y", "lines": {"a": [(0.5, 1.0), (1.0, 2.0)]}}
        >>> plot_panels([panel], Path(tempfile.mkdtemp()) / "p.png").suffix  # doctest: +SKIP
        '.png'
    """
    fig = figure(5.5 * len(panels), 4.2)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for label, points in panel["lines"].items():
            points = sorted(points)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        if panel.get("hline") is not None:
            y, label = panel["hline"]
            ax.axhline(y, color="grey", linestyle="--", linewidth=0.8, label=label)
        if panel.get("xlim") is not None:
            ax.set_xlim(*panel["xlim"])
        if panel.get("xticks") is not None:
            ax.set_xticks(panel["xticks"])
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _runs(runs) -> list[Run]:
    return read_runs(runs)


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _text(text) -> str:
    r"""Text from run files (folder and layer names) as matplotlib shows it literally: a ``$`` would
    start math mode (``run$\frac{$`` cannot be drawn), so each is escaped.

    Example:
        >>> _text("run$1")
        'run\\$1'
    """
    return str(text).replace("$", r"\$")


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))




def plot_training_curves(runs: Iterable[Run | str | os.PathLike], path: str | os.PathLike) -> Path | None:
    """Validation accuracy (%) vs epoch, one line per train run, best epoch marked.

    Example:
        >>> from lorita.report import read_run
        >>> plot_training_curves([read_run("runs/d1"), read_run("runs/d3")], "report/curves.png")  # doctest: +SKIP
        PosixPath('report/curves.png')
    """
    trains = [r for r in _runs(runs) if r.kind == "train" and r.metrics]
    if not trains:
        return None
    fig = figure(6.4, 4.2)
    ax = fig.add_subplot()
    for run, color in zip(trains, _colors(len(trains))):
        epochs = [row["epoch"] for row in run.metrics]
        accs = [row["val_acc"] for row in run.metrics]
        ax.plot(epochs, accs, marker="." if len(epochs) <= 40 else None, color=color, label=_text(run.label))
        best = run.results.get("best_epoch")
        hits = [a for e, a in zip(epochs, accs) if e == best]
        if hits:
            ax.plot([best], hits[:1], marker="*", markersize=11, color=color, linestyle="none")
    _integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Validation accuracy per epoch (star: best epoch, the model kept)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def _pick_layers(names: list[str]) -> list[str]:
    if len(names) <= MAX_SPECTRA:
        return names
    # evenly spaced over the network, first and last layer always kept
    picks = sorted({round(i * (len(names) - 1) / (MAX_SPECTRA - 1)) for i in range(MAX_SPECTRA)})
    log.info("spectra plot shows %d of %d layers", len(picks), len(names))
    return [names[i] for i in picks]


def plot_spectra(runs: Iterable[Run | str | os.PathLike], path: str | os.PathLike) -> Path | None:
    """Normalised singular values sigma/sigma_max (log scale) vs index: one panel per layer, one line per train run.

    Layers are the union over runs in network order; above 12, an evenly spaced
    selection (first and last included) is shown.

    Example:
        >>> from lorita.report import read_run
        >>> plot_spectra([read_run("runs/d1"), read_run("runs/d3")], "report/spectra.png")  # doctest: +SKIP
        PosixPath('report/spectra.png')
    """
    trains = [r for r in _runs(runs) if r.kind == "train" and r.spectrum]
    if not trains:
        return None
    names: list[str] = []
    for run in trains:
        names += [n for n in run.spectrum if n not in names]
    shown = _pick_layers(names)
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = figure(3.3 * cols, 2.6 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    colors = _colors(len(trains))
    for k, ax in enumerate(axes.flat):
        if k >= len(shown):
            ax.set_visible(False)
            continue
        name = shown[k]
        for run, color in zip(trains, colors):
            values = run.spectrum.get(name) or []
            top = max(values, default=0.0)
            if top <= 0:
                continue
            ax.plot(range(1, len(values) + 1), [v / top for v in values], color=color, linewidth=1.2,
                    label=_text(run.label))
        ax.set_yscale("log", nonpositive="mask")
        _integer_ticks(ax)
        ax.set_title(_text(name), fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize="x-small")
        if k % cols == 0:
            ax.set_ylabel("σ / σ_max (log)", fontsize="small")
        if k >= len(shown) - cols:
            ax.set_xlabel("index", fontsize="small")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1:len(shown)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    title = "Singular values of each layer, divided by the largest"
    if len(shown) < len(names):
        title += f" ({len(shown)} of {len(names)} layers)"
    fig.suptitle(title)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize="small",
               bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(labels) / 4)))
    fig.tight_layout()
    return save_figure(fig, path)


def _pct(value) -> float:
    return 100.0 * value if is_number(value) else math.nan


def plot_compression(runs: Iterable[Run | str | os.PathLike], path: str | os.PathLike) -> Path | None:
    """Test accuracy (%) vs params kept (%), one series per source run: after the cut (filled),
    after fine-tuning (hollow, dashed), the uncompressed model at 100%.

    Example:
        >>> from lorita.report import read_run
        >>> plot_compression([read_run("runs/d3-cut")], "report/compression.png")  # doctest: +SKIP
        PosixPath('report/compression.png')
    """
    all_runs = _runs(runs)
    cuts = [r for r in all_runs if r.kind == "compress" and is_number(r.get("kept", "params"))]
    if not cuts:
        return None
    groups: dict[str, list[Run]] = {}
    for run in cuts:
        groups.setdefault(source_key(run), []).append(run)
    fig = figure(6.4, 4.4)
    ax = fig.add_subplot()
    markers = "osD^vP<>Xh"
    for k, ((source, members), color) in enumerate(zip(groups.items(), _colors(len(groups)))):
        train = find_source(members[0], all_runs)
        label = _text(train.label if train is not None else source_name(members[0]))
        marker = markers[k % len(markers)]
        before = [r.get("before", "test_acc") for r in members if is_number(r.get("before", "test_acc"))]
        start = [(100.0, before[0])] if before else []
        cut = sorted((_pct(r.get("kept", "params")), r.get("after_cut", "test_acc")) for r in members
                     if is_number(r.get("after_cut", "test_acc")))
        points = cut + start
        if points:
            ax.plot(*zip(*points), marker=marker, color=color, label=f"{label}: after cut")
        tuned = sorted((_pct(r.get("kept", "params")), r.get("after_finetune", "test_acc")) for r in members
                       if is_number(r.get("after_finetune", "test_acc")))
        if tuned:
            ax.plot(*zip(*(tuned + start)), marker=marker, color=color, markerfacecolor="none", linestyle="--",
                    label=f"{label}: after fine-tune")
    ax.set_xlabel("params kept (% of the original architecture)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs size (100%: uncompressed)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_ranks(runs: Iterable[Run | str | os.PathLike], path: str | os.PathLike) -> Path | None:
    """Kept rank per layer, one bar per compress run in each layer's group; hatched bars stayed dense.

    Example:
        >>> from lorita.report import read_run
        >>> plot_ranks([read_run("runs/d1-cut"), read_run("runs/d3-cut")], "report/ranks.png")  # doctest: +SKIP
        PosixPath('report/ranks.png')
    """
    cuts = [r for r in _runs(runs) if r.kind == "compress" and r.results.get("ranks")]
    if not cuts:
        return None
    layers: list[str] = []
    for run in cuts:
        layers += [n for n in run.results["ranks"] if n not in layers]
    width = 0.8 / len(cuts)
    fig = figure(max(6.4, 0.32 * len(layers) * max(1.0, len(cuts) / 2) + 2), 4.4)
    ax = fig.add_subplot()
    any_dense = False
    for k, (run, color) in enumerate(zip(cuts, _colors(len(cuts)))):
        ranks = run.results["ranks"]
        dense = set(run.results.get("dense_layers") or [])
        xs = [i + (k - (len(cuts) - 1) / 2) * width for i, n in enumerate(layers) if n in ranks]
        heights = [ranks[n] for n in layers if n in ranks]
        hatches = ["//" if n in dense else "" for n in layers if n in ranks]
        any_dense |= bool(dense & set(ranks))
        bars = ax.bar(xs, heights, width=width, color=color, edgecolor="black", linewidth=0.4,
                      label=_text(f"{run.name} (from {source_name(run)})"))
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
    ax.set_xticks(range(len(layers)))
    many = len(layers) > 6
    ax.set_xticklabels([_text(n) for n in layers], rotation=60 if many else 0, ha="right" if many else "center",
                       fontsize="small")
    ax.set_xlabel("layer")
    ax.set_ylabel("kept rank")
    title = "Kept rank per layer"
    if any_dense:
        title += " (hatched: kept dense, rank above break-even)"
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def _points(pairs: list[tuple]) -> list[tuple[float, float]]:
    """(fraction kept, perplexity) pairs as (percent, perplexity), sorted; pairs with a missing, non-finite or
    non-positive value (no point on a log scale) left out."""
    return sorted((_pct(x), y) for x, y in pairs
                  if is_number(x) and is_number(y) and math.isfinite(x) and math.isfinite(y) and y > 0)


def plot_perplexity(runs: Iterable[Run | str | os.PathLike], path: str | os.PathLike) -> Path | None:
    """Language-model compress runs ("lm"): validation perplexity (log scale) vs params kept (%), one panel per text;
    one series per model, method and recovery, after recovery (filled; after the cut when the run had none) and
    after the cut (hollow, dashed), the dense model at 100% (a star).

    Example:
        >>> from lorita.report import read_run
        >>> runs = [read_run("runs/smol-80"), read_run("runs/smol-60")]  # doctest: +SKIP
        >>> plot_perplexity(runs, "report/perplexity.png")  # doctest: +SKIP
        PosixPath('report/perplexity.png')
    """
    from matplotlib.ticker import FuncFormatter

    lms = [r for r in _runs(runs) if r.kind == "lm" and is_number(r.get("params", "kept"))]
    texts = lm_texts(lms)
    if not texts:
        return None
    series: dict[tuple, list[Run]] = {}
    for run in lms:  # grouped as the table shows them
        series.setdefault((source_name(run), lm_method(run), lm_recovery(run)), []).append(run)
    several_models = len({key[0] for key in series}) > 1
    fig = figure(4.6 * len(texts) + 0.6, 4.2)
    fig.set_layout_engine("constrained")
    markers = "osD^vP<>Xh"
    for i, text in enumerate(texts):
        ax = fig.add_subplot(1, len(texts), i + 1)
        dense_drawn = set()
        for k, ((model, method, recovery), members) in enumerate(series.items()):
            color = _colors(len(series))[k]
            marker = markers[k % len(markers)]
            label = _text(f"{model}: " * several_models + f"{method}, recovery {recovery}")
            final = _points([(r.get("params", "kept"), r.get("after_recovery", text, "ppl")
                              if r.get("after_recovery") is not None else r.get("after_cut", text, "ppl"))
                             for r in members])
            if final:
                ax.plot(*zip(*final), marker=marker, color=color, label=label)
            cut = _points([(r.get("params", "kept"), r.get("after_cut", text, "ppl")) for r in members
                           if r.get("after_recovery") is not None])
            if cut:
                ax.plot(*zip(*cut), marker=marker, color=color, markerfacecolor="none", linestyle="--",
                        label=f"{label}: after the cut")
            dense = next((r.get("dense", text, "ppl") for r in members if is_number(r.get("dense", text, "ppl"))),
                         None)
            if dense is not None and dense > 0 and model not in dense_drawn:
                dense_drawn.add(model)
                ax.plot([100.0], [dense], marker="*", markersize=12, color="black", linestyle="none",
                        label=_text(f"{model}: dense" if several_models else "dense"))
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f"{y:g}" if f"{y:g}"[0] in "1235" else ""))
        ax.tick_params(axis="y", which="minor", labelsize="x-small")
        ax.set_xlabel("params kept (% of the whole model)")
        if i == 0:
            ax.set_ylabel("validation perplexity")
        ax.set_title(_text(text))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    return save_figure(fig, path)
