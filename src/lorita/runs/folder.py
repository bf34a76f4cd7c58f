"""Run folders on disk: how lorita marks them, what it writes into them, and how it deletes one.

Every folder a lorita command writes (train, compress, demo, experiment, report) holds a
``config.json`` whose ``format`` is ``"lorita.run"``: that mark, and nothing else, makes a
folder lorita's. What may be deleted in it is what lorita writes, by exact name: the files
of ``RUN_FILES`` and ``PLOT_FILES``, the temporary files of their atomic writes
(``lorita.atomic.temp_target``), output lock files (``lorita.runs.lock``: lorita's content, held by
no running command), nested run folders, and in an experiment's folders a ``.NAME.copying`` folder
(a copy a kill cut short before its ``config.json`` was whole) holding nothing but such files;
never a symbolic link, never anything on another file system. How a command builds
and swaps in its output folder is ``lorita.runs.output``.

Every file inside is written atomically (``lorita.atomic``), replacing symbolic links
rather than following them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any, Iterable

from lorita import __version__, jsonio
from lorita.atomic import atomic_write_text, temp_target
from lorita.errors import LoritaError
from lorita.runs.lock import held_by, is_lock_file, is_lock_name

log = logging.getLogger(__name__)

MARK = "lorita.run"
MARK_VERSION = 1
STAGING_SUFFIX = ".partial"
# What lorita writes into a run folder, by exact name (and nothing else may be deleted by --overwrite).
RUN_FILES = frozenset({"config.json", "results.json", "metrics.csv", "checkpoint.pt", "model.lorita", "spectrum.json",
                       "evaluation.json", "report.md", "samples.txt",
                       "measured-cuts.json"})  # an experiment seed's cuts as measured (lorita.runs.measured_cuts)
# Every plot any lorita command or benchmark writes into a run folder (report, demo/experiment, benchmarks/peers.py).
PLOT_FILES = frozenset({"training_curves.png", "spectra.png", "compression.png", "ranks.png",  # lorita report
                        "perplexity.png",  # lorita report, language models
                        "columns.png", "accuracy_vs_params.png", "accuracy_vs_flops.png", "training.png",  # demo
                        "accuracy_vs_macs.png", "accuracy_vs_latency.png"})  # benchmarks/peers.py
_WRITTEN = RUN_FILES | PLOT_FILES
HELD = "(held: "  # how foreign_entries names a lock file a running command holds (a busy folder, not a foreign one)
_COPIES_INTO = ("experiment", "experiment-seed")  # the folders lorita copies trainings into (lorita.runs.reuse)
# the outputs that hold run folders, and of which commands: an experiment its seeds' folders, trainings and cuts (with
# one seed), a seed folder its trainings and cuts, the peers benchmark its trainings (benchmarks/peers.py)
_HOLDS = {"experiment": ("experiment-seed", "train", "compress"), "experiment-seed": ("train", "compress"),
          "peers": ("train",)}
_OPEN_FOLDER = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


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


def is_lorita_file(name: str) -> bool:
    """Whether a file named ``name`` in a run folder is one lorita writes (by exact name).

    Example:
        >>> [is_lorita_file(n) for n in ("metrics.csv", ".metrics.csv.0a1b2c3d.tmp", "holiday.png", ".id.tmp")]
        [True, True, False, False]
    """
    return name in _WRITTEN or temp_target(name) in _WRITTEN or is_lock_name(name)


def foreign_entries(folder: str | os.PathLike) -> list[str]:
    """Entries of a marked run folder that lorita did not write (empty: it may be replaced).

    Symbolic links count as foreign (lorita never writes one), and so does anything on another
    file system (a mount point); nested folders must be marked run folders themselves, with
    no foreign entries, of a command lorita writes in that folder (an experiment's trainings,
    cuts and seed folders, a seed folder's trainings and cuts, the peers benchmark's trainings:
    a training moved into a training's folder, or an experiment written inside an experiment, is
    not lorita's to delete), or a ``.NAME.copying`` folder holding nothing but files lorita writes
    (``building_path``: a copy a kill cut short before it was marked). Any depth of nesting is
    walked (no recursion).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); write_json(d / "config.json", mark({})); foreign_entries(d)
        []
    """
    folder = Path(folder)
    device = os.lstat(folder).st_dev
    found = []
    stack = [iter(sorted(folder.iterdir()))]  # one iterator per open folder: the order of a recursive walk
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        info = entry.lstat()
        reason = _foreign(entry, info, device)
        if reason is not None:
            found.append(reason)
        elif stat.S_ISDIR(info.st_mode) and is_marked(entry):  # else a .NAME.copying one: nothing to walk
            stack.append(iter(sorted(entry.iterdir())))
    return found


def building_path(out: str | os.PathLike) -> Path:
    """Where a folder copied whole or not at all into ``out`` is built: ``.NAME.copying`` beside it, renamed into
    place once complete (a dot name is never taken as a run).

    Example:
        >>> building_path("runs/exp.partial/depth1").name
        '.depth1.copying'
    """
    out = Path(out)
    return out.with_name(f".{out.name}.copying")


def copy_whole(found: str | os.PathLike, out: str | os.PathLike, *, names: Iterable[str] | None = None,
               leave_out: Iterable[str] = ()) -> None:
    """Copy the checked run folder ``found`` to ``out`` whole or not at all: only ``names`` when given, never
    ``leave_out`` (entries directly in ``found``); built as ``.NAME.copying`` beside ``out`` (``building_path``),
    ``config.json`` first (so a copy a kill cut short is still marked lorita's), then renamed into place. A copy
    that fails is removed. Links and special files are not copied (the callers checked there are none; one that
    appeared since is not followed). Raises ``OSError``.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp()) / "run"; write_json(run / "config.json", mark({}))
        >>> (run / "results.json").write_text("{}")
        2
        >>> copy_whole(run, run.with_name("copy"), leave_out=["results.json"])
        >>> sorted(p.name for p in run.with_name("copy").iterdir())
        ['config.json']
    """
    found, building = Path(found), building_path(out)
    names, leave_out = (None if names is None else set(names)), set(leave_out)
    building.parent.mkdir(parents=True, exist_ok=True)
    building.mkdir()
    try:
        for entry in sorted(found.iterdir(), key=lambda p: (p.name != "config.json", p.name)):
            if (names is not None and entry.name not in names) or entry.name in leave_out:
                continue
            if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
                continue
            if entry.is_dir():
                shutil.copytree(entry, building / entry.name, symlinks=True)
            else:
                shutil.copyfile(entry, building / entry.name, follow_symlinks=False)
        building.rename(out)
    except BaseException:
        remove_tree(building)
        raise


def holds_only_lorita_files(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but regular files lorita writes, by exact name (unreadable: no).

    Example:
        >>> import tempfile
        >>> holds_only_lorita_files(Path(tempfile.mkdtemp()))
        True
    """
    try:
        return all(stat.S_ISREG(child.lstat().st_mode) and is_lorita_file(child.name) for child in folder.iterdir())
    except OSError:
        return False


