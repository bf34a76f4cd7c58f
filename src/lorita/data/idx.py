"""Read MNIST-style IDX files (MNIST, Fashion-MNIST), gzipped or not.

An IDX file is a 4-byte big-endian magic number, one big-endian uint32 size
per dimension, then the raw values. We read only unsigned-byte files:
``0x00000803`` (images, N x H x W) and ``0x00000801`` (labels, N). Gzip is
detected from the content (``1f 8b``), not from the file name. A wrong magic
number, a short header or a body that does not match the header raises
``LoritaError`` naming the file and what is wrong.

Expected file names in a folder (each either plain or with ``.gz``)::

    train-images-idx3-ubyte  train-labels-idx1-ubyte
    t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte
"""

from __future__ import annotations

import logging
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from lorita.errors import LoritaError

logger = logging.getLogger(__name__)

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


CHUNK = 1 << 20  # compressed bytes read at a time
MAX_GZIP_RATIO = 1100  # deflate gives at most ~1032 decompressed bytes per compressed byte


class _Gunzip:
    """Read ``n`` decompressed bytes at a time from a gzip file, never decompressing more than asked
    (``zlib.decompressobj`` with ``max_length``): a header can be checked before the body is inflated,
    and a body longer than its header says stops one byte past it (a 1 MB file of zeros would be 1 GB)."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing, CRC checked at its end
        self.pending = b""  # input given to the current member but not yet inflated (output was capped)

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            if self.pending:
                data, self.pending = self.pending, b""
            elif self.inflate.eof:  # a member ended: another may follow (gzip allows concatenated members)
                data = self._next_member()
                if not data:
                    break
            else:
                data = self.handle.read(CHUNK)
                if not data:
                    raise EOFError("the compressed stream ends before its end marker")
            out += self.inflate.decompress(data, n - len(out))
            # at a member's end what follows is in unused_data (unconsumed_tail may repeat it)
            self.pending = b"" if self.inflate.eof else self.inflate.unconsumed_tail
        return out  # not copied to bytes: a body can be hundreds of megabytes

    def _next_member(self) -> bytes:
        """After a member's end: the start of the next one, past any zero padding (which gzip allows after a
        member, as ``gunzip`` and Python's ``gzip`` do), with a fresh decompressor; b"" at the file's end."""
        data = self.inflate.unused_data
        while True:
            data = data.lstrip(b"\0")
            if data:
                self.inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                return data
            data = self.handle.read(CHUNK)
            if not data:
                return b""


def _open(path: Path):
    """(handle, reader, limit): the file, something with ``read(n)`` giving its IDX bytes, and the most
    bytes of data it can hold (its size; for gzip, MAX_GZIP_RATIO times its size)."""
    if not path.is_file():  # a FIFO would wait for a writer for ever; a folder cannot be read
        raise LoritaError(f"cannot read IDX file {path}: it is not a regular file")
    try:
        handle = open(path, "rb")
        size = path.stat().st_size
        gzipped = handle.read(2) == b"\x1f\x8b"
        handle.seek(0)
    except OSError as err:
        raise LoritaError(f"cannot read IDX file {path}: {err}") from err
    if gzipped:
        return handle, _Gunzip(handle), MAX_GZIP_RATIO * size
    return handle, handle, size


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read one unsigned-byte IDX file whose magic number must be ``magic``; returns a uint8 array.

    The header is read and checked first, against the file's size (or what a gzip file of that size
    can hold), and no more data is read or decompressed than it announces, plus one byte to tell a
    longer file.

    Example:
        >>> import tempfile, os, struct
        >>> p = os.path.join(tempfile.mkdtemp(), "labels")
        >>> _ = open(p, "wb").write(struct.pack(">II", LABELS_MAGIC, 3) + bytes([1, 2, 3]))
        >>> read_idx(p, LABELS_MAGIC).tolist()
        [1, 2, 3]
    """
    return _reading(path, magic, _read_idx)


