"""Hugging Face transformers' ``Conv1D`` (GPT-2) treated as the linear map it is.

``transformers.pytorch_utils.Conv1D(nf, nx)`` stores its weight as ``(in, out)`` and
computes ``y = x @ W + b``: an ``nn.Linear`` whose weight is ``W^T``. lorita composes,
merges and compresses it like a Linear; a merged one becomes a ``Conv1D`` again (same
state_dict keys and shapes), a compressed one a ``LowRankLinear`` (two ``nn.Linear``).

Nothing here imports transformers: the class is recognised by its name and module.
"""

from __future__ import annotations

import torch
from torch import nn

def conv1d_base(cls: type) -> type | None:
    """The transformers ``Conv1D`` class in ``cls``'s MRO, or None.

    Example:
        >>> conv1d_base(nn.Linear) is None
        True
    """
    for base in cls.__mro__:
        if base.__name__ == "Conv1D" and base.__module__.startswith("transformers"):
            return base
    return None


def is_conv1d(module: nn.Module) -> bool:
    """True for a transformers ``Conv1D`` (or a subclass) holding a 2-D weight.

    Example:
        >>> is_conv1d(nn.Linear(2, 2))
        False
    """
    return conv1d_base(type(module)) is not None and getattr(module, "weight", None) is not None \
        and module.weight.dim() == 2


def conv1d_as_linear(module: nn.Module) -> nn.Linear:
    """An ``nn.Linear`` computing what ``module`` does; its weight is a view ``W^T`` (no copy), the bias shared.

    Example:
        >>> class Conv1D(nn.Module):  # stand-in with transformers' layout
        ...     pass
        >>> Conv1D.__module__ = "transformers.pytorch_utils"
        >>> c = Conv1D(); c.weight = nn.Parameter(torch.randn(3, 5)); c.bias = nn.Parameter(torch.zeros(5))
        >>> conv1d_as_linear(c).weight.shape
        torch.Size([5, 3])
    """
    n_in, n_out = module.weight.shape  # (in, out)
    linear = nn.Linear(n_in, n_out, bias=module.bias is not None, device="meta", dtype=module.weight.dtype)
    linear.weight = nn.Parameter(module.weight.detach().T, requires_grad=module.weight.requires_grad)
    linear.bias = module.bias
    linear.train(module.training)
    return linear


@torch.no_grad()
def conv1d_from_matrix(cls: type, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A ``cls`` (a transformers ``Conv1D`` or subclass) holding ``weight`` (out x in, stored transposed) and ``bias``.

    Built by ``Conv1D(nf, nx)`` on the meta device (no init cost), then given real parameters.
    """
    base = conv1d_base(cls)
    n_out, n_in = weight.shape
    with torch.device("meta"):
        plain = base(n_out, n_in)  # Conv1D(nf, nx)
    plain.weight = nn.Parameter(weight.T.contiguous())  # (in, out)
    plain.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
    if cls is not base:
        plain.__class__ = cls  # a subclass that keeps Conv1D.forward
    return plain
