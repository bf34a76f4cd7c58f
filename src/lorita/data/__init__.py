"""Datasets held in memory as uint8 tensors, with deterministic rank-aware batches.

Example:
    >>> import torch
    >>> from lorita.data import Split
    >>> s = Split(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(4), [0.5], [0.5])
    >>> len(list(s.batches(2)))
    2
"""

from lorita.data.split import Split

__all__ = ["Split"]
