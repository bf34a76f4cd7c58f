"""Read CIFAR-10 and CIFAR-100 from their official python-pickle folders, safely.

The official files are Python 2 pickles (read with ``encoding="bytes"``, so
dict keys are bytes such as ``b"data"``). Each holds a dict with ``data``, a
uint8 numpy array (N, 3072) in channel-major order, and labels (``labels``
for CIFAR-10, ``fine_labels`` for CIFAR-100).

Pickles can run arbitrary code, so we unpickle with ``SafeUnpickler``, whose
``find_class`` allows only what a numpy array needs:
``numpy.core.multiarray._reconstruct`` (also spelled ``numpy._core...``),
``numpy.ndarray`` and ``numpy.dtype``; plus ``_codecs.encode`` restricted to
``(str, "latin1")``, which is how Python 3 writes ``bytes`` at pickle
protocol 2 (re-pickled copies of the files need it; it only turns a string
into bytes) and ``bytes()`` without arguments (how it writes an empty ``b""``).
Everything else raises ``LoritaError``. An array is filled only
with a plain numeric dtype (no objects, fields or sub-arrays), at most two
dimensions and exactly as many bytes as its shape needs, all from the file
(``_CheckedArray``), so a few bytes of pickle cannot ask for a large array or
hand numpy a state it crashes on; ``data`` must be such an array and the
labels a flat list of ints (or a 1-D array) as long as it, checked before any
conversion, so back-references cannot multiply a small file either.

Folder layouts::

    cifar-10-batches-py/  data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/     train, test, meta
"""

from __future__ import annotations

import codecs
import importlib
import logging
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorita.errors import LoritaError

logger = logging.getLogger(__name__)

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR10_META = "batches.meta"
CIFAR100_TRAIN = "train"
CIFAR100_TEST = "test"
CIFAR100_META = "meta"


def _multiarray_reconstruct() -> Any:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise LoritaError("this numpy has no multiarray._reconstruct; cannot read numpy arrays from CIFAR pickles")


class _NdarrayName:
    """What a CIFAR pickle's ``numpy.ndarray`` global stands for: an argument to ``_reconstruct`` only. Called
    directly, ``ndarray(shape, dtype)`` would allocate an array of any size from a few bytes of pickle."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise LoritaError("refusing numpy.ndarray(...) called directly in a CIFAR pickle (numpy builds arrays with "
                          "_reconstruct and then fills them from the file's bytes)")


_NDARRAY = _NdarrayName()


class _CheckedArray(np.ndarray):
    """The array a CIFAR pickle's ``_reconstruct`` starts, empty; the pickle's next step fills it
    (``__setstate__``), taken only for a plain numeric array whose every byte the file holds."""

    def __setstate__(self, state: Any) -> None:
        _check_array_state(state)
        super().__setstate__(state)


def _check_array_state(state: Any) -> None:
    """numpy's array state ``(version, shape, dtype, is_fortran, raw bytes)``, or LoritaError: a dtype of plain
    numbers (no objects, fields or sub-arrays, which numpy may crash on), at most 2 dimensions (CIFAR's images and
    labels) and exactly the bytes the shape needs."""
    if not (isinstance(state, tuple) and len(state) == 5):
        raise LoritaError("refusing a numpy array state that is not numpy's (version, shape, dtype, order, data)")
    _, shape, dtype, _, raw = state
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None \
            or dtype.subdtype is not None:
        what = dtype.str if isinstance(dtype, np.dtype) else type(dtype).__name__  # never str() of the file's objects
        raise LoritaError(f"refusing a numpy array of dtype {what} in a CIFAR pickle: its data and labels are plain "
                          "integers")
    if not (isinstance(shape, tuple) and len(shape) <= 2 and all(type(n) is int and n >= 0 for n in shape)):
        what = f"{len(shape)} dimensions" if isinstance(shape, tuple) else type(shape).__name__
        raise LoritaError(f"refusing a numpy array shaped by {what} in a CIFAR pickle: its data is (N, 3072) and its "
                          "labels (N,)")
    if not isinstance(raw, bytes) or len(raw) != math.prod(shape) * dtype.itemsize:
        raise LoritaError(f"refusing a numpy array of shape {shape} whose data is not its {math.prod(shape)} items' "
                          "bytes in a CIFAR pickle")


def _reconstruct(cls: Any, shape: Any = None, dtype: Any = None) -> Any:
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``, which a pickle fills in next from its own bytes: an empty start,
    so an array is never larger than the file holds (``_CheckedArray``)."""
    if cls is not _NDARRAY or type(shape) is not tuple or shape != (0,) or type(dtype) not in (bytes, str) \
            or dtype not in (b"b", "b"):
        raise LoritaError("refusing numpy _reconstruct(...) of another class, shape or dtype in a CIFAR pickle: "
                          "numpy's own pickles start from an empty array (ndarray, shape (0,), dtype b'b')")
    return _multiarray_reconstruct()(_CheckedArray, shape, dtype)


