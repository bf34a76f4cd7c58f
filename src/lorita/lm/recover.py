"""Short fine-tuning of a language model on text: recovery after a cut, lean enough for a laptop CPU.

``train_lm`` trains the parameters a caller leaves trainable for ``steps`` batches of random
windows of the training text (drawn in turn from each stream given), AdamW (or SGD) with a
linear warm-up and a cosine decay to zero, gradients clipped at 1. Memory is kept to what the
step needs: the loss goes through the output head a slice of tokens at a time
(``lorita.lm.head``: the 49k-vocabulary logits of a batch are never whole), no copy of the
weights is kept (the schedule ends at zero, so the last step's weights are the result;
validation is measured, not selected on), and a teacher runs without autograd.

The objective (``RecoveryRecipe.distill``): ``0`` is the next-token cross-entropy on the text;
``1`` is distillation from a ``teacher`` (the dense model the cut came from): each token's
target is the teacher's predicted distribution (KL at temperature 1), a standard and strong
recovery objective for pruned language models; values between mix the two.

``recover`` is the recovery after a low-rank cut, in one of two forms (``RecoveryRecipe.mode``):

* ``"full"``: both factors of every thin pair (``LowRankLinear``) are trained; embeddings,
  norms and the layers left dense are frozen.
* ``"lora"``: the factors stay frozen and each gets a trainable rank-``lora_rank`` side path
  (``x -> Q x -> P Q x * alpha / k``, P zero at the start) merged into it at the end, so the
  ranks and the deployed shape do not change. No gradient is formed for the frozen factors.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lorita.checks import check_choice, check_int, check_number
from lorita.errors import LoritaError
from lorita.lm.corpus import random_windows
from lorita.lm.head import head_loss, hidden_states, split_head
from lorita.lm.perplexity import CONTEXT, check_context, fit_context, perplexity
from lorita.lowrank import LowRankLinear
from lorita.progress import progress_bar

logger = logging.getLogger(__name__)

Mode = Literal["full", "lora"]
FIT_STEPS = 3  # steps timed before a wall-clock budget fixes the step count


SGD_MOMENTUM = 0.9  # of optimizer="sgd"
LEARNING_RATES = {"full": 2e-4, "lora": 1e-3}  # AdamW, per mode: the settings docs/LM.md compared (LoRA trains
# a small side path from zero, so it takes a larger step)


MAX_WINDOW_BYTES = 2 << 30  # the token windows of every recovery step, drawn at once (a step's 4 x 257: 8 KiB)


@dataclass(frozen=True)
class RecoveryRecipe:
    """How a model is fine-tuned: ``steps`` batches of ``batch_size`` windows of ``context`` tokens, ``optimizer``
    (``"adamw"`` or ``"sgd"`` with momentum 0.9) at ``lr`` with ``weight_decay``, a linear warm-up over ``warmup`` of
    the steps then a cosine decay to zero; ``distill``: weight of the teacher's prediction in each token's target
    (module docstring); ``mode``: ``"full"`` or ``"lora"`` (with ``lora_rank``, ``lora_alpha``); validation every
    ``eval_every`` steps (0: at the start and the end only) on up to ``eval_tokens`` tokens of each stream.
    ``seconds``: a wall-clock budget for the training steps (0: none); ``steps`` is then the most, and the count is
    fitted to the budget from the time of the first ``FIT_STEPS`` steps (the schedule follows the fitted count).

    Example:
        >>> RecoveryRecipe(steps=10, distill=1.0).tokens
        10240
    """

    steps: int = 160
    batch_size: int = 4
    context: int = 256
    lr: float = LEARNING_RATES["full"]
    warmup: float = 0.05
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    distill: float = 0.0
    mode: Mode = "full"
    lora_rank: int = 16
    lora_alpha: float = 16.0
    eval_every: int = 0
    eval_tokens: int = 4096
    seed: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "lora_rank", "eval_tokens"):
            check_int(name, getattr(self, name))
        check_int("context", self.context, minimum=2)
        check_int("eval_every", self.eval_every, minimum=0, meaning="steps between validations, 0 for start and end")
        check_int("seed", self.seed, minimum=0)
        check_number("lr", self.lr, minimum=0, low_open=True)
        check_number("warmup", self.warmup, minimum=0, maximum=1, meaning="the share of the steps spent warming up")
        check_number("weight_decay", self.weight_decay, minimum=0)
        check_number("distill", self.distill, minimum=0, maximum=1,
                     meaning="the weight of the teacher's prediction in each token's target")
        check_number("lora_alpha", self.lora_alpha, minimum=0, low_open=True)
        check_number("seconds", self.seconds, minimum=0, meaning="a wall-clock budget for training, 0 for none")
        check_choice("mode", self.mode, LEARNING_RATES)
        check_choice("optimizer", self.optimizer, ("adamw", "sgd"))
        held = self.steps * self.batch_size * (self.context + 1) * 8  # every step's windows, drawn before training
        if held > MAX_WINDOW_BYTES:
            raise LoritaError(f"{self.steps:,} recovery steps of {self.batch_size} windows of {self.context} tokens "
                              f"need {held / 2**30:.1f} GiB of token windows, more than the {MAX_WINDOW_BYTES >> 30} "
                              "GiB lorita draws: ask for fewer steps (--recovery-steps) or a shorter context")

    @property
    def tokens(self) -> int:
        """Training tokens seen (each window predicts ``context`` tokens)."""
        return self.steps * self.batch_size * self.context

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LMTraining:
    """What ``train_lm`` did: ``history`` rows (step, seconds, lr, mean train loss and NLL since the previous row,
    validation NLL where measured), ``val_before`` / ``val_after`` (mean NLL per token), ``seconds``."""

    history: list[dict] = field(default_factory=list)
    val_before: float = math.nan
    val_after: float = math.nan
    seconds: float = 0.0
    steps: int = 0
    tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)



def recovery_recipe(mode: Mode = "lora", **changes) -> RecoveryRecipe:
    """A recovery in ``mode`` at that mode's learning rate (``LEARNING_RATES``); ``changes`` set any other field.
    The default mode is LoRA, which recovered more per minute than full fine-tuning in docs/LM.md's comparison.

    Example:
        >>> how = recovery_recipe(seconds=600.0)
        >>> how.mode, how.lr, how.seconds, recovery_recipe("full").lr
        ('lora', 0.001, 600.0, 0.0002)
    """
    return RecoveryRecipe(mode=mode, lr=LEARNING_RATES[check_choice("mode", mode, LEARNING_RATES)], **changes)


def _streams(ids) -> list[torch.Tensor]:
    streams = [ids] if isinstance(ids, torch.Tensor) else list(ids)
    if not streams or any(not isinstance(s, torch.Tensor) or s.dim() != 1 or s.is_floating_point() for s in streams):
        raise LoritaError("text must be a 1-D tensor of token ids or a list of them (lorita.lm.corpus.encode)")
    return streams


def _val_nll(model: nn.Module, streams: list[torch.Tensor], tokens: int) -> float:
    """Mean NLL per token over the first ``tokens`` of each validation stream (windows of ``CONTEXT``, or of the
    model's positions when fewer)."""
    context = fit_context(model, CONTEXT)
    scores = [perplexity(model, s[:tokens], context=context) for s in streams if len(s) >= 2]
    count = sum(p.tokens for p in scores)
    return sum(p.nll * p.tokens for p in scores) / count if count else math.nan


def _soft_cross_entropy(logits, targets, teacher_logits, distill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``head_loss``'s objective on whole logits, for models whose head is not a plain linear layer."""
    flat, targets = logits.flatten(0, 1).float(), targets.flatten()
    nll = F.cross_entropy(flat, targets)
    if teacher_logits is None or distill == 0:
        return nll, nll.detach()
    soft = -(F.softmax(teacher_logits.flatten(0, 1).float(), -1) * F.log_softmax(flat, -1)).sum(-1).mean()
    return (1 - distill) * nll + distill * soft, nll.detach()


def lm_loss(model: nn.Module, ids: torch.Tensor, *, teacher: nn.Module | None = None,
            distill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, nll)`` of a causal LM on token windows ``ids`` ``(B, T + 1)``: each of the first ``T`` positions
    predicts the next token; the target mixes it with the ``teacher``'s prediction (``distill``).

    Example:
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
        >>> loss, nll = lm_loss(net, torch.randint(0, 10, (2, 6)))
        >>> bool(loss > 0), torch.equal(loss.detach(), nll)
        (True, True)
    """
    x, y = ids[:, :-1], ids[:, 1:]
    split, taught = split_head(model), teacher is not None and distill > 0
    if split is not None and (not taught or _same_head(split[1], split_head(teacher))):
        body, head = split
        hidden = hidden_states(body, x)
        with torch.no_grad():
            target = hidden_states(split_head(teacher)[0], x) if taught else None
        return head_loss(hidden.flatten(0, 1), head.weight, y.flatten(),
                         teacher=None if target is None else target.flatten(0, 1), distill=distill)
    logits = _logits(model, x)
    with torch.no_grad():
        target = _logits(teacher, x) if taught else None
    return _soft_cross_entropy(logits, y, target, distill)


def _same_head(head: nn.Linear, teacher: tuple[nn.Module, nn.Linear] | None) -> bool:
    """Whether the teacher's logits are ``head`` on its hidden states (the sliced loss forms them with the student's
    head): a teacher that splits, whose head weight is the student's or equal to it."""
    if teacher is None:
        return False
    other = teacher[1].weight
    return other is head.weight or (other.shape == head.weight.shape and torch.equal(other, head.weight))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x, use_cache=False) if hasattr(getattr(model, "config", None), "use_cache") else model(x)
    return out.logits if hasattr(out, "logits") else out


