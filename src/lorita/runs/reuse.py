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
import shutil
from pathlib import Path

import torch

from lorita.compose import merge
from lorita.runs.config import RunConfig
from lorita.runs.folder import foreign_entries, is_marked, read_json
from lorita.runs.train import TrainedRun
from lorita.serialization import load
from lorita.train.loop import CHECKPOINT_NAME

log = logging.getLogger(__name__)

RUN_FILES = ("config.json", "results.json", "model.lorita", "spectrum.json")  # what a reused run must hold


def _comparable(config: dict) -> dict:
    """``config`` as JSON reads it back (tuples as lists), without the version that wrote it."""
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k != "lorita_version"}


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
    return _comparable(read_json(found / "config.json", "lorita train")) == _comparable(config.to_dict())


def stopped(found: Path, config: RunConfig) -> bool:
    """Whether ``found`` is a training of exactly ``config`` stopped part-way: a lorita run folder (as in
    :func:`reusable`) with its ``checkpoint.pt`` (a plain file) and no ``results.json``.

    Example:
        >>> stopped(Path("/nonexistent"), None)
        False
    """
    checkpoint = found / CHECKPOINT_NAME
    if not checkpoint.is_file() or checkpoint.is_symlink() or (found / "results.json").exists():
        return False
    return _same_run_folder(found, config)


def _candidates(earlier: Path, name: str) -> list[Path]:
    """``earlier/name`` first, then the other folders directly in ``earlier`` (sorted): a run of the same config
    can hold another name there (the base plain model ``depth1`` is a later setting's ``depth1-target``)."""
    others = sorted(p for p in earlier.iterdir() if p.name != name) if earlier.is_dir() else []
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
    shutil.copytree(found, out, symlinks=True)  # checked: no links, only lorita's files
    model = load(out / "model.lorita").cpu().eval()
    spectrum = {k: torch.tensor(v) for k, v in read_json(out / "spectrum.json", "lorita train")["layers"].items()}
    log.info("%s: reused from %s (the same config; its results and seconds are that run's)", out.name, found)
    return TrainedRun(out, read_json(out / "results.json", "lorita train"), model, merge(model).eval(), spectrum)


def copy_stopped_run(earlier: str | Path, out: Path, config: RunConfig) -> bool:
    """Copy to ``out`` the training of exactly ``config`` stopped part-way (:func:`stopped`) under ``out``'s name in
    ``earlier``, for the caller to continue with ``resume``; False (nothing written) when there is none.

    Example:
        >>> import tempfile
        >>> copy_stopped_run(tempfile.mkdtemp(), Path(tempfile.mkdtemp()) / "depth2", None)
        False
    """
    found = Path(earlier) / out.name
    if not stopped(found, config):
        return False
    shutil.copytree(found, out, symlinks=True)  # checked: no links, only lorita's files
    log.info("%s: continued from %s, stopped part-way (the same config; its checkpoint's epochs are kept)",
             out.name, found)
    return True
