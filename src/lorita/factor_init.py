"""How a composed layer's factors start: the paper's init, the same factors scaled, and the per-layer choice.

The paper initialises every factor as PyTorch initialises a layer of its shape. The product
of N such factors is smaller than the layer it replaces: each square factor shrinks a random
vector by about ``1/sqrt(3)``, so the product's Frobenius norm is about ``3^(-(N-1)/2)`` of a
default-initialised layer's (0.58 at N=2, 0.33 at N=3). A normalisation layer right after the
composed layer absorbs that. Without one the shrink compounds from layer to layer: a
64-128-128-10 MLP composed at depth 3 and trained with SGD (lr 0.05, momentum 0.9) stays at
chance for 5 epochs where the plain one reaches 93% (docs/INIT.md has the measurements).

- ``init_scale=s`` keeps the paper's random factors and multiplies all of them by one common
  number, so that the product's Frobenius norm is ``s`` times the original layer's (the layer
  being composed; for a freshly built model, its own init, whatever scheme the model uses).
  ``s`` between the paper's ratio (about 0.33 at N=3) and 1 moves continuously from the
  paper's init to a product of the layer's own scale, the scale ``init="balanced"`` gives.
- ``init="auto"`` (compose's default) decides per layer from the model's structure: the
  paper's init where a normalisation layer directly follows the layer, and at the model's last
  layer when a normalisation layer directly feeds it (nothing comes after it to shrink, and a
  unit-scale input lets its factors learn: the FCN's head); the scaled init (``AUTO_SCALE``
  unless ``init_scale`` says otherwise) everywhere else. Models built of Linear/Conv ->
  BatchNorm blocks and a head (the FCN, ResNet and VGG of the zoo) therefore start exactly as
  with the paper's init; a network without normalisation has every layer scaled.

"Directly" is read from the module tree, without running the model. A layer's follower is
the next child registered in the same parent; the last layer's input is the module registered
just before it in the whole model. Both skip parameter-free modules that keep a signal's
scale (activations, dropout, identity, pooling, flatten, empty containers). ``nn.Sequential``
registers its children in the order it calls them; other modules conventionally do too
(``self.conv1``, ``self.bn1``).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from lorita.checks import check_number
from lorita.errors import LoritaError, LoritaWarning
from lorita.messages import listed

AUTO_SCALE = 1.0
"""The product's Frobenius norm over the original layer's, for the layers ``init="auto"`` scales."""

WARN_BELOW = 0.75
"""A layer with no normalisation after it whose product starts below this fraction of its own
scale is named in a warning. The paper's init gives about 0.58 at depth 2 and 0.33 at depth 3
for PyTorch's default layer init; on the MLP of docs/INIT.md 0.58 reached 54% and 0.6 at depth 3
72% where 1.0 reached 95%. The zoo's GPT (its own init, std 0.02) starts at 1.2 to 2.4."""

_NORM_NAME = re.compile(r"Norm(\dd)?$")  # BatchNorm2d, LayerNorm, GroupNorm, RMSNorm, LlamaRMSNorm, ...
_PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.ReLU,
                 nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Mish, nn.Hardswish,
                 nn.Hardtanh, nn.Softplus, nn.PReLU, nn.Flatten, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d,
                 nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)


def _passes_through(module: nn.Module) -> bool:
    """A parameter-free module that keeps a signal's scale, or an empty container (e.g. ``nn.Sequential()``)."""
    empty = isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)) and len(module) == 0
    return isinstance(module, _PASS_THROUGH) or empty


@dataclass(frozen=True)
class LayerInit:
    """How one layer's factors start: ``init`` as in ``compose``, and ``scale`` (None: as that init gives them)."""

    init: str
    scale: float | None = None


def is_normalisation(module: nn.Module) -> bool:
    """Whether ``module`` normalises its input's scale away: torch's norm layers, or a class named ``...Norm``.

    Example:
        >>> is_normalisation(nn.BatchNorm1d(4)), is_normalisation(nn.LayerNorm(4)), is_normalisation(nn.ReLU())
        (True, True, False)
    """
    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
    return isinstance(module, norms) or bool(_NORM_NAME.search(type(module).__name__))


def normalised_layers(model: nn.Module) -> set[str]:
    """Names of the modules directly followed by a normalisation layer in the module tree.

    The follower of a module is the next child registered in the same parent after skipping
    parameter-free modules that keep the scale (activations, dropout, identity, pooling, flatten).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
        >>> sorted(normalised_layers(net))
        ['0']
    """
    found: set[str] = set()
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        prefix = f"{parent_name}." if parent_name else ""
        for i, (name, _) in enumerate(children):
            follower = next((m for _, m in children[i + 1:] if not _passes_through(m)), None)
            if follower is not None and is_normalisation(follower):
                found.add(prefix + name)
    return found


def last_layer(model: nn.Module) -> str | None:
    """The name of the last module, in registration order, that holds parameters of its own.

    Example:
        >>> last_layer(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), nn.Softmax(dim=1)))
        '2'
    """
    owners = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    return owners[-1] if owners else None


def fed_by_normalisation(model: nn.Module, name: str) -> bool:
    """Whether the module registered just before ``name`` in the whole model, after skipping modules
    that keep the scale, is a normalisation layer (containers are looked through).

    Example:
        >>> net = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU()), nn.Linear(4, 2))
        >>> fed_by_normalisation(net, "1"), fed_by_normalisation(net, "0.0")
        (True, False)
    """
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    position = next((i for i, (n, _) in enumerate(leaves) if n == name), None)
    before = [m for _, m in leaves[:position] if not _passes_through(m)] if position is not None else []
    return bool(before) and is_normalisation(before[-1])


