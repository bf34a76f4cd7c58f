"""How a command writes its output folder without losing anything: checked, locked, staged, swapped in.

Every command that writes a folder (train, compress, report, demo, experiment) goes through
``RunOutput``, which applies one set of rules before anything is created:

- ``--out`` is a new folder name: not the current folder, one holding it, or the root.
- The output, and its staging folder ``NAME.partial``, may not be, hold or sit inside any of
  the command's inputs (the runs it reads, the model it continues, its data, its config).
- An exclusive lock on the output (``lorita.runs.lock``): a second command writing the same
  ``--out`` fails at once, naming the first.
- An existing, non-empty ``NAME`` is replaced only with ``--overwrite``, and only if it is a
  marked run folder holding nothing but what lorita writes (``lorita.runs.folder``), on the
  same file system as the folder above it.
- ``NAME.partial`` is used only when it is this run's own: ``--resume`` of a marked staging
  folder holding ``checkpoint.pt`` (checked without following links). Any other leftover is
  refused with a message saying what it is and how to remove it; lorita never deletes it.
- ``.NAME.replaced-PID``, the previous output of a command killed while replacing it, is
  reported; it is removed (once the new output is in place) only when ``NAME`` is in place
  and it is a marked run folder holding nothing but lorita's files.

The new output is built in ``NAME.partial`` and swapped with the old ``NAME`` in one atomic
step where the system can (``lorita.atomic.swap``; else two renames), then the old folder is
checked again (anything not lorita's that appeared since the command began keeps it whole, as
``.NAME.kept-PID``, which lorita never touches) and deleted without following links or crossing
file systems, only what lorita writes (``lorita.runs.folder.remove_tree``).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from pathlib import Path
from typing import Iterable

from lorita import jsonio
from lorita.atomic import swap, temp_target
from lorita.errors import LoritaError
from lorita.messages import listed
from lorita.runs.folder import (
    HELD,
    MARK,
    STAGING_SUFFIX,
    building_path,
    command_of,
    copy_whole,
    foreign_entries,
    holds_only_lorita_files,
    is_lorita_file,
    is_marked,
    remove_tree,
    staging_path,
)
from lorita.runs.lock import LOCK_SUFFIX, OutputLock

log = logging.getLogger(__name__)

Inputs = Iterable[tuple["str | os.PathLike | None", str]]
# names lorita gives its own folders and files beside an output (staging, set aside, copying, replaced, lock)
_RESERVED = re.compile(r".+\.partial|.+\.resume|\..+\.copying|\..+\.(replaced|kept)-[0-9]+|\..+" +
                       re.escape(LOCK_SUFFIX))


def _resolved(path: str | os.PathLike) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # a link loop: compare the path as written
        return Path(os.path.abspath(path))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def check_inputs(out: str | os.PathLike, inputs: Inputs, what: str = "--out") -> None:
    """Refuse an output folder (or its staging folder) that is, holds or sits inside one of ``inputs``.

    ``inputs``: (path, what it is) pairs; None paths are skipped. Paths are compared resolved
    (links followed), so another name for the same folder is caught too.

    Example:
        >>> check_inputs("runs/d3-cut", [("runs/d3", "the run it compresses")])
        >>> check_inputs("runs", [("runs/d3", "the run it compresses")])
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: --out runs would replace, hold or sit inside the run it compresses (runs/d3); choose a folder outside it
    """
    out = Path(out)
    targets = [(_resolved(out), f"{what} {out}"),
               (_resolved(staging_path(out)), f"{what} {out} (built in {staging_path(out)})")]
    for path, label in inputs:
        if path is None or str(path) == "":
            continue
        source = _resolved(path)
        for target, name in targets:
            if target == source or source in target.parents or target in source.parents:
                raise LoritaError(f"{name} would replace, hold or sit inside {label} ({path}); choose a folder "
                                  "outside it")


def check_name(given: str | os.PathLike, what: str = "--out") -> None:
    """Refuse an output name that names no new folder (``.``, ``/``, a folder holding the current one) or one lorita
    keeps for its own folders and files beside an output.

    Example:
        >>> check_name("runs/first")
        >>> check_name("runs/first.partial")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: --out 'runs/first.partial': lorita keeps names like 'first.partial' for its own ...
    """
    out = Path(given)
    problem = out.name in ("", ".", "..")
    if not problem:
        try:
            cwd = Path.cwd().resolve()
        except OSError:
            cwd = None
        target = _resolved(out)
        problem = cwd is not None and (target == cwd or target in cwd.parents)
    if problem:
        raise LoritaError(f"{what} {str(given)!r} names no new folder (it is the current folder, one holding it, or "
                          f"the root); choose a new folder name, e.g. {what} runs/first")
    if _RESERVED.fullmatch(out.name):
        raise LoritaError(f"{what} {str(given)!r}: lorita keeps names like {out.name!r} for its own folders beside an "
                          "output (NAME.partial while one is built, NAME.resume, .NAME.copying, .NAME.replaced-PID, "
                          f".NAME{LOCK_SUFFIX}); writing there could mix two runs: choose another name")


def _check_own_file_system(folder: Path, what: str) -> None:
    if os.lstat(folder).st_dev != os.lstat(folder.parent).st_dev:
        raise LoritaError(f"{what} {folder} is a mount point: lorita replaces a folder by renaming it, which cannot "
                          f"move a mount point, and never deletes across file systems; write into a new folder "
                          f"inside it, e.g. {what} {folder / 'run'}")


def _check_replaceable(folder: Path, what: str) -> None:
    _check_own_file_system(folder, what)
    if not is_marked(folder):
        raise LoritaError(f"refusing to replace {folder}: it is not a lorita run folder (no config.json with "
                          f"\"format\": \"{MARK}\"); lorita only ever deletes what it wrote. Move it away or choose "
                          f"another {what}")
    foreign = foreign_entries(folder)
    busy = [entry for entry in foreign if HELD in entry]
    if busy:
        raise LoritaError(f"refusing to replace {folder}: a lorita command is writing in it ({busy[0]}); wait until "
                          f"it ends, or choose another {what}")
    if foreign:
        raise LoritaError(f"refusing to replace {folder}: it holds files lorita did not write ({listed(foreign)}); "
                          "move them "
                          f"away, or choose another {what}")


def _check_folder_or_nothing(out: Path, what: str) -> os.stat_result | None:
    """``out``'s lstat (None: not there), refused when it is a link or not a folder."""
    info = _lstat(out)
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise LoritaError(f"{what} {out} is a symbolic link, and lorita never writes or deletes through one; remove "
                          f"the link (rm {out}) or choose another {what}")
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise LoritaError(f"{what} {out} exists and is not a folder; choose a folder name")
    return info


