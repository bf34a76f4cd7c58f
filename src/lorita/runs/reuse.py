"""Take a finished training run from an earlier experiment instead of training it again, or continue one that was
stopped part-way.

A grid setting that changes one side of a comparison (the LoRITa recipe, say) would otherwise
retrain the other side exactly as before: the same model, data, seed and recipe, so the same
run (training is seeded). :func:`reused_run` finds such a run in an earlier experiment's
folder, checks that its ``config.json`` is exactly the one this experiment would write (every
field: model, data and split, composition, recipe), and copies the folder into the new
experiment, so the new experiment's folder holds everything it reports. The run's results,
its seconds included, are the original's: the compute it reports is what that training cost.

A training killed part-way (its folder holds ``checkpoint.pt`` from its last finished epoch, no results) under the
same name in the earlier folder (a killed experiment's own staging folder, as ``experiments/converged_run.py``
keeps it) is copied the same way by :func:`copy_stopped_run`, after the same checks, for the caller to continue
with ``resume``: training replays exactly (``lorita.train.train``), and its seconds add up across the resume.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from lorita.compose import merge
from lorita.data.datasets import reads_same_folder, recorded_relative
from lorita.errors import LoritaError
from lorita.runs.config import RunConfig
from lorita.runs.folder import copy_whole, foreign_entries, is_marked, read_json
from lorita.runs.train import TrainedRun
from lorita.serialization import load
from lorita.train.loop import CHECKPOINT_NAME, METRICS_NAME, check_resume

log = logging.getLogger(__name__)

RUN_FILES = ("config.json", "results.json", "model.lorita", "spectrum.json")  # what a reused run must hold
STOPPED_RUN_FILES = ("config.json", CHECKPOINT_NAME, METRICS_NAME)  # what a continued one is copied with


# how a composed layer's factors start and multiply: nothing at depth 1, where ``lorita.compose`` replaces no layer
FACTOR_FIELDS = ("init", "init_scale", "factor_side", "mode")


def comparable_config(config: dict) -> dict:
    """``config`` as JSON reads it back (tuples as lists), without the version that wrote it, and at depth 1
    without ``FACTOR_FIELDS``: a plain training is the same run whatever they say (a grid setting that changes
    LoRITa's init scale takes the plain trainings of the base setting).

    Example:
        >>> comparable_config({"depth": 2, "sizes": (0.1,), "lorita_version": "0.1.0"})
        {'depth': 2, 'sizes': [0.1]}
        >>> comparable_config({"compose": {"depth": 1, "init": "default", "init_scale": 0.5, "exclude": None}})
        {'compose': {'depth': 1, 'exclude': None}}
    """
    out = {k: v for k, v in json.loads(json.dumps(config)).items() if k != "lorita_version"}
    compose = out.get("compose")
    if isinstance(compose, dict) and compose.get("depth") == 1:
        out["compose"] = {k: v for k, v in compose.items() if k not in FACTOR_FIELDS}
    return out


def reusable(found: Path, config: RunConfig) -> bool:
    """Whether ``found`` is a finished training run of exactly ``config``: a lorita run folder (not a link, nothing
    in it lorita did not write) holding the run's files, whose ``config.json`` equals ``config``'s.

    Example:
        >>> reusable(Path("/nonexistent"), None)
        False
    """
    if found.is_symlink() or not found.is_dir() or not all((found / name).is_file() for name in RUN_FILES):
        return False
    return _same_run_folder(found, config)


def _same_run_folder(found: Path, config: RunConfig) -> bool:
    """A lorita run folder (not a link, nothing in it lorita did not write) whose ``config.json`` is ``config``'s."""
    if found.is_symlink() or not found.is_dir() or not is_marked(found) or foreign_entries(found):
        return False
    return same_config(read_json(found / "config.json", "lorita train"), config)


def same_config(written: dict, config: RunConfig) -> bool:
    """Whether ``written`` (a training's config.json) is ``config``'s, its data folder compared by the files the
    readers find through it (``lorita.data.datasets.reads_same_folder``). A relative one, as trainings recorded it
    before lorita kept the folder whole, never matches: which folder it was read from is not known, and taking a
    training of other data would be worse than training again.

    Example:
        >>> from lorita.runs import ComposeSpec, DataSpec, ModelSpec
        >>> from lorita import TrainConfig
        >>> config = RunConfig(ModelSpec("fcn"), DataSpec("digits"), ComposeSpec(depth=2), TrainConfig())
        >>> same_config(config.to_dict(), config), same_config({**config.to_dict(), "source": "x"}, config)
        (True, False)
    """
    ours, theirs = comparable_config(config.to_dict()), comparable_config(written)
    data = theirs.get("dataset")
    if not isinstance(data, dict) or "data_dir" not in data or not isinstance(data["data_dir"], (str, type(None))):
        return theirs == ours
    folder = data["data_dir"]
    if recorded_relative(folder):
        if folder != ours["dataset"]["data_dir"] and theirs == {**ours, "dataset": {**ours["dataset"],
                                                                                    "data_dir": folder}}:
            log.info("not reused: a training of the same config whose data folder was recorded as a relative path "
                     "(%r), so which files it read is not known; it trains again", folder)
        return theirs == ours
    theirs["dataset"] = {**data, "data_dir": ours["dataset"]["data_dir"]}
    return theirs == ours and reads_same_folder(config.dataset.name, folder, config.dataset.data_dir)


def stopped_at(found: Path, config: RunConfig) -> int | None:
    """The epochs a training of exactly ``config`` stopped part-way in ``found`` has finished, or None where
    ``found`` is no such training: a lorita run folder (as in :func:`reusable`) with no ``results.json``, whose
    ``checkpoint.pt`` (a plain file) reads as a checkpoint of exactly this recipe (``epochs`` and the world size
    included: ``lorita.train.loop.check_resume``). A checkpoint that does not read is logged and not taken; one
    that reads but whose weights do not fit the model fails when the training continues, with a message.

    Example:
        >>> stopped_at(Path("/nonexistent"), None) is None
        True
    """
    checkpoint = found / CHECKPOINT_NAME
    if not checkpoint.is_file() or checkpoint.is_symlink() or (found / "results.json").exists():
        return None
    if not _same_run_folder(found, config):
        return None
    try:
        saved = check_resume(checkpoint, config.train)
    except LoritaError as error:
        log.warning("%s: not continued (%s); it trains from the start", found.name, error)
        return None
    world = saved.get("world_size", 1)
    if saved["config"] != config.train.to_dict() or type(world) is not int or world != 1:
        log.warning("%s: not continued (its checkpoint's recipe or world size is not this run's); it trains from "
                    "the start", found.name)
        return None
    return int(saved["epoch"])


def _copy_in(found: Path, out: Path, names: tuple[str, ...] | None = None) -> None:
    """Copy the checked training folder ``found`` (only ``names``, when given) to ``out`` whole or not at all
    (``lorita.runs.folder.copy_whole``); a dot name is never taken as a training (``_candidates``)."""
    try:
        copy_whole(found, out, names=names)
    except OSError as error:
        raise LoritaError(f"cannot copy the training {found} to {out}: {error}") from None


def _candidates(earlier: Path, name: str) -> list[Path]:
    """``earlier/name`` first, then the other folders directly in ``earlier`` (sorted): a run of the same config
    can hold another name there (the base plain model ``depth1`` is a later setting's ``depth1-target``)."""
    others = sorted(p for p in earlier.iterdir() if p.name != name and not p.name.startswith(".")) \
        if earlier.is_dir() else []  # a dot name: a copy a kill cut short (``_copy_in``), never taken
    return [earlier / name] + others


def reused_run(earlier: str | Path, out: Path, config: RunConfig) -> TrainedRun | None:
    """A finished run of exactly ``config`` (:func:`reusable`) in ``earlier``, looked for under ``out``'s name
    first, then under any other name there, copied to ``out`` and loaded; None (nothing written) when there is none.

    Example:
        >>> import tempfile
        >>> reused_run(tempfile.mkdtemp(), Path(tempfile.mkdtemp()) / "depth1", None) is None
        True
    """
    candidates = _candidates(Path(earlier), out.name)
    found = next((p for p in candidates if reusable(p, config)), None)
    if found is None:
        if candidates[0].exists():
            log.info("%s: not reused, %s is not a finished run of the same config", out.name, candidates[0])
        return None
    _copy_in(found, out)
    model = load(out / "model.lorita").cpu().eval()
    spectrum = {k: torch.tensor(v) for k, v in read_json(out / "spectrum.json", "lorita train")["layers"].items()}
    log.info("%s: reused from %s (the same config; its results and seconds are that run's)", out.name, found)
    return TrainedRun(out, read_json(out / "results.json", "lorita train"), model, merge(model).eval(), spectrum)


def copy_stopped_run(earlier: str | Path, out: Path, config: RunConfig) -> int | None:
    """Copy to ``out`` the training of exactly ``config`` stopped part-way (:func:`stopped_at`) under ``out``'s name
    in ``earlier``, for the caller to continue with ``resume``: its ``config.json``, ``checkpoint.pt`` and
    ``metrics.csv`` only (no temporary file a kill left). The epochs it had finished; None (nothing written) when
    there is none.

    Example:
        >>> import tempfile
        >>> copy_stopped_run(tempfile.mkdtemp(), Path(tempfile.mkdtemp()) / "depth2", None) is None
        True
    """
    found = Path(earlier) / out.name
    epochs = stopped_at(found, config)
    if epochs is None:
        return None
    _copy_in(found, out, STOPPED_RUN_FILES)
    if not _same_run_folder(out, config):  # no link, nothing foreign, the same config.json
        raise LoritaError(f"{found} changed while it was copied; run again")  # the checkpoint: checked on resume
    log.info("%s: continued from %s after epoch %d (the same config and recipe)", out.name, found, epochs)
    return epochs
