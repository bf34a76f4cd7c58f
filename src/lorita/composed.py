"""Composed layers: one Linear or Conv2d trained as a product of N linear factors.

``ComposedLinear`` holds N weight factors applied in order (no nonlinearity between
them) and the original bias; ``ComposedConv2d`` holds the original k x k kernel followed
by N-1 channel-mixing (1x1) factors, bias on the last. Both run in one of two ways that
give the same values:

- ``sequential``: apply the factors one after another to the activations,
  extra cost about ``(N-1) * B_eff * d^2`` multiply-adds;
- ``fused``: multiply the factors into one weight (in the cheapest order, as
  ``torch.linalg.multi_dot`` does), then one matmul/conv, extra cost at most
  ``(N-1) * d^2 * n``;

and ``auto`` picks the cheaper per call from the effective batch ``B_eff`` (batch x
positions). The count is of the forward pass, and it decides for training too: the
backward of either form costs about twice its forward (an input gradient and a
weight gradient per matmul: on the activations for sequential, along the factor
chain for fused), so the ratio stays. METHOD.md section 2; measured in
docs/PERFORMANCE.md.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from lorita.checks import check_choice, check_int
from lorita.dense_reads import note_dense_read
from lorita.errors import LoritaError
from lorita.linalg import balanced_split, chain_product, work_dtype

Mode = Literal["sequential", "fused", "auto"]
Init = Literal["default", "preserve", "balanced"]
Side = Literal["input", "output"]
MODES: tuple[Mode, ...] = get_args(Mode)
# Set on a composed layer whose state_dict is its merged weight (lorita.hf_trainer.LoritaCallback's view).
MERGED_VIEW = "lorita_merged_state_dict"
INITS: tuple[Init, ...] = get_args(Init)
SIDES: tuple[Side, ...] = get_args(Side)
# Factors per composed layer: the most a lorita file may describe (lorita.save / load), so the
# most compose, a composed layer and a training run accept (a deeper run could not be saved).
MAX_DEPTH = 64


def _chain_cost(shapes: list[tuple[int, int]]) -> int:
    """Multiply-adds to form the product of (rows, cols) factors given in application order.

    The cheapest bracketing (the matrix-chain recurrence ``torch.linalg.multi_dot`` also
    uses), not left to right: for a 512 -> 10 head with 512 x 512 input factors that is
    ``2*10*512^2`` instead of ``512^3 + 10*512^2``.

    Example:
        >>> _chain_cost([(512, 512), (512, 512), (10, 512)])
        5242880
    """
    dims = [shapes[0][1]] + [r for r, _ in shapes]  # factor i maps dims[i] -> dims[i+1]
    n = len(shapes)
    best = [[0] * n for _ in range(n)]  # best[i][j]: product of factors i..j
    for span in range(1, n):
        for i in range(n - span):
            j = i + span
            best[i][j] = min(best[i][k] + best[k + 1][j] + dims[i] * dims[k + 1] * dims[j + 1] for k in range(i, j))
    return best[0][n - 1]


# What code reads from an nn.Conv2d besides the weight (transformers' MobileNet TF-style
# padding reads stride, kernel_size and dilation): a replaced conv answers the same.
CONV_ATTRIBUTES = ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode", "transposed",
                   "output_padding")


class ConvLike:
    """Mixin: the geometry attributes of an ``nn.Conv2d``, read from the conv that applies the
    kernel (``_geometry_conv``), so a replaced layer looks like the layer it replaces.
    ``groups`` is 1 (only such convs are replaced)."""

    def _geometry_conv(self) -> nn.Conv2d:
        raise NotImplementedError


def _conv_attribute(name: str) -> property:
    return property(lambda self: getattr(self._geometry_conv(), name),
                    doc=f"``{name}`` of the original ``nn.Conv2d`` (read-only).")


for _name in CONV_ATTRIBUTES:
    setattr(ConvLike, _name, _conv_attribute(_name))


class _Composed(nn.Module):
    """What both composed layers share: the choice between the sequential and fused forms."""

    mode: Mode

    def costs(self, effective_batch: int) -> tuple[int, int]:
        raise NotImplementedError

    def use_fused(self, effective_batch: int) -> bool:
        """Whether this call runs fused: the mode if fixed, else the cheaper form for this batch."""
        if self.mode != "auto":
            return self.mode == "fused"
        sequential, fused = self.costs(effective_batch)
        return fused < sequential


class ComposedLinear(_Composed):
    """A Linear layer trained as ``W = F_N ... F_1`` (``factors[0]`` applied first).

    ``side="input"`` (the authors' placement): N-1 square ``in x in`` factors, then the
    ``out x in`` map. ``side="output"``: the ``out x in`` map first, then square
    ``out x out`` factors. The bias is added once, after the last factor.

    Example:
        >>> layer = ComposedLinear.from_linear(nn.Linear(6, 3), depth=3, init="preserve")
        >>> layer(torch.randn(2, 6)).shape
        torch.Size([2, 3])
    """

    def __init__(self, in_features: int, out_features: int, depth: int, *, bias: bool = True,
                 side: Side = "input", mode: Mode = "auto", device=None, dtype=None):
        super().__init__()
        check_int("depth", depth, minimum=2, maximum=MAX_DEPTH, meaning="the number of factors of a composed layer")
        self.in_features, self.out_features, self.depth = in_features, out_features, depth
        self.side: Side = check_choice("side", side, SIDES)
        self.mode: Mode = check_choice("mode", mode, MODES)
        kw = dict(device=device, dtype=dtype)
        inner = in_features if side == "input" else out_features
        shapes = [(inner, in_features)] + [(inner, inner)] * (depth - 2) + [(out_features, inner)]
        self.factors = nn.ParameterList(nn.Parameter(torch.empty(s, **kw)) for s in shapes)
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        self.reset_parameters()

    @classmethod
    def from_linear(cls, linear: nn.Linear, depth: int, *, init: Init = "default", side: Side = "input",
                    mode: Mode = "auto") -> "ComposedLinear":
        """Build from an existing ``nn.Linear``: same device and dtype; ``init`` as in ``lorita.compose``.

        Example:
            >>> ComposedLinear.from_linear(nn.Linear(4, 2), depth=2).depth
            2
        """
        check_choice("init", init, INITS)
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, depth, bias=linear.bias is not None,
                    side=side, mode=mode, device=w.device, dtype=w.dtype)
        if init == "preserve":
            layer.load_dense(w.detach(), linear.bias)
        elif init == "balanced":
            fresh = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              device=w.device, dtype=w.dtype)
            layer.load_dense(fresh.weight.detach(), fresh.bias)
        return layer

    def reset_parameters(self) -> None:
        """PyTorch's default Linear init for every factor (the authors' choice), default bias."""
        for f in self.factors:
            nn.init.kaiming_uniform_(f, a=5 ** 0.5)
        if self.bias is not None:
            # The last factor's fan-in is its input size, as for an nn.Linear of that shape.
            bound = 1 / self.factors[-1].shape[1] ** 0.5
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.no_grad()
    def load_dense(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Set the factors to a balanced split of ``weight`` (product equals it) and copy ``bias``."""
        inner = self.factors[0].shape[0]
        parts = balanced_split(weight, self.depth, inner, self.side)
        for f, p in zip(self.factors, parts):
            f.copy_(p.to(f.dtype))
        if self.bias is not None and bias is not None:
            self.bias.copy_(bias)

    def effective_weight(self) -> torch.Tensor:
        """The product ``F_N ... F_1`` (out x in), differentiable, in the parameters' dtype."""
        return chain_product(list(self.factors))

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight this layer computes, formed on access: for code that reads ``layer.weight``
        (e.g. transformers reading its dtype). Not a parameter; train the factors. Read inside a
        forward pass, it warns once (``lorita.dense_reads``)."""
        note_dense_read(self)
        return self.effective_weight()

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """The product computed in float64 (exact merge), cast back to the parameters' dtype."""
        dtype = work_dtype(self.factors[0])
        return chain_product([f.to(dtype) for f in self.factors]).to(self.factors[0].dtype)

    def costs(self, effective_batch: int) -> tuple[int, int]:
        """Forward multiply-adds ``(sequential, fused)`` for ``effective_batch`` rows."""
        shapes = [tuple(f.shape) for f in self.factors]
        sequential = effective_batch * sum(r * c for r, c in shapes)
        fused = _chain_cost(shapes) + effective_batch * self.in_features * self.out_features
        return sequential, fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_fused(x.numel() // self.in_features):
            return F.linear(x, self.effective_weight(), self.bias)
        for f in self.factors[:-1]:
            x = F.linear(x, f)
        return F.linear(x, self.factors[-1], self.bias)  # bias inside the last matmul: no extra pass

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, depth={self.depth}, "
                f"side={self.side}, mode={self.mode}, bias={self.bias is not None}")


