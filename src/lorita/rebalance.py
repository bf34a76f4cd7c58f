"""Rebalance the two factors of each thin layer pair before fine-tuning, the product unchanged.

A truncated SVD splits each kept direction evenly: the first factor's row is ``sqrt(s) v`` and the second's
column ``sqrt(s) u``. A direction whose singular value ``s`` is near zero (LoRITa's weight decay drives many
there, and a cut by params may keep some) is then near zero in both factors, and the gradient of each factor
is the other factor times the data's gradient: fine-tuning can hardly grow it. ``rebalance_pairs`` scales up
such a direction's first factor to at least the layer's ``quantile`` of the first factor's row norms and
divides the second factor's column by the same number, so the cut model computes the same function and its
small directions can move. Directions of exactly zero are left as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from lorita.checks import check_number
from lorita.lowrank import LOWRANK_TYPES


def rebalance_pairs(model: nn.Module, quantile: float = 0.9) -> int:
    """Scale each thin pair's directions (``lorita.LowRankLinear``, ``lorita.LowRankConv2d``) so that no row of the
    first factor is shorter than the layer's ``quantile`` of their norms (as they were), the second factor's column
    divided by the same: every pair's product, and so the model's outputs, are unchanged. In place; returns the
    pairs changed.

    Example:
        >>> import lorita
        >>> pair = lorita.truncate(nn.Linear(6, 5), 3)
        >>> with torch.no_grad():
        ...     _ = pair[0].weight[2].mul_(1e-3); _ = pair[1].weight[:, 2].mul_(1e-3)  # a small direction
        >>> product, floor = pair[1].weight @ pair[0].weight, pair[0].weight.norm(dim=1).quantile(0.9)
        >>> rebalance_pairs(nn.Sequential(pair), 0.9)
        1
        >>> torch.allclose(pair[1].weight @ pair[0].weight, product, atol=1e-6)
        True
        >>> bool(pair[0].weight[2].norm() >= floor * 0.999)  # the small direction's first factor raised to the floor
        True
    """
    quantile = check_number("quantile", quantile, minimum=0, maximum=1,
                            meaning="the row-norm quantile of the first factor each direction is raised to")
    changed = 0
    for module in model.modules():
        if not isinstance(module, LOWRANK_TYPES):
            continue
        first, second = module[0].weight, module[1].weight  # (r, in, ...), (out, r, ...)
        norms = first.detach().flatten(1).float().norm(dim=1)
        floor = torch.quantile(norms, quantile)
        scale = torch.where(norms > 0, torch.maximum(norms, floor) / norms.clamp_min(torch.finfo(norms.dtype).tiny),
                            torch.ones_like(norms))
        if bool((scale == 1).all()):
            continue
        with torch.no_grad():
            first.mul_(scale.to(first.dtype).view(-1, *([1] * (first.dim() - 1))))
            second.mul_((1 / scale).to(second.dtype).view(1, -1, *([1] * (second.dim() - 2))))
        changed += 1
    return changed
