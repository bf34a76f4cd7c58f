"""One dataset split held in memory, and its deterministic, rank-aware batches.

Images stay uint8 (N, C, H, W) until a batch is drawn; each batch is then
(optionally) augmented in uint8 and normalised to float32 with the per-channel
mean/std of the *training* split.

Batching contract (the training loop and the distributed tests rely on it):

* ``batch_size`` is the GLOBAL batch. The sample order is a permutation drawn
  from a ``torch.Generator`` seeded from ``(seed, epoch)`` when ``shuffle``,
  else ``0..N-1``. Global batch ``i`` is the next ``batch_size`` indices of
  that order; rank ``r`` of ``world_size`` K gets
  ``torch.tensor_split(global_indices, K)[r]``. The union over ranks of one
  step is the single-process batch, and every rank yields the same number of
  steps (a rank's chunk may be empty when a global batch has fewer than K
  samples). ``drop_last`` skips the last incomplete global batch.
* Augmentation (random crop with zero padding 4, then horizontal flip with
  p=0.5) draws its random numbers for the whole global batch from a generator
  seeded from ``(seed, epoch, batch index)`` and slices them per rank, so a
  sample's augmentation depends on neither rank nor world size, and a run
  resumed at an epoch boundary sees the same augmentations. Padding is done on
  the uint8 images with pixel value 0 (black) BEFORE normalising, as in the
  usual torchvision ``RandomCrop(32, padding=4)`` + ``Normalize`` recipe.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Iterator, Sequence

import torch

from lorita.errors import LoritaError

logger = logging.getLogger(__name__)

CROP_PADDING = 4
FLIP_PROBABILITY = 0.5


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of ints, stable across runs and platforms.

    Example:
        >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(1, 0)
        True
    """
    digest = hashlib.sha256(repr(tuple(int(p) for p in parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _generator(*parts: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(derive_seed(*parts))
    return gen


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, C, H, W), pixels scaled to [0, 1].

    Computed in float64, chunk by chunk, so large splits need little memory.
    A channel with zero spread gets std 1.0 (normalising then only centres it).

    Example:
        >>> mean, std = channel_stats(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8))
        >>> mean, std
        ((1.0,), (1.0,))
    """
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise LoritaError(
            f"channel_stats needs uint8 images of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    n, c = images.shape[:2]
    if n == 0:
        raise LoritaError("channel_stats needs at least one image; the training split is empty")
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0)  # (b, C, H, W)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    std = var.sqrt()
    if bool((std < 1e-8).any()):
        flat = (std < 1e-8).nonzero().flatten().tolist()
        logger.warning("channel(s) %s have zero spread; using std 1.0 for them", flat)
        std = torch.where(std < 1e-8, torch.ones_like(std), std)
    return tuple(mean.tolist()), tuple(std.tolist())


def augment_uint8(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Crop each image at offset (dy, dx) of its zero-padded copy, then flip where ``flip`` is True.

    ``images`` is uint8 (B, C, H, W); ``dy``, ``dx`` are int64 (B,) in
    ``[0, 2 * CROP_PADDING]``; ``flip`` is bool (B,). Offset ``CROP_PADDING`` with
    no flip returns the image unchanged. Vectorised over the batch.

    Example:
        >>> x = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2)
        >>> four = torch.tensor([CROP_PADDING])
        >>> augment_uint8(x, four, four, torch.tensor([True])).flatten().tolist()
        [1, 0, 3, 2]
    """
    b, c, h, w = images.shape
    p = CROP_PADDING
    padded = torch.nn.functional.pad(images, (p, p, p, p))  # (B, C, H+2p, W+2p), zeros
    rows = dy[:, None] + torch.arange(h)  # (B, H)
    cols = dx[:, None] + torch.arange(w)  # (B, W)
    hwc = padded.permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    batch_idx = torch.arange(b)[:, None, None]  # (B, 1, 1)
    cropped = hwc[batch_idx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    cropped = cropped.permute(0, 3, 1, 2)  # (B, C, H, W)
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped).contiguous()


class Split:
    """One split held in memory: uint8 images (N, C, H, W) and int64 labels (N,).

    ``mean``/``std`` are per channel, for pixels scaled to [0, 1], and come from
    the TRAINING split (shared by train, val and test).

    Example:
        >>> s = Split(torch.zeros(5, 1, 4, 4, dtype=torch.uint8), torch.arange(5), [0.5], [0.25])
        >>> [tuple(x.shape) for x, _ in s.batches(2)]
        [(2, 1, 4, 4), (2, 1, 4, 4), (1, 1, 4, 4)]
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float]):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise LoritaError(f"Split images must be a uint8 tensor (N, C, H, W), got {got}")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise LoritaError(f"Split labels must be a 1-D tensor with {images.shape[0]} entries, got {got}")
        if labels.is_floating_point() or labels.is_complex():
            raise LoritaError(f"Split labels must be integers, got {labels.dtype}")
        channels = images.shape[1]
        mean_t, std_t = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean_t) != channels or len(std_t) != channels:
            raise LoritaError(
                f"mean and std need one value per channel ({channels}), got {len(mean_t)} and {len(std_t)}"
            )
        if any(not s > 0 for s in std_t):
            raise LoritaError(f"std values must be > 0, got {std_t}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64).contiguous()
        self.mean: tuple[float, ...] = mean_t
        self.std: tuple[float, ...] = std_t
        self._mean = torch.tensor(mean_t, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(std_t, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, shape={tuple(self.images.shape[1:])}, mean={self.mean}, std={self.std})"

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 (B, C, H, W) as ``(x / 255 - mean) / std``.

        Example:
            >>> s = Split(torch.zeros(1, 1, 1, 1, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), [0.5], [0.5])
            >>> s.normalize(torch.full((1, 1, 1, 1), 255, dtype=torch.uint8)).item()
            1.0
        """
        x = images_uint8.to(torch.float32).div_(255.0)
        return (x - self._mean) / self._std

    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        """How many steps ``batches`` yields (identical on every rank).

        Example:
            >>> Split(torch.zeros(5, 1, 1, 1, dtype=torch.uint8), torch.arange(5), [0.], [1.]).num_batches(2)
            3
        """
        _check_batch_size(batch_size)
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        augment: bool = False,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this rank's part of each global batch as (x float32 (B, C, H, W), y int64 (B,)).

        See the module docstring for the exact contract. Deterministic given the arguments.

        Example:
            >>> s = Split(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4), [0.], [1.])
            >>> [y.tolist() for _, y in s.batches(4, rank=1, world_size=2)]
            [[2, 3]]
        """
        batches = batch_indices(len(self), batch_size, shuffle=shuffle, seed=seed, epoch=epoch, rank=rank,
                                world_size=world_size, drop_last=drop_last)
        for step, (global_idx, local_idx) in enumerate(batches):
            images = self.images[local_idx]  # (B, C, H, W) uint8
            if augment:
                gen = _generator(seed, epoch, step)
                g = global_idx.shape[0]
                dy = torch.randint(0, 2 * CROP_PADDING + 1, (g,), generator=gen)
                dx = torch.randint(0, 2 * CROP_PADDING + 1, (g,), generator=gen)
                flip = torch.rand(g, generator=gen) < FLIP_PROBABILITY
                pos = torch.tensor_split(torch.arange(g), world_size)[rank]
                images = augment_uint8(images, dy[pos], dx[pos], flip[pos])
            yield self.normalize(images), self.labels[local_idx]


def batch_indices(n: int, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0, rank: int = 0,
                  world_size: int = 1, drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batching contract of the module docstring for ``n`` samples: per step, the global batch's
    indices and this rank's part of them.

    Example:
        >>> [(g.tolist(), r.tolist()) for g, r in batch_indices(5, 2, rank=1, world_size=2)]
        [([0, 1], [1]), ([2, 3], [3]), ([4], [])]
    """
    _check_batch_size(batch_size)
    if not isinstance(world_size, int) or world_size < 1:
        raise LoritaError(f"world_size must be an int >= 1, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise LoritaError(f"rank must be an int in [0, {world_size}), got {rank!r}")
    order = torch.randperm(n, generator=_generator(seed, epoch)) if shuffle else torch.arange(n)
    steps = n // batch_size if drop_last else -(-n // batch_size)
    for step in range(steps):
        global_idx = order[step * batch_size : (step + 1) * batch_size]  # (G,)
        yield global_idx, torch.tensor_split(global_idx, world_size)[rank]  # (G,), (B,)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LoritaError(f"batch_size must be an int >= 1, got {batch_size!r}")
