"""The demo's and experiments' ``report.md`` and plots: the headline against the best alternative, every
column at the target and at fixed sizes, accuracy-vs-size curves, spectra, ranks.

Reads only ``results.json``'s content (``lorita.runs.run_experiment`` writes it). Image
experiments are judged by validation accuracy (higher is better, points); language
experiments by validation loss (nats per character, lower is better), shown with
perplexity and bits per character.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from lorita.atomic import atomic_write_text
from lorita.choice import best_at_size
from lorita.errors import LoritaError
from lorita.metric import Metric
from lorita.models.registry import width_argument
from lorita.profile import human
from lorita.report.converged import paired_lines
from lorita.report.markdown import summarize
from lorita.report.plots import figure, plot_ranks, plot_spectra, plot_training_curves, save_figure
from lorita.stats import mean_interval
from lorita.train import TrainConfig


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


def _model_line(recipe: dict) -> str:
    skip = {"model", "init", "factor_side", "finetune_epochs", "warm_start_epochs", "warm_start_lr",
            "warm_start_weight_decay"} | _TRAIN_KEYS
    extra = ", ".join(f"{k}={v}" for k, v in recipe.items() if k not in skip)
    return f"{recipe['model']} ({extra})" if extra else recipe["model"]


def headline_table(results: dict) -> list[str]:
    """Markdown rows: one per depth, the uncompressed model and the smallest cut in each view (no fine-tuning)."""
    m = Metric.of(results)
    what = "test acc (%)" if m.higher_is_better else "test loss"
    rows = [f"| depth | uncompressed {what} | view (b): params kept | FLOPs kept | {what} "
            f"| view (a): params kept | FLOPs kept | {what} |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for depth, info in results["depths"].items():
        b, a = info["views"]["b"], info["views"]["a"]
        label = "1 (plain)" if depth == "1" else f"{depth} (LoRITa)"
        rows.append(f"| {label} | {m.show(info['uncompressed'][m.test])} "
                    f"| {_pct(b and b['params_kept'])} | {_pct(b and b['macs_kept'])} | {m.show(b and b[m.test])} "
                    f"| {_pct(a and a['params_kept'])} | {_pct(a and a['macs_kept'])} | {m.show(a and a[m.test])} |")
    return rows


def plot_sweeps(results: dict, path: Path, size_key: str, label: str) -> Path:
    """Validation (left, where cuts are chosen) and test (right) figures vs size kept, one line per depth."""
    m = Metric.of(results)
    fig = figure(11, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    plain_target = results["depths"]["1"]["views"]["b"]
    for depth, info in results["depths"].items():
        pts = sorted(info["sweep"], key=lambda p: p[size_key])
        xs = [100 * p[size_key] for p in pts]
        name = "depth 1 (plain)" if depth == "1" else f"depth {depth} (LoRITa)"
        for ax, key in zip(axes, (m.val, m.test)):
            measured = [(x, p[key]) for x, p in zip(xs, pts) if p[key] is not None]
            line, = ax.plot([x for x, _ in measured], [y for _, y in measured], marker=".", label=name)
            chosen = info["views"]["b"]
            if chosen is not None:
                ax.plot([100 * chosen[size_key]], [chosen[key]], marker="*", markersize=14, color=line.get_color())
    if plain_target is not None:
        axes[0].axhline(plain_target[m.target], color="gray", linestyle="--", linewidth=1, label="target (view b)")
    partial = any(p[m.test] is None for info in results["depths"].values() for p in info["sweep"])
    test_title = "test (reported; measured at the chosen cuts only)" if partial else "test (reported)"
    for ax, title in zip(axes, ("validation (cuts chosen here)", test_title)):
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} kept (% of the original, log scale)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(m.label)
    best = [info["uncompressed"][m.val] for info in results["depths"].values()]
    if m.higher_is_better:
        axes[0].set_ylim(max(0, max(best) - 15), max(best) + 2)
    else:
        axes[0].set_ylim(min(best) - 0.05, min(best) + 1.0)
    axes[0].legend(loc="lower right" if m.higher_is_better else "upper right", fontsize=8)
    fig.suptitle(f"{results['dataset']}: {m.label} vs {label} kept (stars: smallest cut within the target)")
    fig.tight_layout()
    return save_figure(fig, path)


def headline_line(results: dict) -> str:
    """The report's first line: LoRITa against the best alternative at the fair target."""
    m = Metric.of(results)
    head = results["headline"]
    ours, theirs = head["lorita"], head["best_alternative"]
    seeds = len(results["seeds"])
    over = f" (mean over {seeds} seeds)" if seeds > 1 else ""
    target = head[m.target]
    where = (f"validation accuracy {target:.2f}%, {_points(results.get('max_drop', 1.0))} below the plain model"
             if m.higher_is_better else
             f"validation loss {target:.4f} nats/char, perplexity {math.exp(target):.3f}: the plain model's "
             f"+{100 * (math.exp(results['max_drop']) - 1):.0f}%")
    named = _named(results)
    if ours is None and theirs is None:
        who = f"Neither {named}, the LoRITa column named before the run, nor any alternative" if named else \
            "No model, LoRITa or alternative,"
        return f"{who} reached the target ({where}){over}."
    if ours is None:
        missed = [run["seed"] for run in results.get("runs", []) if run["headline"]["lorita"] is None]
        on = f" on seed{'s' if len(missed) > 1 else ''} {', '.join(map(str, missed))}" if named and seeds > 1 else ""
        who = f"{named}, the LoRITa column named before the run, did not reach" if named else "No LoRITa model reached"
        mean = f"; mean over {seeds} seeds" if seeds > 1 else ""
        return (f"{who} the target{on} ({where}{mean}); the best alternative, "
                f"{theirs['label']}, keeps {_pct(theirs['params_kept'])} of the parameters there.")
    if theirs is None:
        return (f"LoRITa ({ours['label']}) keeps {_pct(ours['params_kept'])} of the parameters at the target "
                f"({where}){over}; no alternative reached it.")
    verdict = "met" if head["bar_met"] else "NOT met"
    if named:
        short = head.get("bar_short_of") or []
        verdict = (f"judged on the geometric mean over seeds below, is {verdict}"
                   + (f": {'; '.join(short)}" if short and not head["bar_met"] else ""))
    else:
        verdict = f"is {verdict}"
    return (f"LoRITa ({ours['label']}) keeps {_pct(ours['params_kept'])} of the parameters where the best "
            f"alternative ({theirs['label']}) keeps {_pct(theirs['params_kept'])}, at the same target ({where}) and "
            f"{head['total_epochs']} epochs in all{over}: ratio **{head['ratio']:.2f}** (the bar, at most "
            f"{head.get('bar_ratio', 0.5):g}, {verdict}).")


