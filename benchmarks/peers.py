"""LoRITa side by side with plain SVD and structured pruning (Torch-Pruning) at equal MACs or equal latency.

For each model (FCN, ResNet20; VGG16 on CIFAR10 with a GPU) and each MACs budget B
(a fraction of the original architecture's MACs), four columns:

* ``lorita-d2``, ``lorita-d3``: trained with LoRITa (depth 2 / 3), merged, cut with
  ``lorita.select_ranks(merged, "budget", flops=B)`` + ``lorita.compress``, fine-tuned;
* ``svd``: the same model trained plain (depth 1), cut and fine-tuned the same way;
* ``torch-pruning``: the depth-1 model pruned with Torch-Pruning's magnitude pruner
  (L1 importance, global ranking) step by step until ``lorita.profile`` measures at
  most B of the original MACs, then fine-tuned the same way.

Every column trains the same number of epochs (``--epochs`` + ``--finetune-epochs``) with
one recipe; the fine-tuning epoch kept (0 = the cut model itself) is chosen on validation
data, test accuracy is only reported. MACs and params come from ``lorita.profile``
(PyTorch's FlopCounterMode) for every method; FLOPs = 2 x MACs. Latency: CPU, eval mode,
``torch.inference_mode``, a fixed thread count, median of repeats at batch 1 and 64.

``--budget-kind latency``: B is a fraction of the dense model's *measured* CPU latency
(``--threads``, NCHW) at each batch of ``--latency-batches`` (1 and 64), and every column is
cut to it: LoRITa and SVD with ``lorita.latency.latency_budget`` (rank allocated by
measured time, layers with no faster pair left dense), Torch-Pruning step by step until
the pruned model measures at most B of the dense model's time. Every cut is then timed
again the same way (``latency_kept``) and fine-tuned like the others; rows carry, for the
low-rank columns, each layer's chosen rank and its dense and chosen time (which layers
could not be made faster), and for Torch-Pruning the widths left.

Output (``--out``, default runs/peers): ``results.json``, ``report.md``,
``accuracy_vs_macs.png`` (``accuracy_vs_latency.png`` with ``--budget-kind latency``), and
one training run folder per model and depth.

    python benchmarks/peers.py --quick                         # smoke run, about 3 minutes on 2 cores
    python benchmarks/peers.py --models fcn resnet20 --epochs 12 --finetune-epochs 2 \
        --model-recipe resnet20:max_train=10000 --model-recipe resnet20:epochs=3 \
        --model-recipe resnet20:finetune_epochs=1             # the CPU run of docs/PEERS.md
    python benchmarks/peers.py --dataset cifar10 --data-dir ~/data --models vgg16 resnet20 \\
        --lr 0.01 --weight-decay 1e-3 --epochs 150 --finetune-epochs 20   # a GPU job
    python benchmarks/peers.py --budget-kind latency --budgets 0.8 0.6 --out runs/peers-latency ...   # equal latency
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import lorita
from lorita.atomic import atomic_write_text
from lorita.cutspec import Budget, Latency
from lorita.errors import LoritaError
from lorita.flags import parse_assignments, train_config_from, train_flags
from lorita.latency import call_times, measure_latency, threads
from lorita.models import paper_exclude
from lorita.prune import available, prune_to
from lorita.report.plots import plot_panels
from lorita.runs import (ComposeSpec, DataSpec, ModelSpec, RunConfig, RunOutput, is_marked, machine, read_json,
                         train_run, write_json)
from lorita.runs import compare
from lorita.runs.compress import finetune_recipe
from lorita.runs.data import capped
from lorita.runs.folder import mark
from lorita.select import cut
from lorita.spectra import Spectra
from lorita.train import TrainConfig

METHODS = {"svd": "SVD (plain, N=1)", "torch-pruning": "Torch-Pruning (L1, global)"}
TP_STEPS = 400  # Torch-Pruning steps from the full model to pruning ratio 1: 0.25% of the channels per step
PER_MODEL_KEYS = ("epochs", "finetune_epochs", "max_train")
TP_MAX_RATIO = 0.95  # default: no layer loses more than 95% of its channels (a layer pruned to nothing breaks the net)
BUDGET_KINDS = ("macs", "latency")
LATENCY_REPEATS = 5  # whole-model timings (samples of >= 50 ms) per latency check: cut vs dense, in turn
TP_TIME_FROM = 1.5  # Torch-Pruning under a latency budget B: timed once its MACs are at most 1.5 B


@dataclass
class PeersSpec:
    """What to run. ``train`` holds TrainConfig fields (the one recipe of every column)."""

    models: list[str] = field(default_factory=lambda: ["fcn", "resnet20"])
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    max_train: int | None = None
    max_eval: int | None = None  # cap the val and test splits (smoke runs only)
    depths: list[int] = field(default_factory=lambda: [2, 3])  # LoRITa depths; depth 1 is always trained
    budgets: list[float] = field(default_factory=lambda: [0.5, 0.3, 0.15])
    train: dict = field(default_factory=dict)
    finetune_epochs: int = 2
    finetune_lr: float | None = None  # None: the recipe's lr / 10
    model_kwargs: dict = field(default_factory=dict)  # model name -> builder kwargs
    per_model: dict = field(default_factory=dict)  # model name -> {epochs, finetune_epochs, max_train}
    torch_pruning: bool = True
    tp_max_ratio: float = TP_MAX_RATIO  # Torch-Pruning's max_pruning_ratio: most of one layer's channels it may remove
    threads: int = 1
    repeats: int = 30
    batches: list[int] = field(default_factory=lambda: [1, 64])
    budget_kind: str = "macs"  # "macs": fractions of the MACs; "latency": of the measured CPU latency
    latency_batches: list[int] = field(default_factory=lambda: [1, 64])  # latency budgets: one cut per batch

    def __post_init__(self):
        if not self.budgets or any(not 0 < b < 1 for b in self.budgets):
            raise LoritaError(f"budgets must be fractions in (0, 1) of the original MACs or latency, "
                              f"got {self.budgets}")
        if self.budget_kind not in BUDGET_KINDS:
            raise LoritaError(f"budget_kind must be one of {', '.join(BUDGET_KINDS)}, got {self.budget_kind!r}")
        if not self.latency_batches or any(b < 1 for b in self.latency_batches):
            raise LoritaError(f"latency_batches must be batch sizes >= 1, got {self.latency_batches}")
        if any(d < 2 for d in self.depths):
            raise LoritaError(f"depths are the LoRITa depths (>= 2); depth 1 is always trained, got {self.depths}")
        if self.finetune_epochs < 0 or self.threads < 1 or self.repeats < 1:
            raise LoritaError("finetune_epochs must be >= 0, threads and repeats >= 1")


# ----------------------------------------------------------------------------
# measuring and cutting (lorita.latency, lorita.select, lorita.prune)


def latency_ratio(model: nn.Module, dense: nn.Module, x: torch.Tensor, threads_: int,
                  repeats: int = LATENCY_REPEATS) -> dict:
    """The cut model's CPU time over the dense one's on ``x`` (timed in turn, samples of >= 50 ms, medians)."""
    with threads(threads_):
        t = measure_latency({"dense": dense.cpu().eval(), "cut": model.cpu().eval()}, x, repeats=repeats)
    return {"ratio": t["cut"] / t["dense"], "dense_ms": 1e3 * t["dense"], "cut_ms": 1e3 * t["cut"]}


def _device(request: str) -> torch.device:
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(request)


def svd_cutter(spectra: Spectra, spec: PeersSpec, batch: int | None) -> Callable:
    """LoRITa's (and plain SVD's) cut to a budget: least-loss ranks within that fraction of the MACs
    (``Budget(flops=B)``), or of the measured CPU latency at ``batch`` in NCHW (``Latency(B)``)."""
    def cutter(budget: float):
        if batch is None:
            small, choice = cut(spectra, Budget(flops=budget))
            return small, {"ranks": {k: int(v) for k, v in choice.ranks.items()}}
        with threads(spec.threads):
            small, choice = cut(spectra, Latency(budget, batch=batch, layout="contiguous"))
        found = choice.report
        return small, {"ranks": {k: int(v) for k, v in found.ranks.items()}, "predicted": found.predicted,
                       "searched": found.measured, "estimated": found.estimated, "rounds": found.rounds, "layers": found.layers,
                       "kept_dense": found.kept_dense}
    return cutter


def tp_cutter(dense: nn.Module, spec: PeersSpec, example: torch.Tensor, x: torch.Tensor | None) -> Callable:
    """Torch-Pruning (``lorita.prune.prune_to``: L1 magnitude, global ranking, ``TP_STEPS`` steps) until the MACs
    are at most the budget; with ``x`` (a batch), until the pruned model measures at most that fraction of the
    dense model's CPU time on it. Timing every step would cost minutes, so steps are timed once the MACs are at
    most ``TP_TIME_FROM`` x the budget (pruning does not speed a CPU model up by more than it cuts its MACs in any
    run we measured; a faster step before that would go unseen)."""
    def cutter(budget: float):
        timed = {}

        def reached(model: nn.Module, kept: float) -> bool:
            if kept > TP_TIME_FROM * budget:
                return False
            timed.update(latency_ratio(model, dense, x, spec.threads))
            return timed["ratio"] <= budget

        small, info = prune_to(dense, budget, example, metric="macs", max_ratio=spec.tp_max_ratio, steps=TP_STEPS,
                               reached=None if x is None else reached)
        return small, {"steps": info["steps"], "widths": info["widths"],
                       **({"searched": timed["ratio"]} if timed else {})}
    return cutter


def timed_cutter(cutter: Callable, dense: nn.Module, spec: PeersSpec, x: torch.Tensor | None) -> Callable:
    """``cutter`` recording its seconds and, under a latency budget, the cut timed again against ``dense``."""
    def timed(budget: float):
        tic = time.time()
        small, extra = cutter(budget)
        extra["cut_seconds"] = time.time() - tic
        if x is not None:  # every column's cut timed again the same way, before fine-tuning
            t = latency_ratio(small, dense, x, spec.threads)
            extra.update(latency_kept=t["ratio"], latency_dense_ms=t["dense_ms"], latency_cut_ms=t["cut_ms"])
        return small, extra
    return timed


# ----------------------------------------------------------------------------
# the run


def _load_data(spec: PeersSpec):
    """The dataset, val and test capped at ``max_eval``; the training split is capped per model later."""
    data = DataSpec(spec.dataset, spec.data_dir, seed=spec.train.get("seed", 0)).load()
    return capped(data, max_eval=spec.max_eval)


@dataclass
class _Recipe:
    """One model's share of the spec: its training data, recipe and fine-tuning recipe."""

    data: object
    config: object  # TrainConfig
    finetune_epochs: int
    finetune: object  # TrainConfig of the fine-tuning
    max_train: int | None

    @property
    def epochs(self) -> dict:
        return {"train": self.config.epochs, "finetune": self.finetune_epochs,
                "total": self.config.epochs + self.finetune_epochs}


