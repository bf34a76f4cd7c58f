"""Where the run a compress run was cut from is: its config.json's ``source``, absolute (as ``lorita compress``
records it) or relative to the cut folder's parent (as ``lorita experiment`` records its cuts' sources). The one
rule every reader follows (``lorita.runs.config.train_config_of``, ``lorita report``'s grouping)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def cut_source(cut: str | os.PathLike, source: str, *, warn: bool = True) -> Path:
    """The folder compress run ``cut`` names as its ``source``: an absolute one as it is; a relative one beside
    ``cut``'s own folder (``cut`` taken through any link, ``.`` and ``..`` included). A run written before, whose
    relative ``source`` was typed from some folder, is read from the current folder when it is not beside ``cut``
    (named in a warning unless ``warn`` is false).

    Example:
        >>> cut_source("/runs/exp/seed0/depth2-cut", "depth2")
        PosixPath('/runs/exp/seed0/depth2')
    """
    path = Path(source)
    if path.is_absolute():
        return path
    beside = Path(os.path.realpath(cut)).parent / path
    if beside.exists() or not path.exists():
        return beside
    if warn:
        log.warning("%s records its source as a relative path (%r) that is not beside it, read from the current "
                    "folder: %s. Run it from the folder it was compressed in if that is not the run it was cut from",
                    cut, source, os.path.abspath(path))
    return path