def _points(max_drop: float) -> str:
    return "1 point" if max_drop == 1 else f"{max_drop:g} points"


def _named(results: dict) -> str | None:
    """The LoRITa column named before the run, where the headline is that column's (a results.json written before
    the headline followed it took the smallest LoRITa column: None then)."""
    named = results.get("spec", {}).get("pre_registered")
    ours = results["headline"]["lorita"]
    return named if named and (ours is None or ours["label"] == named) else None


def _has_width(model) -> bool:
    """Whether zoo model ``model`` has a width to train a smaller dense model of its family at."""
    if not isinstance(model, str):
        return False
    try:
        width_argument(model)
    except LoritaError:
        return False
    return True


def left_out_lines(results: dict) -> list[str]:
    """What this run's comparison leaves out that would make it stronger: alternatives not run, a headline
    LoRITa column chosen after the run. Empty when nothing is left out.

    Example:
        >>> left_out_lines({"spec": {"model": "fcn", "small_dense": True, "calibrate": 16, "pre_registered": "L"}})
        []
        >>> print(left_out_lines({"spec": {"model": "fcn", "small_dense": False, "calibrate": 16,
        ...                                "pre_registered": "L"}})[0][:64])
        Left out of this comparison: the smaller dense model trained dir
    """
    spec = results["spec"]
    missing = []
    if not spec.get("small_dense") and _has_width(spec.get("model")):
        missing.append("the smaller dense model trained directly (`--small-dense` in the demo, `small_dense` in a "
                       "config; in docs/converged the best alternative more often than any other)")
    if not spec.get("calibrate"):
        missing.append("whitened SVD (`--calibrate 8`, `calibrate`)")
    lines = []
    if missing:
        lines.append(f"Left out of this comparison: {'; '.join(missing)}. The best alternative above is the best of "
                     "the columns run.")
    if spec.get("pre_registered") is None:
        lines.append("The headline takes the smallest LoRITa column at the target, chosen after the run, which leans "
                     "toward LoRITa; name one before the run (`--pre-registered COLUMN`, e.g. 'LoRITa N=2 + FT'; "
                     "`pre_registered`) and run five seeds or more for a figure that does not.")
    return lines


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return mean, std


