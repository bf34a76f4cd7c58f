"""Per-epoch learning-rate schedule: warm-up, then cosine, plateau or constant.

The schedule is a small pure object rather than a ``torch.optim.lr_scheduler``
so that its whole state is three plain numbers (saved in the checkpoint and
loaded with ``weights_only=True``) and the learning rate of any epoch is a
function of (config, epoch, plateau state) only: resuming cannot drift.
"""

from __future__ import annotations

import math
from typing import Any

from lorita.train.config import TrainConfig

# Same rule as torch.optim.lr_scheduler.ReduceLROnPlateau(mode="min",
# threshold=1e-4, threshold_mode="rel", cooldown=0): a loss counts as better
# only when it beats the best by 0.01 %.
_PLATEAU_THRESHOLD = 1e-4


class EpochSchedule:
    """Learning rate for each epoch (0-based) of a :class:`TrainConfig`.

    Warm-up: epoch ``e < warmup_epochs`` runs at ``lr * (e + 1) / warmup_epochs``.
    After it, "cosine" follows ``lr * (1 + cos(pi * t)) / 2`` with
    ``t = (e - warmup) / (epochs - warmup)`` (PyTorch's CosineAnnealingLR
    stepped per epoch), "constant" stays at ``lr`` and "plateau" multiplies by
    ``plateau_factor`` once the validation loss has not improved for more than
    ``plateau_patience`` epochs (ReduceLROnPlateau's rule).

    Example:
        >>> s = EpochSchedule(TrainConfig(epochs=4, lr=1.0, schedule="cosine"))
        >>> [round(s.lr(e), 3) for e in range(4)]
        [1.0, 0.854, 0.5, 0.146]
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.scale = 1.0  # product of plateau reductions so far
        self.best = math.inf  # best validation loss seen by the plateau rule
        self.bad_epochs = 0

    def lr(self, epoch: int) -> float:
        """Learning rate to use during ``epoch`` (0-based).

        Example:
            >>> EpochSchedule(TrainConfig(epochs=3, lr=0.3, warmup_epochs=2, schedule="constant")).lr(0)
            0.15
        """
        cfg = self.config
        if epoch < cfg.warmup_epochs:
            return cfg.lr * (epoch + 1) / cfg.warmup_epochs
        if cfg.schedule == "cosine":
            t = (epoch - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs)
            return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
        return cfg.lr * self.scale

    def step(self, epoch: int, val_loss: float) -> None:
        """Record the validation loss of finished ``epoch``; only "plateau" uses it.

        Example:
            >>> s = EpochSchedule(TrainConfig(epochs=9, lr=1.0, schedule="plateau", plateau_patience=1))
            >>> for e, loss in enumerate([1.0, 1.0, 1.0]):
            ...     s.step(e, loss)
            >>> s.lr(3)
            0.1
        """
        cfg = self.config
        if cfg.schedule != "plateau" or epoch < cfg.warmup_epochs:
            return
        if val_loss < self.best * (1.0 - _PLATEAU_THRESHOLD):
            self.best = float(val_loss)
            self.bad_epochs = 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > cfg.plateau_patience:
            self.scale *= cfg.plateau_factor
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain-number state for the checkpoint.

        Example:
            >>> EpochSchedule(TrainConfig()).state_dict()["scale"]
            1.0
        """
        return {"scale": float(self.scale), "best": float(self.best), "bad_epochs": int(self.bad_epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Example:
            >>> s = EpochSchedule(TrainConfig())
            >>> s.load_state_dict({"scale": 0.1, "best": 0.5, "bad_epochs": 2})
            >>> s.scale
            0.1
        """
        self.scale = float(state["scale"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