def _is_unmarked_building(entry: Path) -> bool:
    """A ``.NAME.copying`` folder (``building_path``) in a ``lorita experiment`` folder or one of its seed folders
    (the only ones lorita copies trainings into), holding nothing but regular files lorita writes, by exact name:
    what a kill leaves before a copy's ``config.json`` is whole (an empty folder, a cut-off or temporary
    ``config.json``). Unreadable: not lorita's."""
    if not re.fullmatch(r"\..+\.copying", entry.name) or command_of(entry.parent) not in _COPIES_INTO:
        return False
    return holds_only_lorita_files(entry)


def command_of(folder: str | os.PathLike) -> str | None:
    """The command a marked run folder's ``config.json`` names (None: unmarked, unreadable or unsaid).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); write_json(d / "config.json", mark({"command": "train"})); command_of(d)
        'train'
    """
    folder = Path(folder)
    if not is_marked(folder):
        return None
    try:
        command = jsonio.read(folder / "config.json", allow_nan=True).get("command")
    except LoritaError:
        return None
    return command if isinstance(command, str) else None


def staging_path(out: str | os.PathLike) -> Path:
    """Where a command builds ``out`` before it is complete: ``out.partial`` beside it.

    Example:
        >>> staging_path("runs/fcn-d3")
        PosixPath('runs/fcn-d3.partial')
    """
    out = Path(out)
    return out.with_name(out.name + STAGING_SUFFIX)


def _foreign(entry: Path, info: os.stat_result, device: int) -> str | None:
    """Why ``entry`` (its ``lstat`` in ``info``; ``device``: the run folder's file system) is not lorita's, as
    ``foreign_entries`` names it; None when it is: a file lorita writes (a lock file only when lorita wrote it and
    no command holds it), a marked run folder of a command that lorita writes in its folder's (``_HOLDS``: an
    experiment's trainings, cuts and seed folders, a seed folder's trainings and cuts, the peers benchmark's
    trainings; its entries judged in turn) or a ``.NAME.copying`` one a kill left in an experiment's folder
    (``_is_unmarked_building``: nothing in it but lorita's files)."""
    if stat.S_ISLNK(info.st_mode):
        return f"{entry} (a symbolic link)"
    if stat.S_ISDIR(info.st_mode):
        if info.st_dev != device:
            return f"{entry}/ (a mount point: lorita never deletes across file systems; unmount it)"
        if is_marked(entry):
            held, holder = command_of(entry), command_of(entry.parent)
            if held in _HOLDS.get(holder, ()):
                return None
            return f"{entry}/ (a run folder of command {held!r} inside one of {holder!r}, where lorita never " \
                   "writes it)"
        return None if _is_unmarked_building(entry) else f"{entry}/ (not a lorita run folder)"
    if not (stat.S_ISREG(info.st_mode) and is_lorita_file(entry.name)):
        return str(entry)
    if is_lock_name(entry.name) and not is_lock_file(entry):
        return f"{entry} (named like a lock file, but not one lorita wrote)"
    if is_lock_name(entry.name) and (holder := held_by(entry)) is not None:
        return f"{entry} {HELD}{holder} is writing in this folder; wait until it ends)"
    return None


