"""``save`` / ``load``: composed, merged and compressed models in one safetensors file.

The file holds the weights (safetensors: no pickle) and, in its metadata, a JSON
description: the architecture, which layers are composed (depth, placement, mode) or
compressed (rank), the dtype and the modules' state_dict versions. ``load`` checks the
whole description, builds the architecture, re-applies that structure, checks every
tensor's name and shape against the file, and loads the weights with ``strict=True``.

Reading a file never imports or calls anything the file names unless the caller allows
it (docs/SECURITY.md). The architecture comes from, in order:

- ``load(path, model=...)``: an instance, or a callable returning one (your code);
- lorita's model zoo, when the file says ``{"zoo": name, "kwargs": {...}}``: the name
  must be registered and every argument is checked against the builder's parameters
  and the zoo's bounds, and the model is first built on the meta device (no memory) to
  compare its tensors with the file's;
- anything else the file names (``{"factory": "pkg.mod:function"}`` or ``{"class": ...}``,
  from a model's ``lorita_config`` attribute or its class) only with ``trust_code=True``,
  as with transformers' ``trust_remote_code``: that imports and calls code by name.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_model
from torch import nn

from lorita import jsonio
from lorita.atomic import atomic_path
from lorita.checks import check_device, is_int, is_module_name
from lorita.composed import COMPOSED_TYPES, MAX_DEPTH, MERGED_VIEW, MODES, ComposedConv2d, ComposedLinear
from lorita.conv1d import conv1d_as_linear, is_conv1d
from lorita.dense_reads import name_layer
from lorita.errors import LoritaError
from lorita.int8 import GRANULARITIES, INT8_TYPES, Int8Conv2d, Int8Linear, check_int8_values
from lorita.linalg import check_finite
from lorita.lowrank import LOWRANK_TYPES, LowRankConv2d, LowRankLinear
from lorita.models.registry import create_model, resolve_args
from lorita.targets import keep_frozen, own_attributes, scan_layers

FORMAT = "lorita"
VERSION = 1
LAYER_TYPES = ("composed_linear", "composed_conv2d", "lowrank_linear", "lowrank_conv2d", "int8_linear", "int8_conv2d")
DTYPES = ("float32", "float64", "float16", "bfloat16")
FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
FLOAT_TENSORS = tuple(FLOAT_DTYPES)  # safetensors names of the floating dtypes
# What building a zoo model a file describes may take (every parameter and buffer, persistent or
# not, of the plain model and of its composed / low-rank form): ALLOWANCE plus PER_FILE_BYTE times
# the file size. More means the description asks for sizes its weights do not have (a ViT image_size
# drives a position table stored nowhere) or a cut over ~60x smaller than its model.
ALLOWANCE = 64 << 20
PER_FILE_BYTE = 64


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
        if isinstance(m, (*LOWRANK_TYPES, *INT8_TYPES)):
            if id(m) in seen:
                layers[seen[id(m)]]["aliases"].append(name)
                continue
            seen[id(m)] = name
            if isinstance(m, INT8_TYPES):  # int8 weights + per-channel (or one) scales (lorita.int8)
                layers[name] = {"type": "int8_linear" if isinstance(m, Int8Linear) else "int8_conv2d",
                                **({"granularity": "tensor"} if m.granularity == "tensor" else {}), "aliases": [name]}
                continue
            kind = "lowrank_linear" if isinstance(m, LowRankLinear) else "lowrank_conv2d"
            layers[name] = {"type": kind, "rank": m.rank, "aliases": [name]}
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    state = model.state_dict()
    versions = getattr(state, "_metadata", None) or {}
    unsaved = {name: str(b.dtype).replace("torch.", "") for name, b in model.named_buffers(remove_duplicate=False)
               if name not in state and b.is_floating_point()}  # non-persistent: built by the architecture
    unsaved = {name: dtype for name, dtype in unsaved.items() if dtype in DTYPES}  # float8 and such: as built
    return {"format": FORMAT, "version": VERSION, "architecture": _architecture(model), "layers": layers,
            "dtype": str(floats[0]).replace("torch.", "") if floats else "float32",
            "buffer_dtypes": unsaved,
            "module_versions": {prefix: meta["version"] for prefix, meta in versions.items()
                                if isinstance(meta, dict) and isinstance(meta.get("version"), int)}}


def _architecture(model: nn.Module) -> dict:
    config = getattr(model, "lorita_config", None)
    if config is not None:
        try:
            json.dumps(config)
        except (TypeError, ValueError) as err:
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
    if isinstance(model, (*COMPOSED_TYPES, *LOWRANK_TYPES, *INT8_TYPES)):  # load rebuilds such layers inside a model
        raise LoritaError(f"the model given is itself one {type(model).__name__}, which load cannot rebuild on its "
                          "own: save the model it belongs to, or wrap it (nn.Sequential(layer))")
    path = file_path(path, "save")
    if path.is_dir():
        raise LoritaError(f"{path} is a folder; save needs a file path such as {Path(path) / 'model.lorita'}")
    if any(getattr(m, MERGED_VIEW, False) for m in model.modules()):
        raise LoritaError("this model was composed by lorita.hf.LoritaCallback, so its state_dict is the merged "
                          "model; save lorita.merge(model) instead (trainer.save_model(dir) writes it merged too)")
    for name, p in model.named_parameters():
        if p.is_meta:
            raise LoritaError(f"parameter {name!r} is on the meta device (no values): materialise the model "
                              "(e.g. model.to_empty(device='cpu') and load its weights) before saving")
        if p.is_floating_point():
            layer, _, what = name.rpartition(".")
            check_finite(p.detach(), layer or name, what=what)
    for name, m in model.named_modules():
        if isinstance(m, INT8_TYPES) and not m.qweight.is_meta:
            check_int8_values(m, name)
    meta = {"lorita": json.dumps(describe(model))}
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata=meta)


def file_path(path: Any, who: str) -> Path:
    """``path`` as a ``Path``, a leading ``~/`` the home folder as a shell would read it (not a folder named
    ``~``), any other name as given (``~model.lorita`` is a file here), or a LoritaError naming ``who`` for what is
    not a path.

    Example:
        >>> file_path("~/net.lorita", "save") == Path.home() / "net.lorita", file_path("~net.lorita", "save")
        (True, PosixPath('~net.lorita'))
    """
    if not isinstance(path, (str, os.PathLike)):
        raise LoritaError(f"{who} needs a file path (a str or pathlib.Path), got {type(path).__name__}")
    name = os.fspath(path)
    if not isinstance(name, str):
        raise LoritaError(f"{who} needs a file path (a str or pathlib.Path), got a path of {type(name).__name__}")
    home = name == "~" or name.startswith(("~/", "~" + os.sep))
    return Path(name).expanduser() if home else Path(name)


@contextlib.contextmanager
def _utf8_path(path: Path) -> Iterator[str]:
    """A name safetensors can open: the path itself, or for a path that is not valid UTF-8 (a
    folder named in another encoding) the file's ``/proc/self/fd`` entry."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        fd = os.open(path, os.O_RDONLY)
        try:
            proc = f"/proc/self/fd/{fd}"
            if not os.path.exists(proc):
                raise LoritaError(f"{path!r} is not a UTF-8 path, which safetensors cannot open here; rename it")
            yield proc
        finally:
            os.close(fd)
        return
    yield name


