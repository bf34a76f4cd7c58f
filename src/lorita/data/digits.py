"""scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as uint8 tensors.

The data ships inside scikit-learn, so nothing is downloaded. Pixel values
0..16 are scaled to uint8 0..255 (``round(v * 255 / 16)``). The dataset has
no test split, so we carve a FIXED one: a stratified 20% of each class,
chosen by a permutation seeded with ``DIGITS_TEST_SEED``, independent of the
seed used for the validation split, so the test set is the same in every run
(359 test images, 1,438 for training and validation).
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 20240101


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (keep, holdout): ``round(fraction * n_c)`` of each class c go to holdout, seeded.

    Both index tensors are sorted.

    Example:
        >>> keep, held = stratified_holdout(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1]), 0.2, seed=0)
        >>> len(keep), len(held)
        (7, 2)
    """
    gen = torch.Generator()
    gen.manual_seed(seed)
    held = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()  # (n_c,)
        take = int(round(fraction * idx.numel()))
        held.append(idx[torch.randperm(idx.numel(), generator=gen)[:take]])
    held_idx = torch.sort(torch.cat(held)).values if held else torch.empty(0, dtype=torch.long)
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[held_idx] = False
    return mask.nonzero().flatten(), held_idx


def read_digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn digits as ((train_x, train_y), (test_x, test_y)), images uint8 (N, 1, 8, 8).

    Raises ImportError when scikit-learn is not installed (``pip install scikit-learn``).

    Example:
        >>> (train_x, train_y), (test_x, test_y) = read_digits()
        >>> tuple(train_x.shape), tuple(test_x.shape)
        ((1438, 1, 8, 8), (359, 1, 8, 8))
    """
    from sklearn.datasets import load_digits  # optional dependency, imported only when needed

    bunch = load_digits()
    values = torch.as_tensor(bunch.images, dtype=torch.float64)  # (N, 8, 8), 0..16
    images = (values * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)  # (N,)
    keep, held = stratified_holdout(labels, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED)
    logger.debug("digits: %d train+val, %d test", keep.numel(), held.numel())
    return (images[keep], labels[keep]), (images[held], labels[held])