def _dtype(code: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype(code, align, copy)`` as numpy pickles a dtype: from a short type code (``'u1'``, ``'<i8'``), never
    from a nested description the file could make exponentially large."""
    if type(code) not in (str, bytes) or len(code) > 8 or type(align) not in (bool, int) \
            or type(copy) not in (bool, int):
        raise LoritaError("refusing numpy.dtype(...) of anything but a short type code in a CIFAR pickle")
    try:
        return np.dtype(code.decode("latin1") if isinstance(code, bytes) else code, bool(align), bool(copy))
    except TypeError:
        raise LoritaError("refusing numpy.dtype(...) of an unknown type code in a CIFAR pickle") from None


def _check_dtype_state(state: Any) -> None:
    """numpy's dtype state of a plain type ``(version, byte order, None, None, None, size, alignment, flags[,
    None])``: no sub-array, names or fields, which could describe objects or grow without bound."""
    if not (type(state) is tuple and len(state) in (8, 9) and type(state[0]) is int and type(state[1]) in (str, bytes)
            and len(state[1]) == 1 and all(v is None for v in state[2:5]) and all(type(v) is int for v in state[5:8])
            and (len(state) == 8 or state[8] is None)):
        raise LoritaError("refusing a numpy dtype state with sub-arrays, fields or metadata in a CIFAR pickle: its "
                          "data and labels are plain integers")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``: how Python 3 writes an empty ``b""`` at pickle protocol 2; with arguments it could allocate."""
    if args:
        raise LoritaError("refusing bytes(...) with arguments in a CIFAR pickle (only the empty bytes() is written)")
    return b""


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding != "latin1":
        raise LoritaError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}) in a CIFAR pickle")
    return codecs.encode(text, "latin1")


class SafeUnpickler(pickle._Unpickler):
    """An Unpickler that builds only plain containers and numpy arrays; any other global is refused.

    The pure-Python unpickler, for three of its steps: a dict key must be bytes, str or int before it is hashed (a
    nested tuple or dtype key, a few hundred bytes, could take exponential time to hash), sets are refused (official
    files hold none), and a state is set (BUILD) only on a numpy array (``_CheckedArray``) or a plain numpy dtype.
    The bulk of a CIFAR file is one byte string, which it reads as fast as the C unpickler.

    Example:
        >>> import io, numpy as np
        >>> data = pickle.dumps({"data": np.arange(3, dtype=np.uint8)}, protocol=2)
        >>> SafeUnpickler(io.BytesIO(data)).load()["data"].tolist()
        [0, 1, 2]
    """

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct
        if module == "numpy" and name == "ndarray":
            return _NDARRAY
        if module == "numpy" and name == "dtype":
            return _dtype
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module in ("__builtin__", "builtins") and name == "bytes":
            return _empty_bytes
        raise LoritaError(
            f"refusing to load global {module}.{name} from a pickle: CIFAR files hold only dicts, lists, "
            "strings, ints and numpy arrays, so this file is not an official CIFAR file (and may be malicious)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise LoritaError("refusing a persistent id in a CIFAR pickle: official CIFAR files have none")

    dispatch = dict(pickle._Unpickler.dispatch)

    def _load_setitem(self) -> None:
        _check_key(self.stack[-2])
        pickle._Unpickler.load_setitem(self)

    def _load_setitems(self) -> None:  # the items since the mark are the whole current stack
        for key in self.stack[::2]:
            _check_key(key)
        pickle._Unpickler.load_setitems(self)

    def _load_dict(self) -> None:
        for key in self.stack[::2]:
            _check_key(key)
        pickle._Unpickler.load_dict(self)

    def _refuse_set(self) -> None:
        raise LoritaError("refusing a set in a CIFAR pickle: its files hold dicts, lists, strings, ints and arrays")

    def _load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.dtype):
            _check_dtype_state(state)
        elif not isinstance(inst, _CheckedArray):  # its __setstate__ checks the array's state
            raise LoritaError(f"refusing to set the state of a {type(inst).__name__} in a CIFAR pickle")
        pickle._Unpickler.load_build(self)

    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.DICT[0]] = _load_dict
    dispatch[pickle.BUILD[0]] = _load_build
    for _opcode in (pickle.EMPTY_SET, pickle.ADDITEMS, pickle.FROZENSET):
        dispatch[_opcode[0]] = _refuse_set
    del _opcode


