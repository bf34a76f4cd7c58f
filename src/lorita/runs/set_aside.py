"""Keep what a killed ``lorita experiment`` had finished, for ``--resume`` to take up.

A killed experiment leaves its staging folder ``OUT.partial``: the trainings it finished and maybe one stopped
part-way. :func:`set_aside` keeps it as ``OUT.resume`` after checking that it is a lorita run folder holding only
lorita's files and that no command is writing it; the next run names ``OUT.resume`` first among the folders it
reuses (``lorita.runs.reuse``), so it trains only what was not finished and continues the training it was in.
After a second kill the newer staging folder replaces the older ``OUT.resume``, taking the older one's trainings it
had not copied yet first. :func:`drop_set_aside` removes ``OUT.resume`` once the run is done.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lorita.errors import LoritaError
from lorita.runs.folder import foreign_entries, is_marked, remove_tree, staging_path
from lorita.runs.lock import OutputLock

log = logging.getLogger(__name__)


def resume_path(out: str | Path) -> Path:
    """Where a killed run's staging folder is kept for the next attempt to reuse: ``<out>.resume``.

    Example:
        >>> resume_path("runs/exp").name
        'exp.resume'
    """
    out = Path(out)
    return out.with_name(out.name + ".resume")


def _check_lorita_folder(folder: Path) -> None:
    if folder.is_symlink() or not folder.is_dir() or not is_marked(folder):
        raise LoritaError(f"{folder} is not a lorita run folder; look at it and remove it (lorita never deletes it)")
    foreign = foreign_entries(folder)
    if foreign:
        raise LoritaError(f"{folder} holds what lorita did not write ({', '.join(foreign[:3])}); look at it and "
                          "remove it (lorita never deletes it)")


def _carry_over(older: Path, newer: Path) -> None:
    """Move into ``newer`` each training folder of ``older`` that ``newer`` lacks (a second kill can come before the
    newer attempt copied them all); both checked lorita's."""
    try:
        for entry in sorted(older.iterdir()):
            if entry.is_dir() and not entry.is_symlink() and not (newer / entry.name).exists():
                entry.rename(newer / entry.name)
    except OSError as error:
        raise LoritaError(f"could not move {older}'s trainings into {newer}: {error}") from None


def set_aside(out: str | Path) -> Path | None:
    """Keep the staging folder a killed run of ``out`` left as ``<out>.resume`` (replacing an older one, its
    trainings the newer lacks moved into the newer first); return ``<out>.resume`` when there is one to reuse.
    LoritaError, nothing changed, when either folder holds what lorita did not write or a command is writing
    ``out`` now.

    Example:
        >>> import tempfile
        >>> from lorita.runs.folder import mark, write_json
        >>> out = Path(tempfile.mkdtemp()) / "exp"
        >>> write_json(out.with_name("exp.partial") / "depth1" / "config.json", mark({"command": "train"}))
        >>> write_json(out.with_name("exp.partial") / "config.json", mark({"command": "experiment"}))
        >>> set_aside(out).name, sorted(p.name for p in resume_path(out).iterdir())
        ('exp.resume', ['config.json', 'depth1'])
    """
    out = Path(out)
    partial, resume = staging_path(out), resume_path(out)
    if not partial.exists() and not partial.is_symlink():
        return resume if resume.is_dir() and not resume.is_symlink() else None
    lock = OutputLock(out)
    lock.acquire()  # refuses when a command is writing this output now
    try:
        _check_lorita_folder(partial)
        if resume.exists() or resume.is_symlink():
            _check_lorita_folder(resume)
            _carry_over(resume, partial)
            left = remove_tree(resume)
            if left:
                raise LoritaError(f"{resume}: could not remove {', '.join(left[:3])}; look at it and remove it")
        partial.rename(resume)
        log.info("%s: kept as %s, to take up its finished trainings", partial, resume)
        return resume
    finally:
        lock.release()


def drop_set_aside(out: str | Path) -> None:
    """Remove ``<out>.resume`` once the run of ``out`` is done (it holds nothing the finished run lacks); one that
    holds what lorita did not write, or cannot be removed whole, is left and logged.

    Example:
        >>> import tempfile
        >>> drop_set_aside(Path(tempfile.mkdtemp()) / "exp")  # nothing there: nothing to do
    """
    resume = resume_path(out)
    if not resume.exists() and not resume.is_symlink():
        return
    try:
        _check_lorita_folder(resume)
    except LoritaError as error:
        log.warning("%s left: %s", resume, error)
        return
    left = remove_tree(resume)
    if left:
        log.warning("%s: could not remove %s", resume, ", ".join(left[:3]))
