"""Which layers of a model lorita can compose or compress, and matching user targets.

Eligible: ``nn.Linear`` and ``nn.Conv2d`` with ``groups == 1`` (subclasses too, when
they keep the parent's ``forward``, or when their class is registered as a plain linear
map with ``register_linear_subclass`` and a numerical check on each layer agrees). Left
plain, and named in one warning: grouped and depthwise convs, transposed convs,
Conv1d/Conv3d, the projections inside ``nn.MultiheadAttention`` (it reads their weights
directly; ``lorita.attention.split_attention`` makes them layers), TorchScript submodules,
layers whose weight is tied to another module, and
layers whose parent reads their weight instead of calling them (found on the example
input when one is given, ``lorita.probe.weight_readers``, else on the library's dummy
inputs or from the parents' source, ``lorita.source_readers``). A module used under two
names is one layer, known by its first name, with the others as aliases.
"""

from __future__ import annotations

import copy
import difflib
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence, Sized

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from lorita.composed import COMPOSED_TYPES, ComposedConv2d
from lorita.dense_reads import name_layer
from lorita.errors import LoritaError, LoritaWarning
from lorita.conv1d import conv1d_base, is_conv1d
from lorita.int8 import INT8_TYPES
from lorita.lowrank import LOWRANK_TYPES, has_lowrank
from lorita.probe import READ_BY_PARENT, eval_mode, library_weight_readers, weight_readers
from lorita.source_readers import read_not_called

Selector = str | Sequence[str] | None


@dataclass
class Layer:
    """One eligible layer: its canonical name, the module, and every name it is used under; ``pair``: the low-rank
    pair it is one half of (``pair.0`` or ``pair.1``), whose name selects both halves."""

    name: str
    module: nn.Module
    aliases: list[str] = field(default_factory=list)
    pair: str | None = None

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


# nn.Linear / nn.Conv2d subclasses with a forward of their own that computes the plain
# linear map (same math, written differently), by qualified class name. Each layer is still
# checked numerically before it is accepted. Extend with register_linear_subclass.
LINEAR_SUBCLASSES: set[str] = {
    "transformers.models.falcon.modeling_falcon.FalconLinear",  # input @ weight.T + bias
}


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_linear_subclass(cls: type | str) -> None:
    """Let compose and compress treat ``cls``, an ``nn.Linear`` / ``nn.Conv2d`` subclass that
    overrides ``forward``, as the plain layer it derives from.

    Only for classes whose forward computes exactly ``F.linear(x, weight, bias)`` (or the
    plain convolution): each such layer is checked on a random input before it is
    accepted, and left plain, with the reason, where its output differs. ``cls`` may be
    the class or its qualified name (``"package.module.Class"``). Already registered:
    ``LINEAR_SUBCLASSES`` (transformers' ``FalconLinear``).

    Example:
        >>> class MyLinear(nn.Linear):
        ...     def forward(self, x):
        ...         return x @ self.weight.T + self.bias
        >>> skipped_layers(nn.Sequential(MyLinear(4, 4), nn.Linear(4, 2)))["0"][:33]
        'MyLinear overrides Linear.forward'
        >>> register_linear_subclass(MyLinear)
        >>> skipped_layers(nn.Sequential(MyLinear(4, 4), nn.Linear(4, 2)))
        {}
    """
    if isinstance(cls, str):
        if not cls or "." not in cls:
            raise LoritaError(f"register_linear_subclass takes a class or its qualified name "
                              f"('package.module.Class'), got {cls!r}")
        LINEAR_SUBCLASSES.add(cls)
        return
    if not isinstance(cls, type) or not issubclass(cls, (nn.Linear, nn.Conv2d)):
        raise LoritaError(f"register_linear_subclass takes an nn.Linear or nn.Conv2d subclass, got {cls!r}")
    LINEAR_SUBCLASSES.add(_qualname(cls))


_PLAIN_ATTRIBUTES: dict[type, frozenset[str]] = {}  # the instance attributes a plain layer of each base has


def _own_tensors(module: nn.Module) -> list[str]:
    """The parameters (besides weight and bias), buffers and submodules a Linear/Conv2d holds of its own: a factored
    or cut layer would drop them, and its merged layer would lack them in its state_dict.

    Example:
        >>> layer = nn.Linear(2, 2); layer.register_buffer("calib", torch.ones(2)); _own_tensors(layer)
        ['calib']
    """
    held = [name for name in module._parameters if name not in ("weight", "bias")]
    return sorted([*held, *module._buffers, *module._modules])


