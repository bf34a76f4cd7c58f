"""Compressed layers: a rank-r layer deployed as two thin standard ``torch.nn`` layers.

``LowRankLinear`` is ``Linear(in, r, bias=False)`` then ``Linear(r, out)``;
``LowRankConv2d`` is ``Conv2d(C_in, r, k)`` with the original geometry then a 1x1
``Conv2d(r, C_out)`` with the bias. Both are ``nn.Sequential`` subclasses, so they run
and export (ONNX, torch.export) as plain layers; nothing rebuilds a dense weight.
"""

from __future__ import annotations

import torch
from torch import nn

from lorita.composed import ConvLike
from lorita.dense_reads import note_dense_read
from lorita.errors import LoritaError
from lorita.conv1d import is_conv1d
from lorita.linalg import check_finite, check_rank, decompose
from lorita.whiten import whitened_factors


class LowRankLinear(nn.Sequential):
    """``Linear(in, rank, bias=False)`` followed by ``Linear(rank, out)``.

    Reads like the ``nn.Linear`` it replaces: ``in_features``, ``out_features``, ``bias``
    (the second layer's) and ``weight`` (the rank-r product, formed on access).

    Example:
        >>> layer = LowRankLinear(8, 4, rank=2)
        >>> layer(torch.randn(3, 8)).shape
        torch.Size([3, 4])
    """

    def __init__(self, in_features: int, out_features: int, rank: int, *, bias: bool = True,
                 device=None, dtype=None):
        kw = dict(device=device, dtype=dtype)
        super().__init__(nn.Linear(in_features, rank, bias=False, **kw), nn.Linear(rank, out_features, bias=bias, **kw))

    @property
    def rank(self) -> int:
        return self[0].out_features

    @property
    def weight(self) -> torch.Tensor:
        """The rank-r dense weight (out x in), formed on access: for code that reads ``layer.weight``
        (read inside a forward pass, it warns once: ``lorita.dense_reads``)."""
        note_dense_read(self)
        return self[1].weight @ self[0].weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The original bias (held by the second layer)."""
        return self[1].bias

    @property
    def in_features(self) -> int:
        return self[0].in_features

    @property
    def out_features(self) -> int:
        return self[1].out_features


class LowRankConv2d(ConvLike, nn.Sequential):
    """``Conv2d(C_in, rank, k)`` (original stride/padding/dilation) then ``Conv2d(rank, C_out, 1)``.

    Reads like the ``nn.Conv2d`` it replaces: ``in_channels``, ``out_channels``,
    ``kernel_size``, ``stride``, ``padding``, ``dilation``, ``groups``, ``padding_mode`` (the
    first conv's), ``bias`` (the second's) and ``weight`` (the rank-r kernel, formed on access).

    Example:
        >>> layer = LowRankConv2d(nn.Conv2d(3, 8, 3, padding=1), rank=2)
        >>> layer(torch.randn(1, 3, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(self, like: nn.Conv2d, rank: int):
        w = like.weight
        kw = dict(device=w.device, dtype=w.dtype)
        first = nn.Conv2d(like.in_channels, rank, like.kernel_size, stride=like.stride, padding=like.padding,
                          dilation=like.dilation, bias=False, padding_mode=like.padding_mode, **kw)
        second = nn.Conv2d(rank, like.out_channels, 1, bias=like.bias is not None, **kw)
        super().__init__(first, second)

    @property
    def rank(self) -> int:
        return self[0].out_channels

    @property
    def weight(self) -> torch.Tensor:
        """The rank-r dense kernel (C_out, C_in, kh, kw), formed on access: for code that reads ``layer.weight``
        (e.g. transformers' ViT reads the patch projection's dtype)."""
        note_dense_read(self)
        first = self[0].weight  # (r, C_in, kh, kw)
        return (self[1].weight.flatten(1) @ first.flatten(1)).reshape(-1, *first.shape[1:])

    def _geometry_conv(self) -> nn.Conv2d:
        return self[0]

    @property
    def bias(self) -> torch.Tensor | None:
        """The original bias (held by the 1x1 conv)."""
        return self[1].bias

    @property
    def in_channels(self) -> int:
        return self[0].in_channels

    @property
    def out_channels(self) -> int:
        return self[1].out_channels


LOWRANK_TYPES = (LowRankLinear, LowRankConv2d)


def has_lowrank(model: nn.Module) -> bool:
    """Whether any layer of ``model`` was cut to a low-rank pair (a cut that kept every layer dense is the model).

    Example:
        >>> has_lowrank(nn.Sequential(nn.Linear(4, 4))), has_lowrank(nn.Sequential(LowRankLinear(4, 4, 1)))
        (False, True)
    """
    return any(isinstance(m, LOWRANK_TYPES) for m in model.modules())


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight as an ``out x in`` matrix (a conv kernel flattened row-major).

    Example:
        >>> weight_matrix(nn.Conv2d(3, 8, 3)).shape
        torch.Size([8, 27])
    """
    if is_conv1d(module):
        return module.weight.T  # transformers Conv1D stores (in, out)
    weight = module.merged_weight() if hasattr(module, "merged_weight") else module.weight
    return weight.reshape(weight.shape[0], -1)


@torch.no_grad()
def truncate(module: nn.Module, rank: int, name: str = "layer", *, decomposition=None,
             gram: torch.Tensor | None = None) -> nn.Module:
    """The rank-``rank`` two-layer form of a plain ``nn.Linear`` / ``nn.Conv2d`` (any rank 1..min(m, n)).

    A transformers ``Conv1D`` (GPT-2; weight stored ``(in, out)``) becomes a ``LowRankLinear``.

    This builds the pair even above the break-even rank; ``lorita.compress`` decides when
    it pays. SVD in float64, factors cast back to the layer's dtype. ``decomposition``:
    the weight matrix's ``(U, S, Vh)`` when already computed (e.g. by ``SVDCache``).
    ``gram``: the layer's calibration ``X^T X`` (``lorita.whiten.collect_grams``) for a
    whitened cut that minimises the output error on that data instead of the weight error.

    Example:
        >>> dense = nn.Linear(6, 4)
        >>> pair = truncate(dense, 4)   # full rank: same function
        >>> x = torch.randn(2, 6)
        >>> torch.allclose(pair(x), dense(x), atol=1e-5)
        True
    """
    if not (isinstance(module, (nn.Linear, nn.Conv2d)) or is_conv1d(module)) or \
            (isinstance(module, nn.Conv2d) and module.groups != 1):
        raise LoritaError(f"cannot truncate {name!r} ({type(module).__name__}): only Linear and Conv2d with groups=1 "
                          "(and transformers Conv1D)")
    matrix = weight_matrix(module)
    check_finite(matrix, name)
    if module.bias is not None:
        check_finite(module.bias, name, "bias")
    m, n = matrix.shape
    check_rank(f"rank for {name!r}", rank, m, n)
    dtype = module.weight.dtype
    if isinstance(module, nn.Conv2d):
        pair = LowRankConv2d(module, rank)
    else:
        pair = LowRankLinear(n, m, rank, bias=module.bias is not None, device=module.weight.device, dtype=dtype)
    first_w, second_w = pair[0].weight.view(rank, n), pair[1].weight.view(m, rank)  # views: written in place
    if gram is not None:
        first, second = whitened_factors(matrix.detach(), gram, rank)  # (r, n), (m, r)
        first_w.copy_(first)
        second_w.copy_(second)
    else:
        # A = S_r^(1/2) V_r^T, B = U_r S_r^(1/2) (lorita.linalg.truncated_factors), written into the pair's
        # weights a slice of rows at a time: no float64 copy of B (m x r) is ever formed whole
        u, s, vh = decompose(matrix, rank) if decomposition is None else decomposition
        if min(vh.shape[0], u.shape[1], s.shape[0]) < rank:
            raise LoritaError(f"the given decomposition has {min(vh.shape[0], u.shape[1], s.shape[0])} components, "
                              f"fewer than rank {rank}")
        root = s[:rank].sqrt()
        first_w.copy_(root[:, None].to(vh.dtype) * vh[:rank])
        step = max(1, (1 << 22) // rank)
        for i in range(0, m, step):
            second_w[i:i + step].copy_(u[i:i + step, :rank] * root.to(u.dtype))
    if module.bias is not None:
        pair[1].bias.copy_(module.bias)
    pair.train(module.training)
    return pair
