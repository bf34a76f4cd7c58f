"""One experiment: train a zoo model at several depths, sweep cuts, compare at equal accuracy.

``lorita demo`` and ``lorita experiment CONFIG`` both run this. For each depth it trains a
run folder (``depth{N}``), sweeps the global cut of the trained model on validation data,
picks the smallest cut within ``max_drop`` points (view (b): of the plain depth-1 model's
validation accuracy; view (a): of the model's own), saves the view-(b) cuts as compress
runs (``depth{N}-cut``), and writes ``results.json`` and ``report.md`` with plots. The
trained models stay in memory from training to sweep to saved cut: nothing is reloaded,
and each layer's SVD runs once per model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

import lorita
from lorita.checks import check_choice, check_int, check_json_object, check_number, check_str, is_int
from lorita.composed import INITS
from lorita.errors import LoritaError
from lorita.runs.compress import compress_run
from lorita.runs.config import FACTOR_SIDES, ComposeSpec, DataSpec, ModelSpec, RunConfig
from lorita.runs.folder import RunOutput, mark, write_json
from lorita.runs.train import example_input, train_run
from lorita.svd_cache import SVDCache
from lorita.train import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class ExperimentSpec:
    """What to run. ``max_train`` caps the training split (None: all of it).

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
    train: TrainConfig = field(default_factory=TrainConfig)
    max_drop: float = 1.0
    points: int = 40
    refine_steps: int = 6  # extra cuts per target, bisecting between passing and failing thresholds
    test_every_cut: bool = True  # False: test data only at the chosen cuts (cheaper for CNNs)
    fallback_to_digits: bool = False

    def __post_init__(self):
        for what in ("name", "model", "dataset"):
            check_str(what, getattr(self, what))
        check_json_object("model_kwargs", self.model_kwargs)
        if self.data_dir is not None:
            check_str("data_dir", self.data_dir)
        if self.max_train is not None:
            check_int("max_train (a positive number of examples)", self.max_train)
        if not isinstance(self.depths, list) or not self.depths or not all(is_int(d) and d >= 1 for d in self.depths):
            raise LoritaError(f"depths must be a list of integers >= 1, got {self.depths!r}")
        if 1 not in self.depths:
            raise LoritaError("depths must include 1: the plain baseline every comparison is made against")
        check_choice("init", self.init, INITS)
        check_choice("factor_side", self.factor_side, FACTOR_SIDES)
        ComposeSpec(exclude=self.exclude)  # a list of names or None
        if isinstance(self.train, dict):
            self.train = TrainConfig.from_dict(self.train)
        if not isinstance(self.train, TrainConfig):
            raise LoritaError(f"train must be an object of training-recipe fields, got {self.train!r}")
        check_number("max_drop (accuracy points)", self.max_drop, minimum=0)
        check_int("points", self.points, minimum=2)
        check_int("refine_steps", self.refine_steps, minimum=0)
        for what in ("test_every_cut", "fallback_to_digits"):
            if not isinstance(getattr(self, what), bool):
                raise LoritaError(f"{what} must be true or false, got {getattr(self, what)!r}")

    def data_spec(self) -> DataSpec:
        return DataSpec(self.dataset, self.data_dir, seed=self.train.seed, max_train=self.max_train)

    def run_config(self, data, depth: int) -> RunConfig:
        """The training run of one depth, on ``data`` (which may be the digits fallback)."""
        from lorita.models import paper_exclude

        inputs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "image_size": data.image_size}
        exclude = paper_exclude(self.model) if self.exclude is None else self.exclude
        return RunConfig(ModelSpec(self.model, dict(self.model_kwargs), inputs),
                         DataSpec(data.name, self.data_dir if data.name == self.dataset else None,
                                  seed=self.train.seed, max_train=self.max_train),
                         ComposeSpec(depth, self.init, "auto", self.factor_side, exclude), self.train)


