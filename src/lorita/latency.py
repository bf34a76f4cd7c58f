"""Latency-aware ranks: keep a layer dense where its thin pair is not faster on this machine.

Fewer MACs do not always mean less time: a thin conv with a handful of output channels,
or a small layer at batch 1, can run slower as two layers than as one. ``keep_faster``
times each layer that ``ranks`` would cut, dense against its rank-r pair, on the very
input the layer sees for ``example_input``, and sets the layers whose pair is not faster
to full rank (``lorita.compress`` then keeps them dense).

Timings only depend on shapes, so the pair is timed with random weights (no SVD) and
the results are cached by (layer kind and geometry, rank, input shape, dtype, device,
threads): in memory for the session, and in a JSON file only when ``cache_file`` is
given (``True`` for ``default_cache_file()``, under the user's cache directory).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lorita.atomic import atomic_write_text
from lorita.checks import check_int, check_number
from lorita.compose import merge
from lorita.composed import COMPOSED_TYPES
from lorita.compress import layer_shape
from lorita.errors import LoritaError
from lorita.linalg import break_even_rank, check_rank
from lorita.lowrank import LowRankConv2d, LowRankLinear
from lorita.probe import eval_mode, observe
from lorita.targets import check_model, resolve_ranks, scan_layers

log = logging.getLogger(__name__)

__all__ = ["LayerLatency", "default_cache_file", "keep_faster", "layer_latencies", "time_module"]

Timer = Callable[[nn.Module, torch.Tensor], float]

# (key -> seconds per call) measured in this process with the default timer.
_CACHE: dict[str, float] = {}


@dataclass
class LayerLatency:
    """One layer's timing: seconds per call dense and as the rank-``rank`` pair, on ``input_shape``."""

    name: str
    rank: int
    full_rank: int  # min(out, in): the rank that keeps the layer dense
    input_shape: tuple[int, ...]
    dense_s: float
    pair_s: float

    @property
    def speedup(self) -> float:
        """``dense_s / pair_s``: above 1 the pair is faster."""
        return self.dense_s / self.pair_s if self.pair_s > 0 else float("inf")


