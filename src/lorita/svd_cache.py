"""``SVDCache``: each layer's SVD computed once, reused by repeated cuts of the same model.

Searches and sweeps cut one model at many ranks; without a cache every ``compress`` call
repeats the float64 SVD of every layer, which dominates their cost. An entry is reused
only while it describes the same module object with unchanged parameters (same storage,
same in-place version counter); otherwise it is recomputed.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from lorita.linalg import break_even_rank, check_finite, decompose
from lorita.lowrank import weight_matrix

Decomposition = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _stamp(module: nn.Module) -> tuple:
    return tuple((p.data_ptr(), p._version, tuple(p.shape)) for p in module.parameters())


class SVDCache:
    """Reduced SVDs ``(U, S, Vh)`` of layer weights, by module name, as far as a cut can use them.

    ``S`` holds every singular value (float64: energy and thresholds need them all); ``U``
    and ``Vh`` only the directions up to the layer's break-even rank (a cut above it keeps
    the layer dense), in the weight's precision: float32 for float32 (and half-precision)
    weights, float64 for float64 ones. Memory: about the size of the cached weights
    themselves (``r * (m + n)`` values with ``r`` at break-even, at most ``m * n``), where a
    full float64 SVD takes two to four times that. A cut from a float32 cache differs from
    a fresh cut (float64 factors, then cast) by float32 rounding only
    (``tests/test_svd_cache.py`` bounds it). Pass one cache to several
    ``lorita.compress(..., svd_cache=cache)`` calls on the same model.

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> cache = SVDCache()
        >>> u, s, vh = cache.get("0", net[0])
        >>> cache.get("0", net[0])[1] is s, len(cache)
        (True, 1)
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[weakref.ref, tuple, Decomposition]] = {}
        self.computed = 0  # SVDs actually run (for tests and benchmarks)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, module: nn.Module) -> Decomposition:
        """``(U, S, Vh)`` of ``module``'s weight matrix (out x in), computing it if not cached."""
        stamp = _stamp(module)
        entry = self._entries.get(name)
        if entry is not None and entry[0]() is module and entry[1] == stamp:
            return entry[2]
        matrix = weight_matrix(module).detach()
        check_finite(matrix, name)
        keep = break_even_rank(*matrix.shape)
        store = torch.promote_types(matrix.dtype, torch.float32)
        u, s, vh = decompose(matrix)  # the Gram route on large layers (lorita.linalg)
        decomposition = (u[:, :keep].to(store).clone(), s.detach(), vh[:keep].to(store).clone())
        del u, vh
        self._entries[name] = (weakref.ref(module), stamp, decomposition)
        self.computed += 1
        return decomposition