def read_idx_shape(path: str | Path, magic: int) -> tuple[int, ...]:
    """The shape the header of IDX file ``path`` announces (checked as ``read_idx`` checks it), its data unread.

    Example:
        >>> import tempfile, os, struct
        >>> p = os.path.join(tempfile.mkdtemp(), "labels")
        >>> _ = open(p, "wb").write(struct.pack(">II", LABELS_MAGIC, 3) + bytes([1, 2, 3]))
        >>> read_idx_shape(p, LABELS_MAGIC)
        (3,)
    """
    return _reading(path, magic, _read_header)


def _reading(path: str | Path, magic: int, read):
    """``read(path, reader, limit, magic)`` on the opened IDX file (plain or gzip), its errors as LoritaError."""
    path = Path(path)
    handle, reader, limit = _open(path)
    try:
        with handle:
            return read(path, reader, limit, magic)
    except (OSError, EOFError, zlib.error) as err:
        raise LoritaError(f"IDX file {path} is a damaged or truncated gzip file ({err}); download it again") from err


def _read_header(path: Path, reader, limit: int, magic: int) -> tuple[int, ...]:
    raw = reader.read(4)
    if len(raw) < 4:
        raise LoritaError(f"IDX file {path} is too short ({len(raw)} bytes) to hold a magic number; it is truncated")
    (found,) = struct.unpack(">I", raw)
    if found != magic:
        kind = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}.get(magic, "IDX")
        raise LoritaError(
            f"IDX file {path} has magic number 0x{found:08x}, expected 0x{magic:08x} ({kind}, unsigned bytes); "
            "is it the right file, and not an HTML page or a different dataset?"
        )
    ndim = magic & 0xFF
    raw = reader.read(4 * ndim)
    header = 4 + 4 * ndim
    if len(raw) < 4 * ndim:
        raise LoritaError(f"IDX file {path} is truncated: its header needs {header} bytes, the file has "
                          f"{4 + len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw)
    expected = math.prod(dims)  # Python ints: a crafted header cannot overflow the check
    if expected > limit:
        raise LoritaError(f"IDX file {path} is truncated: header says shape {dims} ({expected} bytes of data), "
                          f"more than a file of its size can hold; download it again")
    return dims


def _read_idx(path: Path, reader, limit: int, magic: int) -> np.ndarray:
    dims = _read_header(path, reader, limit, magic)
    expected = math.prod(dims)
    body = reader.read(expected + 1)  # one byte more tells a longer file, without reading all of it
    if len(body) != expected:
        what = "truncated" if len(body) < expected else "longer than its header says"
        found_text = f"found {len(body)} bytes" if len(body) < expected else "found more"
        raise LoritaError(f"IDX file {path} is {what}: header says shape {dims} ({expected} bytes of data), "
                          f"{found_text}; download it again")
    if isinstance(reader, _Gunzip) and reader.read(1):  # the rest of the stream: its CRC is checked at its end
        raise LoritaError(f"IDX file {path} is longer than its header says; download it again")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def read_idx_images(path: str | Path) -> torch.Tensor:
    """Read an IDX image file as uint8 (N, 1, H, W).

    Example:
        >>> import tempfile, os, struct
        >>> p = os.path.join(tempfile.mkdtemp(), "images")
        >>> _ = open(p, "wb").write(struct.pack(">IIII", IMAGES_MAGIC, 2, 3, 3) + bytes(18))
        >>> tuple(read_idx_images(p).shape)
        (2, 1, 3, 3)
    """
    array = read_idx(path, IMAGES_MAGIC)  # (N, H, W)
    if array.ndim != 3 or min(array.shape[1:]) < 1:
        raise LoritaError(f"IDX image file {path} must hold images of shape (N, H, W) with H, W >= 1, "
                          f"found shape {array.shape}")
    return torch.from_numpy(array.copy()).unsqueeze(1)  # (N, 1, H, W)


def read_idx_labels(path: str | Path) -> torch.Tensor:
    """Read an IDX label file as int64 (N,).

    Example:
        >>> import tempfile, os, struct
        >>> p = os.path.join(tempfile.mkdtemp(), "labels")
        >>> _ = open(p, "wb").write(struct.pack(">II", LABELS_MAGIC, 2) + bytes([7, 0]))
        >>> read_idx_labels(p).tolist()
        [7, 0]
    """
    return torch.from_numpy(read_idx(path, LABELS_MAGIC).astype(np.int64))


def find_idx_file(folder: str | Path, stem: str) -> Path | None:
    """The path of ``stem`` or ``stem.gz`` inside ``folder`` (plain file preferred), or None.

    Example:
        >>> find_idx_file("/nonexistent", "train-images-idx3-ubyte") is None
        True
    """
    folder = Path(folder)
    for name in (stem, stem + ".gz"):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def missing_idx_files(folder: str | Path) -> list[str]:
    """Names of the four IDX files not present (plain or .gz) in ``folder``.

    Example:
        >>> len(missing_idx_files("/nonexistent"))
        4
    """
    return [stem for stem in IDX_FILES.values() if find_idx_file(folder, stem) is None]


def _pair_paths(folder: Path, images_stem: str, labels_stem: str) -> tuple[Path, Path, tuple[int, ...]]:
    """The images and labels files of one split and the images' shape, their headers checked (magic numbers, sizes
    against the files', equal counts) before either body is read: a small gzip file can announce hundreds of
    megabytes."""
    images_path, labels_path = find_idx_file(folder, images_stem), find_idx_file(folder, labels_stem)
    if images_path is None or labels_path is None:
        missing = [s for s, p in ((images_stem, images_path), (labels_stem, labels_path)) if p is None]
        raise LoritaError(f"IDX folder {folder} lacks {', '.join(missing)} (plain or .gz)")
    shape, n_labels = read_idx_shape(images_path, IMAGES_MAGIC), read_idx_shape(labels_path, LABELS_MAGIC)[0]
    if shape[0] != n_labels:
        raise LoritaError(f"{images_path} holds {shape[0]} images but {labels_path} holds {n_labels} labels; the "
                          "files do not belong together")
    return images_path, labels_path, shape


def _check_image_sizes(folder: Path, train: tuple[int, ...], test: tuple[int, ...]) -> None:
    if train[1:] != test[1:]:
        raise LoritaError(f"IDX folder {folder}: train images are {tuple(train[1:])} but test images are "
                          f"{tuple(test[1:])}; the files come from different datasets")


def check_idx_folder(folder: str | Path) -> None:
    """The four IDX files of ``folder`` checked as ``read_idx_folder`` checks them, by their headers alone (the
    images and labels themselves are not read); a LoritaError says what is wrong.

    Example:
        >>> check_idx_folder("/nonexistent")
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: IDX folder /nonexistent lacks train-images-idx3-ubyte, train-labels-idx1-ubyte (plain or .gz)
    """
    folder = Path(folder)
    train = _pair_paths(folder, IDX_FILES["train_images"], IDX_FILES["train_labels"])[2]
    test = _pair_paths(folder, IDX_FILES["test_images"], IDX_FILES["test_labels"])[2]
    _check_image_sizes(folder, train, test)


def _read_pair(folder: Path, images_stem: str, labels_stem: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_path, labels_path, _ = _pair_paths(folder, images_stem, labels_stem)
    return read_idx_images(images_path), read_idx_labels(labels_path)


def read_idx_folder(folder: str | Path) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Read the four IDX files of a folder: ((train_images, train_labels), (test_images, test_labels)).

    Images are uint8 (N, 1, H, W), labels int64 (N,).

    Example:
        >>> train, test = read_idx_folder("/usr/share/datasets/fashion-mnist")  # doctest: +SKIP
        >>> train_x, train_y = train  # doctest: +SKIP
        >>> tuple(train_x.shape)  # doctest: +SKIP
        (60000, 1, 28, 28)
    """
    folder = Path(folder)
    train = _read_pair(folder, IDX_FILES["train_images"], IDX_FILES["train_labels"])
    test = _read_pair(folder, IDX_FILES["test_images"], IDX_FILES["test_labels"])
    _check_image_sizes(folder, tuple(train[0].shape[1:]), tuple(test[0].shape[1:]))
    logger.debug("read IDX folder %s: %d train, %d test", folder, train[0].shape[0], test[0].shape[0])
    return train, test