def _recipe(spec: PeersSpec, name: str, data) -> _Recipe:
    override = dict(spec.per_model.get(name, {}))
    unknown = sorted(set(override) - set(PER_MODEL_KEYS))
    if unknown:
        raise LoritaError(f"per-model settings for {name!r}: unknown {unknown}; allowed: {', '.join(PER_MODEL_KEYS)}")
    config = TrainConfig.from_dict({**spec.train, **({"epochs": override["epochs"]} if "epochs" in override else {})})
    ft_epochs = int(override.get("finetune_epochs", spec.finetune_epochs))
    max_train = override.get("max_train", spec.max_train)
    finetune = finetune_recipe(config, max(ft_epochs, 1), spec.finetune_lr)
    return _Recipe(capped(data, max_train), config, ft_epochs, finetune, max_train)


def _run_config(spec: PeersSpec, recipe: _Recipe, name: str, depth: int):
    """The training run of one model and depth (val and test capped at ``max_eval`` are in the peers spec)."""
    data = recipe.data
    inputs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "image_size": data.image_size}
    return RunConfig(ModelSpec(name, dict(spec.model_kwargs.get(name, {})), inputs),
                     DataSpec(data.name, spec.data_dir, 0.1, recipe.config.seed, recipe.max_train),
                     ComposeSpec(depth, exclude=paper_exclude(name)), recipe.config)


