"""Rebalance the two factors of each thin layer pair before fine-tuning, the product unchanged.

A truncated SVD splits each kept direction evenly: the first factor's row is ``sqrt(s) v`` and the second's
column ``sqrt(s) u``. A direction whose singular value ``s`` is near zero (LoRITa's weight decay drives many
there, and a cut by params may keep some) is then near zero in both factors, and the gradient of each factor
is the other factor times the data's gradient: fine-tuning can hardly grow it. ``rebalance_pairs`` scales up
such a direction's first factor to at least the layer's ``quantile`` of the first factor's row norms and
divides the second factor's column by the same number, so the cut model computes the same function and its
small directions can move. Directions of exactly zero are left as they are. The scales are worked out and applied in
float32 (a float16 pair's smallest directions may then underflow to zero in the second factor, below float16's
precision anyway); a bias on the first factor is scaled with its row. Every pair is checked before any is changed:
factors whose weights are computed on access (quantized, parametrized), a factor shared by two pairs and non-finite
weights are refused.
"""

from __future__ import annotations

import torch
from torch import nn

from lorita.checks import check_number
from lorita.errors import LoritaError
from lorita.linalg import check_finite
from lorita.lowrank import LOWRANK_TYPES


def rebalance_pairs(model: nn.Module, quantile: float = 0.9) -> int:
    """Scale each thin pair's directions (``lorita.LowRankLinear``, ``lorita.LowRankConv2d``) so that no nonzero row
    of the first factor is shorter than the layer's ``quantile`` of their norms (as they were), the second factor's
    column divided by the same: every pair's product, and so the model's outputs, are unchanged (to rounding). In
    place; returns the pairs changed.

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
    pairs = _checked_pairs(model)
    return sum(_rebalance(pair, quantile) for pair in pairs)


def _checked_pairs(model: nn.Module) -> list[nn.Module]:
    """The model's thin pairs, each refused (LoritaError, before any is changed) when a factor's weight is not its
    own parameter, a tensor is shared with another pair, or a weight is not finite."""
    pairs, owner = [], {}
    for name, module in model.named_modules():
        if not isinstance(module, LOWRANK_TYPES):
            continue
        for factor in module:
            if "weight" not in dict(factor.named_parameters(recurse=False)):  # its own parameter, not computed
                raise LoritaError(f"pair {name!r}: a factor's weight is computed on access (quantized or "
                                  "parametrized), so it cannot be rescaled in place; rebalance before quantizing")
            check_finite(factor.weight, name)
            for tensor in factor.parameters(recurse=False):
                if owner.setdefault(id(tensor), name) != name:
                    raise LoritaError(f"pairs {owner[id(tensor)]!r} and {name!r} share a factor's tensor: scaling "
                                      "one pair's directions would change the other's product")
        pairs.append(module)
    return pairs


def _rebalance(pair: nn.Module, quantile: float) -> int:
    """Rebalance one checked pair in place; 1 if any direction was scaled, else 0."""
    first, second = pair[0], pair[1]
    norms = first.weight.detach().flatten(1).float().norm(dim=1)
    floor = torch.quantile(norms, quantile)
    scale = torch.where(norms > 0, torch.maximum(norms, floor) / norms.clamp_min(torch.finfo(norms.dtype).tiny),
                        torch.ones_like(norms))
    if bool((scale == 1).all()):
        return 0
    with torch.no_grad():
        rows = scale.view(-1, *([1] * (first.weight.dim() - 1)))
        first.weight.copy_((first.weight.float() * rows).to(first.weight.dtype))
        if first.bias is not None:  # the row's output scaled whole: its bias with it
            first.bias.copy_((first.bias.float() * scale).to(first.bias.dtype))
        columns = (1 / scale).view(1, -1, *([1] * (second.weight.dim() - 2)))
        second.weight.copy_((second.weight.float() * columns).to(second.weight.dtype))
    return 1
