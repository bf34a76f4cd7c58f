"""Stronger alternatives to LoRITa, as comparison-column cutters (docs/METHOD.md section 5).

A cutter (``lorita.runs.compare.Cutter``) takes a requested fraction of the original params
and returns a smaller model and what was done, or None when that size is out of reach; the
comparison then fine-tunes it if the column fine-tunes. This file makes the alternatives a
careful user would try before believing LoRITa wins:

* :func:`recalibrating`: any cutter, followed by BatchNorm re-estimation on training batches
  (``lorita.batchnorm``): a BN network cut by SVD or pruning is judged with fresh statistics.
* :func:`iterative_prune_cutter`: Torch-Pruning in several rounds, fine-tuning between
  them (the rounds' fine-tuning is part of the column's fine-tuning epochs:
  :func:`split_finetune`), with group magnitude or group Taylor importance.

The smaller dense model trained directly is ``lorita.runs.small_dense``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Iterable

from torch import nn

from lorita.batchnorm import MAX_BATCHES, recalibrate_batchnorm
from lorita.checks import check_int
from lorita.errors import LoritaError
from lorita.profile import count_params
from lorita.prune import MAX_RATIO, prune_to
from lorita.train import TrainConfig, finetune

log = logging.getLogger(__name__)

TAYLOR_BATCHES = 8  # training batches the Taylor importance takes its gradients on


def training_batches(data, batch_size: int, seed: int) -> Callable[[], Iterable]:
    """``() -> iterator`` of shuffled ``(inputs, targets)`` training batches (epoch 0 of ``seed``'s order).

    Example:
        >>> from lorita.data import load_dataset
        >>> x, y = next(training_batches(load_dataset("digits"), 32, seed=0)())
        >>> tuple(x.shape), tuple(y.shape)
        ((32, 1, 8, 8), (32,))
    """
    check_int("batch_size", batch_size)
    return lambda: data.train.batches(batch_size, shuffle=True, seed=seed, epoch=0)


def recalibrating(cutter, batches: Callable[[], Iterable], max_batches: int = MAX_BATCHES):
    """``cutter`` with the BatchNorm statistics of every model it makes re-estimated on ``batches()``.

    ``detail`` gains ``batchnorm_batches`` (how many batches were read at most) and
    ``recalibration_seconds``.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.BatchNorm1d(4))
        >>> cut = recalibrating(lambda size: (net, {}), lambda: [torch.randn(8, 4) + 3.0])
        >>> _, detail = cut(0.5)
        >>> bool(net[0].running_mean.mean() > 2.0), detail["batchnorm_batches"]
        (True, 200)
    """
    check_int("max_batches", max_batches)

    def cut(size: float):
        made = cutter(size)
        if made is None:
            return None
        small, detail = made
        tic = time.perf_counter()
        recalibrate_batchnorm(small, batches(), max_batches=max_batches)
        return small.eval(), {**detail, "batchnorm_batches": max_batches,
                              "recalibration_seconds": time.perf_counter() - tic}

    return cut


def split_finetune(finetune: TrainConfig, rounds: int) -> tuple[TrainConfig | None, TrainConfig]:
    """Share a column's fine-tuning epochs between pruning rounds: (each round's, the last one's).

    The first ``rounds - 1`` rounds get ``epochs // rounds`` epochs each (at least one: so
    ``rounds`` is at most the epochs), the last round the rest, so the column's total stays
    ``finetune.epochs``. With one round there is nothing between rounds (None).

    Example:
        >>> between, last = split_finetune(TrainConfig(epochs=5), 3)
        >>> between.epochs, last.epochs
        (1, 3)
    """
    check_int("rounds", rounds, maximum=finetune.epochs,
              meaning=f" (each round is fine-tuned at least one of the {finetune.epochs} epochs)")
    if rounds == 1:
        return None, finetune
    each = finetune.epochs // rounds
    return (dataclasses.replace(finetune, epochs=each),
            dataclasses.replace(finetune, epochs=finetune.epochs - each * (rounds - 1)))


def iterative_prune_cutter(model: nn.Module, example, *, rounds: int = 1, between: TrainConfig | None = None,
                           data=None, importance: str = "l1", taylor_batches: Callable[[], Iterable] | None = None,
                           max_ratio: float = MAX_RATIO):
    """Torch-Pruning in ``rounds`` rounds to the requested params, fine-tuning ``between`` after each but the last.

    Round ``i`` of ``r`` prunes to ``size ** (i / r)`` of ``model``'s params (equal ratios per
    round); between rounds the model is fine-tuned on ``data`` with ``between`` and keeps its
    best epoch on validation (the pruned model itself included). The last round's
    fine-tuning is the column's own (``split_finetune``). ``importance``: see
    ``lorita.prune.prune_to``; "taylor" takes its gradients on ``TAYLOR_BATCHES`` items of
    ``taylor_batches()``, drawn again every round. None where Torch-Pruning cannot reach the
    size (or cannot trace the model).

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> small, detail = iterative_prune_cutter(net, torch.zeros(1, 64))(0.5)  # doctest: +SKIP
        >>> detail["rounds"], count_params(small) <= 0.5 * count_params(net)  # doctest: +SKIP
        (1, True)
    """
    check_int("rounds", rounds)
    if rounds > 1 and (between is None or data is None):
        raise LoritaError("iterative pruning in several rounds needs between (the fine-tuning recipe of each round) "
                          "and data (to fine-tune on)")
    if importance == "taylor" and taylor_batches is None:
        raise LoritaError("importance='taylor' needs taylor_batches: () -> (inputs, targets) training batches")
    original = count_params(model)

    def cut(size: float):
        current, steps = model, []
        for i in range(1, rounds + 1):
            goal = size ** (i / rounds)
            budget = min(1.0, goal * original / count_params(current))
            batches = None if importance != "taylor" else _first(taylor_batches(), TAYLOR_BATCHES)
            try:
                current, info = prune_to(current, budget, example, metric="params", max_ratio=max_ratio,
                                         importance=importance, batches=batches)
            except LoritaError as err:
                log.info("torch-pruning cannot reach %.3f of the params (round %d of %d): %s", size, i, rounds, err)
                return None
            except Exception as err:  # Torch-Pruning could not trace or prune this model: no such column entry
                log.warning("torch-pruning failed on this model (%s: %s); its column stays empty",
                            type(err).__name__, err)
                return None
            steps.append(info["steps"])
            if i < rounds:
                current = _finetune(current, data, between)
        return current.eval(), {"rounds": rounds, "importance": importance, "steps": steps,
                                "between_epochs": 0 if between is None else between.epochs,
                                "kept": count_params(current) / original, "widths": info["widths"]}

    return cut


def _first(items: Iterable, count: int) -> list:
    out = []
    for item in items:
        if len(out) == count:
            break
        out.append(item)
    return out


def _finetune(model: nn.Module, data, recipe: TrainConfig) -> nn.Module:
    """Fine-tune ``model`` in place (``lorita.train.finetune``: the best epoch on validation, or the model as it was
    if none beat it)."""
    finetune(model, data, recipe)
    return model.cpu().eval()
