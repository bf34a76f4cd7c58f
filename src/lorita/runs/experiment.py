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

import dataclasses
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

import lorita
from lorita import jsonio
from lorita.checks import check_choice, check_int, check_json_object, check_number, check_str, is_int, is_number
from lorita.composed import MAX_DEPTH
from lorita.errors import LoritaError
from lorita.progress import progress as progress_of_sweep
from lorita.runs.compare import FIXED_SIZES
from lorita.runs.compress import calibration_grams, check_calibrate, compress_run
from lorita.runs.config import FACTOR_SIDES, ComposeSpec, DataSpec, ModelSpec, RunConfig
from lorita.runs.data import TEXT_DATASETS
from lorita.runs.folder import mark, write_json
from lorita.runs.output import RunOutput
from lorita.runs.train import example_input, train_run
from lorita.svd_cache import SVDCache
from lorita.train import TrainConfig
from lorita.train.config import MAX_RATE, MAX_SEED

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
    init: str = "auto"  # lorita.compose's; "default" is the paper's
    init_scale: float | None = None
    factor_side: str = "input"
    exclude: list[str] | None = None  # None: the paper's choice for the model
    train: TrainConfig = field(default_factory=TrainConfig)
    max_drop: float = 1.0
    points: int = 40
    refine_steps: int = 6  # extra cuts per target, bisecting between passing and failing thresholds
    test_every_cut: bool = True  # False: test data only at the chosen cuts (cheaper for CNNs)
    fallback_to_digits: bool = False
    seeds: list[int] | None = None  # None: the recipe's seed only; each seed changes split, init and batch order
    finetune_epochs: int = 0  # > 0: the fine-tuned columns, trained that many epochs less (equal totals)
    finetune_lr: float | None = None  # None: the recipe's lr / 10
    torch_pruning: bool | None = None  # the Torch-Pruning + FT column; None: when torch-pruning is installed
    sizes: list[float] = field(default_factory=lambda: list(FIXED_SIZES))  # params fractions compared point by point
    refine_sizes: int = 3  # bisection steps of a fine-tuned column's crossing of the target
    metric: str = "val_acc"  # or "val_loss" (language models): lower is better, max_drop in nats (ln 1.02: +2% ppl)
    calibrate: int = 0  # > 0: whitened-SVD columns, calibrated on that many training batches
    steps_per_epoch: int | None = None  # text: training batches per epoch
    samples: int = 0  # text: characters generated from sample_prompt by each chosen model (0: none)
    sample_prompt: str = "The "
    warm_start_epochs: int = 0  # > 0: LoRITa depths start from a plain model trained that long (init preserve)
    warm_start_lr: float | None = None  # the LoRITa phase's peak lr (None: the recipe's)
    warm_start_weight_decay: float | None = None  # the LoRITa phase's weight decay (None: the recipe's)
    bar_ratio: float = 0.5  # the bar: LoRITa keeps at most this fraction of the best alternative's params

    def __post_init__(self):
        for what in ("name", "model", "dataset"):
            check_str(what, getattr(self, what))
        check_json_object("model_kwargs", self.model_kwargs)
        if self.data_dir is not None:
            check_str("data_dir", self.data_dir)
        if self.max_train is not None:
            check_int("max_train (a positive number of examples)", self.max_train)
        if not isinstance(self.depths, list) or not self.depths or \
                not all(is_int(d) and 1 <= d <= MAX_DEPTH for d in self.depths):
            raise LoritaError(f"depths must be a list of integers from 1 to {MAX_DEPTH} (the most a lorita model file "
                              f"holds), got {self.depths!r}")
        if 1 not in self.depths:
            raise LoritaError("depths must include 1: the plain baseline every comparison is made against")
        ComposeSpec(init=self.init, init_scale=self.init_scale)  # checks init and init_scale
        check_choice("factor_side", self.factor_side, FACTOR_SIDES)
        ComposeSpec(exclude=self.exclude)  # a list of names or None
        if isinstance(self.train, dict):
            self.train = TrainConfig.from_dict(self.train)
        if not isinstance(self.train, TrainConfig):
            raise LoritaError(f"train must be an object of training-recipe fields, got {self.train!r}")
        check_number("max_drop (accuracy points)", self.max_drop, minimum=0)
        check_number("bar_ratio", self.bar_ratio, minimum=0, low_open=True)
        check_int("points", self.points, minimum=2)
        check_int("refine_steps", self.refine_steps, minimum=0)
        for what in ("test_every_cut", "fallback_to_digits"):
            if not isinstance(getattr(self, what), bool):
                raise LoritaError(f"{what} must be true or false, got {getattr(self, what)!r}")
        if self.seeds is not None and (not isinstance(self.seeds, list) or not self.seeds
                                       or not all(is_int(x) and 0 <= x <= MAX_SEED for x in self.seeds)
                                       or len(set(self.seeds)) != len(self.seeds)):
            raise LoritaError(f"seeds must be a list of distinct integers from 0 to 2^64 - 1, got {self.seeds!r}")
        check_int("finetune_epochs", self.finetune_epochs, minimum=0, maximum=self.train.epochs - 1)
        if self.finetune_lr is not None:
            check_number("finetune_lr", self.finetune_lr, minimum=0, low_open=True, maximum=MAX_RATE)
        if self.torch_pruning not in (None, True, False):
            raise LoritaError(f"torch_pruning must be true, false or null (when installed), got {self.torch_pruning!r}")
        if not isinstance(self.sizes, list) or not self.sizes or \
                not all(is_number(x) and 0 < x < 1 for x in self.sizes):
            raise LoritaError(f"sizes must be a list of fractions in (0, 1) of the original params, got {self.sizes!r}")
        check_int("refine_sizes", self.refine_sizes, minimum=0)
        check_choice("metric", self.metric, ("val_acc", "val_loss"))
        check_int("calibrate", self.calibrate, minimum=0)
        if self.steps_per_epoch is not None:
            check_int("steps_per_epoch", self.steps_per_epoch)
        check_int("samples", self.samples, minimum=0)
        if self.samples and self.dataset not in TEXT_DATASETS:
            raise LoritaError(f"samples generates text from the chosen models; {self.dataset!r} is an image dataset: "
                              "leave samples at 0")
        check_int("warm_start_epochs", self.warm_start_epochs, minimum=0,
                  maximum=self.train.epochs - self.finetune_epochs - 1)
        for what in ("warm_start_lr", "warm_start_weight_decay"):
            if getattr(self, what) is not None:
                check_number(what, getattr(self, what), minimum=0, low_open=what == "warm_start_lr", maximum=MAX_RATE)
        check_str("sample_prompt", self.sample_prompt)
        self.data_spec(self.train.seed).check_applies()
        if self.finetune_epochs:
            self.short_recipe(self.train)  # derived recipes checked before anything trains
        if self.warm_start_epochs:
            self.warm_recipe(self.train)

    def short_recipe(self, train: TrainConfig) -> TrainConfig:
        """The recipe of the columns fine-tuned after the cut: ``finetune_epochs`` fewer epochs."""
        return _derived(train, "the fine-tuned columns", epochs=train.epochs - self.finetune_epochs,
                        fix="lower finetune_epochs (--finetune-epochs) or warmup_epochs, or raise epochs")

    def warm_recipe(self, train: TrainConfig) -> TrainConfig:
        """The warm start's recipe: plain, ``warm_start_epochs`` long."""
        return _derived(train, "the warm start", epochs=self.warm_start_epochs,
                        fix="lower warmup_epochs or raise warm_start_epochs")

    @property
    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else [self.train.seed]

    def data_spec(self, seed: int) -> DataSpec:
        return DataSpec(self.dataset, self.data_dir, seed=seed, max_train=self.max_train,
                        steps_per_epoch=self.steps_per_epoch)

    def run_config(self, data, depth: int, train: TrainConfig) -> RunConfig:
        """The training run of one depth with recipe ``train``, on ``data`` (which may be the digits fallback)."""
        from lorita.models import paper_exclude

        inputs = data.model_inputs
        exclude = paper_exclude(self.model) if self.exclude is None else self.exclude
        name = self.dataset if self.dataset in TEXT_DATASETS else data.name  # the digits fallback is recorded
        return RunConfig(ModelSpec(self.model, dict(self.model_kwargs), inputs),
                         DataSpec(name, self.data_dir if name == self.dataset else None,
                                  seed=train.seed, max_train=self.max_train, steps_per_epoch=self.steps_per_epoch),
                         ComposeSpec(depth, self.init, "auto", self.factor_side, exclude, self.init_scale), train)

    def finetune_recipe(self, train: TrainConfig) -> TrainConfig:
        """The fine-tuning recipe after a cut: the training recipe's, ``finetune_epochs`` long, cosine from
        ``finetune_lr`` (default: lr / 10), no warm-up."""
        lr = self.finetune_lr if self.finetune_lr is not None else train.lr / 10
        return dataclasses.replace(train, epochs=self.finetune_epochs, lr=lr, warmup_epochs=0, schedule="cosine")