def _cell(values: list[float], pct: bool, digits: int = 2) -> str:
    mean, std = _mean_std(values)
    if pct:
        return f"{100 * mean:.1f}%" + (f" ± {100 * std:.1f}" if std is not None else "")
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def columns_table(results: dict) -> list[str]:
    """Each column's smallest model at the target (mean over seeds, with the spread when several)."""
    m = Metric.of(results)
    names = ("val acc (%)", "test acc (%)") if m.higher_is_better else ("val loss", "test loss")
    extra = "" if m.higher_is_better else " test perplexity |"
    rows = [f"| column | epochs (train + fine-tune) | params kept | MACs kept | {names[0]} | {names[1]} |{extra}",
            "| --- | --- | --- | --- | --- | --- |" + (" --- |" if extra else "")]
    for label in results["runs"][0]["columns"]:
        picks = [r["columns"][label]["chosen"] for r in results["runs"]]
        info = results["runs"][0]["columns"][label]
        epochs = f"{info['epochs'] - info['finetune_epochs']} + {info['finetune_epochs']}"
        if any(p is None for p in picks):
            rows.append(f"| {label} | {epochs} | not reached | - | - | - |" + (" - |" if extra else ""))
            continue
        cells = [_cell([p["params_kept"] for p in picks], True), _cell([p["macs_kept"] for p in picks], True),
                 _cell([p[m.val] for p in picks], False, m.digits), _cell([p[m.test] for p in picks], False, m.digits)]
        if extra:
            cells.append(_cell([math.exp(p[m.test]) for p in picks], False, 3))
        rows.append(f"| {label} | {epochs} | " + " | ".join(cells) + " |")
    return rows


def _at(cuts: list[dict], size: float) -> dict | None:
    return next((c for c in cuts if abs(c["size"] - size) < 1e-9), None)


def sizes_table(results: dict) -> list[str]:
    """The test figure of every column at the fixed sizes (the cut nearest below each size)."""
    m = Metric.of(results)
    what = "test acc (%)" if m.higher_is_better else "test loss"
    sizes = results["spec"]["sizes"]
    rows = ["| column | " + " | ".join(f"{100 * s:g}% params: {what}" for s in sizes) + " |",
            "| --- |" + " --- |" * len(sizes)]
    for label in results["runs"][0]["columns"]:
        cells = []
        for size in sizes:
            values = [c[m.test] for run in results["runs"] if (c := _at(run["columns"][label]["cuts"], size))]
            cells.append(_cell(values, False, m.digits) if len(values) == len(results["runs"]) else "-")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def _best_at(run: dict, m: Metric, lorita_side: bool, size: float, named: str | None = None) -> float | None:
    """The test figure of the side's column best on validation at ``size`` (``lorita.choice.best_at_size``), or of
    the column ``named`` (the one named before the runs)."""
    if named is not None:
        cut = _at(run["columns"][named]["cuts"], size) if named in run["columns"] else None
        return None if cut is None else cut[m.test]
    found = best_at_size({label: c for label, col in run["columns"].items() if col["lorita"] == lorita_side
                          if (c := _at(col["cuts"], size))}, m)
    return None if found is None else found[1][m.test]


