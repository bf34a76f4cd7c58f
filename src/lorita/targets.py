"""Which layers of a model lorita can compose or compress, and matching user targets.

Eligible: ``nn.Linear`` and ``nn.Conv2d`` with ``groups == 1`` (subclasses too, when
they keep the parent's ``forward``). Left plain, and named in one warning: grouped and
depthwise convs, transposed convs, Conv1d/Conv3d, the projections inside
``nn.MultiheadAttention`` (it reads their weights directly), and layers whose weight is
tied to another module. A module used under two names is one layer, known by its first
name, with the others as aliases.
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from torch import nn

from lorita.composed import COMPOSED_TYPES, ComposedConv2d
from lorita.errors import LoritaError
from lorita.hf import conv1d_base, is_conv1d
from lorita.lowrank import LOWRANK_TYPES

Selector = str | Sequence[str] | None


@dataclass
class Layer:
    """One eligible layer: its canonical name, the module, and every name it is used under."""

    name: str
    module: nn.Module
    aliases: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        m = self.module
        if isinstance(m, (nn.Conv2d, ComposedConv2d)):
            return "conv2d"
        return "linear"


@dataclass
class Scan:
    """Result of ``scan_layers``: eligible layers by name, and skipped ones with the reason."""

    layers: dict[str, Layer]
    skipped: dict[str, str]


def _keeps_forward(module: nn.Module, base: type) -> bool:
    return type(module).forward is base.forward


def _skip_reason(module: nn.Module, parent: nn.Module | None) -> str | None:
    """Why an nn layer that looks linear is left plain, or None if it is not such a layer."""
    if isinstance(parent, nn.MultiheadAttention):
        return "inside nn.MultiheadAttention (it reads the weights directly)"
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        kind = "depthwise" if module.groups == module.in_channels else "grouped"
        return f"{kind} conv (groups={module.groups}): a rank cut there adds parameters"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "transposed conv: not supported"
    if isinstance(module, (nn.Conv1d, nn.Conv3d)):
        return f"{type(module).__name__}: only Conv2d is supported"
    if isinstance(module, nn.Linear) and not _keeps_forward(module, nn.Linear):
        return f"{type(module).__name__} overrides Linear.forward"
    if isinstance(module, nn.Conv2d) and not _keeps_forward(module, nn.Conv2d):
        return f"{type(module).__name__} overrides Conv2d.forward"
    if is_conv1d(module) and not _keeps_forward(module, conv1d_base(type(module))):
        return f"{type(module).__name__} overrides transformers Conv1D.forward"
    if isinstance(module, (nn.modules.lazy.LazyModuleMixin,)):
        return "lazy module not initialised yet: run one forward pass first"
    return None


def scan_layers(model: nn.Module, *, composed: bool = True, plain: bool = True) -> Scan:
    """Find the eligible layers of ``model`` (plain Linear/Conv2d and/or composed layers).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4))
        >>> scan = scan_layers(net)
        >>> list(scan.layers), list(scan.skipped)
        (['0'], ['2'])
    """
    parents: dict[str, nn.Module] = {}
    by_id: dict[int, Layer] = {}
    layers: dict[str, Layer] = {}
    skipped: dict[str, str] = {}
    candidates: list[tuple[str, nn.Module]] = []
    sealed: list[str] = []  # composed and compressed layers: their insides are not layers of their own
    for name, module in model.named_modules(remove_duplicate=False):
        for child_name, _ in module.named_children():
            parents[f"{name}.{child_name}" if name else child_name] = module
        if any(name.startswith(prefix + ".") for prefix in sealed):
            continue
        if isinstance(module, LOWRANK_TYPES):
            sealed.append(name)
            continue
        if name == "" and (isinstance(module, (nn.Linear, nn.Conv2d, *COMPOSED_TYPES)) or is_conv1d(module)):
            continue  # the root itself cannot be swapped inside a container
        if isinstance(module, COMPOSED_TYPES):
            sealed.append(name)
            if composed:
                candidates.append((name, module))
            continue
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and not is_conv1d(module):
            continue
        reason = _skip_reason(module, parents.get(name))
        if reason is not None:
            skipped.setdefault(name, reason)
        elif plain:
            candidates.append((name, module))
    owners = _parameter_owners(model)
    for name, module in candidates:
        if id(module) in by_id:
            by_id[id(module)].aliases.append(name)
            continue
        own = module.parameters(recurse=False)
        if not isinstance(module, COMPOSED_TYPES) and any(owners[id(p)] != {id(module)} for p in own):
            skipped[name] = "weight tied to another module: merging or cutting it would untie them"
            continue
        layer = Layer(name, module, [name])
        by_id[id(module)] = layer
        layers[name] = layer
    return Scan(layers, skipped)


def _parameter_owners(model: nn.Module) -> dict[int, set[int]]:
    """Parameter id -> ids of the modules holding it directly (several when tied)."""
    owners: dict[int, set[int]] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), set()).add(id(module))
    return owners


def _matches(name: str, selector: str | Sequence[str]) -> bool:
    if isinstance(selector, str):
        return re.fullmatch(selector, name) is not None
    return any(name == key or name.endswith("." + key) for key in selector)


def _validate_selector(selector: Selector, what: str) -> None:
    if selector is None:
        return
    if isinstance(selector, str):
        try:
            re.compile(selector)
        except re.error as err:
            raise LoritaError(f"{what} is not a valid regular expression ({err}): {selector!r}") from None
        return
    if not isinstance(selector, Iterable) or not all(isinstance(k, str) for k in selector):
        raise LoritaError(f"{what} must be a list of module names or one regex string, got {selector!r}")


def select(scan: Scan, targets: Selector = None, exclude: Selector = None, *, verb: str = "compose",
           all_modules: Iterable[str] = ()) -> list[Layer]:
    """The eligible layers matched by ``targets`` (all if None) and not by ``exclude``.

    Names match exactly or as a ``.suffix``; a single string is a full-match regex. A
    listed name that matches nothing, or a selection that matches nothing, raises an error
    listing the layers that could have matched.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> [layer.name for layer in select(scan_layers(net), ["2"])]
        ['2']
    """
    _validate_selector(targets, "targets")
    _validate_selector(exclude, "exclude")
    names = list(scan.layers)
    available = ", ".join(names) if names else "(none)"
    if not isinstance(targets, (str, type(None))):
        all_names = set(all_modules)
        for key in targets:
            hit = [n for n in names if _matches(n, [key]) or any(_matches(a, [key]) for a in scan.layers[n].aliases)]
            if hit:
                continue
            skipped = [n for n in scan.skipped if _matches(n, [key])]
            if skipped:
                raise LoritaError(f"cannot {verb} {skipped[0]!r}: {scan.skipped[skipped[0]]}")
            if any(_matches(n, [key]) for n in all_names):
                raise LoritaError(f"module {key!r} is not a Linear or Conv2d layer, so it cannot be {verb}d; "
                                  f"layers that can: {available}")
            close = difflib.get_close_matches(key, names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise LoritaError(f"unknown module name {key!r}.{hint} Layers that can be {verb}d: {available}")
    chosen = []
    for name, layer in scan.layers.items():
        if targets is not None and not any(_matches(a, targets) for a in layer.aliases):
            continue
        if exclude is not None and any(_matches(a, exclude) for a in layer.aliases):
            continue
        chosen.append(layer)
    if not chosen:
        raise LoritaError(f"no layer matched targets={targets!r} exclude={exclude!r}. "
                          f"Layers that could have matched: {available}")
    return chosen


def warn_skipped(skipped: dict[str, str], verb: str) -> None:
    """One warning naming every layer left plain, with the reason for each."""
    if skipped:
        lines = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        warnings.warn(f"lorita.{verb} left {len(skipped)} layer(s) plain: {lines}", stacklevel=3)


def skipped_layers(model: nn.Module) -> dict[str, str]:
    """Layers that look linear but are left plain by compose and compress: ``{name: reason}``.

    The same list the warnings name (grouped/depthwise/transposed convs, Conv1d/Conv3d,
    projections inside ``nn.MultiheadAttention``, tied weights, ...), for results files.

    Example:
        >>> skipped_layers(nn.Sequential(nn.Conv1d(2, 2, 3), nn.Linear(2, 2)))
        {'0': 'Conv1d: only Conv2d is supported'}
    """
    return dict(scan_layers(model).skipped)


def replace_module(model: nn.Module, layer: Layer, new: nn.Module) -> None:
    """Put ``new`` at every name ``layer`` is used under (shared modules stay shared)."""
    for alias in layer.aliases:
        model.set_submodule(alias, new)
