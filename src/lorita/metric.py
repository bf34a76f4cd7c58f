"""What models are judged by on held-out data: accuracy (percent, higher is better) or loss (lower is better).

Experiments choose cuts on validation data by one ``Metric`` and record every figure under its
own keys (``val_acc`` / ``test_acc``, or ``val_loss`` / ``test_loss``), as measured: a loss is
stored as a loss, and the metric says which way is better.

Example:
    >>> LOSS.within(2.1, target=2.2), ACCURACY.within(88.0, target=89.0)
    (True, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from lorita.checks import check_choice
from lorita.train import evaluate

__all__ = ["ACCURACY", "LOSS", "METRICS", "Metric", "metric_named"]

# the drop each metric allows by default: 1 point of accuracy (docs/METHOD.md section 5), and for a language
# model's loss ln 1.02 nats, the plain model's perplexity + 2% (docs/METHOD.md section 8)
ACCURACY_MAX_DROP, LOSS_MAX_DROP = 1.0, math.log(1.02)


@dataclass(frozen=True)
class Metric:
    """One way to judge a model: its keys in results, how it is shown, and which way is better."""

    val: str  # the key of its validation figure ("val_acc" or "val_loss"), also its name in configs
    test: str
    label: str
    higher_is_better: bool
    digits: int
    default_drop: float  # the drop allowed when none is given (points of accuracy, or nats of loss)

    @property
    def target(self) -> str:
        """The key of a validation target: ``"target_val_acc"`` or ``"target_val_loss"``."""
        return f"target_{self.val}"

    def show(self, value) -> str:
        """``value`` with this metric's digits, ``-`` for None."""
        return "-" if value is None else f"{value:.{self.digits}f}"

    def better(self, a: float, b: float) -> float:
        """How much ``a`` is better than ``b`` (positive: better)."""
        return a - b if self.higher_is_better else b - a

    def score(self, value: float) -> float:
        """``value`` oriented so that higher is better (a training run's ``best_score``)."""
        return value if self.higher_is_better else -value

    def unscore(self, score: float) -> float:
        """The figure behind a ``score``."""
        return score if self.higher_is_better else -score

    def within(self, value: float | None, target: float) -> bool:
        """Whether ``value`` reaches ``target`` (NaN and None never do)."""
        return value is not None and self.score(value) >= self.score(target)

    def target_for(self, value: float, max_drop: float) -> float:
        """The target ``max_drop`` worse than ``value`` (points of accuracy, or nats of loss)."""
        return value - max_drop if self.higher_is_better else value + max_drop

    def measure(self, model: nn.Module, split) -> float:
        """This metric of ``model`` on ``split`` (``lorita.train.evaluate``)."""
        accuracy, loss = evaluate(model, split)
        return accuracy if self.higher_is_better else loss

    @classmethod
    def of(cls, results: dict) -> "Metric":
        """The metric an experiment's results were judged by."""
        return metric_named(results.get("metric", "val_acc"))


ACCURACY = Metric("val_acc", "test_acc", "accuracy (%)", True, 2, ACCURACY_MAX_DROP)
LOSS = Metric("val_loss", "test_loss", "loss (nats/char)", False, 4, LOSS_MAX_DROP)
METRICS = {m.val: m for m in (ACCURACY, LOSS)}


def metric_named(name: str) -> Metric:
    """``"val_acc"`` -> ``ACCURACY``, ``"val_loss"`` -> ``LOSS``.

    Example:
        >>> metric_named("val_loss").test
        'test_loss'
    """
    return METRICS[check_choice("metric", name, tuple(METRICS))]
