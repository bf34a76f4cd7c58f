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

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorita.atomic import atomic_path
from lorita.checks import is_int, is_number, is_real
from lorita.errors import LoritaError

CHECKPOINT_FORMAT = "lorita.train.checkpoint"
CHECKPOINT_VERSION = 1
# the per-epoch metrics: one history row each, the columns of metrics.csv
METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")
_TYPES = {"epoch": int, "config": dict, "model": dict, "optimizer": dict, "schedule": dict,
          "best_epoch": int, "best_val_acc": float, "best_model": (dict, type(None)), "history": list}


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


# What to do when a checkpoint cannot be continued (a killed run's folder would block a fresh start).
START_OVER = "start the run again without --resume (a killed run's folder, if one is left, stays until you remove it)"


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
        reason = _unreadable(err)
        raise LoritaError(f"cannot read checkpoint {path}: {reason}. The file is damaged (an empty or truncated copy?) "
                          f"or not a lorita training checkpoint; {START_OVER}") from None


def _unreadable(err: Exception) -> str:
    """Why torch could not read a checkpoint, in words: a pickled Python object (a class weights_only refuses) is
    said to be one; torch's advice to load it unsafely is never passed on.

    Example:
        >>> _unreadable(KeyError("101"))
        "torch cannot read it (KeyError: '101')"
        >>> _unreadable(RuntimeError("WeightsUnpickler error: Unsupported global: GLOBAL os.system"))
        'it holds pickled Python objects, which lorita never loads (they could run code)'
    """
    text = str(err)
    if "Unsupported global" in text:
        return "it holds pickled Python objects, which lorita never loads (they could run code)"
    if "weights_only" in text:
        after = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        detail = next((line.strip() for line in after.splitlines() if line.strip()), "")
        return "torch's weights-only reader refused it" + (f" ({detail[:200]})" if detail else "")
    line = text.strip().splitlines()[0] if text.strip() else ""
    return f"torch cannot read it ({type(err).__name__}{': ' + line[:200] if line else ''})"


def _damaged(path: Path, what: str) -> LoritaError:
    return LoritaError(f"{path} is damaged: {what}; {START_OVER}")


def check_contents(ckpt: dict, path: str | os.PathLike) -> None:
    """Every entry the loop reads is there, of the right type and within its range, before anything is
    restored: history rows with exactly the metric columns and finite numbers, a schedule with a positive
    finite scale, a best epoch among the finished ones. Nothing from the file reaches metrics.csv or
    results.json unchecked (numbers only: no text that a spreadsheet would run as a formula).

    Example:
        >>> check_contents({"epoch": 0}, "x.partial/checkpoint.pt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: x.partial/checkpoint.pt is damaged: it has no 'config' entry; start the run again ...
    """
    path = Path(path)
    for key, kind in _TYPES.items():
        value = ckpt.get(key, KeyError)
        if value is KeyError:
            raise _damaged(path, f"it has no {key!r} entry")
        if kind is float and is_int(value):
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _damaged(path, f"{key!r} is a {type(value).__name__}")
    epoch, history = ckpt["epoch"], ckpt["history"]
    if epoch < 0 or len(history) != epoch:
        raise _damaged(path, "its history does not match its epoch count")
    for i, row in enumerate(history):
        if not isinstance(row, dict) or set(row) != set(METRIC_COLUMNS):
            got = sorted(map(str, row)) if isinstance(row, dict) else type(row).__name__
            raise _damaged(path, f"history row {i + 1} must have exactly the columns {list(METRIC_COLUMNS)}, "
                                 f"got {got}")
        bad = [k for k in METRIC_COLUMNS if not is_number(row[k])]
        if bad:
            raise _damaged(path, f"history row {i + 1} holds {bad[0]}={row[bad[0]]!r}, not a finite number")
        if row["epoch"] != i + 1 or not is_int(row["epoch"]) or row["seconds"] < 0 or row["lr"] <= 0:
            raise _damaged(path, f"history row {i + 1} has epoch {row['epoch']!r}, lr {row['lr']!r}, "
                                 f"seconds {row['seconds']!r}")
    best = ckpt["best_epoch"]
    if not (1 if epoch else 0) <= best <= epoch:
        raise _damaged(path, f"best_epoch {best} is not one of its {epoch} finished epochs")
    for key in ("best_val_acc", "best_val_loss", "best_score"):
        value = ckpt.get(key, 0.0)
        if not is_real(value) or math.isnan(value) or (epoch and not math.isfinite(value)):
            raise _damaged(path, f"{key} must be a number, got {value!r}")
    _check_schedule(ckpt["schedule"], path)


def _check_schedule(state: dict, path: Path) -> None:
    scale, best, bad = state.get("scale"), state.get("best"), state.get("bad_epochs")
    if not is_number(scale) or not 0 < scale <= 1:
        raise _damaged(path, f"its schedule scale must be a number in (0, 1] (the product of plateau reductions), "
                             f"got {scale!r}")
    if not is_real(best) or math.isnan(best) or best == -math.inf:
        raise _damaged(path, f"its schedule's best validation loss must be a number, got {best!r}")
    if not is_int(bad) or bad < 0:
        raise _damaged(path, f"its schedule's bad_epochs must be an integer >= 0, got {bad!r}")


def check_fits(ckpt: dict, path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The checkpoint's best model and optimizer state have the shapes of ``model``'s tensors (their
    loading code would only fail mid-epoch or at the end), and hold finite values.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        >>> check_fits({"best_model": None, "optimizer": opt.state_dict()}, "c.pt", net, opt)
    """
    path = Path(path)
    state = model.state_dict()
    best = ckpt["best_model"]
    if best is not None:
        wrong = sorted(set(best) ^ set(state)) or sorted(
            k for k in best if not isinstance(best[k], torch.Tensor) or best[k].shape != state[k].shape)
        if wrong:
            raise _damaged(path, f"its best model does not fit the model ({', '.join(map(str, wrong[:5]))})")
    saved = ckpt["optimizer"]
    groups, per_param = saved.get("param_groups"), saved.get("state")
    if not saved:
        return  # a sharded run stores no optimizer state
    if not isinstance(groups, list) or not isinstance(per_param, dict) or \
            not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise _damaged(path, "its optimizer state is not one torch writes")
    ids = [i for g in groups for i in g["params"]]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if len(ids) != len(params) or set(per_param) - set(ids):
        raise _damaged(path, f"its optimizer state covers {len(ids)} parameters, the model has {len(params)}")
    for i, param in zip(ids, params):
        for key, value in per_param.get(i, {}).items():
            if not isinstance(value, torch.Tensor):
                raise _damaged(path, f"optimizer state {key!r} of parameter {i} is a {type(value).__name__}")
            if value.dim() and value.shape != param.shape:
                raise _damaged(path, f"optimizer state {key!r} of parameter {i} has shape {tuple(value.shape)}, the "
                                     f"parameter {tuple(param.shape)}")
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise _damaged(path, f"optimizer state {key!r} of parameter {i} holds NaN or Inf")