def check_replaceable_output(out: str | os.PathLike, what: str = "--out") -> None:
    """Refuse an existing ``out`` that ``--overwrite`` could not replace (a link, a file, a folder lorita did not
    write or one holding what it did not write): the check ``RunOutput`` makes, for a caller that must know before
    it renames anything (``lorita experiment --resume --overwrite``).

    Example:
        >>> import tempfile
        >>> check_replaceable_output(Path(tempfile.mkdtemp()) / "new")  # nothing there: nothing to refuse
    """
    out = Path(out)
    if _check_folder_or_nothing(out, what) is not None and any(out.iterdir()):
        _check_replaceable(out, what)


def _holds_checkpoint(folder: Path) -> bool:
    info = _lstat(folder / "checkpoint.pt")
    return info is not None and stat.S_ISREG(info.st_mode)


def _left_by(staging: Path) -> str | None:
    """Which command left the marked staging folder, as its config.json says (a plain word only; None: unsaid)."""
    command = command_of(staging)
    return command if command is not None and re.fullmatch(r"[a-z][a-z0-9-]{0,30}", command) else None


def _check_staging(staging: Path, what: str, resume: bool) -> bool:
    """Whether ``staging`` is a killed run of this output to continue (``resume``); any other leftover is refused."""
    info = _lstat(staging)
    if info is None:
        return False
    if stat.S_ISLNK(info.st_mode):
        raise LoritaError(f"{staging} is a symbolic link, and lorita never writes through one; remove the link "
                          f"(rm {staging}) or choose another {what}")
    if not stat.S_ISDIR(info.st_mode):
        raise LoritaError(f"{staging} exists and is not a folder lorita made; remove it or choose another {what}")
    _check_own_file_system(staging, f"{what}'s staging folder")
    marked, checkpoint = is_marked(staging), _holds_checkpoint(staging)
    out = staging.with_name(staging.name.removesuffix(STAGING_SUFFIX))
    finished = _finished_at(staging) if marked else None
    if finished is not None:
        at_out = _finished_at(out)
        if at_out is not None and finished <= at_out:  # the older of two whole outputs: a replacement swapped it out
            raise LoritaError(f"{staging} holds an older finished output than {out}: the previous one, swapped out "
                              f"when a command replaced it and was killed before deleting it; remove it yourself "
                              f"(rm -r {staging}); lorita never deletes it")
        if not (resume and checkpoint):
            raise LoritaError(f"{staging} holds a finished output that was not moved into place (a command killed in "
                              f"its last instant): move it there yourself (mv {staging} {out}, after moving any old "
                              f"{out} away), or remove it (rm -r {staging}); lorita never deletes it")
    if resume and marked and checkpoint:
        foreign = foreign_entries(staging)
        if foreign:  # continuing would carry them into the output
            raise LoritaError(f"{staging} holds files lorita did not write ({listed(foreign)}); move them away, then "
                              "resume")
        return True
    if not marked:
        empty = not any(staging.iterdir())
        detail = "an empty folder (a command killed before it wrote anything?)" if empty else \
            "not a lorita run folder (no config.json with the mark)"
        raise LoritaError(f"{staging} is {detail}, where lorita would build {what}; lorita never deletes it: "
                          f"remove it ({'rmdir' if empty else 'rm -r'} {staging}) or move it away, or choose another "
                          f"{what}")
    if checkpoint:
        raise LoritaError(f"{staging} holds a training run that did not finish (checkpoint.pt): continue it with "
                          f"'lorita train --resume --out {out}' (it takes the run's own flags), or remove it yourself "
                          f"(rm -r {staging}) to start over; lorita never deletes it")
    command = _left_by(staging)
    left_by = f"a 'lorita {command}'" if command else "a lorita command"
    if command == "experiment":  # its trainings are taken up by lorita.runs.set_aside, not here
        raise LoritaError(f"{staging} was left by {left_by} that did not finish: take up the trainings it finished "
                          f"with --resume (same config and flags), or remove it (rm -r {staging}) to start over; "
                          "lorita never deletes it")
    raise LoritaError(f"{staging} was left by {left_by} that did not finish (it holds no checkpoint.pt, "
                      f"so there is nothing to resume); remove it (rm -r {staging}) and run again")


