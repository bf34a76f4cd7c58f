"""lorita: low-rank induced training (LoRITa) and structure-preserving compression.

Example:
    >>> import torch, lorita
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> composed = lorita.compose(net, depth=3)       # train this one, with weight decay
    >>> dense = lorita.merge(composed)                 # back to the original architecture
    >>> small = lorita.compress(dense, energy=0.9)     # truncated SVD, thin layer pairs
"""

__version__ = "0.1.0"

from lorita.compose import compose, merge
from lorita.composed import ComposedConv2d, ComposedLinear
from lorita.compress import compress, spectrum
from lorita.errors import LoritaError
from lorita.latency import keep_faster
from lorita.lowrank import LowRankConv2d, LowRankLinear, truncate
from lorita.profile import Profile, profile
from lorita.select import search_accuracy, select_ranks
from lorita.serialization import load, save

__all__ = [
    "ComposedConv2d", "ComposedLinear", "LoritaError", "LowRankConv2d", "LowRankLinear", "Profile",
    "__version__", "compose", "compress", "keep_faster", "load", "merge", "profile", "save", "search_accuracy", "select_ranks",
    "spectrum", "truncate",
]
