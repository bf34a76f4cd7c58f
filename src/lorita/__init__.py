"""lorita: low-rank induced training (LoRITa) and structure-preserving compression.

Example:
    >>> import torch, lorita
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> composed = lorita.compose(net, depth=3)       # train this one, with weight decay
    >>> dense = lorita.merge(composed)                 # back to the original architecture
    >>> small = lorita.compress(dense, energy=0.9)     # truncated SVD, thin layer pairs
    >>> tiny = lorita.quantize(small, "int8")          # int8 weights after the cut
    >>> small, how = lorita.cut(dense, lorita.cutspec.Budget(params=0.5))  # or: one typed way to cut
    >>> lorita.train.train, lorita.sweep.sweep          # the training loop and accuracy-vs-size sweeps  # doctest: +ELLIPSIS
    (<function train at ...>, <function sweep at ...>)
"""

__version__ = "0.1.0"

from lorita.attention import SplitAttention, fuse_attention, split_attention
from lorita.batchnorm import recalibrate_batchnorm
from lorita.compose import compose, merge
from lorita.composed import ComposedConv2d, ComposedLinear
from lorita.compress import compress, spectrum
from lorita.errors import LoritaError, LoritaWarning
from lorita.fold import fold_batchnorm
from lorita.latency import keep_faster
from lorita.lowrank import LowRankConv2d, LowRankLinear, truncate
from lorita.profile import Profile, profile
from lorita.quantize import Int8Config, quantize
from lorita.rebalance import rebalance_pairs
from lorita.select import choose_ranks, cut, search_accuracy, select_ranks
from lorita.serialization import load, save
from lorita.svd_cache import SVDCache
from lorita.targets import register_linear_subclass
from lorita.train import TrainConfig

# Subpackages reachable as attributes after ``import lorita`` (their functions keep their module names:
# ``lorita.train.train``, ``lorita.sweep.sweep``, ``lorita.whiten.collect_grams``, ``lorita.runs.train_run``;
# ``lorita.hf.LoritaCallback`` imports transformers only when it is first used).
import lorita.hf  # noqa: E402,F401
import lorita.sweep  # noqa: E402,F401
import lorita.train  # noqa: E402,F401
import lorita.whiten  # noqa: E402,F401

__all__ = [
    "ComposedConv2d", "ComposedLinear", "Int8Config", "LoritaError", "LoritaWarning", "LowRankConv2d", "LowRankLinear",
    "Profile", "SVDCache", "SplitAttention", "TrainConfig", "__version__", "choose_ranks", "compose", "compress", "cut",
    "fold_batchnorm", "fuse_attention", "keep_faster", "load", "merge", "profile", "quantize", "rebalance_pairs",
    "recalibrate_batchnorm", "register_linear_subclass", "save", "search_accuracy", "select_ranks", "spectrum",
    "split_attention", "truncate",
]