def _derived(train: TrainConfig, who: str, fix: str, **changes) -> TrainConfig:
    """``train`` with ``changes``, or a LoritaError saying which derived recipe is invalid and how to fix it."""
    try:
        return dataclasses.replace(train, **changes)
    except LoritaError as err:
        raise LoritaError(f"{who} train {changes.get('epochs')} epoch(s), where {str(err).split(';')[0]}: "
                          f"{fix}") from None


def load_spec(path: str | Path, *, reduced: bool = False, train_override: dict | None = None,
              model_kwargs_override: dict | None = None, **override) -> ExperimentSpec:
    """An ExperimentSpec from a JSON config with ``common``, ``full`` and ``reduced`` sections.

    ``override``: spec fields that replace the config's; ``train_override`` / ``model_kwargs_override``:
    recipe fields / model arguments, merged into the config's.

    Example:
        >>> load_spec("experiments/fcn_fashion_mnist.json", reduced=True).train.epochs  # doctest: +SKIP
        15
    """
    path = Path(path)
    if path.is_dir():
        raise LoritaError(f"{path} is a folder; pass an experiment config file (experiments/*.json)")
    if not path.exists():
        raise LoritaError(f"no experiment config at {path}; see the experiments/ folder")
    config = jsonio.read(path, fix="fix the config (experiments/*.json are examples)")
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
    for key, extra in (("train", train_override), ("model_kwargs", model_kwargs_override)):
        if extra:
            values[key] = {**values.get(key, {}), **extra}
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


