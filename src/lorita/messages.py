"""How a message names many things: the first few and how many more (one rule for every message that lists)."""

from __future__ import annotations

from typing import Iterable


def listed(entries: Iterable[str], most: int = 5) -> str:
    """The first ``most`` of ``entries``, comma-separated, and how many more.

    Example:
        >>> listed(["a", "b"]), listed([str(i) for i in range(8)])
        ('a, b', '0, 1, 2, 3, 4 and 3 more')
    """
    entries = list(entries)
    return ", ".join(entries[:most]) + (f" and {len(entries) - most} more" if len(entries) > most else "")
