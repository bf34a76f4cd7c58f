"""``compress``: cut each layer to its truncated SVD, deployed as two thin layers.

``spectrum``: the singular values that choice is made from.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from lorita.checks import check_fraction
from lorita.compose import merge
from lorita.composed import COMPOSED_TYPES, ComposedConv2d, ComposedLinear
from lorita.errors import LoritaError
from lorita.conv1d import is_conv1d
from lorita.linalg import (break_even_rank, check_finite, check_rank, energy_cut, energy_rank, ratio_rank,
                           singular_values)
from lorita.lowrank import truncate, weight_matrix
from lorita.svd_cache import SVDCache
from lorita.targets import (Layer, Scan, Selector, check_model, copy_model, replace_module, require_layers,
                            resolve_ranks, scan_layers, select, warn_skipped)
from lorita.whiten import check_gram, whitened_spectrum

log = logging.getLogger(__name__)


def spectrum(model: nn.Module, *, example_input: Any = None) -> dict[str, torch.Tensor]:
    """Singular values (descending, float64, CPU) of every eligible layer, by module name.

    Composed layers are merged first (their product's singular values); conv kernels are
    flattened to ``C_out x (C_in*kh*kw)``. Layers with ``min(m, n) >= lorita.linalg.GRAM_MIN``
    take the eigenvalues of their Gram matrix (3 to 5 times faster than LAPACK's SVD;
    absolute error below ``sqrt(min(m, n) * 1e-16) * sigma_max``, see ``lorita.linalg``).
    ``example_input`` (optional): leave out the layers whose parent reads their weight
    instead of calling them, as ``compress`` does with it (see ``lorita.probe.weight_readers``).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> {name: s.shape for name, s in spectrum(net).items()}
        {'0': torch.Size([3]), '2': torch.Size([2])}
    """
    check_model(model, "spectrum", replaces=True)
    return {name: layer_spectrum(layer.module, name)
            for name, layer in scan_layers(model, example_input=example_input).layers.items()}


def layer_spectrum(module: nn.Module, name: str = "layer") -> torch.Tensor:
    """Singular values (descending, float64, CPU) of one layer's weight matrix, as ``spectrum`` gives them.

    Example:
        >>> layer_spectrum(nn.Linear(3, 2)).shape
        torch.Size([2])
    """
    matrix = weight_matrix(module).detach()
    check_finite(matrix, name)
    return singular_values(matrix).cpu()


def layer_shape(module: nn.Module) -> tuple[int, int]:
    """``(m, n)`` of the layer's weight matrix: out x (in, or C_in*kh*kw for a conv).

    Example:
        >>> layer_shape(nn.Conv2d(3, 8, 3))
        (8, 27)
    """
    if isinstance(module, ComposedLinear):
        return module.out_features, module.in_features
    if isinstance(module, ComposedConv2d):
        return module.out_channels, module.spatial.weight[0].numel()
    if is_conv1d(module):  # transformers Conv1D stores (in, out)
        return module.weight.shape[1], module.weight.shape[0]
    return module.weight.shape[0], module.weight[0].numel()


def _one_selector(ranks, energy, ratio) -> str:
    given = [k for k, v in (("ranks", ranks), ("energy", energy), ("ratio", ratio)) if v is not None]
    if len(given) != 1:
        which = " and ".join(given) if given else "none"
        raise LoritaError(f"compress takes exactly one of ranks=, energy= or ratio= (got {which}); "
                          "e.g. compress(model, energy=0.95)")
    return given[0]


def _choose_ranks(layers: list[Layer], ranks, energy, ratio, scan: Scan, cache: SVDCache | None,
                  calibration=None) -> dict[str, int] | None:
    """Rank per layer name, or None for ``energy=`` without a cache or calibration: those ranks are
    chosen layer by layer while cutting (``_cut_by_energy``), one decomposition per layer.

    With ``calibration``, ``energy`` is a fraction of the whitened spectrum's ``sum s^2``
    (the output energy on the calibration data)."""
    if ranks is not None:
        return {name: rank for name, (_, rank) in resolve_ranks(ranks, layers, scan.skipped).items()}
    if energy is not None:
        energy = check_fraction("energy", energy)
    else:
        ratio = check_fraction("ratio", ratio)
    if energy is not None and cache is None and calibration is None:
        return None
    out = {}
    for layer in layers:
        matrix = weight_matrix(layer.module).detach()
        check_finite(matrix, layer.name)
        if energy is None:
            out[layer.name] = ratio_rank(min(matrix.shape), ratio)
        elif calibration is not None:
            out[layer.name] = energy_rank(whitened_spectrum(matrix, calibration[layer.name]), energy)
        else:
            out[layer.name] = energy_rank(cache.get(layer.name, layer.module)[1], energy)
    return out


def _check_layer_values(layer: Layer) -> None:
    """The weight (or factors) and bias of a layer about to be cut: values, all finite."""
    for key, p in layer.module.named_parameters():
        check_finite(p.detach(), layer.name, "bias" if key == "bias" else "weight")


def compress(model: nn.Module, *, ranks: dict[str, int] | None = None, energy: float | None = None,
             ratio: float | None = None, exclude: Selector = None, inplace: bool = False,
             svd_cache: SVDCache | None = None, example_input: Any = None,
             calibration: dict[str, torch.Tensor] | None = None, scan: Scan | None = None) -> nn.Module:
    """A copy of ``model`` with layers cut to low rank and deployed as two thin layers each.

    Give exactly one of:
        ranks: ``{module name: rank}``; unnamed layers stay dense.
        energy: per layer, the smallest rank keeping this fraction of ``sum(sigma^2)``, in (0, 1].
        ratio: the same fraction of singular values kept in every layer, in (0, 1].
    A layer is replaced only where its rank is below the break-even rank
    (``r*(m+n) < m*n``); otherwise it stays dense. Composed models are merged first; plain
    models get plain post-training SVD. ``exclude`` (names or regex, as ``compose`` takes them) keeps layers
    dense; to cut only some layers, name them in ``ranks``.

    ``inplace=True`` cuts the layers of ``model`` itself, one at a time, and returns it:
    no second copy of the model (a copy doubles the memory of a large one); each dense
    weight is freed once its layer is swapped, if nothing else refers to it. All ranks
    are validated before any layer is touched. Default: ``model`` is left untouched.

    ``svd_cache``: a ``lorita.svd_cache.SVDCache`` shared by repeated calls on the same
    model (searches, sweeps), so each layer's SVD runs once. Without one, each layer's
    SVD runs once per call (energy= reuses the SVD that chose the rank to cut).

    ``example_input`` (a tensor, tuple or dict of named arguments the model accepts): run the model once on
    it, in eval mode, and keep dense every layer whose parent reads its ``.weight`` / ``.bias``
    and computes with them itself instead of calling it (torchvision Swin, transformers
    Mamba ``dt_proj`` and WavLM attention, timm BEiT/EVA ``qkv``): a cut pair there would
    be rebuilt into the dense weight at every call and save nothing. Such layers are
    named in the warning, and ignored if ``ranks`` names them. Without ``example_input``
    no forward runs: such a layer is cut and still computes the right values (the pair's
    ``weight`` and ``bias`` read as the rank-r layer's), but saves no compute, only
    storage. lorita's own search paths (``select_ranks(..., example_input=)``,
    ``search_accuracy(..., example_input=)``) pass theirs on.

    ``calibration``: whitened (activation-aware) cuts, as in SVD-LLM. A dict of each layer's
    input Gram matrix ``X^T X`` (``lorita.whiten.collect_grams(model, batches)`` on a few
    batches of training data): each layer is cut to minimise its output error on that data,
    ``||(W - W_r) X^T||``, instead of the weight error; ``energy=`` then counts the output
    energy. Params and MACs are those of a plain cut of the same ranks.

    ``scan``: ``lorita.targets.scan_layers(model, example_input=...)`` when the caller already
    scanned this model (``lorita.spectra.Spectra`` does), so it is not scanned again.

    Layers lorita cannot handle are left dense and named, with the reason, in one warning.
    A meta-device model has no values to cut: materialise it first.

    Example:
        >>> net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> small = compress(net, ranks={"0": 8}, example_input=torch.randn(1, 64))
        >>> type(small[0]).__name__, small[0].rank
        ('LowRankLinear', 8)
    """
    check_model(model, "compress", replaces=True)
    kind = _one_selector(ranks, energy, ratio)
    if svd_cache is not None and not isinstance(svd_cache, SVDCache):
        raise LoritaError(f"svd_cache must be a lorita.svd_cache.SVDCache (or None), got {type(svd_cache).__name__}")
    has_composed = any(isinstance(m, COMPOSED_TYPES) for m in model.modules())
    if scan is None:
        scan = scan_layers(model, composed=has_composed, example_input=example_input)
    require_layers(model, scan.layers, "compress")
    all_names = [n for n, _ in model.named_modules()]
    layers = select(scan, None, exclude, verb="compress", all_modules=all_names)
    if isinstance(ranks, dict) and exclude is not None:
        selected = {alias for layer in layers for alias in layer.aliases}
        left_out = [name for name in ranks if name not in selected and any(name in layer.aliases
                                                                          for layer in scan.layers.values())]
        if left_out:
            raise LoritaError(f"ranks names {left_out[0]!r}, which exclude leaves out; name the layers to cut in "
                              "one place (ranks alone cuts only the layers it names)")
    warn_skipped(scan.skipped, "compress")
    if calibration is not None:
        if not isinstance(calibration, dict):
            raise LoritaError(f"calibration must be a dict of layer name -> X^T X (lorita.whiten.collect_grams), "
                              f"got {type(calibration).__name__}")
        missing = [layer.name for layer in layers if layer.name not in calibration]
        if missing:
            raise LoritaError(f"calibration has no Gram matrix for {', '.join(missing[:5])}; collect them on the "
                              "merged model: lorita.whiten.collect_grams(lorita.merge(model), batches)")
        for layer in layers:
            check_gram(f"calibration[{layer.name!r}]", calibration[layer.name])
    chosen = _choose_ranks(layers, ranks, energy, ratio, scan, svd_cache, calibration)
    # Validate everything before building anything.
    by_name = {layer.name: layer for layer in layers}
    for name, rank in (chosen or {}).items():
        m, n = layer_shape(by_name[name].module)
        check_rank(f"rank for {name!r}", rank, m, n)
        if rank <= break_even_rank(m, n):
            _check_layer_values(by_name[name])
    if chosen is None:  # energy=, ranks chosen while cutting: every layer checked first
        for layer in layers:
            _check_layer_values(layer)
    decompositions = {}
    if svd_cache is not None and calibration is None:  # looked up on the model's own layers, before any copy
        for name, rank in chosen.items():
            if rank <= break_even_rank(*layer_shape(by_name[name].module)):
                decompositions[name] = svd_cache.get(name, by_name[name].module)
    names = [layer.name for layer in layers]
    aliases = {layer.name: layer.aliases for layer in layers}
    del scan, layers, by_name  # drop our references to the layers, so each can be freed once swapped
    if has_composed:
        new = merge(model, inplace=inplace)
    else:
        new = model if inplace else copy_model(model, "compress")
    # the same layers in the copy (a copy keeps shared modules shared): no second scan
    copies = {name: Layer(name, new.get_submodule(name), aliases[name]) for name in names}
    cut = 0
    for name in names if chosen is None else list(chosen):
        target = copies.pop(name)
        m, n = layer_shape(target.module)
        if chosen is None:  # energy=: one decomposition chooses the rank and, if the layer is cut, cuts it
            rank, decomposition = energy_cut(weight_matrix(target.module).detach(), energy)
        else:
            rank, decomposition = chosen[name], decompositions.pop(name, None)
        if rank > break_even_rank(m, n):
            log.debug("%s: rank %d is not below break-even %d, stays dense", name, rank, break_even_rank(m, n))
            continue
        gram = calibration[name] if calibration is not None else None
        replace_module(new, target, truncate(target.module, rank, name, decomposition=decomposition, gram=gram))
        del target, decomposition  # the dense layer goes once the model no longer holds it
        cut += 1
    log.info("compress (%s): %d of %d layer(s) cut to low rank", kind, cut, len(names if chosen is None else chosen))
    return new
