"""The lock a command holds on its output folder while it writes it.

Two commands writing the same ``--out`` at once would each treat the other's staging folder
as theirs. So a command takes an exclusive ``flock`` on ``.NAME.lorita-lock`` beside ``NAME``
(in the same parent as ``NAME`` and ``NAME.partial``, so the lock outlives the final rename)
before it looks at either, and holds it until its output is moved into place or given up. A
second command fails at once and names the holder (process id and command line, written into
the lock file). The kernel drops a ``flock`` when its process ends, ``kill -9`` included, so a
killed command never leaves a lock held; it may leave the (empty or stale) file, which the next
command writing ``NAME`` reuses and removes, and which ``--overwrite`` counts as lorita's own.
Where the system has no ``flock`` (Windows), no lock is taken.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import stat
import sys
import time
from pathlib import Path

from lorita.errors import LoritaError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

LOCK_SUFFIX = ".lorita-lock"
_LOCK = re.compile(r"\..+" + re.escape(LOCK_SUFFIX))
_HOLDER_BYTES = 1000  # how much of a lock file is read to name its holder
_LOCK_BYTES = 4096  # the most a lock file lorita wrote holds (its holder line is at most about 820 bytes)
_HOLDER_LINE = re.compile(rb"pid [0-9]+ \(.*\)\n?", re.DOTALL)  # what ``OutputLock._record`` writes


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of the output folder ``out``: ``.NAME.lorita-lock`` beside it.

    Example:
        >>> lock_path("runs/fcn-d3")
        PosixPath('runs/.fcn-d3.lorita-lock')
    """
    out = Path(out)
    return out.with_name(f".{out.name}{LOCK_SUFFIX}")


def is_lock_name(name: str) -> bool:
    """Whether ``name`` is the name of an output lock file (lorita's own, never user data).

    Example:
        >>> is_lock_name(".fcn-d3.lorita-lock"), is_lock_name("notes.lock")
        (True, False)
    """
    return _LOCK.fullmatch(name) is not None


def is_lock_content(data: bytes) -> bool:
    r"""Whether ``data`` (a file's first bytes) is what lorita writes into a lock file: nothing (a lock taken but not
    yet recorded, or left by a kill) or its holder line.

    Example:
        >>> is_lock_content(b""), is_lock_content(b"pid 12 (lorita train --out x)\n"), is_lock_content(b"my notes")
        (True, True, False)
    """
    return data == b"" or (len(data) < _LOCK_BYTES and _HOLDER_LINE.fullmatch(data) is not None)


def is_lock_file(path: str | os.PathLike) -> bool:
    r"""Whether ``path`` is a lock file lorita wrote: a regular file (not a link) with a lock file's name and content.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / ".run.lorita-lock"; _ = p.write_bytes(b"pid 7 (lorita demo)\n")
        >>> is_lock_file(p), is_lock_file(p.with_name(".run.lorita-lock.bak"))
        (True, False)
    """
    path = Path(path)
    fd = _open_to_read(path) if is_lock_name(path.name) else None
    if fd is None:
        return False
    try:
        return _holds_lock_content(fd)
    finally:
        os.close(fd)


def _open_to_read(path: str | os.PathLike) -> int | None:
    """``path`` opened read-only without following a link; None where it cannot be."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def _holds_lock_content(fd: int) -> bool:
    """Whether the open file is one lorita could have written as a lock (a regular file, empty or its holder line)."""
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and is_lock_content(os.pread(fd, _LOCK_BYTES, 0))
    except OSError:
        return False


def held_by(path: str | os.PathLike) -> str | None:
    """Who holds the lock file ``path`` now (its holder line), or None when no process holds it (or no flock here).

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "run"
        >>> lock = OutputLock(out); lock.acquire()
        >>> held_by(lock_path(out)).startswith("pid "), lock.release(), held_by(lock_path(out))
        (True, None, None)
    """
    fd = None if fcntl is None else _open_to_read(path)
    if fd is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the shared lock taken to look
    return None


def _flock_exclusive(fd: int, tries: int = 5) -> None:
    """An exclusive, non-blocking flock, tried a few times 20 ms apart: ``held_by`` holds a shared one for an
    instant to look, which must not read as a command writing the output. BlockingIOError when still taken."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(0.02)


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it (a printable line), or a plain description."""
    try:
        text = os.pread(fd, _HOLDER_BYTES, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    line = "".join(c for c in text.split("\n", 1)[0] if c.isprintable()).strip()
    return line or "another lorita command"


class OutputLock:
    """An exclusive lock on one output folder, held from ``acquire()`` to ``release()``.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "run"
        >>> first, second = OutputLock(out), OutputLock(out)
        >>> first.acquire()
        >>> try:
        ...     second.acquire()
        ... except LoritaError as err:
        ...     print("is being written by pid" in str(err))
        True
        >>> first.release(); second.acquire(); second.release()
    """

    def __init__(self, out: str | os.PathLike, what: str = "--out"):
        self.out = Path(out)
        self.path = lock_path(out)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (the folder holding ``out`` must exist); LoritaError naming the holder if taken."""
        if fcntl is None or self._fd is not None:
            return
        for _ in range(100):  # the holder may remove the file between our open and our flock: open it again
            fd = self._open()
            try:
                _flock_exclusive(fd)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise LoritaError(f"{self.what} {self.out} is being written by {holder}; wait until it ends (or stop "
                                  f"it), or choose another {self.what}") from None
            except BaseException:
                os.close(fd)
                raise
            if self._same_file(fd):
                if not _holds_lock_content(fd):
                    os.close(fd)
                    raise LoritaError(f"{self.path} (where lorita keeps the lock of {self.what} {self.out}) holds "
                                      "something lorita did not write; lorita never overwrites it: move it away, or "
                                      f"choose another {self.what}")
                self._fd = fd
                self._record()
                return
            os.close(fd)
        raise LoritaError(f"could not lock {self.path}: it keeps being replaced; is another command writing "
                          f"{self.what} {self.out}?")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                           | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            if os.path.islink(self.path) or os.path.isdir(self.path):
                raise LoritaError(f"{self.path} (the lock file of {self.what} {self.out}) is not a file lorita made "
                                  "(a link or a folder); remove it") from None
            if err.errno == errno.ENAMETOOLONG:
                raise LoritaError(f"{self.what} {self.out}: the name is too long for this file system (lorita "
                                  f"keeps {self.path.name} beside it); choose a shorter name") from None
            raise LoritaError(f"{self.what} {self.out}: cannot write in {self.out.parent} ({err.strerror or err}); "
                              f"choose a {self.what} in a folder you can write to") from None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _record(self) -> None:
        """Write who holds the lock into it (best effort: a full disk must not stop the command here)."""
        command = shlex.join(sys.argv).encode("utf-8", "replace")[:800].decode("utf-8", "ignore")  # bytes, not chars
        text = f"pid {os.getpid()} ({command})\n".encode("utf-8", "replace")
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text, 0)
        except OSError:
            pass

    def __del__(self):  # a command that failed before it committed or gave up its output: its lock goes with it
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter exit os may be half torn down
            pass

    def release(self) -> None:
        """Give the lock up and remove its file (nothing if not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._same_file(fd):
                os.unlink(self.path)  # while still locked: a waiting opener sees the file gone and opens anew
        except OSError:
            pass
        finally:
            os.close(fd)
