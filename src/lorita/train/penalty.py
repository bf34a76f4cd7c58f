"""A penalty added to every training step's loss, in place of the optimizer's weight decay on some parameters.

``lorita.train.train(..., penalty=p)`` adds ``p()`` (a scalar tensor built from the model's
parameters, so autograd reaches them) to each step's mean loss, and gives the parameters
``p.parameters()`` names no weight decay from the optimizer: the penalty is their decay.
``lorita.factorized.FrobeniusDecay`` is one: the decay of a low-rank pair's product
instead of each factor's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from lorita.errors import LoritaError


@runtime_checkable
class Penalty(Protocol):
    """What ``train(..., penalty=)`` takes: a callable returning the step's extra loss (a scalar tensor), and
    the parameters whose weight decay it replaces.

    Example:
        >>> class L2:  # the optimizer's own coupled weight decay on one layer, written as a penalty
        ...     def __init__(self, layer, coefficient):
        ...         self.layer, self.coefficient = layer, coefficient
        ...     def __call__(self):
        ...         return 0.5 * self.coefficient * self.layer.weight.square().sum()
        ...     def parameters(self):
        ...         return [self.layer.weight]
        >>> isinstance(L2(nn.Linear(2, 2), 1e-3), Penalty)
        True
    """

    def __call__(self) -> torch.Tensor: ...

    def parameters(self) -> Iterable[nn.Parameter]: ...


def replaced_parameters(penalty: Penalty | None, model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of ``model`` whose weight decay ``penalty`` replaces ([] for no penalty); a
    LoritaError when it is not a Penalty or names a tensor that is not one of ``model``'s parameters.

    Example:
        >>> class Nothing:
        ...     def __call__(self):
        ...         return torch.zeros(())
        ...     def parameters(self):
        ...         return []
        >>> replaced_parameters(Nothing(), nn.Linear(2, 2))
        []
    """
    if penalty is None:
        return []
    if not isinstance(penalty, Penalty):
        raise LoritaError(f"penalty must be callable and have .parameters() (lorita.train.penalty.Penalty, e.g. "
                          f"lorita.factorized.FrobeniusDecay), got {type(penalty).__name__}")
    own = {id(p) for p in model.parameters() if p.requires_grad}
    replaced = list(penalty.parameters())
    stray = [i for i, p in enumerate(replaced) if id(p) not in own]
    if stray:
        raise LoritaError(f"the penalty names {len(stray)} tensor(s) that are not trainable parameters of the model "
                          "being trained; build the penalty from that very model (after any copy or cut)")
    return list({id(p): p for p in replaced}.values())