_ENDS_WITH_RESULTS = ("train", "compress")  # the commands whose last file is results.json (an experiment's is not)


def _finished_at(folder: Path) -> int | None:
    """When a finished train or compress output in ``folder`` wrote its last file, ``results.json`` (nanoseconds);
    None when it is not one: another command's, no results.json, or a training that went on past the epochs its
    results.json reports (an extension killed part-way, copied with the finished run's results.json before an
    extension's copy left it out), which its metrics.csv shows."""
    command = command_of(folder)
    if command not in _ENDS_WITH_RESULTS:
        return None
    results = _lstat(folder / "results.json")
    if results is None or not stat.S_ISREG(results.st_mode):
        return None
    if command == "train" and _epochs_trained(folder) != _epochs_reported(folder):
        return None
    return results.st_mtime_ns


def _epochs_reported(folder: Path) -> int | None:
    try:
        epochs = jsonio.read(folder / "results.json", allow_nan=True).get("epochs")
    except (LoritaError, AttributeError):  # damaged, or not an object
        return None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def _epochs_trained(folder: Path) -> int | None:
    """The epochs metrics.csv holds (one row each, under its header)."""
    path = folder / "metrics.csv"
    if path.is_symlink() or not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:
            return max(sum(1 for line in handle if line.strip()) - 1, 0)
    except OSError:
        return None


