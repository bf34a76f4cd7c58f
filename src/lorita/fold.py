"""Fold eval-mode BatchNorm into the Linear/Conv2d right before it (an option before the cut).

A BatchNorm after a layer scales each output row of its weight by ``gamma / sqrt(var + eps)``;
the deployed model multiplies that in anyway. Cutting the folded weight makes the truncated
SVD optimal for what actually runs (the LRPET paper's point), instead of for the unscaled
weight. The folded model has the BatchNorm replaced by ``nn.Identity`` and the same outputs
in eval mode.

A pair is folded only when that provably keeps the outputs: the layer and the BatchNorm each run
once, the layer's output goes to the BatchNorm alone, neither has hooks, the layer's weight is its
own plain parameter (not tied to another module, not parametrized or pruned), and a BatchNorm1d
after a Linear normalises the Linear's features (its output is 2-D on ``example_input``; on a
3-D output BatchNorm1d normalises dimension 1, not the features). Every other pair is left as it
is, with a warning naming it and why.
"""

from __future__ import annotations

import collections
import warnings
from typing import Any

import torch
from torch import fx, nn

from lorita.errors import LoritaError, LoritaWarning
from lorita.probe import observe
from lorita.targets import check_model, copy_model, outside_weight, parameter_owners

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def batchnorm_pairs(model: nn.Module, example_input: Any = None) -> list[tuple[str, str]]:
    """``(layer name, batchnorm name)`` for every BatchNorm fed only by a Linear/Conv2d it can be folded into.

    Found by tracing the forward pass with ``torch.fx``; the rules are the module's. ``example_input``
    (one batch the model accepts) is needed for a Linear followed by a BatchNorm1d: without it such
    pairs are left out, with a warning.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
        >>> batchnorm_pairs(net, torch.zeros(2, 4))
        [('0', '1')]
    """
    check_model(model, "batchnorm_pairs")
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # fx raises many kinds of errors on dynamic control flow
        raise LoritaError(f"cannot trace {type(model).__name__} with torch.fx to find BatchNorm pairs ({err}); "
                          "fold by hand or compress without folding") from None
    modules = dict(model.named_modules())
    calls = collections.Counter(node.target for node in graph.nodes if node.op == "call_module")
    owners = parameter_owners(model)
    pairs, skipped = [], {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _NORMS):
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        layer = modules.get(source.target)
        if isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1):
            why = _unfoldable(layer, modules[node.target], calls[source.target], calls[node.target], owners)
            if why is None:
                pairs.append((source.target, node.target))
            else:
                skipped[(source.target, node.target)] = why
    _check_linear_outputs(model, example_input, pairs, skipped)
    for (layer_name, norm_name), why in skipped.items():
        warnings.warn(f"BatchNorm {norm_name} is not folded into {layer_name}: {why}", LoritaWarning, stacklevel=2)
    return pairs


def _unfoldable(layer: nn.Module, norm: nn.Module, layer_calls: int, norm_calls: int,
                owners: dict[int, set[int]]) -> str | None:
    """Why folding ``norm`` into ``layer`` could change the model's outputs, or None."""
    if layer_calls > 1 or norm_calls > 1:
        return "one of them runs more than once in the forward pass (folding would change every call)"
    if any(owners.get(id(p), set()) != {id(layer)} for p in layer.parameters(recurse=False)):
        return "the layer's weight is tied to another module (folding would change that one too)"
    outside = outside_weight(layer)
    if outside is not None:
        return f"the layer: {outside}"
    if norm._forward_hooks or norm._forward_pre_hooks:
        return "the BatchNorm has forward hooks (folding would change what they see)"
    return None


def _check_linear_outputs(model: nn.Module, example_input: Any, pairs: list, skipped: dict) -> None:
    """Remove from ``pairs`` each Linear -> BatchNorm1d pair not shown on ``example_input`` to be 2-D (into
    ``skipped``, with why)."""
    linear = [pair for pair in pairs if isinstance(model.get_submodule(pair[0]), nn.Linear)]
    if not linear:
        return
    dims: dict[str, int] = {}
    if example_input is not None:
        observe(model, example_input, {name: _record_dim(dims, name) for name, _ in linear})
    for pair in linear:
        if dims.get(pair[0]) != 2:
            pairs.remove(pair)
            skipped[pair] = ("pass example_input= to fold it (a Linear followed by BatchNorm1d folds only when the "
                             "Linear's output is 2-D)" if example_input is None else
                             f"the Linear's output is {dims.get(pair[0], 'not')}-D on example_input, where "
                             "BatchNorm1d normalises dimension 1, not the Linear's features")


def _record_dim(dims: dict[str, int], name: str):
    def hook(module, inputs, output):
        dims[name] = output.dim() if isinstance(output, torch.Tensor) else -1
    return hook


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example_input: Any = None) -> nn.Module:
    """A copy of ``model`` (in eval mode) with each foldable BatchNorm multiplied into its layer (``batchnorm_pairs``;
    ``example_input`` lets a BatchNorm1d after a Linear fold).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> folded = fold_batchnorm(net)
        >>> type(folded[1]).__name__
        'Identity'
    """
    check_model(model, "fold_batchnorm")
    new = copy_model(model, "fold_batchnorm").eval()
    modules = dict(new.named_modules())
    for layer_name, norm_name in batchnorm_pairs(new, example_input):
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
