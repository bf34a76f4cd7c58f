"""Perplexity of a causal language model on a token stream, computed one standard way.

Token level, with the model's own tokenizer (``lorita.lm.corpus.encode``): the stream is
cut into windows of ``context`` tokens starting every ``stride`` tokens (Hugging Face's
"perplexity of fixed-length models" recipe). Each window scores only the tokens no earlier
window scored, each predicted from everything before it in its window; with
``stride == context`` (the default, as GPTQ and SVD-LLM evaluate WikiText-2) the windows
do not overlap and the first token of each window is not scored. The result is
``exp(mean negative log-likelihood)`` over every scored token, summed in float64. The
windows depend only on the stream's length, ``context`` and ``stride``, so models compared
on one stream are scored on the same windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from lorita.checks import check_int
from lorita.errors import LoritaError
from lorita.lm.head import IGNORE, head_loss, hidden_states, split_head

CONTEXT = 512
BATCH = 4
_POSITION_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx")  # transformers configs' names for the limit


def positions(model: nn.Module) -> int | None:
    """The most tokens ``model`` reads at once, as its transformers config states it (``n_positions``,
    ``max_position_embeddings`` or ``n_ctx``); None when it states none. A model with a table of positions (GPT-2's
    ``wpe``) cannot read more; one with rotary positions was trained on no more.

    Example:
        >>> import transformers
        >>> positions(transformers.GPT2LMHeadModel(transformers.GPT2Config(n_positions=64, n_layer=1, n_embd=8,
        ...                                                                 n_head=2, vocab_size=10)))
        64
        >>> positions(nn.Linear(2, 2)) is None
        True
    """
    config = getattr(model, "config", None)
    for name in _POSITION_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 2:
            return value
    return None


def check_context(model: nn.Module, context: int, name: str = "context") -> int:
    """``context`` when it is a window length ``model`` can read (at least 2 tokens, at most its ``positions``); else
    a LoritaError naming ``name``.

    Example:
        >>> check_context(nn.Linear(2, 2), 512)
        512
    """
    check_int(name, context, minimum=2)
    limit = positions(model)
    if limit is not None and context > limit:
        raise LoritaError(f"{name}={context} is more tokens than the model reads at once ({limit}, its config's "
                          f"positions): pass {name}={limit} or less")
    return context


def fit_context(model: nn.Module, context: int) -> int:
    """``context``, or the model's ``positions`` when fewer: the window length ``model`` can be scored in (Hugging
    Face's perplexity recipe scores in windows of the model's positions).

    Example:
        >>> fit_context(nn.Linear(2, 2), CONTEXT)
        512
    """
    limit = positions(model)
    return context if limit is None else min(context, limit)


@dataclass(frozen=True)
class Perplexity:
    """``ppl = exp(nll)``; ``nll``: mean negative log-likelihood (nats) per scored token; ``tokens``: how many."""

    ppl: float
    nll: float
    tokens: int

    def to_dict(self) -> dict:
        return {"ppl": self.ppl, "nll": self.nll, "tokens": self.tokens}


def windows(length: int, context: int = CONTEXT, stride: int | None = None) -> list[tuple[int, int, int]]:
    """``(begin, end, scored)`` of each window over a stream of ``length`` tokens: ``ids[begin:end]`` is the input,
    its last ``scored`` predictions count.

    Example:
        >>> windows(10, 4)
        [(0, 4, 3), (4, 8, 3), (8, 10, 1)]
        >>> windows(10, 4, stride=2)
        [(0, 4, 3), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    """
    stride = context if stride is None else stride
    check_int("context", context, minimum=2)
    check_int("stride", stride, maximum=context, meaning="at most the context")
    out, scored_to = [], 1  # token 0 has nothing before it
    for begin in range(0, max(length - 1, 0), stride):
        end = min(begin + context, length)
        if end - scored_to < 1 or end - begin < 2:
            break
        out.append((begin, end, min(end - scored_to, end - begin - 1)))
        scored_to = end
        if end == length:
            break
    return out


def _nll_sum(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> float:
    """Summed NLL (float64) of the scored ``targets`` ``(B, T-1)`` of windows ``x`` ``(B, T)``: through the output head
    a slice of tokens at a time when the model has a plain linear head (``lorita.lm.head``), else from whole logits."""
    split = split_head(model)
    if split is not None:
        body, head = split
        hidden = hidden_states(body, x)[:, :-1]  # (B, T-1, C): position t predicts token t+1
        _, nll = head_loss(hidden.flatten(0, 1), head.weight, targets.flatten())
        return float(nll) * int((targets != IGNORE).sum())
    out = model(x)
    logits = (out.logits if hasattr(out, "logits") else out)[:, :-1].float()  # a transformers output, or logits
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    return float(nll.double().sum())  # per-token losses summed in float64


def _batches(ids: torch.Tensor, spans: list[tuple[int, int, int]], batch: int) -> Iterator[list[tuple[int, int, int]]]:
    """Windows of equal length grouped ``batch`` at a time (a shorter last window runs alone)."""
    group: list[tuple[int, int, int]] = []
    for span in spans:
        if group and (len(group) == batch or span[1] - span[0] != group[0][1] - group[0][0]):
            yield group
            group = []
        group.append(span)
    if group:
        yield group


@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor, *, context: int | None = None, stride: int | None = None,
               batch_size: int = BATCH) -> Perplexity:
    """Perplexity of ``model`` on the 1-D token stream ``ids`` (module docstring), in eval mode.

    ``context``: the window length (default ``CONTEXT``, or the model's ``positions`` when fewer); one longer than
    the model reads at once is refused.

    ``model(x)`` may return logits ``(B, T, V)`` or an object with ``.logits`` (transformers).

    Example:
        >>> class Uniform(nn.Module):  # every token equally likely among 50
        ...     def forward(self, x):
        ...         return torch.zeros(*x.shape, 50)
        >>> result = perplexity(Uniform(), torch.randint(0, 50, (100,)), context=16)
        >>> round(result.ppl, 4), result.tokens
        (50.0, 93)
    """
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.is_floating_point():
        raise LoritaError(f"ids must be a 1-D tensor of token ids, got {getattr(ids, 'shape', type(ids).__name__)}")
    check_int("batch_size", batch_size)
    context = fit_context(model, CONTEXT) if context is None else check_context(model, context)
    spans = windows(len(ids), context, stride)
    if not spans:
        raise LoritaError(f"{len(ids)} token(s) are too few to score: perplexity needs at least 2")
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    total, count = 0.0, 0
    try:
        for group in _batches(ids, spans, batch_size):
            x = torch.stack([ids[b:e] for b, e, _ in group]).to(device)  # (B, T)
            targets = x[:, 1:].clone()  # (B, T-1)
            for row, (_, _, scored) in enumerate(group):
                targets[row, : targets.shape[1] - scored] = IGNORE  # already scored by an earlier window
            total += _nll_sum(model, x, targets)
            count += int((targets != IGNORE).sum())
    finally:
        model.train(was_training)
    mean = total / count
    return Perplexity(math.exp(mean) if mean < 700 else math.inf, mean, count)