def own_attributes(module: nn.Module) -> dict[str, Any]:
    """The public attributes a Linear/Conv2d (or a subclass) was given beyond a plain layer's, which ``merge`` gives
    back to the merged layer (a factored layer does not use them; lorita's own and private names are left out, and
    so are values that point to modules or tensors, which would keep the model as it was before compose).

    Example:
        >>> layer = nn.Linear(2, 2); layer.role = "query"; own_attributes(layer)
        {'role': 'query'}
    """
    base = nn.Linear if isinstance(module, nn.Linear) else nn.Conv2d if isinstance(module, nn.Conv2d) else None
    if base is None:
        return {}
    if base not in _PLAIN_ATTRIBUTES:
        plain = nn.Linear(1, 1, device="meta") if base is nn.Linear else nn.Conv2d(1, 1, 1, device="meta")
        _PLAIN_ATTRIBUTES[base] = frozenset(vars(plain))
    return {name: value for name, value in vars(module).items()
            if name not in _PLAIN_ATTRIBUTES[base] and not name.startswith(("_", "lorita")) and _plain_value(value)}


def _plain_value(value: Any) -> bool:
    """Whether ``value`` holds no module or tensor (not in a list, tuple, set or dict either) and is no method bound
    to a module: such a value would point into the model as it was before compose, keeping its dense weights."""
    if isinstance(value, (nn.Module, torch.Tensor)):
        return False
    if isinstance(getattr(value, "__self__", None), nn.Module):
        return False
    if isinstance(value, dict):
        return all(_plain_value(v) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_plain_value(v) for v in value)
    return True


def _keeps_forward(module: nn.Module, base: type) -> bool:
    return type(module).forward is base.forward


def _registered(module: nn.Module) -> bool:
    return any(_qualname(cls) in LINEAR_SUBCLASSES for cls in type(module).__mro__)


# How far a registered subclass's own forward may be from the plain layer's, relative to
# the output's size: summation order only (a different formula is off by O(1)).
_CHECK_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


@torch.no_grad()
def _acts_as_plain(module: nn.Module, base: type) -> bool:
    """Whether the module's own forward equals ``base.forward`` on a seeded random input."""
    weight = module.weight
    if weight.is_meta:
        return True  # no values to check (structure only); checked once the model is materialised
    generator = torch.Generator().manual_seed(0)
    if base is nn.Linear:
        shape = (3, module.in_features)
    else:  # two output positions per direction
        shape = (2, module.in_channels, *(d * (k - 1) + 1 + s for k, s, d in
                                          zip(module.kernel_size, module.stride, module.dilation)))
    x = torch.randn(shape, generator=generator, dtype=torch.float64).to(weight.device, weight.dtype)
    with eval_mode(module):
        try:
            got = type(module).forward(module, x)  # its own forward, without hooks
            expected = F.linear(x, weight, module.bias) if base is nn.Linear else nn.Conv2d.forward(module, x)
        except Exception:  # a forward that cannot take a plain input is not a plain linear map
            return False
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return False
    tolerance = _CHECK_TOLERANCE.get(weight.dtype, 1e-2)  # half precisions: 1e-2
    return bool((got - expected).abs().max() <= tolerance * (1 + expected.abs().max()))


def _subclass_reason(module: nn.Module, base: type) -> str | None:
    name = type(module).__name__
    if not _registered(module):
        return (f"{name} overrides {base.__name__}.forward (if it computes the plain linear map, opt it in with "
                f"lorita.targets.register_linear_subclass({name}))")
    if not _acts_as_plain(module, base):
        return (f"{name} is registered as a plain linear map, but its forward differs from "
                f"{base.__name__}.forward on a random input")
    return None


