"""``compose`` turns layers into products of factors; ``merge`` multiplies them back.

Both return a new model and leave their argument untouched (``merge(inplace=True)`` is
the exception: it swaps the layers of the given model one by one, without a second copy).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, get_args

import torch
from torch import nn

from lorita.checks import check_choice, check_int
from lorita.composed import COMPOSED_TYPES, MAX_DEPTH, MODES, ComposedConv2d, ComposedLinear, Init, Mode, Side
from lorita.conv1d import conv1d_as_linear, conv1d_base, conv1d_from_matrix, is_conv1d
from lorita.errors import LoritaError
from lorita.factor_init import LayerInit, check_init_scale, plan, rescale, start_ratio, unguarded, warn_small_start
from lorita.linalg import check_finite, check_values
from lorita.targets import (Selector, check_model, copy_model, own_attributes, replace_module, require_layers,
                            scan_layers, select, warn_skipped)

log = logging.getLogger(__name__)

FactorSide = Literal["input", "smaller"]
FACTOR_SIDES: tuple[FactorSide, ...] = get_args(FactorSide)
ComposeInit = Literal["auto", "default", "preserve", "balanced"]
COMPOSE_INITS: tuple[ComposeInit, ...] = get_args(ComposeInit)  # "auto": per layer (lorita.factor_init)


def compose(model: nn.Module, depth: int = 3, *, targets: Selector = None, exclude: Selector = None,
            init: ComposeInit = "auto", init_scale: float | None = None, mode: Mode = "auto",
            factor_side: FactorSide = "input", example_input: Any = None, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` with every targeted Linear/Conv2d trained as a product of ``depth`` factors.

    Args:
        depth: number of factors N (1 returns an equivalent plain copy), at most ``MAX_DEPTH`` (64,
            the most a lorita file describes).
        targets / exclude: module names (exact or ``.suffix``) or one full-match regex;
            default: every Linear and every Conv2d with ``groups == 1``.
        init: ``"auto"`` (default) the paper's init where a normalisation layer directly
            follows the layer or where it is the model's last layer, elsewhere the paper's
            factors scaled so their product has the original layer's Frobenius norm (a plain
            network without normalisation then trains as its plain version does; the paper's
            init there can stall at chance: docs/INIT.md); ``"default"`` every factor with
            PyTorch's default init (the paper: the product starts about ``3^(-(N-1)/2)`` of a
            default layer's scale); ``"preserve"`` factors whose product equals the current
            weight (the model keeps its outputs); ``"balanced"`` a balanced split of a freshly
            initialised layer. ``lorita.factor_init`` has the rules.
        init_scale: with ``init="default"``, every layer's factors are scaled by one common
            number so the product's Frobenius norm is this fraction of the original layer's
            (about 0.33 is the paper's at depth 3, 1.0 the layer's own scale); with ``"auto"``,
            the fraction for the layers it scales (default 1.0; a ``LoritaWarning`` when it scales
            none). None: as the init gives it.
        mode: ``"sequential"``, ``"fused"`` or ``"auto"`` (same values; auto picks the
            cheaper per call).
        factor_side: where a Linear's square factors sit: ``"input"`` (``in x in``, the
            authors' choice) or ``"smaller"`` (``min(in, out)`` square, cheaper). Convs
            always mix output channels.
        example_input: optional input (a tensor, a tuple, or a dict of named arguments such as
            a tokenizer's output) to run the model on once, in eval mode: layers whose
            parent reads their ``.weight`` instead of calling them
            (torchvision Swin, transformers Mamba/WavLM, timm BEiT qkv) are then left plain
            and named in the warning, since a composed layer there never runs its factors
            one after another. Without it no forward runs and such layers are composed
            anyway: still correct (their ``weight`` is the factors' product, differentiable),
            but always computed in the fused form.
        inplace: compose the layers of ``model`` itself, one at a time, and return it: no
            copy of the model, each plain layer freed once it is replaced (when nothing else
            refers to it). Everything is checked before any layer is touched. For large
            models: a 1.1B LLaMA-style model composed (depth 2) in place peaks at 1.8 times
            its size instead of 3.7 (the composed model alone is 1.4; docs/SCALE.md).

    Layers lorita cannot handle (depthwise/grouped convs, Conv1d, tied weights, ...) are
    left plain and named, with the reason, in one warning (``lorita.targets.skipped_layers``).
    A meta-device model (no values) can be composed with ``init="default"`` or ``"auto"``
    (structure only: nothing to scale); ``"preserve"``, ``"balanced"`` and ``init_scale`` need
    values. With ``init="default"``, layers with no normalisation after them whose product
    starts below 0.75 of their scale are named in a LoritaWarning (training may stall there).

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> composed = compose(net, depth=3, init="preserve")
        >>> x = torch.randn(4, 8)
        >>> torch.allclose(composed(x), net(x), atol=1e-5)
        True
        >>> compose(net, depth=2, inplace=True) is net  # no copy: net's layers are replaced
        True
    """
    check_model(model, "compose", replaces=True)
    check_int("depth", depth, maximum=MAX_DEPTH, meaning="number of factors per layer; a lorita file holds at most "
              f"{MAX_DEPTH}")
    check_choice("init", init, COMPOSE_INITS)
    check_init_scale(init, init_scale)
    check_choice("mode", mode, MODES)
    check_choice("factor_side", factor_side, FACTOR_SIDES)
    already = [n for n, m in model.named_modules() if isinstance(m, COMPOSED_TYPES)]
    if already:
        raise LoritaError(f"model is already composed (e.g. {already[0]!r}); call lorita.merge(model) first")
    scan = scan_layers(model, composed=False, example_input=example_input)
    require_layers(model, scan.layers, "compose")
    chosen = select(scan, targets, exclude, verb="compose", all_modules=(n for n, _ in model.named_modules()))
    warn_skipped(scan.skipped, "compose")
    names = [layer.name for layer in chosen]
    exposed = set(unguarded(model, names))  # no normalisation after them: their starting scale matters
    starts = plan(names, exposed, init, init_scale, composes=depth > 1)
    if init in ("preserve", "balanced") or init_scale is not None:
        what = "init_scale (the layer's norm)" if init_scale is not None else f'init="{init}" (a balanced SVD split)'
        for layer in chosen:
            check_values(layer.module.weight, f"layer {layer.name!r}", what)
    if init == "preserve":
        for layer in chosen:
            check_finite(layer.module.weight, layer.name)
            if layer.module.bias is not None:
                check_finite(layer.module.bias, layer.name, "bias")
    del chosen, scan  # (in place, these would keep every replaced layer alive)
    new = model if inplace else copy_model(model, "compose")
    if depth == 1:
        return new
    # Re-scan: on a copy, so we replace its modules, not the original's.
    layers = scan_layers(new, composed=False, find_readers=False).layers
    ratios = {}  # product norm / layer norm of the layers with nothing to absorb a small start
    for name in names:
        target = layers.pop(name)  # our last reference to the plain layer goes with it
        start, weight = starts[name], target.module.weight
        layer = _compose_layer(target.module, depth, start, mode, factor_side)
        if name in exposed and start.init == "default" and not weight.is_meta:
            ratios[name] = start.scale if start.scale is not None else start_ratio(layer, weight)
        replace_module(new, target, layer)
        del target, weight, layer
    log.info("composed %d layer(s) with depth %d (init=%s, init_scale=%s, mode=%s)", len(names), depth, init,
             init_scale, mode)
    warn_small_start(ratios, depth)
    return new


