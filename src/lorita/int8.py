"""Int8 layers: weights stored as 8-bit integers with one float scale per output channel.

``Int8Linear`` and ``Int8Conv2d`` hold ``qweight`` (int8, the layer's weight shape) and
``scale`` (one value per output channel, the layer's float dtype) as buffers, and the
float bias. Quantization is symmetric: ``weight ~= qweight * scale`` with ``qweight`` in
[-127, 127] and ``scale = max|row| / 127``, so a row's error is at most ``scale / 2``.
Activations stay in float (weight-only int8): a Linear runs PyTorch's int8-weight matmul
on CPU (``torch._weight_int8pack_mm``), a Conv2d (and anything on other devices, under
autograd or while exporting) dequantizes its weight and runs the float op. Both read like
the layer they replace (``in_features``, ``out_channels``, ``stride``, ``weight``...).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from lorita.checks import check_choice
from lorita.linalg import check_finite

Granularity = Literal["channel", "tensor"]
GRANULARITIES: tuple[Granularity, ...] = get_args(Granularity)
QMAX = 127  # symmetric range [-127, 127]: -128 is never used, so negating a weight is exact
_PACKED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # inputs torch._weight_int8pack_mm takes


@torch.no_grad()
def quantize_weight(weight: torch.Tensor, granularity: Granularity = "channel",
                    name: str = "layer") -> tuple[torch.Tensor, torch.Tensor]:
    """``(qweight, scale)``: int8 values of ``weight``'s shape and one scale per output channel (dim 0).

    Computed in float32 (float64 for a float64 weight); the scale is returned in the weight's
    dtype. ``granularity="tensor"``: one scale for the whole weight, repeated per channel.
    An all-zero channel gets scale 1 (its values are 0).

    Example:
        >>> w = torch.tensor([[0.5, -1.0], [0.0, 0.0]])
        >>> q, s = quantize_weight(w)
        >>> q.tolist(), s.tolist()
        ([[64, -127], [0, 0]], [0.007874015718698502, 1.0])
    """
    check_choice("granularity", granularity, GRANULARITIES)
    check_finite(weight, name)
    work = weight.detach().to(torch.float64 if weight.dtype == torch.float64 else torch.float32)
    rows = work.reshape(work.shape[0], -1)
    amax = rows.abs().amax(dim=1)  # (out,)
    if granularity == "tensor":
        amax = amax.max().expand_as(amax)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    q = torch.round(rows / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    return q.reshape(weight.shape), scale.to(weight.dtype)


class _Int8(nn.Module):
    """What both int8 layers share: the buffers, the dequantized weight, the bias."""

    qweight: torch.Tensor
    scale: torch.Tensor

    def _init_tensors(self, shape: tuple[int, ...], bias: bool, device, dtype) -> None:
        dtype = dtype or torch.get_default_dtype()
        self.register_buffer("qweight", torch.zeros(shape, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(shape[0], dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(shape[0], dtype=dtype, device=device)) if bias else None

    @torch.no_grad()
    def load_float(self, weight: torch.Tensor, bias: torch.Tensor | None, granularity: Granularity = "channel",
                   name: str = "layer") -> None:
        """Quantize ``weight`` into this layer and copy ``bias``."""
        q, s = quantize_weight(weight, granularity, name)
        self.qweight.copy_(q)
        self.scale.copy_(s)
        if self.bias is not None and bias is not None:
            check_finite(bias, name, "bias")
            self.bias.copy_(bias)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized float weight ``qweight * scale``, formed on access (not a parameter)."""
        shape = (-1,) + (1,) * (self.qweight.dim() - 1)
        return self.qweight.to(self.scale.dtype) * self.scale.reshape(shape)


class Int8Linear(_Int8):
    """A Linear layer with int8 weights (one scale per output feature) and a float bias.

    Example:
        >>> dense = nn.Linear(16, 4)
        >>> layer = Int8Linear.from_linear(dense)
        >>> x = torch.randn(3, 16)
        >>> bool((layer(x) - dense(x)).abs().max() < 0.05)
        True
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_tensors((out_features, in_features), bias, device, dtype)

    @classmethod
    def from_linear(cls, linear: nn.Linear, granularity: Granularity = "channel", name: str = "layer") -> "Int8Linear":
        """Quantize an ``nn.Linear`` (same device; the scale and bias keep its dtype).

        Example:
            >>> Int8Linear.from_linear(nn.Linear(4, 2)).qweight.dtype
            torch.int8
        """
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device=w.device,
                    dtype=w.dtype)
        if not w.is_meta:
            layer.load_float(w, linear.bias, granularity, name)
        layer.train(linear.training)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _packed_path(x, self.scale):
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features), self.qweight, self.scale)
            y = y.reshape(*x.shape[:-1], self.out_features)  # (..., out)
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.weight.to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _packed_path(x: torch.Tensor, scale: torch.Tensor) -> bool:
    """Whether PyTorch's CPU int8-weight matmul applies: a CPU float input of the scale's dtype, no autograd,
    not being traced for export (exporters know only the dequantized form)."""
    return x.device.type == "cpu" and x.dtype == scale.dtype and x.dtype in _PACKED_DTYPES and \
        not (torch.is_grad_enabled() and x.requires_grad) and not torch.jit.is_tracing() and \
        not torch.compiler.is_compiling() and not torch.onnx.is_in_onnx_export()


class Int8Conv2d(_Int8):
    """A Conv2d with int8 kernels (one scale per output channel) and a float bias; same geometry.

    The kernel is dequantized on each call and the float convolution runs (no int8 conv
    kernel on CPU in PyTorch): the gain is the stored size, not the time.

    Example:
        >>> dense = nn.Conv2d(3, 8, 3, padding=1)
        >>> layer = Int8Conv2d.from_conv(dense)
        >>> layer(torch.randn(1, 3, 6, 6)).shape, layer.padding
        (torch.Size([1, 8, 6, 6]), (1, 1))
    """

    def __init__(self, like: nn.Conv2d, *, device=None, dtype=None):
        super().__init__()
        for key in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                    "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(self, key, getattr(like, key))
        self._init_tensors(tuple(like.weight.shape), like.bias is not None, device, dtype)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, granularity: Granularity = "channel", name: str = "layer") -> "Int8Conv2d":
        """Quantize an ``nn.Conv2d`` (any groups; same device, the scale and bias keep its dtype).

        Example:
            >>> Int8Conv2d.from_conv(nn.Conv2d(4, 4, 3, groups=4)).qweight.shape
            torch.Size([4, 1, 3, 3])
        """
        w = conv.weight
        layer = cls(conv, device=w.device, dtype=w.dtype)
        if not w.is_meta:
            layer.load_float(w, conv.bias, granularity, name)
        layer.train(conv.training)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype)
        padding = self.padding
        if self.padding_mode != "zeros":  # as nn.Conv2d._conv_forward
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}")


INT8_TYPES = (Int8Linear, Int8Conv2d)
