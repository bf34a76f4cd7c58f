"""``train_run``: train one zoo model (LoRITa, or plain at depth 1) into a run folder.

The folder (``config.json``, ``metrics.csv``, ``checkpoint.pt``, ``model.lorita``,
``spectrum.json``, ``results.json``) is built in ``NAME.partial`` and appears under its
name only when complete (``lorita.runs.folder``). A killed run stays in ``NAME.partial``
and ``resume=True`` continues it; ``resume=True`` on a finished run extends it (more
epochs), again in ``NAME.partial`` until it ends.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import lorita
from lorita.data.datasets import data_folder
from lorita.errors import LoritaError
from lorita.lowrank import has_lowrank
from lorita.models import model_inputs
from lorita.runs.config import ModelSpec, RunConfig, recorded
from lorita.runs.folder import read_json, staging_path, write_json
from lorita.runs.output import RunOutput
from lorita.serialization import read_description
from lorita.train import evaluate, train
from lorita.train.distributed import is_main_process, world_size
from lorita.train.exposure import describe_exposure, penalty_exposure, steps_per_epoch
from lorita.train.loop import check_resume
from lorita.train.plateau import plateau_test

log = logging.getLogger(__name__)


@dataclass
class TrainedRun:
    """A finished training run: its folder, its results.json content, and the trained (composed) model
    with the best validation epoch's weights, on the CPU in eval mode; ``merged``: that model merged to its
    plain architecture (eval mode), as measured for results.json, and ``spectrum``: its singular values
    (``lorita.spectrum``, as spectrum.json holds them)."""

    folder: Path
    results: dict
    model: nn.Module
    merged: nn.Module | None = None
    spectrum: dict | None = None


def build_model(config: RunConfig, source: nn.Module | None = None) -> nn.Module:
    """The run's model: the zoo model (or ``source``, a trained model to continue), composed as configured.

    Example:
        >>> from lorita.runs.config import ComposeSpec, DataSpec, ModelSpec
        >>> config = RunConfig(ModelSpec("fcn", {"width": 8}, {"num_classes": 3, "in_channels": 1, "image_size": 4}),
        ...                    DataSpec("digits"), ComposeSpec(depth=2))
        >>> type(build_model(config).head).__name__
        'ComposedLinear'
    """
    base = source if source is not None else config.model.build()
    c = config.compose
    return lorita.compose(base, depth=c.depth, exclude=c.exclude or None, init=c.init, mode=c.mode,
                          factor_side=c.factor_side, init_scale=c.init_scale)


def load_source(source: str | Path) -> tuple[nn.Module, ModelSpec, Path]:
    """A trained model to continue (``--from``): a run folder or a ``.lorita`` file of a zoo model.

    Returns the model merged to its plain architecture, its ``ModelSpec`` (zoo name, arguments,
    data inputs) and the file read. Only the zoo path of ``lorita.load`` is used: nothing the
    file names is imported.

    Example:
        >>> import tempfile
        >>> from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, train_run
        >>> config = RunConfig(ModelSpec("fcn", {"width": 8, "hidden_layers": 1},
        ...                              {"num_classes": 10, "in_channels": 1, "image_size": 8}),
        ...                    DataSpec("digits"), ComposeSpec(depth=2), lorita.TrainConfig(epochs=1, device="cpu"))
        >>> folder = Path(tempfile.mkdtemp()) / "run"
        >>> run = train_run(folder, config, config.dataset.load(), progress=False)
        >>> model, spec, path = load_source(folder)
        >>> spec.name, type(model.head).__name__
        ('fcn', 'Linear')
    """
    path = Path(source)
    if path.is_dir():
        path = path / "model.lorita"
        if not path.is_file():
            raise LoritaError(f"--from {source}: no model.lorita there; is it a finished lorita run folder?")
    arch = read_description(path).get("architecture") or {}
    if "zoo" not in arch and arch.get("factory") != "lorita.models:create_model":
        raise LoritaError(f"--from {source}: the model is not one of lorita's zoo models, so the command line cannot "
                          "rebuild it; continue it from Python: lorita.compose(your_model, depth, init='preserve') "
                          "and lorita.train.train(...)")
    model = lorita.merge(lorita.load(path), inplace=True).eval()
    kinds = sorted({str(t.dtype).replace("torch.", "") for t in model.state_dict().values() if t.is_floating_point()})
    if kinds != ["float32"]:  # a half or mixed-precision file: trained on, as every run is, in float32
        log.info("--from %s holds %s weights: they are trained on in float32", source, " and ".join(kinds))
        model = model.float()
    if has_lowrank(model):
        raise LoritaError(f"--from {source}: this model was cut by 'lorita compress' (its layers are low-rank pairs), "
                          "so it cannot be composed again; continue the trained run it was cut from (--from THAT_RUN), "
                          "or cut that run again with 'lorita compress THAT_RUN ... --finetune-epochs N' to "
                          "fine-tune the cut")
    config = model.lorita_config
    name = config["zoo"]
    inputs = {k: v for k, v in config["kwargs"].items() if k in model_inputs(name)}
    kwargs = {k: v for k, v in config["kwargs"].items() if k not in inputs}
    return model, ModelSpec(name, kwargs, inputs), path


def _is_sharded(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def _shown(part) -> str:
    """A config section as a message shows it: its fields, None and empty ones left out."""
    if part is None or isinstance(part, str):
        return repr(part)
    fields = part.to_dict() if hasattr(part, "to_dict") else vars(part)
    return "{" + ", ".join(f"{k}={v!r}" for k, v in fields.items() if v not in (None, {}, [], ())) + "}"


def _resume_folder(output: RunOutput, config: RunConfig) -> Path:
    """Where the run continues: a killed run's ``NAME.partial``, else the finished ``NAME`` (copied by ``begin``).

    ``output`` has checked that ``NAME.partial`` is a marked folder (no link) holding a
    checkpoint; here the run must be the same (model, data and composition; the checkpoint
    accepts the new recipe), all before anything is written.
    """
    staging, out = output.staging, output.out
    if output.resumable or (not output.writer and (staging / "checkpoint.pt").is_file()):
        folder = staging
    elif (out / "checkpoint.pt").is_file():
        folder = out
    else:
        raise LoritaError(f"--resume: no checkpoint.pt in {staging} or {out}; start the run without --resume")
    where = folder / "config.json"
    old = recorded(RunConfig.from_dict(read_json(where, "'lorita train'"), str(where)), where)
    diff = [k for k in ("model", "dataset", "compose", "source") if getattr(old, k) != getattr(config, k)]
    if diff:
        shown = "; ".join(f"{k}: the run has {_shown(getattr(old, k))}, the flags give {_shown(getattr(config, k))}"
                          for k in diff)
        raise LoritaError(f"--resume: the flags differ from the run's config.json ({shown}); leave them out (--resume "
                          "takes the run's own; only --epochs may change), or start a new run with another --out")
    saved = check_resume(folder / "checkpoint.pt", config.train)  # a rejected resume writes nothing
    if folder == out and saved["epoch"] == config.train.epochs:
        raise LoritaError(f"--resume: {out} has finished all its {saved['epoch']} epochs; give --epochs N (more than "
                          f"{saved['epoch']}) to train it further")
    return staging if output.writer else folder


def resumed_config(out: str | Path) -> RunConfig | None:
    """The config of the run ``train_run(out, ..., resume=True)`` would continue: a killed run's ``out.partial``
    (it holds a checkpoint), else the finished ``out``; None where neither holds a checkpoint or the folder is a
    link (``train_run`` says what is wrong there). Only ``config.json`` is read.

    Example:
        >>> import tempfile
        >>> from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, train_run
        >>> config = RunConfig(ModelSpec("fcn", {"width": 8, "hidden_layers": 1},
        ...                              {"num_classes": 10, "in_channels": 1, "image_size": 8}),
        ...                    DataSpec("digits"), ComposeSpec(depth=2), lorita.TrainConfig(epochs=1, device="cpu"))
        >>> folder = Path(tempfile.mkdtemp()) / "run"
        >>> _ = train_run(folder, config, config.dataset.load(), progress=False)
        >>> resumed_config(folder) == config, resumed_config(folder.with_name("other"))
        (True, None)
    """
    for folder in (staging_path(out), Path(out)):  # a staging folder holds its config.json before its checkpoint;
        path = folder / "config.json"               # an extension's copy of out appears whole (copy_whole)
        if not folder.is_symlink() and (folder / "checkpoint.pt").is_file() and path.is_file():
            return RunConfig.from_dict(read_json(path, "'lorita train'"), str(path))
    return None


def _inputs(config: RunConfig, resume: bool) -> list[tuple[str | None, str]]:
    """What a run reads, which its output may not be, hold or sit inside: the model it continues (not read again
    when the run resumes from its own checkpoint) and its data."""
    source = None if resume else config.source
    if source is not None and Path(source).name == "model.lorita":
        source = str(Path(source).parent)  # --from a run folder: the whole run is an input
    return [(source, "the model it continues (--from)"),
            (data_folder(config.dataset.data_dir), "its data (--data-dir)")]


def train_run(out: str | Path, config: RunConfig, data, *, overwrite: bool = False, resume: bool = False,
              progress: bool = True, source: nn.Module | None = None, nested: bool = False) -> TrainedRun | None:
    """Train ``config`` on ``data`` into the run folder ``out``; return the finished run.

    ``source``: a trained model to continue (composed with ``config.compose``, usually
    ``init="preserve"``). ``nested``: ``out`` is a new folder inside another command's
    staging folder (the demo's ``depth3``), written directly; with ``resume`` it is already there, a
    training stopped part-way that the caller checked and copied in (``lorita.runs.reuse``), and is
    continued from its checkpoint. Returns None on non-zero ranks under torchrun (they write nothing).

    Example:
        >>> import tempfile
        >>> from lorita.runs import ComposeSpec, DataSpec, ModelSpec, RunConfig, train_run
        >>> config = RunConfig(ModelSpec("fcn", {"width": 8, "hidden_layers": 1},
        ...                              {"num_classes": 10, "in_channels": 1, "image_size": 8}),
        ...                    DataSpec("digits"), ComposeSpec(depth=2), lorita.TrainConfig(epochs=1, device="cpu"))
        >>> folder = Path(tempfile.mkdtemp()) / "run"
        >>> run = train_run(folder, config, config.dataset.load(), progress=False)
        >>> run.folder == folder, run.results["depth"], run.results["epochs"]
        (True, 2, 1)
    """
    main = is_main_process()
    out = Path(out)
    torch.manual_seed(config.train.seed)  # the init: the same run twice gives the same model
    model = build_model(config, source)  # a bad model or composition fails before anything is written
    output = None
    resumed_from = None  # the checkpoint the run starts from, if any
    if nested:
        folder = out
        if main and not resume:
            folder.mkdir()
    else:
        output = RunOutput(out, overwrite=overwrite, resume=resume, writer=main, inputs=_inputs(config, resume))
        try:
            folder = _resume_folder(output, config) if resume else output.staging
            output.begin()
            resumed_from = _checkpoint_id(folder)
        except BaseException:
            output.abandon()
            raise
    try:
        trained = _train_into(folder, config, data, model, resume, progress, main, source)
    except BaseException:
        if output is not None:  # kept for --resume once it wrote a checkpoint of its own (an epoch finished)
            output.abandon(keep=_checkpoint_id(folder) not in (None, resumed_from))
        raise
    if output is not None:
        output.commit()
    if trained is not None:
        trained.folder = out
        if nested:  # inside a demo or experiment: say how it went (the train command prints it itself)
            r = trained.results
            log.info("%s: depth %d, best epoch %d, val %.2f%% (loss %.4f), test %.2f%% (loss %.4f)", out.name,
                     r["depth"], r["best_epoch"], r["val_acc"], r["val_loss"], r["test_acc"], r["test_loss"])
    return trained


def _checkpoint_id(folder: Path) -> tuple[int, int] | None:
    """Which ``checkpoint.pt`` is in ``folder`` (inode, modification time; every save makes a new file), if any."""
    try:
        info = os.stat(folder / "checkpoint.pt", follow_symlinks=False)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


def _train_into(folder: Path, config: RunConfig, data, model: nn.Module, resume: bool, progress: bool,
                main: bool, source: nn.Module | None) -> TrainedRun | None:
    if main and not resume:  # a resumed run keeps its config.json until its checkpoint is restored (below)
        write_json(folder / "config.json", config.to_dict())
    steps = steps_per_epoch(len(data.train), config.train.batch_size, world_size())
    if main:
        log.info("%s: %s", folder.name.removesuffix(".partial"),
                 describe_exposure(config.train, steps, config.compose.depth))
    start = time.time()
    started = {}  # the epochs a resumed run had finished, as the loop reports them

    def note_start(event: str, info: dict) -> None:
        if event == "train_start":
            started["epoch"] = info["epoch"]
            if resume and main:  # restored: its new epoch count, which a resume after a kill then takes
                write_json(folder / "config.json", config.to_dict())

    result = train(model, data, config.train, out_dir=folder, resume=resume, progress=progress and main,
                   callbacks=[note_start])
    if not main:
        return None
    if config.train.shard and _is_sharded(model):
        torch.manual_seed(config.train.seed)
        model = build_model(config, source)  # an unsharded copy, to hold the gathered best weights
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    model = model.cpu().eval()
    val_acc, val_loss = evaluate(model, data.val)
    test_acc, test_loss = evaluate(model, data.test)
    merged = lorita.merge(model)
    counts = lorita.profile(merged, example_input(data))
    lorita.save(model, folder / "model.lorita")
    spectrum = lorita.spectrum(merged)
    write_json(folder / "spectrum.json", {"layers": {k: v.tolist() for k, v in spectrum.items()}})
    results = {"command": "train", "depth": config.compose.depth, "epochs": config.train.epochs,
               "best_epoch": result.best_epoch, "val_acc": val_acc, "test_acc": test_acc,
               "val_loss": val_loss, "test_loss": test_loss,
               "params": counts.params, "macs": counts.macs, "flops": counts.flops,
               "train_seconds": result.seconds, "seconds": time.time() - start, "steps_per_epoch": steps,
               "penalty_exposure": penalty_exposure(config.train, steps, config.compose.depth,
                                                    [row["lr"] for row in result.history]),
               "plateau": plateau_test(result.history)}
    if resume:  # train_seconds: every finished epoch's, across both parts; seconds: this part's
        results["resumed_after_epoch"] = started["epoch"]
    write_json(folder / "results.json", results)
    return TrainedRun(folder, results, model, merged.eval(), spectrum)


def example_input(data) -> torch.Tensor:
    """One all-zero input of the data's shape (batch 1), for counting params and MACs.

    Example:
        >>> from lorita.data import load_dataset
        >>> example_input(load_dataset("digits")).shape
        torch.Size([1, 1, 8, 8])
    """
    return data.example_input()
