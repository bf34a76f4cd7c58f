"""``Spectra``: one model as every way to cut sees it, each piece of work done at most once.

A cut needs the model in its original architecture (composed layers merged), its
compressible layers (one scan; with an example input, the layers whose parent reads their
weight are left out), each layer's singular values, the layers' sizes and costs, the
uncompressed model's profile, for whitened cuts the calibration Gram matrices and the
whitened spectra, and, to cut, each layer's decomposition. ``Spectra`` computes each the
first time it is asked for and keeps it, so the rank choice, a sweep, a search, the columns
of an experiment and the saved cut of one model share them. Feed it to
``lorita.select.choose_ranks`` in place of the model.

Example:
    >>> net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> spectra = Spectra(net, torch.zeros(1, 16))
    >>> sorted(spectra.values()), spectra.costs("params")[1]
    (['0', '2'], 20)
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch
from torch import nn

from lorita.checks import check_choice, check_int
from lorita.compose import merge
from lorita.composed import COMPOSED_TYPES
from lorita.compress import compress, layer_shape, layer_spectrum
from lorita.errors import LoritaError
from lorita.lowrank import weight_matrix
from lorita.probe import ModelInput, model_input, observe
from lorita.profile import Profile, profile
from lorita.ranks import METRICS, LayerCost, Metric
from lorita.svd_cache import SVDCache
from lorita.targets import check_model, require_layers, scan_layers
from lorita.whiten import Grams, collect_grams, whitened_spectrum

log = logging.getLogger(__name__)

__all__ = ["Spectra", "layer_costs"]


class Spectra:
    """The model (merged once when composed), its compressible layers and, on demand, their spectra,
    costs, calibration and cuts.

    ``example_input``: one batch the model accepts; it leaves out the layers whose parent
    reads their weight (a cut there saves nothing) and is what MACs are counted on.
    ``batches``: an iterable of model inputs for whitened cuts (``calibrate(n)`` reads the
    first ``n``; pass inputs only, e.g. ``(x for x, _ in split.batches(...))``).
    ``svd_cache``: an ``SVDCache`` when the model will be cut several times (sweeps,
    searches): each layer is decomposed once; None (default): each cut decomposes afresh.
    ``values``: singular values already computed for this very model (``lorita.spectrum``,
    e.g. a training run's), used for the layers they name. The model is read, never changed.
    """

    def __init__(self, model: nn.Module, example_input: Any = None, *, batches: Iterable[Any] | None = None,
                 svd_cache: SVDCache | None = None, values: dict[str, torch.Tensor] | None = None):
        check_model(model, "Spectra", replaces=True)
        if any(isinstance(m, COMPOSED_TYPES) for m in model.modules()):
            model = merge(model)  # the original architecture (a copy: the caller's model is not changed)
        if example_input is not None:
            example_input = model_input(example_input)
        if svd_cache is not None and not isinstance(svd_cache, SVDCache):
            raise LoritaError(f"svd_cache must be a lorita.svd_cache.SVDCache (or None), got {type(svd_cache).__name__}")
        self.model = model
        self.example_input = example_input
        self.scan = scan_layers(model, composed=False, example_input=example_input)
        self.layers = {name: layer.module for name, layer in self.scan.layers.items()}
        self.cache = svd_cache
        self._batches = batches
        self._grams: tuple[int, Grams] | None = None
        self._known = {name: v for name, v in (values or {}).items() if name in self.layers}
        self._values: dict[bool, dict[str, torch.Tensor]] = {}
        self._costs: dict[str, tuple[dict[str, LayerCost], float]] = {}
        self._profile: Profile | None = None

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        """``(m, n)`` of each compressible layer's weight matrix."""
        return {name: layer_shape(module) for name, module in self.layers.items()}

    @property
    def full_ranks(self) -> dict[str, int]:
        """``min(m, n)`` of each compressible layer: the rank that keeps it dense."""
        return {name: min(shape) for name, shape in self.shapes.items()}

    def require_layers(self) -> None:
        """Raise LoritaError when the model has nothing to cut."""
        require_layers(self.model, self.layers, "cut")
        if not self.layers:
            raise LoritaError("the model has no compressible layer (Linear or Conv2d with groups=1), "
                              "so there are no ranks to select")

    def values(self, whitened: bool = False) -> dict[str, torch.Tensor]:
        """Singular values of each layer (``lorita.spectrum``), or of its whitened weight ``W L``
        (``lorita.whiten.whitened_spectrum``; ``calibrate`` first)."""
        if whitened not in self._values:
            if whitened:
                grams = self.grams()
                self._values[True] = {name: whitened_spectrum(weight_matrix(m).detach(), grams[name]).cpu()
                                      for name, m in self.layers.items()}
            else:
                self._values[False] = {name: self._known[name] if name in self._known else layer_spectrum(m, name)
                                       for name, m in self.layers.items()}
        return self._values[whitened]

    def calibrate(self, batches: int) -> Grams:
        """The input Gram matrices of the layers over the first ``batches`` calibration batches (once)."""
        check_int("calibrate", batches, meaning="calibration batches for whitened cuts")
        if self._grams is None:
            if self._batches is None:
                raise LoritaError("a whitened cut (calibrate=N) needs calibration data: pass batches= (model inputs, "
                                  "e.g. a few training batches)")
            self._grams = (batches, collect_grams(self.model, self._batches, list(self.layers), max_batches=batches))
        elif self._grams[0] != batches:
            raise LoritaError(f"these spectra are calibrated on {self._grams[0]} batches, not {batches}; "
                              "make another Spectra for another calibration")
        return self._grams[1]

    def grams(self) -> Grams:
        """The calibration Gram matrices (``calibrate`` first)."""
        if self._grams is None:
            raise LoritaError("not calibrated: call calibrate(batches) first")
        return self._grams[1]

    def costs(self, metric: Metric = "params") -> tuple[dict[str, LayerCost], float]:
        """``LayerCost`` of every compressible layer and the cost of everything else, per example (``layer_costs``)."""
        check_choice("metric", metric, METRICS)
        if metric not in self._costs:
            self._costs[metric] = _costs(self, metric)
        return self._costs[metric]

    @property
    def profile(self) -> Profile:
        """``lorita.profile`` of the uncompressed model on the example input."""
        if self._profile is None:
            if self.example_input is None:
                raise LoritaError("profiling the model needs example_input= (one batch it accepts)")
            self._profile = profile(self.model, self.example_input)
        return self._profile

    def cut(self, ranks: dict[str, int], *, whitened: bool = False, svd_cache: SVDCache | None = None) -> nn.Module:
        """The compressed model at ``ranks`` (a copy; whitened cuts use the calibration), in eval mode.
        ``svd_cache``: decompositions to use instead of this object's own cache."""
        grams = self.grams() if whitened else None
        cache = None if whitened else (svd_cache if svd_cache is not None else self.cache)
        return compress(self.model, ranks=ranks, svd_cache=cache, calibration=grams, scan=self.scan).eval()


def _costs(spectra: Spectra, metric: Metric) -> tuple[dict[str, LayerCost], float]:
    shapes = spectra.shapes
    model = spectra.model
    if metric == "params":
        dense = sum(m * n for m, n in shapes.values())
        return {name: LayerCost(m, n) for name, (m, n) in shapes.items()}, sum(p.numel() for p in model.parameters()) - dense
    call = spectra.example_input
    if call is None:
        raise LoritaError("counting MACs needs example_input= (e.g. torch.randn(1, 3, 32, 32)) to count each "
                          "layer's output positions")
    batch = call.batch_size
    outputs = _output_numels(model, list(shapes), call)
    costs = {}
    for name, (m, n) in shapes.items():
        if outputs[name] == 0:
            raise LoritaError(f"layer {name!r} did not run on example_input, so its MACs are unknown; "
                              "pass an input that runs every Linear/Conv2d layer of the model")
        costs[name] = LayerCost(m, n, max(1, round(outputs[name] / (batch * m))))
    fixed = spectra.profile.macs / batch - sum(c.dense("macs") for c in costs.values())
    return costs, max(0.0, fixed)


def _output_numels(model: nn.Module, names: list[str], call: ModelInput) -> dict[str, int]:
    """Total output elements of each named module over one forward pass (calls add up)."""
    counts = {name: 0 for name in names}

    def count(name):
        def hook(module, inputs, output):
            counts[name] += output.numel()
        return hook

    observe(model, call, {name: count(name) for name in names})
    return counts


def layer_costs(model: nn.Module, example_input: Any = None,
                metric: Metric = "params") -> tuple[dict[str, LayerCost], float]:
    """``LayerCost`` of every compressible layer, and the cost of everything else, in ``metric``.

    ``metric="params"`` needs no input (positions are 1). ``metric="macs"`` runs the
    (merged) model once on ``example_input`` with forward hooks to count each layer's
    output positions per example (``H_out*W_out`` for a conv, tokens for a linear on
    ``(B, T, C)``; a layer called twice counts twice; an input of fewer than 2 dimensions,
    such as one sequence of token ids, is one example, as in ``lorita.profile``), and measures the other MACs
    with ``lorita.profile``. ``fixed`` (the second value) is per example, like the
    costs: biases, norms and layers that cannot be cut. Given an ``example_input``,
    layers whose parent reads their weight instead of calling them cannot be cut and
    count in ``fixed`` (``lorita.probe.weight_readers``).

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
        >>> costs, fixed = layer_costs(net)
        >>> costs["0"], fixed
        (LayerCost(out_features=6, in_features=8, positions=1), 8)
    """
    check_model(model, "layer_costs")
    check_choice("metric", metric, METRICS)
    return Spectra(model, example_input).costs(metric)