def _skip_reason(module: nn.Module, parent: nn.Module | None) -> str | None:
    """Why an nn layer that looks linear is left plain, or None if it is not such a layer."""
    if isinstance(parent, nn.MultiheadAttention):
        hint = "; lorita.split_attention(model) makes its projections layers" \
            if type(parent) is nn.MultiheadAttention else ""
        return f"inside nn.MultiheadAttention (it reads the weights directly{hint})"
    if isinstance(module, (nn.modules.lazy.LazyModuleMixin,)):
        return "lazy module not initialised yet: run one forward pass first"
    outside = outside_weight(module)
    if outside is not None:
        return outside
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        kind = "depthwise" if module.groups == module.in_channels else "grouped"
        return f"{kind} conv (groups={module.groups}): a rank cut there adds parameters"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "transposed conv: not supported"
    if isinstance(module, (nn.Conv1d, nn.Conv3d)):
        return f"{type(module).__name__}: only Conv2d is supported"
    if isinstance(module, nn.Linear) and not _keeps_forward(module, nn.Linear):
        return _subclass_reason(module, nn.Linear)
    if isinstance(module, nn.Conv2d) and not _keeps_forward(module, nn.Conv2d):
        return _subclass_reason(module, nn.Conv2d)
    if is_conv1d(module) and not _keeps_forward(module, conv1d_base(type(module))):
        return f"{type(module).__name__} overrides transformers Conv1D.forward"
    return None


def outside_weight(module: nn.Module) -> str | None:
    """What ``module`` does beyond its weight and bias, which a layer rebuilt from them (factored, cut, merged, folded)
    would drop, as a reason: a parametrization, a weight computed by a hook, tensors or modules of its own, forward
    hooks; None when it has none of them.

    Example:
        >>> layer = nn.Linear(2, 2); outside_weight(layer) is None
        True
        >>> _ = layer.register_forward_hook(lambda m, i, o: o); outside_weight(layer)[:26]
        'it has forward hooks (regi'
    """
    if parametrize.is_parametrized(module):
        return ("parametrized (torch.nn.utils.parametrize: weight or spectral norm, orthogonal, ...), which a factored "
                "or cut layer would drop; to compress it as it is, torch.nn.utils.parametrize.remove_parametrizations "
                "first")
    if _computed_weight(module):
        return f"its weight is computed by a hook ({COMPUTED_WEIGHT_HOOKS}), which a factored or cut layer would drop"
    own = _own_tensors(module) if isinstance(module, (nn.Linear, nn.Conv2d)) else []
    if own:
        return (f"{type(module).__name__} holds tensors or modules of its own ({', '.join(own[:4])}), which a factored "
                "or cut layer would drop")
    if module._forward_hooks or module._forward_pre_hooks:
        return ("it has forward hooks (register_forward_hook / register_forward_pre_hook), which a factored or cut "
                "layer would not run; remove them first, and register them again on the compressed model")
    return None


