"""``quantize``: int8 weights after the cut, one more step of the pipeline.

``quantize(model, "int8")`` returns a copy of ``model`` whose Linear and Conv2d layers (the
thin pairs of a compressed model included, and transformers' ``Conv1D``) hold int8
weights with one scale per output channel (``lorita.int8``). Low rank and int8 multiply:
a layer cut to a quarter of its parameters and stored in int8 is a sixteenth of its
float32 size. The string stands for a small frozen config, ``Int8Config()``, in the
style of torchao's ``quantize_(model, Int8WeightOnlyConfig())``.

Why not torchao or ``torch.ao.quantization``: docs/QUANTIZE.md (torchao 0.18's int8
weights on CPU dequantize through a tensor subclass on every call and cover no Conv2d,
its int8-activation path is many times slower than float32 here; PyTorch's own dynamic
quantization covers no Conv2d, is deprecated, and its packed weights do not go into
safetensors).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from lorita.checks import check_choice
from lorita.composed import COMPOSED_TYPES
from lorita.errors import LoritaError, LoritaWarning
from lorita.conv1d import conv1d_as_linear, is_conv1d
from lorita.int8 import GRANULARITIES, INT8_TYPES, QMAX, Granularity, Int8Conv2d, Int8Linear
from lorita.linalg import check_finite
from lorita.lowrank import LOWRANK_TYPES
from lorita.targets import (Layer, Scan, Selector, check_model, copy_model, keep_frozen, replace_module, scan_layers,
                            select, warn_skipped)

log = logging.getLogger(__name__)

COMPOSED_REASON = "composed layer: merge it first (lorita.merge), then quantize"


@dataclass(frozen=True)
class Int8Config:
    """Weight-only int8: symmetric, one scale per output channel (``"channel"``) or per layer (``"tensor"``).

    Example:
        >>> Int8Config()
        Int8Config(granularity='channel')
    """

    granularity: Granularity = "channel"

    def __post_init__(self):
        check_choice("granularity", self.granularity, GRANULARITIES)


CONFIGS = {"int8": Int8Config}


def resolve_config(config) -> Int8Config:
    """The config a string names (``"int8"``), or ``config`` itself when it is one.

    Example:
        >>> resolve_config("int8")
        Int8Config(granularity='channel')
    """
    if isinstance(config, Int8Config):
        return config
    if isinstance(config, str) and config in CONFIGS:
        return CONFIGS[config]()
    raise LoritaError(f"unknown quantization {config!r}; use one of {', '.join(map(repr, CONFIGS))} "
                      "or a config object such as lorita.Int8Config(granularity='tensor')")


def scan_quantizable(model: nn.Module) -> Scan:
    """The layers ``quantize`` can turn to int8, and the ones it leaves in float with the reason.

    Plain Linear, Conv2d (any groups) and transformers ``Conv1D`` layers, including the two
    layers inside each ``LowRankLinear`` / ``LowRankConv2d``; composed layers, tied
    weights, ``nn.MultiheadAttention``'s projections, Conv1d/Conv3d/transposed convs and
    TorchScript are left in float (``lorita.targets.scan_layers`` finds them).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Conv1d(4, 4, 1))
        >>> scan = scan_quantizable(net)
        >>> list(scan.layers), list(scan.skipped)
        (['0'], ['2'])
    """
    scan = scan_layers(model)
    layers: dict[str, Layer] = {}
    skipped: dict[str, str] = {}
    for name, layer in scan.layers.items():
        if isinstance(layer.module, COMPOSED_TYPES):
            skipped[name] = COMPOSED_REASON
        else:
            layers[name] = layer
    for name, reason in scan.skipped.items():
        module = model.get_submodule(name)
        if isinstance(module, nn.Conv2d) and module.groups != 1 and type(module).forward is nn.Conv2d.forward:
            layers[name] = Layer(name, module, [name])  # grouped/depthwise: a rank cut does not pay, int8 does
        else:
            skipped[name] = reason
    for name, module in model.named_modules():
        if isinstance(module, LOWRANK_TYPES):
            for index, inner in enumerate(module):
                if not isinstance(inner, INT8_TYPES):
                    layers[f"{name}.{index}"] = Layer(f"{name}.{index}", inner, [f"{name}.{index}"], pair=name)
    return Scan(layers, skipped)


def quantize(model: nn.Module, config: str | Int8Config = "int8", *, targets: Selector = None,
             exclude: Selector = None, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` with its Linear and Conv2d layers holding int8 weights (``lorita.int8``).

    Args:
        config: ``"int8"`` (``Int8Config()``: one scale per output channel) or an ``Int8Config``.
        targets / exclude: module names (exact or ``.suffix``) or one full-match regex, as in
            ``lorita.compose``; a low-rank pair's name selects both its layers, ``pair.0`` and ``pair.1``
            one (never a bare ``0`` or ``1``: that names the pair or layer called so).
        inplace: quantize the layers of ``model`` itself and return it (no copy).

    Layers that cannot be quantized (composed layers: merge first; tied weights, layers
    inside ``nn.MultiheadAttention``, Conv1d/Conv3d, ...) are left in float and named, with
    the reason, in one warning; so is a model with no such layer at all. How the int8 layers
    compute (int8 matmul for large Linears on CPU, a kept dequantized weight for small
    layers): ``lorita.int8``. ``lorita.save`` / ``lorita.load`` keep the int8 layers.

    Example:
        >>> import lorita
        >>> net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> small = quantize(lorita.compress(net, ratio=0.25), "int8")
        >>> type(small[0][0]).__name__, small[0][0].qweight.dtype
        ('Int8Linear', torch.int8)
        >>> x = torch.randn(4, 64)
        >>> bool((small(x) - lorita.compress(net, ratio=0.25)(x)).abs().max() < 0.05)
        True
    """
    check_model(model, "quantize", replaces=True)
    config = resolve_config(config)
    if not isinstance(inplace, bool):
        raise LoritaError(f"inplace must be True or False, got {inplace!r}")
    scan = scan_quantizable(model)
    if not scan.layers and targets is None and exclude is None:
        reason = f" ({'; '.join(sorted(set(scan.skipped.values())))})" if scan.skipped else ""
        warnings.warn(f"lorita.quantize: {type(model).__name__} has no Linear or Conv2d layer it can quantize"
                      f"{reason}; returned in float", LoritaWarning, stacklevel=2)
        return model if inplace else copy_model(model, "quantize")
    chosen = select(scan, targets, exclude, verb="quantize", all_modules=(n for n, _ in model.named_modules()))
    for layer in chosen:
        if any(p.is_meta for p in layer.module.parameters(recurse=False)):
            raise LoritaError(f"layer {layer.name!r} is on the meta device (no values): load its weights first")
        if not layer.module.weight.is_floating_point():
            raise LoritaError(f"layer {layer.name!r} has a {layer.module.weight.dtype} weight; int8 quantization "
                              "starts from a float model")
    warn_skipped(scan.skipped, "quantize")
    names = [layer.name for layer in chosen]
    del chosen, scan
    new = model if inplace else copy_model(model, "quantize")
    layers = scan_quantizable(new).layers
    for name, pair in list(new.named_modules()):
        if isinstance(pair, LOWRANK_TYPES) and f"{name}.0" in names and f"{name}.1" in names:
            pair[0], pair[1] = quantize_pair(pair, config.granularity, name)
            names = [n for n in names if n not in (f"{name}.0", f"{name}.1")]
    for name in names:
        target = layers.pop(name)
        replace_module(new, target, quantize_layer(target.module, config.granularity, name))
        del target
    log.info("quantized %d layer(s) to int8 (%s granularity)", len(names), config.granularity)
    return new