def noise_lines(results: dict) -> list[str]:
    """At each fixed size: the LoRITa column named before the runs (``pre_registered``), else the best LoRITa
    column, against the best alternative, each best chosen on validation (their test figures compared), and whether
    that is noise.

    Over several seeds the noise is the paired t 95% interval of the per-seed differences (``lorita.stats``); with
    one seed, for accuracies, two binomial standard errors of the difference over the test images, which leave out
    the seed-to-seed variation (the report says so).
    """
    m = Metric.of(results)
    runs = results["runs"]
    unit = "points of test accuracy" if m.higher_is_better else "nats/char of test loss"
    named = results["spec"].get("pre_registered")
    ours = "the best LoRITa column" if named is None else f"{named} (named before the runs)"
    lines = []
    for size in results["spec"]["sizes"]:
        pairs = [(_best_at(run, m, True, size, named), _best_at(run, m, False, size)) for run in runs]
        if any(o is None or t is None for o, t in pairs):
            continue
        diffs = [m.better(o, t) for o, t in pairs]
        stats = mean_interval(diffs)
        mean, ci, d = stats["mean"], stats["ci"], m.digits
        if ci is not None:
            ahead = "LoRITa ahead" if ci[0] > 0 else "the alternative ahead" if ci[1] < 0 else "within the noise"
            verdict = f"{ahead}: paired t 95% interval [{ci[0]:+.{d}f}, {ci[1]:+.{d}f}] over {len(diffs)} seeds"
        elif m.higher_is_better:
            p = pairs[0][1] / 100
            noise = 2 * 100 * math.sqrt(2 * p * (1 - p) / runs[0]["test_images"])
            verdict = (("within the noise" if abs(mean) <= noise else "LoRITa ahead" if mean > 0 else
                        "the alternative ahead") + f": one seed, the test set's noise only, about ±{noise:.{d}f}; "
                       "--seeds adds the seeds' own")
        else:
            verdict = "one seed: no noise estimate for a loss; run --seeds for one"
        side = "better" if mean >= 0 else "worse"
        lines.append(f"- {100 * size:g}% of the params: {ours} is {abs(mean):.{d}f} {unit} {side} "
                     f"than the best alternative ({verdict})")
    return lines


def compute_lines(results: dict) -> list[str]:
    """Compute to produce one model at each fixed size: one training per column plus each cut (and fine-tuning)."""
    run = results["runs"][0]
    out = []
    for label, col in run["columns"].items():
        cuts = [c for s in results["spec"]["sizes"] if (c := _at(col["cuts"], s))]
        if not cuts:
            continue
        spent = sum(c["seconds"] for c in cuts)
        out.append(f"| {label} | {len(cuts)} | {col['train_seconds']:.0f} | {spent:.0f} | {col['train_seconds'] + spent:.0f} |")
    if not out:
        return []
    return ["| column | models | training (s) | cutting + fine-tuning (s) | total (s) |",
            "| --- | --- | --- | --- | --- |", *out]


