"""The demo's and experiments' ``report.md`` and plots: the headline against the best alternative, every
column at the target and at fixed sizes, accuracy-vs-size curves, spectra, ranks."""

from __future__ import annotations

import math
from pathlib import Path

from lorita.atomic import atomic_write_text
from lorita.profile import human
from lorita.report.plots import figure, save_figure


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _acc(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _model_line(recipe: dict) -> str:
    skip = {"model", "init", "factor_side", "finetune_epochs"} | set(_TRAIN_KEYS)
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


def _noise(results: dict, p: float | None) -> float | None:
    """Two standard errors (points) of a difference between two test accuracies near ``p`` percent: binomial
    over the test images, or the spread over seeds when that is larger."""
    if p is None:
        return None
    n = results["runs"][0]["test_images"]
    binomial = 100 * math.sqrt(2 * (p / 100) * (1 - p / 100) / n)
    return 2 * binomial


def headline_line(results: dict) -> str:
    """The report's first line: LoRITa against the best alternative at the fair target."""
    head = results["headline"]
    ours, theirs = head["lorita"], head["best_alternative"]
    seeds = len(results["seeds"])
    over = f" (mean over {seeds} seeds)" if seeds > 1 else ""
    if ours is None:
        return (f"No LoRITa model reached the target (validation accuracy {head['target_val_acc']:.2f}%, 1 point below "
                f"the plain model){over}; the best alternative, {theirs['label']}, keeps {_pct(theirs['params_kept'])} "
                "of the parameters there.")
    verdict = "met" if head["bar_met"] else "NOT met"
    return (f"LoRITa ({ours['label']}) keeps {_pct(ours['params_kept'])} of the parameters where the best "
            f"alternative ({theirs['label']}) keeps {_pct(theirs['params_kept'])}, at the same validation accuracy "
            f"({head['target_val_acc']:.2f}%) and {head['total_epochs']} epochs in all{over}: ratio "
            f"**{head['ratio']:.2f}** (the bar, at most 0.5, is {verdict}).")


def columns_table(results: dict) -> list[str]:
    """Each column's smallest model at the target (mean over seeds, with the spread when several)."""
    rows = ["| column | epochs (train + fine-tune) | params kept | MACs kept | val acc (%) | test acc (%) |",
            "| --- | --- | --- | --- | --- | --- |"]
    labels = list(results["runs"][0]["columns"])
    for label in labels:
        picks = [r["columns"][label]["chosen"] for r in results["runs"]]
        info = results["runs"][0]["columns"][label]
        epochs = f"{info['epochs'] - info['finetune_epochs']} + {info['finetune_epochs']}"
        if any(p is None for p in picks):
            rows.append(f"| {label} | {epochs} | not reached | - | - | - |")
            continue
        cells = [_mean_cell([p[k] for p in picks], pct) for k, pct in
                 (("params_kept", True), ("macs_kept", True), ("val_acc", False), ("test_acc", False))]
        rows.append(f"| {label} | {epochs} | " + " | ".join(cells) + " |")
    return rows


def _mean_cell(values: list[float], pct: bool) -> str:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    if pct:
        return f"{100 * mean:.1f}%" + (f" ± {100 * std:.1f}" if std is not None else "")
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def sizes_table(results: dict) -> list[str]:
    """Test accuracy of every column at the fixed sizes (the cut nearest below each size)."""
    sizes = results["spec"]["sizes"]
    rows = ["| column | " + " | ".join(f"{100 * s:g}% params: test acc (%)" for s in sizes) + " |",
            "| --- |" + " --- |" * len(sizes)]
    for label in results["runs"][0]["columns"]:
        cells = []
        for size in sizes:
            values = []
            for run in results["runs"]:
                cut = next((c for c in run["columns"][label]["cuts"] if abs(c["size"] - size) < 1e-9), None)
                if cut is not None:
                    values.append(cut["test_acc"])
            cells.append(_mean_cell(values, False) if len(values) == len(results["runs"]) else "-")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def _best_at(run: dict, lorita_side: bool, size: float) -> float | None:
    values = [c["test_acc"] for col in run["columns"].values() if col["lorita"] == lorita_side
              for c in col["cuts"] if abs(c["size"] - size) < 1e-9]
    return max(values) if values else None


def noise_lines(results: dict) -> list[str]:
    """At each fixed size: best LoRITa column against the best alternative, and whether it is within the noise."""
    lines = []
    for size in results["spec"]["sizes"]:
        diffs = []
        for run in results["runs"]:
            ours, theirs = _best_at(run, True, size), _best_at(run, False, size)
            if ours is not None and theirs is not None:
                diffs.append((ours, theirs))
        if len(diffs) != len(results["runs"]):
            continue
        mean_diff = sum(o - t for o, t in diffs) / len(diffs)
        noise = _noise(results, sum(t for _, t in diffs) / len(diffs))
        if len(diffs) > 1:
            spread = [o - t for o, t in diffs]
            m, sd = mean_diff, math.sqrt(sum((d - mean_diff) ** 2 for d in spread) / (len(spread) - 1))
            noise = max(noise / math.sqrt(len(diffs)), 2 * sd / math.sqrt(len(diffs)))
        verdict = "within the noise" if abs(mean_diff) <= noise else ("LoRITa ahead" if mean_diff > 0 else
                                                                     "the alternative ahead")
        lines.append(f"- {100 * size:g}% of the params: best LoRITa column {mean_diff:+.2f} points of test accuracy "
                     f"against the best alternative ({verdict}: the noise is about ±{noise:.2f})")
    return lines


def compute_lines(results: dict) -> list[str]:
    """One LoRITa training cut to every fixed size against one fine-tuning run per size for SVD."""
    run = results["runs"][0]
    out = []
    for label, col in run["columns"].items():
        cuts = [c for c in col["cuts"] if any(abs(c["size"] - s) < 1e-9 for s in results["spec"]["sizes"])]
        if not cuts:
            continue
        total = col["train_seconds"] + sum(c["seconds"] for c in cuts)
        out.append(f"| {label} | {len(cuts)} | {col['train_seconds']:.0f} | {sum(c['seconds'] for c in cuts):.0f} "
                   f"| {total:.0f} |")
    if not out:
        return []
    return ["| column | models | training (s) | cutting + fine-tuning (s) | total (s) |",
            "| --- | --- | --- | --- | --- |", *out]


def plot_columns(results: dict, path: Path) -> Path:
    """Validation and test accuracy vs params kept for every column (first seed), the target as a line."""
    run = results["runs"][0]
    fig = figure(11, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    for label, col in run["columns"].items():
        cuts = sorted(col["cuts"], key=lambda c: c["params_kept"])
        style = "-" if col["lorita"] else "--"
        for ax, key in zip(axes, ("val_acc", "test_acc")):
            line, = ax.plot([100 * c["params_kept"] for c in cuts], [c[key] for c in cuts], style, marker="o",
                            markersize=4, label=label)
            pick = col["chosen"]
            if pick is not None:
                ax.plot([100 * pick["params_kept"]], [pick[key]], marker="*", markersize=13, color=line.get_color())
    axes[0].axhline(run["target_val_acc"], color="gray", linestyle=":", linewidth=1, label="target")
    for ax, title in zip(axes, ("validation (choices made here)", "test (reported)")):
        ax.set_xscale("log")
        ax.set_xlabel("params kept (% of the original, log scale)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    low = min(c["val_acc"] for col in run["columns"].values() for c in col["cuts"] if c["params_kept"] >= 0.02)
    axes[0].set_ylim(max(low - 1, run["target_val_acc"] - 10), run["target_val_acc"] + 3)
    axes[0].legend(loc="lower right", fontsize=7)
    fig.suptitle(f"{results['dataset']}: every column at equal total epochs (solid: LoRITa; stars: smallest model "
                 "reaching the target)")
    fig.tight_layout()
    return save_figure(fig, path)


def write_demo_report(out: Path, results: dict) -> Path:
    """Write ``report.md`` and the plots into ``out``; return the report's path."""
    from lorita.report import plot_ranks, plot_spectra, plot_training_curves, summarize

    out = Path(out)
    first = results["runs"][0]
    where = out if first["folder"] == out.name or len(results["runs"]) == 1 else out / first["folder"]
    train_folders = [where / f"depth{d}" for d in results["depths"]]
    cut_folders = [where / name for name in first["cut_folders"]]
    plots = [
        ("Every column: accuracy vs parameters kept", plot_columns(results, out / "columns.png")),
        ("Cuts without fine-tuning: accuracy vs parameters kept",
         plot_sweeps(results, out / "accuracy_vs_params.png", "params_kept", "params")),
        ("Cuts without fine-tuning: accuracy vs FLOPs kept",
         plot_sweeps(results, out / "accuracy_vs_flops.png", "macs_kept", "FLOPs")),
        ("Singular value spectra per layer", plot_spectra(train_folders, out / "spectra.png")),
        ("Kept rank per layer (view (b) cuts)", plot_ranks(cut_folders, out / "ranks.png") if cut_folders else None),
        ("Validation accuracy during training", plot_training_curves(train_folders, out / "training.png")),
    ]
    plain = results["depths"]["1"]
    recipe = results["recipe"]
    seeds = results["seeds"]
    lines = [
        f"# lorita {results['name']}: LoRITa against the alternatives on {results['dataset']}",
        "",
        headline_line(results),
        "",
        f"Model {_model_line(recipe)}; {recipe['epochs']} epochs in all for every column "
        f"({recipe['optimizer']} lr {recipe['lr']}, {recipe['schedule']}, weight decay {recipe['weight_decay']}, "
        f"factor init {recipe['init']}); fine-tuned columns train {recipe['epochs'] - recipe['finetune_epochs']} "
        f"epochs, are cut, then fine-tuned {recipe['finetune_epochs']} (lr "
        f"{results['spec']['finetune_lr'] or recipe['lr'] / 10:g}, the best epoch on validation kept, the cut itself "
        f"included). Seed(s) {', '.join(map(str, seeds))}: each changes the split, the init and the batch order. "
        f"Original model: {human(plain['uncompressed']['params'])} params, "
        f"{human(plain['uncompressed']['flops'])} FLOPs per example (FLOPs = 2 x MACs).",
        "",
        f"The target (view (b), the fair one): {results['max_drop']} point below the plain model's validation "
        "accuracy, the same for every column. Each column's smallest model reaching it is chosen on validation "
        "data; test accuracy is only reported. Sizes are against the original (uncomposed) architecture.",
        "",
        *columns_table(results),
        "",
        "Accuracy at fixed sizes, compared point by point (the cut nearest below each size):",
        "",
        *sizes_table(results),
        "",
        *noise_lines(results),
        "",
    ]
    compute = compute_lines(results)
    if compute:
        lines += ["Compute to produce a model at each of the fixed sizes (first seed; this machine):", "", *compute, ""]
    if len(seeds) > 1:
        ratios = ", ".join("-" if r is None else f"{r:.2f}" for r in results["headline"]["ratio_per_seed"])
        lines += [f"Ratio per seed: {ratios}.", ""]
    lines += ["Without fine-tuning, per depth (first seed): view (b) and view (a), the paper's (each model 1 point "
              "below its own accuracy):", "", *headline_table(results), "",
              f"Machine: {results['machine']}; {results['seconds']:.0f} s in all.", ""]
    for title, path in plots:
        if path is not None:
            lines += [f"## {title}", "", f"![{title}]({Path(path).name})", ""]
    lines += ["## Runs (first seed)", "", summarize([*train_folders, *cut_folders], level=3)]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
