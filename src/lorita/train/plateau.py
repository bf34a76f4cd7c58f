"""Has a run's validation accuracy stopped improving? The plateau test of the converged study.

A run has plateaued when its best validation accuracy rose by less than ``min_gain`` points
over the last fifth of its epochs: ``best over all epochs - best over the epochs before the
last fifth < min_gain``. The best-so-far is what the training loop keeps (the best epoch on
validation), so a run that over-fits late counts as plateaued, and one whose accuracy still
creeps up at the end (as under a cosine schedule's last epochs) does not. The last fifth is
``ceil(epochs / 5)`` epochs, at least one; a run of a single epoch cannot be judged.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from lorita.checks import check_number
from lorita.errors import LoritaError


def plateau_test(history: Sequence[Mapping[str, float]], *, key: str = "val_acc", min_gain: float = 0.1,
                 fraction: float = 0.2) -> dict:
    """The plateau test on a run's per-epoch ``history`` (``TrainResult.history`` or metrics.csv rows).

    Returns ``{"plateau": bool, "gain": float | None, "window_epochs": int, "min_gain", "key"}``:
    ``gain`` is how much the best ``key`` rose over the last ``window_epochs`` (for a
    ``*_loss`` key: how much the lowest loss fell). ``plateau`` is ``gain < min_gain``; with
    fewer than two epochs there is nothing to compare and it is False (``gain`` None).

    Example:
        >>> rows = [{"val_acc": a} for a in (80.0, 88.0, 90.0, 90.5, 90.55)]
        >>> plateau_test(rows)["plateau"], round(plateau_test(rows)["gain"], 2)
        (True, 0.05)
        >>> plateau_test(rows[:4])["plateau"]  # still rising by 0.5 points over its last epoch
        False
    """
    check_number("min_gain", min_gain, minimum=0)
    check_number("fraction", fraction, minimum=0, low_open=True, maximum=1)
    values = []
    for i, row in enumerate(history):
        if not isinstance(row, Mapping) or key not in row:
            raise LoritaError(f"history row {i} has no {key!r}; pass the run's per-epoch history (metrics.csv rows)")
        value = float(row[key])
        if not math.isfinite(value):
            raise LoritaError(f"history row {i}: {key} is {value}; the run diverged, it has no plateau to test")
        values.append(-value if key.endswith("_loss") else value)
    window = max(1, math.ceil(len(values) * fraction))
    out = {"plateau": False, "gain": None, "window_epochs": window, "min_gain": float(min_gain), "key": key}
    if len(values) < 2 or window >= len(values):
        return out
    gain = max(values) - max(values[: len(values) - window])
    out.update(plateau=gain < min_gain, gain=gain)
    return out