def check_init_scale(init: str, init_scale: float | None) -> None:
    """Refuse an ``init_scale`` that is not a positive number, or given with an init that has nothing to scale.

    Example:
        >>> check_init_scale("default", 0.5)
        >>> check_init_scale("preserve", 0.5)
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: init_scale scales the paper's random factors (init="default" or "auto"), not init="preserve"; leave init_scale out, or use init="default"
    """
    if init_scale is None:
        return
    check_number("init_scale", init_scale, minimum=0, low_open=True,
                 meaning="the product's Frobenius norm over the original layer's")
    if init not in ("auto", "default"):
        raise LoritaError(f'init_scale scales the paper\'s random factors (init="default" or "auto"), not '
                          f'init="{init}"; leave init_scale out, or use init="default"')


def plan(names: list[str], exposed: set[str], init: str, init_scale: float | None,
         composes: bool = True) -> dict[str, LayerInit]:
    """Each named layer's start: ``init="auto"`` resolved per layer (``exposed``: the layers ``unguarded``
    names), ``init_scale`` checked against ``init``; a warning when it scales none of them (``composes=False``: the
    layers stay plain, depth 1, so nothing is scaled anyway).

    Example:
        >>> plan(["0", "2", "4"], {"2"}, "auto", None)["2"], plan(["0", "2", "4"], {"2"}, "auto", None)["4"]
        (LayerInit(init='default', scale=1.0), LayerInit(init='default', scale=None))
    """
    check_init_scale(init, init_scale)
    if init != "auto":
        return {name: LayerInit(init, init_scale) for name in names}
    if composes and init_scale is not None and names and not exposed & set(names):
        warnings.warn(f'init_scale={init_scale:g} changes nothing here: under init="auto" it scales only the composed '
                      "layers with no normalisation layer after them, and each of these has one (or is the last layer, "
                      'fed by one); use init="default" to scale every layer by it (lorita train: --init default), or '
                      "leave init_scale out",
                      LoritaWarning, stacklevel=3)
    scale = AUTO_SCALE if init_scale is None else init_scale
    return {name: LayerInit("default", scale if name in exposed else None) for name in names}


def unguarded(model: nn.Module, names: list[str]) -> list[str]:
    """The named layers whose starting scale nothing absorbs: no normalisation layer directly after
    them, and, for the model's last layer, none directly before it either.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> unguarded(net, ["0", "2", "4"])
        ['2', '4']
        >>> unguarded(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)), ["0", "2"])
        []
    """
    kept = normalised_layers(model)
    last = last_layer(model)
    if last is not None and fed_by_normalisation(model, last):
        kept.add(last)
    return [name for name in names if name not in kept]


@torch.no_grad()
def start_ratio(layer: nn.Module, reference: torch.Tensor) -> float:
    """``||product of the factors||_F / ||reference||_F`` (nan when the reference is zero), without gradients.

    Example:
        >>> from lorita.composed import ComposedLinear
        >>> layer = ComposedLinear.from_linear(nn.Linear(8, 8), depth=2, init="preserve")
        >>> round(start_ratio(layer, layer.merged_weight()), 6)
        1.0
    """
    ref = reference.detach().double().norm()
    # The product in the parameters' dtype (float64 would cost a merge's time on large models; a norm
    # needs no more precision than float32 gives).
    return (layer.effective_weight().double().norm() / ref).item() if ref > 0 else math.nan


@torch.no_grad()
def rescale(layer: nn.Module, reference: torch.Tensor, scale: float) -> None:
    """Multiply every factor by one common number so the product's norm is ``scale * ||reference||_F``.

    A zero or meta-device reference (no scale to match) leaves the factors as they are.

    Example:
        >>> from lorita.composed import ComposedLinear
        >>> torch.manual_seed(0) and None
        >>> plain = nn.Linear(16, 16)
        >>> layer = ComposedLinear.from_linear(plain, depth=3)
        >>> rescale(layer, plain.weight, 0.5)
        >>> round(start_ratio(layer, plain.weight), 4)
        0.5
    """
    if reference.is_meta:
        return
    ratio = start_ratio(layer, reference)
    if not math.isfinite(ratio) or ratio == 0:
        return
    factors = list(layer.factors) if hasattr(layer, "factors") else [layer.spatial.weight, *layer.mixers]
    gain = (scale / ratio) ** (1.0 / len(factors))
    for f in factors:
        f.mul_(gain)


def warn_small_start(ratios: dict[str, float], depth: int) -> None:
    """One LoritaWarning naming the layers (no normalisation after them) whose product starts small.

    ``ratios``: product norm over the original layer's, by layer name; those below
    ``WARN_BELOW`` are named.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_small_start({"fc1": 0.33, "fc2": 0.9}, depth=3)
        >>> "'fc1'" in str(caught[0].message) and "'fc2'" not in str(caught[0].message)
        True
    """
    small = {n: r for n, r in ratios.items() if math.isfinite(r) and r < WARN_BELOW}
    if not small:
        return
    shown = listed(f"{n!r} ({r:.2g})" for n, r in small.items())
    chain = math.prod(small.values())
    warnings.warn(
        f"{len(small)} composed layer(s) with no normalisation layer after them start with a product of the "
        f"factors below the layer's own scale (product norm / layer norm): {shown}. Through these "
        f"layers in a row a signal starts about {chain:.1g} of the plain model's, and training can stall for many "
        f"epochs. Use init=\"auto\" (compose's default) or init_scale=1.0 (lorita train: --init auto or "
        f"--init-scale 1); keep init=\"default\" at depth {depth} only where a normalisation layer follows.",
        LoritaWarning, stacklevel=3)
