"""One file a script writes (a summary, a table, a plot), checked before any work so that nothing is lost.

The study's scripts (``experiments/converged_*.py``) write single files where the commands write folders
(``lorita.runs.output``). The same rules, for a file: the output is refused, before anything is read or
written, when it

- is a folder, a link or anything but a regular file (a link is never written through);
- is, or sits inside, one of the script's inputs (a results.json it reads, a run folder it pools);
- exists and is not this output's own kind, as ``own`` tells from its content (a summary replaces a summary,
  never a config or a result);
- has no folder above it (a typo is not turned into new folders).

The file is then written atomically (``lorita.atomic``), so a kill leaves the earlier file or the new one.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> check_output_file(folder / "summary.json", "--out", inputs=[folder / "runs"], own=json_with("studies"))
    PosixPath('...summary.json')
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Iterable

from lorita import jsonio
from lorita.errors import LoritaError
from lorita.runs.output import _lstat, _resolved

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def json_with(key: str, each: str | None = None) -> Callable[[Path], bool]:
    """A test of an existing output: a JSON object holding ``key`` (what the script writes there); with ``each``,
    ``key`` holds a list of objects, each holding ``each``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.json"; _ = path.write_text('{"studies": [{"per_seed": []}]}')
        >>> json_with("studies")(path), json_with("studies", "per_seed")(path), json_with("choices")(path)
        (True, True, False)
    """
    def own(path: Path) -> bool:
        try:
            data = jsonio.read(path, allow_nan=True)
        except LoritaError:
            return False
        if not isinstance(data, dict) or key not in data:
            return False
        items = data[key]
        return each is None or isinstance(items, list) and all(isinstance(i, dict) and each in i for i in items)
    own.kind = f"a JSON object with '{key}'" + (f", each entry with '{each}'" if each else "")
    return own


def is_png(path: Path) -> bool:
    """Whether ``path`` starts as a PNG image does (what a plot replaces).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.png"; _ = path.write_bytes(PNG_SIGNATURE); is_png(path)
        True
    """
    try:
        with open(path, "rb") as handle:
            return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:  # unreadable: not taken for the plot's own file
        return False


is_png.kind = "a PNG image"


def check_output_file(path: str | os.PathLike, what: str, *, inputs: Iterable[str | os.PathLike] = (),
                      own: Callable[[Path], bool] | None = None) -> Path:
    """``path`` as a ``Path`` if a script may write it (the module's rules), else a LoritaError saying why; ``what``
    names it in the message (``--out``), ``inputs`` are the files and folders the script reads, ``own`` tells an
    existing file of this output's kind (None: any existing regular file is replaced)."""
    path = Path(path)
    found = _lstat(path)
    if found is not None and not stat.S_ISREG(found.st_mode):
        kind = "a folder" if stat.S_ISDIR(found.st_mode) else "a link" if stat.S_ISLNK(found.st_mode) else \
            "not a regular file"
        raise LoritaError(f"{what} {path} is {kind}; give the path of a file to write")
    target = _resolved(path)
    for source in inputs:
        resolved = _resolved(source)
        if target == resolved or resolved in target.parents:
            raise LoritaError(f"{what} {path} is, or sits inside, an input of this script ({source}); write it "
                              "elsewhere")
    if not path.parent.is_dir():
        raise LoritaError(f"{what} {path}: no folder {path.parent}; create it first, or fix the path")
    if found is not None and own is not None and not own(path):
        raise LoritaError(f"{what} {path} exists and is not {getattr(own, 'kind', 'this output')}, what this script "
                          "writes there: it is not replaced; move it, or write elsewhere")
    return path


def check_distinct(outputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse two outputs of one script at the same path (``--out x --plot x``: the second would replace the
    first); None values are outputs not asked for.

    Example:
        >>> check_distinct({"--out": "a.json", "--plot": "a.json"})
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: --out and --plot are the same file (a.json); give each its own
    """
    seen: dict[Path, str] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        resolved = _resolved(path)
        if resolved in seen:
            raise LoritaError(f"{seen[resolved]} and {what} are the same file ({path}); give each its own")
        seen[resolved] = what