def _replaced_leftovers(out: Path, what: str) -> list[Path]:
    """Hidden ``.NAME.replaced-PID`` folders of commands killed while replacing ``out``: those safe to remove.

    One that may hold the only copy of the previous output, or anything not lorita's, is refused.
    """
    parent = out.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{out.name}.replaced-") + r"[0-9]+")
    found = []
    for entry in sorted(parent.iterdir()):
        if not pattern.fullmatch(entry.name):
            continue
        info = _lstat(entry)
        if info is None:
            continue
        if _lstat(out) is None:
            raise LoritaError(f"{entry} holds the previous {out}: a command was killed while replacing it. Move it "
                              f"back (mv {entry} {out}) or remove it, then run again")
        safe = out.is_dir() and is_marked(out) and stat.S_ISDIR(info.st_mode) \
            and info.st_dev == os.lstat(parent).st_dev and is_marked(entry) and not foreign_entries(entry)
        if not safe:
            named = f" ({listed(foreign_entries(entry))})" if stat.S_ISDIR(info.st_mode) and is_marked(entry) else ""
            raise LoritaError(f"{entry} was left by a command killed while replacing {out}, and it is not only "
                              f"lorita's files{named}; look at it, then remove it yourself")
        found.append(entry)
    return found


def _cut_copy(staging: Path, out: Path) -> Path | None:
    """The ``.NAME.partial.copying`` folder (``building_path``) a kill left while ``--resume`` copied the finished
    ``out`` to extend it: safe to remove when it holds nothing but lorita's files (a copy never changes ``out``);
    anything else there is refused."""
    building = building_path(staging)
    info = _lstat(building)
    if info is None:
        return None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        problem = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder"
    elif info.st_dev != os.lstat(building.parent).st_dev:
        problem = "on another file system"
    elif (is_marked(building) and not foreign_entries(building)) or holds_only_lorita_files(building):
        return building
    else:
        problem = "holding what lorita did not write"
    raise LoritaError(f"{building} is where lorita copies {out} to extend it, and it is {problem}; look at it, then "
                      f"remove it yourself (rm -r {building})")


def _free_name(out: Path, kind: str) -> Path:
    """``.NAME.KIND-PID`` beside ``out``, or with a number after the PID where that is taken (the same process
    replacing ``out`` again, or a PID used again after a kill)."""
    for extra in ("", *range(1, 10_000)):
        path = out.with_name(f".{out.name}.{kind}-{os.getpid()}{extra}")
        if _lstat(path) is None:
            return path
    raise LoritaError(f"no free name for .{out.name}.{kind}-{os.getpid()}N beside {out}; remove the old ones")


def _remove_replaced(folder: Path, out: Path) -> None:
    """Delete ``folder``, an earlier ``out`` that the new one replaced (now in place), checked again first: it was
    checked when the command began, maybe hours ago. One where a command is writing, or where anything not lorita's
    appeared since, is kept whole as ``.NAME.kept-PID``, which lorita never touches again, and named in a warning;
    what appears while it is deleted is left (``only_lorita``)."""
    try:
        info = _lstat(folder)
        if info is None:
            return  # moved away meanwhile: nothing to delete
        if stat.S_ISDIR(info.st_mode) and info.st_dev == os.lstat(folder.parent).st_dev and is_marked(folder):
            foreign = foreign_entries(folder)
        else:
            foreign = [f"{folder} (no longer a lorita run folder on this file system)"]
        deleting = not foreign  # nothing appeared before this check: delete, leaving what appears meanwhile
        if deleting:
            foreign = remove_tree(folder, only_lorita=True)  # what appears while it is deleted is left
            if not foreign:
                return
        kept = _free_name(out, "kept")
        os.rename(folder, kept)
        foreign = [str(kept) + entry[len(str(folder)):] if entry.startswith(str(folder)) else entry
                   for entry in foreign]
        if deleting:
            log.warning("%s is in place; deleting the previous output stopped at what appeared in it meanwhile, which "
                        "lorita did not write or a command holds (%s); what is left of it is kept in %s, which lorita "
                        "leaves alone: look at it, and remove it yourself when you are done", out, listed(foreign),
                        kept)
        else:
            log.warning("%s is in place; the previous output is kept in %s, as %s appeared in it while the command "
                        "ran (%s); lorita leaves it alone: look at it, and remove it yourself when you are done",
                        out, kept, "a command writing in it" if any(HELD in entry for entry in foreign) else
                        "what lorita did not write", listed(foreign))
    except (OSError, LoritaError) as err:  # the new output is in place: say what is left, do not fail the command
        log.warning("%s is in place, but deleting the old output in %s stopped (%s); remove it yourself",
                    out, folder, getattr(err, "strerror", None) or err)


