"""One eval-mode forward pass with hooks on named modules: what each layer sees or produces.

Rank selection counts each layer's output positions (its MACs); the latency check needs
the input each layer really gets. Both run the model once on an example input.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from lorita.errors import LoritaError


def example_args(example_input: Any) -> tuple:
    """``example_input`` as the tuple of positional arguments for ``model(*args)``, checked.

    Example:
        >>> len(example_args(torch.zeros(1, 4)))
        1
    """
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if not args or not isinstance(args[0], torch.Tensor):
        raise LoritaError("example_input must be a tensor (or a tuple of tensors) the model accepts, "
                          "e.g. torch.randn(1, 3, 32, 32)")
    return args


@torch.inference_mode()
def observe(model: nn.Module, example_input: Any, hooks: dict[str, Callable], *, before: bool = False) -> None:
    """Run ``model`` once in eval mode with ``hooks[name]`` on module ``name``; restore the mode after.

    ``before=False``: each hook is called as ``hook(module, inputs, output)`` after the
    module runs; ``before=True``: as ``hook(module, inputs)`` before it runs.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        >>> seen = []
        >>> observe(net, torch.zeros(2, 4), {"0": lambda m, i, o: seen.append(o.shape)})
        >>> seen
        [torch.Size([2, 3])]
    """
    args = example_args(example_input)
    modules = dict(model.named_modules())
    handles = []
    was_training = model.training
    try:
        for name, hook in hooks.items():
            register = modules[name].register_forward_pre_hook if before else modules[name].register_forward_hook
            handles.append(register(hook))
        model.eval()
        model(*args)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
