"""Small Vision Transformer (the paper's CIFAR10 ViT): pre-norm blocks, sin-cos positions, mean pooling.

Attention is built only from `nn.Linear` (one stacked `qkv`, one `proj`) so that
every projection can be composed and merged like any other Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lorita.errors import LoritaError
from lorita.models.registry import MAX_GRID, check_elements, check_float, check_int, register_model


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding for a `grid x grid` patch grid, shape (grid*grid, dim).

    A quarter of the channels each hold sin(y), cos(y), sin(x), cos(x) at
    geometric frequencies 1 / 10000^(i / (dim/4)).

    Example:
        >>> sincos_2d(7, 16).shape
        torch.Size([49, 16])
    """
    if dim % 4:
        raise LoritaError(f"ViT dim must be divisible by 4 for the 2-D sin-cos position embedding, got {dim}")
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")  # (g, g) each
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)
    y = y.reshape(-1, 1).double() * omega  # (g*g, dim/4)
    x = x.reshape(-1, 1).double() * omega  # (g*g, dim/4)
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1).float()  # (g*g, dim)


class Attention(nn.Module):
    """Multi-head self-attention from a stacked `qkv` Linear and an output `proj` Linear.

    Example:
        >>> Attention(dim=16, heads=4)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, C // self.heads)  # (B, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, hd)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, hd)
        out = out.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(out)


class MLP(nn.Module):
    """Linear -> GELU -> Linear.

    Example:
        >>> MLP(16, 32)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    Example:
        >>> Block(16, 4, 32)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding conv, fixed sin-cos positions, `depth` blocks, LayerNorm, mean pool, `head`.

    The position embedding is a non-persistent buffer (`pos_embed`): it is
    recomputed from the config, so it is not in the state_dict.

    Example:
        >>> net = ViT(image_size=8, in_channels=3, num_classes=10, patch_size=4, dim=16, depth=1, heads=2)
        >>> net(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        num_classes: int,
        patch_size: int = 4,
        dim: int = 128,
        depth: int = 6,
        heads: int = 4,
        mlp_ratio: float = 2.0,
    ):
        super().__init__()
        if image_size % patch_size:
            raise LoritaError(
                f"ViT image_size {image_size} is not divisible by patch_size {patch_size}; "
                f"pick a patch_size that divides it (e.g. 4 or 7 for 28, 4 or 8 for 32)"
            )
        if dim % heads:
            raise LoritaError(f"ViT dim {dim} is not divisible by heads {heads}; pick heads that divides dim")
        grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.register_buffer("pos_embed", sincos_2d(grid, dim).unsqueeze(0), persistent=False)  # (1, T, dim)
        hidden = max(1, round(dim * mlp_ratio))
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, dim, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, T, dim), T = g*g
        x = x + self.pos_embed.to(x.dtype)
        x = self.norm(self.blocks(x))  # (B, T, dim)
        return self.head(x.mean(dim=1))  # (B, num_classes)


@register_model("vit", exclude=("patch_embed", "head"), limits={"depth": 1024})
def vit(
    num_classes: int,
    in_channels: int,
    image_size: int,
    patch_size: int = 4,
    dim: int = 128,
    depth: int = 6,
    heads: int = 4,
    mlp_ratio: float = 2.0,
) -> nn.Module:
    """Small ViT; `image_size` must be divisible by `patch_size`.

    Example:
        >>> vit(10, 1, 28, dim=32, depth=1).pos_embed.shape
        torch.Size([1, 49, 32])
    """
    check_int("patch_size", patch_size)
    check_int("dim", dim)
    check_int("depth", depth, minimum=0, maximum=1024)
    check_int("heads", heads)
    mlp_ratio = check_float("mlp_ratio", mlp_ratio)
    grid = image_size // patch_size
    if grid > MAX_GRID:
        raise LoritaError(f"ViT image_size {image_size} / patch_size {patch_size} gives {grid} patches a side, more "
                          f"than {MAX_GRID}; use larger patches")
    check_elements("the ViT position table (patches x dim)", grid * grid, dim)
    check_elements("the ViT patch embedding", dim, in_channels, patch_size, patch_size)
    check_elements("a ViT qkv Linear", 3 * dim, dim)
    check_elements("a ViT MLP Linear", max(1, round(dim * mlp_ratio)), dim)
    check_elements("the ViT head", num_classes, dim)
    return ViT(image_size, in_channels, num_classes, patch_size, dim, depth, heads, mlp_ratio)
