"""A text corpus as the training loop and ``evaluate`` see it: batches of context windows.

``LanguageData`` wraps a ``TextDataset`` for one model context and one batch size: its
``train`` split yields ``steps_per_epoch`` batches of random windows per epoch (seeded per
epoch and step, rank-aware: see ``lorita.data.text``), its ``val`` and ``test`` splits the
non-overlapping windows that cover them, so evaluation gives the mean loss per character.
Targets are the inputs shifted by one token: ``(B, T)`` each; the model returns
``(B, T, vocab)`` logits.

Example:
    >>> from lorita.data.text import TextDataset
    >>> text = TextDataset.from_entries("demo", [f"entry number {i}" for i in range(40)], source="memory")
    >>> data = LanguageData(text, context=8, steps_per_epoch=3, batch_size=4)
    >>> [tuple(t.shape) for t in next(data.train.batches(4, epoch=0))], len(data.train)
    ([(4, 8), (4, 8)], 12)
    >>> data.model_inputs, tuple(data.example_input().shape)
    ({'vocab_size': 21}, (1, 8))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch

from lorita.checks import check_int
from lorita.data.text import TextDataset, TextSplit
from lorita.errors import LoritaError


class TrainWindows:
    """``steps`` batches of ``batch_size`` random windows per epoch, with ``Split.batches``' arguments."""

    def __init__(self, split: TextSplit, context: int, steps: int, batch_size: int):
        self.split, self.context, self.steps, self.batch_size = split, context, steps, batch_size

    def __len__(self) -> int:
        return self.steps * self.batch_size  # windows per epoch

    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        """How many steps ``batches`` yields: ``steps`` (as ``Split.num_batches``)."""
        return self.steps

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0, augment: bool = False,
                rank: int = 0, world_size: int = 1, drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if batch_size != self.batch_size:
            raise LoritaError(f"this language data was made for batch size {self.batch_size}, not {batch_size}; "
                              "build LanguageData with the recipe's batch_size")
        yield from self.split.batches(batch_size, self.context, steps=self.steps, seed=seed, epoch=epoch, rank=rank,
                                      world_size=world_size)


class EvalWindows:
    """The non-overlapping windows of a split, in order (``TextSplit.eval_windows``)."""

    def __init__(self, split: TextSplit, context: int, max_windows: int | None = None):
        self.x, self.y = split.eval_windows(context, max_windows)  # (W, T) each

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int, **ignored) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.x), batch_size):
            yield self.x[start:start + batch_size], self.y[start:start + batch_size]


@dataclass
class LanguageData:
    """A ``TextDataset`` cut into windows of ``context`` tokens for one batch size.

    ``steps_per_epoch``: training batches per epoch (default: about one pass over the
    training text). ``max_eval_windows``: cap on the validation/test windows (None: all).
    """

    text: TextDataset
    context: int
    steps_per_epoch: int | None = None
    batch_size: int = 64
    max_eval_windows: int | None = None
    default_augment: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        check_int("context", self.context)
        check_int("batch_size", self.batch_size)
        if self.steps_per_epoch is None:
            self.steps_per_epoch = max(1, len(self.text.train) // (self.batch_size * self.context))
        check_int("steps_per_epoch", self.steps_per_epoch)
        self.train = TrainWindows(self.text.train, self.context, self.steps_per_epoch, self.batch_size)
        self.val = EvalWindows(self.text.val, self.context, self.max_eval_windows)
        self.test = EvalWindows(self.text.test, self.context, self.max_eval_windows)

    @property
    def name(self) -> str:
        return self.text.name

    @property
    def source(self) -> str:
        return self.text.source

    @property
    def model_inputs(self) -> dict:
        """What a language model's builder needs from the data."""
        return {"vocab_size": self.text.vocab_size}

    def example_input(self) -> torch.Tensor:
        """One window of token ids (all zero), batch 1: for counting params and MACs."""
        return torch.zeros(1, self.context, dtype=torch.int64)
