"""``save`` / ``load``: composed, merged and compressed models in one safetensors file.

The file holds the weights (safetensors: no pickle, nothing executed on load) and, in
its metadata, a JSON description: how to build the original architecture and which
layers are composed (depth, placement, mode) or compressed (rank). ``load`` builds the
architecture, re-applies that structure and loads the weights with ``strict=True``.

The architecture comes from, in order: ``load(path, model=...)`` (an instance or a
zero-argument callable), else the model's ``lorita_config`` attribute
(``{"factory": "pkg.mod:function", "kwargs": {...}}``, set by ``lorita.models``), else
its class imported by name and called with no arguments.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from lorita.atomic import atomic_path
from lorita.composed import ComposedConv2d, ComposedLinear
from lorita.errors import LoritaError
from lorita.hf import conv1d_as_linear, is_conv1d
from lorita.linalg import check_finite
from lorita.lowrank import LOWRANK_TYPES, LowRankConv2d, LowRankLinear
from lorita.targets import scan_layers

FORMAT = "lorita"
VERSION = 1


def describe(model: nn.Module) -> dict:
    """The JSON-able description ``save`` stores next to the weights.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4))
        >>> describe(net)["layers"]
        {}
    """
    layers: dict[str, dict] = {}
    for name, layer in scan_layers(model, plain=False).layers.items():
        m = layer.module
        if isinstance(m, ComposedLinear):
            entry = {"type": "composed_linear", "depth": m.depth, "side": m.side, "mode": m.mode}
        else:
            entry = {"type": "composed_conv2d", "depth": m.depth, "mode": m.mode}
        layers[name] = {**entry, "aliases": layer.aliases}
    seen: dict[int, str] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, LOWRANK_TYPES):
            if id(m) in seen:
                layers[seen[id(m)]]["aliases"].append(name)
                continue
            seen[id(m)] = name
            kind = "lowrank_linear" if isinstance(m, LowRankLinear) else "lowrank_conv2d"
            layers[name] = {"type": kind, "rank": m.rank, "aliases": [name]}
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    return {"format": FORMAT, "version": VERSION, "architecture": _architecture(model), "layers": layers,
            "dtype": str(floats[0]).replace("torch.", "") if floats else "float32"}


def _architecture(model: nn.Module) -> dict:
    config = getattr(model, "lorita_config", None)
    if config is not None:
        try:
            json.dumps(config)
        except TypeError as err:
            raise LoritaError(f"model.lorita_config must be plain JSON ({err})") from None
        return dict(config)
    cls = type(model)
    return {"class": f"{cls.__module__}:{cls.__qualname__}"}


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` (composed, merged or compressed) to ``path`` atomically.

    Every weight is checked for NaN/Inf first; a failure leaves any previous file intact.

    Example:
        >>> import tempfile, os
        >>> net = nn.Sequential(nn.Linear(4, 2))
        >>> path = os.path.join(tempfile.mkdtemp(), "net.lorita")
        >>> save(net, path); os.path.exists(path)
        True
    """
    if not isinstance(model, nn.Module):
        raise LoritaError(f"save needs an nn.Module, got {type(model).__name__}")
    for name, p in model.named_parameters():
        if p.is_floating_point():
            check_finite(p.detach(), name)
    meta = {"lorita": json.dumps(describe(model))}
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata=meta)


def read_description(path: str | os.PathLike) -> dict:
    """The description stored in a lorita file, with a clear error for anything else.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "net.lorita")
        >>> save(nn.Linear(2, 2), path)
        >>> read_description(path)["format"]
        'lorita'
    """
    path = Path(path)
    if not path.is_file():
        raise LoritaError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise LoritaError(f"{path} is not a readable safetensors file ({err}); was it written by lorita.save "
                          "and copied completely?") from None
    if "lorita" not in meta:
        raise LoritaError(f"{path} is a safetensors file but not a lorita model (no 'lorita' metadata); "
                          "load plain weights with safetensors.torch.load_model into your own model")
    try:
        desc = json.loads(meta["lorita"])
    except json.JSONDecodeError as err:
        raise LoritaError(f"{path}: the lorita description is not valid JSON ({err})") from None
    if not isinstance(desc, dict) or desc.get("format") != FORMAT or not isinstance(desc.get("layers"), dict):
        raise LoritaError(f"{path}: the lorita description is malformed")
    if desc.get("version", 0) > VERSION:
        raise LoritaError(f"{path} was written by a newer lorita (format {desc['version']}); upgrade lorita")
    return desc


