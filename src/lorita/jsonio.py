"""The one JSON reader: every JSON lorita reads (model descriptions, run files, experiment configs,
``--model-arg`` / ``--set`` values) goes through here, so every way a text can fail to parse
(bad syntax, bytes that are not UTF-8, an integer past Python's 4300-digit limit, nesting too deep
for the parser) is a ``LoritaError`` that names the input and says what to do.

``NaN``, ``Infinity`` and numbers too large for a float (``1e400``) are refused unless the reader
allows them: JSON has no such numbers, and only lorita's own result files write ``NaN``. A key written
twice in one object is refused: JSON leaves its meaning open (Python's reader keeps the last, others
the first), so a file read one way here could be read another way elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from lorita.errors import LoritaError

MAX_FILE_BYTES = 256 << 20  # the largest JSON file read: lorita's own are kilobytes to a few megabytes


def _no_constant(name: str):
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


class _NotFinite(ValueError):
    """A NaN, an infinity, or a number too large for a float, where the reader allows none."""


class _DuplicateKey(ValueError):
    """A key written twice in one JSON object."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _DuplicateKey(twice)
    return out


def _reason(err: BaseException) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"is not UTF-8 text ({err.reason} at byte {err.start})"
    if isinstance(err, RecursionError):
        why = "nested too deeply to read"
    elif isinstance(err, _NotFinite):
        why = f"{err} is not a finite number"
    elif isinstance(err, _DuplicateKey):
        why = f"the key {json.dumps(str(err))} is written twice in one object; keep one"
    elif "digits" in str(err) and not isinstance(err, json.JSONDecodeError):
        why = "an integer with more than 4300 digits, which Python does not read from text"
    else:
        why = str(err)
    return f"is not valid JSON ({why})"


def parse(text: str | bytes, where: str, *, fix: str = "", allow_nan: bool = False) -> Any:
    """The JSON value in ``text``; anything unreadable is a LoritaError naming ``where``, then ``fix``.

    Example:
        >>> parse('{"width": 64}', "--model-arg")
        {'width': 64}
        >>> parse('{"x": NaN}', "spec.json", fix="write a number")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: spec.json is not valid JSON (NaN is not a finite number); write a number
        >>> parse('{"lr": 0.1, "lr": 0.2}', "train.json")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: train.json is not valid JSON (the key "lr" is written twice in one object; keep one)
    """
    hooks: dict[str, Any] = {"object_pairs_hook": _unique_keys}
    if not allow_nan:
        hooks.update(parse_constant=_no_constant, parse_float=_finite_float)
    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8")
        return json.loads(text, **hooks)
    except (ValueError, RecursionError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError, digit limit
        reason = _reason(err)
    raise LoritaError(f"{where} {reason}" + (f"; {fix}" if fix else ""))


def read(path: str | os.PathLike, *, fix: str = "", allow_nan: bool = False) -> Any:
    """The JSON value in file ``path``; an unreadable file or content is a LoritaError naming it.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.json"; _ = p.write_text('[1, 2]'); read(p)
        [1, 2]
    """
    path = Path(path)
    then = f"; {fix}" if fix else ""
    try:  # non-blocking: a FIFO named like a JSON file is refused, not waited on
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        try:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode):
                kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a device, FIFO or socket"
                raise LoritaError(f"{path} is not a regular file ({kind}){then}")
            if info.st_size > MAX_FILE_BYTES:
                raise LoritaError(f"{path} is {info.st_size} bytes, more than the {MAX_FILE_BYTES >> 20} MiB a JSON "
                                  f"file lorita reads may hold{then}")
            with os.fdopen(os.dup(handle), "rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        finally:
            os.close(handle)
    except OSError as err:
        raise LoritaError(f"{path} cannot be read ({err.strerror or err}){then}") from None
    if len(data) > MAX_FILE_BYTES:  # grew while it was read
        raise LoritaError(f"{path} is more than the {MAX_FILE_BYTES >> 20} MiB a JSON file lorita reads may hold{then}")
    return parse(data, str(path), fix=fix, allow_nan=allow_nan)


def parse_value(text: str, where: str) -> Any:
    """A command-line value: its JSON value, or the text itself when it is not JSON (a bare word).

    Text that is JSON but cannot be read (an integer past the digit limit, too deep, NaN) is an error.

    Example:
        >>> parse_value("256", "--model-arg width"), parse_value("relu", "--model-arg act")
        (256, 'relu')
    """
    try:
        json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError:
        return text
    except (ValueError, RecursionError):
        pass  # JSON, but not readable: parse() names the reason
    return parse(text, where, fix="give a plain number, word or short JSON value")
