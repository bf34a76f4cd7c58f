"""Datasets held in memory as uint8 tensors, with deterministic rank-aware batches.

Nothing is downloaded: Fashion-MNIST comes from the Debian package folder or
``data_dir``, MNIST and CIFAR from ``data_dir``, digits from scikit-learn.

Example:
    >>> from lorita.data import load_dataset
    >>> ds = load_dataset("digits")
    >>> x, y = next(ds.train.batches(32, shuffle=True, seed=0))
    >>> tuple(x.shape), x.dtype, y.dtype
    ((32, 1, 8, 8), torch.float32, torch.int64)
"""

from lorita.data.datasets import DataNotFoundError, ImageDataset, dataset_status, list_datasets, load_dataset
from lorita.data.split import Split

__all__ = ["load_dataset", "list_datasets", "dataset_status", "ImageDataset", "Split", "DataNotFoundError"]
