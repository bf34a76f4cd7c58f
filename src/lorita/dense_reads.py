"""A warning when a model's forward reads the dense ``.weight`` of a thin or composed layer.

``LowRankLinear``/``LowRankConv2d`` and the composed layers offer ``.weight`` (the dense
product of their factors, formed on access) for code that reads it. Read during a forward
pass, it means the model's code multiplies the factors back into a dense weight at every
call: a cut layer read that way saves nothing, and costs a matmul on top. compose and
compress leave such layers plain where they find them (``lorita.targets``); where one is
read all the same (found by no probe, or a parent that both calls the layer and reads its
weight), ``note_dense_read`` says so, once per layer, naming it.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterator

import torch
from torch import nn

from lorita.errors import LoritaWarning

NAME_ATTRIBUTE = "lorita_name"  # set on each layer lorita swaps in: its name in the model
_WARNED_ATTRIBUTE = "_lorita_dense_read_warned"
_CALL_CODES = {nn.Module._call_impl.__code__, nn.Module._wrapped_call_impl.__code__}
_quiet = [0]  # > 0 inside quiet_dense_reads


@contextlib.contextmanager
def quiet_dense_reads() -> Iterator[None]:
    """No warning inside the block (lorita's own probe, which finds such reads to leave the layers plain).

    Example:
        >>> with quiet_dense_reads():
        ...     pass
    """
    _quiet[0] += 1
    try:
        yield
    finally:
        _quiet[0] -= 1


def _in_forward() -> bool:
    """Whether some module's ``__call__`` is running (a forward pass), from the call stack."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code in _CALL_CODES:
            return True
        frame = frame.f_back
    return False


def note_dense_read(module: nn.Module) -> None:
    """Warn once for ``module`` when its dense ``.weight`` is read inside a forward pass.

    Called by the ``weight`` property of the thin and composed layers. Reads outside a
    forward pass (inspecting a layer, lorita's own merge and export) say nothing.

    Example:
        >>> import warnings
        >>> from lorita.lowrank import LowRankLinear
        >>> class ReadsWeight(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.proj = LowRankLinear(4, 4, rank=2)
        ...     def forward(self, x):
        ...         return nn.functional.linear(x, self.proj.weight)
        >>> model = ReadsWeight()
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = model(torch.zeros(1, 4)); _ = model(torch.zeros(1, 4))
        >>> len(caught), "LowRankLinear" in str(caught[0].message)
        (1, True)
    """
    if _quiet[0] or module.__dict__.get(_WARNED_ATTRIBUTE) or torch.compiler.is_compiling() or not _in_forward():
        return
    module.__dict__[_WARNED_ATTRIBUTE] = True
    name = module.__dict__.get(NAME_ATTRIBUTE)
    what = f"layer {name!r} ({type(module).__name__})" if name else f"a {type(module).__name__} layer"
    warnings.warn(f"the model's forward read the dense .weight of {what}: each such read multiplies its factors "
                  "back into a dense weight, work the plain layer never did. Where the model only reads the weight "
                  "(its parent computes with it instead of calling the layer) the cut saves nothing: leave the "
                  "layer plain (exclude=), or pass example_input= so that lorita finds such layers itself",
                  LoritaWarning, stacklevel=3)


def name_layer(module: nn.Module, name: str) -> None:
    """Record ``name`` (the layer's name in its model) on a layer lorita swaps in, for the warning.

    Example:
        >>> layer = nn.Linear(2, 2); name_layer(layer, "head"); layer.lorita_name
        'head'
    """
    module.__dict__[NAME_ATTRIBUTE] = name
