"""A decoder-only language model run one block at a time, as GPTQ, SliceGPT and SVD-LLM calibrate.

``block_inputs`` runs the model on calibration batches up to its first decoder block and
keeps, per batch, the hidden states entering that block and every other argument the model
passed to it (rotary position embeddings, attention mask, ...). ``run_block`` then runs any
block on any hidden states with those same arguments. So a block can be calibrated on the
outputs of the blocks before it, dense or already cut, without running the whole model
again, and memory holds one block's work at a time.

The blocks are the ``nn.ModuleList`` holding the most parameters (``model.layers`` of a
Llama, ``transformer.h`` of a GPT-2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from lorita.errors import LoritaError
from lorita.probe import eval_mode


def decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """``(name, blocks)``: the model's ``nn.ModuleList`` holding the most parameters.

    Example:
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)]))
        >>> decoder_blocks(net)[0]
        '1'
    """
    lists = [(sum(p.numel() for p in m.parameters()), name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise LoritaError(f"{type(model).__name__} has no nn.ModuleList of blocks; block-by-block calibration needs "
                          "a decoder made of a list of blocks (model.layers, transformer.h)")
    _, name, blocks = max(lists, key=lambda item: item[0])
    return name, blocks


@dataclass
class BlockInput:
    """One calibration batch at the entry of a block: ``hidden`` (B, T, C) and the other arguments of the call."""

    hidden: torch.Tensor
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


class _Caught(Exception):
    """Raised by the pre-hook on the first block: the rest of the forward is not needed."""


@torch.no_grad()
def block_inputs(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[BlockInput]:
    """Per batch of token ids, what the first decoder block receives (the model runs in eval mode, no cache).

    Example:
        >>> class Tiny(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embed, self.layers = nn.Embedding(10, 4), nn.ModuleList([nn.Linear(4, 4)])
        ...     def forward(self, ids):
        ...         return self.layers[0](self.embed(ids))
        >>> [tuple(b.hidden.shape) for b in block_inputs(Tiny(), [torch.zeros(2, 3, dtype=torch.long)])]
        [(2, 3, 4)]
    """
    _, blocks = decoder_blocks(model)
    _check_one_kind_of_block(model)
    caught: list[BlockInput] = []

    def catch(module, args, kwargs):
        caught.append(BlockInput(args[0].detach(), tuple(args[1:]), dict(kwargs)))
        raise _Caught

    handle = blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with eval_mode(model):
            for ids in batches:
                try:
                    model(ids, **({"use_cache": False} if _takes_use_cache(model) else {}))
                except _Caught:
                    continue
                raise LoritaError("the model's forward never called its first block; is it a decoder made of "
                                  "model.layers / transformer.h blocks?")
    finally:
        handle.remove()
    if not caught:
        raise LoritaError("block_inputs got no calibration batches; pass a non-empty iterable of token id batches")
    return caught


def _check_one_kind_of_block(model: nn.Module) -> None:
    """Refuse a model whose blocks are of several kinds (``config.layer_types``: sliding-window and full attention,
    as Gemma 2/3 and some Qwen configs have): each kind gets its own attention mask or position embeddings, and
    ``run_block`` gives every block the first block's."""
    kinds = getattr(getattr(model, "config", None), "layer_types", None)
    if isinstance(kinds, (list, tuple)) and len(set(map(str, kinds))) > 1:
        raise LoritaError(f"{type(model).__name__}'s blocks are of {len(set(map(str, kinds)))} kinds "
                          f"({', '.join(sorted(set(map(str, kinds))))}: config.layer_types), each called with its own "
                          "attention mask or position embeddings; lorita's block-by-block calibration passes every "
                          "block the first block's, so it cannot cut or calibrate this model (yet)")


def _takes_use_cache(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "use_cache")


def run_block(block: nn.Module, inputs: BlockInput, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """``block`` on ``hidden`` (default: ``inputs.hidden``) with the batch's other arguments; its hidden states out.

    Example:
        >>> run_block(nn.Linear(4, 2), BlockInput(torch.zeros(1, 3, 4))).shape
        torch.Size([1, 3, 2])
    """
    out = block(inputs.hidden if hidden is None else hidden, *inputs.args, **inputs.kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out  # older transformers return (hidden, ...)