def default_cache_file() -> Path:
    """``$XDG_CACHE_HOME/lorita/latency.json`` (``~/.cache/lorita/latency.json`` by default).

    Example:
        >>> default_cache_file().name
        'latency.json'
    """
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "lorita" / "latency.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_module(module: nn.Module, x: torch.Tensor, *, min_seconds: float = 0.002) -> float:
    """Seconds per call of ``module(x)`` under ``torch.inference_mode``, averaged over enough calls
    to last ``min_seconds`` (one warm-up call first; CUDA is synchronised around the clock).

    Example:
        >>> t = time_module(nn.Linear(8, 8).eval(), torch.randn(4, 8))
        >>> t > 0
        True
    """
    with torch.inference_mode():
        module(x)  # warm-up: allocator, kernel selection
        _sync(x.device)
        number, elapsed = 1, 0.0
        while True:
            start = time.perf_counter()
            for _ in range(number):
                module(x)
            _sync(x.device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds or number >= 1 << 16:
                return elapsed / number
            number *= 2


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def _geometry(module: nn.Module) -> list:
    if isinstance(module, nn.Conv2d):
        return [module.in_channels, module.out_channels, list(module.kernel_size), list(module.stride),
                list(module.padding) if isinstance(module.padding, tuple) else module.padding,
                list(module.dilation), module.padding_mode, module.bias is not None]
    m, n = layer_shape(module)
    return [n, m, getattr(module, "bias", None) is not None]


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _key(module: nn.Module, rank: int | None, x: torch.Tensor) -> str:
    """One cache key (a JSON string, so it survives a round trip through the file)."""
    layout = "channels_last" if _channels_last(x) else "contiguous"
    return json.dumps([type(module).__name__, _geometry(module), rank, list(x.shape), layout, str(x.dtype),
                       _device_name(x.device), torch.get_num_threads()])


def _pair(module: nn.Module, rank: int, x: torch.Tensor) -> nn.Module:
    """A rank-``rank`` pair shaped like ``module``, random weights (only its speed matters),
    in ``x``'s memory format."""
    w = module.weight
    if isinstance(module, nn.Conv2d):
        pair = LowRankConv2d(module, rank)
        if _channels_last(x):
            pair = pair.to(memory_format=torch.channels_last)
    else:
        m, n = layer_shape(module)
        pair = LowRankLinear(n, m, rank, bias=getattr(module, "bias", None) is not None, device=w.device,
                             dtype=w.dtype)
    return pair.eval()


def _layer_inputs(model: nn.Module, names: list[str], example_input: Any) -> dict[str, torch.Tensor]:
    """The input each named module gets on its first call in one eval-mode forward pass."""
    seen: dict[str, torch.Tensor] = {}
    hooks = {name: (lambda module, inputs, name=name: seen.setdefault(name, inputs[0])) for name in names}
    observe(model, example_input, hooks, before=True)
    missing = [n for n in names if n not in seen]
    if missing:
        raise LoritaError(f"layer(s) {', '.join(map(repr, missing))} did not run on example_input, so they "
                          "cannot be timed; pass an input that runs every layer you cut (a layer whose parent "
                          "reads its weight never runs: select ranks with example_input= to leave such layers out)")
    return seen


def _load(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable latency cache %s (%s)", path, err)
        return {}
    return {k: float(v) for k, v in data.get("seconds", {}).items()} if isinstance(data, dict) else {}


def layer_latencies(model: nn.Module, ranks: dict[str, int], example_input: Any, *, repeats: int = 5,
                    timer: Timer | None = None, cache: dict[str, float] | None = None,
                    cache_file: str | os.PathLike | bool | None = None) -> dict[str, LayerLatency]:
    """Time every layer that ``ranks`` cuts (rank below break-even): dense and as its thin pair.

    Each layer is timed on the input it gets when ``model`` (merged, eval mode) runs
    ``example_input``, so batch and image size are those of deployment. Dense and pair
    are timed alternately ``repeats`` times and the medians kept. ``timer(module, x)``
    returns seconds per call (default ``time_module``). ``cache`` maps keys to seconds
    (default: this process's cache when the default timer is used, else none);
    ``cache_file`` also reads and writes a JSON file (``True``: ``default_cache_file()``).

    Example:
        >>> net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> lat = layer_latencies(net, {"0": 8}, torch.randn(1, 64), repeats=1)
        >>> lat["0"].rank, lat["0"].input_shape
        (8, (1, 64))
    """
    check_model(model, "layer_latencies")
    check_int("repeats", repeats)
    if timer is not None and not callable(timer):
        raise LoritaError(f"timer must be a callable (module, input) -> seconds, got {type(timer).__name__}")
    if any(isinstance(m, COMPOSED_TYPES) for m in model.modules()):
        model = merge(model)
    scan = scan_layers(model, composed=False)
    layers = scan.layers
    cut = {}  # canonical name -> (name as given, rank), for layers the ranks actually cut
    for name, (given, rank) in resolve_ranks(ranks, layers.values(), scan.skipped).items():
        m, n = layer_shape(layers[name].module)
        if check_rank(f"rank for {given!r}", rank, m, n) <= break_even_rank(m, n):
            cut[name] = (given, rank)
    if cache is None:
        cache = _CACHE if timer is None else {}
    path = None
    if cache_file:
        path = default_cache_file() if cache_file is True else Path(cache_file)
        cache.update({k: v for k, v in _load(path).items() if k not in cache})
    timer = timer or time_module
    inputs = _layer_inputs(model, list(cut), example_input)
    out = {}
    for name, (given, rank) in cut.items():
        dense, x = layers[name].module, inputs[name]
        keys = (_key(dense, None, x), _key(dense, rank, x))
        if keys[0] not in cache or keys[1] not in cache:
            pair = _pair(dense, rank, x)
            times: tuple[list[float], list[float]] = ([], [])
            with eval_mode(dense):
                for _ in range(repeats):  # alternate, so drift in machine load hits both alike
                    times[0].append(float(timer(dense, x)))
                    times[1].append(float(timer(pair, x)))
            cache[keys[0]] = statistics.median(times[0])
            cache[keys[1]] = statistics.median(times[1])
        out[given] = LayerLatency(given, rank, min(layer_shape(dense)), tuple(x.shape), cache[keys[0]],
                                  cache[keys[1]])
    if path is not None:
        atomic_write_text(path, json.dumps({"seconds": cache}, indent=0, sort_keys=True))
    return out


def keep_faster(model: nn.Module, ranks: dict[str, int], example_input: Any, *, margin: float = 1.0,
                **timing) -> dict[str, int]:
    """``ranks`` with every layer whose thin pair is not faster than dense set to full rank (dense).

    A cut layer keeps its rank only when ``pair time < margin * dense time`` on this
    machine, for the input it gets from ``example_input`` (use the deployment batch
    size). Layers not cut by ``ranks`` (rank at or above break-even) are returned as
    given. ``timing`` options (``repeats``, ``timer``, ``cache``, ``cache_file``) as in
    ``layer_latencies``. Feed the result to ``lorita.compress(model, ranks=...)``.

    Example:
        >>> net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> fake = lambda module, x: 1.0 if isinstance(module, nn.Linear) else 2.0  # pair slower
        >>> keep_faster(net, {"0": 8, "2": 10}, torch.randn(1, 64), timer=fake)
        {'0': 64, '2': 10}
    """
    check_number("margin", margin, minimum=0, low_open=True, meaning="a pair must run under margin x dense time")
    out = dict(ranks)
    for name, lat in layer_latencies(model, ranks, example_input, **timing).items():
        if not lat.pair_s < margin * lat.dense_s:
            log.info("%s: rank-%d pair %.3g ms vs dense %.3g ms, keeping it dense", name, lat.rank,
                     lat.pair_s * 1e3, lat.dense_s * 1e3)
            out[name] = lat.full_rank
    return out