@torch.no_grad()
def quantize_pair(pair: nn.Module, granularity: Granularity = "channel", name: str = "pair") -> tuple[nn.Module, nn.Module]:
    """The two int8 layers of a low-rank pair ``second(first(x))``, the second one's scales folded into the first.

    The second layer's weight ``B`` (out x r) is scaled per *input* column, ``B = B_q diag(b)``
    (its columns are ``u_i sqrt(sigma_i)``: their sizes differ, its rows mix them), and
    ``diag(b)`` moves into the first layer, whose weight ``diag(b) A`` is then quantized per
    output row as usual. The second layer keeps a single scale of 1: a pair stores ``r``
    scales, not ``r + out``.

    Example:
        >>> import lorita
        >>> pair = lorita.compress(nn.Sequential(nn.Linear(64, 64)), ratio=0.25)[0]
        >>> first, second = quantize_pair(pair)
        >>> first.scale.shape, second.scale.tolist()
        (torch.Size([16]), [1.0])
    """
    first, second = pair[0], pair[1]
    b_matrix = second.weight.reshape(second.weight.shape[0], -1)  # (out, r): a 1x1 conv's kernel flattened
    check_finite(b_matrix, f"{name}.1")
    amax = b_matrix.float().abs().amax(dim=0)  # (r,)
    b = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    q = torch.round(b_matrix.float() / b).clamp_(-QMAX, QMAX).to(torch.int8)
    shape = (-1,) + (1,) * (first.weight.dim() - 1)
    folded = first.weight * b.to(first.weight.dtype).reshape(shape)  # diag(b) A
    if isinstance(first, nn.Conv2d):
        new_first = Int8Conv2d(first, granularity=granularity, device=folded.device, dtype=folded.dtype)
        new_second = Int8Conv2d(second, granularity="tensor", device=folded.device, dtype=folded.dtype)
    else:
        new_first = Int8Linear(first.in_features, first.out_features, bias=first.bias is not None,
                               granularity=granularity, device=folded.device, dtype=folded.dtype)
        new_second = Int8Linear(second.in_features, second.out_features, bias=second.bias is not None,
                                granularity="tensor", device=folded.device, dtype=folded.dtype)
    first_bias = None if first.bias is None else first.bias * b.to(first.bias.dtype)  # B_q diag(b) (A x + c)
    new_first.load_float(folded, first_bias, f"{name}.0")
    new_second.qweight.copy_(q.reshape(second.weight.shape))
    if second.bias is not None:
        check_finite(second.bias, f"{name}.1", "bias")
        new_second.bias.copy_(second.bias)
    new_first.train(first.training)
    new_second.train(second.training)
    keep_frozen(first, new_first)
    keep_frozen(second, new_second)
    return new_first, new_second


def quantize_layer(module: nn.Module, granularity: Granularity = "channel", name: str = "layer") -> nn.Module:
    """The int8 form of one plain ``nn.Linear``, ``nn.Conv2d`` or transformers ``Conv1D``.

    Example:
        >>> quantize_layer(nn.Linear(4, 2)).qweight.shape
        torch.Size([2, 4])
    """
    if isinstance(module, nn.Conv2d):
        return Int8Conv2d.from_conv(module, granularity, name)
    linear = conv1d_as_linear(module) if is_conv1d(module) else module  # Conv1D: a Linear with W^T
    if not isinstance(linear, nn.Linear):
        raise LoritaError(f"cannot quantize {name!r} ({type(module).__name__}): only Linear, Conv2d and "
                          "transformers Conv1D")
    layer = Int8Linear.from_linear(linear, granularity, name)
    layer.train(module.training)
    return layer
