"""``profile``: parameters, MACs and FLOPs of a model, in total and per layer.

FLOPs are measured by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` on one
forward pass: it counts matrix multiplies, convolutions and attention (2 FLOPs per
multiply-add); element-wise work (activations, norms, bias adds) is not counted. Two gaps
of that counter are closed here: PyTorch's fused eval path of ``nn.TransformerEncoderLayer``
is turned off while counting (one fused kernel hid every layer in it), and CPU attention
(``scaled_dot_product_attention``'s CPU kernel, which the counter's table lacks) is counted with
the counter's own attention formula.
MACs (multiply-accumulates) = FLOPs / 2. All counts are for the whole example input
(divide by its batch size for per-example figures).

What is counted is what runs: a layer whose parent reads its ``.weight`` and computes
with it itself (``F.linear(x, layer.weight)``) has its MACs counted under the parent,
and its row says so (a cut pair there is rebuilt into the dense weight at every call:
it saves storage, not compute).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from lorita.composed import COMPOSED_TYPES
from lorita.conv1d import is_conv1d
from lorita.int8 import INT8_TYPES
from lorita.lowrank import LOWRANK_TYPES
from lorita.probe import eval_mode, model_input, run_model, track_usage, unfused
from lorita.targets import check_model

READ_NOTE = "read by its parent: own forward never ran, its MACs are counted under the parent"
UNKNOWN_NOTE = ("own MACs unknown (a module below it is shared with another part of the model), shown as 0: the rows "
                "add up to less than the total")
_MARKS = {READ_NOTE: "*", UNKNOWN_NOTE: "+"}


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_CPU_ATTENTION = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
# what the counter's own table lacks (a later PyTorch that counts it keeps its own formula)
_COUNTED = getattr(flop_counter, "flop_registry", {})
_MISSING_FORMULAS = {_CPU_ATTENTION: _sdpa_flops} if _CPU_ATTENTION is not None and _CPU_ATTENTION not in _COUNTED \
    and hasattr(flop_counter, "sdpa_flop_count") else {}


@dataclass
class LayerProfile:
    """One layer's counts: ``params`` (weights and biases), ``macs`` and ``flops`` (= 2 x MACs).

    ``note``: empty, or why the counts are not what the layer's shape suggests (its parent
    read its weight instead of calling it: ``READ_NOTE``)."""

    name: str
    type: str
    params: int
    macs: int
    flops: int
    note: str = ""


@dataclass
class Profile:
    """Totals and per-layer counts. Units: parameters (count), MACs and FLOPs for the example input."""

    params: int
    macs: int
    flops: int
    batch_size: int
    layers: list[LayerProfile] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain-JSON form, with the units spelled out."""
        out = asdict(self)
        out["units"] = {"params": "count", "macs": "multiply-accumulates for the example input",
                        "flops": "floating-point operations = 2 x MACs, for the example input"}
        return out

    def table(self) -> str:
        """A fixed-width table a person reads at a glance."""
        rows = [(lp.name + (f" {_MARKS[lp.note]}" if lp.note else ""), lp.type, human(lp.params), human(lp.macs),
                 human(lp.flops)) for lp in self.layers]
        rows.append(("total", "", human(self.params), human(self.macs), human(self.flops)))
        head = ("layer", "type", "params", "MACs", "FLOPs")
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
        line = lambda r: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        sep = "-" * len(line(head))
        note = f"MACs and FLOPs (= 2 x MACs) for a batch of {self.batch_size}, counted by torch FlopCounterMode"
        notes = [f"{mark} {text}" for text, mark in _MARKS.items() if any(lp.note == text for lp in self.layers)]
        return "\n".join([line(head), sep, *map(line, rows[:-1]), sep, line(rows[-1]), note, *notes])

    def __str__(self) -> str:
        return self.table()


ROOT_ROW = "(model itself)"  # the row of what the model's own forward computes, outside every submodule


def human(count: int) -> str:
    """``1234567 -> '1.23M'``.

    Example:
        >>> human(1234567)
        '1.23M'
    """
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.2f}{unit}"
    return str(count)


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules to report: composed and compressed layers whole, every other module with what it holds and
    computes itself (a container: its own parameters and MACs, such as attention's products, not its children's);
    those with neither are left out of the table."""
    if _is_layer(model) or not any(True for _ in model.children()):
        return []  # a model that is one layer: its row would be the total
    units, sealed = [], []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in sealed):
            continue
        if isinstance(module, (*COMPOSED_TYPES, *LOWRANK_TYPES)):
            sealed.append(name)
        units.append((name, module))
    return units


def count_params(model: nn.Module) -> int:
    """Parameters of ``model`` (each shared tensor once): ``profile``'s count for a model without int8 layers.

    Example:
        >>> count_params(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters())


def _is_layer(module: nn.Module) -> bool:
    kinds = (nn.Linear, nn.modules.conv._ConvNd, *COMPOSED_TYPES, *LOWRANK_TYPES, *INT8_TYPES)
    return isinstance(module, kinds) or is_conv1d(module)


