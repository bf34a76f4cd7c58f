"""Fully connected network (the paper's MNIST model): Linear -> BatchNorm1d -> ReLU blocks."""

from __future__ import annotations

import torch
from torch import nn

from lorita.models.registry import check_elements, check_int, register_model


class FCN(nn.Module):
    """Flatten, `hidden_layers` blocks of Linear -> BatchNorm1d -> ReLU, then a Linear head.

    Example:
        >>> net = FCN(in_features=784, num_classes=10, width=64, hidden_layers=2)
        >>> net(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_features: int, num_classes: int, width: int = 512, hidden_layers: int = 3):
        super().__init__()
        blocks = []
        d = in_features
        for _ in range(hidden_layers):
            blocks.append(nn.Sequential(nn.Linear(d, width), nn.BatchNorm1d(width), nn.ReLU()))
            d = width
        self.flatten = nn.Flatten()
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)  # (B, C*H*W)
        x = self.blocks(x)  # (B, width)
        return self.head(x)  # (B, num_classes)


@register_model("fcn", limits={"hidden_layers": 1024})
def fcn(num_classes: int, in_channels: int, image_size: int, width: int = 512, hidden_layers: int = 3) -> nn.Module:
    """FCN for `in_channels x image_size x image_size` inputs (default 784-512-512-512-10).

    Example:
        >>> fcn(10, 1, 28).head
        Linear(in_features=512, out_features=10, bias=True)
    """
    check_int("width", width)
    check_int("hidden_layers", hidden_layers, minimum=0, maximum=1024)
    features = in_channels * image_size * image_size
    check_elements("the FCN's first Linear", width if hidden_layers else num_classes, features)
    if hidden_layers:
        check_elements("an FCN hidden Linear", width, width)
        check_elements("the FCN head", num_classes, width)
    return FCN(features, num_classes, width, hidden_layers)
