"""The factorized baseline of Khodak et al. (ICLR 2021): a low-rank model trained from scratch at its size.

Each layer is a pair of thin layers from the first step: the fresh model's weights are cut to
their truncated SVD (*spectral initialisation*: ``A = S^(1/2) V^T``, ``B = U S^(1/2)``, as
``lorita.compress`` cuts), and training decays the pair's product ``B A`` instead of each factor
(*Frobenius decay*: ``coefficient / 2 * ||B A||_F^2`` added to the loss, which for SGD is the
plain model's weight decay applied to the layer it stands for). Unlike LoRITa the rank is fixed
before training, so each size is its own training run. A conv is split as lorita cuts one: a k x k
conv into ``r`` channels, then a 1 x 1 conv (its kernel taken as a ``C_out x C_in k^2`` matrix); the
paper's released code splits it as a k x 1 conv then a 1 x k one (a ``C_out k x C_in k`` matrix),
which at one rank fraction keeps another rank and size. With ``grad_clip`` the penalty's gradient is
clipped with the loss's, unlike the optimizer's own weight decay.

``factorized_for_params`` builds the spectrally initialised model with the most params within a
budget (one rank fraction for every layer, as in the paper); ``FrobeniusDecay`` is the penalty
``lorita.train.train(..., penalty=)`` applies.
"""

from __future__ import annotations

import torch
from torch import nn

from lorita.checks import check_number
from lorita.compress import compress
from lorita.errors import LoritaError
from lorita.lowrank import LowRankConv2d, LowRankLinear
from lorita.profile import count_params
from lorita.svd_cache import SVDCache
from lorita.targets import Selector

_RATIO_STEPS = 40  # bisection steps on the rank fraction: far below one rank of any layer


def _pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    return [(m[0], m[1]) for m in model.modules() if isinstance(m, (LowRankLinear, LowRankConv2d))]


class FrobeniusDecay:
    """``coefficient / 2 * sum ||B A||_F^2`` over the low-rank pairs (``LowRankLinear``, ``LowRankConv2d``) of
    ``model``: a ``lorita.train.penalty.Penalty`` replacing the weight decay of their factors.

    ``||B A||_F^2`` is computed as ``sum((A A^T) * (B^T B))``, two r x r products, so the dense
    weight is never formed. A LoritaError when ``model`` has no low-rank pair.

    Example:
        >>> pair = LowRankLinear(6, 4, rank=2)
        >>> decay = FrobeniusDecay(pair, 1e-3)
        >>> torch.allclose(decay(), 0.5e-3 * (pair[1].weight @ pair[0].weight).square().sum())
        True
        >>> len(decay.parameters())  # the two factors; the bias keeps the optimizer's weight decay
        2
    """

    def __init__(self, model: nn.Module, coefficient: float):
        if not isinstance(model, nn.Module):
            raise LoritaError(f"FrobeniusDecay needs the model (an nn.Module) whose pairs it decays, got "
                              f"{type(model).__name__}")
        self.coefficient = check_number("coefficient", coefficient, minimum=0)
        self._pairs = _pairs(model)
        if not self._pairs:
            raise LoritaError("the model has no low-rank pair (LowRankLinear or LowRankConv2d) for Frobenius decay "
                              "to act on; cut it first (lorita.compress, or factorized_for_params)")

    def __call__(self) -> torch.Tensor:
        total = None
        for first, second in self._pairs:
            a, b = first.weight.flatten(1), second.weight.flatten(1)  # (r, n), (m, r)
            term = ((a @ a.T) * (b.T @ b)).sum()
            total = term if total is None else total + term
        return 0.5 * self.coefficient * total

    def parameters(self) -> list[nn.Parameter]:
        """The factors' weights (the pairs' biases are not decayed by it)."""
        return [w for first, second in self._pairs for w in (first.weight, second.weight)]


def factorized_for_params(model: nn.Module, max_params: float, *, exclude: Selector = None,
                          example_input=None) -> tuple[nn.Module, float] | None:
    """The spectrally initialised factorized ``model`` with the most params within ``max_params``:
    ``(model, rank fraction)``, or None when even rank 1 in every layer keeps more.

    Every layer not in ``exclude`` is cut to the same fraction of its full rank (``lorita.compress``
    with ``ratio=``; a layer whose rank would not save params stays dense), the fraction bisected.
    ``model`` is read, never changed: pass a freshly initialised one (a trained one gives a cut of it).

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> small, ratio = factorized_for_params(net, 0.5 * count_params(net))
        >>> count_params(small) <= 0.5 * count_params(net), type(small[0]).__name__
        (True, 'LowRankLinear')
    """
    max_params = check_number("max_params", max_params, minimum=0, low_open=True)
    cache = SVDCache()

    def cut(ratio: float) -> nn.Module:
        return compress(model, ratio=ratio, exclude=exclude, svd_cache=cache, example_input=example_input)

    whole = cut(1.0)
    if count_params(whole) <= max_params:
        return whole, 1.0  # every layer at full rank: the layers whose cut saves nothing stay dense
    lo = 1e-9  # rank 1 in every layer
    smallest = cut(lo)
    if count_params(smallest) > max_params:
        return None
    best, hi = (smallest, lo), 1.0
    for _ in range(_RATIO_STEPS):
        mid = 0.5 * (lo + hi)
        small = cut(mid)
        if count_params(small) <= max_params:
            lo, best = mid, (small, mid)
        else:
            hi = mid
    return best

