"""Latency on this machine: a latency budget, and keeping a layer dense where its thin pair is not faster.

Fewer MACs do not always mean less time: a thin conv with a handful of output channels,
or a small layer at batch 1, can run slower as two layers than as one. ``keep_faster``
times each layer that ``ranks`` would cut, dense against its rank-r pair, on the very
input the layer sees for ``example_input``, and sets the layers whose pair is not faster
to full rank (``lorita.compress`` then keeps them dense).

``latency_budget`` chooses the ranks themselves by measured time: each layer's pair is
timed at a grid of ranks, rank goes where it keeps the most spectrum per second spent
(``lorita.ranks.measured_ranks``), a layer stays dense where no pair is faster, and the
whole cut model is then measured against the dense one and the allocation corrected
until the measured time lands within ``tolerance`` below the request. It can also choose
the memory layout (``layout="auto"``: channels_last where the dense model measures faster
in it; oneDNN runs some small-channel convs several times faster there).

Timings only depend on shapes, so the pair is timed with random weights (no SVD) and
the results are cached by (layer kind and geometry, rank, input shape, dtype, device,
threads): in memory for the session, and in a JSON file only when ``cache_file`` is
given (``True`` for ``default_cache_file()``, under the user's cache directory).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from lorita import jsonio
from lorita.atomic import atomic_write_text
from lorita.checks import check_int, check_number, is_number
from lorita.compose import merge
from lorita.composed import COMPOSED_TYPES
from lorita.compress import layer_shape
from lorita.cutspec import LAYOUTS, Latency
from lorita.errors import LoritaError
from lorita.linalg import break_even_rank, check_rank
from lorita.lowrank import LowRankConv2d, LowRankLinear
from lorita.probe import ModelInput, eval_mode, model_input, observe, run_model
from lorita.ranks import measured_ranks
from lorita.spectra import Spectra
from lorita.targets import Layer, check_model, replace_module, resolve_ranks, scan_layers

log = logging.getLogger(__name__)

__all__ = ["LAYOUTS", "LatencyBudget", "LayerLatency", "at_batch", "batch_of", "best_layout", "call_times",
           "compare_latency", "default_cache_file", "keep_faster", "latency_budget", "layer_latencies",
           "measure_latency", "relative_latency", "threads", "time_module"]

LAYOUT_MARGIN = 0.03  # channels_last is chosen only when it measures more than 3% faster: a gain, not noise

Timer = Callable[[nn.Module, torch.Tensor], float]

# (key -> seconds per call) measured in this process with the default timer.
_CACHE: dict[str, float] = {}
# The latency search: a try's estimated fraction weighs the fit over every try as this many of its own looks,
# and the try returned has been measured at least CONFIRM_LOOKS times.
FIT_WEIGHT = 2
CONFIRM_LOOKS = 3
MAX_TIMING_BYTES = 1 << 30  # the largest timing input (Latency.batch copies of the example) made in memory


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


def _open_cache(cache: dict | None, cache_file, timer) -> tuple[dict, Path | None]:
    """The timing cache to use (the process-wide one for real timings; a fresh one for a fake ``timer``),
    merged with ``cache_file``'s entries, and that file's path (None: no file)."""
    if cache is None:
        cache = _CACHE if timer is None else {}
    path = None
    if cache_file:
        path = default_cache_file() if cache_file is True else Path(cache_file)
        cache.update({k: v for k, v in _load(path).items() if k not in cache})
    return cache, path


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
    to last ``min_seconds`` (CUDA is synchronised around the clock). A warm-up call first under
    ``no_grad``: a table the module builds on its first call and keeps, as rotary-embedding caches
    do, stays usable for training (state it rebuilds at every call ends as an inference tensor);
    then one under ``inference_mode`` (a compiled module recompiles for it there, off the clock).

    Example:
        >>> t = time_module(nn.Linear(8, 8).eval(), torch.randn(4, 8))
        >>> t > 0
        True
    """
    with torch.no_grad():
        module(x)  # warm-up: allocator, kernel selection, whatever the module caches
    with torch.inference_mode():
        module(x)  # once more in the mode timed: a compiled module recompiles for it here, not on the clock
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


def _model_clock(module: nn.Module, x: torch.Tensor) -> float:
    """``time_module`` with samples of at least 50 ms: whole models, where a 2 ms sample is one or two calls."""
    return time_module(module, x, min_seconds=0.05)


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


def _pair(module: nn.Module, rank: int, x: torch.Tensor | bool) -> nn.Module:
    """A rank-``rank`` pair shaped like ``module``, random weights (only its speed matters),
    in ``x``'s memory format (or channels_last when ``x`` is True)."""
    w = module.weight
    if isinstance(module, nn.Conv2d):
        pair = LowRankConv2d(module, rank)
        if (x is True) or (isinstance(x, torch.Tensor) and _channels_last(x)):
            pair = pair.to(memory_format=torch.channels_last)
    else:
        m, n = layer_shape(module)
        pair = LowRankLinear(n, m, rank, bias=getattr(module, "bias", None) is not None, device=w.device,
                             dtype=w.dtype)
    return pair.eval()