def _check_key(key: Any) -> None:
    """A dict key of a CIFAR pickle: bytes, str or int (hashed at once, whatever their size: linear)."""
    if type(key) not in (bytes, str, int):
        raise LoritaError(f"refusing a dict key of type {type(key).__name__} in a CIFAR pickle: its keys are strings")


def load_pickle(path: str | Path) -> Any:
    """Unpickle a CIFAR file with ``SafeUnpickler`` and ``encoding="bytes"``.

    Example:
        >>> batch = load_pickle("cifar-10-batches-py/data_batch_1")  # doctest: +SKIP
        >>> batch[b"data"].shape  # doctest: +SKIP
        (10000, 3072)
    """
    path = Path(path)
    if not path.is_file():  # a FIFO would wait for a writer for ever
        raise LoritaError(f"cannot read CIFAR pickle {path}: it is not a regular file")
    try:
        with path.open("rb") as handle:
            record = SafeUnpickler(handle, encoding="bytes").load()
    except LoritaError as err:
        raise LoritaError(f"{path}: {err}") from err
    except (MemoryError, OverflowError):  # a length field far past the file's size
        raise LoritaError(f"cannot read CIFAR pickle {path}: it declares a size it cannot hold; the file is damaged "
                          "or crafted") from None
    except Exception as err:  # any other failure while unpickling (numpy's SystemError on a bad dtype too): a bad file
        raise LoritaError(f"cannot read CIFAR pickle {path}: {type(err).__name__}: {str(err)[:200]}; is it truncated "
                          "or crafted?") from err
    if isinstance(record, dict):  # plain arrays out: _CheckedArray's check is for this file's state only
        record = {k: v.view(np.ndarray) if isinstance(v, _CheckedArray) else v for k, v in record.items()}
    return record


def _get(record: Any, key: str, path: Path) -> Any:
    if not isinstance(record, dict):
        raise LoritaError(f"CIFAR file {path} should hold a dict, found {type(record).__name__}")
    for candidate in (key.encode(), key):
        if candidate in record:
            return record[candidate]
    keys = sorted(_short(k) for k in list(record)[:20])
    raise LoritaError(f"CIFAR file {path} has no '{key}' entry (it has {keys}{', ...' if len(record) > 20 else ''})")


def _short(value: Any) -> str:
    """A key or name of a CIFAR file as text, at most 40 characters; what is not bytes or str by its type."""
    if isinstance(value, bytes):
        return value[:40].decode("utf-8", "replace")
    return value[:40] if isinstance(value, str) else f"<{type(value).__name__}>"


def _labels(labels: Any, n: int, key: str, path: Path) -> np.ndarray:
    """``labels`` as int64, checked to be ``n`` integers (a 1-D integer array, or a flat list of ints) before any
    conversion."""
    if isinstance(labels, np.ndarray):
        ok = labels.shape == (n,) and (not n or np.issubdtype(labels.dtype, np.integer))
    else:
        ok = isinstance(labels, (list, tuple)) and len(labels) == n and all(type(v) is int and -2**63 <= v < 2**63
                                                                            for v in labels)
    if not ok:
        found = labels.shape if isinstance(labels, np.ndarray) else \
            f"{len(labels)} items" if isinstance(labels, (list, tuple)) else type(labels).__name__
        raise LoritaError(f"CIFAR file {path}: '{key}' should be {n} integers (a list or a 1-D array), found {found}")
    return np.asarray(labels, dtype=np.int64)


