"""The demo's ``report.md`` and plots: a ten-second table, accuracy-vs-size curves, spectra, ranks."""

from __future__ import annotations

from pathlib import Path

from lorita.atomic import atomic_write_text
from lorita.profile import human
from lorita.report.plots import figure, save_figure


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _acc(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _model_line(recipe: dict) -> str:
    skip = {"model", "init", "factor_side"} | set(_TRAIN_KEYS)
    extra = ", ".join(f"{k}={v}" for k, v in recipe.items() if k not in skip)
    return f"{recipe['model']} ({extra})" if extra else recipe["model"]


_TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "label_smoothing", "schedule",
               "plateau_patience", "plateau_factor", "warmup_epochs", "seed", "augment", "device", "eval_batch_size")


def headline_table(results: dict) -> list[str]:
    """Markdown rows: one per depth, uncompressed accuracy and the smallest cut in each view."""
    rows = ["| depth | uncompressed test acc (%) | view (b): params kept | FLOPs kept | test acc (%) "
            "| view (a): params kept | FLOPs kept | test acc (%) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for depth, info in results["depths"].items():
        b, a = info["views"]["b"], info["views"]["a"]
        label = "1 (plain)" if depth == "1" else f"{depth} (LoRITa)"
        rows.append(f"| {label} | {_acc(info['uncompressed']['test_acc'])} "
                    f"| {_pct(b and b['params_kept'])} | {_pct(b and b['macs_kept'])} | {_acc(b and b['test_acc'])} "
                    f"| {_pct(a and a['params_kept'])} | {_pct(a and a['macs_kept'])} | {_acc(a and a['test_acc'])} |")
    return rows


def plot_sweeps(results: dict, path: Path, size_key: str, label: str) -> Path:
    """Validation (left, where cuts are chosen) and test (right) accuracy vs size kept, one line per depth."""
    fig = figure(11, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    plain_target = results["depths"]["1"]["views"]["b"]
    for depth, info in results["depths"].items():
        pts = sorted(info["sweep"], key=lambda p: p[size_key])
        xs = [100 * p[size_key] for p in pts]
        name = "depth 1 (plain)" if depth == "1" else f"depth {depth} (LoRITa)"
        for ax, key in zip(axes, ("val_acc", "test_acc")):
            measured = [(x, p[key]) for x, p in zip(xs, pts) if p[key] is not None]
            line, = ax.plot([x for x, _ in measured], [y for _, y in measured], marker=".", label=name)
            chosen = info["views"]["b"]
            if chosen is not None:
                ax.plot([100 * chosen[size_key]], [chosen[key]], marker="*", markersize=14, color=line.get_color())
    if plain_target is not None:
        axes[0].axhline(plain_target["target_val_acc"], color="gray", linestyle="--", linewidth=1,
                        label="target: plain val acc - drop")
    partial = any(p["test_acc"] is None for info in results["depths"].values() for p in info["sweep"])
    test_title = "test (reported; measured at the chosen cuts only)" if partial else "test (reported)"
    for ax, title in zip(axes, ("validation (cuts chosen here)", test_title)):
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} kept (% of the original, log scale)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    top = max(info["uncompressed"]["val_acc"] for info in results["depths"].values())
    axes[0].set_ylim(max(0, top - 15), top + 2)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{results['dataset']}: accuracy vs {label} kept (stars: smallest cut within the target)")
    fig.tight_layout()
    return save_figure(fig, path)


def write_demo_report(out: Path, results: dict, cut_folders: list[Path]) -> Path:
    """Write ``report.md`` and the plots into ``out``; return the report's path."""
    from lorita.report import plot_ranks, plot_spectra, plot_training_curves, summarize

    out = Path(out)
    train_folders = [out / f"depth{d}" for d in results["depths"]]
    plots = [
        ("Accuracy vs parameters kept", plot_sweeps(results, out / "accuracy_vs_params.png", "params_kept", "params")),
        ("Accuracy vs FLOPs kept", plot_sweeps(results, out / "accuracy_vs_flops.png", "macs_kept", "FLOPs")),
        ("Singular value spectra per layer", plot_spectra(train_folders, out / "spectra.png")),
        ("Kept rank per layer (view (b) cuts)", plot_ranks(cut_folders, out / "ranks.png") if cut_folders else None),
        ("Validation accuracy during training", plot_training_curves(train_folders, out / "training.png")),
    ]
    head = results["headline"]
    ratio = head["params_kept_ratio_vs_plain"]
    plain = results["depths"]["1"]
    verdict = ("no LoRITa cut reached the plain model's target" if ratio is None else
               f"LoRITa (depth {head['best_lorita_depth']}) keeps {ratio:.2f}x the parameters the plain model keeps "
               f"at the same accuracy: the bar (at most 0.5x) is {'met' if head['bar_met'] else 'NOT met'}")
    lines = [
        f"# lorita {results['name']}: LoRITa vs plain training on {results['dataset']}",
        "",
        f"**{verdict}.**",
        "",
        f"Model {_model_line(results['recipe'])}; {results['recipe']['epochs']} epochs, "
        f"{results['recipe']['optimizer']} lr {results['recipe']['lr']} ({results['recipe']['schedule']}), "
        f"weight decay {results['recipe']['weight_decay']}, factor init {results['recipe']['init']}. "
        f"Original model: {human(plain['uncompressed']['params'])} params, "
        f"{human(plain['uncompressed']['flops'])} FLOPs per example (FLOPs = 2 x MACs).",
        "",
        f"View (b), the fair one: every model cut to the same accuracy, {results['max_drop']} point(s) below the "
        f"plain model's validation accuracy. View (a), the paper's: each model cut to {results['max_drop']} "
        "point(s) below its own. Cuts are chosen on validation data; test accuracy is only reported. Sizes are "
        "against the original (uncomposed) architecture.",
        "",
        *headline_table(results),
        "",
        f"Machine: {results['machine']}; {results['seconds']:.0f} s in all.",
        "",
    ]
    for title, path in plots:
        if path is not None:
            lines += [f"## {title}", "", f"![{title}]({Path(path).name})", ""]
    lines += ["## Runs", "", summarize([*train_folders, *cut_folders], level=3)]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
