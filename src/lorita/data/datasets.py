"""The dataset registry: find files, read them, carve a validation split, share train statistics.

Nothing is ever downloaded. Where files are looked for:

* ``fashion-mnist``: ``data_dir``, ``data_dir/fashion-mnist``, ``data_dir/FashionMNIST/raw``;
  without ``data_dir``, the Debian package's folder ``/usr/share/datasets/fashion-mnist``.
* ``mnist``: ``data_dir``, ``data_dir/mnist``, ``data_dir/MNIST/raw`` (``data_dir`` required).
* ``cifar10``: ``data_dir``, ``data_dir/cifar-10-batches-py``; ``cifar100``: ``data_dir``,
  ``data_dir/cifar-100-python`` (``data_dir`` required).
* ``digits``: bundled with scikit-learn.

The validation split is carved from the training data by a permutation seeded
with ``seed``; ``val_fraction=0`` gives an empty validation split (then any
model selection must use other data). The per-channel mean/std come from the
remaining training part only and are shared by train, val and test.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lorita.data.cifar import cifar_files, read_cifar_folder
from lorita.data.digits import read_digits
from lorita.data.idx import IDX_FILES, check_idx_folder, missing_idx_files, read_idx_folder
from lorita.data.split import Split, channel_stats, derive_seed
from lorita.errors import LoritaError

logger = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
VAL_SEED_SALT = 0x7A1  # mixed with the user's seed so the val permutation differs from batch orders

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip
DIGIT_CLASSES = [str(d) for d in range(10)]


class DataNotFoundError(LoritaError):
    """A dataset's files are missing or malformed; the message names the files, where we looked and how to get them.

    Example:
        >>> try:
        ...     load_dataset("mnist")
        ... except DataNotFoundError as err:
        ...     print(str(err).splitlines()[0])
        mnist: no data_dir given; this dataset is not downloaded for you
    """


@dataclass
class ImageDataset:
    """Train/val/test splits of one image-classification dataset, with what a model needs to know.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.num_classes, ds.in_channels, ds.image_size, len(ds.test)
        (10, 1, 8, 359)
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    classes: list[str] | None
    source: str
    default_augment: bool

    @property
    def model_inputs(self) -> dict:
        """What an image model's builder needs from the data."""
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "image_size": self.image_size}

    def example_input(self) -> torch.Tensor:
        """One all-zero image (batch 1): for counting params and MACs."""
        return torch.zeros(1, self.in_channels, self.image_size, self.image_size)


@dataclass(frozen=True)
class _Spec:
    kind: str  # "idx", "cifar" or "sklearn"
    num_classes: int
    subdirs: tuple[str, ...]
    how_to_get: str
    default_augment: bool
    classes: tuple[str, ...] | None = None
    default_dir: Path | None = None


_REGISTRY: dict[str, _Spec] = {
    "fashion-mnist": _Spec(
        "idx", 10, ("fashion-mnist", "FashionMNIST/raw"),
        "install the Debian package (apt-get install dataset-fashion-mnist) or pass --data-dir "
        "with the 4 IDX files", False, tuple(FASHION_CLASSES), DEBIAN_FASHION_MNIST),
    "mnist": _Spec(
        "idx", 10, ("mnist", "MNIST/raw"),
        "put the 4 MNIST IDX files (plain or .gz) in a folder and pass --data-dir", False, tuple(DIGIT_CLASSES)),
    "cifar10": _Spec(
        "cifar", 10, ("cifar-10-batches-py",),
        "extract the official python-version tarball cifar-10-python.tar.gz and pass --data-dir "
        "(the folder holding cifar-10-batches-py, or that folder itself)", True),
    "cifar100": _Spec(
        "cifar", 100, ("cifar-100-python",),
        "extract the official python-version tarball cifar-100-python.tar.gz and pass --data-dir "
        "(the folder holding cifar-100-python, or that folder itself)", True),
    "digits": _Spec("sklearn", 10, (), "pip install scikit-learn (it bundles this dataset)", False,
                    tuple(DIGIT_CLASSES)),
}  # fmt: skip
_ALIASES = {"fashionmnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar_10": "cifar10", "cifar-100": "cifar100", "cifar_100": "cifar100"}  # fmt: skip


