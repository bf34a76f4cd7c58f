"""Atomic file writes: write a temporary file beside the target, fsync, then rename.

A crash or a full disk mid-write leaves the previous file intact and no temporary file
(a ``kill -9`` can leave a ``.NAME.XXXXXXXX.tmp`` behind, eight hex digits, which
``temp_target`` recognises: run folders tolerate and replace exactly these). The rename
replaces a symbolic link at the target instead of writing through it, and the new file
gets the usual permissions (``0666`` minus the umask), not ``0600``. ``swap`` exchanges
two folders in one step where the system can (Linux ``renameat2``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Iterator

# the temporary file of an atomic write of NAME: ".NAME.<8 hex digits>.tmp"
_TEMP = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.tmp")
_RENAME_EXCHANGE = 2  # renameat2 flag (linux/fs.h)
_AT_FDCWD = -100


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_target(name: str) -> str | None:
    """The file whose atomic write left the temporary file ``name``, or None if ``name`` is not one.

    Example:
        >>> temp_target(".metrics.csv.0a1b2c3d.tmp"), temp_target(".backup.tmp")
        ('metrics.csv', None)
    """
    match = _TEMP.fullmatch(name)
    return match["target"] if match else None


def _create_temp(path: Path) -> Path:
    """Create ``.NAME.<8 hex digits>.tmp`` beside ``path`` (exclusively: never an existing file or a link)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "out.txt")
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> open(target).read()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())  # after writing: some writers (safetensors) create the file anew
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "a.json")
        >>> atomic_write_text(target, "{}")
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _renameat2():
    """libc's renameat2 (glibc >= 2.28, Linux >= 3.15), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def swap(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Exchange two existing paths in one atomic step; False (nothing changed) where the system cannot.

    Linux's ``renameat2(RENAME_EXCHANGE)``: at every moment each name holds one of the two,
    so a crash never leaves either name missing. Elsewhere, or on a file system without
    it, returns False and the caller falls back to two renames.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "a").mkdir(); (d / "b").mkdir(); (d / "a" / "x").touch()
        >>> swap(d / "a", d / "b") in (True, False)
        True
    """
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # an old kernel or a file system without the flag
    raise OSError(code, os.strerror(code), str(a), None, str(b))