def remove_tree(folder: str | os.PathLike, *, only_lorita: bool = False) -> list[str]:
    """Delete ``folder``, a run folder checked with ``foreign_entries``; return what was left (on another file system,
    or with ``only_lorita`` not lorita's).

    Walks by open folder handles without recursion: it never follows a symbolic link, never
    enters another file system (such a folder is left, and listed), and deletes each folder's
    ``config.json`` last, so a deletion cut short leaves a folder still marked as lorita's (and a folder
    that stays for what is left in it keeps its ``config.json``).
    ``only_lorita`` deletes as ``foreign_entries`` judges, entry by entry as it goes (for a folder
    checked before, where something may have appeared since): what it would name is left (a file
    lorita does not write, a link, a lock file lorita did not write or a command holds, a folder
    that is neither a marked run folder nor a ``.NAME.copying`` one), and so are the folders
    holding it, each with its ``config.json``, which is deleted only when nothing else is left in
    its folder, listed again at that moment.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()) / "run"; write_json(d / "config.json", mark({})); (d / "depth1").mkdir()
        >>> remove_tree(d), d.exists()
        ([], False)
    """
    folder = Path(folder)
    if os.open not in os.supports_dir_fd or os.stat not in os.supports_dir_fd:  # Windows: no folder handles
        if only_lorita and (foreign := foreign_entries(folder)):  # checked once more, by path: kept whole
            return foreign
        shutil.rmtree(folder)
        return []
    device = os.lstat(folder).st_dev
    left: list[str] = []
    kept: list[str] = []  # with only_lorita: what lorita did not write
    parent = os.open(folder.parent, _OPEN_FOLDER & ~os.O_NOFOLLOW)
    stack: list[tuple[int, Path, list[str]]] = []
    try:
        stack.append(_open_folder(folder.name, parent, folder, device))
        while stack:
            fd, path, names = stack[-1]
            if names:
                name = names.pop()
                if not names and name == "config.json":
                    if only_lorita:  # what appeared since the folder was listed stays, and so does its mark
                        known = [*left, *kept]
                        kept += [str(path / n) for n in sorted(os.listdir(fd)) if n != "config.json" and not any(
                            p == str(path / n) or p.startswith(f"{path / n}/") for p in known)]
                    if any(p.startswith(f"{path}/") for p in [*left, *kept]):
                        continue  # the folder stays for what is left in it: marked as lorita's, as it was
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if only_lorita and info.st_dev == device and _foreign(path / name, info, device) is not None:
                    kept.append(str(path / name))
                elif not stat.S_ISDIR(info.st_mode):
                    os.unlink(name, dir_fd=fd)
                elif info.st_dev != device:
                    left.append(str(path / name))
                else:
                    stack.append(_open_folder(name, fd, path / name, device))
                continue
            stack.pop()
            os.close(fd)
            if not any(p.startswith(f"{path}/") for p in [*left, *kept]):
                os.rmdir(path.name, dir_fd=stack[-1][0] if stack else parent)
    finally:
        for fd, _, _ in stack:
            os.close(fd)
        os.close(parent)
    if left:
        log.warning("left %s: on another file system (a mount point), which lorita never deletes", ", ".join(left))
    if kept:
        log.warning("left %d entries of %s that lorita did not write (the first: %s); lorita never deletes them",
                    len(kept), folder, kept[0])
    return [*left, *kept]


def _open_folder(name: str, parent: int, path: Path, device: int) -> tuple[int, Path, list[str]]:
    """Open the folder ``name`` in ``parent`` (not a link, same file system); its entries, config.json popped last."""
    fd = os.open(name, _OPEN_FOLDER, dir_fd=parent)
    if os.fstat(fd).st_dev != device:
        os.close(fd)
        raise LoritaError(f"{path} changed to another file system while being deleted; nothing more was deleted")
    names = sorted(os.listdir(fd), key=lambda n: (n != "config.json", n))
    return fd, path, names


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
    version = data.get("format_version")
    if data.get("format") == MARK and not (isinstance(version, int) and not isinstance(version, bool)
                                           and 1 <= version <= MARK_VERSION):
        raise LoritaError(f"{path}: format_version {version!r}, which this lorita ({__version__}) does not read (it "
                          f"reads 1 to {MARK_VERSION}): a newer lorita wrote it, or the file is damaged")
    return data
