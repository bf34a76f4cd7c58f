"""One experiment: train a zoo model at several depths, sweep cuts, compare at equal accuracy.

``lorita demo`` and ``lorita experiment CONFIG`` both run this. For each depth it trains a
run folder (``depth{N}``), sweeps the global cut of the trained model on validation data,
picks the smallest cut within ``max_drop`` (view (b): of the plain depth-1 model's validation
figure; view (a): of the model's own), saves the view-(b) cuts as compress runs
(``depth{N}-cut``), and writes ``results.json`` and ``report.md`` with plots. The trained
models stay in memory from training to sweep to saved cut: nothing is reloaded, each model
is merged once, and its spectra, costs and each layer's SVD are computed once
(``lorita.spectra.Spectra``), shared by its sweep, its columns and its saved cut.

The columns (``ExperimentSpec.columns``), all at equal total epochs: each depth cut without
fine-tuning (plain + SVD, LoRITa N=d), whitened SVD, the fine-tuned columns (``depth{N}-short``
trained that side's fine-tuning epochs less, cut, fine-tuned), Torch-Pruning + FT (iterative),
and the smaller dense model trained directly; every cut's BatchNorm statistics re-estimated
when ``batchnorm`` asks for it. With a ``pre_registered`` column, results.json pairs it with the
best alternative over the seeds (``lorita.runs.paired``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import platform
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lorita import __version__, prune
from lorita.batchnorm import recalibrate_batchnorm
from lorita.choice import smallest_at_target
from lorita.compose import merge
from lorita.cutspec import Ranks
from lorita.data.datasets import data_folder
from lorita.errors import LoritaError
from lorita.lowrank import has_lowrank
from lorita.metric import ACCURACY, Metric
from lorita.models.gpt import generate
from lorita.models.registry import resolve_args, width_argument
from lorita.progress import progress as progress_of_sweep
from lorita.report.demo import write_demo_report
from lorita.runs import compare
from lorita.runs.alternatives import iterative_prune_cutter, recalibrating, split_finetune, training_batches
from lorita.runs.compress import check_calibrate, compress_model, write_cut
from lorita.runs.config import CompressConfig, ModelSpec, RunConfig
from lorita.runs.data import TEXT_DATASETS
from lorita.runs.experiment_spec import LORITA_SIDE, PLAIN_SIDE, ExperimentSpec, Report, column_label, load_spec
from lorita.runs.factorized import FACTORIZED, factorized_cutter
from lorita.runs.folder import is_marked, mark, write_json
from lorita.runs.many_sizes import many_sizes
from lorita.runs.measured_cuts import MeasuredCuts, inputs_fingerprint, measure_now, sweep_now
from lorita.runs.output import RunOutput, check_inputs, check_name, check_replaceable_output
from lorita.runs.paired import fixed_size_differences, ratio_over_seeds
from lorita.runs.plan import ExperimentPlan, planned_trainings
from lorita.runs.reuse import copy_stopped_run, reused_run
from lorita.runs.set_aside import drop_set_aside, resume_path, set_aside, trainings_in
from lorita.runs.small_dense import SMALL_DENSE, small_dense_cutter, small_dense_folder
from lorita.runs.train import TrainedRun, build_model, example_input, train_run
from lorita.spectra import Spectra
from lorita.svd_cache import SVDCache
from lorita.sweep import SweepPoint, as_dict, as_dicts, choose_cuts, measure_test, sweep
from lorita.train import TrainConfig
from lorita.train.distributed import world_size
from lorita.train.loop import check_batch_norm

log = logging.getLogger(__name__)

__all__ = ["ExperimentSpec", "load_spec", "machine", "plan_experiment", "run_experiment"]


def run_experiment(spec: ExperimentSpec, out: str | Path, *, overwrite: bool = False,
                   progress: bool = True, config_path: str | Path | None = None, resume: bool = False,
                   keep_partial: bool = True) -> dict:
    """Run ``spec`` into ``out`` (one subfolder ``seedS`` per seed when there are several) and return the
    results written to ``out/results.json``. ``config_path``: the file ``spec`` was read from (``out``
    may not be, hold or sit inside it, nor ``spec.setup.data_dir``). ``resume``: take up a killed run of ``out``
    first: its staging folder is kept as ``out.resume`` (``lorita.runs.set_aside``; a rename of lorita's own
    folder, which a later ``resume`` takes up the same way), whose finished trainings are reused and whose
    training stopped part-way continues; ``out.resume`` is removed when the run is done. ``keep_partial``: on
    Ctrl-C or a failure keep ``out.partial`` for ``resume`` when a training in it finished an epoch (hours of
    training are not lost to a failing cut or report; the demo, which has no ``--resume``, passes False: its
    folder is removed).

    Example:
        >>> import tempfile
        >>> spec = ExperimentSpec.from_flat({"name": "tiny", "model": "fcn", "dataset": "digits",
        ...     "model_kwargs": {"width": 8, "hidden_layers": 1}, "depths": [1, 2], "points": 3, "sizes": [0.5],
        ...     "train": {"epochs": 1, "device": "cpu"}})
        >>> results = run_experiment(spec, Path(tempfile.mkdtemp()) / "tiny", progress=False)
        >>> sorted(results["runs"][0]["columns"])
        ['LoRITa N=2', 'plain + SVD']
    """
    use_tp = _check_spec(spec)  # before anything is renamed, locked or created
    check_name(out)
    check_inputs(out, _inputs(spec, config_path))
    if keep_partial and not resume:  # the demo (no --resume) leaves an experiment's OUT.resume alone
        _check_no_earlier_attempt(out)
    loaded = {spec.recipe.seed_list[0]: _seed_data(spec, spec.recipe.seed_list[0])}  # the first seed's, kept for it
    _check_models(spec, loaded[spec.recipe.seed_list[0]][1])
    aside = None
    if resume:
        if not overwrite and (Path(out).exists() or Path(out).is_symlink()):
            raise LoritaError(f"{out} exists; --resume takes up only a run killed before it was in place (its "
                              "OUT.partial): add --overwrite to run it again")
        check_replaceable_output(out)  # before the killed run is set aside: refused, nothing renamed
        aside = set_aside(out)
    if aside is not None:
        spec = dataclasses.replace(spec, recipe=dataclasses.replace(spec.recipe,
                                                                    reuse=[str(aside), *spec.recipe.reuse]))
    output = _output(spec, out, overwrite, config_path)
    start = time.time()
    seeds = spec.recipe.seed_list
    folder = output.begin()
    try:
        write_json(folder / "config.json", mark({"command": "experiment", "lorita_version": __version__,
                                                 "spec": spec.flat()}))
        runs = []
        for seed in seeds:
            sub = folder if len(seeds) == 1 else folder / f"seed{seed}"
            if sub is not folder:
                sub.mkdir()
                write_json(sub / "config.json", mark({"command": "experiment-seed", "seed": seed}))
            runs.append(_one_seed(spec, seed, sub, use_tp, progress, loaded.pop(seed, None)))
        results = _summary(spec, runs, time.time() - start)
        write_json(folder / "results.json", results)
        write_demo_report(folder, results)
    except BaseException:  # Ctrl-C or a failure: its finished epochs kept for --resume, as train keeps its checkpoint
        output.abandon(keep=keep_partial and _worth_keeping(folder))
        if aside is not None and aside.is_dir():
            log.warning("%s, the earlier attempts' trainings, is kept: --resume takes it up again (when it fails the "
                        "same way, mend what the error names first)", aside)
        raise
    output.commit()
    if aside is not None:
        drop_set_aside(out)
    return results


def plan_experiment(spec: ExperimentSpec, out: str | Path, *, overwrite: bool = False,
                    config_path: str | Path | None = None) -> ExperimentPlan:
    """What ``run_experiment(spec, out, ...)`` would train for each seed, after the same checks (of ``out``, the
    config, the data, the folders it reuses), without creating, replacing or training anything: the data is
    loaded (its size gives the steps per epoch) and ``out`` is only checked.

    Example:
        >>> import tempfile
        >>> spec = ExperimentSpec.from_flat({"name": "tiny", "model": "fcn", "dataset": "digits", "depths": [1, 2],
        ...     "train": {"epochs": 3, "device": "cpu"}})
        >>> out = Path(tempfile.mkdtemp()) / "tiny"
        >>> [t.folder for t in plan_experiment(spec, out).trainings], out.exists()
        (['depth1', 'depth2'], False)
    """
    use_tp = _check_spec(spec)
    _check_no_earlier_attempt(out)
    output = _output(spec, out, overwrite, config_path)
    try:
        data = _seed_data(spec, spec.recipe.seed_list[0])[1]
        _check_models(spec, data)
        examples = len(data.train)
        trainings = planned_trainings(spec, examples, world_size=world_size(), torch_pruning=use_tp)
    finally:
        output.abandon()  # nothing was begun: only the lock is given back
    return ExperimentPlan(spec, examples, tuple(trainings))


def _check_no_earlier_attempt(out: str | Path) -> None:
    """Refuse a run without ``--resume`` while ``OUT.resume`` (lorita's folder: a marked folder, not a link) keeps
    an earlier attempt's trainings: it would train them all again and leave that folder behind."""
    aside = resume_path(out)
    if aside.is_dir() and not aside.is_symlink() and is_marked(aside):
        again = "--resume --overwrite" if Path(out).exists() or Path(out).is_symlink() else "--resume"
        raise LoritaError(f"{aside} keeps an earlier attempt's trainings: continue it with {again} (the same command "
                          f"and flags), or, when no command is writing {out}, remove it (rm -r {aside}) to start over")


def _output(spec: ExperimentSpec, out: str | Path, overwrite: bool, config_path: str | Path | None) -> RunOutput:
    """``out`` checked against the experiment's inputs (its config, data and the folders it reuses) and locked."""
    return RunOutput(out, overwrite=overwrite, inputs=_inputs(spec, config_path))


def _inputs(spec: ExperimentSpec, config_path: str | Path | None) -> list[tuple]:
    """What the experiment reads, which its output may not be, hold or sit inside (``check_inputs``)."""
    return [(config_path, "its config"), (data_folder(spec.setup.data_dir), "its data (data_dir)"),
            *[(f, "an experiment whose trainings it reuses (reuse)") for f in spec.recipe.reuse]]


def _check_spec(spec: ExperimentSpec) -> bool:
    """What an experiment needs besides its output, checked (nothing created); whether Torch-Pruning runs."""
    use_tp = _torch_pruning(spec)
    for earlier in spec.recipe.reuse:
        if not Path(earlier).is_dir():
            raise LoritaError(f"reuse: {earlier} is not a folder; name an earlier experiment's folder")
    resolve_args(spec.setup.model, dict(spec.setup.model_kwargs), inputs_given=False)  # unknown model: fail now
    return use_tp


def _check_models(spec: ExperimentSpec, data) -> None:
    """Each depth's model built and composed as its training will, in structure (on the meta device, with the
    default init: no memory, no values to initialise from), so that a model argument the zoo refuses (``width=0``)
    or an unknown ``exclude`` name fails before anything is created; an operation meta tensors lack leaves the
    check to the training."""
    quiet = logging.getLogger("lorita")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its composing logs its default init: the trainings log their own
    try:
        for depth in sorted(set(spec.recipe.depths)):
            config = spec.run_config(data, depth, spec.recipe.train)
            structure = dataclasses.replace(config.compose, init="default", init_scale=None)
            try:
                with torch.device("meta"):
                    model = build_model(dataclasses.replace(config, compose=structure))
            except (NotImplementedError, RuntimeError) as err:
                log.debug("the models were not checked on the meta device (%s): their trainings check them", err)
                return
            check_batch_norm(model, spec.recipe.train, world_size(), len(data.train))
    finally:
        quiet.setLevel(level)


def _torch_pruning(spec: ExperimentSpec) -> bool:
    columns = spec.columns
    if not columns.finetune_epochs:
        return False
    if spec.cuts.metric == "val_loss" and columns.torch_pruning is None:
        return False  # a transformer's heads need Torch-Pruning settings lorita does not make; ask for it explicitly
    if columns.torch_pruning and not prune.available():
        raise LoritaError("torch_pruning=true needs torch-pruning: pip install torch-pruning "
                          "(in lorita's clone: pip install -e '.[prune]')")
    if columns.torch_pruning is None and not prune.available():
        log.warning("torch-pruning is not installed (pip install -e '.[prune]' in lorita's clone): "
                    "no Torch-Pruning column")
    return prune.available() if columns.torch_pruning is None else columns.torch_pruning


@dataclass
class _Seed:
    """What one seed's steps share: the recipe with its seed, the data, its example input, its metric."""

    spec: ExperimentSpec
    train: TrainConfig
    data: object
    example: torch.Tensor
    folder: Path
    progress: bool
    warm: TrainedRun | None = None  # the plain warm start of the LoRITa depths, if any

    @property
    def metric(self) -> Metric:
        return self.spec.cuts.judged_by

    def batches(self):
        """``() -> iterator`` of the shuffled training batches BatchNorm statistics are re-estimated on."""
        return training_batches(self.data, self.train.batch_size, self.train.seed)

    def recalibrating(self, cutter: compare.Cutter) -> compare.Cutter:
        """``cutter``, its models' BatchNorm statistics re-estimated when the spec asks for it."""
        n = self.spec.columns.batchnorm
        return recalibrating(cutter, self.batches(), n) if n else cutter

    def measuring(self, split) -> "Callable[[torch.nn.Module], float]":
        """``model -> figure`` on ``split``, each model's BatchNorm statistics re-estimated first (once per model)
        when the spec asks for it and a layer was cut (the sweep's uncut point is the trained model): how a
        sweep's cuts are scored, as ``compress_model(..., batchnorm=)`` scores the one it saves."""
        n, done = self.spec.columns.batchnorm, weakref.WeakSet()

        def measure(model):
            if n and model not in done and has_lowrank(model):
                recalibrate_batchnorm(model, self.batches()(), max_batches=n)
                done.add(model)
            return self.metric.measure(model, split)

        return measure

    def spectra(self, run: TrainedRun, depth: int) -> Spectra:
        """The trained model merged once, as every cut of it sees it (whitened columns calibrate the plain one)."""
        spec = self.spec
        batches = None
        if depth == 1 and spec.columns.calibrate:
            batches = (x for x, _ in self.data.train.batches(spec.recipe.train.batch_size,
                                                             seed=spec.recipe.train.seed, epoch=0))
        merged = run.merged if run.merged is not None else merge(run.model).eval()  # merged once, by the run
        return Spectra(merged, self.example, batches=batches, svd_cache=SVDCache(), values=run.spectrum)


def _seed_data(spec: ExperimentSpec, seed: int):
    """``(recipe, data)`` of one seed: the recipe with its seed, its data loaded and checked for the whitened
    columns' calibration before any training."""
    train = dataclasses.replace(spec.recipe.train, seed=seed)
    data = spec.setup.data_spec(seed).load(model=ModelSpec(spec.setup.model, dict(spec.setup.model_kwargs)),
                                           train=train, fallback_to_digits=spec.setup.fallback_to_digits)
    if spec.columns.calibrate:
        check_calibrate(data, train, spec.columns.calibrate)
    return train, data


def _one_seed(spec: ExperimentSpec, seed: int, folder: Path, use_tp: bool, progress: bool,
              loaded: tuple | None = None) -> dict:
    """Everything for one seed: train, sweep, measure every column, choose on validation."""
    record = _measured_cuts(spec, seed, folder)  # first: a kill before the cuts keeps an earlier attempt's
    train, data = loaded if loaded is not None else _seed_data(spec, seed)  # loaded: the models' check read it
    s = _Seed(spec, train, data, example_input(data), folder, progress)
    _log_plan(s, use_tp)
    if spec.recipe.warm_start_epochs:
        s.warm = _warm_start(s)
    trained = {}
    for depth in sorted(set(spec.recipe.depths)):
        log.info("[%s] seed %d: training depth %d on %s (%d epochs)", spec.name, seed, depth, data.name, train.epochs)
        trained[depth] = _train_depth(s, folder / f"depth{depth}", depth, train)
    metric = s.metric
    target_run = _target_run(s, trained[1])
    plain_target = metric.target_for(target_run.results[metric.val], spec.cuts.max_drop)
    recorded, swept = measure_now, sweep_now
    if record is not None:  # the trainings the sweeps cut are done: a sweep is taken only for the same data and models
        record.bind_sweeps(_side_inputs(s, plain_target, settings=False))
        swept = record.sweep
    spectra, depths, dense = {}, {}, {}
    for depth, run in trained.items():
        log.info("[%s] seed %d: sweeping cuts of depth %d", spec.name, seed, depth)
        spectra[depth] = s.spectra(run, depth)
        depths[depth], dense[depth] = _sweep_depth(s, spectra[depth], run, depth, plain_target, swept)
    columns = _columns(s, trained, spectra, use_tp)
    if record is not None:  # every training is done (the fine-tuned columns' shorter ones too): likewise each cut
        record.bind(_side_inputs(s, plain_target))
        recorded = record.measure
    measured, models = _measure(s, columns, spectra, depths, plain_target, recorded)
    if SMALL_DENSE in measured:
        _carry_small_dense(s, measured[SMALL_DENSE]["cuts"])
    cuts = _save_cuts(s, spectra, depths, dense, models)
    headline = _headline(measured, plain_target, spec.recipe.train.epochs, metric, spec.report.pre_registered)
    out = {"seed": seed, "dataset": data.name, "test_images": len(data.test), metric.target: plain_target,
           "plateau": target_run.results.get("plateau"), "target_run": target_run.folder.name,
           "depths": {str(d): info for d, info in depths.items()}, "columns": measured,
           "headline": headline, "cut_folders": cuts, "folder": folder.name}
    if spec.report.samples and hasattr(data, "text"):
        out["samples"] = _samples(spec, data, {"plain (uncompressed)": spectra[1].model, **models}, headline)
        (folder / "samples.txt").write_text(_samples_text(out["samples"]), encoding="utf-8")
    return out


def _log_plan(s: _Seed, use_tp: bool) -> None:
    """Before the first training: every training of the seed, with its epochs and penalty exposure
    (``lorita.runs.plan``; each training logs its exposure again when it starts)."""
    plan = planned_trainings(s.spec, len(s.data.train), world_size=world_size(), torch_pruning=use_tp)
    for training in plan:
        log.info("[%s] seed %d plans %s", s.spec.name, s.train.seed, training.describe())


def _target_run(s: _Seed, plain: TrainedRun) -> TrainedRun:
    """The plain model that sets the target: ``plain`` (depth 1), or with ``target_train`` different from
    ``plain_train``, a plain model trained the full epochs with those changes (``depth1-target``)."""
    train = s.spec.target_recipe(s.train)
    if train is None:
        return plain
    log.info("[%s] seed %d: training the plain model of the target (%s)", s.spec.name, s.train.seed,
             s.spec.recipe.target_train)
    return _trained(s, s.folder / "depth1-target", s.spec.run_config(s.data, 1, train))


def _sweep_depth(s: _Seed, spectra: Spectra, run: TrainedRun, depth: int, plain_target: float,
                 swept=sweep_now) -> tuple[dict, SweepPoint]:
    """One depth's sweep on validation data and its smallest cuts within each view's target; and its uncut point
    (the merged model itself, measured). The points, the chosen ones' test figures included, come through
    ``swept`` (``lorita.runs.measured_cuts``)."""
    spec, metric = s.spec, s.metric
    own_target = metric.target_for(run.results[metric.val], spec.cuts.max_drop)
    targets = {"b": plain_target, "a": own_target}

    def measured() -> list[SweepPoint]:
        val, test = s.measuring(s.data.val), s.measuring(s.data.test)
        with progress_of_sweep(s.progress, desc=f"sweep depth {depth}", unit="cut", leave=False) as bar:
            points = sweep(spectra, s.example, val, test if spec.cuts.test_every_cut else None,
                           points=spec.cuts.points, refine_targets=[plain_target, own_target],
                           refine_steps=spec.cuts.refine_steps, progress=bar.update if bar is not None else None,
                           metric=metric)
        for chosen in choose_cuts(points, targets, metric).values():
            if chosen is not None:
                measure_test(spectra, chosen, test)
        return points

    def fits(points: list[SweepPoint]) -> bool:  # a recorded sweep's ranks are of this model's layers
        full = spectra.full_ranks
        return all(name in full and 0 <= rank <= full[name] for p in points for name, rank in p.ranks.items())

    points = swept(depth, measured, fits)
    views = choose_cuts(points, targets, metric)
    info = {"uncompressed": run.results, "sweep": as_dicts(points, metric),
            "views": {v: None if p is None else {**as_dict(p, metric), metric.target: targets[v]}
                      for v, p in views.items()}}
    return info, points[0]  # threshold 0 keeps every layer dense


def _columns(s: _Seed, trained: dict, spectra: dict, use_tp: bool) -> list[tuple[compare.Column, int | None]]:
    """Every column: (the column, the depth whose sweep chose its cut, or None: searched)."""
    spec, epochs = s.spec, s.train.epochs
    columns = []
    for depth, run in trained.items():  # cut, no fine-tuning: the sweep chose the cut (view b), else searched
        swept = spec.columns.cut_rule_for(depth) == "threshold"  # the sweep cuts by threshold: its choice is that
        columns.append((compare.Column(column_label(depth, False), depth > 1,
                                       s.recalibrating(compare.svd_cutter(spectra[depth], spec.columns.svd(depth))),
                                       None, run.results["train_seconds"], epochs, _exposure(run)),
                        depth if swept else None))
    if spec.columns.calibrate:
        cutter = s.recalibrating(compare.svd_cutter(spectra[1], spec.columns.svd(1, whitened=True)))
        columns.append((compare.Column("plain + whitened SVD", False, cutter, None,
                                       trained[1].results["train_seconds"], epochs, _exposure(trained[1])), None))
    if spec.columns.finetune_epochs:
        columns += [(column, None) for column in _finetuned_columns(s, trained, use_tp)]
    original = spectra[1].profile.params
    if spec.columns.small_dense:
        columns.append((_trained_at_size_column(
            s, SMALL_DENSE, lambda model, recipe: small_dense_cutter(model, s.data, recipe, original,
                                                                    trainer=_small_dense_trainer(s)),
            spec.columns.small_dense_refine, trained[1]), None))
    if spec.columns.factorized:  # on the layers LoRITa composes
        exclude = spec.run_config(s.data, 1, s.train).compose.exclude
        columns.append((_trained_at_size_column(
            s, FACTORIZED, lambda model, recipe: factorized_cutter(model, s.data, recipe, original, exclude),
            spec.columns.factorized_refine, trained[1]), None))
    return columns


def _finetuned_columns(s: _Seed, trained: dict, use_tp: bool) -> list[compare.Column]:
    """The columns trained their side's fine-tuning epochs less, cut and fine-tuned: at equal total epochs."""
    spec, train = s.spec, s.train
    total = spec.recipe.train.epochs
    columns = []
    for depth in trained:
        ft = spec.finetune_recipe(train, depth)
        short = spec.short_recipe(train, depth)
        log.info("[%s] seed %d: training depth %d for %d epochs (then %d of fine-tuning)", spec.name, train.seed,
                 depth, short.epochs, ft.epochs)
        run = _train_depth(s, s.folder / f"depth{depth}-short", depth, short)
        base = s.spectra(run, depth)
        seconds, exposure = run.results["train_seconds"], _exposure(run)
        cutter = s.recalibrating(compare.svd_cutter(base, spec.columns.svd(depth)))
        rebalance = spec.columns.finetune_rebalance  # every column whose cut has thin pairs, both sides
        columns.append(compare.Column(column_label(depth, True), depth > 1, cutter, ft, seconds, total, exposure,
                                      rebalance=rebalance))
        if depth == 1 and spec.columns.calibrate:
            cutter = s.recalibrating(compare.svd_cutter(base, spec.columns.svd(1, whitened=True)))
            columns.append(compare.Column("plain + whitened SVD + FT", False, cutter, ft, seconds, total, exposure,
                                          rebalance=rebalance))
        if depth == 1 and use_tp:
            between, last = split_finetune(ft, spec.columns.prune_rounds)
            cutter = iterative_prune_cutter(base.model, s.example, rounds=spec.columns.prune_rounds, between=between,
                                            data=s.data, importance=spec.columns.prune_importance,
                                            taylor_batches=s.batches())
            columns.append(compare.Column("Torch-Pruning + FT", False, s.recalibrating(cutter), last, seconds, total,
                                          exposure, between_epochs=ft.epochs - last.epochs))
    return columns


def _trained_at_size_column(s: _Seed, label: str, make_cutter, refine: int, plain: TrainedRun) -> compare.Column:
    """A column whose every size is a model of the experiment's family trained from scratch with the plain recipe
    for every epoch (the smaller dense model, the factorized baseline): its training is its cut (no fine-tuning),
    so its seconds are each cut's. ``make_cutter(model spec, recipe)`` builds its cutter."""
    setup = s.spec.setup
    model = ModelSpec(setup.model, dict(setup.model_kwargs), s.data.model_inputs)
    cutter = make_cutter(model, s.spec.recipe.for_depth(s.train, 1))
    return compare.Column(label, False, cutter, None, 0.0, s.train.epochs, _exposure(plain), refine=refine)


def _small_dense_trainer(s: _Seed):
    """The smaller dense models' trainer: each a training run of the seed (``small-dense-WIDTH``) with the plain
    recipe, so a killed seed resumes it and another experiment's finished one is reused (``_trained``)."""
    done = {}  # by folder: two sizes can give one width (no model fits between them), trained once

    def trained(model: ModelSpec, recipe: TrainConfig):
        name = small_dense_folder(model)
        if name not in done:
            run = _trained(s, s.folder / name, _small_dense_config(s, model, recipe))
            done[name] = run.model, run.results["train_seconds"], run.results["best_epoch"]
        return done[name]

    return trained


def _small_dense_config(s: _Seed, model: ModelSpec, recipe: TrainConfig) -> RunConfig:
    """The training run of the smaller dense model ``model``: the plain one's with that model."""
    return dataclasses.replace(s.spec.run_config(s.data, 1, recipe), model=model)


def _carry_small_dense(s: _Seed, cuts: list[dict]) -> None:
    """The trainings of the smaller dense models whose cuts the seed's record gave (``lorita.runs.measured_cuts``),
    copied from the earlier attempt that trained them: the seed's folder holds each one its results name, and that
    attempt's ``OUT.resume`` is not left behind for them."""
    setup = s.spec.setup
    arg = width_argument(setup.model)
    recipe = s.spec.recipe.for_depth(s.train, 1)
    for cut in cuts:
        model = ModelSpec(setup.model, {**setup.model_kwargs, arg: cut["detail"]["width"]}, s.data.model_inputs)
        out = s.folder / small_dense_folder(model)
        if out.exists():
            continue
        for folder in _earlier(s.spec, s.train.seed):
            if reused_run(folder, out, _small_dense_config(s, model, recipe)) is not None:
                break


def _exposure(run: TrainedRun) -> float | None:
    return run.results.get("penalty_exposure")


def _earlier(spec: ExperimentSpec, seed: int) -> list[Path]:
    """The folders of this seed in the experiments ``reuse`` names (``OUT.resume`` first on ``--resume``): each one's
    ``seedS`` folder, or itself with one seed."""
    earlier = []
    for reuse in spec.recipe.reuse:
        folder = Path(reuse) / f"seed{seed}"
        earlier.append(folder if folder.is_dir() and not folder.is_symlink() else Path(reuse))
    return earlier


def _measured_cuts(spec: ExperimentSpec, seed: int, folder: Path) -> MeasuredCuts | None:
    """Where the seed's measured cuts are kept (``lorita.runs.measured_cuts``): an earlier attempt's of the same
    experiment and seed taken (and written here at once), each new one written as it is measured. None for text
    with samples, which need each chosen model itself."""
    if spec.report.samples and spec.setup.dataset in TEXT_DATASETS:
        return None
    return MeasuredCuts(folder, measured_cuts_key(spec, seed), _earlier(spec, seed))


_KEYS_ADDED_LATER = ("finetune_rebalance",)  # settings added after seeds were recorded; None was the only way


def measured_cuts_key(spec: ExperimentSpec, seed: int) -> dict:
    """What seed ``seed``'s measured cuts depend on besides their inputs: the experiment's settings (the trainings
    it may reuse, its other seeds and the settings of one side alone aside: those count in that side's cuts'
    inputs, ``_side_inputs``), the seed and lorita's version; a record under another key is not taken.

    Example:
        >>> key = measured_cuts_key(load_spec("experiments/converged/fcn.json"), 3)
        >>> key["seed"], key["spec"]["model"], "reuse" in key["spec"], "lorita_train" in key["spec"]
        (3, 'fcn', False, False)
    """
    aside = {"reuse", "seeds", *PLAIN_SIDE, *LORITA_SIDE}
    flat = spec.flat()
    aside |= {k for k in _KEYS_ADDED_LATER if flat[k] is None}  # at its default: records written before it count
    return json.loads(json.dumps({"spec": {k: v for k, v in flat.items() if k not in aside},
                                  "seed": seed, "lorita_version": __version__}))  # as the record reads back


def _side_inputs(s: _Seed, plain_target: float, settings: bool = True) -> dict[bool, str]:
    """Each side's inputs to its cuts (``lorita.runs.measured_cuts``; False: the plain side, True: LoRITa's): the
    seed's data, the side's trainings done so far, the settings of that side alone and the target, which is all a
    side's cuts take from the other (so a plain setting whose ``target_train`` keeps the base's target leaves
    LoRITa's inputs as they were). ``settings=False``: the sweeps' inputs, which those settings change only through
    the trained models (a sweep cuts them by threshold before any fine-tuning, pruning or other training)."""
    flat = s.spec.flat()
    return {lorita: inputs_fingerprint(s.data, s.folder, lorita, {
        "target": plain_target, **{k: flat[k] for k in (LORITA_SIDE if lorita else PLAIN_SIDE) if settings}})
            for lorita in (False, True)}


def _measure(s: _Seed, columns: list, spectra: dict, depths: dict, plain_target: float,
             recorded=measure_now) -> tuple[dict, dict]:
    """Every column at the fixed sizes (no fine-tuning: the sweep's view (b) is its choice) or searched, each cut
    through ``recorded`` (``lorita.runs.measured_cuts``); the measurements by label, and the chosen models of the
    searched columns (None for a cut measured before this attempt)."""
    spec, metric = s.spec, s.metric
    original = spectra[1].profile
    measured, models = {}, {}
    for column, depth in columns:
        log.info("[%s] seed %d: %s", spec.name, s.train.seed, column.label)
        of_side = functools.partial(recorded, lorita=column.lorita)  # a cut is recorded for its side's inputs
        if depth is not None:  # no fine-tuning: the fixed sizes only; the sweep gives the choice
            cuts = [c for c in (of_side(column.label, size, lambda size=size, column=column: compare.measure(
                column, size, s.data, original, s.example, s.progress, metric)) for size in spec.columns.sizes)
                    if c is not None]
            view = depths[depth]["views"]["b"]
            pick = None if view is None else {k: view[k] for k in ("params_kept", "macs_kept", metric.val,
                                                                   metric.test, "threshold")}
            if view is not None:
                models[column.label] = None  # its place in the order; the model is the saved cut (_save_cuts)
        else:
            refine = column.refine if column.refine is not None else \
                spec.columns.refine_sizes if column.finetune is not None else spec.cuts.refine_steps
            cuts = compare.search(column, plain_target, s.data, original, s.example, sizes=spec.columns.sizes,
                                  refine=refine, progress=s.progress, metric=metric, recorded=of_side)
            best = compare.chosen(cuts, plain_target, metric)
            pick = None
            if best is not None:
                figures = compare.as_dict(best, metric)
                pick = {k: figures[k] for k in ("params_kept", "macs_kept", metric.val, metric.test, "size")}
                models[column.label] = best.detail["model"]
                if "ranks" in best.detail:
                    pick["ranks"] = best.detail["ranks"]
        finetune_epochs = column.between_epochs + (column.finetune.epochs if column.finetune is not None else 0)
        measured[column.label] = {"lorita": column.lorita, "finetune_epochs": finetune_epochs,
                                  "epochs": column.epochs, "train_seconds": column.train_seconds,
                                  "exposure": column.exposure,
                                  "cuts": [compare.as_dict(c, metric) for c in cuts], "chosen": pick}
    return measured, models


def _save_cuts(s: _Seed, spectra: dict, depths: dict, dense: dict, models: dict) -> list[str]:
    """The view-(b) cuts saved as compress runs, from the models in memory (``dense``: each depth's uncut sweep
    point, the merged model already measured); their models go to ``models`` (by column label) for the samples."""
    names = []
    for depth, info in depths.items():
        chosen = info["views"]["b"]
        if chosen is None:
            continue
        folder = s.folder / f"depth{depth}-cut"
        how = Ranks(chosen["ranks"])
        uncut = dense[depth]
        measured = s.metric is ACCURACY and uncut.test is not None  # else measured again: accuracy and loss
        before = {"val_acc": uncut.val, "test_acc": uncut.test} if measured else None
        small, results = compress_model(spectra[depth], s.data, how, recipe=s.train, before=before,
                                        batchnorm=s.spec.columns.batchnorm, metric=s.metric, progress=s.progress)
        folder.mkdir()
        # the source sits in the same staging folder, which is renamed when done: recorded relative
        write_cut(folder, CompressConfig(os.path.relpath(s.folder / f"depth{depth}", folder.parent), how), small,
                  results)
        models[column_label(depth, False)] = small
        names.append(folder.name)
    return names


def _warm_start(s: _Seed):
    """The plain model every warm-started LoRITa depth continues from: depth 1, ``warm_start_epochs`` long."""
    warm = s.spec.warm_recipe(s.train)
    log.info("[%s] seed %d: warm start, plain for %d epochs", s.spec.name, s.train.seed, warm.epochs)
    return train_run(s.folder / "warm-start", s.spec.run_config(s.data, 1, warm), s.data, progress=s.progress,
                     nested=True)


def _train_depth(s: _Seed, out: Path, depth: int, train: TrainConfig) -> TrainedRun:
    """One depth's training run. With a warm start, a LoRITa depth is the plain warm-start model composed with
    ``init="preserve"`` and trained for the remaining epochs (``warm_start_lr`` / ``warm_start_weight_decay``
    when given): the same total epochs as every other column, the warm start's seconds included. ``train`` gets
    the changes of the depth's side first (``Recipe.for_depth``)."""
    spec, recipe, warm = s.spec, s.spec.recipe, s.warm
    train = recipe.for_depth(train, depth)
    if depth == 1 or warm is None:
        return _trained(s, out, spec.run_config(s.data, depth, train))
    config = spec.run_config(s.data, depth, spec.warm_rest_recipe(train))
    compose = dataclasses.replace(config.compose, init="preserve", init_scale=None)
    config = dataclasses.replace(config, compose=compose,
                                 source=f"../{warm.folder.name}/model.lorita")  # relative: the folder moves when done
    run = train_run(out, config, s.data, progress=s.progress, nested=True, source=merge(warm.model))
    run.results["train_seconds"] += warm.results["train_seconds"]  # the column's compute includes its warm start
    run.results["warm_start_epochs"] = recipe.warm_start_epochs
    return run


def _trained(s: _Seed, out: Path, config) -> TrainedRun:
    """The training run of ``config`` in ``out``: taken from the first experiment ``reuse`` names that holds exactly
    that run (in its ``seedS`` folder, or itself with one seed), else continued from the first that holds it
    stopped part-way under the same name, else trained."""
    earlier = _earlier(s.spec, config.train.seed)
    for folder in earlier:
        reused = reused_run(folder, out, config)
        if reused is not None:
            return reused
    resume = any(copy_stopped_run(folder, out, config) is not None for folder in earlier)  # the first it copies
    return train_run(out, config, s.data, progress=s.progress, nested=True, resume=resume)


def _samples(spec: ExperimentSpec, data, models: dict, headline: dict) -> dict:
    """A few lines generated from one prompt by each model (seeded, the same for every model)."""
    prompt = data.text.encode(spec.report.sample_prompt)[None, :]  # (1, P)
    out = {"prompt": spec.report.sample_prompt, "texts": {}}
    best = {(headline.get(side) or {}).get("label") for side in ("lorita", "best_alternative")}
    for label, model in models.items():
        if label != "plain (uncompressed)" and label not in best:
            continue
        gen = torch.Generator().manual_seed(0)
        ids = generate(model.cpu().eval(), prompt, spec.report.samples, temperature=0.8, top_k=20, generator=gen)
        out["texts"][label] = data.text.decode(ids[0, prompt.shape[1]:])
    return out


def _samples_text(samples: dict) -> str:
    lines = [f"prompt: {samples['prompt']!r}", ""]
    for label, text in samples["texts"].items():
        lines += [f"--- {label}", samples["prompt"] + text, ""]
    return "\n".join(lines)


def _headline(columns: dict, target: float, total_epochs: int, metric: Metric, pre_registered: str | None = None,
              ) -> dict:
    """The LoRITa column named before the runs (``pre_registered``; None where it misses the target), or without one
    the smallest LoRITa column, against the smallest alternative at the target (one seed)."""
    def best(lorita_side: bool):
        if lorita_side and pre_registered is not None:
            found = None if columns[pre_registered].get("chosen") is None else \
                (pre_registered, columns[pre_registered]["chosen"])
        else:
            found = smallest_at_target(columns, lorita_side, metric)
        if found is None:
            return None
        label, pick = found
        return {"label": label, "params_kept": pick["params_kept"], "macs_kept": pick["macs_kept"],
                metric.test: pick[metric.test], metric.val: pick[metric.val]}

    ours, theirs = best(True), best(False)
    ratio = ours["params_kept"] / theirs["params_kept"] if ours is not None and theirs is not None else None
    return {metric.target: target, "total_epochs": total_epochs, "lorita": ours, "best_alternative": theirs,
            "ratio": ratio}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _combine(heads: list[dict], metric: Metric) -> dict:
    """The headline over seeds: means (and spreads) of each side, the ratio of the means, per-seed values."""
    out = {metric.target: _mean_std([h[metric.target] for h in heads])[0], "total_epochs": heads[0]["total_epochs"]}
    for side in ("lorita", "best_alternative"):
        entries = [h[side] for h in heads]
        if any(e is None for e in entries):
            out[side] = None
            continue
        labels = sorted({e["label"] for e in entries})
        out[side] = {"label": labels[0] if len(labels) == 1 else " / ".join(labels)}
        for key in ("params_kept", "macs_kept", metric.test, metric.val):
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
    metric = spec.cuts.judged_by
    headline = _combine([r["headline"] for r in runs], metric)
    paired = _paired(spec, runs) if spec.report.pre_registered is not None else None
    recipe = spec.recipe
    return {
        "command": "experiment", "name": spec.name, "dataset": first["dataset"], "max_drop": spec.cuts.max_drop,
        "metric": spec.cuts.metric,
        "spec": spec.flat(),
        "recipe": {**recipe.train.to_dict(), "model": spec.setup.model, **spec.setup.model_kwargs,
                   "init": recipe.init, "init_scale": recipe.init_scale, "factor_side": recipe.factor_side,
                   "finetune_epochs": spec.columns.finetune_epochs, "warm_start_epochs": recipe.warm_start_epochs,
                   "warm_start_lr": recipe.warm_start_lr, "warm_start_weight_decay": recipe.warm_start_weight_decay},
        "seeds": [r["seed"] for r in runs],
        "depths": first["depths"],  # the first seed's sweeps (plots, results_table.py)
        "runs": runs,
        "headline": {**headline, "metric": spec.cuts.metric, **_bar(spec.report, headline["ratio"], paired)},
        **({"paired": paired} if paired is not None else {}),
        "seconds": seconds,
        "machine": machine(),
    }


def _worth_keeping(folder: Path) -> bool:
    """Whether a failed experiment's ``folder`` holds a training that finished an epoch (then kept for
    ``--resume``), with the empty folders the failure left (made, nothing written yet) removed so that ``--resume``
    takes it up; True when that cannot be told (a folder kept is never a loss)."""
    try:
        for parent, names, _ in os.walk(folder, topdown=False):  # the deepest first; links are not followed
            for name in names:
                entry = Path(parent, name)
                if not entry.is_symlink() and not any(entry.iterdir()):
                    entry.rmdir()
        return any((t / "results.json").is_file() or (t / "checkpoint.pt").is_file() for t in trainings_in(folder))
    except Exception:  # noqa: BLE001 (too many open files, a folder gone: keep; abandon must still run)
        return True


BAR_SEEDS = 5  # issue 25's bar: a geometric mean over at least five seeds


def _bar(report: Report, ratio: float | None, paired: dict | None) -> dict:
    """The bar and whether it is met. With a column named before the runs, as issue 25 sets it: that column's
    geometric mean ratio over at least ``BAR_SEEDS`` seeds at most ``bar_ratio``, its paired t 95% interval's upper
    end below 1, no seed missing the target; without one, the ratio of the means (the demo's)."""
    if paired is None:
        return {"bar": f"LoRITa keeps at most {report.bar_ratio:g}x the params of the best alternative (view b)",
                "bar_ratio": report.bar_ratio,
                "bar_met": ratio is not None and not math.isnan(ratio) and ratio <= report.bar_ratio}
    over = paired["ratio_over_seeds"]
    mean, ci = over["geomean_ratio"], over["ci95"]
    short = []
    if over["n"] < BAR_SEEDS:
        short.append(f"{over['n']} seed{'s' if over['n'] != 1 else ''} run, {BAR_SEEDS} needed")
    if over["missed"]:
        missed = over["missed"]
        short.append(f"it misses the target on seed{'s' if len(missed) > 1 else ''} {', '.join(map(str, missed))}")
    if mean is not None and mean > report.bar_ratio:
        short.append(f"geometric mean {mean:.3f} above {report.bar_ratio:g}")
    if ci is not None and ci[1] >= 1:
        short.append(f"the interval's upper end {ci[1]:.3f} not below 1")
    return {"bar": f"{report.pre_registered} keeps at most {report.bar_ratio:g}x the params of the best alternative "
                   f"(view b): geometric mean over at least {BAR_SEEDS} seeds, every seed reaching the target, the "
                   "paired t 95% interval's upper end below 1",
            "bar_ratio": report.bar_ratio, "bar_met": not short, "bar_short_of": short}


def _paired(spec: ExperimentSpec, runs: list[dict]) -> dict:
    """The pre-registered column against the best alternative over the seeds (``lorita.runs.paired``): the
    per-seed ratios with their geometric mean and paired t interval; for accuracy, the paired differences at the
    fixed sizes and each seed's K-sizes table (``lorita.runs.many_sizes``)."""
    label = spec.report.pre_registered
    out = {"pre_registered": label, "ratio_over_seeds": ratio_over_seeds(runs, label, metric=spec.cuts.judged_by)}
    if spec.cuts.judged_by is ACCURACY:
        sizes = spec.columns.sizes
        out["fixed_size_differences"] = fixed_size_differences(runs, label, sizes)
        out["many_sizes"] = [{"seed": run["seed"], "rows": [{**row, "at": {f"{k:g}": v for k, v in row["at"].items()}}
                                                           for row in many_sizes(run["columns"], sizes)]}
                             for run in runs]
    return out


def cpu_name(cpuinfo: str, fallback: str = "") -> str:
    r"""The processor as ``/proc/cpuinfo``'s text names it: its model name, with its family and model numbers where
    the text gives them (a virtual machine's bare "AMD EPYC" names several generations, which differ in speed).

    Example:
        >>> cpu_name("cpu family\t: 23\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n")
        'AMD EPYC (family 23, model 1)'
        >>> cpu_name("", fallback="x86_64")
        'x86_64'
    """
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or fallback
    if name and fields.get("cpu family") and fields.get("model"):
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine() -> str:
    """A one-line description of where this ran.

    Example:
        >>> "torch" in machine()
        True
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    cpu = cpu_name(cpuinfo, platform.processor() or platform.machine())
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPU(s){gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"

