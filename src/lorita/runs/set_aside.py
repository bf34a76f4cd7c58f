"""Keep what a killed ``lorita experiment`` had finished, for ``--resume`` to take up.

A killed experiment leaves its staging folder ``OUT.partial``: the trainings it finished and maybe one stopped
part-way. :func:`set_aside` keeps it as ``OUT.resume`` after checking that it is a lorita run folder holding only
lorita's files and that no command is writing it; the next run names ``OUT.resume`` first among the folders it
reuses (``lorita.runs.reuse``), so it trains only what was not finished and continues the training it was in.
After a second kill the newer staging folder replaces the older ``OUT.resume``, taking first each training the
older got further with (one it had not copied yet, or copied only in part), and keeping under another name
(``depth1-earlier``) each training the older ran with another recipe under the same name. :func:`drop_set_aside` removes
``OUT.resume`` once the run is done and holds every training in it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lorita import jsonio
from lorita.errors import LoritaError
from lorita.runs.folder import command_of, foreign_entries, is_marked, remove_tree, staging_path
from lorita.runs.lock import OutputLock
from lorita.runs.measured_cuts import MEASURED_CUTS, carry_record
from lorita.runs.reuse import RUN_FILES, comparable_config

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


def _check_experiment_folder(folder: Path) -> None:
    """Refuse a folder that is not a killed experiment's, lorita's only (a killed ``lorita train``'s is continued
    by ``lorita train --resume``, never taken apart here)."""
    _check_lorita_folder(folder)
    command = command_of(folder)
    if command != "experiment":
        left_by = f"a 'lorita {command}'" if isinstance(command, str) and command.isidentifier() else "another command"
        raise LoritaError(f"{folder} was left by {left_by}, not by 'lorita experiment'; lorita never takes it apart: "
                          f"continue it with that command's --resume, or remove it yourself")


def _config(folder: Path) -> dict | None:
    """A marked folder's config.json, as reuse compares it (``lorita.runs.reuse``); None where it does not read."""
    try:
        data = jsonio.read(folder / "config.json", allow_nan=True)
    except LoritaError:
        return None
    return comparable_config(data) if isinstance(data, dict) else None




def _progress(training: Path) -> tuple[int, int]:
    """How far a training folder got: (finished, its metrics.csv rows); a half-copied one ranks low."""
    finished = all((training / name).is_file() for name in RUN_FILES)
    try:
        rows = len((training / "metrics.csv").read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError):
        rows = 0
    return int(finished), rows