def run_experiment(spec: ExperimentSpec, out: str | Path, *, overwrite: bool = False,
                   progress: bool = True, config_path: str | Path | None = None) -> dict:
    """Run ``spec`` into ``out`` (one subfolder ``seedS`` per seed when there are several) and return the
    results written to ``out/results.json``. ``config_path``: the file ``spec`` was read from (``out``
    may not be, hold or sit inside it, nor ``spec.data_dir``).

    Example:
        >>> import tempfile
        >>> spec = ExperimentSpec("tiny", "fcn", "digits", {"width": 8, "hidden_layers": 1}, depths=[1, 2], points=3,
        ...                       sizes=[0.5], train=TrainConfig(epochs=1, device="cpu"))
        >>> results = run_experiment(spec, Path(tempfile.mkdtemp()) / "tiny", progress=False)
        >>> sorted(results["runs"][0]["columns"])
        ['LoRITa N=2', 'plain + SVD']
    """
    from lorita.models.registry import resolve_args
    from lorita.report.demo import write_demo_report

    inputs = [(config_path, "its config"), (spec.data_dir, "its data (data_dir)")]
    output = RunOutput(out, overwrite=overwrite, inputs=inputs)  # everything is checked before any work starts
    try:
        use_tp = _torch_pruning(spec)
        resolve_args(spec.model, dict(spec.model_kwargs), inputs_given=False)  # unknown model or argument: fail now
    except BaseException:
        output.abandon()
        raise
    start = time.time()
    seeds = spec.seed_list
    with output as folder:
        write_json(folder / "config.json", mark({"command": "experiment", "lorita_version": lorita.__version__,
                                                 "spec": asdict(spec)}))
        runs = []
        for seed in seeds:
            sub = folder if len(seeds) == 1 else folder / f"seed{seed}"
            if sub is not folder:
                sub.mkdir()
                write_json(sub / "config.json", mark({"command": "experiment-seed", "seed": seed}))
            runs.append(_one_seed(spec, seed, sub, use_tp, progress))
        results = _in_metric(_summary(spec, runs, time.time() - start), spec.metric)
        write_json(folder / "results.json", results)
        write_demo_report(folder, results)
    return results