def read_description(path: str | os.PathLike) -> dict:
    """The checked description stored in a lorita file, with a clear error for anything else.

    Every field is validated here (types, known layer kinds, depth and rank bounds, module
    names), before anything is built. Nothing is imported or called.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "net.lorita")
        >>> save(nn.Linear(2, 2), path)
        >>> read_description(path)["format"]
        'lorita'
    """
    path = file_path(path, "read_description")
    if path.is_dir():
        raise LoritaError(f"{path} is a folder; give a file lorita.save wrote (a run folder holds its model as "
                          f"{path / 'model.lorita'})")
    if not path.is_file():
        there = os.path.lexists(path)  # a FIFO, socket or device (never opened: it could block), or a broken link
        raise LoritaError(f"{path} is not a regular file; give a file lorita.save wrote" if there else
                          f"no such file: {path}")
    try:
        with _utf8_path(path) as name, safe_open(name, framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise LoritaError(f"{path} is not a readable safetensors file ({err or type(err).__name__}); was it "
                          "written by lorita.save and copied completely?") from None
    if "lorita" not in meta:
        raise LoritaError(f"{path} is a safetensors file but not a lorita model (no 'lorita' metadata); "
                          "load plain weights with safetensors.torch.load_model into your own model")
    desc = jsonio.parse(meta["lorita"], f"{path}: the lorita description",
                        fix="the file is damaged or was not written by lorita.save")
    _check_description(desc, path)
    return desc


def _check_description(desc, path) -> None:
    def bad(what: str):
        return LoritaError(f"{path}: the lorita description is malformed: {what}; "
                           "was the file written by lorita.save?")

    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        raise bad("format is not 'lorita'")
    version = desc.get("version")
    if not is_int(version) or version < 1:
        raise bad(f"version must be a positive integer, got {version!r}")
    if version > VERSION:
        raise LoritaError(f"{path} was written by a newer lorita (format {version}); upgrade lorita")
    arch = desc.get("architecture")
    if arch is not None and not isinstance(arch, dict):
        raise bad(f"architecture must be an object, got {type(arch).__name__}")
    if desc.get("dtype", "float32") not in DTYPES:
        raise bad(f"dtype must be one of {DTYPES}, got {desc.get('dtype')!r}")
    unsaved = desc.get("buffer_dtypes", {})
    if not isinstance(unsaved, dict) or not all(is_module_name(k) and v in DTYPES for k, v in unsaved.items()):
        raise bad(f"buffer_dtypes must map buffer names to one of {DTYPES}")
    versions = desc.get("module_versions", {})
    if not isinstance(versions, dict) or not all(is_int(v) and v >= 0 for v in versions.values()) or \
            not all(k == "" or is_module_name(k) for k in versions):
        raise bad("module_versions must map module names to integers")
    layers = desc.get("layers")
    if not isinstance(layers, dict):
        raise bad("layers must be an object of module name -> layer description")
    for name, entry in layers.items():
        if not is_module_name(name):
            raise bad(f"layer name {name!r} is not a module name (dot-separated, no empty part)")
        if not isinstance(entry, dict) or entry.get("type") not in LAYER_TYPES:
            raise bad(f"layer {name!r} must have a type among {LAYER_TYPES}")
        aliases = entry.get("aliases", [name])
        if not isinstance(aliases, list) or not aliases or not all(is_module_name(a) for a in aliases):
            raise bad(f"aliases of layer {name!r} must be a non-empty list of module names")
        if entry["type"].startswith("composed"):
            depth = entry.get("depth")
            if not is_int(depth) or not 2 <= depth <= MAX_DEPTH:
                raise bad(f"depth of layer {name!r} must be an integer from 2 to {MAX_DEPTH}, got {depth!r}")
            if entry.get("mode", "auto") not in MODES:
                raise bad(f"mode of layer {name!r} must be one of {MODES}")
            if entry.get("side", "input") not in ("input", "output"):
                raise bad(f"side of layer {name!r} must be 'input' or 'output'")
        elif entry["type"].startswith("int8") and entry.get("granularity", "channel") not in GRANULARITIES:
            raise bad(f"granularity of layer {name!r} must be one of {GRANULARITIES}")
        elif entry["type"].startswith("lowrank") and (not is_int(entry.get("rank")) or entry["rank"] < 1):
            raise bad(f"rank of layer {name!r} must be a positive integer, got {entry.get('rank')!r}")



def _import(dotted: str):
    module_name, _, attr = dotted.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as err:
        raise LoritaError(f"cannot import {dotted!r} to rebuild the architecture ({err}); "
                          "pass load(path, model=YourModel(...))") from None
    return obj


def _zoo_spec(arch: dict) -> tuple[str, dict] | None:
    """(name, kwargs) when the architecture is a zoo model (also the v1 ``factory`` spelling)."""
    if "zoo" in arch:
        return arch["zoo"], arch.get("kwargs", {})
    if arch.get("factory") == "lorita.models:create_model" and isinstance(arch.get("kwargs"), dict):
        kwargs = dict(arch["kwargs"])
        return kwargs.pop("name", None), kwargs
    return None


def _call(build: Callable[[], nn.Module], what: str) -> nn.Module:
    try:
        model = build()
    except LoritaError:
        raise
    except Exception as err:  # the user's or a trusted factory's code
        raise LoritaError(f"building the architecture with {what} failed: {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise LoritaError(f"{what} returned {type(model).__name__}, not an nn.Module; "
                          "pass load(path, model=YourModel(...)) or a callable that returns the model")
    return model


def _build_base(desc: dict, model, trust_code: bool, path, device=None) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if model is not None:
        if not callable(model):
            raise LoritaError(f"model= must be an nn.Module or a zero-argument callable returning one, "
                              f"got {type(model).__name__}")
        return _call(model, "the model= callable")
    arch = desc.get("architecture") or {}
    zoo = _zoo_spec(arch)
    if zoo is not None:
        name, kwargs = zoo
        try:
            kwargs = resolve_args(name, kwargs)  # known builder, known arguments, bounded numbers
            with torch.device(device or "cpu"):
                return create_model(name, **kwargs)
        except LoritaError as err:
            raise LoritaError(f"{path}: the zoo model it describes is refused: {err}") from None
        except Exception as err:  # a builder failing on sizes its checks let through (e.g. an overflow)
            raise LoritaError(f"{path}: the zoo model it describes cannot be built ({type(err).__name__}: {err}); "
                              "the file is damaged or crafted") from None
    dotted = arch.get("factory") or arch.get("class") or ""
    if not trust_code:
        named = f" names code to build it ({dotted!r})" if dotted else " does not say how to build it"
        raise LoritaError(
            f"{path}: the architecture is not a lorita zoo model, and the file{named}. lorita does not import "
            "or call code named in a file unless you allow it. Pass the architecture yourself: "
            "lorita.load(path, model=YourModel(...)) (or a callable returning it); or, only for a file whose "
            "origin you trust, lorita.load(path, trust_code=True).")
    if not isinstance(dotted, str) or ":" not in dotted or dotted.startswith("__main__:"):
        raise LoritaError(f"the architecture {dotted or '(unknown)'} was defined in a script (or is not "
                          "'module:name'), so it cannot be imported; pass load(path, model=YourModel(...))")
    kwargs = arch.get("kwargs", {}) if "factory" in arch else {}
    if not isinstance(kwargs, dict):
        raise LoritaError(f"{path}: architecture kwargs must be an object, got {type(kwargs).__name__}")
    target = _import(dotted)
    return _call(lambda: target(**kwargs), f"{dotted} (trust_code=True)")


def _apply_structure(model: nn.Module, layers: dict[str, dict], path) -> None:
    """Swap in the composed / low-rank layers the file describes, each checked against the model first."""
    modules = dict(model.named_modules(remove_duplicate=False))
    int8 = {name: entry for name, entry in layers.items() if entry["type"].startswith("int8")}
    _check_int8_places(modules, layers, int8, path)
    plan = []
    for name, entry in layers.items():
        if name in int8:
            continue  # swapped below, once the low-rank pairs they may sit in exist
        plain = modules.get(name)
        kind = entry["type"]
        if is_conv1d(plain):
            original, plain = type(plain), conv1d_as_linear(plain)  # transformers Conv1D: a Linear with W^T
        else:
            original = type(plain)
        wanted = nn.Conv2d if kind.endswith("conv2d") else nn.Linear
        if isinstance(plain, (*LOWRANK_TYPES, *INT8_TYPES, ComposedLinear, ComposedConv2d)):
            raise LoritaError(f"{path}: the architecture given already has a {type(plain).__name__} at {name!r}; "
                              "give the original architecture (as it was before compose, compress or quantize): "
                              "load rebuilds those layers from the file")
        if not isinstance(plain, wanted):
            raise LoritaError(f"{path} describes layer {name!r} as {kind}, but the architecture has "
                              f"{type(plain).__name__ if plain is not None else 'no such module'} there; "
                              f"is this the right model?{_wrapper_hint(name)}")
        for alias in entry.get("aliases", [name]):
            if modules.get(alias) is not modules[name]:
                raise LoritaError(f"{path}: alias {alias!r} of layer {name!r} is not the same module in this "
                                  "architecture; is this the right model?")
        if kind.startswith("lowrank"):
            m = plain.out_features if kind == "lowrank_linear" else plain.out_channels
            n = plain.in_features if kind == "lowrank_linear" else plain.weight[0].numel()
            if entry["rank"] > min(m, n):
                raise LoritaError(f"{path}: rank {entry['rank']} of layer {name!r} exceeds min(out, in) = "
                                  f"{min(m, n)} of its {m}x{n} weight; the file is damaged or for another model")
        plan.append((name, entry, plain, original))
    for name, entry, plain, original in plan:
        kind = entry["type"]
        if kind == "composed_linear":
            new = ComposedLinear.from_linear(plain, entry["depth"], side=entry.get("side", "input"),
                                             mode=entry.get("mode", "auto"))
        elif kind == "composed_conv2d":
            new = ComposedConv2d.from_conv(plain, entry["depth"], mode=entry.get("mode", "auto"))
        elif kind == "lowrank_linear":
            new = LowRankLinear(plain.in_features, plain.out_features, entry["rank"], bias=plain.bias is not None,
                                device=plain.weight.device, dtype=plain.weight.dtype)
        else:
            new = LowRankConv2d(plain, entry["rank"])
        if kind.startswith("composed"):
            new.original_type = original  # merge restores this class (Linear subclass, transformers Conv1D)
            new.original_attributes = own_attributes(plain)  # and the architecture's own attributes
        keep_frozen(plain, new)  # the architecture's frozen layers stay frozen
        name_layer(new, name)
        for alias in entry.get("aliases", [name]):
            model.set_submodule(alias, new)
    _apply_int8(model, int8, path)


def _wrapper_hint(name: str) -> str:
    """What a layer name saved from a wrapper (torch.compile's, DataParallel's) starts with, and what to do."""
    for prefix, wrapper, inner in (("_orig_mod.", "torch.compile", "_orig_mod"), ("module.", "DataParallel or "
                                   "DistributedDataParallel", "module")):
        if name.startswith(prefix):
            return (f" The file's names start with {prefix!r}: it was saved from a {wrapper} wrapper; give that "
                    f"wrapper as model=, or save model.{inner} next time")
    return ""


def _check_int8_places(modules: dict[str, nn.Module], layers: dict[str, dict], int8: dict[str, dict], path) -> None:
    """Each int8 layer sits where the architecture has a layer of its kind: a plain Linear/Conv1D or Conv2d
    that the file does not also compose or cut, or layer 0 or 1 of a low-rank pair of the same kind."""
    for name, entry in int8.items():
        kind = entry["type"].removeprefix("int8_")
        parent, _, index = name.rpartition(".")
        pair = layers.get(parent, {}).get("type", "")
        if pair.startswith("lowrank"):
            if index in ("0", "1") and pair == f"lowrank_{kind}":
                continue
            raise LoritaError(f"{path} describes {name!r} as {entry['type']} inside the {pair} {parent!r}, which "
                              "has only layers 0 and 1 of its own kind; the file is damaged")
        plain = modules.get(name)
        fits = isinstance(plain, nn.Conv2d) if kind == "conv2d" else isinstance(plain, nn.Linear) or is_conv1d(plain)
        if not fits or any(name == other or name.startswith(other + ".") for other in layers
                           if other not in int8):
            raise LoritaError(f"{path} describes layer {name!r} as {entry['type']}, but the architecture has "
                              f"{type(plain).__name__ if plain is not None else 'no such module'} there; "
                              "is this the right model?")


def _apply_int8(model: nn.Module, int8: dict[str, dict], path) -> None:
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, entry in int8.items():
        for alias in entry.get("aliases", [name]):
            if modules.get(alias) is not modules[name]:
                raise LoritaError(f"{path}: alias {alias!r} of layer {name!r} is not the same module in this "
                                  "architecture; is this the right model?")
    for name, entry in int8.items():
        plain = modules[name]
        plain = conv1d_as_linear(plain) if is_conv1d(plain) else plain
        kw = dict(device=plain.weight.device, dtype=plain.weight.dtype, granularity=entry.get("granularity", "channel"))
        if isinstance(plain, nn.Conv2d):
            new = Int8Conv2d(plain, **kw)
        else:
            new = Int8Linear(plain.in_features, plain.out_features, bias=plain.bias is not None, **kw)
        keep_frozen(plain, new)
        for alias in entry.get("aliases", [name]):
            model.set_submodule(alias, new)


def _file_tensors(path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each tensor's shape and safetensors dtype name (``"F32"``, ``"I64"``, ``"BOOL"``), read from the header."""
    with _utf8_path(path) as name, safe_open(name, framework="pt") as f:
        return {key: (tuple(f.get_slice(key).get_shape()), f.get_slice(key).get_dtype()) for key in f.keys()}


def _all_tensors(model: nn.Module) -> dict[int, torch.Tensor]:
    """Every parameter and buffer of ``model``, persistent or not, shared ones once (by identity)."""
    return {id(t): t for t in (*model.parameters(), *model.buffers())}


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def allowed_bytes(file_bytes: int) -> int:
    """The most memory a model built from ``file_bytes`` of weights may ask for before it is built (``ALLOWANCE``
    plus ``PER_FILE_BYTE`` times the files' size): what ``load`` and a pretrained model's folder are weighed by.

    Example:
        >>> allowed_bytes(1 << 20) >> 20
        128
    """
    return ALLOWANCE + PER_FILE_BYTE * file_bytes


def _check_budget(needed: int, path) -> None:
    size = os.path.getsize(path)
    if needed > allowed_bytes(size):
        raise LoritaError(
            f"{path}: building the model it describes would take {needed / 2**20:.0f} MiB, more than lorita.load "
            f"allows for a file of {size} bytes ({ALLOWANCE >> 20} MiB + {PER_FILE_BYTE} x the file's size); the "
            "description asks for sizes its weights do not have (a damaged or crafted file). For a file you trust, "
            "build the architecture yourself: lorita.load(path, model=YourModel(...))")


def _check_int8_dtypes(path, layers: dict[str, dict]) -> None:
    """An int8 layer's ``qweight`` is stored as int8 in the file (loading would otherwise cast whatever is there)."""
    keys = [f"{name}.qweight" for name, entry in layers.items() if entry["type"].startswith("int8")]
    if not keys:
        return
    with _utf8_path(path) as name, safe_open(name, framework="pt") as f:
        wrong = [(key, f.get_slice(key).get_dtype()) for key in keys if f.get_slice(key).get_dtype() != "I8"]
    if wrong:
        raise LoritaError(f"{path}: int8 layer weights must be stored as int8, but {wrong[0][0]} is "
                          f"{wrong[0][1]}; the file is damaged")


def _aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Keys whose tensor shares storage with an earlier key (tied weights): key -> that earlier key.

    ``safetensors`` stores a shared tensor once, under one of its names.
    """
    first: dict[tuple, str] = {}
    out = {}
    for key, t in state.items():
        if t.is_meta:
            continue
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if ident in first:
            out[key] = first[ident]
        else:
            first[ident] = key
    return out


def _same_objects(model: nn.Module) -> dict[str, str]:
    """Keys of parameters and buffers that are the same tensor object as an earlier key's: tied weights where there
    is no storage to compare (the meta device)."""
    first: dict[int, str] = {}
    out = {}
    for key, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(t) in first:
            out[key] = first[id(t)]
        else:
            first[id(t)] = key
    return out


def _check_tensors(model: nn.Module, tensors: dict[str, tuple[tuple[int, ...], str]], path) -> None:
    """Every tensor the file holds fits the model (shape, and floating point where the model's is), and
    every model tensor is in the file (tied ones once)."""
    state = model.state_dict()
    tied = _aliases(state)
    tied.update({k: v for k, v in _same_objects(model).items() if state.get(k) is not None and state[k].is_meta})
    group = {k: tied.get(k, k) for k in state}  # tied tensors share one group (stored once)
    stored = {group[k] for k in state if k in tensors}
    missing = sorted(k for k in state if group[k] not in stored)
    unexpected = sorted(k for k in tensors if k not in state)
    wrong = sorted(k for k in tensors if k in state and tuple(state[k].shape) != tensors[k][0])
    kind = sorted(k for k in tensors if k in state and state[k].is_floating_point() != (tensors[k][1] in FLOAT_TENSORS))
    if missing or unexpected or wrong or kind:
        detail = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
                  "; ".join(f"{k}: file {tensors[k][0]} vs model {tuple(state[k].shape)}" for k in wrong[:5]),
                  "; ".join(f"{k}: file dtype {tensors[k][1]} vs model {str(state[k].dtype).replace('torch.', '')}"
                            for k in kind[:5])]
        hint = (" The file holds attentions split by lorita.split_attention: pass "
                "model=lambda: lorita.split_attention(make_model())") if _split_attention_file(missing, unexpected) \
            else ""
        raise LoritaError(f"{path}: the weights do not fit the architecture ({'; '.join(d for d in detail if d)}); "
                          f"is this the right model?{hint}")


def _split_attention_file(missing: list[str], unexpected: list[str]) -> bool:
    """Whether the file holds a ``lorita.attention.SplitAttention`` where the model has an ``nn.MultiheadAttention``:
    the model lacks ``P.in_proj_weight`` (or ``P.q_proj_weight``) and the file holds ``P.q_proj.*``.

    Example:
        >>> _split_attention_file(["in_proj_weight", "in_proj_bias"], ["q_proj.weight", "q_proj.bias"])
        True
    """
    prefixes = {k[: -len(end)] for k in missing for end in ("in_proj_weight", "q_proj_weight") if k.endswith(end)}
    return any(k.startswith(prefix + "q_proj.") for prefix in prefixes for k in unexpected)


def _check_load_device(device: Any) -> torch.device:
    """``device``, one the weights can be read onto, checked before the file (a bad one read as a damaged file)."""
    where = check_device(device, "loaded onto it (the architecture alone: build the model under "
                                 "torch.device('meta'))", here=True)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise LoritaError(f"device {device!r}: CUDA is not available here; load with device='cpu'")
    return where


def _keep_file_dtypes(model: nn.Module, tensors: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """Each floating parameter and buffer in the floating dtype the file stores it in: a model saved in mixed
    precision (a float16 layer beside float32 norms) comes back in its mix, not cast whole to the description's one
    dtype, which stays the default for what the file does not hold."""
    for key, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        stored = FLOAT_DTYPES.get(tensors.get(key, ((), ""))[1])
        if stored is not None and t.is_floating_point() and t.dtype != stored:
            t.data = t.data.to(stored)  # tied tensors are one object: cast once, seen again under the other name


def _keep_saved_dtypes(model: nn.Module, dtypes: dict[str, str]) -> None:
    """Each floating buffer the file does not hold (a non-persistent one) in the dtype it had when saved (files
    written before lorita recorded it are cast whole to their description's dtype, as then)."""
    for key, t in model.named_buffers(remove_duplicate=False):
        if key in dtypes and t.is_floating_point():
            t.data = t.data.to(getattr(torch, dtypes[key]))


def _check_values(model: nn.Module, path) -> None:
    """No NaN or Inf in a loaded parameter, int8 weights and scales as ``quantize`` makes them (``save`` refuses
    other values, so the file is damaged)."""
    try:
        for name, p in model.named_parameters():
            if p.is_floating_point():
                layer, _, what = name.rpartition(".")
                check_finite(p.detach(), layer or name, what=what)
        for name, m in model.named_modules():
            if isinstance(m, INT8_TYPES):
                check_int8_values(m, name)
    except LoritaError as err:
        raise LoritaError(f"{path}: the file is damaged: {err}") from None


def _check_skeleton(skeleton: nn.Module, desc: dict, tensors: dict, path) -> None:
    """``skeleton`` (the architecture on the meta device) with the file's layers swapped in holds exactly the file's
    tensors, and building it for real fits the memory a file of this size may ask for (``_check_budget``)."""
    plain = _all_tensors(skeleton)  # (kept: their ids stay unique while the layers are swapped)
    _apply_structure(skeleton, desc["layers"], path)
    _check_tensors(skeleton, tensors, path)
    added = [t for key, t in _all_tensors(skeleton).items() if key not in plain]
    _check_budget(_bytes(plain.values()) + _bytes(added), path)  # the most the real build holds at once


def check_fits(path: str | os.PathLike, skeleton: nn.Module) -> None:
    """Refuse the file at ``path`` before anything is allocated: ``skeleton``, the architecture ``load`` would be
    given, built on the meta device (``with torch.device("meta"):``), must take the file's layers and hold exactly its
    tensors, and the real build must fit the memory a file of its size may ask for. For an architecture whose sizes
    come from another file (a config), so that those sizes cannot ask for more than the weights have. The skeleton's
    layers are swapped in place.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "net.lorita")
        >>> save(nn.Linear(3, 2), path)
        >>> with torch.device("meta"):
        ...     check_fits(path, nn.Linear(3, 2))
        >>> with torch.device("meta"):
        ...     check_fits(path, nn.Linear(3, 4000))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: ...: the weights do not fit the architecture (...); is this the right model?
    """
    _check_skeleton(skeleton, read_description(path), _file_tensors(path), path)


def load(path: str | os.PathLike, model: nn.Module | Callable[[], nn.Module] | None = None, *,
         trust_code: bool = False, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model written by ``save``: architecture, composed/compressed layers, weights.

    ``model``: the architecture as an instance or a zero-argument callable (needed for
    models outside lorita's zoo). ``trust_code=True`` lets the file name a factory or
    class to import and call instead: only for files whose origin you trust. The model comes
    back in eval mode, as transformers' ``from_pretrained`` returns it (dropout off, BatchNorm
    on its running statistics); call ``.train()`` to train it further.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "net.lorita")
        >>> save(nn.Linear(3, 2), path)
        >>> again = load(path, model=nn.Linear(3, 2))
        >>> again.weight.shape, again.training
        (torch.Size([2, 3]), False)
    """
    if not isinstance(trust_code, bool):
        raise LoritaError(f"trust_code must be True or False, got {trust_code!r}")
    device = _check_load_device(device)
    path = file_path(path, "load")
    desc = read_description(path)
    tensors = _file_tensors(path)
    if model is None and _zoo_spec(desc.get("architecture") or {}) is not None:
        # A zoo model is first built on the meta device (no memory): a description whose
        # sizes do not match the file's tensors, or that would take far more memory than the
        # file holds, is refused before anything is allocated.
        _check_skeleton(_build_base(desc, None, False, path, device="meta"), desc, tensors, path)
    base = _build_base(desc, model, trust_code, path)
    meta = next((name for name, t in [*base.named_parameters(), *base.named_buffers()] if t.is_meta), None)
    if meta is not None:
        raise LoritaError(f"the architecture given (model=) is on the meta device ({meta!r} has no storage), so the "
                          "file's weights cannot be copied into it; build it on the CPU (YourModel(), not under "
                          "torch.device('meta')), or call model.to_empty(device='cpu') first")
    _apply_structure(base, desc["layers"], path)
    _check_tensors(base, tensors, path)
    _check_int8_dtypes(path, desc["layers"])
    if model is None or "buffer_dtypes" not in desc:  # built from the description, or an older file that does not
        base.to(getattr(torch, desc.get("dtype", "float32")))  # record them: what the file does not hold, its dtype
    _keep_file_dtypes(base, tensors)
    _keep_saved_dtypes(base, desc.get("buffer_dtypes", {}))  # what the file does not hold, as it was saved
    try:
        with _utf8_path(path) as name:
            weights = load_file(name, device=str(device))
    except (SafetensorError, RuntimeError, OSError) as err:
        raise LoritaError(f"{path}: the weights cannot be read ({err}); was the file copied completely?") from None
    state = OrderedDict(weights)
    state._metadata = OrderedDict((prefix, {"version": v}) for prefix, v in desc.get("module_versions", {}).items())
    try:
        base.load_state_dict(state, strict=False)
    except Exception as err:  # a module's own loading code (e.g. a version check) refused it
        raise LoritaError(f"{path}: the weights do not fit the architecture ({type(err).__name__}: {err}); "
                          "is this the right model?") from None
    _check_values(base, path)
    return base.to(device).eval()