def _carry_over(older: Path, newer: Path) -> None:
    """Move into ``newer`` what ``older`` got further with (a second kill can come before the newer attempt copied
    every training, or while it copied one): the cuts it measured (``lorita.runs.measured_cuts.carry_record``);
    each folder ``newer`` lacks; a seed's folder of a run of several seeds
    walked into; a training of the same name and config where ``older``'s is finished and ``newer``'s is not, or
    ``older``'s has more epochs (trainings are copied whole or not at all: ``lorita.runs.reuse``); a training of the
    same name but another config (the attempts ran different recipes), under a free name (``depth1-earlier``), where
    a run of its config that reuses ``OUT.resume`` finds it if it finished (reuse looks under every name for a
    finished training; one stopped part-way is continued only under its own name). Both are checked lorita's."""
    try:
        carry_record(older / MEASURED_CUTS, newer / MEASURED_CUTS)  # the cuts either attempt measured
        for entry in sorted(older.iterdir()):
            if not entry.is_dir() or entry.is_symlink() or entry.name.startswith("."):
                continue  # a dot name: a copy a kill cut short (lorita.runs.reuse), never taken
            there = newer / entry.name
            if not there.exists():
                entry.rename(there)
            elif command_of(entry) == "experiment-seed" and command_of(there) == "experiment-seed":
                _carry_over(entry, there)
            elif command_of(entry) == "train" and _config(entry) == _config(there):
                if _progress(entry) > _progress(there):
                    aside = there.with_name(f".{there.name}.superseded")
                    there.rename(aside)
                    entry.rename(there)
                    if remove_tree(aside, only_lorita=True):  # checked with the whole staging folder
                        log.warning("%s: left for what lorita did not write in it; look at it and remove it "
                                    "yourself", aside)
            elif command_of(entry) == "train":  # the attempts' recipes differed: kept, for a resume of its config
                entry.rename(_free_name(newer, f"{entry.name}-earlier"))
    except OSError as error:
        raise LoritaError(f"could not move {older}'s trainings into {newer}: {error}") from None


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/name-2``, ``-3``, ... the first that is not there.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "depth1-earlier").mkdir(); _free_name(d, "depth1-earlier").name
        'depth1-earlier-2'
    """
    path, n = folder / name, 1
    while path.exists() or path.is_symlink():
        n += 1
        path = folder / f"{name}-{n}"
    return path


def trainings_in(folder: Path) -> list[Path]:
    """The training folders in an experiment folder, its seeds' folders included.

    Example:
        >>> import tempfile
        >>> from lorita.runs.folder import mark, write_json
        >>> d = Path(tempfile.mkdtemp()); write_json(d / "seed0" / "depth1" / "config.json", mark({"command": "train"}))
        >>> write_json(d / "seed0" / "config.json", mark({"command": "experiment-seed"}))
        >>> [p.name for p in trainings_in(d)]
        ['depth1']"""
    found = []
    for entry in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and p.name[0] != "."):
        command = command_of(entry)
        if command == "train":
            found.append(entry)
        elif command == "experiment-seed":
            found += trainings_in(entry)
    return found


def set_aside(out: str | Path) -> Path | None:
    """Keep the staging folder a killed run of ``out`` left as ``<out>.resume`` (replacing an older one, its
    trainings the newer lacks moved into the newer first); return ``<out>.resume`` when there is one to reuse.
    LoritaError, nothing deleted, when either folder holds what lorita did not write or a command is writing
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
        _check_experiment_folder(partial)
        if resume.exists() or resume.is_symlink():
            _check_experiment_folder(resume)
            _carry_over(resume, partial)
            left = remove_tree(resume, only_lorita=True)
            if left:
                raise LoritaError(f"{resume}: left {', '.join(left[:3])}, which lorita did not write (or on another "
                                  "file system); look at it and remove it yourself")
        partial.rename(resume)
        log.info("%s: kept as %s, to take up its finished trainings", partial, resume)
        return resume
    finally:
        lock.release()


def drop_set_aside(out: str | Path) -> None:
    """Remove ``<out>.resume`` once the run of ``out`` is done, when every training in it has one of the same config
    in ``out`` (what the finished run took up; a training the run did not need, say of a seed it did not run, is
    not thrown away). Left, with a warning, when it holds what lorita did not write, a training ``out`` lacks, or a
    command holds ``out``'s lock.

    Example:
        >>> import tempfile
        >>> drop_set_aside(Path(tempfile.mkdtemp()) / "exp")  # nothing there: nothing to do
    """
    out, resume = Path(out), resume_path(out)
    if not resume.exists() and not resume.is_symlink():
        return
    lock = OutputLock(out)
    try:
        lock.acquire()
    except LoritaError as error:
        log.warning("%s left: %s", resume, error)
        return
    try:
        _check_lorita_folder(resume)
        kept = {json.dumps(_config(t), sort_keys=True) for t in trainings_in(out)} if out.is_dir() else set()
        unused = [t for t in trainings_in(resume) if json.dumps(_config(t), sort_keys=True) not in kept]
        if unused:
            raise LoritaError(f"it holds trainings {out} does not ({', '.join(str(t) for t in unused[:3])}): take "
                              f"them up with an experiment of their config that names {resume} in its reuse list "
                              "(--set 'reuse=[...]'), or remove it yourself")
        left = remove_tree(resume, only_lorita=True)
        if left:
            log.warning("%s: left %s, which lorita did not write (or on another file system)", resume,
                        ", ".join(left[:3]))
    except LoritaError as error:
        log.warning("%s left: %s", resume, error)
    except OSError as error:  # the run is done: what could not be removed is said, the command does not fail
        log.warning("%s: removing it stopped (%s); remove it yourself", resume, error.strerror or error)
    finally:
        lock.release()