def _trained(folder: Path, config, data, reuse: bool, progress: bool) -> tuple[dict, nn.Module]:
    """Train into ``folder`` and return (results, merged model), or reuse a finished run of the same config."""
    if reuse and (folder / "results.json").is_file() and (folder / "model.lorita").is_file():
        try:
            same = RunConfig.from_dict(read_json(folder / "config.json", "lorita train")) == config
        except LoritaError:
            same = False
        if same:
            return read_json(folder / "results.json", "lorita train"), \
                lorita.merge(lorita.load(folder / "model.lorita")).eval()
    run = train_run(folder, config, data, overwrite=True, progress=progress, nested=not folder.exists())
    return run.results, lorita.merge(run.model).eval()


def _latencies(model: nn.Module, shape: tuple, spec: PeersSpec) -> dict:
    """CPU milliseconds per forward at each batch of ``spec.batches`` (``lorita.latency.call_times``)."""
    out = {}
    model = model.cpu()
    with threads(spec.threads):
        for b in spec.batches:  # batch 64 takes far longer per call than batch 1: a third of the repeats (at least 5)
            out[str(b)] = call_times(model, torch.randn(b, *shape), repeats=spec.repeats if b == 1 else
                                     max(5, spec.repeats // 3))
    return out


def measure(column: compare.Column, budget: float, recipe: _Recipe, spec: PeersSpec, original,
            example: torch.Tensor, progress: bool = False) -> dict:
    """The column cut to ``budget`` and measured (``lorita.runs.compare.measure``: size, accuracy after the cut and
    after fine-tuning, the epoch kept chosen on val), with its counts and latency."""
    made = compare.measure(column, budget, recipe.data, original, example, progress)
    small = made.detail["model"]
    size = lorita.profile(small, example)
    return {"params": size.params, "macs": size.macs, "flops": size.flops, "val_acc": made.val,
            "test_acc": made.test, "val_acc_cut": made.val_cut, "test_acc_cut": made.test_cut,
            "finetune_epoch_kept": made.finetune_epoch_kept, "seconds": made.seconds,
            "latency_ms": _latencies(small, tuple(example.shape[1:]), spec), "epochs": recipe.epochs,
            **{k: v for k, v in made.detail.items() if k != "model"}}


def run_peers(spec: PeersSpec, out: str | Path, *, data=None, overwrite: bool = False, reuse: bool = False,
              progress: bool = False, say: Callable[[str], None] = lambda s: None) -> dict:
    """Run ``spec`` into ``out``; returns every measured row, also written to ``out/results.json``.

    ``results.json`` is rewritten (atomically) after every row, so a killed run keeps what it measured.
    """
    start = time.time()
    final = Path(out)
    output = None
    if reuse and final.is_dir():
        if not is_marked(final):
            raise LoritaError(f"--reuse-runs: {final} is not a lorita run folder; choose another --out")
        out = final
    else:
        output = RunOutput(final, overwrite=overwrite)
        out = output.begin()  # OUT.partial until every row is measured; a killed run keeps what it measured there
    write_json(out / "config.json", mark({"command": "peers", "lorita_version": lorita.__version__,
                                          "spec": dataclasses.asdict(spec)}))
    device = _device(TrainConfig.from_dict(spec.train).device)
    data = data if data is not None else _load_data(spec)
    tp_available = spec.torch_pruning and available()
    if spec.torch_pruning and not tp_available:
        say("torch_pruning is not installed (pip install 'lorita[prune]'): leaving out its column")
    say(f"machine: {machine()}; latency on CPU with {spec.threads} thread(s)")
    results = {
        "command": "peers", "dataset": data.name, "spec": dataclasses.asdict(spec),
        "torch_pruning": {**_tp_info(), "max_pruning_ratio": spec.tp_max_ratio} if tp_available else None,
        "models": {}, "threads": spec.threads,
        "device": str(device), "machine": machine(), "seconds": 0.0, "complete": False,
        "units": {"params": "count", "macs": "multiply-accumulates per example (lorita.profile, FlopCounterMode)",
                  "flops": "2 x MACs per example", "acc": "percent", "latency_ms": "CPU milliseconds per forward"},
        "epochs_note": "every column: its own model trained epochs.train, then fine-tuned epochs.finetune; "
                       "svd and torch-pruning share the depth-1 training run",
    }

    def save():
        results["seconds"] = time.time() - start
        atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")

    for name in spec.models:
        say(f"[{name}] on {data.name} ({device})")
        _run_model(spec, name, data, out, tp_available, results, save, reuse=reuse, progress=progress, say=say)
    results["complete"] = True
    save()
    if output is not None:
        output.commit()
    return results


def _run_model(spec: PeersSpec, name: str, data, out: Path, tp_available: bool, results: dict, save: Callable,
               *, reuse: bool, progress: bool, say: Callable[[str], None]) -> None:
    """One model: train every depth, then every column cut to every budget (and batch), measured."""
    recipe = _recipe(spec, name, data)
    shape = (data.in_channels, data.image_size, data.image_size)
    example = torch.zeros(1, *shape)
    runs, merged = {}, {}
    for depth in [1, *sorted(set(spec.depths))]:
        say(f"[{name}] training depth {depth}, {len(recipe.data.train)} images ({recipe.config.epochs} epochs)")
        runs[depth], merged[depth] = _trained(out / f"{name}-depth{depth}", _run_config(spec, recipe, name, depth),
                                              recipe.data, reuse, progress)
    spectra = {depth: Spectra(model, example) for depth, model in merged.items()}
    base = spectra[1].profile
    columns = {f"lorita-d{d}": d for d in sorted(set(spec.depths))} | {"svd": 1}
    if tp_available:
        columns["torch-pruning"] = 1
    info = results["models"][name] = {
        "original": {"params": base.params, "macs": base.macs, "flops": base.flops},
        "train_images": len(recipe.data.train), "recipe": recipe.config.to_dict(),
        "finetune_recipe": recipe.finetune.to_dict() if recipe.finetune_epochs else None,
        "epochs": recipe.epochs, "columns": columns, "uncompressed": {}, "rows": []}
    for depth, r in runs.items():
        info["uncompressed"][str(depth)] = {
            "params": base.params, "macs": base.macs, "flops": base.flops, "val_acc": r["val_acc"],
            "test_acc": r["test_acc"], "best_epoch": r["best_epoch"], "train_seconds": r["train_seconds"],
            "latency_ms": _latencies(merged[depth], shape, spec)}
    save()
    for budget in spec.budgets:
        for batch in spec.latency_batches if spec.budget_kind == "latency" else [None]:
            x = None if batch is None else torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
            for method, depth in columns.items():
                say(f"[{name}] {method} at {100 * budget:g}% of the " +
                    ("MACs" if batch is None else f"CPU latency at batch {batch}"))
                cutter = tp_cutter(merged[1], spec, example, x) if method == "torch-pruning" else \
                    svd_cutter(spectra[depth], spec, batch)
                column = compare.Column(_label(method), method.startswith("lorita"),
                                        timed_cutter(cutter, merged[1], spec, x),
                                        recipe.finetune if recipe.finetune_epochs else None, 0.0, recipe.config.epochs)
                try:
                    row = measure(column, budget, recipe, spec, base, example, progress)
                except LoritaError as err:
                    info["rows"].append({"method": method, "budget": budget, "batch": batch, "error": str(err)})
                    say(f"  failed: {err}")
                    continue
                met = row["macs"] <= budget * base.macs if x is None else row["latency_kept"] <= budget
                row.update(method=method, budget=budget, batch=batch, budget_kind=spec.budget_kind,
                           params_kept=row["params"] / base.params, macs_kept=row["macs"] / base.macs,
                           budget_met=met)
                info["rows"].append(row)
                save()


def _tp_info() -> dict:
    return {"version": version("torch-pruning"), "pruner": "BasePruner (= MetaPruner = MagnitudePruner)",
            "importance": "MagnitudeImportance(p=1): L1, group mean, mean-normalised", "global_pruning": True,
            "pruning_ratio": 1.0, "iterative_steps": TP_STEPS, "stop": "first step with lorita.profile MACs <= budget",
            "ignored_layers": "the classifier; for option-A ResNets also the stem and every block's conv2"}


# ----------------------------------------------------------------------------
# report


def _label(method: str) -> str:
    if method.startswith("lorita-d"):
        return f"LoRITa N={method[len('lorita-d'):]}"
    return METHODS.get(method, method)


def table(results: dict) -> str:
    """The Markdown table of every model, method and budget (with the batch and latency kept under latency budgets)."""
    batches = [str(b) for b in results["spec"]["batches"]]
    latency = results["spec"].get("budget_kind", "macs") == "latency"
    budget_head = ["latency budget", "batch", "latency kept"] if latency else ["MACs budget"]
    head = (["model", "method", *budget_head, "MACs kept", "params kept", "MACs", "FLOPs", "params",
             "test acc (%)", "val acc (%)", "test acc cut, no FT (%)", "FT epoch kept"]
            + [f"latency b{b} (ms)" for b in batches] + ["epochs (train+FT)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, info in results["models"].items():
        orig, e = info["original"], info["epochs"]
        for depth, u in info["uncompressed"].items():
            label = "plain (N=1)" if depth == "1" else f"LoRITa N={depth}"
            budget_cells = ["1", "", "1"] if latency else ["1"]
            lines.append("| " + " | ".join([name, f"{label}, uncompressed", *budget_cells, "100%", "100%",
                                            f"{orig['macs']:,}", f"{orig['flops']:,}", f"{orig['params']:,}",
                                            f"{u['test_acc']:.2f}", f"{u['val_acc']:.2f}", "", ""]
                                           + [f"{u['latency_ms'][b]['median']:.3f}" for b in batches]
                                           + [f"{e['train']}+0"]) + " |")
        for r in info["rows"]:
            budget_cells = [f"{r['budget']:g}"] + ([str(r.get("batch"))] if latency else [])
            if "error" in r:
                lines.append(f"| {name} | {_label(r['method'])} | {' | '.join(budget_cells)} | failed: {r['error']} |")
                continue
            if latency:
                budget_cells.append(f"{r['latency_kept']:.3f}")
            lines.append("| " + " | ".join([
                name, _label(r["method"]), *budget_cells, f"{100 * r['macs_kept']:.1f}%",
                f"{100 * r['params_kept']:.1f}%", f"{r['macs']:,}", f"{r['flops']:,}", f"{r['params']:,}",
                f"{r['test_acc']:.2f}", f"{r['val_acc']:.2f}", f"{r['test_acc_cut']:.2f}",
                str(r["finetune_epoch_kept"])]
                + [f"{r['latency_ms'][b]['median']:.3f}" for b in batches]
                + [f"{r['epochs']['train']}+{r['epochs']['finetune']}"]) + " |")
    return "\n".join(lines)


def layers_table(results: dict) -> str:
    """Under latency budgets: per low-rank cut, the layers left dense (no pair of theirs was faster than dense at
    that batch) and the share of the dense model's layer time they hold; per Torch-Pruning cut, its widths."""
    lines = ["| model | method | budget | batch | layers left dense | their share of the layers' dense time |"
             " Torch-Pruning widths |", "|---|---|---|---|---|---|---|"]
    for name, info in results["models"].items():
        for r in info["rows"]:
            if "error" in r or r.get("batch") is None:
                continue
            if "layers" in r:
                total = sum(v["dense_s"] for v in r["layers"].values()) or 1.0
                dense = [k for k, v in r["layers"].items() if not v["cut"]]
                share = sum(r["layers"][k]["dense_s"] for k in dense) / total
                lines.append(f"| {name} | {_label(r['method'])} | {r['budget']:g} | {r['batch']} | "
                             f"{', '.join(dense) or '-'} | {100 * share:.0f}% | |")
            elif "widths" in r:
                widths = ", ".join(f"{k} {v}" for k, v in r["widths"].items())
                lines.append(f"| {name} | {_label(r['method'])} | {r['budget']:g} | {r['batch']} | | | {widths} |")
    return "\n".join(lines)


def plot(results: dict, path: str | Path) -> Path:
    """Test accuracy vs MACs kept (or latency kept, one panel per batch), one line per method (the
    uncompressed model at 1), one panel per model (``lorita.report.plots.plot_panels``)."""
    latency = results["spec"].get("budget_kind", "macs") == "latency"
    key = "latency_kept" if latency else "macs_kept"
    panels = []
    for name, info in results["models"].items():
        e = info["epochs"]
        for batch in results["spec"].get("latency_batches", [None]) if latency else [None]:
            lines = {_label(method): [(r[key], r["test_acc"]) for r in info["rows"] if r["method"] == method
                                      and "error" not in r and r.get("batch") == batch]
                     + [(1.0, info["uncompressed"][str(depth)]["test_acc"])]
                     for method, depth in info["columns"].items()}
            panels.append({
                "lines": lines, "hline": (info["uncompressed"]["1"]["test_acc"] - 1, "plain - 1 point"),
                "xlim": (0, 1.05), "xticks": sorted({*results["spec"]["budgets"], 1.0}),
                "xlabel": f"CPU latency kept at batch {batch} (fraction of the dense model's)" if latency
                else "MACs kept (fraction of the original architecture's)", "ylabel": "test accuracy (%)",
                "title": f"{name} on {results['dataset']}: {e['train']}+{e['finetune']} epochs per column\n"
                         f"(at 1: uncompressed, {e['train']}+0)"})
    return plot_panels(panels, path)


# ----------------------------------------------------------------------------
# command line


def _per_model(pairs: list[str] | None, flag: str = "--model-arg") -> dict:
    """``["fcn:width=64", "fcn:hidden_layers=2"]`` -> ``{"fcn": {"width": 64, "hidden_layers": 2}}``."""
    out: dict[str, dict] = {}
    for pair in pairs or []:
        model, sep, rest = pair.partition(":")
        if not sep:
            raise LoritaError(f"{flag} takes MODEL:KEY=VALUE, got {pair!r} (e.g. fcn:width=256)")
        out.setdefault(model, {}).update(parse_assignments([rest]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[train_flags(epochs=10)])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: FCN width 64, 500 training and 1000 val/test images, 1+1 epochs, few latency repeats")
    p.add_argument("--models", nargs="+", default=["fcn", "resnet20"])
    p.add_argument("--model-arg", action="append", metavar="MODEL:KEY=VALUE", help="e.g. fcn:width=256")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--max-train", type=int, help="use only the first N training images (val and test stay whole)")
    p.add_argument("--max-eval", type=int, help="use only the first N val and test images (smoke runs)")
    p.add_argument("--depths", type=int, nargs="+", default=[2, 3], help="LoRITa depths (depth 1 is always trained)")
    p.add_argument("--budgets", type=float, nargs="+", default=None,
                   help="fractions of the MACs (or latency) kept (default 0.5 0.3 0.15; 0.8 0.6 for latency)")
    p.add_argument("--budget-kind", choices=BUDGET_KINDS, default="macs",
                   help="macs: every column cut to the same MACs; latency: to the same measured CPU latency")
    p.add_argument("--latency-batches", type=int, nargs="+", default=[1, 64],
                   help="--budget-kind latency: the batch sizes each budget is measured at (one cut per batch)")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--model-recipe", action="append", metavar="MODEL:KEY=VALUE",
                   help="per-model epochs, finetune_epochs or max_train, e.g. resnet20:max_train=20000 "
                        "(still the same for every column of that model)")
    p.add_argument("--finetune-lr", type=float, help="default: the recipe's lr / 10")
    p.add_argument("--no-torch-pruning", action="store_true", help="leave out the Torch-Pruning column")
    p.add_argument("--tp-max-ratio", type=float, default=TP_MAX_RATIO,
                   help=f"Torch-Pruning's max_pruning_ratio per layer (default {TP_MAX_RATIO})")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for latency (default 1)")
    p.add_argument("--repeats", type=int, default=30, help="timed forwards at batch 1 (a third of it at batch 64)")
    p.add_argument("--out", default="runs/peers")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--reuse-runs", action="store_true",
                   help="keep --out and reuse its training runs that finished with the same config")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    kwargs = _per_model(args.model_arg)
    per_model = _per_model(args.model_recipe, "--model-recipe")
    repeats, max_train, max_eval = args.repeats, args.max_train, args.max_eval
    epochs, ft = args.epochs, args.finetune_epochs
    if args.quick:
        kwargs.setdefault("fcn", {}).setdefault("width", 64)
        max_train, max_eval, epochs, ft, repeats = max_train or 500, max_eval or 1000, 1, 1, min(repeats, 5)
    spec = PeersSpec(models=args.models, dataset=args.dataset, data_dir=args.data_dir, max_train=max_train,
                     max_eval=max_eval,
                     depths=args.depths, finetune_epochs=ft, finetune_lr=args.finetune_lr,
                     budgets=args.budgets or ([0.8, 0.6] if args.budget_kind == "latency" else [0.5, 0.3, 0.15]),
                     budget_kind=args.budget_kind, latency_batches=args.latency_batches,
                     train=train_config_from(args, epochs=epochs).to_dict(), model_kwargs=kwargs,
                     torch_pruning=not args.no_torch_pruning, threads=args.threads, repeats=repeats,
                     per_model=per_model, tp_max_ratio=args.tp_max_ratio)
    say = lambda s: print(s, file=sys.stderr, flush=True)
    results = run_peers(spec, args.out, overwrite=args.overwrite, reuse=args.reuse_runs,
                        progress=not args.no_progress and sys.stderr.isatty(), say=say)
    out = Path(args.out)
    text = table(results)
    png = out / ("accuracy_vs_latency.png" if spec.budget_kind == "latency" else "accuracy_vs_macs.png")
    if spec.budget_kind == "latency":
        text += "\n\n" + layers_table(results)
    atomic_write_text(out / "report.md", text + "\n")
    plot(results, png)
    epochs = "; ".join(f"{name}: {info['epochs']['train']} training + {info['epochs']['finetune']} fine-tuning "
                       f"epochs on {info['train_images']} images" for name, info in results["models"].items())
    print(f"{results['dataset']}; every column of a model trains the same epochs ({epochs}); latency: CPU, "
          f"{results['threads']} thread(s), median; MACs/FLOPs per example (FLOPs = 2 x MACs); "
          f"{results['machine']}; {results['seconds'] / 60:.1f} min\n")
    print(text)
    print(f"\nwrote {out / 'results.json'}, {out / 'report.md'}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