def check_model(model: Any, verb: str, *, replaces: bool = False) -> None:
    """Raise LoritaError unless ``model`` is an eager ``nn.Module`` (not TorchScript); ``replaces``: ``verb`` swaps
    layers inside the model, so a model that is itself one such layer is refused too (it has no parent to hold
    its replacement: compose and compress found nothing, merge gave it back unchanged).

    Example:
        >>> check_model(nn.Linear(2, 2), "profile")
        >>> check_model(nn.Linear(2, 2), "compose", replaces=True)
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: lorita.compose works on the layers inside a model, and the model given is itself one Linear: wrap it (nn.Sequential(layer)) and compose that
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise LoritaError(f"lorita.{verb} does not support TorchScript models (the output of torch.jit.script or "
                          f"torch.jit.trace): pass the eager nn.Module, then script or trace the result")
    if not isinstance(model, nn.Module):
        raise LoritaError(f"{verb} needs an nn.Module, got {type(model).__name__}")
    if replaces and is_one_layer(model):
        raise LoritaError(f"lorita.{verb} works on the layers inside a model, and the model given is itself one "
                          f"{type(model).__name__}: wrap it (nn.Sequential(layer)) and {verb} that")


def is_one_layer(model: nn.Module) -> bool:
    """Whether ``model`` is itself a layer lorita replaces (Linear, Conv2d, Conv1D, composed, low-rank, int8).

    Example:
        >>> is_one_layer(nn.Linear(2, 2)), is_one_layer(nn.Sequential(nn.Linear(2, 2)))
        (True, False)
    """
    return isinstance(model, (nn.Linear, nn.Conv2d, *COMPOSED_TYPES, *LOWRANK_TYPES, *INT8_TYPES)) or is_conv1d(model)


def copy_model(model: nn.Module, verb: str) -> nn.Module:
    """A deep copy of ``model`` for ``verb`` to change; a model PyTorch cannot copy is a LoritaError saying why.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2)); copy_model(net, "compose")[0] is net[0]
        False
    """
    try:
        return copy.deepcopy(model)
    except RuntimeError as err:  # a weight computed by a hook (old-style weight_norm, prune) is not a graph leaf
        computed = [name or "the model" for name, m in model.named_modules() if _computed_weight(m)]
        which = f"layer {computed[0]} computes its" if len(computed) == 1 else \
            f"layers {', '.join(computed[:3])}{', ...' if len(computed) > 3 else ''} compute their"
        why = f"{which} weight with a hook ({COMPUTED_WEIGHT_HOOKS})" if computed else f"{err}"
        raise LoritaError(f"lorita.{verb} cannot copy the model ({why}); inplace=True skips the copy") from None


COMPUTED_WEIGHT_HOOKS = ("torch.nn.utils.weight_norm, spectral_norm or prune; to compress such a layer, remove it "
                         "first: remove_weight_norm, remove_spectral_norm or prune.remove, or use the parametrizations "
                         "of torch.nn.utils.parametrizations")


def _computed_weight(module: nn.Module) -> bool:
    """Whether ``module`` has a weight computed before each call (old-style weight_norm, prune), not a parameter."""
    weight = module.__dict__.get("weight")  # such hooks set a plain tensor attribute
    return isinstance(weight, torch.Tensor) and not isinstance(weight, nn.Parameter)


def _holds_scripted_layers(module: torch.jit.ScriptModule) -> bool:
    return any(getattr(m, "original_name", "") in ("Linear", "Conv2d") for m in module.modules())


def scan_layers(model: nn.Module, *, composed: bool = True, plain: bool = True, example_input: Any = None,
                find_readers: bool = True) -> Scan:
    """Find the eligible layers of ``model`` (plain Linear/Conv2d and/or composed layers).

    Layers whose parent reads their ``.weight`` instead of calling them are left plain
    (``plain=True`` scans, unless ``find_readers=False``, as for a re-scan of a copy whose
    layers were already chosen). With ``example_input``: the model runs once on it (eval
    mode) and the layers it used through their weight only are found
    (``lorita.probe.weight_readers``). Without it: where the model's library provides
    dummy inputs it accepts (transformers), the same on those
    (``lorita.probe.library_weight_readers``); else the forward code of each layer's
    ancestors is read (``lorita.source_readers``: a layer whose weight it computes with).

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
        if isinstance(module, torch.jit.ScriptModule) and name:
            sealed.append(name)
            if _holds_scripted_layers(module):
                skipped[name] = ("TorchScript submodule: not supported (compose the eager module, "
                                 "then script the result)")
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
    owners = parameter_owners(model)
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
    if find_readers and plain and layers:
        modules = dict(model.named_modules(remove_duplicate=False))
        for name, reason in _weight_readers(model, layers, example_input).items():
            del layers[name]
            parent = modules.get(name.rpartition(".")[0])
            skipped[name] = reason + (_ENCODER_HINT if type(parent) is nn.TransformerEncoderLayer else "")
    return Scan(layers, skipped)


_ENCODER_HINT = (" (nn.TransformerEncoderLayer's fused inference path; lorita.split_attention(model) turns it off, "
                 "and its layers are then called)")


def _weight_readers(model: nn.Module, layers: dict[str, Layer], example_input: Any) -> dict[str, str]:
    """``{name: READ_BY_PARENT}`` for the layers whose parent reads their weight instead of calling them."""
    modules = {n: layer.module for n, layer in layers.items()}
    if example_input is not None:
        return weight_readers(model, example_input, modules)
    found = library_weight_readers(model, modules)  # what one real forward pass shows, where it can run
    if found is not None:
        return found
    return dict.fromkeys(read_not_called(modules, dict(model.named_modules(remove_duplicate=False))),
                         READ_BY_PARENT)


def parameter_owners(model: nn.Module) -> dict[int, set[int]]:
    """Parameter id -> ids of the modules holding it directly (several when tied).

    Example:
        >>> a = nn.Linear(2, 2); b = nn.Linear(2, 2); b.weight = a.weight
        >>> len(parameter_owners(nn.Sequential(a, b))[id(a.weight)])
        2
    """
    owners: dict[int, set[int]] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), set()).add(id(module))
    return owners


