"""Progress bars, opt-in: one ``tqdm`` bar where a caller asks for it, a clear error when tqdm is missing."""

from __future__ import annotations

import contextlib
from typing import Iterator

from lorita.errors import LoritaError


def progress_bar(enabled: bool, *, desc: str, unit: str, total: int | None = None, initial: int = 0,
                 leave: bool = True):
    """A ``tqdm.auto`` bar, or None when ``enabled`` is false (library code never shows one unasked).

    Example:
        >>> progress_bar(False, desc="train", unit="epoch") is None
        True
    """
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError as err:
        raise LoritaError("progress bars need tqdm: pip install tqdm (in lorita's clone: pip install -e '.[cli]'), "
                          "or turn progress off") from err
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave)


@contextlib.contextmanager
def progress(enabled: bool, *, desc: str, unit: str, total: int | None = None, initial: int = 0,
             leave: bool = True) -> Iterator:
    """``progress_bar`` as a context manager that closes the bar on exit.

    Example:
        >>> with progress(False, desc="sweep", unit="cut") as bar:
        ...     bar is None
        True
    """
    bar = progress_bar(enabled, desc=desc, unit=unit, total=total, initial=initial, leave=leave)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()