def list_datasets() -> list[str]:
    """Names ``load_dataset`` accepts.

    Example:
        >>> list_datasets()
        ['fashion-mnist', 'mnist', 'cifar10', 'cifar100', 'digits']
    """
    return list(_REGISTRY)


def is_image_dataset(name: str) -> bool:
    """Whether ``load_dataset`` knows ``name`` (any case, and its aliases such as ``fashion_mnist``).

    Example:
        >>> is_image_dataset("Fashion_MNIST"), is_image_dataset("fortunes")
        (True, False)
    """
    key = str(name).strip().lower()
    return _ALIASES.get(key, key) in _REGISTRY


def reads_files(name: str) -> bool:
    """Whether image dataset ``name`` is read from files (so a ``data_dir`` applies); digits is bundled.

    Example:
        >>> reads_files("mnist"), reads_files("digits")
        (True, False)
    """
    return _resolve(name)[1].kind != "sklearn"


def canonical_name(name: str) -> str:
    """The one name of an image dataset however it is written (case, aliases); another name lower-cased.

    Example:
        >>> canonical_name("Fashion_MNIST") == canonical_name("fashion-mnist"), canonical_name("Fortunes")
        (True, 'fortunes')
    """
    try:
        return _resolve(name)[0]
    except LoritaError:
        return str(name).strip().lower()


def data_folder(data_dir: str | None) -> str | None:
    """The folder the dataset readers read for ``data_dir``: ``~`` expanded (None and ``""`` as given). What an
    output is checked against, and what a new run records (made absolute by the command).

    Example:
        >>> import os
        >>> data_folder("~/data") == os.path.expanduser("~/data"), data_folder(None)
        (True, None)
    """
    return data_dir and os.path.expanduser(data_dir)


def recorded_folder(data_dir: str | None) -> str | None:
    """What a new run records for ``data_dir``: the folder the readers read (``data_folder``), as an absolute path,
    so a resume from anywhere reads the same data (None and ``""`` as given).

    Example:
        >>> recorded_folder("data") == os.path.abspath("data"), recorded_folder(None)
        (True, None)
    """
    return data_dir and os.path.abspath(data_folder(data_dir))


def recorded_relative(data_dir: str | None) -> bool:
    """Whether a run recorded ``data_dir`` as a relative path (runs written before lorita kept it whole): read from
    the current folder, which may not be the one the run was started in.

    Example:
        >>> recorded_relative("data"), recorded_relative("/srv/data"), recorded_relative(None)
        (True, False, False)
    """
    return bool(data_dir) and not os.path.isabs(data_folder(data_dir))


def reads_same_folder(name: str, given: str | None, own: str | None) -> bool:
    """Whether data folders ``given`` and ``own`` make the readers of dataset ``name`` read the same files: each
    found where the readers look (None: the dataset's default folder, ``/usr/share/datasets/fashion-mnist`` for
    Fashion-MNIST) and those folders the same; where either is not found (or ``name`` reads no folders), whether
    the two name the same folder. What a resume compares its ``--data-dir`` with the run's by.

    Example:
        >>> reads_same_folder("mnist", "~/data", os.path.expanduser("~/data/"))
        True
    """
    def named(folder: str | os.PathLike | None) -> str | None:  # a link loop resolves to a name, never raises
        return None if folder is None else os.path.realpath(os.path.expanduser(folder))
    try:
        spec = _resolve(name)[1]
    except LoritaError:
        spec = None
    if spec is not None and spec.kind != "sklearn":
        try:
            found = [_locate(name, spec, folder)[0] for folder in (given, own)]
        except (OSError, RuntimeError):  # unreadable: judged by the names alone
            found = [None]
        if None not in found:
            return named(found[0]) == named(found[1])
    return named(given) == named(own)


def _resolve(name: str) -> tuple[str, _Spec]:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise LoritaError(f"unknown dataset {name!r}; known datasets: {', '.join(_REGISTRY)}")
    return key, _REGISTRY[key]


