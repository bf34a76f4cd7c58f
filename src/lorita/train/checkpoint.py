"""Training checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts
(no pickled classes), so ``torch.load(path, weights_only=True)`` reads it.
Keys written by :func:`lorita.train.train`:

- ``format`` ("lorita.train.checkpoint") and ``version`` (1)
- ``epoch``: number of finished epochs
- ``config``: ``TrainConfig.to_dict()``
- ``model``: the model's ``state_dict()`` after ``epoch`` epochs
- ``optimizer``: the optimizer's ``state_dict()``
- ``schedule``: the learning-rate schedule's state (three numbers)
- ``best_epoch`` (1-based, 0 before any), ``best_val_acc``
- ``best_model``: state_dict of the best-validation epoch, or None when that
  epoch is ``epoch`` itself (then it equals ``model``)
- ``history``: list of the per-epoch metric dicts (the rows of metrics.csv)
- ``world_size``: processes that trained it (information only)

No RNG state is stored: the loop reseeds torch's RNG at the start of every
epoch from (seed, epoch, rank), and the data order and augmentation are
seeded by the data split from (seed, epoch), so a resumed run replays exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lorita.atomic import atomic_path
from lorita.errors import LoritaError

CHECKPOINT_FORMAT = "lorita.train.checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (``lorita.atomic``): a crash or error part-way
    leaves the previous file untouched and no temp file behind.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt"
        >>> save_checkpoint({"epoch": 1, "w": torch.zeros(2)}, p)
        >>> load_checkpoint(p)["epoch"]
        1
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        try:
            torch.save(state, handle)
        except RuntimeError as err:  # torch's zip writer turns a full disk into its own error: give the OSError
            if isinstance(err.__context__, OSError):
                raise err.__context__ from None
            raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.pt"
        >>> save_checkpoint({"epoch": 2}, p)
        >>> load_checkpoint(p)
        {'epoch': 2}
    """
    path = Path(path)
    if not path.is_file():
        raise LoritaError(f"no checkpoint at {path}; train without resume first, or point to the right folder")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file, or pickled classes weights_only refuses
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LoritaError(f"cannot read checkpoint {path}: {reason}. The file is damaged (an empty or truncated copy?) "
                          "or not a lorita training checkpoint; start the run again without --resume") from None