def _compose_layer(module: nn.Module, depth: int, start: LayerInit, mode: Mode, factor_side: FactorSide) -> nn.Module:
    init: Init = start.init  # type: ignore[assignment]  # plan() resolved "auto" per layer
    if isinstance(module, nn.Conv2d):
        layer = ComposedConv2d.from_conv(module, depth, init=init, mode=mode)
    else:
        linear = conv1d_as_linear(module) if is_conv1d(module) else module  # Conv1D: Linear with W^T
        side: Side = "input"
        if factor_side == "smaller" and linear.out_features < linear.in_features:
            side = "output"
        layer = ComposedLinear.from_linear(linear, depth, init=init, side=side, mode=mode)
    if start.scale is not None:
        rescale(layer, module.weight, start.scale)  # Conv1D's W^T has the same norm
    layer.original_type = type(module)  # restored by merge (subclasses keep their class)
    layer.original_attributes = own_attributes(module)  # and their own attributes (a role, an init function)
    layer.train(module.training)
    return layer


def merge(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` with every composed layer multiplied back into a plain Linear/Conv2d.

    The result has the original architecture: same classes, state_dict keys and shapes,
    so ``Original().load_state_dict(merge(m).state_dict())`` works with ``strict=True``.
    Products are formed in float64 and cast back to the parameters' dtype.

    ``inplace=True`` merges the layers of ``model`` itself, one at a time, and returns it:
    no second copy of the model, each layer's factors freed once it is swapped (when
    nothing else refers to them). Every factor and bias is checked for NaN/Inf before
    any layer is touched. A meta-device model merges too (structure only).

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> merged = merge(compose(net, depth=2))
        >>> type(merged[0]).__name__, merged[0].weight.shape
        ('Linear', torch.Size([8, 8]))
    """
    check_model(model, "merge", replaces=True)
    for layer in scan_layers(model, plain=False).layers.values():
        for key, p in layer.module.named_parameters():
            if not p.is_meta:  # a meta model merges as structure only
                check_finite(p.detach(), layer.name, "bias" if key == "bias" else "weight")
    new = model if inplace else copy_model(model, "merge")
    layers = scan_layers(new, plain=False).layers
    for name in list(layers):
        layer = layers.pop(name)  # our last reference to the composed layer goes with it
        replace_module(new, layer, merge_layer(layer.module, layer.name))
    return new


@torch.no_grad()
def merge_layer(module: nn.Module, name: str = "layer") -> nn.Module:
    """The plain ``nn.Linear`` / ``nn.Conv2d`` a composed layer stands for.

    Example:
        >>> layer = ComposedLinear(4, 2, depth=3)
        >>> merge_layer(layer).weight.shape
        torch.Size([2, 4])
    """
    weight = module.merged_weight()
    if not weight.is_meta:
        check_finite(weight, name)
    bias = module.bias
    original = getattr(module, "original_type", None)
    if original is not None and conv1d_base(original) is not None:  # transformers Conv1D: stored as W^T
        plain = conv1d_from_matrix(original, weight, bias)
        plain.train(module.training)
        return plain
    kw = dict(device=weight.device, dtype=weight.dtype)
    if isinstance(module, ComposedConv2d):
        conv = module.spatial
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                          padding=conv.padding, dilation=conv.dilation, bias=bias is not None,
                          padding_mode=conv.padding_mode, **kw)
    else:
        plain = nn.Linear(module.in_features, module.out_features, bias=bias is not None, **kw)
    plain.weight.copy_(weight)
    if bias is not None:
        plain.bias.copy_(bias)
    if original is not None and original is not type(plain) and issubclass(original, type(plain)):
        plain.__class__ = original  # e.g. a Linear subclass that keeps Linear.forward
    plain.__dict__.update(getattr(module, "original_attributes", {}))
    plain.train(module.training)
    return plain