def _layer_inputs(model: nn.Module, names: list[str], example_input: Any,
                  calls: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """The input each named module gets on its first call in one eval-mode forward pass
    (and, into ``calls``, how many times each is called)."""
    seen: dict[str, torch.Tensor] = {}
    counts = calls if calls is not None else {}

    def hook(name):
        def record(module, inputs):
            seen.setdefault(name, inputs[0])
            counts[name] = counts.get(name, 0) + 1
        return record

    observe(model, example_input, {name: hook(name) for name in names}, before=True)
    missing = [n for n in names if n not in seen]
    if missing:
        raise LoritaError(f"layer(s) {', '.join(map(repr, missing))} did not run on example_input, so they "
                          "cannot be timed; pass an input that runs every layer you cut (a layer whose parent "
                          "reads its weight never runs: select ranks with example_input= to leave such layers out)")
    return seen


def _load(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    try:
        data = jsonio.read(path)
    except LoritaError as err:
        log.warning("ignoring unreadable latency cache %s (%s)", path, err)
        return {}
    seconds = data.get("seconds") if isinstance(data, dict) else None
    if not isinstance(seconds, dict):
        return {}
    return {k: float(v) for k, v in seconds.items() if is_number(v) and v > 0}


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
    cache, path = _open_cache(cache, cache_file, timer)
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


# ----------------------------------------------------------------------------
# latency budget


@dataclass
class LatencyBudget:
    """Outcome of ``latency_budget``: the ranks, and the latency predicted and measured for them.

    Seconds are per call of the model on the example input (its batch), on this machine,
    in ``layout``, with ``threads`` threads. ``predicted_s``: the dense time minus what the
    per-layer timings say each cut saves; ``measured_s``: the cut model itself, timed
    against the dense one (``measured`` is their ratio, the mean of its looks).
    ``estimated``: the chosen cut's fraction from its looks and the fit over every try, what
    the choice was made on and the budget bounds (at most ``latency``). ``dense_by_layout``: the dense model's time in each layout
    measured. ``rounds``: each allocation tried (internal target, predicted fraction, each
    look's measured fraction, their mean, the fitted fraction). ``layers``: per
    layer, the rank chosen, its dense time and its chosen form's time (seconds, per call,
    times the number of calls in one forward pass).
    """

    ranks: dict[str, int]
    latency: float
    dense_s: float
    predicted_s: float
    measured_s: float
    layout: str
    batch: int
    threads: int
    estimated: float = 1.0
    dense_by_layout: dict[str, float] = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)
    layers: dict[str, dict] = field(default_factory=dict)

    @property
    def predicted(self) -> float:
        """Predicted time as a fraction of the dense model's."""
        return self.predicted_s / self.dense_s

    @property
    def measured(self) -> float:
        """Measured time as a fraction of the dense model's: the mean of the chosen try's looks (its
        ``estimated`` fraction, which weighs in every other try, is the one held to ``latency``)."""
        return self.measured_s / self.dense_s

    @property
    def kept_dense(self) -> list[str]:
        """Layers left dense (no pair of theirs was worth its time)."""
        return sorted(name for name, info in self.layers.items() if not info["cut"])

    def to_dict(self) -> dict:
        """Plain-JSON form, with the fractions and units spelled out."""
        out = asdict(self)
        out.update(predicted=self.predicted, measured=self.measured, kept_dense=self.kept_dense,
                   units={"seconds": "per call of the model on the example input, this machine",
                          "predicted, measured, estimated": "fraction of the dense model's time"})
        return out


class _Bound(nn.Module):
    """``model`` called with ``call``'s other arguments around the lead tensor (timers take one input)."""

    def __init__(self, model: nn.Module, call: ModelInput):
        super().__init__()
        self.model, self.call = model, call

    def forward(self, x):
        return self.call.with_lead(x)(self.model)


def _rank_grid(break_even: int, points: int) -> list[int]:
    """Ranks to time a pair at: 1, 2, 4, ... and ``points`` even steps up to break-even (multiples of 8 above 16)."""
    if break_even <= points + 4:
        return list(range(1, break_even + 1))
    grid = {r for r in (1, 2, 4, 8) if r <= break_even}
    for i in range(1, points + 1):
        r = round(break_even * i / points)
        grid.add(r // 8 * 8 if r >= 16 else max(1, r))
    return sorted(r for r in grid if 1 <= r <= break_even)


def _between(measured: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The ranks a cut may take (1 to 16, then multiples of 8, which vectorised kernels run at full speed,
    and every measured rank), priced by linear interpolation between the measured ranks."""
    if not measured:  # a layer no rank can cut (break-even 0): dense only
        return []
    ranks = [r for r, _ in measured]
    top = ranks[-1]
    wanted = sorted({*range(1, min(16, top) + 1), *range(24, top + 1, 8), *ranks})
    out = []
    for r in wanted:
        i = next(i for i, g in enumerate(ranks) if g >= r)
        if ranks[i] == r:
            out.append(measured[i])
        else:
            (r0, c0), (r1, c1) = measured[i - 1], measured[i]
            out.append((r, c0 + (c1 - c0) * (r - r0) / (r1 - r0)))
    return out


def _format_call(call: ModelInput, channels_last: bool) -> ModelInput:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return call.with_lead(call.lead.contiguous(memory_format=fmt)) if call.lead.dim() == 4 else call


def _formatted(module: nn.Module, call: ModelInput, channels_last: bool) -> tuple[nn.Module, ModelInput]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return module.to(memory_format=fmt), _format_call(call, channels_last)


def _samples(models: dict[str, nn.Module], call: ModelInput, timer: Timer, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each model (or ``_Swap``, entered while timed) on ``call``, timed in turn ``repeats``
    times: one list of ``repeats`` samples per model, sample ``i`` of every model taken in the same round."""
    samples: dict[str, list[float]] = {k: [] for k in models}
    alone = len(call.args) == 1 and not call.kwargs  # the timer's one input is the whole call
    for _ in range(repeats):
        for k, m in models.items():
            with (m if isinstance(m, _Swap) else contextlib.nullcontext(m)) as module, eval_mode(module):
                samples[k].append(float(timer(module if alone else _Bound(module, call), call.lead)))
    return samples


def _check_runs(models: dict[str, nn.Module], call: ModelInput) -> None:
    """Each model called once on ``call`` (eval mode, no_grad) before any timing: one that fails on it is a
    LoritaError naming the model and the input, not a traceback from inside a timer."""
    for name, model in models.items():
        with eval_mode(model), torch.no_grad():
            run_model(model, call, f"the input it is timed on (model {name!r})")


def _whole(models: dict[str, nn.Module], call: ModelInput, timer: Timer, repeats: int) -> dict[str, float]:
    """Median seconds per call of each model on ``call``, timed in turn ``repeats`` times (``_samples``)."""
    return {k: statistics.median(v) for k, v in _samples(models, call, timer, repeats).items()}


def _paired(samples: dict[str, list[float]], reference: str) -> dict[str, float]:
    """Each model's time over ``reference``'s, the median over rounds of the ratio within each round.

    A ratio of two medians mixes samples taken seconds apart: where the machine's speed drifts (a shared
    CPU: whole seconds at a time), one model's median can come from fast rounds and the other's from slow
    ones. The ratio within a round compares samples taken a fraction of a second apart."""
    base = samples[reference]
    return {k: statistics.median(t / b for t, b in zip(v, base)) for k, v in samples.items()}


def _layouts(model: nn.Module, call: ModelInput, timer: Timer, repeats: int) -> tuple[str, dict[str, float]]:
    """The faster layout (channels_last only when more than ``LAYOUT_MARGIN`` faster) and both times.
    ``model`` is left in the contiguous layout."""
    seconds = {}
    for name in ("channels_last", "contiguous"):
        formatted, formatted_call = _formatted(model, call, name == "channels_last")
        seconds[name] = _whole({"m": formatted}, formatted_call, timer, repeats)["m"]
    faster = seconds["channels_last"] < (1 - LAYOUT_MARGIN) * seconds["contiguous"]
    return ("channels_last" if faster else "contiguous"), {"contiguous": seconds["contiguous"],
                                                            "channels_last": seconds["channels_last"]}


def best_layout(model: nn.Module, example_input: Any, *, repeats: int = 7,
                timer: Timer | None = None) -> tuple[str, dict[str, float]]:
    """``("channels_last" or "contiguous", seconds per layout)``: the memory layout ``model`` runs faster in on
    ``example_input`` (an image batch, N x C x H x W), on this machine.

    channels_last is chosen only when it measures more than ``LAYOUT_MARGIN`` (3%) faster, the model and the
    input converted alike (oneDNN runs some small-channel convs several times faster in it, others
    slower). ``model`` is not changed; apply the answer with ``model.to(memory_format=torch.channels_last)``
    and ``x.contiguous(memory_format=torch.channels_last)``. ``timer`` as in ``measure_latency``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> layout, seconds = best_layout(net, torch.randn(2, 3, 16, 16), repeats=1)
        >>> layout in ("channels_last", "contiguous"), sorted(seconds)
        (True, ['channels_last', 'contiguous'])
    """
    check_model(model, "best_layout")
    check_int("repeats", repeats)
    call = model_input(example_input)
    if call.lead.dim() != 4:
        raise LoritaError(f"best_layout compares image layouts: {call.lead_name} must be N x C x H x W, got shape "
                          f"{tuple(call.lead.shape)}")
    _check_runs({"model": model}, call)
    return _layouts(copy.deepcopy(model), call, timer or _model_clock, repeats)


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` inside the block, restored after (None: unchanged).

    Example:
        >>> with threads(1):
        ...     torch.get_num_threads()
        1
    """
    old = torch.get_num_threads()
    if count is not None:
        check_int("threads", count)
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def call_times(model: nn.Module, x: torch.Tensor, *, repeats: int = 30) -> dict[str, float]:
    """Milliseconds of single forward passes of ``model`` (eval mode, ``torch.inference_mode``) on ``x``: median
    and quartiles over ``repeats`` calls after a warm-up (``repeats // 10``, at least 2, under ``no_grad``: what
    the model caches there stays usable for training). ``measure_latency`` is the one for ratios between models;
    this one is the spread of one model's calls.

    Example:
        >>> sorted(call_times(nn.Linear(8, 8), torch.randn(2, 8), repeats=3))
        ['median', 'p25', 'p75', 'repeats']
    """
    check_int("repeats", repeats)
    with eval_mode(model):
        with torch.no_grad():
            for _ in range(max(2, repeats // 10)):  # warm-up: allocator, oneDNN kernels, the model's caches
                model(x)
        with torch.inference_mode():
            model(x)  # a compiled model recompiles for inference mode here, off the clock
            times = _call_times(model, x, repeats)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median": statistics.median(times), "p25": q[0], "p75": q[2], "repeats": repeats}


def _call_times(model: nn.Module, x: torch.Tensor, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``model(x)``."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        model(x)
        times.append(1000 * (time.perf_counter() - tic))
    return times


def measure_latency(models: dict[str, nn.Module], example_input: Any, *, repeats: int = 7,
                    timer: Timer | None = None) -> dict[str, float]:
    """Median seconds per call of each model on ``example_input``, the models timed in turn ``repeats`` times
    (eval mode, ``torch.inference_mode``; ``timer`` as in ``layer_latencies``, by default samples of at least
    50 ms). Ratios between the models of
    one call are what to read: each sample of each model is taken under the same machine load.

    Example:
        >>> net = nn.Linear(64, 64)
        >>> t = measure_latency({"dense": net, "pair": LowRankLinear(64, 64, 8)}, torch.randn(8, 64), repeats=1)
        >>> sorted(t)
        ['dense', 'pair']
    """
    check_int("repeats", repeats)
    if not isinstance(models, dict) or not models:
        raise LoritaError("models must be a non-empty dict of name -> nn.Module")
    call = model_input(example_input)
    _check_runs(models, call)
    return _whole(models, call, timer or _model_clock, repeats)


def relative_latency(models: dict[str, nn.Module], example_input: Any, *, reference: str, repeats: int = 7,
                     timer: Timer | None = None) -> dict[str, float]:
    """Each model's time over ``models[reference]``'s on ``example_input``, the models timed in turn ``repeats``
    times as in ``measure_latency``: the median over rounds of the ratio within each round (samples taken a
    fraction of a second apart, so a machine whose speed drifts over seconds moves both alike). Use it to
    say how much faster a cut model is; ``measure_latency`` for the seconds themselves, ``compare_latency``
    for both from one timing.

    Example:
        >>> net = nn.Linear(64, 64)
        >>> cost = lambda m, x: float(sum(p.numel() for p in m.parameters()))  # a fake clock: weights
        >>> r = relative_latency({"dense": net, "pair": LowRankLinear(64, 64, 8)}, torch.randn(8, 64),
        ...                      reference="dense", repeats=1, timer=cost)
        >>> r["dense"], round(r["pair"], 3)
        (1.0, 0.262)
    """
    return compare_latency(models, example_input, reference=reference, repeats=repeats, timer=timer)[1]


def compare_latency(models: dict[str, nn.Module], example_input: Any, *, reference: str, repeats: int = 7,
                    timer: Timer | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """``(seconds, fractions)`` from one timing of the models in turn: each model's median seconds per call (as
    ``measure_latency``) and its time over ``models[reference]``'s (as ``relative_latency``).

    Example:
        >>> cost = lambda m, x: float(sum(p.numel() for p in m.parameters()))  # a fake clock: weights
        >>> seconds, fractions = compare_latency({"dense": nn.Linear(4, 4), "half": nn.Linear(4, 2)},
        ...                                      torch.randn(2, 4), reference="dense", repeats=1, timer=cost)
        >>> seconds["dense"], fractions["half"]
        (20.0, 0.5)
    """
    check_int("repeats", repeats)
    if not isinstance(models, dict) or not models:
        raise LoritaError("models must be a non-empty dict of name -> nn.Module")
    if reference not in models:
        raise LoritaError(f"reference={reference!r} is not one of the models ({', '.join(map(repr, models))})")
    call = model_input(example_input)
    _check_runs(models, call)
    samples = _samples(models, call, timer or _model_clock, repeats)
    return {k: statistics.median(v) for k, v in samples.items()}, _paired(samples, reference)


class _Swap:
    """``base`` with random-weight pairs of ``ranks`` swapped in for its layers while entered (restored on exit):
    the cut model's shapes and speed without an SVD or a copy of the model."""

    def __init__(self, base: nn.Module, layers: dict[str, Layer], ranks: dict[str, int], channels_last: bool):
        self.base, self.layers = base, layers
        self.pairs = {name: _pair(layers[name].module, rank, channels_last) for name, rank in ranks.items()
                      if rank <= break_even_rank(*layer_shape(layers[name].module))}

    def __enter__(self) -> nn.Module:
        for name, pair in self.pairs.items():
            replace_module(self.base, self.layers[name], pair)
        return self.base

    def __exit__(self, *exc) -> None:
        for name in self.pairs:
            replace_module(self.base, self.layers[name], self.layers[name].module)


def latency_budget(model: nn.Module | Spectra, latency: float | Latency, example_input: Any = None, *,
                   timer: Timer | None = None, cache: dict[str, float] | None = None,
                   cache_file: str | os.PathLike | bool | None = None, **search) -> LatencyBudget:
    """Ranks whose cut model runs in at most ``latency`` of the dense model's measured time, on this machine.

    ``latency``: the fraction, or a ``lorita.cutspec.Latency`` (``search``: its other fields,
    e.g. ``layout="auto"``, ``tolerance=``, ``rounds=``). ``model`` may be the
    ``lorita.spectra.Spectra`` of a model (its spectra and scan are reused; whitened with
    ``Latency(..., calibrate=N)``, calibrated first).

    1. The dense (merged) model is timed on ``example_input`` (use the deployment batch;
       ``Latency.batch`` builds one of that size from it). ``layout="auto"`` (image inputs):
       timed in NCHW and channels_last, the faster is the reference and the layout of
       everything after; ``"input"``: ``example_input``'s own layout; ``"contiguous"`` /
       ``"channels_last"`` force one.
    2. Each compressible layer is timed, on the input it gets, dense and as a thin pair at a
       grid of ranks up to break-even (``points`` even steps plus 1, 2, 4, 8; random
       weights: only shapes matter; cached as in ``layer_latencies``). A cut may take any
       rank up to 16 and multiples of 8 above (what vectorised kernels run best), priced by
       interpolating between the timed ranks; with ``multiple=M``, only those that are multiples
       of M.
    3. ``lorita.ranks.measured_ranks`` gives rank where it keeps the most spectrum per second
       spent, within the budget; a layer whose pairs are all slower than dense stays dense.
    4. The cut model (random-weight pairs of those ranks, swapped into the model while timed)
       is timed against the dense one, in turn (as ``relative_latency``: the median of the ratios
       within each round). Isolated layer timings do not add up exactly to a
       model's time: what a cut saves in the model is a share of what they predict it saves,
       and that share (the savings ratio) is fitted by least squares over every measurement
       of every try so far (one measurement moves by 10-20% on a busy machine; the fit over
       all of them much less). Each try's estimate combines its own looks with the fit
       (``FIT_WEIGHT``); the try chosen is the one estimated closest below ``latency``, and
       while that estimate is outside ``[latency * (1 - tolerance), latency]`` the internal
       target is re-aimed through the fit at the window's middle and the allocation redone:
       ``rounds`` measurements, and as many again while no choice is inside the window (an
       allocation met again is measured once more). A try measured inside the window on its
       first measurement is timed a second time at once, and a choice inside is looked at
       until it has ``CONFIRM_LOOKS`` measurements (the try kept is one that measured inside,
       so a single measurement would favour tries that noise pushed in). At least two
       measurements are made (``rounds`` allowing), and a choice in the window's lower part
       (below ``latency * (1 - tolerance / 4)``) is followed by a try aimed at its upper part:
       where layer times hardly depend on rank (batch 1), the middle of the window can be a
       much deeper cut than the top.

    The model is not changed (it is copied only to time another memory layout). Raises
    LoritaError when no allocation measured within ``latency`` (saying the fastest fraction
    reached); with ``latency=1`` (no slow-down) the dense model itself meets it, so where every
    cut tried is slower every layer stays dense (each rank ``min(m, n)``). ``timer(module, x)``
    returns seconds per call (default ``time_module``; tests pass a fake one), ``cache`` /
    ``cache_file`` as in ``layer_latencies``. Feed ``.ranks`` to ``lorita.compress(model, ranks=...)``.

    Example:
        >>> net = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
        >>> cost = lambda m, x: float(sum(p.numel() for p in m.parameters()))  # a fake clock: weights
        >>> found = latency_budget(net, 0.5, torch.randn(8, 256), timer=cost)
        >>> found.measured <= 0.5, sorted(found.ranks)
        (True, ['0', '2'])
    """
    how = _latency_spec(latency, search)
    if timer is not None and not callable(timer):
        raise LoritaError(f"timer must be a callable (module, input) -> seconds, got {type(timer).__name__}")
    if isinstance(model, Spectra):
        spectra, example_input = model, example_input if example_input is not None else model.example_input
    else:
        check_model(model, "latency_budget")
        spectra = Spectra(model, example_input)
    call = model_input(example_input)
    if how.batch is not None:
        call = at_batch(call, how.batch)
    if how.layout == "channels_last" and call.lead.dim() != 4:
        raise LoritaError(f"layout='channels_last' needs an image input (N, C, H, W); {call.lead_name} has shape "
                          f"{tuple(call.lead.shape)}: use layout='input'")
    _check_runs({"dense": spectra.model}, call)
    spectra.require_layers()
    if how.whitened:
        spectra.calibrate(how.calibrate)
    cache, path = _open_cache(cache, cache_file, timer)
    clocks = (timer or time_module, timer or _model_clock)  # (one layer, a whole model)
    ref = _reference(spectra, how, call, clocks[1])
    forms = _time_forms(ref, how, clocks[0], cache)
    if path is not None:
        atomic_write_text(path, json.dumps({"seconds": cache}, indent=0, sort_keys=True))
    best, tried = _allocate(spectra.values(how.whitened), forms, ref, how, clocks[1])
    return _report(best, tried, forms, ref, how)


def _latency_spec(latency: float | Latency, search: dict) -> Latency:
    if isinstance(latency, Latency):
        if search:
            raise LoritaError(f"pass {', '.join(sorted(search))} in the Latency object, not beside it")
        return latency
    try:
        return Latency(latency, **search)
    except TypeError:
        known = [f.name for f in dataclasses.fields(Latency) if f.name != "latency"]
        raise LoritaError(f"latency_budget takes {', '.join(known)} besides latency; got "
                          f"{', '.join(sorted(search))}") from None


def batch_of(example: torch.Tensor, batch: int) -> torch.Tensor:
    """``batch`` examples shaped like ``example``: seeded random values for floating inputs (images), ``example``'s
    own first row repeated for integer inputs (tokens); timing depends on shapes, not values.

    Example:
        >>> batch_of(torch.zeros(1, 3, 8, 8), 4).shape
        torch.Size([4, 3, 8, 8])
    """
    shape = (batch, *example.shape[1:])
    each = example[:1].numel() * example.element_size()
    if batch * each > MAX_TIMING_BYTES:  # checked before anything is allocated
        raise LoritaError(f"--batch {batch} needs a timing input of {batch * each / 2**30:.1f} GiB ({batch} examples "
                          f"of shape {tuple(example.shape[1:])}); pass --batch {MAX_TIMING_BYTES // each} or less")
    if example.is_floating_point():
        return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=example.dtype)
    return example[:1].expand(shape).clone()


def at_batch(example_input: Any, batch: int) -> ModelInput:
    """``example_input`` at ``batch`` examples, for timing: the lead tensor through ``batch_of``, and every other
    tensor with the lead's first size (an attention mask beside token ids, labels) its first row repeated.

    Example:
        >>> call = at_batch({"input_ids": torch.tensor([[3, 4, 5]]), "attention_mask": torch.ones(1, 3)}, 4)
        >>> call.kwargs["input_ids"].shape, call.kwargs["attention_mask"].shape
        (torch.Size([4, 3]), torch.Size([4, 3]))
    """
    call = model_input(example_input)
    if call.lead.dim() < 2:
        raise LoritaError(f"{call.lead_name} of shape {tuple(call.lead.shape)} is one unbatched example; give it a "
                          f"batch dimension (x[None], shape (1, ...)) to time it at batch {batch}")
    size = call.lead.shape[0]
    if size == 0:
        raise LoritaError(f"{call.lead_name} holds no example (shape {tuple(call.lead.shape)}); pass one real batch")
    if size == batch:
        return call
    lead = batch_of(call.lead, batch)  # checks the size before anything is allocated
    if _channels_last(call.lead):
        lead = lead.contiguous(memory_format=torch.channels_last)
    extra = sum(v[:1].numel() * v.element_size() for v in (*call.args, *call.kwargs.values())
                if isinstance(v, torch.Tensor) and v is not call.lead and v.dim() and v.shape[0] == size)
    if batch * extra > MAX_TIMING_BYTES:
        raise LoritaError(f"batch {batch} repeats the example's other arguments to {batch * extra / 2**30:.1f} GiB; "
                          f"pass a batch of {max(1, MAX_TIMING_BYTES // extra)} or less")

    def each(value: torch.Tensor) -> torch.Tensor:
        if not value.dim() or value.shape[0] != size:
            return value
        return value[:1].expand(batch, *value.shape[1:]).clone()
    return call.with_lead(lead[:0]).map(each).with_lead(lead)  # the lead itself is not repeated, only replaced


@dataclass
class _Reference:
    """The dense model as timed: the model (the caller's, or a copy in another layout), its layers, the input,
    its layout and time."""

    model: nn.Module
    layers: dict[str, Layer]
    call: ModelInput
    channels_last: bool
    dense_s: float
    dense_by_layout: dict[str, float]

    @property
    def layout(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"


def _reference(spectra: Spectra, how: Latency, call: ModelInput, whole_timer: Timer) -> _Reference:
    """Step 1: the layout, and the dense model's time in it."""
    image, repeats = call.lead.dim() == 4, 2 * how.repeats + 1
    base, layers = spectra.model, spectra.scan.layers
    if image and (how.layout in ("auto", "channels_last") or (how.layout == "input" and _channels_last(call.lead))):
        base = copy.deepcopy(base)  # its layout changes: time a copy, not the caller's model
        layers = {name: Layer(name, base.get_submodule(name), layer.aliases) for name, layer in layers.items()}
    dense_by_layout: dict[str, float] = {}
    if how.layout == "auto" and image:
        chosen, dense_by_layout = _layouts(base, call, whole_timer, repeats)
        channels_last = chosen == "channels_last"
    elif how.layout in ("input", "auto"):
        channels_last = image and _channels_last(call.lead)
    else:
        channels_last = how.layout == "channels_last"
    if base is not spectra.model:
        base, call = _formatted(base, call, channels_last)
    else:
        call = _format_call(call, channels_last)
    fmt = "channels_last" if channels_last else "contiguous"
    dense_s = dense_by_layout.get(fmt) or _whole({"m": base}, call, whole_timer, repeats)["m"]
    return _Reference(base, layers, call, channels_last, dense_s, dense_by_layout)


@dataclass
class _Forms:
    """Step 2: each layer's forms as ``(rank, seconds per forward pass)``, dense first; calls and inputs."""

    options: dict[str, list[tuple[int, float]]]
    calls: dict[str, int]
    inputs: dict[str, torch.Tensor]


def _time_forms(ref: _Reference, how: Latency, timer: Timer, cache: dict[str, float]) -> _Forms:
    calls: dict[str, int] = {}
    inputs = _layer_inputs(ref.model, list(ref.layers), ref.call, calls)
    options: dict[str, list[tuple[int, float]]] = {}
    for name, layer in ref.layers.items():
        dense, x = layer.module, inputs[name]
        m, n = layer_shape(dense)
        grid = _rank_grid(break_even_rank(m, n), how.points)
        keys = [_key(dense, None, x)] + [_key(dense, r, x) for r in grid]
        if any(k not in cache for k in keys):
            pairs = [dense] + [_pair(dense, r, x) for r in grid]
            times: list[list[float]] = [[] for _ in keys]
            with eval_mode(dense):
                for _ in range(how.repeats):  # in turn, so drift in machine load hits every form alike
                    for t, module in zip(times, pairs):
                        t.append(float(timer(module, x)))
            cache.update({k: statistics.median(t) for k, t in zip(keys, times)})
        options[name] = [(min(m, n), cache[keys[0]] * calls[name])] + \
            _between([(r, cache[k] * calls[name]) for r, k in zip(grid, keys[1:])])
    return _Forms(options, calls, inputs)


def _allocate(values: dict, forms: _Forms, ref: _Reference, how: Latency,
              whole_timer: Timer) -> tuple[dict, list[dict]]:
    """Steps 3 and 4: allocate, measure the cut, re-aim through the savings ratio fitted over every try; the chosen
    try and every try. With ``how.multiple``, a layer takes only the ranks of its grid that are multiples of it,
    or stays dense."""
    options, dense_s, latency, tolerance = forms.options, ref.dense_s, how.latency, how.tolerance
    if how.multiple > 1:  # opts[0] is the dense form
        options = {name: [o for o in opts if o is opts[0] or o[0] % how.multiple == 0] for name, opts in options.items()}
    fixed = dense_s - sum(opts[0][1] for opts in options.values())  # what the cut does not touch (may be off)
    cheapest = fixed + sum(min(c for _, c in opts) for opts in options.values())
    floor = max(cheapest / dense_s, 1e-6)
    low = latency * (1 - tolerance)  # the accepted window is [low, latency]
    aim = latency * (1 - tolerance / 2)  # its middle
    upper = latency * (1 - tolerance / 4)  # a choice below this, though accepted, may cut deeper than needed
    tried: list[dict] = []
    best = None
    internal = max(aim, floor)
    this = None  # the try to look at next (None: allocate anew)
    for done in range(1, 2 * how.rounds + 1):  # ``rounds``, and as many again while no choice is inside the window
        if this is None:
            # (at the floor, floor * dense_s can round below the cheapest total: never ask for less than that)
            ranks = measured_ranks(values, options, max(internal * dense_s, cheapest), fixed=fixed)
            this = next((t for t in tried if t["ranks"] == ranks), None)
        if this is None:  # a new allocation (an allocation met again gets one more look instead)
            predicted_s = fixed + sum(dict(options[n])[r] for n, r in ranks.items())
            this = {"internal": internal, "predicted": predicted_s / dense_s, "looks": [], "ranks": ranks}
            tried.append(this)
        this["looks"] += _measure_cut(ref, ranks, how, whole_timer, first=not this["looks"])
        this["measured"] = statistics.fmean(this["looks"])
        savings = _fit_savings(tried)
        best = _choose(tried, latency)
        log.info("latency budget: internal target %.3f, predicted %.3f, measured %.3f (%d looks), fitted %.3f of "
                 "dense (asked %.3f)", internal, this["predicted"], this["measured"], len(this["looks"]),
                 this["estimated"], latency)
        inside = best is not None and best["estimated"] >= low
        confirmed = inside and len(best["looks"]) >= CONFIRM_LOOKS
        if confirmed and (done >= how.rounds or (done >= 2 and best["estimated"] >= upper)):
            break
        if internal <= floor and best is None:
            break  # the fastest allocation is already measured too slow
        if inside and not confirmed:
            this = best  # look again at the choice before anything else
            continue
        this = None
        # inside but low in the window: aim at its top part (where layer times hardly depend on rank, as at
        # batch 1, the window's middle can be a much deeper cut than its top); else at its middle
        internal = _reaim(tried, savings, upper if inside else aim, floor)
    if best is None and latency >= 1:  # no slow-down allowed, and every cut tried was slower: keep it dense
        log.info("latency budget: no cut measured within the dense model's time; keeping every layer dense")
        best = {"internal": 1.0, "predicted": 1.0, "looks": [], "measured": 1.0, "estimated": 1.0,
                "ranks": {name: opts[0][0] for name, opts in options.items()}}
    if best is None:
        fastest = min(t["measured"] for t in tried)
        raise LoritaError(
            f"latency={latency:g} cannot be met on this machine at batch {ref.call.batch_size} ({ref.layout}, "
            f"{torch.get_num_threads()} threads): the fastest cut tried measured {fastest:.3f} of the dense model's "
            f"time (predicted floor {floor:.3f}); pass latency >= {min(1.0, fastest * 1.05):.2f} (1 keeps the dense "
            "model where no cut is faster), or try another batch size or layout (layers whose thin pair is never "
            "faster stay dense and bound the speed-up)")
    return best, tried


def _measure_cut(ref: _Reference, ranks: dict[str, int], how: Latency, whole_timer: Timer, *,
                 first: bool) -> list[float]:
    """Looks at the cut: its time over the dense model's, the two timed in turn (``_paired``: the median of the
    ratios within each round). On an allocation's ``first``
    measurement, a fraction inside the accepted window is timed once more (two looks): a single measurement
    would favour the tries that noise pushed in (on a shared machine one measurement moves by 10-20%)."""
    cut = _Swap(ref.model, ref.layers, ranks, ref.channels_last)
    ratios: list[float] = []
    for _ in range(2 if first else 1):
        timed = _samples({"dense": ref.model, "cut": cut}, ref.call, whole_timer, 2 * how.repeats + 1)
        ratios.append(_paired(timed, "dense")["cut"])
        if not how.latency * (1 - how.tolerance) <= ratios[0] <= how.latency:
            break
    return ratios


def _fit_savings(tried: list[dict]) -> float:
    """The savings ratio ``s``: what a cut saves when measured, over what the per-layer timings predicted it saves,
    fitted over every look at every try (least squares through the dense model, where both fractions are 1:
    ``measured = 1 - s * (1 - predicted)``). Sets each try's ``estimated`` fraction: the mean of its own looks
    and its fitted fraction, the fit weighing as ``FIT_WEIGHT`` looks.

    Per-layer timings miss what a layer costs inside the model (caches, memory traffic, what runs around it);
    that shifts every cut's saving alike, while the noise of one measurement does not: a fraction fitted over
    all tries moves less than any one measurement (``s`` is 1 before any try cuts anything). Its own looks
    keep a try's estimate honest where the saving is not quite proportional to the prediction.
    """
    num = sum(len(t["looks"]) * (1 - t["measured"]) * (1 - t["predicted"]) for t in tried)
    den = sum(len(t["looks"]) * (1 - t["predicted"]) ** 2 for t in tried)
    savings = num / den if den > 0 else 1.0
    for t in tried:
        fitted, looks = 1 - savings * (1 - t["predicted"]), len(t["looks"])
        t["estimated"] = (looks * t["measured"] + FIT_WEIGHT * fitted) / (looks + FIT_WEIGHT)
    return savings


def _choose(tried: list[dict], latency: float) -> dict | None:
    """The try to return: the one estimated closest below ``latency`` (``_fit_savings``: the estimate weighs
    every try's measurements, not one try's own noise), the more looked at on a tie. None when no try is."""
    within = [t for t in tried if t["estimated"] <= latency]
    return max(within, key=lambda t: (t["estimated"], len(t["looks"])), default=None)


def _report(best: dict, tried: list[dict], forms: _Forms, ref: _Reference, how: Latency) -> LatencyBudget:
    """What was chosen, predicted and measured, and each layer's form."""
    layers_info = {}
    for name, rank in best["ranks"].items():
        table = dict(forms.options[name])
        m, n = layer_shape(ref.layers[name].module)
        layers_info[name] = {"rank": rank, "cut": rank <= break_even_rank(m, n), "dense_s": forms.options[name][0][1],
                             "chosen_s": table[rank], "calls": forms.calls[name],
                             "input_shape": list(forms.inputs[name].shape)}
    dense_s = ref.dense_s
    return LatencyBudget(ranks=best["ranks"], latency=how.latency, dense_s=dense_s,
                         predicted_s=best["predicted"] * dense_s, measured_s=best["measured"] * dense_s,
                         layout=ref.layout, batch=ref.call.batch_size, threads=torch.get_num_threads(),
                         estimated=best["estimated"], dense_by_layout=ref.dense_by_layout,
                         rounds=[{k: v for k, v in t.items() if k != "ranks"} for t in tried], layers=layers_info)


def _reaim(tried: list[dict], savings: float, target: float, floor: float) -> float:
    """The next internal target: the predicted fraction that the fitted savings ratio turns into ``target``
    (``1 - (1 - target) / savings``), plus the mean slack the allocations left below their targets (ranks come
    in steps: an allocation predicts a little under the budget it is given), within [floor, 1]; the floor where
    cuts measured no saving at all."""
    if savings <= 0:
        return floor
    slack = statistics.fmean(t["internal"] - t["predicted"] for t in tried)
    return min(1.0, max(floor, 1 - (1 - target) / savings + slack))