def load_spec(path: str | Path, *, reduced: bool = False, **override) -> ExperimentSpec:
    """An ExperimentSpec from a JSON config with ``common``, ``full`` and ``reduced`` sections.

    Example:
        >>> load_spec("experiments/fcn_fashion_mnist.json", reduced=True).train.epochs  # doctest: +SKIP
        15
    """
    path = Path(path)
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise LoritaError(f"no experiment config at {path}; see the experiments/ folder") from None
    except IsADirectoryError:
        raise LoritaError(f"{path} is a folder; pass an experiment config file (experiments/*.json)") from None
    except UnicodeDecodeError as err:
        raise LoritaError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise LoritaError(f"{path} is not valid JSON ({err})") from None
    section = "reduced" if reduced else "full"
    if not isinstance(config, dict):
        raise LoritaError(f"{path} must hold a JSON object with 'common', 'full' and 'reduced' sections")
    for key in ("common", section):
        if not isinstance(config.get(key, {}), dict):
            raise LoritaError(f"{path}: the '{key}' section must be an object")
    if section not in config:
        raise LoritaError(f"{path} has no '{section}' section")
    values = {"name": path.stem, **config.get("common", {})}
    for key, value in config[section].items():
        if key in ("train", "model_kwargs") and isinstance(value, dict) and isinstance(values.get(key, {}), dict):
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    values.update({k: v for k, v in override.items() if v is not None})
    known = {f.name for f in fields(ExperimentSpec)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise LoritaError(f"{path}: unknown keys {unknown}; allowed: {sorted(known)}")
    missing = [k for k in ("model", "dataset") if k not in values]
    if missing:
        raise LoritaError(f"{path}: missing {', '.join(missing)} (in 'common' or '{section}')")
    try:
        return ExperimentSpec(**values)
    except LoritaError as err:
        raise LoritaError(f"{path}: {err}") from None


def choose_views(points, plain_target: float, own_target: float) -> dict:
    """View (b) and (a): the smallest cut within each target (``lorita.sweep.choose_cuts``)."""
    from lorita.sweep import choose_cuts

    return choose_cuts(points, {"b": plain_target, "a": own_target})


def run_experiment(spec: ExperimentSpec, out: str | Path, *, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Run ``spec`` into ``out`` and return the results written to ``out/results.json``.

    Example:
        >>> # run_experiment(load_spec("experiments/fcn_fashion_mnist.json", reduced=True), "runs/fcn")
    """
    from lorita.report.demo import write_demo_report
    from lorita.sweep import as_dicts, measure_test, sweep
    from lorita.train import evaluate

    output = RunOutput(out, overwrite=overwrite)  # everything is checked before any work starts
    start = time.time()
    data = spec.data_spec().load(fallback_to_digits=spec.fallback_to_digits)
    configs = {depth: spec.run_config(data, depth) for depth in sorted(set(spec.depths))}
    for config in configs.values():
        config.model.build()  # a bad model argument fails now, not after the first depth has trained
    with output as folder:
        write_json(folder / "config.json", mark({"command": "experiment", "lorita_version": lorita.__version__,
                                                 "spec": asdict(spec)}))
        trained = {}
        for depth, config in configs.items():
            log.info("[%s] training depth %d on %s (%d epochs)", spec.name, depth, data.name, spec.train.epochs)
            trained[depth] = train_run(folder / f"depth{depth}", config, data, progress=progress, nested=True)
        example = example_input(data)
        val = lambda m: evaluate(m, data.val)[0]
        test = lambda m: evaluate(m, data.test)[0]
        plain_target = trained[1].results["val_acc"] - spec.max_drop
        depths, merged_models, caches = {}, {}, {}
        for depth, run in trained.items():
            log.info("[%s] sweeping cuts of depth %d", spec.name, depth)
            merged = merged_models[depth] = lorita.merge(run.model).eval()
            cache = caches[depth] = SVDCache()
            own_target = run.results["val_acc"] - spec.max_drop
            with _bar(progress, f"sweep depth {depth}") as bar:
                points = sweep(merged, example, val, test if spec.test_every_cut else None, points=spec.points,
                               refine_targets=[plain_target, own_target], refine_steps=spec.refine_steps,
                               progress=bar.update if bar is not None else None, svd_cache=cache)
            views = choose_views(points, plain_target, own_target)
            for view, chosen in views.items():
                if chosen is not None:
                    measure_test(merged, chosen, test, svd_cache=cache)
            targets = {"b": plain_target, "a": own_target}
            depths[depth] = {"uncompressed": run.results, "sweep": as_dicts(points),
                             "views": {v: None if p is None else {**asdict(p), "target_val_acc": targets[v]}
                                       for v, p in views.items()}}
        cuts = []
        for depth, info in depths.items():
            chosen = info["views"]["b"]
            if chosen is not None:
                cut = folder / f"depth{depth}-cut"
                compress_run(folder / f"depth{depth}", cut, "ranks", ranks=chosen["ranks"],
                             model=merged_models[depth], data=data, progress=progress, nested=True,
                             svd_cache=caches[depth])
                cuts.append(cut)
        results = _summary(spec, data, depths, time.time() - start)
        write_json(folder / "results.json", results)
        write_demo_report(folder, results, cuts)
    return results


class _bar:
    """A tqdm bar for the sweep (or None when progress is off), closed on exit."""

    def __init__(self, enabled: bool, desc: str):
        self.enabled, self.desc, self.bar = enabled, desc, None

    def __enter__(self):
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(desc=self.desc, unit="cut", leave=False)
        return self.bar

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def _summary(spec: ExperimentSpec, data, depths: dict, seconds: float) -> dict:
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
        "recipe": {**spec.train.to_dict(), "model": spec.model, **spec.model_kwargs, "init": spec.init,
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
    """A one-line description of where this ran.

    Example:
        >>> "torch" in machine()
        True
    """
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