def _torch_pruning(spec: ExperimentSpec) -> bool:
    from lorita import prune

    if not spec.finetune_epochs:
        return False
    if spec.metric == "val_loss" and spec.torch_pruning is None:
        return False  # a transformer's heads need Torch-Pruning settings lorita does not make; ask for it explicitly
    if spec.torch_pruning and not prune.available():
        raise LoritaError("torch_pruning=true needs torch-pruning: pip install torch-pruning "
                          "(in lorita's clone: pip install -e '.[prune]')")
    if spec.torch_pruning is None and not prune.available():
        log.warning("torch-pruning is not installed (pip install -e '.[prune]' in lorita's clone): "
                    "no Torch-Pruning column")
    return prune.available() if spec.torch_pruning is None else spec.torch_pruning


def _one_seed(spec: ExperimentSpec, seed: int, folder: Path, use_tp: bool, progress: bool) -> dict:
    """Everything for one seed: train, sweep, measure every column, choose on validation.

    Internally every figure is a score, higher is better: accuracy, or minus the loss
    (``metric="val_loss"``); ``_in_metric`` turns the results back into losses.
    """
    from lorita.runs import compare
    from lorita.sweep import as_dicts, measure_test, sweep

    train = dataclasses.replace(spec.train, seed=seed)
    model_spec = ModelSpec(spec.model, dict(spec.model_kwargs))
    data = spec.data_spec(seed).load(model=model_spec, train=train, fallback_to_digits=spec.fallback_to_digits)
    if spec.calibrate:
        check_calibrate(data, spec.train, spec.calibrate)  # before any training
    depths_list = sorted(set(spec.depths))
    example = example_input(data)
    warm = _warm_start(spec, folder, data, train, progress) if spec.warm_start_epochs else None
    trained = {}
    for depth in depths_list:
        log.info("[%s] seed %d: training depth %d on %s (%d epochs)", spec.name, seed, depth, data.name, train.epochs)
        trained[depth] = _train_depth(spec, folder / f"depth{depth}", data, depth, train, warm, progress)
    val, test = compare.scorer(spec.metric, data.val), compare.scorer(spec.metric, data.test)

    def uncut(results: dict) -> float:
        return results["val_acc"] if spec.metric == "val_acc" else -results["val_loss"]

    plain_target = uncut(trained[1].results) - spec.max_drop
    depths, merged, caches = {}, {}, {}
    for depth, run in trained.items():
        log.info("[%s] seed %d: sweeping cuts of depth %d", spec.name, seed, depth)
        merged[depth] = lorita.merge(run.model).eval()
        caches[depth] = SVDCache()
        own_target = uncut(run.results) - spec.max_drop
        with progress_of_sweep(progress, desc=f"sweep depth {depth}", unit="cut", leave=False) as bar:
            points = sweep(merged[depth], example, val, test if spec.test_every_cut else None, points=spec.points,
                           refine_targets=[plain_target, own_target], refine_steps=spec.refine_steps,
                           progress=bar.update if bar is not None else None, svd_cache=caches[depth])
        targets = {"b": plain_target, "a": own_target}
        views = choose_views(points, plain_target, own_target)
        for chosen in views.values():
            if chosen is not None:
                measure_test(merged[depth], chosen, test, svd_cache=caches[depth])
        depths[depth] = {"uncompressed": run.results, "sweep": as_dicts(points),
                         "views": {v: None if p is None else {**asdict(p), "target_val_acc": targets[v]}
                                   for v, p in views.items()}}
    original = lorita.profile(merged[1], example)
    grams = calibration_grams(merged[1], data, spec.train, spec.calibrate) if spec.calibrate else None
    columns = []  # (column, depth of its sweep or None: searched)
    for depth in depths_list:  # cut, no fine-tuning: the sweep chose the cut (view b)
        label = "plain + SVD" if depth == 1 else f"LoRITa N={depth}"
        columns.append((compare.Column(label, depth > 1, compare.svd_cutter(merged[depth], example, caches[depth]),
                                       None, trained[depth].results["train_seconds"], train.epochs), depth))
    if grams is not None:
        columns.append((compare.Column("plain + whitened SVD", False,
                                       compare.svd_cutter(merged[1], example, calibration=grams), None,
                                       trained[1].results["train_seconds"], train.epochs), None))
    if spec.finetune_epochs:
        ft = spec.finetune_recipe(train)
        short = spec.short_recipe(train)
        for depth in depths_list:
            log.info("[%s] seed %d: training depth %d for %d epochs (then %d of fine-tuning)", spec.name, seed, depth,
                     short.epochs, ft.epochs)
            run = _train_depth(spec, folder / f"depth{depth}-short", data, depth, short, warm, progress)
            base = lorita.merge(run.model).eval()
            seconds = run.results["train_seconds"]
            label = "plain + SVD + FT" if depth == 1 else f"LoRITa N={depth} + FT"
            columns.append((compare.Column(label, depth > 1, compare.svd_cutter(base, example), ft, seconds,
                                           spec.train.epochs), None))
            if depth == 1 and grams is not None:
                short_grams = calibration_grams(base, data, spec.train, spec.calibrate)
                columns.append((compare.Column("plain + whitened SVD + FT", False,
                                               compare.svd_cutter(base, example, calibration=short_grams), ft,
                                               seconds, spec.train.epochs), None))
            if depth == 1 and use_tp:
                columns.append((compare.Column("Torch-Pruning + FT", False, compare.prune_cutter(base, example), ft,
                                               seconds, spec.train.epochs), None))
    measured, models = {}, {}
    for column, depth in columns:
        log.info("[%s] seed %d: %s", spec.name, seed, column.label)
        if depth is not None:  # no fine-tuning: the fixed sizes only; the sweep gives the choice
            cuts = [c for c in (compare.measure(column, s, data, original, example, progress, spec.metric)
                                for s in spec.sizes) if c is not None]
            view = depths[depth]["views"]["b"]
            pick = None if view is None else {"params_kept": view["params_kept"], "macs_kept": view["macs_kept"],
                                              "val_acc": view["val_acc"], "test_acc": view["test_acc"],
                                              "threshold": view["threshold"]}
            if view is not None:
                models[column.label] = lorita.compress(merged[depth], ranks=view["ranks"], svd_cache=caches[depth])
        else:
            refine = spec.refine_sizes if column.finetune is not None else spec.refine_steps
            cuts = compare.search(column, plain_target, data, original, example, sizes=spec.sizes,
                                  refine=refine, progress=progress, metric=spec.metric)
            best = compare.chosen(cuts, plain_target)
            pick = None if best is None else {k: getattr(best, k) for k in
                                              ("params_kept", "macs_kept", "val_acc", "test_acc", "size")}
            if best is not None:
                models[column.label] = best.detail["model"]
                if "ranks" in best.detail:
                    pick["ranks"] = best.detail["ranks"]
        measured[column.label] = {"lorita": column.lorita, "finetune_epochs": column.finetune.epochs
                                  if column.finetune is not None else 0,
                                  "epochs": column.epochs, "train_seconds": column.train_seconds,
                                  "cuts": [compare.as_dict(c) for c in cuts], "chosen": pick}
    cuts = []
    for depth, info in depths.items():  # the view-(b) cuts saved as compress runs, from the models in memory
        chosen = info["views"]["b"]
        if chosen is not None:
            cut = folder / f"depth{depth}-cut"
            compress_run(folder / f"depth{depth}", cut, "ranks", ranks=chosen["ranks"], model=merged[depth], data=data,
                         progress=progress, nested=True, svd_cache=caches[depth])
            cuts.append(cut.name)
    headline = _headline(measured, plain_target, spec.train.epochs)
    out = {"seed": seed, "dataset": data.name, "test_images": len(data.test), "target_val_acc": plain_target,
           "depths": {str(d): info for d, info in depths.items()}, "columns": measured,
           "headline": headline, "cut_folders": cuts, "folder": folder.name}
    if spec.samples and hasattr(data, "text"):
        out["samples"] = _samples(spec, data, {"plain (uncompressed)": merged[1], **models}, headline)
        (folder / "samples.txt").write_text(_samples_text(out["samples"]), encoding="utf-8")
    return out