def _optimizer(params: list[nn.Parameter], recipe: RecoveryRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=SGD_MOMENTUM, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def lr_factor(step: int, steps: int, warmup: float) -> float:
    """The learning rate's multiplier at ``step`` (0-based): linear warm-up, then a cosine decay toward 0 at the end.

    Example:
        >>> [round(lr_factor(s, 10, 0.2), 3) for s in (0, 1, 2, 6, 9)]
        [0.5, 1.0, 1.0, 0.5, 0.038]
    """
    ramp = max(1, round(warmup * steps)) if warmup > 0 else 0
    if step < ramp:
        return (step + 1) / ramp
    return 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(1, steps - ramp)))


def fitted_steps(recipe: RecoveryRecipe, elapsed: float, done: int) -> int:
    """The step count a wall-clock budget allows, from ``done`` steps that took ``elapsed`` seconds: at least
    ``done``, at most ``recipe.steps`` (all of them without a budget).

    Example:
        >>> fitted_steps(RecoveryRecipe(steps=100, seconds=60), elapsed=6.0, done=3)
        30
    """
    if not recipe.seconds:
        return recipe.steps
    return max(done, min(recipe.steps, int(recipe.seconds * done / max(elapsed, 1e-9))))


def train_lm(model: nn.Module, train: torch.Tensor | Sequence[torch.Tensor], val: torch.Tensor | Sequence[torch.Tensor],
             recipe: RecoveryRecipe, *, params: list[nn.Parameter] | None = None,
             teacher: nn.Module | None = None, progress: bool = False) -> LMTraining:
    """Train ``params`` (default: the model's trainable parameters) of a causal LM in place (module docstring).

    ``train`` / ``val``: 1-D token streams or lists of them (windows are drawn in turn from
    each training stream). ``teacher``: the model to distil from when ``recipe.distill > 0``.
    ``progress``: a bar over the steps (its total set once a time budget has fixed them).

    Example:
        >>> net = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 20))
        >>> ids = torch.arange(400) % 20
        >>> done = train_lm(net, ids, ids, RecoveryRecipe(steps=30, context=8, lr=0.05))
        >>> done.val_after < done.val_before
        True
    """
    params = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    if not params:
        raise LoritaError("nothing to train: every parameter of the model is frozen")
    if recipe.distill > 0 and teacher is None:
        raise LoritaError(f"distill={recipe.distill:g} needs the teacher model (the dense model the cut came from)")
    check_context(model, recipe.context, "the recovery recipe's context")
    streams, val = _streams(train), _streams(val)
    windows = random_windows(streams, recipe.steps * recipe.batch_size, recipe.context + 1, seed=recipe.seed)
    optimizer = _optimizer(params, recipe)
    done = LMTraining(val_before=_val_nll(model, val, recipe.eval_tokens))
    if teacher is not None:
        teacher.eval()
    start, sums, since, total = time.perf_counter(), [0.0, 0.0], 0, recipe.steps
    every = recipe.eval_every or max(1, total // 20)  # history rows; validation only with eval_every
    model.train()
    bar = progress_bar(progress, desc="recovery", unit="step", total=total)
    try:
        for step in range(recipe.steps):
            if step == total:
                break
            lr = recipe.lr * lr_factor(step, total, recipe.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = windows[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            loss, nll = lm_loss(model, batch, teacher=teacher, distill=recipe.distill)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise LoritaError(f"training diverged at step {step + 1}: the loss is {value}; lower lr "
                                  f"(now {recipe.lr:g})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            sums, since = [sums[0] + value, sums[1] + float(nll.detach())], since + 1
            if recipe.seconds and step + 1 == FIT_STEPS:  # the budget fixes the step count (and the schedule)
                total = fitted_steps(recipe, time.perf_counter() - start, FIT_STEPS)
                every = recipe.eval_every or max(1, total // 20)
                logger.info("recovery: %d steps fit in %.0f s", total, recipe.seconds)
                if bar is not None:
                    bar.total = total
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            if (step + 1) % every == 0 or step + 1 == total:
                row = {"step": step + 1, "seconds": time.perf_counter() - start, "lr": lr,
                       "train_loss": sums[0] / since, "train_nll": sums[1] / since}
                if recipe.eval_every and step + 1 < total:
                    row["val_nll"] = _val_nll(model, val, recipe.eval_tokens)
                done.history.append(row)
                logger.debug("step %d/%d: %s", step + 1, recipe.steps, row)
                sums, since = [0.0, 0.0], 0
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.eval()
        if bar is not None:
            bar.close()
    done.seconds, done.steps = time.perf_counter() - start, total
    done.tokens = total * recipe.batch_size * recipe.context
    done.val_after = _val_nll(model, val, recipe.eval_tokens)
    done.history[-1]["val_nll"] = done.val_after
    return done


class _Lora(nn.Module):
    """A trainable rank-``k`` side path ``x -> (x Q^T) P^T * scale`` beside a frozen ``nn.Linear``; P zero at first."""

    def __init__(self, layer: nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        w = layer.weight
        k = min(rank, *w.shape)
        self.p = nn.Parameter(torch.zeros(w.shape[0], k, dtype=w.dtype, device=w.device))
        start = torch.randn(k, w.shape[1], generator=generator, dtype=torch.float32)  # the recipe's seed: repeatable
        self.q = nn.Parameter((start / w.shape[1] ** 0.5).to(w.device, w.dtype))
        self.scale = alpha / k

    def hook(self, module, args, out):
        return out + F.linear(F.linear(args[0], self.q), self.p) * self.scale

    @torch.no_grad()
    def merge_into(self, layer: nn.Linear) -> None:
        layer.weight += (self.p @ self.q) * self.scale


def thin_factors(model: nn.Module) -> list[nn.Linear]:
    """The two ``nn.Linear`` factors of every thin pair of ``model``.

    Example:
        >>> len(thin_factors(nn.Sequential(LowRankLinear(8, 8, rank=2), nn.Linear(8, 2))))
        2
    """
    return [factor for m in model.modules() if isinstance(m, LowRankLinear) for factor in m]


def recover(model: nn.Module, train, val, recipe: RecoveryRecipe, *, layers: list[nn.Linear] | None = None,
            teacher: nn.Module | None = None, progress: bool = False) -> LMTraining:
    """Fine-tune the thin layers of a cut ``model`` in place (``recipe.mode``: full factors, or LoRA merged back).

    ``layers``: the ``nn.Linear`` layers to train instead (a width-pruned model has no thin
    pairs: its narrowed layers get the same recovery). ``teacher``: for ``recipe.distill``;
    ``progress``: as in ``train_lm``.
    The parameters' ``requires_grad`` flags are restored afterwards.

    Example:
        >>> from lorita.lowrank import truncate
        >>> net = nn.Sequential(nn.Embedding(20, 8), truncate(nn.Linear(8, 20), 2))
        >>> ids = torch.arange(400) % 20
        >>> done = recover(net, ids, ids, RecoveryRecipe(steps=30, context=8, lr=0.05, mode="lora"))
        >>> done.val_after < done.val_before, net[0].weight.requires_grad, net[1].rank
        (True, True, 2)
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
            return train_lm(model, train, val, recipe, teacher=teacher, progress=progress)
        generator = torch.Generator().manual_seed(recipe.seed)
        loras = [_Lora(factor, recipe.lora_rank, recipe.lora_alpha, generator) for factor in factors]
        handles = [f.register_forward_hook(lora.hook) for f, lora in zip(factors, loras)]
        try:
            return train_lm(model, train, val, recipe, params=[p for lora in loras for p in lora.parameters()],
                            teacher=teacher, progress=progress)
        finally:
            for handle in handles:
                handle.remove()
            for factor, lora in zip(factors, loras):
                lora.merge_into(factor)
    finally:
        for p, flag in frozen.items():
            p.requires_grad_(flag)