class ComposedConv2d(ConvLike, _Composed):
    """A Conv2d trained as its k x k kernel followed by ``depth-1`` 1x1 channel mixers.

    ``spatial`` is a bias-free ``nn.Conv2d`` with the original stride, padding, dilation
    and padding mode; ``mixers[i]`` are ``C_out x C_out`` matrices; the bias comes last.
    Merged weight: ``M_{N-1} ... M_1 @ K.reshape(C_out, -1)``. Reads like the conv it
    replaces: ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``,
    ``dilation``, ``groups``, ``padding_mode``, ``bias`` and ``weight`` (the merged kernel).

    Example:
        >>> layer = ComposedConv2d.from_conv(nn.Conv2d(3, 4, 3, padding=1), depth=3, init="preserve")
        >>> layer(torch.randn(1, 3, 8, 8)).shape
        torch.Size([1, 4, 8, 8])
    """

    def __init__(self, spatial: nn.Conv2d, depth: int, *, bias: bool = True, mode: Mode = "auto"):
        super().__init__()
        check_int("depth", depth, minimum=2, maximum=MAX_DEPTH, meaning="the number of factors of a composed layer")
        if spatial.bias is not None or spatial.groups != 1:
            raise LoritaError("ComposedConv2d needs a bias-free spatial conv with groups=1")
        self.spatial = spatial
        self.depth = depth
        self.mode: Mode = check_choice("mode", mode, MODES)
        c_out = spatial.out_channels
        kw = dict(device=spatial.weight.device, dtype=spatial.weight.dtype)
        self.mixers = nn.ParameterList(nn.Parameter(torch.empty(c_out, c_out, **kw)) for _ in range(depth - 1))
        self.bias = nn.Parameter(torch.empty(c_out, **kw)) if bias else None
        self._reset_mixers()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, depth: int, *, init: Init = "default", mode: Mode = "auto") -> "ComposedConv2d":
        """Build from an existing ``nn.Conv2d`` (groups=1): same device, dtype and geometry.

        Example:
            >>> ComposedConv2d.from_conv(nn.Conv2d(2, 4, 3), depth=2).mixers[0].shape
            torch.Size([4, 4])
        """
        check_choice("init", init, INITS)
        w = conv.weight
        spatial = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                            padding=conv.padding, dilation=conv.dilation, groups=1, bias=False,
                            padding_mode=conv.padding_mode, device=w.device, dtype=w.dtype)
        layer = cls(spatial, depth, bias=conv.bias is not None, mode=mode)
        if init == "preserve":
            layer.load_dense(w.detach(), conv.bias)
        elif init == "balanced":
            fresh = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, bias=conv.bias is not None,
                              device=w.device, dtype=w.dtype)
            layer.load_dense(fresh.weight.detach(), fresh.bias)
        return layer

    def _reset_mixers(self) -> None:
        # PyTorch's default init for a 1x1 conv C_out -> C_out (the authors' choice).
        for m in self.mixers:
            nn.init.kaiming_uniform_(m, a=5 ** 0.5)
        if self.bias is not None:
            bound = 1 / self.spatial.out_channels ** 0.5
            nn.init.uniform_(self.bias, -bound, bound)

    def _geometry_conv(self) -> nn.Conv2d:
        return self.spatial

    @property
    def in_channels(self) -> int:
        return self.spatial.in_channels

    @property
    def out_channels(self) -> int:
        return self.spatial.out_channels

    @torch.no_grad()
    def load_dense(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Set kernel and mixers to a balanced split of ``weight`` (C_out, C_in, kh, kw)."""
        matrix = weight.reshape(weight.shape[0], -1)  # (C_out, C_in*kh*kw), row-major as in merge
        parts = balanced_split(matrix, self.depth, self.out_channels, "output")
        self.spatial.weight.copy_(parts[0].reshape(weight.shape).to(weight.dtype))
        for m, p in zip(self.mixers, parts[1:]):
            m.copy_(p.to(m.dtype))
        if self.bias is not None and bias is not None:
            self.bias.copy_(bias)

    def _factors(self, dtype=None) -> list[torch.Tensor]:
        kernel = self.spatial.weight
        first = kernel.reshape(kernel.shape[0], -1)  # (C_out, C_in*kh*kw)
        factors = [first, *self.mixers]
        return factors if dtype is None else [f.to(dtype) for f in factors]

    def effective_weight(self) -> torch.Tensor:
        """The merged kernel (C_out, C_in, kh, kw), differentiable."""
        return chain_product(self._factors()).reshape(self.spatial.weight.shape)

    @property
    def weight(self) -> torch.Tensor:
        """The dense kernel this layer computes, formed on access: for code that reads ``layer.weight``
        (e.g. transformers' ViT reads the patch projection's dtype). Not a parameter. Read inside a
        forward pass, it warns once (``lorita.dense_reads``)."""
        note_dense_read(self)
        return self.effective_weight()

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """The merged kernel computed in float64, cast back to the parameters' dtype."""
        kernel = self.spatial.weight
        product = chain_product(self._factors(work_dtype(kernel)))
        return product.reshape(kernel.shape).to(kernel.dtype)

    def costs(self, effective_batch: int) -> tuple[int, int]:
        """Forward multiply-adds ``(sequential, fused)`` for ``effective_batch`` output positions."""
        c_out = self.out_channels
        fan_in = self.spatial.weight[0].numel()
        sequential = effective_batch * (fan_in * c_out + (self.depth - 1) * c_out * c_out)
        chain = _chain_cost([(c_out, fan_in)] + [(c_out, c_out)] * (self.depth - 1))
        fused = chain + effective_batch * fan_in * c_out
        return sequential, fused

    def _output_positions(self, x: torch.Tensor) -> int:
        """Batch x output height x width, from the conv geometry (no forward pass)."""
        conv = self.spatial
        if isinstance(conv.padding, str):  # 'same' keeps the size, 'valid' pads nothing
            pad = (0, 0) if conv.padding == "valid" else None
        else:
            pad = conv.padding
        size = []
        for i, extent in enumerate(x.shape[-2:]):
            if pad is None:
                size.append(extent)
                continue
            span = conv.dilation[i] * (conv.kernel_size[i] - 1) + 1
            size.append((extent + 2 * pad[i] - span) // conv.stride[i] + 1)
        batch = x.shape[0] if x.dim() == 4 else 1
        return batch * max(size[0], 0) * max(size[1], 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_fused(self._output_positions(x)):
            # _conv_forward applies stride/padding/dilation/padding_mode exactly as nn.Conv2d does.
            return self.spatial._conv_forward(x, self.effective_weight(), self.bias)
        y = self.spatial(x)
        last = len(self.mixers) - 1
        for i, m in enumerate(self.mixers):
            # 1x1 conv (C_out -> C_out); the bias rides on the last one instead of an extra pass
            y = F.conv2d(y, m[:, :, None, None], self.bias if i == last else None)
        return y

    def extra_repr(self) -> str:
        return f"depth={self.depth}, mode={self.mode}, bias={self.bias is not None}"


COMPOSED_TYPES = (ComposedLinear, ComposedConv2d)
