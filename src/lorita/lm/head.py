"""A language model's output head and its loss, a slice of tokens at a time: never the whole logits tensor.

SmolLM2's head maps 576 features to 49,152 tokens: the logits of one batch of 4 x 256 tokens
take 201 MB in float32, and the usual loss keeps three such tensors (logits, log-softmax and
its gradient) alive through the backward pass. Here the model's body runs to its last hidden
states (``split_head``), and ``head_loss`` computes the loss *and its gradient* slice by slice
(``chunk`` tokens at a time) inside the forward pass, keeping only the gradient with respect
to the hidden states (tokens x 576) for the backward pass, as the fused linear cross-entropy
kernels do (torch's ``F.linear_cross_entropy`` does it for hard targets; distillation needs
soft ones).

The target of each scored token is a mixture: ``(1 - distill)`` on the true next token and
``distill`` times the teacher's predicted distribution (``softmax`` of the teacher's hidden
states through the same head: a pruned model keeps its embeddings and tied head, so the
teacher's logits never need storing either). The loss is the cross-entropy to that mixture,
averaged over scored tokens; with ``distill=1`` it is the KL divergence from the teacher's
prediction plus the teacher's entropy (a constant), the standard distillation objective at
temperature 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lorita.checks import check_int, check_number
from lorita.errors import LoritaError

IGNORE = -100
CHUNK = 256  # tokens per slice: one slice's logits are 50 MB for a 49k vocabulary
UNSPLITTABLE = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling",
                "lm_head_multiplier")  # config fields of heads whose logits are not head(hidden) as they stand


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """``(body, head)`` of a transformers causal LM whose logits are ``head(body(ids).last_hidden_state)``; None for
    anything else (then the caller computes full logits).

    Example:
        >>> split_head(nn.Linear(2, 2)) is None
        True
    """
    if not (hasattr(model, "get_output_embeddings") and hasattr(model, "base_model")):
        return None
    head, body = model.get_output_embeddings(), model.base_model
    config = getattr(model, "config", None)
    if type(head) is not nn.Linear or head.bias is not None or body is model or \
            any(getattr(config, name, None) not in (None, 1, 1.0) for name in UNSPLITTABLE):
        return None
    return body, head


def hidden_states(body: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The last hidden states ``(B, T, C)`` of a transformers base model on token ids, without a KV cache."""
    return body(input_ids=ids, use_cache=False).last_hidden_state


class _HeadLoss(torch.autograd.Function):
    """Mean soft-target cross-entropy through ``weight``, with its gradients computed slice by slice in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, teacher, distill: float, chunk: int):
        scored = targets != IGNORE
        count = max(int(scored.sum()), 1)
        grads = ctx.needs_input_grad
        grad_h = torch.zeros_like(hidden) if grads[0] else None
        grad_w = torch.zeros_like(weight) if grads[1] else None
        sums = torch.float32 if hidden.device.type == "mps" else torch.float64  # MPS has no float64
        total = torch.zeros((), dtype=sums, device=hidden.device)  # on the model's device: += of each slice's sum
        nll = torch.zeros((), dtype=sums, device=hidden.device)
        work = torch.promote_types(hidden.dtype, torch.float32)  # logits and softmax in float32 at least
        for start in range(0, hidden.shape[0], chunk):
            part = slice(start, start + chunk)
            logp = F.log_softmax(F.linear(hidden[part], weight).to(work), dim=-1)  # (n, V)
            keep = scored[part]
            index = targets[part].clamp(min=0)[:, None]
            true = -logp.gather(1, index).squeeze(1) * keep  # (n,) NLL of the true tokens
            nll += true.to(sums).sum()
            if teacher is None or distill == 0:
                target = None
                total += true.to(sums).sum()
            else:
                target = F.softmax(F.linear(teacher[part], weight).to(work), dim=-1) * distill
                target.scatter_add_(1, index, torch.full_like(index, 1.0 - distill, dtype=target.dtype))
                target *= keep[:, None]
                total += -(target * logp).to(sums).sum()
            if grad_h is None and grad_w is None:
                continue
            g = logp.exp_() * keep[:, None]  # softmax, scored rows only (in place: logp is not needed again)
            if target is None:
                g.scatter_add_(1, index, -keep[:, None].to(g.dtype))
            else:
                g -= target
            g = (g / count).to(hidden.dtype)
            if grad_h is not None:
                grad_h[part] = g @ weight
            if grad_w is not None:
                grad_w += g.T @ hidden[part]
        ctx.save_for_backward(*(t for t in (grad_h, grad_w) if t is not None))
        ctx.has = (grad_h is not None, grad_w is not None)
        ctx.mark_non_differentiable(nll)
        return (total / count).to(hidden.dtype), nll / count  # the NLL in float64, for reporting

    @staticmethod
    def backward(ctx, grad_loss, _grad_nll):
        saved = iter(ctx.saved_tensors)
        grad_h = next(saved) * grad_loss if ctx.has[0] else None
        grad_w = next(saved) * grad_loss if ctx.has[1] else None
        return grad_h, grad_w, None, None, None, None


def head_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
              teacher: torch.Tensor | None = None, distill: float = 0.0,
              chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, nll)``: the mean loss over scored tokens of ``hidden @ weight.T`` (module docstring) and the mean
    negative log-likelihood of the true tokens (float64, float32 on MPS; for reporting, no gradient), in
    ``chunk``-token slices.

    ``hidden`` ``(N, C)``, ``weight`` ``(V, C)``, ``targets`` ``(N,)`` token ids (``-100``: not
    scored); ``teacher``: the teacher's hidden states ``(N, C)`` through the same head, weighted
    ``distill`` in each token's target. Gradients flow to ``hidden`` and ``weight`` as
    ``F.cross_entropy(F.linear(hidden, weight), ...)`` would give them.

    Example:
        >>> h, w = torch.randn(6, 4, requires_grad=True), torch.randn(10, 4)
        >>> t = torch.tensor([1, 2, 3, -100, 5, 6])
        >>> loss, nll = head_loss(h, w, t, chunk=4)
        >>> torch.allclose(loss, F.cross_entropy(h @ w.T, t)), torch.allclose(loss.double(), nll)
        (True, True)
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise LoritaError(f"head_loss needs hidden (N, C) and weight (V, C), got {tuple(hidden.shape)} and "
                          f"{tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise LoritaError(f"targets must be ({hidden.shape[0]},), one per hidden row, got {tuple(targets.shape)}")
    if teacher is not None and teacher.shape != hidden.shape:
        raise LoritaError(f"teacher hidden states must match the student's {tuple(hidden.shape)}, got "
                          f"{tuple(teacher.shape)}")
    check_number("distill", distill, minimum=0, maximum=1)
    check_int("chunk", chunk)
    outside = (targets != IGNORE) & ((targets < 0) | (targets >= weight.shape[0]))
    if outside.any():  # one sync; the rest only when there is something to say
        bad = int(targets[outside][0])
        raise LoritaError(f"target token {bad} is outside the head's {weight.shape[0]} rows (targets are token ids, "
                          f"or {IGNORE} where not scored)")
    if not torch.is_grad_enabled():  # the Function would still see requires_grad and form gradients
        hidden, weight = hidden.detach(), weight.detach()
    return _HeadLoss.apply(hidden, weight, targets, None if teacher is None else teacher.detach(), float(distill),
                           chunk)