def _sizes(module: nn.Module, recurse: bool = True) -> dict[int, int]:
    """``{id: numel}`` of the parameters, and the int8 weights of ``lorita.int8`` layers (buffers, but the layer's
    weights), each once; ``recurse=False``: the module's own, less any a submodule holds (a tied one)."""
    sizes = {id(p): p.numel() for p in module.parameters(recurse=recurse)}
    for m in module.modules() if recurse else [module]:
        if isinstance(m, INT8_TYPES):
            sizes[id(m.qweight)] = m.qweight.numel()
    if not recurse:
        below = {key for child in module.children() for key in _sizes(child)}
        sizes = {key: size for key, size in sizes.items() if key not in below}
    return sizes


def _count(module: nn.Module) -> int:
    return sum(_sizes(module).values())


class _FlopsByModule:
    """FLOPs per module from PyTorch's counter, which keys them by one path each (a shared module's by whichever path
    it ran under): a module's whole count sums its paths; a container's own count is its whole count less that of
    its children (a child that never ran itself, such as an ``nn.ModuleList``, through its own children). A
    container with a shared module below it has no own count (which call went where is not known): 0."""

    def __init__(self, model: nn.Module, counts: dict):
        root = type(model).__name__
        self.counts = {key: int(sum(ops.values())) for key, ops in counts.items()}
        self.paths: dict[int, list[str]] = {}
        for path, module in model.named_modules(remove_duplicate=False):
            self.paths.setdefault(id(module), []).append(f"{root}.{path}" if path else root)
        self.shared = {key for key, paths in self.paths.items() if len(paths) > 1}

    def whole(self, module: nn.Module) -> int:
        return sum(self.counts.get(path, 0) for path in self.paths[id(module)])

    def _reached(self, module: nn.Module) -> int:
        counted = self.whole(module)
        return counted if counted else sum(self._reached(child) for child in module.children())

    def own(self, module: nn.Module) -> int | None:
        inside = tuple(path + "." for path in self.paths[id(module)])
        if any(not path.startswith(inside) for m in module.modules() if m is not module and id(m) in self.shared
               and self.whole(m) for path in self.paths[id(m)]):
            return None  # a module below it that computes is also used elsewhere: which call went where is unknown
        below = [{id(m) for m in child.modules() if self.whole(m)} for child in module.children()]
        if sum(map(len, below)) != len(set().union(*below)):
            return None  # one module under two of its children: its calls would be subtracted twice
        return max(self.whole(module) - sum(self._reached(child) for child in module.children()), 0)


@torch.no_grad()
def profile(model: nn.Module, example_input) -> Profile:
    """Count params, MACs and FLOPs of ``model`` on ``example_input`` (a tensor, a tuple of them, or a dict of
    named arguments such as a tokenizer's output: ``lorita.probe.model_input``).

    One eval-mode forward pass (PyTorch's fused attention fast path off, so each layer is
    counted). Parameters do not require grad while it runs (restored after), so PyTorch's
    counter needs no autograd graph (transformers' DeBERTa-v2 feeds a parameter straight into
    a layer, which the counter's module tracker rejects under
    ``no_grad`` otherwise).

    Example:
        >>> net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
        >>> p = profile(net, torch.randn(1, 10))
        >>> p.params, p.macs, p.flops
        (325, 300, 600)
        >>> profile(net, torch.randn(10)).batch_size  # one unbatched example, not a batch of 10
        1
    """
    check_model(model, "profile")
    call = model_input(example_input).map(torch.Tensor.detach)
    units = _units(model)
    layers_to_track = {name: module for name, module in units if _is_layer(module)}
    grads = [(p, p.requires_grad) for p in model.parameters()]
    counter = FlopCounterMode(display=False, custom_mapping=_MISSING_FORMULAS)
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        with eval_mode(model), unfused(), track_usage(layers_to_track) as usage, counter:
            run_model(model, call)
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
    read_only = set(usage.read_not_run())
    flops_of = _FlopsByModule(model, counter.get_flop_counts())
    layers, counted = [], set()  # a tensor held by two rows (tied) counts in the first
    for name, module in units:
        whole = isinstance(module, (*COMPOSED_TYPES, *LOWRANK_TYPES)) or not any(True for _ in module.children())
        flops = flops_of.whole(module) if whole else flops_of.own(module)  # a container: what it computes itself
        unknown = flops is None and flops_of.whole(module) > 0
        flops = flops or 0
        sizes = _sizes(module, whole)
        params = sum(size for key, size in sizes.items() if key not in counted)
        counted.update(sizes)
        if params or flops or unknown:  # the model's root: a row named ROOT_ROW for what its own forward computes
            note = READ_NOTE if name in read_only else UNKNOWN_NOTE if unknown else ""
            layers.append(LayerProfile(name or ROOT_ROW, type(module).__name__, params, flops // 2, flops, note))
    total_flops = flops_of.counts.get("Global", 0)
    params = _count(model)  # shared parameters counted once
    return Profile(params, total_flops // 2, total_flops, call.batch_size, layers)  # a 1-D lead: unbatched, 1
