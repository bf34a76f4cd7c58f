"""Character-level text held in memory: entries split into train/val/test, random context windows.

Nothing is downloaded. Two sources:

* ``"fortunes"``: the Debian package ``fortunes`` (``apt-get install fortunes``), about 40
  category files in ``/usr/share/games/fortunes`` whose entries are separated by lines
  holding only ``%``. Index files (``*.dat``), the ``*.u8`` links, other symlinks, hidden
  files and subfolders are skipped. Bytes that are not UTF-8 become U+FFFD (decoded with
  ``errors="replace"``, one warning naming the files): the package is not the user's to
  fix, and on Debian 12 every file decodes cleanly anyway.
* a folder of your own: every regular, non-hidden file in it (``*.txt`` or any name;
  ``*.dat`` is skipped; subfolders are not searched), strictly UTF-8 text (an error names
  the first file that is not, or that holds NUL bytes: a binary file). A symbolic link is
  read only when it leads to a file inside the folder (read once); one leading outside
  (``x.txt -> /etc/shadow``, as a downloaded corpus could hold) is an error naming it, so
  nothing outside the folder is ever read, trained on or sampled from. A file holding lines
  of only ``%`` is split on them, any other on blank lines.

Entries (not characters) are assigned to the splits by a permutation seeded with
``seed``, so no entry straddles two splits; each split keeps its entries in file order,
joined by ``SEPARATOR``. The vocabulary is the sorted set of characters of the TRAINING
split (plus those of the separator) after ``UNK``, the unknown symbol at id 0 that
every other character maps to.

Batching contract (as ``lorita.data.split.Split``): ``batch_size`` is the GLOBAL batch;
step ``s`` of ``epoch`` draws the window starts of the whole global batch from a
``torch.Generator`` seeded from ``(seed, epoch, s)``, and rank ``r`` of ``world_size``
K gets ``torch.tensor_split(starts, K)[r]``, so the union over ranks equals the
single-process batch and a sample depends on neither rank nor world size.

Example:
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (pathlib.Path(folder) / "a.txt").write_text("%\\n".join(f"entry {i}\\n" for i in range(40)))
    ...     ds = load_text_dataset(folder, seed=0)
    >>> ds.train.num_entries, ds.val.num_entries, ds.test.num_entries, ds.vocab[:3]
    (36, 2, 2, ['\ufffd', '\\n', ' '])
    >>> x, y = next(ds.train.batches(4, 8, steps=1))
    >>> tuple(x.shape), bool((x[:, 1:] == y[:, :-1]).all())
    ((4, 8), True)
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from lorita.data.datasets import DataNotFoundError
from lorita.data.split import derive_seed
from lorita.errors import LoritaError

logger = logging.getLogger(__name__)

FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_HOW_TO_GET = ("install the Debian package (apt-get install fortunes), or pass a folder of UTF-8 "
                       ".txt files instead of 'fortunes'")
FOLDER_HOW_TO_GET = ("put UTF-8 text files in a folder (entries separated by lines holding only '%', or by "
                     "blank lines) and pass that folder")
SEPARATOR = "\n\n"  # between entries: a paragraph break, so a window may cross into the next entry
UNK = "\ufffd"  # the unknown symbol (id 0); also what fortunes' undecodable bytes become
MAX_VOCAB = 65_536  # distinct characters, UNK included: the embedding and the output layer grow with it
SPLIT_SEED_SALT = 0x7E57  # mixed with the user's seed so the entry split differs from batch draws
ENCODE_CHUNK = 1 << 20  # characters encoded at a time: the encoder's working memory stays ~30 MB

_PERCENT_LINE = re.compile(r"^%[ \t\r]*$", flags=re.MULTILINE)
_BLANK_LINES = re.compile(r"\n[ \t\r]*\n(?:[ \t\r]*\n)*")


def split_entries(text: str) -> list[str]:
    """Entries of one file: split on lines holding only ``%`` if there is one, else on blank lines.

    Leading/trailing newlines of each entry are dropped (spaces kept: ASCII art needs
    them); empty entries are dropped.

    Example:
        >>> split_entries("one\\n%\\ntwo\\nlines\\n%\\n")
        ['one', 'two\\nlines']
        >>> split_entries("para one\\n\\n\\npara two\\n")
        ['para one', 'para two']
    """
    text = text.replace("\r\n", "\n")
    parts = _PERCENT_LINE.split(text) if _PERCENT_LINE.search(text) else _BLANK_LINES.split(text)
    entries = (part.strip("\n") for part in parts)
    return [entry for entry in entries if entry.strip()]


def _text_files(folder: Path, *, follow_symlinks: bool) -> list[Path]:
    """The files of ``folder`` that hold text, sorted by name (see the module docstring).

    ``follow_symlinks``: read links that lead to a file inside ``folder`` (a link leading
    outside is a DataNotFoundError); else skip every link.
    """
    files, seen = [], set()
    inside = folder.resolve()
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix == ".dat":
            continue
        if not follow_symlinks and (path.is_symlink() or path.suffix == ".u8"):
            continue
        try:
            real = path.resolve()
        except (OSError, RuntimeError):  # a link loop (RuntimeError up to Python 3.12)
            raise DataNotFoundError(f"{path} is a symbolic link that leads round in a loop; remove it") from None
        if path.is_symlink() and real.parent != inside and inside not in real.parents:
            raise DataNotFoundError(
                f"{path} is a symbolic link to {real}, outside {folder}; lorita reads only files inside a text "
                "folder (a link can make it read, train on and reveal any file). Copy the file into the folder "
                "or remove the link")
        if path.is_file() and real not in seen:
            seen.add(real)
            files.append(path)
    return files


def read_entries(folder: str | os.PathLike, *, strict: bool = True) -> list[str]:
    """Every entry of every text file in ``folder``, in file-name order.

    ``strict=True`` (own folders): a file that is not UTF-8 raises ``DataNotFoundError``
    naming it, and symlinks inside the folder are followed (others are an error).
    ``strict=False`` (the fortunes package): bad bytes become U+FFFD with one warning, and
    symlinks and ``*.u8`` files are skipped. A file holding NUL bytes is binary: an error.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = (pathlib.Path(folder) / "b.txt").write_text("two\\n%\\nthree\\n")
        ...     _ = (pathlib.Path(folder) / "a.txt").write_text("one\\n")
        ...     read_entries(folder)
        ['one', 'two', 'three']
    """
    folder = Path(folder).expanduser()
    entries, replaced = [], []
    for path in _text_files(folder, follow_symlinks=strict):
        data = path.read_bytes()
        if b"\x00" in data:
            raise DataNotFoundError(f"{path} holds NUL bytes: it is a binary file, not text; move it out of {folder}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            if strict:
                raise DataNotFoundError(
                    f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); convert it "
                    f"(e.g. iconv -f latin1 -t utf-8) or move it out of {folder}"
                ) from None
            text = data.decode("utf-8", errors="replace")
            replaced.append(path.name)
        entries.extend(split_entries(text))
    if replaced:
        logger.warning("%s: bytes that are not UTF-8 replaced by U+FFFD in %s", folder, ", ".join(replaced))
    return entries


def split_indices(n: int, *, val_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0,
                  name: str = "text") -> dict[str, list[int]]:
    """Entry indices ``0..n-1`` of each split (ascending), from a permutation seeded with ``seed``.

    Each non-empty split gets at least one entry; ``name`` is what an error calls the text.

    Example:
        >>> {key: len(idx) for key, idx in split_indices(20, val_fraction=0.1, test_fraction=0.1).items()}
        {'val': 2, 'test': 2, 'train': 16}
    """
    for what, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise LoritaError(f"{what} must be a number in [0, 1), got {value!r}; use 0 for an empty split")
    if val_fraction + test_fraction >= 1:
        raise LoritaError(f"val_fraction + test_fraction must be < 1 to leave training text, got "
                          f"{val_fraction} + {test_fraction}")
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise LoritaError(
            f"{name}: {n} entries are too few to split into train/val/test with fractions "
            f"{1 - val_fraction - test_fraction:g}/{val_fraction:g}/{test_fraction:g} (at least one entry each "
            "non-empty split); add text, separate entries with '%' lines or blank lines, or lower the fractions"
        )
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, SPLIT_SEED_SALT))
    perm = torch.randperm(n, generator=gen)
    parts = {"val": perm[:n_val], "test": perm[n_val:n_val + n_test], "train": perm[n_val + n_test:]}
    return {key: sorted(idx.tolist()) for key, idx in parts.items()}


class TextSplit:
    """One split: token ids (1-D; uint8 or int32 for a corpus, batches int64) of its entries joined by ``SEPARATOR``.

    Example:
        >>> s = TextSplit(torch.arange(10), num_entries=1)
        >>> x, y = next(s.batches(2, 4, steps=1, seed=0))
        >>> bool((y == x + 1).all())
        True
        >>> [tuple(t.shape) for t in s.eval_windows(4)]
        [(2, 4), (2, 4)]
    """

    def __init__(self, ids: torch.Tensor, num_entries: int):
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.is_floating_point() or ids.is_complex():
            got = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise LoritaError(f"TextSplit ids must be a 1-D integer tensor, got {got}")
        # kept in their own integer type (a corpus: one byte per character); batches come out int64
        self.ids = (ids.to(torch.int64) if ids.dtype == torch.bool else ids).contiguous()
        self.num_entries = int(num_entries)

    def __len__(self) -> int:
        return int(self.ids.numel())

    def __repr__(self) -> str:
        return f"TextSplit(tokens={len(self)}, entries={self.num_entries})"

    def _check_context(self, context: int) -> None:
        if isinstance(context, bool) or not isinstance(context, int) or context < 1:
            raise LoritaError(f"context must be an int >= 1 (tokens per window), got {context!r}")
        if len(self) < context + 1:
            raise LoritaError(
                f"this split holds {len(self)} tokens, a window needs context + 1 = {context + 1}; "
                "lower the context or give the split more text (a larger fraction or more files)"
            )

    def batches(self, batch_size: int, context: int, *, steps: int, seed: int = 0, epoch: int = 0,
                rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``steps`` batches (x, y) of random windows, int64 (B, T) each, ``y`` = ``x`` shifted by one.

        Window starts are uniform over the split. See the module docstring for the
        seeding and rank contract. Deterministic given the arguments.

        Example:
            >>> s = TextSplit(torch.arange(100), num_entries=1)
            >>> full = next(s.batches(4, 3, steps=1, seed=1))[0]
            >>> part = next(s.batches(4, 3, steps=1, seed=1, rank=1, world_size=2))[0]
            >>> torch.equal(part, full[2:])
            True
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LoritaError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise LoritaError(f"steps must be an int >= 0 (batches to draw), got {steps!r}")
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise LoritaError(f"world_size must be an int >= 1, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise LoritaError(f"rank must be an int in [0, {world_size}), got {rank!r}")
        self._check_context(context)
        offsets = torch.arange(context + 1)  # (T+1,)
        for step in range(steps):
            gen = torch.Generator()
            gen.manual_seed(derive_seed(seed, epoch, step))
            starts = torch.randint(0, len(self) - context, (batch_size,), generator=gen)  # (G,)
            local = torch.tensor_split(starts, world_size)[rank]  # (B,)
            chunk = self.ids[local[:, None] + offsets].long()  # (B, T+1)
            yield chunk[:, :-1], chunk[:, 1:]  # (B, T), (B, T)

    def eval_windows(self, context: int, max_windows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-overlapping windows (x, y), int64 (W, T) each, in split order, for loss evaluation.

        Window ``i`` predicts tokens ``i*T + 1 .. (i+1)*T``; together they cover every
        target but the last ``(len - 1) % T`` (fewer than one window), so the mean
        token loss over them is the split's loss. ``max_windows`` keeps that many,
        evenly spaced over the split (still in order), for a cheaper estimate.

        Example:
            >>> x, y = TextSplit(torch.arange(9), num_entries=1).eval_windows(3)
            >>> x.tolist(), y.tolist()
            ([[0, 1, 2], [3, 4, 5]], [[1, 2, 3], [4, 5, 6]])
        """
        self._check_context(context)
        count = (len(self) - 1) // context
        index = torch.arange(count)
        if max_windows is not None:
            if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
                raise LoritaError(f"max_windows must be an int >= 1 or None (all windows), got {max_windows!r}")
            if max_windows < count:
                index = torch.linspace(0, count - 1, max_windows, dtype=torch.float64).round().long()
        starts = index * context  # (W,)
        chunk = self.ids[starts[:, None] + torch.arange(context + 1)].long()  # (W, T+1)
        return chunk[:, :-1], chunk[:, 1:]  # (W, T), (W, T)


