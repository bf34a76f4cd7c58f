"""``profile``: parameters, MACs and FLOPs of a model, in total and per layer.

FLOPs are measured by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` on one
forward pass: it counts matrix multiplies, convolutions and attention (2 FLOPs per
multiply-add); element-wise work (activations, norms, bias adds) is not counted.
MACs (multiply-accumulates) = FLOPs / 2. All counts are for the whole example input
(divide by its batch size for per-example figures).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lorita.composed import COMPOSED_TYPES
from lorita.errors import LoritaError
from lorita.lowrank import LOWRANK_TYPES


@dataclass
class LayerProfile:
    """One layer's counts: ``params`` (weights and biases), ``macs`` and ``flops`` (= 2 x MACs)."""

    name: str
    type: str
    params: int
    macs: int
    flops: int


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
        rows = [(lp.name, lp.type, human(lp.params), human(lp.macs), human(lp.flops)) for lp in self.layers]
        rows.append(("total", "", human(self.params), human(self.macs), human(self.flops)))
        head = ("layer", "type", "params", "MACs", "FLOPs")
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
        line = lambda r: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        sep = "-" * len(line(head))
        note = f"MACs and FLOPs (= 2 x MACs) for a batch of {self.batch_size}, counted by torch FlopCounterMode"
        return "\n".join([line(head), sep, *map(line, rows[:-1]), sep, line(rows[-1]), note])

    def __str__(self) -> str:
        return self.table()


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
    """Layers to report: composed and compressed layers whole, other modules that hold parameters."""
    units, sealed = [], []
    for name, module in model.named_modules():
        if name == "" or any(name.startswith(p + ".") for p in sealed):
            continue
        if isinstance(module, (*COMPOSED_TYPES, *LOWRANK_TYPES)):
            sealed.append(name)
            units.append((name, module))
        elif any(True for _ in module.parameters(recurse=False)) or not any(True for _ in module.children()):
            units.append((name, module))
    return units


@torch.no_grad()
def profile(model: nn.Module, example_input) -> Profile:
    """Count params, MACs and FLOPs of ``model`` on ``example_input`` (a tensor or tuple of them).

    Example:
        >>> net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
        >>> p = profile(net, torch.randn(1, 10))
        >>> p.params, p.macs, p.flops
        (325, 300, 600)
    """
    if not isinstance(model, nn.Module):
        raise LoritaError(f"profile needs an nn.Module, got {type(model).__name__}")
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if not args or not isinstance(args[0], torch.Tensor):
        raise LoritaError("example_input must be a tensor (or a tuple of tensors) the model accepts, "
                          "e.g. torch.randn(1, 3, 32, 32)")
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(*args)
    finally:
        model.train(was_training)
    counts = {key: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}
    root = type(model).__name__
    layers = []
    for name, module in _units(model):
        whole = isinstance(module, (*COMPOSED_TYPES, *LOWRANK_TYPES)) or not any(True for _ in module.children())
        # A container with its own parameters reports only those; its children report themselves.
        flops = int(counts.get(f"{root}.{name}", 0)) if whole else 0
        params = sum(p.numel() for p in module.parameters(recurse=whole))
        if params or flops:
            layers.append(LayerProfile(name, type(module).__name__, params, flops // 2, flops))
    total_flops = int(counts.get("Global", 0))
    params = sum(p.numel() for p in model.parameters())  # shared parameters counted once
    return Profile(params, total_flops // 2, total_flops, int(args[0].shape[0]) if args[0].dim() else 1, layers)
