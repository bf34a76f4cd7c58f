"""Short fine-tuning of a language model on text, with lorita's training loop: recovery after a cut.

``train_lm`` runs ``lorita.train.train`` on a causal LM (a transformers model or anything whose
output has ``.logits``): random windows of a token stream for training (``steps`` batches,
shared out over ``epochs`` for the schedule and the choice of the best epoch), non-overlapping
windows of a validation stream to choose it on (``select_by="val_loss"``). Only the parameters
the caller leaves trainable are trained; the best epoch's weights are loaded at the end.

``recover`` is the recovery after a low-rank cut, in one of two forms (``RecoveryRecipe.mode``):

* ``"full"``: every factor of every thin pair (``LowRankLinear``) is trained; embeddings,
  norms and anything left dense are frozen.
* ``"lora"``: the factors stay frozen and each gets a trainable LoRA delta
  (``W + P Q * alpha / k``, ``torch.nn.utils.parametrize``), merged into it at the end, so the
  ranks and the deployed shape do not change.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from lorita.checks import check_choice, check_int, check_number
from lorita.data.language import EvalWindows, TrainWindows
from lorita.data.text import TextSplit
from lorita.errors import LoritaError
from lorita.lowrank import LowRankLinear
from lorita.train import TrainConfig, train
from lorita.train.loop import TrainResult

logger = logging.getLogger(__name__)

Mode = Literal["full", "lora"]


class Logits(nn.Module):
    """A causal LM seen as ``ids -> logits (B, T, V)``, what lorita's training loop and ``evaluate`` expect."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.lm(ids, use_cache=False) if hasattr(getattr(self.lm, "config", None), "use_cache") else self.lm(ids)
        return out.logits if hasattr(out, "logits") else out


@dataclass(frozen=True)
class RecoveryRecipe:
    """How long and how a model is fine-tuned: ``steps`` batches of ``batch_size`` windows of ``context`` tokens over
    ``epochs`` (the schedule is per epoch, the best epoch on validation is kept), AdamW at ``lr`` (cosine, one warm-up
    epoch when there are 3 or more), ``weight_decay``, gradients clipped at 1. ``mode``: ``"full"`` or ``"lora"``
    (module docstring), ``lora_rank`` and ``lora_alpha`` for the latter.

    Example:
        >>> RecoveryRecipe(steps=10, epochs=3).config().epochs
        3
    """

    steps: int = 240
    epochs: int = 6
    batch_size: int = 4
    context: int = 256
    lr: float = 2e-4
    weight_decay: float = 0.0
    mode: Mode = "full"
    lora_rank: int = 16
    lora_alpha: float = 16.0
    eval_windows: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "epochs", "batch_size", "context", "lora_rank", "eval_windows"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, minimum=0)
        if self.steps < self.epochs:
            raise LoritaError(f"steps ({self.steps}) must be at least epochs ({self.epochs}): one batch per epoch")
        check_number("lr", self.lr, minimum=0, low_open=True)
        check_number("weight_decay", self.weight_decay, minimum=0)
        check_number("lora_alpha", self.lora_alpha, minimum=0, low_open=True)
        check_choice("mode", self.mode, ("full", "lora"))

    def config(self, optimizer: str = "adamw") -> TrainConfig:
        """The ``TrainConfig`` of lorita's loop for this recipe."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer=optimizer, lr=self.lr,
                           weight_decay=self.weight_decay, label_smoothing=0.0, schedule="cosine",
                           warmup_epochs=1 if self.epochs >= 3 else 0, seed=self.seed, device="cpu",
                           eval_batch_size=4, grad_clip=1.0, select_by="val_loss")


def train_lm(model: nn.Module, train_ids: torch.Tensor, val_ids: torch.Tensor, recipe: RecoveryRecipe, *,
             optimizer: str = "adamw", progress: bool = False) -> TrainResult:
    """Train the trainable parameters of ``model`` (in place) on ``train_ids``, choosing the best epoch on ``val_ids``.

    Both are 1-D token streams. Returns the loop's ``TrainResult`` (its ``best_state`` is
    already loaded into ``model``, and dropped from the result to free its memory).

    Example:
        >>> net = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 20))
        >>> ids = torch.arange(200) % 20
        >>> result = train_lm(net, ids, ids, RecoveryRecipe(steps=8, epochs=2, context=8, lr=0.05))
        >>> result.best_val_loss < math.log(20)
        True
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise LoritaError("nothing to train: every parameter of the model is frozen")
    wrapped = Logits(model)
    steps = math.ceil(recipe.steps / recipe.epochs)
    data = SimpleNamespace(train=TrainWindows(TextSplit(train_ids, 1), recipe.context, steps, recipe.batch_size),
                           val=EvalWindows(TextSplit(val_ids, 1), recipe.context, recipe.eval_windows))
    result = train(wrapped, data, recipe.config(optimizer), progress=progress)
    if result.best_state is not None:
        wrapped.load_state_dict(result.best_state)
        result.best_state = None
    model.eval()
    return result