@dataclass
class TextDataset:
    """Train/val/test splits of one character-level corpus and its vocabulary.

    Example:
        >>> ds = TextDataset.from_entries("demo", [f"line {i}" for i in range(20)], source="memory")
        >>> ds.decode(ds.encode("line 7!")), ds.vocab_size
        ('line 7\ufffd', 17)
    """

    name: str
    train: TextSplit
    val: TextSplit
    test: TextSplit
    vocab: list[str]
    source: str

    def __post_init__(self) -> None:
        if not self.vocab or self.vocab[0] != UNK or len(set(self.vocab)) != len(self.vocab):
            raise LoritaError(f"vocab must be distinct characters starting with UNK {UNK!r}, got {self.vocab[:5]}...")
        codes = torch.tensor([ord(c) for c in self.vocab[1:]], dtype=torch.int32)
        self._codes, self._order = torch.sort(codes)  # sorted code points, their position in vocab[1:]

    @property
    def ids_dtype(self) -> torch.dtype:
        """The smallest type that holds every token id: uint8 up to 256 symbols, else int32."""
        return torch.uint8 if len(self.vocab) <= 256 else torch.int32

    @property
    def vocab_size(self) -> int:
        """Number of token ids, the unknown symbol included."""
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """Token ids (1-D int64) of ``text``; characters outside the vocabulary become 0 (``UNK``)."""
        return self._encode(text, torch.int64)

    def _encode(self, text: str, dtype: torch.dtype) -> torch.Tensor:
        """``encode`` into ``dtype``, ``ENCODE_CHUNK`` characters at a time (no int64 or UTF-32 copy of it all)."""
        out = torch.empty(len(text), dtype=dtype)  # (L,)
        for start in range(0, len(text), ENCODE_CHUNK):
            piece = text[start:start + ENCODE_CHUNK]
            points = torch.frombuffer(bytearray(piece.encode("utf-32-le")), dtype=torch.int32)  # (C,)
            pos = torch.searchsorted(self._codes, points).clamp_max(len(self._codes) - 1)  # (C,)
            hit = self._codes[pos] == points
            out[start:start + len(piece)] = torch.where(hit, self._order[pos] + 1, 0)
        return out

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The text of token ids (any shape is flattened)."""
        flat = ids.flatten().tolist() if isinstance(ids, torch.Tensor) else list(ids)
        try:
            return "".join(self.vocab[i] for i in flat)
        except (IndexError, TypeError):
            bad = next(i for i in flat if not isinstance(i, int) or not 0 <= i < len(self.vocab))
            raise LoritaError(f"token id {bad!r} is outside the vocabulary (0..{len(self.vocab) - 1})") from None

    @classmethod
    def from_entries(cls, name: str, entries: Sequence[str], *, source: str, val_fraction: float = 0.05,
                     test_fraction: float = 0.05, seed: int = 0) -> "TextDataset":
        """Split ``entries`` (seeded, by entry), build the vocabulary from train, encode the splits."""
        parts = split_indices(len(entries), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                              name=name)
        texts = {key: SEPARATOR.join(entries[i] for i in idx) for key, idx in parts.items()}
        vocab = [UNK] + sorted((set(texts["train"]) | set(SEPARATOR)) - {UNK})
        if len(vocab) > MAX_VOCAB:
            raise LoritaError(f"{name}: the training text holds {len(vocab) - 1:,} distinct characters; lorita's "
                              f"character-level models take at most {MAX_VOCAB - 1:,} (one script's text holds a few "
                              "hundred, Chinese or Japanese some thousands): remove the files that are not text in "
                              "one language")
        empty = TextSplit(torch.zeros(0, dtype=torch.int64), 0)
        ds = cls(name, empty, empty, empty, vocab, source)  # the vocabulary first, to encode with
        for key in ("train", "val", "test"):
            setattr(ds, key, TextSplit(ds._encode(texts.pop(key), ds.ids_dtype), len(parts[key])))
        return ds


def load_text_dataset(name: str | os.PathLike = "fortunes", *, val_fraction: float = 0.05,
                      test_fraction: float = 0.05, seed: int = 0) -> TextDataset:
    """Load ``"fortunes"`` (Debian package) or a folder of your text files, split by entry.

    Raises ``DataNotFoundError`` (a ``LoritaError``) when the folder or its text files are
    missing or a file of your folder is not UTF-8, and ``LoritaError`` for bad fractions
    or too few entries to split.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = (pathlib.Path(folder) / "t.txt").write_text("\\n\\n".join(f"para {i}" for i in range(30)))
        ...     ds = load_text_dataset(folder, val_fraction=0.1, test_fraction=0.1, seed=3)
        >>> [s.num_entries for s in (ds.train, ds.val, ds.test)], ds.vocab_size
        ([24, 3, 3], 16)
    """
    fortunes = isinstance(name, str) and name.strip().lower() == "fortunes"
    folder = FORTUNES_DIR if fortunes else Path(name).expanduser()
    key = "fortunes" if fortunes else folder.name or str(folder)
    how = FORTUNES_HOW_TO_GET if fortunes else FOLDER_HOW_TO_GET
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataNotFoundError(f"{key}: looked in {folder} ({state}); {how}. Nothing is downloaded.")
    if not _text_files(folder, follow_symlinks=not fortunes):
        raise DataNotFoundError(f"{key}: no text files in {folder} (only subfolders, hidden or .dat files); {how}.")
    entries = read_entries(folder, strict=not fortunes)
    if not entries:
        raise DataNotFoundError(f"{key}: the text files in {folder} hold no entries (all empty); {how}.")
    ds = TextDataset.from_entries(key, entries, source=str(folder), val_fraction=val_fraction,
                                  test_fraction=test_fraction, seed=seed)
    logger.info("%s from %s: %d entries; train %d, val %d, test %d characters; vocabulary %d", key, folder,
                len(entries), len(ds.train), len(ds.val), len(ds.test), ds.vocab_size)
    return ds


def text_dataset_status(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Rows like ``lorita.data.dataset_status``: ``fortunes``, and ``text`` for ``data_dir`` when given.

    Each dict has keys ``name``, ``available`` (bool), ``found_at`` (str or None),
    ``looked_in`` (list of str) and ``how_to_get`` (str). Files are listed, not read.

    Example:
        >>> [row["name"] for row in text_dataset_status()]
        ['fortunes']
    """
    places = [("fortunes", FORTUNES_DIR, False, FORTUNES_HOW_TO_GET)]
    if data_dir is not None:
        places.append(("text", Path(data_dir).expanduser(), True, FOLDER_HOW_TO_GET))
    rows = []
    for name, folder, follow, how in places:
        found = folder.is_dir() and bool(_text_files(folder, follow_symlinks=follow))
        rows.append({"name": name, "available": found, "found_at": str(folder) if found else None,
                     "looked_in": [str(folder)], "how_to_get": how})  # fmt: skip
    return rows