def _warm_start(spec: ExperimentSpec, folder: Path, data, train: TrainConfig, progress: bool):
    """The plain model every warm-started LoRITa depth continues from: depth 1, ``warm_start_epochs`` long."""
    warm = spec.warm_recipe(train)
    log.info("[%s] seed %d: warm start, plain for %d epochs", spec.name, train.seed, warm.epochs)
    return train_run(folder / "warm-start", spec.run_config(data, 1, warm), data, progress=progress, nested=True)


def _train_depth(spec: ExperimentSpec, out: Path, data, depth: int, train: TrainConfig, warm, progress: bool):
    """One depth's training run. With a warm start, a LoRITa depth is the plain warm-start model composed with
    ``init="preserve"`` and trained for the remaining epochs (``warm_start_lr`` / ``warm_start_weight_decay``
    when given): the same total epochs as every other column, the warm start's seconds included."""
    if depth == 1 or warm is None:
        return train_run(out, spec.run_config(data, depth, train), data, progress=progress, nested=True)
    rest = dataclasses.replace(
        train, epochs=train.epochs - spec.warm_start_epochs, warmup_epochs=0,
        lr=spec.warm_start_lr if spec.warm_start_lr is not None else train.lr,
        weight_decay=spec.warm_start_weight_decay if spec.warm_start_weight_decay is not None else train.weight_decay)
    config = spec.run_config(data, depth, rest)
    compose = dataclasses.replace(config.compose, init="preserve", init_scale=None)
    config = dataclasses.replace(config, compose=compose,
                                 source=f"../{warm.folder.name}/model.lorita")  # relative: the folder moves when done
    run = train_run(out, config, data, progress=progress, nested=True, source=lorita.merge(warm.model))
    run.results["train_seconds"] += warm.results["train_seconds"]  # the column's compute includes its warm start
    run.results["warm_start_epochs"] = spec.warm_start_epochs
    return run