def plot_columns(results: dict, path: Path) -> Path:
    """Validation and test figures vs params kept for every column (first seed), the target as a line."""
    m = Metric.of(results)
    run = results["runs"][0]
    fig = figure(11, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    for label, col in run["columns"].items():
        cuts = sorted(col["cuts"], key=lambda c: c["params_kept"])
        style = "-" if col["lorita"] else "--"
        for ax, key in zip(axes, (m.val, m.test)):
            line, = ax.plot([100 * c["params_kept"] for c in cuts], [c[key] for c in cuts], style, marker="o",
                            markersize=4, label=label)
            pick = col["chosen"]
            if pick is not None:
                ax.plot([100 * pick["params_kept"]], [pick[key]], marker="*", markersize=13, color=line.get_color())
    target = run[m.target]
    axes[0].axhline(target, color="gray", linestyle=":", linewidth=1, label="target")
    for ax, title in zip(axes, ("validation (choices made here)", "test (reported)")):
        ax.set_xscale("log")
        ax.set_xlabel("params kept (% of the original, log scale)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(m.label)
    if m.higher_is_better:
        axes[0].set_ylim(target - 10, target + 3)
    else:
        axes[0].set_ylim(target - 0.3, target + 1.0)
    axes[0].legend(loc="lower right" if m.higher_is_better else "upper right", fontsize=7)
    fig.suptitle(f"{results['dataset']}: every column at equal total epochs (solid: LoRITa; stars: smallest model "
                 "reaching the target)")
    fig.tight_layout()
    return save_figure(fig, path)


def _rebalance_clause(spec: dict) -> str:
    """How the fine-tuned columns' thin pairs started (the setting ``finetune_rebalance``; absent in older files).

    Example:
        >>> print(_rebalance_clause({"finetune_rebalance": 0.9}) + ".", repr(_rebalance_clause({})))
        ; each thin pair rebalanced first, no direction below its layer's 0.9 quantile. ''
    """
    quantile = spec.get("finetune_rebalance")
    if quantile is None:
        return ""
    return f"; each thin pair rebalanced first, no direction below its layer's {quantile:g} quantile"


def _sides_line(spec: dict) -> str:
    """Where a side's recipe differs from the common one (the settings ``plain_train``, ``lorita_train``,
    ``target_train``, ``*_finetune_epochs``, ``*_cut_rule``; absent in older files), as a sentence, or ``""``.

    Example:
        >>> print(_sides_line({"train": {"epochs": 12}, "plain_train": {"lr": 0.1}, "plain_finetune_epochs": 4,
        ...                    "lorita_finetune_epochs": 4, "target_train": {"weight_decay": 0.002}}).strip())
        Per side: the alternatives' models train with lr 0.1 and fine-tune 4 epochs (8 + 4); LoRITa's models fine-tune 4 epochs (8 + 4); the target's plain model trains with weight decay 0.002.
        >>> _sides_line({"train": {"epochs": 12}}), _sides_line({"train": {"epochs": 12}, "target_train": {}})
        ('', '')
        >>> print(_sides_line({"train": {"epochs": 6}, "plain_train": {"lr": 0.1}, "target_train": {}}).strip())
        Per side: the alternatives' models train with lr 0.1; the target's plain model trains with the common recipe.
    """
    epochs = spec["train"]["epochs"]
    parts = []
    for who, side in (("the alternatives' models", "plain"), ("LoRITa's models", "lorita")):
        changes = _changes(spec.get(f"{side}_train"))
        finetune, rule = spec.get(f"{side}_finetune_epochs"), spec.get(f"{side}_cut_rule")
        said = ([f"train with {changes}"] if changes else []) + \
            ([f"fine-tune {finetune} epochs ({epochs - finetune} + {finetune})"] if finetune is not None else []) + \
            ([f"are cut by the rule {rule}"] if rule else [])
        if said:
            parts.append(f"{who} {' and '.join(said)}")
    target = spec.get("target_train")
    if target is not None and target != (spec.get("plain_train") or {}):  # another plain model sets the target
        parts.append(f"the target's plain model trains with {_changes(target) or 'the common recipe'}")
    return f"Per side: {'; '.join(parts)}. " if parts else ""


def _changes(overrides: dict | None) -> str:
    return ", ".join(f"{key.replace('_', ' ')} {value:g}" if isinstance(value, float) else
                     f"{key.replace('_', ' ')} {value}" for key, value in (overrides or {}).items())


def _warm_line(recipe: dict) -> str:
    if not recipe.get("warm_start_epochs"):
        return ""
    lr = recipe["warm_start_lr"] if recipe.get("warm_start_lr") is not None else recipe["lr"]
    wd = recipe["warm_start_weight_decay"] if recipe.get("warm_start_weight_decay") is not None else \
        recipe["weight_decay"]
    return (f"LoRITa columns start warm: plain for {recipe['warm_start_epochs']} epochs, then composed with "
            f"init preserve for the rest (lr {lr:g}, weight decay {wd:g}). ")


def study_lines(results: dict) -> list[str]:
    """Each column's penalty exposure, the plain model's plateau test, and the column named before the runs
    against the best alternative (``results["paired"]``), where the experiment records them."""
    first = results["runs"][0]
    lines = []
    exposures = [f"{label} {c['exposure']:.2f}" for label, c in first["columns"].items()
                 if c.get("exposure") is not None]
    if exposures:
        lines += ["Penalty exposure of each column's training (depth x weight decay x the sum of the learning rate "
                  f"over the steps / (1 - momentum); first seed): {'; '.join(exposures)}.", ""]
    plateaus = [run.get("plateau") for run in results["runs"]]
    if all(p is not None for p in plateaus):
        gains = ", ".join("-" if p["gain"] is None else f"{p['gain']:+.2f}" for p in plateaus)
        passed = sum(p["plateau"] is True for p in plateaus)
        lines += [f"Plateau test of the plain model (validation accuracy gained over the last "
                  f"{plateaus[0]['window_epochs']} epochs, per seed: {gains} points; plateaued when below "
                  f"{plateaus[0]['min_gain']:g}): {passed} of {len(plateaus)} seeds plateaued.", ""]
    if results.get("paired"):
        lines += [f"## {results['paired']['pre_registered']} (named before the runs) against the best alternative",
                  "", *paired_lines(results["paired"]), ""]
    return lines


def samples_lines(results: dict) -> list[str]:
    """Text generated from one prompt by the plain model and the chosen cuts (language experiments)."""
    samples = results["runs"][0].get("samples")
    if not samples:
        return []
    lines = [f"## Generated text (prompt {samples['prompt']!r}, same seed for every model)", ""]
    for label, text in samples["texts"].items():
        lines += [f"**{label}**", "", "```", samples["prompt"] + text, "```", ""]
    return lines


def write_demo_report(out: Path, results: dict) -> Path:
    """Write ``report.md`` and the plots into ``out``; return the report's path."""
    m = Metric.of(results)
    out = Path(out)
    first = results["runs"][0]
    where = out if len(results["runs"]) == 1 else out / first["folder"]
    train_folders = [where / f"depth{d}" for d in results["depths"]]
    cut_folders = [where / name for name in first["cut_folders"]]
    plots = [
        ("Every column: figure vs parameters kept", plot_columns(results, out / "columns.png")),
        ("Cuts without fine-tuning: figure vs parameters kept",
         plot_sweeps(results, out / "accuracy_vs_params.png", "params_kept", "params")),
        ("Cuts without fine-tuning: figure vs FLOPs kept",
         plot_sweeps(results, out / "accuracy_vs_flops.png", "macs_kept", "FLOPs")),
        ("Singular value spectra per layer", plot_spectra(train_folders, out / "spectra.png")),
        ("Kept rank per layer (view (b) cuts)", plot_ranks(cut_folders, out / "ranks.png") if cut_folders else None),
        ("Validation accuracy during training", plot_training_curves(train_folders, out / "training.png")),
    ]
    plain = results["depths"]["1"]
    recipe = results["recipe"]
    seeds = results["seeds"]
    unit = f"{_points(results['max_drop'])} below the plain model's validation accuracy" if m.higher_is_better else \
        f"the plain model's validation loss + {results['max_drop']:.4f} nats/char (perplexity x{math.exp(results['max_drop']):.2f})"
    ft_lr = results["spec"]["finetune_lr"] or recipe["lr"] / 10
    lines = [
        f"# lorita {results['name']}: LoRITa against the alternatives on {results['dataset']}",
        "",
        headline_line(results),
        "",
        *[x for line in left_out_lines(results) for x in (line, "")],
        f"Model {_model_line(recipe)}; {recipe['epochs']} epochs in all for every column "
        f"({recipe['optimizer']} lr {recipe['lr']}, {recipe['schedule']}, weight decay {recipe['weight_decay']}, "
        f"factor init {recipe['init']}); fine-tuned columns train {recipe['epochs'] - recipe['finetune_epochs']} "
        f"epochs, are cut, then fine-tuned {recipe['finetune_epochs']} (lr {ft_lr:g}, the best epoch on validation "
        f"kept, the cut itself included{_rebalance_clause(results['spec'])}). "
        f"{_sides_line(results['spec'])}{_warm_line(recipe)}Seed(s) {', '.join(map(str, seeds))}: each changes the "
        f"split, the init and the batch order. Original model: {human(plain['uncompressed']['params'])} params, "
        f"{human(plain['uncompressed']['flops'])} FLOPs per example (FLOPs = 2 x MACs).",
        "",
        f"The target (view (b), the fair one): {unit}, the same for every column. Each column's smallest model "
        "reaching it is chosen on validation data; test figures are only reported. Sizes are against the original "
        "(uncomposed) architecture.",
        "",
        *columns_table(results),
        "",
        "At fixed sizes, compared point by point (the cut nearest below each size):",
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
    lines += study_lines(results)
    lines += ["Without fine-tuning, per depth (first seed): view (b) and view (a), the paper's (each model cut to "
              "the budget below its own uncompressed figure):", "", *headline_table(results), "",
              f"Machine: {results['machine']}; {results['seconds']:.0f} s in all.", "", *samples_lines(results)]
    for title, path in plots:
        if path is not None:
            lines += [f"## {title}", "", f"![{title}]({Path(path).name})", ""]
    lines += ["## Runs (first seed)", "", summarize([*train_folders, *cut_folders], level=3)]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
