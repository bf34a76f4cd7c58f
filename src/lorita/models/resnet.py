"""CIFAR ResNets (He et al. 2016, section 4.2): 3 stages of 16/32/64 channels, option-A shortcuts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lorita.models.registry import register_model


class PadShortcut(nn.Module):
    """Parameter-free "option A" shortcut: subsample by `stride`, zero-pad channels to `out_channels`.

    Example:
        >>> PadShortcut(16, 32, stride=2)(torch.randn(2, 16, 7, 7)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, ceil(H/s), ceil(W/s)), same as a stride-s 3x3 pad-1 conv
        extra = self.out_channels - self.in_channels
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))  # (B, C_out, H', W')

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU.

    Example:
        >>> BasicBlock(16, 32, stride=2)(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv, three stages of `blocks_per_stage` BasicBlocks (16, 32, 64 channels), GAP, Linear.

    Depth is 6 * blocks_per_stage + 2 (3 -> ResNet20, 9 -> ResNet56).

    Example:
        >>> net = CifarResNet(blocks_per_stage=1, in_channels=3, num_classes=10)
        >>> net(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, blocks_per_stage: int, in_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        c = 16
        stages = []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(c, width, stride if i == 0 else 1))
                c = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # He init, as in the original CIFAR ResNets
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64, H/4, W/4)
        x = self.flatten(self.pool(x))  # (B, 64)
        return self.fc(x)  # (B, num_classes)


@register_model("resnet20")
def resnet20(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet20 for CIFAR (about 0.27M parameters).

    Example:
        >>> sum(p.numel() for p in resnet20(10, 3, 32).parameters())
        269722
    """
    return CifarResNet(3, in_channels, num_classes)


@register_model("resnet56")
def resnet56(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet56 for CIFAR (about 0.85M parameters).

    Example:
        >>> sum(p.numel() for p in resnet56(10, 3, 32).parameters())
        853018
    """
    return CifarResNet(9, in_channels, num_classes)