def _expected_files(spec: _Spec) -> list[str]:
    if spec.kind == "idx":
        return [f"{stem}[.gz]" for stem in IDX_FILES.values()]
    if spec.kind == "cifar":
        return cifar_files(spec.num_classes)
    return []


def _candidates(spec: _Spec, data_dir: str | Path | None) -> list[Path]:
    if data_dir is None:
        return [spec.default_dir] if spec.default_dir is not None else []
    root = Path(data_dir).expanduser()
    return [root, *(root / sub for sub in spec.subdirs)]


def _state(spec: _Spec, folder: Path) -> str | None:
    """What keeps ``folder`` from holding the dataset (its expected files missing, or there but not regular files),
    or None when every file is there."""
    if spec.kind == "idx":
        expected = [(f"{stem}[.gz]", (stem, stem + ".gz")) for stem in missing_idx_files(folder)]
    else:
        expected = [(name, (name,)) for name in cifar_files(spec.num_classes) if not (folder / name).is_file()]
    missing, odd = [], []
    for label, names in expected:
        what = _not_regular(folder, names)
        (odd if what else missing).append(what or label)
    return "; ".join(([f"missing {', '.join(missing)}"] if missing else []) + odd) or None


def _not_regular(folder: Path, names: tuple[str, ...]) -> str:
    """``NAME is a folder ...`` and the like for the first of ``names`` that is there but not a regular file, else ''.

    A FIFO, a folder or a link that leads nowhere under an expected name is not missing: saying so would send the
    user looking for a file that seems to be there.
    """
    for name in names:
        path = folder / name
        if path.is_dir():
            what = "a folder (or a link to one), not a file: an archive unpacked under the file's name? the file may " \
                   "be inside it"
        elif path.is_fifo():
            what = "a FIFO, not a regular file"
        elif path.is_symlink() and not path.exists():
            what = "a link that leads nowhere (or loops)"
        elif os.path.lexists(path):
            what = "not a regular file"
        else:
            continue
        return f"{name} is {what}"
    return ""


