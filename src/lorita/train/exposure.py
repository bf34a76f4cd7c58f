"""Penalty exposure: how much low-rank pressure a training recipe applies (docs/METHOD.md section 5).

A direction of a weight matrix that the data does not use is shrunk by weight decay alone:
with SGD (coupled decay, momentum ``m``) each step multiplies it by about
``1 - lr_t * weight_decay / (1 - m)`` once the momentum buffer is in its steady state, so over a
run it shrinks by ``exp(-weight_decay * sum_t lr_t / (1 - m))``. Composed through ``N`` factors
the decay acts on each factor, and the product shrinks ``N`` times as fast. The *exposure* is
that log-factor,

    N * weight_decay * sum_t lr_t / (1 - momentum)      (SGD)
    N * weight_decay * sum_t lr_t                       (AdamW: decoupled decay)

with the sum over every optimizer step of the run. The loop sets the learning rate once per
epoch (``lorita.train.schedule.EpochSchedule``), so ``sum_t lr_t`` is the steps per epoch
times the sum of the per-epoch rates. The authors' CIFAR runs reach about 10 to 17; the short
CPU recipes measured before 0.2 to 1.3.

A "plateau" schedule lowers the rate when the validation loss stalls, which is known only
while training: before a run, :func:`penalty_exposure` gives the value with no reduction (an
upper bound); after it, pass the learning rates the run used (``metrics.csv``'s ``lr``).
"""

from __future__ import annotations

from typing import Sequence

from lorita.checks import check_int
from lorita.errors import LoritaError
from lorita.train.config import TrainConfig
from lorita.train.schedule import EpochSchedule


def steps_per_epoch(examples: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps in one epoch over ``examples`` training examples, as the training loop takes them.

    The loop drops a last global batch too small to give every process 2 samples
    (``lorita.train.loop``), so that batch is not counted.

    Example:
        >>> steps_per_epoch(54000, 128), steps_per_epoch(129, 128), steps_per_epoch(130, 128)
        (422, 1, 2)
    """
    check_int("examples", examples)
    check_int("batch_size", batch_size)
    check_int("world_size", world_size)
    remainder = examples % batch_size
    return examples // batch_size + int(remainder > 0) - int(drop_last(examples, batch_size, world_size))


def drop_last(examples: int, batch_size: int, world_size: int = 1) -> bool:
    """Whether the training loop drops the last global batch (fewer than 2 samples per process).

    A 1-sample batch breaks BatchNorm and an empty chunk would idle a process.

    Example:
        >>> drop_last(129, 128), drop_last(130, 128), drop_last(128, 128)
        (True, False, False)
    """
    remainder = examples % batch_size
    return examples > batch_size and 0 < remainder < 2 * world_size


def epoch_learning_rates(config: TrainConfig) -> list[float]:
    """The learning rate of every epoch of ``config``, as the schedule sets them (no plateau reduction).

    Example:
        >>> epoch_learning_rates(TrainConfig(epochs=4, lr=1.0, warmup_epochs=1, schedule="constant"))
        [1.0, 1.0, 1.0, 1.0]
    """
    schedule = EpochSchedule(config)
    return [schedule.lr(epoch) for epoch in range(config.epochs)]


def penalty_exposure(config: TrainConfig, steps: int, depth: int,
                     learning_rates: Sequence[float] | None = None) -> float:
    """``depth * weight_decay * sum_t lr_t / (1 - momentum)`` for SGD, without the divisor for AdamW.

    ``steps``: optimizer steps per epoch (:func:`steps_per_epoch`); ``depth``: factors per
    composed layer (1: plain training); ``learning_rates``: the per-epoch rates a finished run
    used (default: the schedule's, without plateau reductions).

    Example:
        >>> cfg = TrainConfig(epochs=10, lr=0.05, weight_decay=1e-3, momentum=0.9, schedule="constant")
        >>> round(penalty_exposure(cfg, steps=100, depth=2), 6)  # 2 * 1e-3 * (100 * 10 * 0.05) / 0.1
        1.0
    """
    if not isinstance(config, TrainConfig):
        raise LoritaError(f"penalty_exposure needs a TrainConfig, got {type(config).__name__}")
    check_int("steps", steps)
    check_int("depth", depth)
    rates = epoch_learning_rates(config) if learning_rates is None else [float(r) for r in learning_rates]
    if any(not r >= 0 for r in rates):  # also refuses NaN
        raise LoritaError(f"learning rates must be numbers >= 0, got {rates}")
    total = steps * sum(rates)
    if config.optimizer == "sgd":
        return depth * config.weight_decay * total / (1.0 - config.momentum)
    return depth * config.weight_decay * total


def describe_exposure(config: TrainConfig, steps: int, depth: int) -> str:
    """A one-line statement of a recipe's exposure for the log, saying when it is an upper bound.

    Example:
        >>> describe_exposure(TrainConfig(epochs=10, lr=0.05, weight_decay=1e-3, schedule="constant"), 100, 2)
        'penalty exposure 1.00 (depth 2 x weight decay 0.001 x sum of lr 50 / (1 - momentum 0.9); 10 epochs of 100 steps)'
    """
    value = penalty_exposure(config, steps, depth)
    total = steps * sum(epoch_learning_rates(config))
    divisor = f" / (1 - momentum {config.momentum:g})" if config.optimizer == "sgd" else " (AdamW, decoupled)"
    bound = "; at most: plateau reductions are not known before training" if config.schedule == "plateau" else ""
    return (f"penalty exposure {value:.2f} (depth {depth} x weight decay {config.weight_decay:g} x sum of lr "
            f"{total:.4g}{divisor}; {config.epochs} epochs of {steps} steps{bound})")