class _LoraDelta(nn.Module):
    """``W -> W + P Q * scale``: a trainable rank-``k`` delta on a frozen weight, P zero at the start."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float):
        super().__init__()
        out_features, in_features = weight.shape
        k = min(rank, out_features, in_features)
        self.p = nn.Parameter(torch.zeros(out_features, k, dtype=weight.dtype, device=weight.device))
        self.q = nn.Parameter(torch.randn(k, in_features, dtype=weight.dtype, device=weight.device) / in_features**0.5)
        self.scale = alpha / k

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.p @ self.q) * self.scale


def thin_factors(model: nn.Module) -> list[nn.Linear]:
    """The two ``nn.Linear`` factors of every thin pair of ``model``.

    Example:
        >>> from lorita.lowrank import LowRankLinear
        >>> len(thin_factors(nn.Sequential(LowRankLinear(8, 8, rank=2), nn.Linear(8, 2))))
        2
    """
    return [factor for m in model.modules() if isinstance(m, LowRankLinear) for factor in m]


def recover(model: nn.Module, train_ids: torch.Tensor, val_ids: torch.Tensor, recipe: RecoveryRecipe, *,
            layers: list[nn.Linear] | None = None, progress: bool = False) -> TrainResult:
    """Fine-tune the thin layers of a cut ``model`` in place (``recipe.mode``: full factors, or LoRA merged back).

    ``layers``: the ``nn.Linear`` layers to train instead (a width-pruned model has no thin
    pairs: its narrowed layers get the same recovery).

    Example:
        >>> from lorita.lowrank import truncate
        >>> net = nn.Sequential(nn.Embedding(20, 8), truncate(nn.Linear(8, 20), 2))
        >>> ids = torch.arange(200) % 20
        >>> result = recover(net, ids, ids, RecoveryRecipe(steps=8, epochs=2, context=8, lr=0.05, mode="lora"))
        >>> net[0].weight.requires_grad, type(net[1][0].weight).__name__, net[1].rank
        (True, 'Parameter', 2)
    """
    factors = thin_factors(model) if layers is None else list(layers)
    if not factors:
        raise LoritaError("the model has no thin layers (LowRankLinear) to recover; cut it first")
    frozen = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        if recipe.mode == "full":
            for factor in factors:
                factor.weight.requires_grad_(True)
            return train_lm(model, train_ids, val_ids, recipe, progress=progress)
        for factor in factors:
            delta = _LoraDelta(factor.weight.detach(), recipe.lora_rank, recipe.lora_alpha)
            parametrize.register_parametrization(factor, "weight", delta)
        try:
            return train_lm(model, train_ids, val_ids, recipe, progress=progress)
        finally:
            for factor in factors:
                original = factor.parametrizations.weight.original
                parametrize.remove_parametrizations(factor, "weight", leave_parametrized=True)  # merge the delta
                frozen[factor.weight] = frozen.pop(original)
    finally:
        for p, flag in frozen.items():
            p.requires_grad_(flag)