def _locate(name: str, spec: _Spec, data_dir: str | Path | None) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(first folder holding every expected file or None, [(folder looked in, what is there)])."""
    looked = []
    for folder in _candidates(spec, data_dir):
        try:
            state = _state(spec, folder) if folder.is_dir() else "does not exist"
        except OSError as err:  # a folder on the way that may not be searched: Path.is_file raises
            state = f"cannot be read: {err.strerror or err}; check its permissions"
        if state is None:
            return folder, looked + [(folder, "found")]
        looked.append((folder, state))
    return None, looked


def _not_found(name: str, spec: _Spec, looked: list[tuple[Path, str]], problem: str) -> DataNotFoundError:
    lines = [f"{name}: {problem}", f"  expected files: {', '.join(_expected_files(spec))}"]
    lines += [f"  looked in {folder} ({state})" for folder, state in looked]
    lines.append(f"  how to get it: {spec.how_to_get}; nothing is downloaded automatically")
    return DataNotFoundError("\n".join(lines))


def dataset_status(data_dir: str | Path | None = None) -> list[dict]:
    """For each dataset: whether its files are present (IDX files: their headers checked, the data not read), where
    found or looked, how to get it.

    Each dict has keys ``name``, ``available`` (bool), ``found_at`` (str or None), ``damaged`` (what is wrong
    with the files found, or None), ``looked_in`` (list of str) and ``how_to_get`` (str).

    Example:
        >>> [row["name"] for row in dataset_status() if row["available"]][-1]
        'digits'
    """
    rows = []
    for name, spec in _REGISTRY.items():
        if spec.kind == "sklearn":
            found = importlib.util.find_spec("sklearn") is not None
            rows.append({"name": name, "available": found, "found_at": "scikit-learn" if found else None,
                         "looked_in": ["scikit-learn"], "how_to_get": spec.how_to_get})  # fmt: skip
            continue
        folder, looked = _locate(name, spec, data_dir)
        damaged = _damaged(spec, folder) if folder is not None else None
        rows.append({"name": name, "available": folder is not None and damaged is None,
                     "found_at": str(folder) if folder is not None else None, "damaged": damaged,
                     "looked_in": [str(f) for f, _ in looked], "how_to_get": spec.how_to_get})  # fmt: skip
    return rows


def _damaged(spec: _Spec, folder: Path) -> str | None:
    """What is wrong with the files found in ``folder``, as far as their headers tell (IDX files; CIFAR's
    pickles are checked when read), or None."""
    if spec.kind != "idx":
        return None
    try:
        check_idx_folder(folder)
    except LoritaError as err:
        return str(err)
    return None


def _read(name: str, spec: _Spec, data_dir: str | Path | None) -> tuple[tuple, tuple, list[str] | None, str]:
    if spec.kind == "sklearn":
        try:
            train, test = read_digits()
        except ImportError as err:
            raise DataNotFoundError(f"{name}: scikit-learn is not installed ({err}); {spec.how_to_get}") from err
        return train, test, list(spec.classes), "scikit-learn"
    folder, looked = _locate(name, spec, data_dir)
    if folder is None:
        if data_dir is None and spec.default_dir is None:
            problem = "no data_dir given; this dataset is not downloaded for you"
        else:
            problem = "files not found"
        raise _not_found(name, spec, looked, problem)
    try:
        if spec.kind == "idx":
            train, test = read_idx_folder(folder)
            classes = list(spec.classes) if spec.classes else None
        else:
            train, test, classes = read_cifar_folder(folder, spec.num_classes)
    except LoritaError as err:
        raise _not_found(name, spec, looked, f"malformed files in {folder}: {err}") from err
    for split_name, (_, labels) in (("train", train), ("test", test)):
        if not labels.numel():  # an empty test split would fail only after every epoch of training
            raise _not_found(name, spec, looked, f"malformed files in {folder}: the {split_name} files hold no images")
        if int(labels.min()) < 0 or int(labels.max()) >= spec.num_classes:
            span = f"{int(labels.min())}..{int(labels.max())}"
            problem = f"malformed files in {folder}: {split_name} labels span {span}, expected 0..{spec.num_classes - 1}"
            raise _not_found(name, spec, looked, problem)
    return train, test, classes, str(folder)


def _carve_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator()
    gen.manual_seed(derive_seed(seed, VAL_SEED_SALT))
    n_val = int(round(val_fraction * n))
    perm = torch.randperm(n, generator=gen)
    return torch.sort(perm[n_val:]).values, torch.sort(perm[:n_val]).values


def load_dataset(
    name: str, data_dir: str | Path | None = None, *, val_fraction: float = 0.1, seed: int = 0
) -> ImageDataset:
    """Load a dataset into memory as uint8 splits; ``val_fraction`` of the training data becomes ``val``.

    Raises ``LoritaError`` for an unknown name or a bad ``val_fraction``, and
    ``DataNotFoundError`` when files are missing or malformed.

    Example:
        >>> ds = load_dataset("digits", val_fraction=0.1, seed=0)
        >>> len(ds.train), len(ds.val), len(ds.test)
        (1294, 144, 359)
    """
    key, spec = _resolve(name)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise LoritaError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}; use 0 for no validation")
    (train_x, train_y), (test_x, test_y), classes, source = _read(key, spec, data_dir)
    height, width = train_x.shape[2:]
    if height != width:
        raise LoritaError(f"{key}: only square images are supported, got {height}x{width}")
    keep, val_idx = _carve_val(train_x.shape[0], float(val_fraction), seed)
    if keep.numel() == 0:
        raise LoritaError(
            f"{key}: val_fraction={val_fraction} leaves no training images out of {train_x.shape[0]}; lower it"
        )
    mean, std = channel_stats(train_x[keep])
    logger.info("%s from %s: %d train, %d val, %d test; mean %s std %s", key, source, keep.numel(),
                val_idx.numel(), test_x.shape[0], mean, std)  # fmt: skip
    return ImageDataset(
        name=key,
        train=Split(train_x[keep], train_y[keep], mean, std),
        val=Split(train_x[val_idx], train_y[val_idx], mean, std),
        test=Split(test_x, test_y, mean, std),
        num_classes=spec.num_classes,
        in_channels=int(train_x.shape[1]),
        image_size=int(height),
        classes=classes,
        source=source,
        default_augment=spec.default_augment,
    )
