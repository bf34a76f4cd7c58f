"""Your own data for ``lorita.train.train``: a pair of PyTorch Datasets or DataLoaders of (input, target) items.

``train(model, (train_set, val_set), config)`` takes, besides lorita's dataset objects (anything
with ``.train`` and ``.val`` splits), a pair of:

- ``torch.utils.data.Dataset`` s (map-style: ``len`` and ``ds[i]``, e.g. a ``TensorDataset``)
  whose items are ``(input, target)``: lorita batches them as it batches its own data
  (``config.batch_size``, an order seeded by ``(seed, epoch)``, split over the ranks under
  torchrun), collated by ``torch.utils.data.default_collate``;
- ``torch.utils.data.DataLoader`` s with a fixed ``batch_size``: their batches are used as
  they come (their own order, workers and collate), and ``config.batch_size`` becomes the
  train loader's. Single process only: under torchrun pass Datasets, which lorita shards.

Targets are class indices (``int64``, shape ``(B,)``), or ``(B, T)`` token ids for a language
model; a target of ``-100`` (padding, a prompt's tokens, as transformers marks them) is skipped: the
loss is the mean over the scored targets of each global batch, and accuracy counts only those.
Inputs are given to the model as they are: normalise them in the Dataset. lorita's
augmentation applies only to its own image datasets.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from lorita.data.split import batch_indices
from lorita.errors import LoritaError

logger = logging.getLogger(__name__)


def _check_item(item: Any, what: str) -> None:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise LoritaError(f"{what} must yield (input, target) pairs, got {type(item).__name__}"
                          f"{f' of length {len(item)}' if isinstance(item, (tuple, list)) else ''}; wrap your "
                          "tensors as torch.utils.data.TensorDataset(inputs, targets)")


class DatasetSplit:
    """A map-style Dataset of ``(input, target)`` items, batched by lorita's contract (``lorita.data.split``).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> split = DatasetSplit(TensorDataset(torch.randn(5, 3), torch.arange(5)), "train")
        >>> [tuple(x.shape) for x, _ in split.batches(2)]
        [(2, 3), (2, 3), (1, 3)]
    """

    def __init__(self, dataset: Dataset, what: str):
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise LoritaError(f"the {what} Dataset has no len(): pass a map-style Dataset (len and ds[i]), or "
                              "a DataLoader over it") from None
        if n > 0:
            _check_item(dataset[0], f"the {what} Dataset")
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                augment: bool = False, rank: int = 0, world_size: int = 1,
                drop_last: bool = False) -> Iterator[tuple[Any, torch.Tensor]]:
        """This rank's part of each global batch, collated; ``augment`` must be False."""
        if augment:
            raise LoritaError("augment applies to lorita's image datasets; augment your own data in its Dataset")
        for _, local in batch_indices(self.n, batch_size, shuffle=shuffle, seed=seed, epoch=epoch, rank=rank,
                                      world_size=world_size, drop_last=drop_last):
            yield tuple(default_collate([self.dataset[i] for i in local.tolist()]))  # type: ignore[misc]


class LoaderSplit:
    """A DataLoader's batches as they come; ``len`` counts the samples its sampler draws.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> loader = DataLoader(TensorDataset(torch.randn(5, 3), torch.arange(5)), batch_size=4)
        >>> split = LoaderSplit(loader, "val")
        >>> len(split), [tuple(y.shape) for _, y in split.batches(1000)]
        (5, [(4,), (1,)])
    """

    def __init__(self, loader: DataLoader, what: str):
        if loader.batch_size is None:
            raise LoritaError(f"the {what} DataLoader has no fixed batch_size (a batch_sampler or batch_size=None); "
                              "give it batch_size=..., or pass the Dataset and set TrainConfig(batch_size=...)")
        try:
            self.n = len(loader.sampler)  # type: ignore[arg-type]
        except TypeError:
            raise LoritaError(f"the {what} DataLoader's sampler has no len(); pass a map-style Dataset") from None
        self.loader, self.what = loader, what

    def __len__(self) -> int:
        return self.n

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                augment: bool = False, rank: int = 0, world_size: int = 1,
                drop_last: bool = False) -> Iterator[tuple[Any, torch.Tensor]]:
        """The loader's batches (its own size and order); the loop's last-batch rule still applies."""
        if world_size > 1:
            raise LoritaError("under torchrun pass Datasets, not DataLoaders: lorita splits each batch over the ranks")
        if augment:
            raise LoritaError("augment applies to lorita's image datasets; augment your own data in its Dataset")
        full = self.n // self.loader.batch_size
        for step, item in enumerate(self.loader):
            if drop_last and step >= full:
                return  # a last batch too small for BatchNorm
            _check_item(item, f"the {self.what} DataLoader")
            yield tuple(item)


def is_pair(data: Any) -> bool:
    """Whether ``data`` is a (train, val) pair of Datasets or DataLoaders.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
        >>> is_pair((ds, ds)), is_pair(ds)
        (True, False)
    """
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, (Dataset, DataLoader)) for d in data)


def user_splits(data: Any, config) -> tuple[Any, Any, Any]:
    """``(train split, val split, config)`` for a pair of Datasets or DataLoaders; a train DataLoader's
    batch size replaces ``config.batch_size`` (the loop counts global batches by it).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from lorita.train.config import TrainConfig
        >>> ds = TensorDataset(torch.randn(6, 3), torch.arange(6) % 2)
        >>> tr, va, cfg = user_splits((DataLoader(ds, batch_size=4), ds), TrainConfig())
        >>> len(tr), len(va), cfg.batch_size
        (6, 6, 4)
    """
    splits = [LoaderSplit(d, what) if isinstance(d, DataLoader) else DatasetSplit(d, what)
              for d, what in zip(data, ("train", "val"))]
    if isinstance(data[0], DataLoader) and data[0].batch_size != config.batch_size:
        logger.info("training batches come from the DataLoader: batch_size %d (config said %d)",
                    data[0].batch_size, config.batch_size)
        config = dataclasses.replace(config, batch_size=data[0].batch_size)
    if config.augment:
        raise LoritaError("augment=True applies to lorita's image datasets; augment your own data in its Dataset")
    return splits[0], splits[1], config
