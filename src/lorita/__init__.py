"""lorita: low-rank induced training (LoRITa) and structure-preserving compression.

Example:
    >>> import torch, lorita
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> composed = lorita.compose(net, depth=3)       # train this one
    >>> dense = lorita.merge(composed)                 # back to the original architecture
    >>> small = lorita.compress(dense, energy=0.9)     # truncated SVD, thin layer pairs
"""

__version__ = "0.1.0"

from lorita.errors import LoritaError

__all__ = ["LoritaError", "__version__"]