def _samples(spec: ExperimentSpec, data, models: dict, headline: dict) -> dict:
    """A few lines generated from one prompt by each model (seeded, the same for every model)."""
    from lorita.models.gpt import generate

    prompt = data.text.encode(spec.sample_prompt)[None, :]  # (1, P)
    out = {"prompt": spec.sample_prompt, "texts": {}}
    best = {(headline.get(side) or {}).get("label") for side in ("lorita", "best_alternative")}
    for label, model in models.items():
        if label != "plain (uncompressed)" and label not in best:
            continue
        gen = torch.Generator().manual_seed(0)
        ids = generate(model.cpu().eval(), prompt, spec.samples, temperature=0.8, top_k=20, generator=gen)
        out["texts"][label] = data.text.decode(ids[0, prompt.shape[1]:])
    return out


def _samples_text(samples: dict) -> str:
    lines = [f"prompt: {samples['prompt']!r}", ""]
    for label, text in samples["texts"].items():
        lines += [f"--- {label}", samples["prompt"] + text, ""]
    return "\n".join(lines)


_SCORE_KEYS = {"val_acc": "val_loss", "test_acc": "test_loss", "val_acc_cut": "val_loss_cut",
               "test_acc_cut": "test_loss_cut", "target_val_acc": "target_val_loss"}


