"""One experiment: train a zoo model at several depths, sweep cuts, compare at equal accuracy.

``lorita demo`` and ``lorita experiment CONFIG`` both run this. For each depth it trains a
run folder (``depth{N}``), sweeps the global cut on validation data, picks the smallest
cut within ``max_drop`` points (view (b): of the plain depth-1 model's validation
accuracy; view (a): of the model's own), saves the view-(b) cuts as compress runs
(``depth{N}-cut``), and writes ``results.json`` and ``report.md`` with plots.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import lorita
from lorita.composed import INITS
from lorita.errors import LoritaError

log = logging.getLogger(__name__)


@dataclass
class ExperimentSpec:
    """What to run. ``train`` holds TrainConfig fields; ``max_train`` caps the training split (None: all).

    Example:
        >>> ExperimentSpec(name="demo", model="fcn", dataset="digits").depths
        [1, 2, 3]
    """

    name: str
    model: str
    dataset: str
    model_kwargs: dict = field(default_factory=dict)
    data_dir: str | None = None
    max_train: int | None = None
    depths: list[int] = field(default_factory=lambda: [1, 2, 3])
    init: str = "default"
    factor_side: str = "input"
    exclude: list[str] | None = None  # None: the paper's choice for the model
    train: dict = field(default_factory=dict)
    max_drop: float = 1.0
    points: int = 40
    refine_steps: int = 6  # extra cuts per target, bisecting between passing and failing thresholds
    test_every_cut: bool = True  # False: test data only at the chosen cuts (cheaper for CNNs)
    fallback_to_digits: bool = False

    def __post_init__(self):
        if 1 not in self.depths:
            raise LoritaError("depths must include 1: the plain baseline every comparison is made against")
        if any(not isinstance(d, int) or d < 1 for d in self.depths):
            raise LoritaError(f"depths must be integers >= 1, got {self.depths}")
        if self.max_drop < 0:
            raise LoritaError(f"max_drop must be >= 0 (accuracy points), got {self.max_drop}")
        if self.points < 2:
            raise LoritaError(f"points must be >= 2, got {self.points}")
        if self.refine_steps < 0:
            raise LoritaError(f"refine_steps must be >= 0, got {self.refine_steps}")
        if self.init not in INITS:
            raise LoritaError(f"init must be one of {INITS}, got {self.init!r}")
        if self.max_train is not None and self.max_train < 1:
            raise LoritaError(f"max_train must be a positive number of examples, got {self.max_train}")


def load_spec(path: str | Path, *, reduced: bool = False, **override) -> ExperimentSpec:
    """An ExperimentSpec from a JSON config with ``common``, ``full`` and ``reduced`` sections.

    Example:
        >>> # load_spec("experiments/resnet20_cifar10.json", reduced=True)
    """
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise LoritaError(f"no experiment config at {path}; see the experiments/ folder") from None
    except json.JSONDecodeError as err:
        raise LoritaError(f"{path} is not valid JSON ({err})") from None
    section = "reduced" if reduced else "full"
    if section not in config:
        raise LoritaError(f"{path} has no '{section}' section")
    values = {"name": path.stem, **config.get("common", {})}
    for key, value in config[section].items():
        if key == "train":
            values["train"] = {**values.get("train", {}), **value}
        elif key == "model_kwargs":
            values["model_kwargs"] = {**values.get("model_kwargs", {}), **value}
        else:
            values[key] = value
    values.update({k: v for k, v in override.items() if v is not None})
    known = set(ExperimentSpec.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise LoritaError(f"{path}: unknown keys {unknown}; allowed: {sorted(known)}")
    return ExperimentSpec(**values)


def _load_data(spec: ExperimentSpec):
    from lorita.data import DataNotFoundError, Split, load_dataset

    seed = spec.train.get("seed", 0)
    try:
        data = load_dataset(spec.dataset, spec.data_dir, seed=seed)
    except DataNotFoundError as err:
        if not spec.fallback_to_digits:
            raise
        print(f"note: {spec.dataset} not found ({str(err).splitlines()[0]}); using scikit-learn's digits "
              "instead. For Fashion-MNIST: apt-get install dataset-fashion-mnist", file=sys.stderr)
        data = load_dataset("digits", seed=seed)
    if spec.max_train is not None and spec.max_train < len(data.train):
        t = data.train  # the val split and normalisation were already carved from the full training data
        data.train = Split(t.images[: spec.max_train], t.labels[: spec.max_train], t.mean, t.std)
    return data


def _run_config(spec: ExperimentSpec, data, depth: int, config) -> dict:
    from lorita.models import paper_exclude

    return {
        "command": "train", "lorita_version": lorita.__version__,
        "model": {"name": spec.model, "num_classes": data.num_classes, "in_channels": data.in_channels,
                  "image_size": data.image_size, "kwargs": dict(spec.model_kwargs)},
        "dataset": {"name": data.name, "data_dir": spec.data_dir, "val_fraction": 0.1,
                    "seed": config.seed, "max_train": spec.max_train},
        "compose": {"depth": depth, "init": spec.init, "mode": "auto", "factor_side": spec.factor_side,
                    "exclude": paper_exclude(spec.model) if spec.exclude is None else spec.exclude},
        "train": config.to_dict(),
    }


def run_experiment(spec: ExperimentSpec, out: str | Path, *, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Run ``spec`` into ``out`` and return the results written to ``out/results.json``."""
    from lorita.cli.common import prepare_out, write_json
    from lorita.cli.compress_cmd import compress_run
    from lorita.cli.train_cmd import train_run
    from lorita.sweep import as_dicts, measure_test, smallest_within, sweep
    from lorita.train import TrainConfig, evaluate

    start = time.time()
    config = TrainConfig.from_dict(spec.train) if spec.train else TrainConfig()
    out = prepare_out(out, overwrite)
    data = _load_data(spec)
    trained = {}
    for depth in sorted(set(spec.depths)):
        print(f"[{spec.name}] training depth {depth} on {data.name} ({config.epochs} epochs)", file=sys.stderr)
        trained[depth] = train_run(out / f"depth{depth}", _run_config(spec, data, depth, config), data,
                                   progress=progress)
    example = torch.zeros(1, data.in_channels, data.image_size, data.image_size)
    val = lambda m: evaluate(m, data.val)[0]
    test = lambda m: evaluate(m, data.test)[0]
    plain_target = trained[1]["val_acc"] - spec.max_drop
    depths = {}
    for depth, res in trained.items():
        print(f"[{spec.name}] sweeping cuts of depth {depth}", file=sys.stderr)
        merged = lorita.merge(lorita.load(out / f"depth{depth}" / "model.lorita")).eval()
        bar = _bar(progress, f"sweep depth {depth}")
        try:
            points = sweep(merged, example, val, test if spec.test_every_cut else None, points=spec.points,
                           refine_targets=[plain_target, res["val_acc"] - spec.max_drop],
                           refine_steps=spec.refine_steps,
                           progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        views = {}
        for view, target in (("b", plain_target), ("a", res["val_acc"] - spec.max_drop)):
            chosen = smallest_within(points, target)
            if chosen is not None:
                measure_test(merged, chosen, test)
            views[view] = None if chosen is None else {**asdict(chosen), "target_val_acc": target}
        depths[depth] = {"uncompressed": res, "views": views, "sweep": as_dicts(points)}
    cuts = []
    for depth, info in depths.items():
        if info["views"]["b"] is not None:
            folder = out / f"depth{depth}-cut"
            compress_run(out / f"depth{depth}", folder, "global", {"threshold": info["views"]["b"]["threshold"]},
                         progress=progress, data=data)
            cuts.append(folder)
    results = _summary(spec, config, data, depths, time.time() - start)
    write_json(out / "results.json", results)
    from lorita.cli.demo_report import write_demo_report

    write_demo_report(out, results, cuts)
    return results


def _bar(enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, unit="cut", leave=False)


def _summary(spec: ExperimentSpec, config, data, depths: dict, seconds: float) -> dict:
    plain = depths[1]["views"]["b"]
    best = None
    for depth, info in depths.items():
        chosen = info["views"]["b"]
        if depth > 1 and chosen is not None and (best is None or chosen["params"] < best[1]["params"]):
            best = (depth, chosen)
    ratio = best[1]["params_kept"] / plain["params_kept"] if plain is not None and best is not None else None
    return {
        "command": "experiment", "name": spec.name, "dataset": data.name, "max_drop": spec.max_drop,
        "spec": asdict(spec),
        "recipe": {**config.to_dict(), "model": spec.model, **spec.model_kwargs, "init": spec.init,
                   "factor_side": spec.factor_side},
        "depths": {str(d): info for d, info in depths.items()},
        "headline": {"best_lorita_depth": best[0] if best else None,
                     "params_kept_ratio_vs_plain": ratio,
                     "bar": "LoRITa keeps at most half the parameters the plain model keeps (view b)",
                     "bar_met": ratio is not None and not math.isnan(ratio) and ratio <= 0.5},
        "seconds": seconds,
        "machine": machine(),
    }


def machine() -> str:
    """A one-line description of where this ran."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPU(s){gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"
