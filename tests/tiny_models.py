"""A table of tiny models covering the layer shapes the core must handle.

Each entry: (id, builder, example-input shape). Builders are seeded so every call gives
the same weights.
"""

from __future__ import annotations

import torch
from torch import nn


class Nested(nn.Module):
    """Nested containers, BatchNorm, a conv without bias and a non-square kernel."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, (3, 2), stride=(2, 1), padding=(1, 0), bias=False),
                                  nn.BatchNorm2d(6), nn.ReLU())
        self.body = nn.ModuleDict({"conv": nn.Conv2d(6, 5, 3, padding=2, dilation=2), "act": nn.Tanh()})
        self.head = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(5 * 4 * 4, 7), nn.ReLU(), nn.Linear(7, 3)))

    def forward(self, x):
        x = self.stem(x)  # (B, 6, 4, 4)
        x = self.body["act"](self.body["conv"](x))  # (B, 5, 4, 4)
        return self.head(x)


class Shared(nn.Module):
    """One Linear used twice (shared weights)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 5)
        self.mid = nn.Linear(5, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        x = torch.relu(self.inp(x))
        x = torch.relu(self.mid(x))
        x = torch.relu(self.mid(x))  # the same layer again
        return self.out(x)


class PaddingModes(nn.Module):
    """Reflect padding, 'same' padding, stride 2, a 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect")
        self.b = nn.Conv2d(4, 4, 3, padding="same", bias=False)
        self.c = nn.Conv2d(4, 3, 1, stride=2)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x))))).mean(dim=(2, 3))


def mlp():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def mlp_no_bias():
    return nn.Sequential(nn.Linear(6, 9, bias=False), nn.ReLU(), nn.Linear(9, 4, bias=False))


def cnn():
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3),
                         nn.Flatten(), nn.Linear(6 * 2 * 2, 5))


TABLE = [
    ("mlp", mlp, (4, 6)),
    ("mlp_no_bias", mlp_no_bias, (4, 6)),
    ("cnn", cnn, (2, 3, 8, 8)),
    ("nested", Nested, (2, 3, 8, 5)),
    ("shared", Shared, (4, 6)),
    ("padding_modes", PaddingModes, (2, 2, 7, 7)),
]


def build(builder, dtype=torch.float64, seed=0):
    """A seeded instance in eval mode (BatchNorm uses fixed statistics) and the given dtype."""
    torch.manual_seed(seed)
    model = builder().to(dtype).eval()
    # Non-trivial BatchNorm statistics so merged-vs-original comparisons mean something.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def example(shape, dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype)