def _in_metric(results: dict, metric: str) -> dict:
    """With ``metric="val_loss"``, scores (minus the loss) become losses under ``*_loss`` keys; train runs'
    own results (``uncompressed``) are left as they are."""
    if metric == "val_acc":
        return results

    def convert(value):
        if isinstance(value, list):
            return [convert(v) for v in value]
        if not isinstance(value, dict):
            return value
        out = {}
        for key, item in value.items():
            if key == "uncompressed":
                out[key] = item
            elif key in _SCORE_KEYS:
                out[_SCORE_KEYS[key]] = None if item is None else -item
            else:
                out[key] = convert(item)
        return out

    return convert(results)


def choose_views(points, plain_target: float, own_target: float) -> dict:
    """View (b) and (a): the smallest cut within each target (``lorita.sweep.choose_cuts``)."""
    from lorita.sweep import choose_cuts

    return choose_cuts(points, {"b": plain_target, "a": own_target})


def _headline(columns: dict, target: float, total_epochs: int) -> dict:
    """The smallest LoRITa column against the smallest alternative at the target (one seed)."""
    def best(lorita_side: bool):
        entries = [(label, c["chosen"]) for label, c in columns.items()
                   if c["lorita"] == lorita_side and c["chosen"] is not None]
        if not entries:
            return None
        label, pick = min(entries, key=lambda e: (e[1]["params_kept"], -e[1]["val_acc"]))
        return {"label": label, "params_kept": pick["params_kept"], "macs_kept": pick["macs_kept"],
                "test_acc": pick["test_acc"], "val_acc": pick["val_acc"]}

    ours, theirs = best(True), best(False)
    ratio = ours["params_kept"] / theirs["params_kept"] if ours is not None and theirs is not None else None
    return {"target_val_acc": target, "total_epochs": total_epochs, "lorita": ours, "best_alternative": theirs,
            "ratio": ratio}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _combine(heads: list[dict]) -> dict:
    """The headline over seeds: means (and spreads) of each side, the ratio of the means, per-seed values."""
    out = {"target_val_acc": _mean_std([h["target_val_acc"] for h in heads])[0], "total_epochs": heads[0]["total_epochs"]}
    for side in ("lorita", "best_alternative"):
        entries = [h[side] for h in heads]
        if any(e is None for e in entries):
            out[side] = None
            continue
        labels = sorted({e["label"] for e in entries})
        out[side] = {"label": labels[0] if len(labels) == 1 else " / ".join(labels)}
        for key in ("params_kept", "macs_kept", "test_acc", "val_acc"):
            mean, std = _mean_std([e[key] for e in entries])
            out[side][key] = mean
            if len(heads) > 1:
                out[side][key + "_std"] = std
    ours, theirs = out["lorita"], out["best_alternative"]
    out["ratio"] = ours["params_kept"] / theirs["params_kept"] if ours is not None and theirs is not None else None
    if len(heads) > 1:
        ratios = [h["ratio"] for h in heads]
        out["seeds"] = heads
        out["ratio_per_seed"] = ratios
    return out


def _summary(spec: ExperimentSpec, runs: list[dict], seconds: float) -> dict:
    first = runs[0]
    headline = _combine([r["headline"] for r in runs])
    ratio = headline["ratio"]
    return {
        "command": "experiment", "name": spec.name, "dataset": first["dataset"], "max_drop": spec.max_drop,
        "metric": spec.metric,
        "spec": asdict(spec),
        "recipe": {**spec.train.to_dict(), "model": spec.model, **spec.model_kwargs, "init": spec.init,
                   "init_scale": spec.init_scale,
                   "factor_side": spec.factor_side, "finetune_epochs": spec.finetune_epochs,
                   "warm_start_epochs": spec.warm_start_epochs, "warm_start_lr": spec.warm_start_lr,
                   "warm_start_weight_decay": spec.warm_start_weight_decay},
        "seeds": [r["seed"] for r in runs],
        "depths": first["depths"],  # the first seed's sweeps (plots, results_table.py)
        "runs": runs,
        "headline": {**headline, "metric": spec.metric,
                     "bar": f"LoRITa keeps at most {spec.bar_ratio:g}x the params of the best alternative (view b)",
                     "bar_ratio": spec.bar_ratio,
                     "bar_met": ratio is not None and not math.isnan(ratio) and ratio <= spec.bar_ratio},
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
