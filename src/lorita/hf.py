"""Hugging Face transformers, one namespace: its ``Conv1D`` treated as a Linear (``lorita.conv1d``) and
``LoritaCallback``, LoRITa inside the ``Trainer`` (``lorita.hf_trainer``, which imports transformers:
loaded on first use, so ``import lorita`` never needs transformers).

Example:
    >>> from lorita.hf import is_conv1d
    >>> is_conv1d(__import__("torch").nn.Linear(2, 2))
    False
"""

from __future__ import annotations

from lorita.conv1d import conv1d_as_linear, conv1d_base, conv1d_from_matrix, is_conv1d
from lorita.errors import LoritaError

__all__ = ["LoritaCallback", "conv1d_as_linear", "conv1d_base", "conv1d_from_matrix", "is_conv1d"]


def __getattr__(name: str):
    if name == "LoritaCallback":
        try:
            from lorita.hf_trainer import LoritaCallback  # imports transformers (the hf extra): only on use
        except ImportError as err:
            # not an AttributeError: ``from lorita.hf import LoritaCallback`` would turn it into a bare ImportError
            raise LoritaError(f"lorita.hf.LoritaCallback needs transformers ({err}): pip install transformers "
                              "(in lorita's clone: pip install -e '.[hf]')") from None
        return LoritaCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
