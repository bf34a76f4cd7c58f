"""Fold eval-mode BatchNorm into the Linear/Conv2d right before it (an option before the cut).

A BatchNorm after a layer scales each output row of its weight by ``gamma / sqrt(var + eps)``;
the deployed model multiplies that in anyway. Cutting the folded weight makes the truncated
SVD optimal for what actually runs (the LRPET paper's point), instead of for the unscaled
weight. The folded model has the BatchNorm replaced by ``nn.Identity`` and the same outputs
in eval mode.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from lorita.errors import LoritaError
from lorita.targets import check_model

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer name, batchnorm name)`` for every BatchNorm fed only by a Linear/Conv2d.

    Found by tracing the forward pass with ``torch.fx``; the layer's output must go to the
    BatchNorm alone (otherwise folding would change the other consumer).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
        >>> batchnorm_pairs(net)
        [('0', '1')]
    """
    check_model(model, "batchnorm_pairs")
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # fx raises many kinds of errors on dynamic control flow
        raise LoritaError(f"cannot trace {type(model).__name__} with torch.fx to find BatchNorm pairs ({err}); "
                          "fold by hand or compress without folding") from None
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _NORMS):
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        layer = modules.get(source.target)
        if isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1):
            pairs.append((source.target, node.target))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with each foldable BatchNorm multiplied into its layer.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
        >>> folded = fold_batchnorm(net)
        >>> type(folded[1]).__name__
        'Identity'
    """
    check_model(model, "fold_batchnorm")
    new = copy.deepcopy(model).eval()
    modules = dict(new.named_modules())
    for layer_name, norm_name in batchnorm_pairs(new):
        layer, norm = modules[layer_name], modules[norm_name]
        if norm.running_var is None:
            continue  # track_running_stats=False: batch statistics at inference, nothing fixed to fold
        scale = norm.running_var.add(norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        layer.weight.mul_(scale.reshape(-1, *[1] * (layer.weight.dim() - 1)))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(shift)
        folded_bias = bias * scale + shift
        if layer.bias is None:
            layer.bias = nn.Parameter(folded_bias)
        else:
            layer.bias.copy_(folded_bias)
        new.set_submodule(norm_name, nn.Identity())
    return new