def _check_creatable(out: Path, what: str) -> None:
    """The nearest path above ``out`` that exists is a folder this user may create folders in: found before the run's
    work, not when its folder is made at the end (a compressed language model was lost to a typo in --out)."""
    above = next((folder for folder in out.parents if os.path.lexists(folder)), None)
    if above is None:
        return
    if not os.path.isdir(above):
        raise LoritaError(f"{what} {out}: {above} is not a folder, so {out} cannot be made below it; choose another "
                          f"{what}")
    if not os.access(above, os.W_OK | os.X_OK):
        raise LoritaError(f"{what} {out}: {above} is not writable by this user, so {out} cannot be made below it; "
                          f"choose another {what}")


class RunOutput:
    """One command's output folder: checked and locked up front, built in ``out.partial``, swapped in when complete.

    ``RunOutput(out, overwrite=..., resume=..., inputs=...)`` checks everything (the rules
    above) and takes the lock before anything is created; ``begin()`` makes the staging folder
    to write into (with ``resume``: the killed run's own, or a copy of the finished ``out``),
    ``commit()`` swaps it in for ``out`` and ``abandon(keep=False)`` removes it; both release
    the lock. ``with output as folder:`` does all three: commit when the block ends, abandon on
    any error (Ctrl-C included). ``writer=False`` (non-zero ranks under torchrun) checks,
    locks and writes nothing but uses the same paths.

    Example:
        >>> import tempfile
        >>> from lorita.runs.folder import mark, write_json
        >>> out = Path(tempfile.mkdtemp()) / "run"
        >>> with RunOutput(out) as folder:
        ...     write_json(folder / "config.json", mark({"command": "demo"}))
        >>> sorted(p.name for p in out.parent.iterdir()), sorted(p.name for p in out.iterdir())
        (['run'], ['config.json'])
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                 writer: bool = True, what: str = "--out", inputs: Inputs = ()):
        self.out = Path(out)
        check_name(out, what)
        self.staging = staging_path(self.out)
        self.writer, self.resume, self.overwrite, self.what = writer, resume, overwrite, what
        self.resumable = False  # staging is a killed run of this output, to continue
        self._lock = OutputLock(self.out, what)
        self._created = self._begun = False
        self._made_parents: list[Path] = []  # folders above out that begin() made (removed again on failure)
        self._stale: list[Path] = []
        self._cut_copy: Path | None = None
        if not writer:
            return
        check_inputs(self.out, list(inputs), what)
        for folder in reversed(self.out.parents):  # a link above out that leads nowhere: mkdir and stat say less
            if folder.is_symlink():
                try:
                    os.stat(folder)
                except OSError as err:  # to nothing (ENOENT), or round in a loop (ELOOP)
                    fix = "make the folder it names" if err.errno == errno.ENOENT else "remove or fix the link"
                    raise LoritaError(f"{what} {self.out}: {folder} is a symbolic link to {os.readlink(folder)}, "
                                      f"which leads nowhere ({err.strerror}); {fix}, or choose another {what}") \
                        from None
        _check_creatable(self.out, what)
        parent = _lstat(self.out.parent)
        if parent is not None and not stat.S_ISDIR(os.stat(self.out.parent).st_mode):
            raise LoritaError(f"{what} {self.out}: {self.out.parent} is not a folder")
        if parent is not None:  # else nothing is there yet: the lock is taken when begin() makes the folder
            self._lock.acquire()
            self._checked()

    def _checked(self) -> None:
        """Every check of the output, its staging folder and leftovers (under the lock); releases it on failure."""
        try:
            info = _check_folder_or_nothing(self.out, self.what)
            self.resumable = _check_staging(self.staging, self.what, self.resume)
            self._stale = _replaced_leftovers(self.out, self.what)
            extends = self.resume and not self.resumable and (self.out / "checkpoint.pt").is_file()
            self._cut_copy = _cut_copy(self.staging, self.out) if extends else None  # a copy only an extension makes
            if info is not None and any(self.out.iterdir()):
                if not (self.overwrite or self.resume):
                    raise LoritaError(f"output folder {self.out} already exists and is not empty; pass --overwrite "
                                      f"to replace it, or choose another {self.what}")
                _check_replaceable(self.out, self.what)
            elif info is not None:
                _check_own_file_system(self.out, self.what)
        except BaseException:
            self._lock.release()
            raise

    def __enter__(self) -> Path:
        return self.begin()

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.commit()
        else:
            self.abandon()

    def begin(self) -> Path:
        """The staging folder to write into: made now, or with ``resume`` the killed run's own or a copy of ``out``."""
        if not self.writer:
            return self.staging
        if not self._lock.held:
            for folder in reversed([self.out.parent, *self.out.parent.parents]):  # from the top: each one it makes
                try:
                    folder.mkdir()
                    self._made_parents.insert(0, folder)  # deepest first
                except OSError:
                    if not folder.is_dir():  # a root says EISDIR or EACCES rather than EEXIST on some systems
                        self._remove_made_parents()
                        raise
            try:
                self._lock.acquire()
                self._checked()
            except BaseException:
                self._remove_made_parents()
                raise
        try:
            if not self.resumable:
                if self.resume and (self.out / "checkpoint.pt").is_file():
                    # extend a finished run: all but its results, the last file of a finished output, which the
                    # extension writes when it ends (a kill before then leaves no stale results beside its
                    # checkpoint); copied whole or not at all, so neither another rank waiting for the staging
                    # folder's config.json (torchrun) nor a later --resume sees part of a copy
                    if self._cut_copy is not None and _cut_copy(self.staging, self.out) is not None:  # as checked
                        remove_tree(self._cut_copy)
                    copy_whole(self.out, self.staging, leave_out=["results.json"])
                else:
                    self.staging.mkdir()
                self._created = True
            self._begun = True
            if self.resume:  # a kill during an atomic write leaves its temporary file: lorita's, by exact name
                for entry in self.staging.iterdir():
                    if temp_target(entry.name) is not None and is_lorita_file(entry.name) and entry.is_file() \
                            and not entry.is_symlink():
                        entry.unlink()
        except BaseException:
            self.abandon()
            raise
        return self.staging

    def abandon(self, keep: bool = False) -> None:
        """The command failed: remove the staging folder it made (or ``keep`` it for ``--resume``); release the lock."""
        if not self.writer:
            return
        try:
            if keep and self._begun:
                again = "--resume --overwrite" if _lstat(self.out) is not None else "--resume"  # OUT stays till then
                log.warning("%s kept: continue it with %s --out %s (the same command, its other flags "
                            "as before; lorita train takes them from the run)", self.staging, again, self.out)
            elif self._created:
                remove_tree(self.staging)
        except OSError as err:
            log.warning("could not remove %s (%s); remove it yourself", self.staging, err.strerror or err)
        finally:
            self._lock.release()
            if not (keep and self._begun):
                self._remove_made_parents()

    def _remove_made_parents(self) -> None:
        """Remove the folders above ``out`` that ``begin()`` made, deepest first, each only if still empty."""
        for folder in self._made_parents:
            try:
                folder.rmdir()
            except OSError:  # something else is in it now: it stays
                break
        self._made_parents = []

    def commit(self) -> None:
        """The output is complete: swap it in for ``out`` (the old folder is then deleted); release the lock."""
        if not self.writer:
            return
        try:
            try:
                old = self._swap_in()
            except LoritaError as err:
                raise LoritaError(f"{err}; the new output is kept in {self.staging}") from None
            for folder in [*self._stale, *([old] if old is not None else [])]:
                if folder in self._stale:
                    log.warning("removing %s: the previous %s, left by a command killed while replacing it",
                                folder, self.out)
                _remove_replaced(folder, self.out)
        finally:
            self._lock.release()

    def _swap_in(self) -> Path | None:
        """Move the staging folder to ``out``; return where the old ``out`` went (to delete), if anywhere."""
        info = _lstat(self.out)
        if info is None:
            os.rename(self.staging, self.out)
            return None
        if not stat.S_ISDIR(info.st_mode):
            raise LoritaError(f"{self.what} {self.out} appeared meanwhile and is not a folder; the new output is in "
                              f"{self.staging}")
        if not any(self.out.iterdir()):
            self.out.rmdir()
            os.rename(self.staging, self.out)
            return None
        _check_replaceable(self.out, self.what)  # again: nothing foreign appeared meanwhile
        old = _free_name(self.out, "replaced")
        if swap(self.staging, self.out):  # one atomic step: out is always a complete output
            os.rename(self.staging, old)
        else:
            os.rename(self.out, old)
            os.rename(self.staging, self.out)
        return old
