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


class _MissingTransformers(LoritaError, AttributeError):
    """``lorita.hf.LoritaCallback`` without transformers installed: an AttributeError too, so ``hasattr`` and
    ``getattr(lorita.hf, "LoritaCallback", None)`` say it is not there instead of raising."""


def __getattr__(name: str):
    if name == "LoritaCallback":
        try:
            from lorita.hf_trainer import LoritaCallback  # imports transformers (the hf extra): only on use
        except ImportError as err:
            raise _MissingTransformers(f"lorita.hf.LoritaCallback needs transformers ({err}): pip install "
                                       "transformers (in lorita's clone: pip install -e '.[hf]')") from None
        return LoritaCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