def read_cifar_batch(path: str | Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one CIFAR data file: (uint8 images (N, 3, 32, 32), int64 labels (N,)).

    ``label_key`` is ``"labels"`` for CIFAR-10 and ``"fine_labels"`` for CIFAR-100.

    Example:
        >>> x, y = read_cifar_batch("cifar-10-batches-py/test_batch", "labels")  # doctest: +SKIP
        >>> tuple(x.shape), tuple(y.shape)  # doctest: +SKIP
        ((10000, 3, 32, 32), (10000,))
    """
    path = Path(path)
    record = load_pickle(path)
    data = _get(record, "data", path)
    if not isinstance(data, np.ndarray):  # a list could repeat one row by reference: kilobytes asking for gigabytes
        raise LoritaError(f"CIFAR file {path}: 'data' should be a numpy array (N, 3072) of uint8, found "
                          f"{type(data).__name__}")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise LoritaError(f"CIFAR file {path}: 'data' should have shape (N, 3072), found {data.shape}")
    if data.dtype != np.uint8:
        if data.size and (not np.issubdtype(data.dtype, np.integer) or data.min() < 0 or data.max() > 255):
            raise LoritaError(f"CIFAR file {path}: 'data' should be uint8 pixels, found dtype {data.dtype}")
        data = data.astype(np.uint8)
    labels = _labels(_get(record, label_key, path), data.shape[0], label_key, path)
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)  # (N, 3, 32, 32)
    return images.clone(), torch.from_numpy(labels)


def read_label_names(path: str | Path, key: str, count: int | None = None) -> list[str]:
    """Class names from a CIFAR meta file (``label_names`` or ``fine_label_names``), decoded to str; with ``count``,
    exactly that many (checked before any is decoded). Each is bytes or str of at most 200 characters.

    Example:
        >>> read_label_names("cifar-10-batches-py/batches.meta", "label_names")[:2]  # doctest: +SKIP
        ['airplane', 'automobile']
    """
    path = Path(path)
    names = _get(load_pickle(path), key, path)
    if not isinstance(names, (list, tuple)):
        raise LoritaError(f"CIFAR meta file {path}: '{key}' should be a list, found {type(names).__name__}")
    if count is not None and len(names) != count:
        raise LoritaError(f"{path} lists {len(names)} class names, expected {count}")
    if not all(isinstance(n, (bytes, str)) and len(n) <= 200 for n in names):
        raise LoritaError(f"CIFAR meta file {path}: '{key}' should be names (bytes or text of at most 200 characters)")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def cifar_files(num_classes: int) -> list[str]:
    """The data files a CIFAR-10 (``num_classes=10``) or CIFAR-100 folder must contain (meta is optional).

    Example:
        >>> cifar_files(100)
        ['train', 'test']
    """
    if num_classes == 10:
        return [*CIFAR10_TRAIN, CIFAR10_TEST]
    if num_classes == 100:
        return [CIFAR100_TRAIN, CIFAR100_TEST]
    raise LoritaError(f"CIFAR has 10 or 100 classes, got {num_classes}")


def read_cifar_folder(
    folder: str | Path, num_classes: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], list[str] | None]:
    """Read a CIFAR-10/100 folder: ((train_x, train_y), (test_x, test_y), class names or None).

    Class names come from ``batches.meta`` / ``meta`` when present.

    Example:
        >>> train, test, classes = read_cifar_folder("data/cifar-10-batches-py", 10)  # doctest: +SKIP
        >>> tuple(train[0].shape), classes[0]  # doctest: +SKIP
        ((50000, 3, 32, 32), 'airplane')
    """
    folder = Path(folder)
    if num_classes == 10:
        label_key, meta_name, meta_key = "labels", CIFAR10_META, "label_names"
        train_names, test_name = list(CIFAR10_TRAIN), CIFAR10_TEST
    else:
        label_key, meta_name, meta_key = "fine_labels", CIFAR100_META, "fine_label_names"
        train_names, test_name = [CIFAR100_TRAIN], CIFAR100_TEST
        cifar_files(num_classes)  # validates num_classes
    parts = [read_cifar_batch(folder / name, label_key) for name in train_names]
    train = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    test = read_cifar_batch(folder / test_name, label_key)
    classes = None
    if (folder / meta_name).is_file():
        classes = read_label_names(folder / meta_name, meta_key, num_classes)
    else:
        logger.warning("%s not found in %s; class names unknown", meta_name, folder)
    return train, test, classes