def _import(dotted: str):
    module_name, _, attr = dotted.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise LoritaError(f"cannot import {dotted!r} to rebuild the architecture ({err}); "
                          "pass load(path, model=YourModel(...))") from None
    return obj


def _build_base(desc: dict, model) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if callable(model):
        return model()
    arch = desc.get("architecture") or {}
    if "factory" in arch:
        return _import(arch["factory"])(**arch.get("kwargs", {}))
    dotted = arch.get("class", "")
    if dotted.startswith("__main__:") or not dotted:
        raise LoritaError(f"the architecture {dotted or '(unknown)'} was defined in a script, so it cannot be "
                          "imported; pass load(path, model=YourModel(...))")
    cls = _import(dotted)
    try:
        return cls()
    except TypeError as err:
        raise LoritaError(f"{dotted} needs constructor arguments ({err}); pass load(path, model=YourModel(...)) "
                          "or give the model a lorita_config factory") from None


def _apply_structure(model: nn.Module, layers: dict[str, dict]) -> None:
    modules = dict(model.named_modules())
    for name, entry in layers.items():
        plain = modules.get(name)
        kind = entry.get("type")
        if is_conv1d(plain):
            original, plain = type(plain), conv1d_as_linear(plain)  # transformers Conv1D: a Linear with W^T
        else:
            original = type(plain)
        wanted = nn.Conv2d if str(kind).endswith("conv2d") else nn.Linear
        if not isinstance(plain, wanted):
            raise LoritaError(f"the file describes layer {name!r} as {kind}, but the architecture has "
                              f"{type(plain).__name__ if plain is not None else 'no such module'} there; "
                              "is this the right model?")
        if kind == "composed_linear":
            new = ComposedLinear.from_linear(plain, int(entry["depth"]), side=entry.get("side", "input"),
                                             mode=entry.get("mode", "auto"))
        elif kind == "composed_conv2d":
            new = ComposedConv2d.from_conv(plain, int(entry["depth"]), mode=entry.get("mode", "auto"))
        elif kind == "lowrank_linear":
            new = LowRankLinear(plain.in_features, plain.out_features, int(entry["rank"]), bias=plain.bias is not None)
        elif kind == "lowrank_conv2d":
            new = LowRankConv2d(plain, int(entry["rank"]))
        else:
            raise LoritaError(f"unknown layer type {kind!r} for {name!r} in the file")
        if kind.startswith("composed"):
            new.original_type = original  # merge restores this class (Linear subclass, transformers Conv1D)
        for alias in entry.get("aliases", [name]):
            model.set_submodule(alias, new)


def load(path: str | os.PathLike, model: nn.Module | Callable[[], nn.Module] | None = None, *,
         device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model written by ``save``: architecture, composed/compressed layers, weights.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "net.lorita")
        >>> save(nn.Linear(3, 2), path)
        >>> load(path, model=nn.Linear(3, 2)).weight.shape
        torch.Size([2, 3])
    """
    desc = read_description(path)
    base = _build_base(desc, model)
    _apply_structure(base, desc["layers"])
    dtype = getattr(torch, desc.get("dtype", "float32"), None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        base.to(dtype)
    try:
        missing, unexpected = load_model(base, str(path), strict=False, device=str(device))
    except (SafetensorError, RuntimeError, OSError) as err:
        raise LoritaError(f"{path}: the weights do not fit the architecture ({err})") from None
    if missing or unexpected:
        raise LoritaError(f"{path}: the weights do not fit the architecture; missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}; is this the right model?")
    return base.to(device)
