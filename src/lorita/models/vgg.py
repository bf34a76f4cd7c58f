"""VGG-style nets for small images: VGG16 (the CIFAR variant: 13 conv-BN-ReLU layers, 5 max pools, one
Linear) and a narrow four-conv VGG for CPU studies."""

from __future__ import annotations

import torch
from torch import nn

from lorita.models.registry import check_elements, check_float, register_model

# Output channels per conv; "M" is a 2x2 max pool.
VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# Four conv-BN-ReLU layers, each followed by a pool (VGG's first four stages with one conv each).
VGG_SMALL_CFG: list[int | str] = [64, "M", 128, "M", 256, "M", 512, "M"]


def _scaled(cfg: list[int | str], multiplier: float) -> list[int | str]:
    return [v if v == "M" else max(1, round(int(v) * multiplier)) for v in cfg]


def _pooled_size(size: int, n_pools: int) -> int:
    """Spatial size after `n_pools` MaxPool2d(2, ceil_mode=True): 28 -> 14 -> 7 -> 4 -> 2 -> 1."""
    for _ in range(n_pools):
        size = (size + 1) // 2
    return size


def _checked_vgg(cfg: list[int | str], in_channels: int, image_size: int, num_classes: int) -> "VGG":
    """``VGG(cfg, ...)`` after checking that no layer's weight is too large to allocate."""
    widths = [v for v in cfg if v != "M"]
    check_elements("the first VGG conv", widths[0], in_channels, 3, 3)
    check_elements("a VGG conv", max(widths), max(widths), 3, 3)
    side = _pooled_size(image_size, cfg.count("M"))
    check_elements("the VGG classifier", num_classes, widths[-1] * side * side)
    return VGG(cfg, in_channels, image_size, num_classes)


class VGG(nn.Module):
    """Conv stack from `cfg` (3x3 pad 1 -> BatchNorm2d -> ReLU, "M" = pool), flatten, Linear.

    Pools use `ceil_mode=True`, so 28x28, 32x32 and 8x8 inputs all end at 1x1.

    Example:
        >>> net = VGG([8, "M", 16, "M"], in_channels=3, image_size=8, num_classes=10)
        >>> net(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, cfg: list[int | str], in_channels: int, image_size: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU()]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        s = _pooled_size(image_size, sum(v == "M" for v in cfg))
        self.classifier = nn.Linear(c * s * s, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C, s, s), s = 1 for 8/28/32 inputs
        x = self.flatten(x)  # (B, C*s*s)
        return self.classifier(x)  # (B, num_classes)


@register_model("vgg16")
def vgg16(num_classes: int, in_channels: int, image_size: int, width_multiplier: float = 1.0) -> nn.Module:
    """VGG16 (CIFAR variant); `width_multiplier` scales every conv's channel count.

    Example:
        >>> vgg16(10, 3, 32, width_multiplier=0.25).classifier
        Linear(in_features=128, out_features=10, bias=True)
    """
    m = check_float("width_multiplier", width_multiplier, maximum=64.0)
    return _checked_vgg(_scaled(VGG16_CFG, m), in_channels, image_size, num_classes)


@register_model("vgg_small")
def vgg_small(num_classes: int, in_channels: int, image_size: int, width_multiplier: float = 0.125) -> nn.Module:
    """A narrow VGG: four 3x3 conv-BN-ReLU layers of 64-128-256-512 channels times `width_multiplier`
    (default 0.125: 8-16-32-64), each followed by a 2x2 max pool, then one Linear. On 1x28x28
    inputs at the default width: 27,194 params and 0.81M MACs, an epoch of Fashion-MNIST in a few
    seconds on two CPU cores (docs/converged/PLAN.md).

    Example:
        >>> sum(p.numel() for p in vgg_small(10, 1, 28).parameters())
        27194
    """
    m = check_float("width_multiplier", width_multiplier, maximum=64.0)
    return _checked_vgg(_scaled(VGG_SMALL_CFG, m), in_channels, image_size, num_classes)