def _matches(name: str, selector: str | Sequence[str]) -> bool:
    if isinstance(selector, str):
        return re.fullmatch(selector, name) is not None
    return any(name == key or name.endswith("." + key) for key in selector)


def _layer_matches(layer: Layer, selector: str | Sequence[str]) -> bool:
    """Whether ``selector`` names ``layer`` under any of its names; a half of a low-rank pair is named by its pair's
    name or its own, never by its index alone (``"0"`` is the pair or layer called 0, not every pair's first half).

    Example:
        >>> half = Layer("2.0", nn.Linear(4, 2), ["2.0"], pair="2")
        >>> _layer_matches(half, ["2"]), _layer_matches(half, ["2.0"]), _layer_matches(half, ["0"])
        (True, True, False)
    """
    if layer.pair is None:
        return any(_matches(a, selector) for a in layer.aliases)
    if _matches(layer.pair, selector):
        return True
    index = layer.name.rsplit(".", 1)[-1]
    keys = selector if isinstance(selector, str) else [key for key in selector if key != index]
    return any(_matches(a, keys) for a in layer.aliases)


def _validate_selector(selector: Selector, what: str) -> None:
    if selector is None:
        return
    if isinstance(selector, str):
        try:
            re.compile(selector)
        except re.error as err:
            raise LoritaError(f"{what} is not a valid regular expression ({err}): {selector!r}") from None
        return
    if isinstance(selector, Iterator):  # read once here, nothing left where it is used
        raise LoritaError(f"{what} must be a list of module names or one regex string, got a one-pass "
                          f"{type(selector).__name__}: pass list(...) of it")
    if not isinstance(selector, Iterable) or not all(isinstance(k, str) for k in selector):
        raise LoritaError(f"{what} must be a list of module names or one regex string, got {selector!r}")


