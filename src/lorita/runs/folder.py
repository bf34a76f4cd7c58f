"""Run folders on disk: how lorita marks them, and how a command writes one without losing data.

Every folder a lorita command writes (train, compress, demo, experiment, report) holds a
``config.json`` whose ``format`` is ``"lorita.run"``: that mark, and nothing else, makes a
folder lorita's. A command writes its output into a staging folder beside the target,
``NAME.partial``, and renames it to ``NAME`` only when everything is written:

- ``--out`` naming an existing, non-empty folder is refused unless ``--overwrite``; with it,
  the folder must carry the mark and hold only what lorita writes (its files, plots and
  nested run folders, no symbolic links), or nothing is touched. The old folder is replaced
  only once the new one is complete, so a failed or killed command leaves it as it was.
- A failed command removes its staging folder; a killed one leaves ``NAME.partial``
  behind, which the next command writing ``NAME`` removes (it is marked, so it is lorita's).
  A killed training run is the exception kept on purpose: ``--resume`` continues it.

Every file inside is written atomically (``lorita.atomic``), replacing symbolic links
rather than following them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lorita import jsonio
from lorita.atomic import atomic_write_text
from lorita.errors import LoritaError

log = logging.getLogger(__name__)

MARK = "lorita.run"
MARK_VERSION = 1
STAGING_SUFFIX = ".partial"
# What lorita writes into a run folder (and nothing else may be deleted by --overwrite).
RUN_FILES = frozenset({"config.json", "results.json", "metrics.csv", "checkpoint.pt", "model.lorita", "spectrum.json",
                       "evaluation.json", "report.md", "samples.txt"})
RUN_SUFFIXES = (".png",)


def mark(config: dict) -> dict:
    """``config`` with the run-folder mark first (what ``config.json`` holds).

    Example:
        >>> mark({"command": "train"})
        {'format': 'lorita.run', 'format_version': 1, 'command': 'train'}
    """
    rest = {k: v for k, v in config.items() if k not in ("format", "format_version")}
    return {"format": MARK, "format_version": MARK_VERSION, **rest}


def is_marked(folder: str | os.PathLike) -> bool:
    """Whether ``folder/config.json`` carries lorita's run-folder mark.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); write_json(d / "config.json", mark({"command": "x"})); is_marked(d)
        True
    """
    config = Path(folder) / "config.json"
    if config.is_symlink() or not config.is_file():
        return False
    try:
        data = jsonio.read(config, allow_nan=True)
    except LoritaError:  # unreadable: not a mark lorita wrote
        return False
    return isinstance(data, dict) and data.get("format") == MARK


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def foreign_entries(folder: str | os.PathLike) -> list[str]:
    """Entries of a marked run folder that lorita did not write (empty: it may be replaced).

    Symbolic links count as foreign (lorita never writes one); nested folders must be marked
    run folders themselves, with no foreign entries.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); write_json(d / "config.json", mark({})); foreign_entries(d)
        []
    """
    folder = Path(folder)
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            found.append(f"{entry} (a symbolic link)")
        elif entry.is_dir():
            if is_marked(entry):
                found += foreign_entries(entry)
            else:
                found.append(f"{entry}/ (not a lorita run folder)")
        elif not (entry.name in RUN_FILES or entry.name.endswith(RUN_SUFFIXES) or _is_temp(entry.name)):
            found.append(str(entry))
    return found


def staging_path(out: str | os.PathLike) -> Path:
    """Where a command builds ``out`` before it is complete: ``out.partial`` beside it.

    Example:
        >>> staging_path("runs/fcn-d3")
        PosixPath('runs/fcn-d3.partial')
    """
    out = Path(out)
    return out.with_name(out.name + STAGING_SUFFIX)


def _check_replaceable(folder: Path, what: str) -> None:
    if not is_marked(folder):
        raise LoritaError(f"refusing to replace {folder}: it is not a lorita run folder (no config.json with "
                          f"\"format\": \"{MARK}\"); lorita only ever deletes what it wrote. Move it away or choose "
                          f"another {what}")
    foreign = foreign_entries(folder)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise LoritaError(f"refusing to replace {folder}: it holds files lorita did not write ({shown}); move them "
                          f"away, or choose another {what}")


def remove_stale_staging(staging: Path) -> None:
    """Remove ``NAME.partial`` left by a command that did not finish (only if it is lorita's)."""
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        raise LoritaError(f"{staging} exists and is not a folder lorita made; remove it or choose another --out")
    if not staging.exists():
        return
    if any(staging.iterdir()):
        _check_replaceable(staging, "--out")
    log.info("removing %s left by an earlier command that did not finish", staging)
    shutil.rmtree(staging)


class RunOutput:
    """One command's output folder: validated up front, built in ``out.partial``, swapped in when complete.

    ``RunOutput(out, overwrite=..., resume=...)`` checks everything before anything is
    created; ``begin()`` makes the staging folder to write into (with ``resume``, it is the
    existing one), ``commit()`` moves it to ``out`` (replacing the old folder, which was
    checked to hold only lorita's files) and ``abandon(keep=False)`` removes it.
    ``with output as folder:`` does all three: commit when the block ends, abandon on any
    error (Ctrl-C included). ``writer=False`` (non-zero ranks under torchrun) checks
    nothing and writes nothing but uses the same path.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "run"
        >>> with RunOutput(out) as folder:
        ...     write_json(folder / "config.json", mark({"command": "demo"}))
        >>> sorted(p.name for p in out.iterdir())
        ['config.json']
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                 writer: bool = True, what: str = "--out"):
        self.out = Path(out)
        self.staging = staging_path(self.out)
        self.writer = writer
        self.resume = resume
        if not writer:
            return
        if self.out.name in ("", ".", "..") or self.out.resolve() == Path.cwd().resolve():
            raise LoritaError(f"{what} {out} names the current folder; choose a new folder name")
        if self.out.is_symlink() or (self.out.exists() and not self.out.is_dir()):
            raise LoritaError(f"{what} {self.out} exists and is not a folder; choose a folder name")
        if resume:
            if self.out.exists():
                _check_replaceable(self.out, what)
            return
        if self.out.is_dir() and any(self.out.iterdir()):
            if not overwrite:
                raise LoritaError(f"output folder {self.out} already exists and is not empty; pass --overwrite to "
                                  f"replace it, or choose another {what}")
            _check_replaceable(self.out, what)
        if self.staging.exists() or self.staging.is_symlink():
            remove_stale_staging(self.staging)

    def __enter__(self) -> Path:
        return self.begin()

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.commit()
        else:
            self.abandon()

    def begin(self) -> Path:
        """Create the staging folder (not with ``resume``: it exists) and return it."""
        if self.writer and not self.resume:
            self.staging.mkdir(parents=True)
        return self.staging

    def abandon(self, keep: bool = False) -> None:
        """The command failed: remove the staging folder, or ``keep`` it for ``--resume``."""
        if not self.writer:
            return
        if keep:
            log.warning("%s kept: continue it with --resume", self.staging)
        else:
            shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self) -> None:
        """The output is complete: move it to ``out``, replacing the old folder."""
        if not self.writer:
            return
        old = None
        if self.out.exists():
            if any(self.out.iterdir()):
                _check_replaceable(self.out, "--out")  # again: nothing foreign appeared meanwhile
                old = self.out.with_name(f".{self.out.name}.replaced-{os.getpid()}")
                os.replace(self.out, old)
            else:
                self.out.rmdir()
        os.replace(self.staging, self.out)
        if old is not None:
            shutil.rmtree(old)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically.

    Example:
        >>> import tempfile
        >>> write_json(Path(tempfile.mkdtemp()) / "a.json", {"x": 1})
    """
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | os.PathLike, what: str) -> dict:
    """Read a JSON object, with an error that says which command writes it.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.json"; write_json(p, {"x": 1}); read_json(p, "x")
        {'x': 1}
    """
    path = Path(path)
    if not path.is_file():
        raise LoritaError(f"{path} not found: is {path.parent} a run folder written by {what}?")
    data = jsonio.read(path, fix=f"the run may be damaged; rerun {what}", allow_nan=True)
    if not isinstance(data, dict):
        raise LoritaError(f"{path} does not hold a JSON object")
    return data
