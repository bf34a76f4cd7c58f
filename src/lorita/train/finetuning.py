"""Fine-tuning after a cut: train, then keep the best validation epoch, or the model as it was when no epoch beats it.

A cut that lost nothing (a LoRITa model cut above its effective rank) can come out of fine-tuning worse than it went
in: the epochs start again from a learning rate its converged weights no longer need. What is kept is chosen on
validation only, by the recipe's ``select_by``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import nn

from lorita.errors import LoritaError
from lorita.train.config import TrainConfig
from lorita.train.evaluate import evaluate
from lorita.train.loop import TrainResult, train
from lorita.train.user_data import is_pair, user_splits


class FineTuned(NamedTuple):
    """What :func:`finetune` kept: ``epoch`` (1-based; 0: the model as it was), its validation ``score`` (val acc,
    or minus val loss: higher is better), and the training's ``result``."""

    epoch: int
    score: float
    result: TrainResult


def finetune(model: nn.Module, data: Any, recipe: TrainConfig, *, start_score: float | None = None,
             progress: bool = False) -> FineTuned:
    """Fine-tune ``model`` in place with ``recipe``; keep the epoch that scored best on ``data.val``
    (``recipe.select_by``), or the weights it started with when no epoch beat them (a tie keeps them too).

    ``data`` as :func:`lorita.train.train` takes it. ``start_score``: the model's validation score as it is, in the
    recipe's ``select_by`` (val acc, or minus val loss), where the caller has measured it; else it is evaluated
    here. The model is left on the recipe's device, in training mode: the caller moves it and calls ``eval()``.
    Where training stops on an error (it diverged), the model gets its starting weights back before the error is
    raised.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> from lorita.data import Split
        >>> y = torch.arange(32) % 2
        >>> x = (y * 200 + 20).to(torch.uint8).view(32, 1, 1, 1)
        >>> data = SimpleNamespace(train=Split(x, y, [0.5], [0.4]), val=Split(x, y, [0.5], [0.4]))
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1, 2))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.copy_(torch.tensor([[-1.0], [1.0]])), net[1].bias.zero_()
        >>> finetune(net, data, TrainConfig(epochs=2, batch_size=8, device="cpu")).epoch  # 100% already: kept
        0
        >>> net[1].weight.flatten().tolist()
        [-1.0, 1.0]
    """
    if start_score is None:
        val = user_splits(data, recipe)[1] if is_pair(data) else data.val
        acc, loss = evaluate(model, val, recipe.eval_batch_size)
        start_score = acc if recipe.select_by == "val_acc" else -loss
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        result = train(model, data, recipe, progress=progress)
    except (LoritaError, KeyboardInterrupt):
        model.load_state_dict(before)
        raise
    if result.best_state is not None and result.best_score > start_score:
        model.load_state_dict(result.best_state)
        return FineTuned(result.best_epoch, result.best_score, result)
    model.load_state_dict(before)
    return FineTuned(0, start_score, result)