def _check_names(scan: Scan, keys: Iterable[str], what: str, verb: str, all_names: set[str]) -> None:
    """Raise for a listed name that matches no layer: what it is instead, and what could match."""
    names = list(scan.layers)
    available = ", ".join(names) if names else "(none)"
    for key in keys:
        if any(_layer_matches(scan.layers[n], [key]) for n in names):
            continue
        halves = [n for n in names if scan.layers[n].pair is not None and n.rsplit(".", 1)[-1] == key]
        if halves and not any(_matches(n, [key]) for n in all_names - set(halves)):  # a bare index of pairs only
            pairs = sorted({scan.layers[n].pair for n in halves})
            raise LoritaError(f"{key!r} alone names no layer here: a low-rank pair's layers are named with their "
                              f"pair, so name a pair for both its layers ({', '.join(pairs[:3])}) or one layer of "
                              f"one ({', '.join(halves[:3])})")
        skipped = [n for n in scan.skipped if _matches(n, [key])]
        if skipped:
            if what == "exclude":
                continue  # already left plain: excluding it is harmless
            raise LoritaError(f"cannot {verb} {skipped[0]!r}: {scan.skipped[skipped[0]]}")
        if any(_matches(n, [key]) for n in all_names):
            if what == "exclude":
                regex = re.escape(key) + r"\..*"
                raise LoritaError(f"exclude names module {key!r}, which is not a Linear or Conv2d layer; exclude "
                                  f"takes layer names (exact or .suffix) or one regex (e.g. {regex!r} for every "
                                  f"layer inside it). Layers that can be {_done(verb)}: {available}")
            raise LoritaError(f"module {key!r} is not a Linear or Conv2d layer, so it cannot be {_done(verb)}; "
                              f"layers that can: {available}")
        close = difflib.get_close_matches(key, names + list(scan.skipped), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        label = "unknown module name" if what == "targets" else "exclude names unknown module"
        raise LoritaError(f"{label} {key!r}.{hint} Layers that can be {_done(verb)}: {available}")


def describe_skipped(skipped: dict[str, str], limit: int = 5) -> str:
    """Layers left plain grouped by reason, a few names each: ``reason: a, b (3 layers)``.

    Example:
        >>> describe_skipped({"a": "tied", "b": "tied", "c": "Conv1d"})
        'tied: a, b (2 layers); Conv1d: c'
    """
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    parts = []
    for reason, names in by_reason.items():
        shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
        parts.append(f"{reason}: {shown}" + (f" ({len(names)} layers)" if len(names) > 1 else ""))
    return "; ".join(parts)


def _done(verb: str) -> str:
    """``verb``'s past participle, for messages.

    Example:
        >>> _done("compress"), _done("compose"), _done("cut")
        ('compressed', 'composed', 'cut')
    """
    return {"cut": "cut", "compress": "compressed"}.get(verb, f"{verb}d")


def require_layers(model: nn.Module, layers: Sized, verb: str) -> None:
    """Refuse a model with no layer to ``verb`` (``layers``: those found) where that is because it is already cut
    or quantized, saying so and what to do instead; a model without either gets its caller's own message.

    Example:
        >>> from lorita.lowrank import truncate
        >>> require_layers(nn.Sequential(truncate(nn.Linear(8, 8), 2)), {}, "compress")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: the model is already cut (its layers are low-rank pairs, which are not compressed again); compress the model it was cut from instead (lorita compress: the source run)
    """
    if layers:
        return
    if has_lowrank(model):
        raise LoritaError(f"the model is already cut (its layers are low-rank pairs, which are not {_done(verb)} "
                          f"again); {verb} the model it was cut from instead (lorita compress: the source run)")
    if any(isinstance(m, INT8_TYPES) for m in model.modules()):
        raise LoritaError(f"the model is quantized (its layers are int8, which are not {_done(verb)}); {verb} the "
                          "float model, then quantize the result")


def select(scan: Scan, targets: Selector = None, exclude: Selector = None, *, verb: str = "compose",
           all_modules: Iterable[str] = ()) -> list[Layer]:
    """The eligible layers matched by ``targets`` (all if None) and not by ``exclude``.

    Names match exactly or as a ``.suffix``; a single string is a full-match regex. A
    listed name (in ``targets`` or ``exclude``) that matches no layer, a regex ``exclude``
    that matches none, or a selection that leaves nothing raises an error listing the
    layers that could have matched (and why the others are left plain).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> [layer.name for layer in select(scan_layers(net), ["2"])]
        ['2']
    """
    _validate_selector(targets, "targets")
    _validate_selector(exclude, "exclude")
    names = list(scan.layers)
    available = ", ".join(names) if names else "(none)"
    all_names = set(all_modules)
    if targets is not None and not isinstance(targets, str):
        _check_names(scan, targets, "targets", verb, all_names)
    if exclude is not None and not isinstance(exclude, str):
        _check_names(scan, exclude, "exclude", verb, all_names)
    if isinstance(exclude, str) and not any(_layer_matches(scan.layers[n], exclude) for n in names) \
            and not any(_matches(n, exclude) for n in scan.skipped):
        raise LoritaError(f"exclude={exclude!r} (a regex, full match) matches no layer. Layers that can be "
                          f"{_done(verb)}: {available}")
    chosen = []
    for name, layer in scan.layers.items():
        if targets is not None and not _layer_matches(layer, targets):
            continue
        if exclude is not None and _layer_matches(layer, exclude):
            continue
        chosen.append(layer)
    if not chosen:
        plain = f" Left plain: {describe_skipped(scan.skipped)}." if scan.skipped else ""
        if not scan.layers and targets is None and exclude is None:
            raise LoritaError(f"the model has no layer lorita can {verb} (an nn.Linear, an nn.Conv2d with groups=1 or "
                              f"transformers' Conv1D, called by its parent).{plain}")
        raise LoritaError(f"no layer matched targets={targets!r} exclude={exclude!r}. "
                          f"Layers that could have matched: {available}.{plain}")
    return chosen


def resolve_ranks(ranks: Any, layers: Iterable[Layer],
                  skipped: Mapping[str, str] | None = None) -> dict[str, tuple[str, Any]]:
    """The layers that ``ranks`` names, by canonical name: ``(the name as given, its rank)``.

    ``ranks`` maps module names to ranks; a key may be any name a layer is used under (an
    alias). A key naming a layer left plain because its parent reads its weight is dropped,
    since the warning names it; any other key that names none of
    ``layers`` raises, with the reason where ``skipped`` has one. The ranks themselves are
    checked by the caller, against each layer's shape (``lorita.linalg.check_rank``).

    Example:
        >>> shared = nn.Linear(4, 4)
        >>> scan = scan_layers(nn.Sequential(shared, nn.ReLU(), shared))
        >>> resolve_ranks({"2": 3}, scan.layers.values())
        {'0': ('2', 3)}
        >>> resolve_ranks({"0": 1, "2": 3}, scan.layers.values())
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: ranks gives '0' rank 1 and '2' rank 3, but they are one layer used in two places (shared): give it one rank, under either name
    """
    if not isinstance(ranks, dict):
        raise LoritaError(f"ranks must be a dict of module name -> rank, got {type(ranks).__name__}")
    layers = list(layers)
    skipped = skipped or {}
    canonical = {alias: layer.name for layer in layers for alias in layer.aliases}
    resolved = {}
    for given, rank in ranks.items():
        if skipped.get(given) == READ_BY_PARENT:
            continue
        if given not in canonical:
            reason = f" ({skipped[given]})" if given in skipped else ""
            raise LoritaError(f"ranks names unknown layer {given!r}{reason}; layers that can be compressed: "
                              f"{', '.join(layer.name for layer in layers) or '(none)'}")
        earlier = resolved.get(canonical[given])
        if earlier is not None and earlier[1] != rank:
            raise LoritaError(f"ranks gives {earlier[0]!r} rank {earlier[1]!r} and {given!r} rank {rank!r}, but they "
                              f"are one layer used in two places (shared): give it one rank, under either name")
        resolved[canonical[given]] = (given, rank)
    return resolved


def warn_skipped(skipped: dict[str, str], verb: str) -> None:
    """One ``LoritaWarning`` naming every layer left plain, with the reason for each."""
    if skipped:
        lines = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        warnings.warn(f"lorita.{verb} left {len(skipped)} layer(s) plain: {lines}", LoritaWarning, stacklevel=3)


def skipped_layers(model: nn.Module, *, example_input: Any = None) -> dict[str, str]:
    """Layers that look linear but are left plain by compose and compress: ``{name: reason}``.

    The same list the warnings name (grouped/depthwise/transposed convs, Conv1d/Conv3d,
    projections inside ``nn.MultiheadAttention``, tied weights, layers whose parent reads
    their weight instead of calling them, ...), for results files; found as compose and
    compress find them, with the same ``example_input`` (or none).

    Example:
        >>> skipped_layers(nn.Sequential(nn.Conv1d(2, 2, 3), nn.Linear(2, 2)))
        {'0': 'Conv1d: only Conv2d is supported'}
    """
    check_model(model, "skipped_layers")
    return dict(scan_layers(model, example_input=example_input).skipped)


def replace_module(model: nn.Module, layer: Layer, new: nn.Module) -> None:
    """Put ``new`` at every name ``layer`` is used under (shared modules stay shared), frozen where the layer was
    (``keep_frozen``)."""
    keep_frozen(layer.module, new)
    name_layer(new, layer.name)  # named in the warning if the model reads its dense .weight
    for alias in layer.aliases:
        model.set_submodule(alias, new)


def keep_frozen(old: nn.Module, new: nn.Module) -> None:
    """``new``, which replaces ``old`` (composed, merged, cut or quantized), frozen where ``old`` was: its bias when
    ``old``'s bias had ``requires_grad=False``, its other parameters (factors, thin layers) when every other
    parameter of ``old`` had. A frozen layer stays frozen through fine-tuning after the cut.

    Example:
        >>> dense = nn.Linear(4, 4); dense.weight.requires_grad_(False)
        Parameter containing:
        ...
        >>> pair = nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(2, 4)); keep_frozen(dense, pair)
        >>> [(name, p.requires_grad) for name, p in pair.named_parameters()]
        [('0.weight', False), ('1.weight', False), ('1.bias', True)]
    """
    weights = [p.requires_grad for n, p in old.named_parameters() if n.rpartition(".")[2] != "bias"]
    biases = [p.requires_grad for n, p in old.named_parameters() if n.rpartition(".")[2] == "bias"]
    frozen_weights, frozen_bias = bool(weights) and not any(weights), bool(biases) and not any(biases)
    for name, p in new.named_parameters():
        if frozen_bias if name.rpartition(".")[2] == "bias" else frozen_weights:
            p.requires_grad_(False)
