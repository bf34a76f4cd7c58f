"""Int8 layers: weights stored as 8-bit integers with one float scale per output channel.

``Int8Linear`` and ``Int8Conv2d`` hold ``qweight`` (int8, the layer's weight shape) and
``scale`` (one value per output channel, or one value: ``granularity="tensor"``; the
layer's float dtype) as buffers, and the float bias. Quantization is symmetric:
``weight ~= qweight * scale`` with ``qweight`` in [-127, 127] and ``scale = max|row| / 127``,
so a row's error is at most ``scale / 2``.
How a layer computes (measured by ``benchmarks/quantize.py --kernels``; docs/QUANTIZE.md):

- a Linear of at least ``LARGE`` (65536) weights, on CPU in float32: PyTorch's dynamic
  int8 matmul (``torch.ops.quantized.linear_dynamic``, the fbgemm/x86 engine behind
  ``torch.ao.quantization.quantize_dynamic``): each call quantizes its input per tensor
  (7-bit range, PyTorch's default on x86), multiplies in int8 and rescales. The packed
  weight is built from ``qweight`` and ``scale`` on the first call;
- a smaller layer (Linear or Conv2d): its dequantized float weight is formed on the first
  call and kept (at most 256 KB in float32), since dequantizing on every call costs more
  than such a layer's matmul: int8 on disk, float32 speed in memory. Later calls go straight
  to ``F.linear`` / ``F.conv2d`` with the kept weight and the bias: one dictionary read and
  the two export checks, no attribute lookups through ``nn.Module``. The thin layers of a cut
  are this small, and their matmuls take microseconds, so what the call itself costs in
  Python decides their speed (it made the digits MLP's cut 1.21x slower in int8 before);
- a larger Conv2d: the kernel is dequantized on every call and the float convolution
  runs (PyTorch has no int8 convolution for float inputs);
- a large Linear under autograd on its input (the int8 matmul has no backward; the bias is
  added after it and gets its gradient), on an input holding NaN or inf, one unbatched example or a sparse one, under a
  dispatch mode (``lorita.profile``'s FLOP counter), on other devices or dtypes, and any layer
  while tracing or compiling (ONNX export, ``torch.export``): ``F.linear`` / ``F.conv2d``
  with the weight dequantized in the call, so exported graphs hold the int8 weight and its
  dequantization.

Both read like the layer they replace (``in_features``, ``out_channels``, ``stride``,
``weight``...). What a layer keeps is dropped by ``load_state_dict``, ``.to()`` and friends, and
by assigning its tensors (``clear_cache()`` after writing them in place by hand).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from lorita.checks import check_choice
from lorita.errors import LoritaError
from lorita.linalg import check_finite

log = logging.getLogger(__name__)

Granularity = Literal["channel", "tensor"]
GRANULARITIES: tuple[Granularity, ...] = get_args(Granularity)
QMAX = 127  # symmetric range [-127, 127]: -128 is never used, so negating a weight is exact
LARGE = 1 << 16  # weights from which a Linear multiplies in int8; below, a layer keeps its dequantized weight


@torch.no_grad()
def quantize_weight(weight: torch.Tensor, granularity: Granularity = "channel",
                    name: str = "layer") -> tuple[torch.Tensor, torch.Tensor]:
    """``(qweight, scale)``: int8 values of ``weight``'s shape and one scale per output channel (dim 0).

    Computed in float32 (float64 for a float64 weight); the scale is returned in the weight's
    dtype. ``granularity="tensor"``: one scale (shape ``(1,)``) for the whole weight. An
    all-zero channel (or weight) gets scale 1 (its values are 0).

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
        amax = amax.max().reshape(1)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax)).to(weight.dtype)  # as it is stored
    smallest = torch.nextafter(torch.zeros((), dtype=scale.dtype), torch.ones((), dtype=scale.dtype))
    scale = scale.clamp_min(smallest)  # a float16 step of a tiny row may underflow to 0: the smallest step instead
    q = torch.round(rows / scale.to(work.dtype)[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    return q.reshape(weight.shape), scale


class _Int8(nn.Module):
    """What both int8 layers share: the buffers, the dequantized weight, the bias."""

    qweight: torch.Tensor
    scale: torch.Tensor

    def _init_tensors(self, shape: tuple[int, ...], bias: bool, device, dtype, granularity: Granularity) -> None:
        dtype = dtype or torch.get_default_dtype()
        check_choice("granularity", granularity, GRANULARITIES)
        scales = shape[0] if granularity == "channel" else 1
        self.granularity: Granularity = granularity
        self.register_buffer("qweight", torch.zeros(shape, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(scales, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(shape[0], dtype=dtype, device=device)) if bias else None

    @torch.no_grad()
    def load_float(self, weight: torch.Tensor, bias: torch.Tensor | None, name: str = "layer") -> None:
        """Quantize ``weight`` into this layer (at its granularity) and copy ``bias``."""
        q, s = quantize_weight(weight, self.granularity, name)
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

    def _float_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The weight in ``x``'s dtype: kept after the first call for a small layer, with the bias, as
        ``_lorita_kept = (weight, bias)`` for the forward's fast path (not while tracing or compiling, so
        exported graphs hold the int8 weight and its dequantization)."""
        if self.qweight.numel() < LARGE and not _exporting():
            kept = self.__dict__.get("_lorita_kept")
            if kept is None or kept[0].dtype != x.dtype:
                with torch.inference_mode(False):  # a normal tensor, so later calls under autograd can save it
                    kept = self.__dict__["_lorita_kept"] = (self.weight.detach().to(x.dtype), self.bias)
            return kept[0]
        return self.weight.to(x.dtype)

    def clear_cache(self) -> None:
        """Drop the kept float weight and packed int8 weight; they are rebuilt on the next call. Done by
        ``load_state_dict``, ``.to()`` / ``.half()`` / ``.cuda()``, and by assigning ``qweight``, ``scale`` or
        ``bias``; call it after writing those tensors in place by hand."""
        self.__dict__.pop("_lorita_kept", None)
        self.__dict__.pop("_lorita_packed", None)

    def __setattr__(self, name, value):
        if name in ("qweight", "scale", "bias"):
            self.clear_cache()
        super().__setattr__(name, value)

    def _apply(self, fn, recurse=True):
        self.clear_cache()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in ("_lorita_kept", "_lorita_packed")}  # copies rebuild


class Int8Linear(_Int8):
    """A Linear layer with int8 weights (one scale per output feature) and a float bias.

    Example:
        >>> dense = nn.Linear(16, 4)
        >>> layer = Int8Linear.from_linear(dense)
        >>> x = torch.randn(3, 16)
        >>> bool((layer(x) - dense(x)).abs().max() < 0.05)
        True
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 granularity: Granularity = "channel", device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_tensors((out_features, in_features), bias, device, dtype, granularity)

    @classmethod
    def from_linear(cls, linear: nn.Linear, granularity: Granularity = "channel", name: str = "layer") -> "Int8Linear":
        """Quantize an ``nn.Linear`` (same device; the scale and bias keep its dtype).

        Example:
            >>> Int8Linear.from_linear(nn.Linear(4, 2)).qweight.dtype
            torch.int8
        """
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, granularity=granularity,
                    device=w.device, dtype=w.dtype)
        if not w.is_meta:
            layer.load_float(w, linear.bias, name)
        layer.train(linear.training)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = self.__dict__.get("_lorita_kept")
        if kept is not None and kept[0].dtype == x.dtype and not _exporting():
            return F.linear(x, kept[0], kept[1])  # a small layer after its first call: nn.Linear's own cost
        if self.qweight.numel() >= LARGE and x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() >= 2 \
                and x.layout == torch.strided and _plain_call(x) and _all_finite(x):  # (no sparse int8 matmul)
            packed = self.__dict__.get("_lorita_packed")
            if packed is None:
                packed = self.__dict__["_lorita_packed"] = self._pack()
            if packed is not False:
                out = torch.ops.quantized.linear_dynamic(x, packed, True)  # (..., out): no backward of its own
                return out if self.bias is None else out + self.bias  # the bias added here gets its gradient
        return F.linear(x, self._float_weight(x), self.bias)

    @torch.no_grad()
    def _pack(self):
        """PyTorch's packed int8 weight (without the bias) for its dynamic int8 matmul, or False where unavailable."""
        zero = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch notes that quantized tensor types are deprecated
            try:
                scale = self.scale.double().expand(self.out_features).contiguous()
                qt = torch._make_per_channel_quantized_tensor(self.qweight, scale, zero, 0)
                return torch.ops.quantized.linear_prepack(qt, None)
            except (RuntimeError, AttributeError) as err:  # no quantized engine in this build
                log.info("int8 matmul unavailable (%s): dequantized weights instead", err)
                return False

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _exporting() -> bool:
    """Tracing (``torch.jit.trace``, ONNX export) or compiling (``torch.compile``, ``torch.export``): the graph must
    hold the int8 weight and its dequantization, not a float copy. The two cheapest checks there are (C calls
    and a flag): they run on every call of a small layer."""
    return torch._C._is_tracing() or torch.compiler.is_compiling()


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN or inf in ``x`` (a CPU tensor), checked through its sum: any NaN or inf makes the sum one, and a sum
    that overflows only sends a finite input to the float path (the same result, slower). With
    ``torch.isfinite(x).all()`` the (512, 256) layer took 0.87x float32's time at batch 32, with this check 0.51x
    (``benchmarks/quantize.py --kernels``, docs/QUANTIZE.md).

    Example:
        >>> _all_finite(torch.ones(2, 3)), _all_finite(torch.tensor([[1.0, float("nan")]]))
        (True, False)
    """
    return math.isfinite(x.sum().item())


def _plain_call(x: torch.Tensor) -> bool:
    """A call in eager mode where the int8 matmul may run: no autograd on the input (the matmul has no backward; the
    bias is added after it, so it gets its gradient), no tracing or compiling (ONNX export, torch.export), no
    dispatch mode (lorita.profile's FLOP counter), which must see the dequantized matmul."""
    return not (x.requires_grad and torch.is_grad_enabled()) and not _exporting() and \
        torch._C._len_torch_dispatch_stack() == 0


class Int8Conv2d(_Int8):
    """A Conv2d with int8 kernels (one scale per output channel) and a float bias; same geometry.

    The float convolution runs with the dequantized kernel (no int8 convolution for float
    inputs in PyTorch): the gain is the stored size, not the time.

    Example:
        >>> dense = nn.Conv2d(3, 8, 3, padding=1)
        >>> layer = Int8Conv2d.from_conv(dense)
        >>> layer(torch.randn(1, 3, 6, 6)).shape, layer.padding
        (torch.Size([1, 8, 6, 6]), (1, 1))
    """

    def __init__(self, like: nn.Conv2d, *, granularity: Granularity = "channel", device=None, dtype=None):
        super().__init__()
        for key in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                    "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(self, key, getattr(like, key))
        self._init_tensors(tuple(like.weight.shape), like.bias is not None, device, dtype, granularity)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, granularity: Granularity = "channel", name: str = "layer") -> "Int8Conv2d":
        """Quantize an ``nn.Conv2d`` (any groups; same device, the scale and bias keep its dtype).

        Example:
            >>> Int8Conv2d.from_conv(nn.Conv2d(4, 4, 3, groups=4)).qweight.shape
            torch.Size([4, 1, 3, 3])
        """
        w = conv.weight
        layer = cls(conv, granularity=granularity, device=w.device, dtype=w.dtype)
        if not w.is_meta:
            layer.load_float(w, conv.bias, name)
        layer.train(conv.training)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = self.__dict__.get("_lorita_kept")
        if kept is not None and kept[0].dtype == x.dtype and self.padding_mode == "zeros" and not _exporting():
            return F.conv2d(x, kept[0], kept[1], self.stride, self.padding, self.dilation, self.groups)
        weight = self._float_weight(x)
        padding = self.padding
        if self.padding_mode != "zeros":  # as nn.Conv2d._conv_forward
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}")


INT8_TYPES = (Int8Linear, Int8Conv2d)


def check_int8_values(layer: nn.Module, name: str) -> None:
    """Raise LoritaError unless ``layer``'s int8 weight lies in [-127, 127] and its scales are finite and not
    negative, as ``quantize_weight`` makes them (positive; a zero, which float16 files saved before could hold,
    dequantizes to zeros). ``lorita.save`` refuses other values; ``lorita.load`` calls a file holding them damaged.

    Example:
        >>> layer = Int8Linear.from_linear(nn.Linear(4, 2))
        >>> check_int8_values(layer, "fc")
        >>> layer.scale.fill_(-1.0); check_int8_values(layer, "fc")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: layer 'fc' has int8 scales that are not all finite and non-negative (min -1, max -1)
    """
    scale = layer.scale.detach()
    if scale.numel() and not bool((torch.isfinite(scale) & (scale >= 0)).all()):
        raise LoritaError(f"layer {name!r} has int8 scales that are not all finite and non-negative (min "
                          f"{scale.min().item():g}, max {scale.max().item():g})")
    if layer.qweight.numel() and int(layer.qweight.min()) < -QMAX:
        raise LoritaError(f"layer {name!r} has int8 weights of -128, outside the symmetric range [-127, 127] lorita "
                          "writes")
