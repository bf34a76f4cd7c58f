"""Datasets: IDX/CIFAR readers on tiny hand-written files, the registry, and Split.batches semantics."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lorita.data import DataNotFoundError, ImageDataset, Split, dataset_status, idx, list_datasets, load_dataset
from lorita.data.cifar import SafeUnpickler, load_pickle, read_cifar_batch, read_label_names
from lorita.data.digits import DIGITS_TEST_SEED, stratified_holdout
from lorita.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx_images, read_idx_labels
from lorita.data.split import CROP_PADDING, augment_uint8, channel_stats
from lorita.errors import LoritaError

# ---------------------------------------------------------------- file writers


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_idx(path: Path, magic: int, array: np.ndarray, gz: bool) -> None:
    data = idx_bytes(magic, array)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def make_idx_folder(folder: Path, gz: bool, n_train: int = 30, n_test: int = 10, size: int = 6) -> Path:
    """Images whose pixel [0, 0] is the sample index (so samples are distinguishable); labels = index % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 100)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n) + offset
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", IMAGES_MAGIC, images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", LABELS_MAGIC, labels, gz)
    return folder


def write_cifar_pickle(path: Path, record: dict) -> None:
    with path.open("wb") as handle:
        pickle.dump(record, handle, protocol=2)


class Py2StylePickler(pickle._Pickler):
    """Writes str and bytes as Python 2 byte strings (BINSTRING), as the official CIFAR files do."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def make_cifar_folder(folder: Path, num_classes: int, per_file: int = 4) -> Path:
    """The official layout with bytes keys, numpy uint8 (N, 3072) data and list labels, at protocol 2."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(num_classes)
    label_key = b"labels" if num_classes == 10 else b"fine_labels"
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if num_classes == 10 else ["train"]
    for name in [*train_files, "test_batch" if num_classes == 10 else "test"]:
        record = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8),
            label_key: [int(v) for v in rng.integers(0, num_classes, size=per_file)],
            b"filenames": [f"img{i}.png".encode() for i in range(per_file)],
        }
        if num_classes == 100:
            record[b"coarse_labels"] = [0] * per_file
        write_cifar_pickle(folder / name, record)
    names = [f"class{i}".encode() for i in range(num_classes)]
    meta = {b"label_names": names} if num_classes == 10 else {b"fine_label_names": names, b"coarse_label_names": []}
    write_cifar_pickle(folder / ("batches.meta" if num_classes == 10 else "meta"), meta)
    return folder


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return make_idx_folder(tmp_path / "mnist_files", gz=True)


def tiny_split(n: int = 11, channels: int = 3, size: int = 8) -> Split:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
    return Split(images, torch.arange(n), [0.5] * channels, [0.25] * channels)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_loads_as_mnist(tmp_path: Path, gz: bool) -> None:
    make_idx_folder(tmp_path / "MNIST" / "raw", gz=gz)
    ds = load_dataset("mnist", tmp_path, val_fraction=0.2)
    assert isinstance(ds, ImageDataset)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 6, 10)
    assert ds.train.images.dtype == torch.uint8 and ds.train.images.shape[1:] == (1, 6, 6)
    assert ds.train.labels.dtype == torch.int64
    assert (ds.num_classes, ds.in_channels, ds.image_size, ds.default_augment) == (10, 1, 6, False)
    assert ds.source == str(tmp_path / "MNIST" / "raw")
    assert ds.test.images[:, 0, 0, 0].tolist() == list(range(100, 110))
    assert ds.test.labels.tolist() == [i % 10 for i in range(10)]


def test_idx_plain_and_gzip_read_the_same(tmp_path: Path) -> None:
    plain, gz = make_idx_folder(tmp_path / "a", gz=False), make_idx_folder(tmp_path / "b", gz=True)
    x1 = read_idx_images(plain / "train-images-idx3-ubyte")
    x2 = read_idx_images(gz / "train-images-idx3-ubyte.gz")
    assert torch.equal(x1, x2) and x1.shape == (30, 1, 6, 6)
    assert read_idx_labels(gz / "train-labels-idx1-ubyte.gz").tolist() == [i % 10 for i in range(30)]


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(IMAGES_MAGIC, np.zeros((2, 2, 2))))
    with pytest.raises(LoritaError, match=r"labels.*magic number 0x00000803, expected 0x00000801"):
        read_idx_labels(path)


def test_idx_truncated_plain_and_gzip(tmp_path: Path) -> None:
    data = idx_bytes(IMAGES_MAGIC, np.zeros((3, 4, 4)))
    (tmp_path / "short").write_bytes(data[:-5])
    with pytest.raises(LoritaError, match=r"short is truncated: header says shape \(3, 4, 4\)"):
        read_idx_images(tmp_path / "short")
    (tmp_path / "header").write_bytes(data[:9])
    with pytest.raises(LoritaError, match="header needs 16 bytes"):
        read_idx_images(tmp_path / "header")
    (tmp_path / "short.gz").write_bytes(gzip.compress(data)[:-12])
    with pytest.raises(LoritaError, match="short.gz is a damaged or truncated gzip"):
        read_idx_images(tmp_path / "short.gz")


def test_a_gzip_bomb_is_stopped_at_its_header(tmp_path: Path) -> None:
    """A (1, 2, 2) header followed by 64 MiB of zeros (65 KB compressed): refused after inflating 5 bytes of
    body, not 64 MiB (the whole file was inflated before the header was checked)."""
    import tracemalloc
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = packer.compress(idx_bytes(IMAGES_MAGIC, np.zeros((1, 2, 2)))) + packer.compress(bytes(64 << 20))
    (tmp_path / "bomb.gz").write_bytes(data + packer.flush())
    tracemalloc.start()
    try:
        with pytest.raises(LoritaError, match=r"bomb.gz is longer than its header says: header says shape \(1, 2, 2\)"):
            read_idx_images(tmp_path / "bomb.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_an_idx_header_larger_than_its_file_is_refused_unread(tmp_path: Path) -> None:
    header = struct.pack(">IIII", IMAGES_MAGIC, 1 << 20, 1 << 10, 1 << 10)  # 1 TiB of images
    (tmp_path / "huge.gz").write_bytes(gzip.compress(header + bytes(100)))
    with pytest.raises(LoritaError, match=r"huge.gz is truncated: header says shape \(1048576, 1024, 1024\) "
                                          r"\(1099511627776 bytes of data\), more than a file of its size can hold"):
        read_idx_images(tmp_path / "huge.gz")
    (tmp_path / "huge").write_bytes(header + bytes(100))
    with pytest.raises(LoritaError, match=r"huge is truncated: .*more than a file of its size can hold"):
        read_idx_images(tmp_path / "huge")


def test_idx_gzip_streams_check_what_gzip_checks(tmp_path: Path) -> None:
    data = idx_bytes(IMAGES_MAGIC, np.arange(48).reshape(3, 4, 4))
    packed = gzip.compress(data)
    (tmp_path / "two.gz").write_bytes(gzip.compress(data[:20]) + gzip.compress(data[20:]))  # concatenated members
    assert torch.equal(read_idx_images(tmp_path / "two.gz").flatten(), torch.arange(48, dtype=torch.uint8))
    bad_crc = bytearray(packed)
    bad_crc[-8] ^= 0xFF
    (tmp_path / "crc.gz").write_bytes(bytes(bad_crc))
    with pytest.raises(LoritaError, match=r"crc.gz is a damaged or truncated gzip file"):
        read_idx_images(tmp_path / "crc.gz")
    (tmp_path / "long.gz").write_bytes(gzip.compress(data + b"x"))
    with pytest.raises(LoritaError, match=r"long.gz is longer than its header says"):
        read_idx_images(tmp_path / "long.gz")
    (tmp_path / "tail.gz").write_bytes(packed + b"garbage after the stream")
    with pytest.raises(LoritaError, match=r"tail.gz is a damaged or truncated gzip file"):
        read_idx_images(tmp_path / "tail.gz")


def test_malformed_idx_through_registry(idx_dir: Path) -> None:
    labels = idx_dir / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(LABELS_MAGIC, np.zeros(7))))  # 7 labels for 10 images
    with pytest.raises(DataNotFoundError, match=r"(?s)malformed files.*10 images but .* 7 labels.*--data-dir"):
        load_dataset("mnist", idx_dir)
    labels.write_bytes(gzip.compress(idx_bytes(LABELS_MAGIC, np.full(10, 12))))
    with pytest.raises(DataNotFoundError, match=r"test labels span 12..12, expected 0..9"):
        load_dataset("mnist", idx_dir)


def test_missing_files_message(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(b"")
    pattern = (r"(?s)mnist: files not found.*expected files: train-images-idx3-ubyte\[\.gz\].*"
               rf"looked in {tmp_path} .*looked in {tmp_path / 'mnist'} \(missing train-labels.*"
               r"looked in .*MNIST/raw \(does not exist\).*pass --data-dir")  # fmt: skip
    with pytest.raises(DataNotFoundError, match=pattern):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataNotFoundError, match="no data_dir given"):
        load_dataset("mnist")
    with pytest.raises(DataNotFoundError, match=r"(?s)data_batch_1.*cifar-10-batches-py.*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataNotFoundError, match=r"(?s)cifar-100-python.*cifar-100-python\.tar\.gz"):
        load_dataset("cifar100", tmp_path)
    with pytest.raises(DataNotFoundError, match=r"(?s)FashionMNIST/raw.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)


def test_unknown_name_and_bad_val_fraction(idx_dir: Path) -> None:
    with pytest.raises(LoritaError, match="unknown dataset 'imagenet'; known datasets: fashion-mnist, mnist, cifar10"):
        load_dataset("imagenet")
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(LoritaError, match=r"val_fraction must be a number in \[0, 1\)"):
            load_dataset("mnist", idx_dir, val_fraction=bad)
    assert list_datasets() == ["fashion-mnist", "mnist", "cifar10", "cifar100", "digits"]


# ---------------------------------------------------------------- validation split and statistics


def test_val_split_deterministic_disjoint_and_complete(idx_dir: Path) -> None:
    a = load_dataset("mnist", idx_dir, val_fraction=0.3, seed=5)
    b = load_dataset("mnist", idx_dir, val_fraction=0.3, seed=5)
    c = load_dataset("mnist", idx_dir, val_fraction=0.3, seed=6)
    ids = lambda split: split.images[:, 0, 0, 0].tolist()  # noqa: E731  pixel [0,0] is the sample index
    assert ids(a.val) == ids(b.val) and torch.equal(a.train.images, b.train.images)
    assert ids(a.val) != ids(c.val)
    assert len(a.val) == 9 and not set(ids(a.train)) & set(ids(a.val))
    assert sorted(ids(a.train) + ids(a.val)) == list(range(30))
    assert a.val.labels.tolist() == [i % 10 for i in ids(a.val)]  # labels travel with their images
    empty = load_dataset("mnist", idx_dir, val_fraction=0.0)
    assert len(empty.val) == 0 and len(empty.train) == 30 and list(empty.val.batches(4)) == []


def test_mean_std_from_train_part_only(idx_dir: Path) -> None:
    ds = load_dataset("mnist", idx_dir, val_fraction=0.5, seed=1)
    x = ds.train.images.double() / 255
    assert ds.train.mean == pytest.approx(tuple(x.mean(dim=(0, 2, 3)).tolist()), abs=1e-12)
    assert ds.train.std == pytest.approx(tuple(x.std(dim=(0, 2, 3), unbiased=False).tolist()), abs=1e-12)
    everything = torch.cat([ds.train.images, ds.val.images])
    assert ds.train.mean != pytest.approx(channel_stats(everything)[0], abs=1e-9)  # so the test is not vacuous
    assert ds.val.mean == ds.test.mean == ds.train.mean and ds.val.std == ds.test.std == ds.train.std


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("num_classes,subdir", [(10, "cifar-10-batches-py"), (100, "cifar-100-python")])
def test_cifar_folders(tmp_path: Path, num_classes: int, subdir: str) -> None:
    folder = make_cifar_folder(tmp_path / subdir, num_classes)
    name = f"cifar{num_classes}"
    ds = load_dataset(name, tmp_path, val_fraction=0.25)
    n_train = 20 if num_classes == 10 else 4
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (n_train, 4)
    assert ds.train.images.shape[1:] == (3, 32, 32) and len(ds.train.mean) == 3
    assert (ds.num_classes, ds.in_channels, ds.image_size, ds.default_augment) == (num_classes, 3, 32, True)
    assert ds.classes == [f"class{i}" for i in range(num_classes)]
    test_record = load_pickle(folder / ("test_batch" if num_classes == 10 else "test"))
    expected = torch.from_numpy(test_record[b"data"]).reshape(-1, 3, 32, 32)  # channel-major rows
    assert torch.equal(ds.test.images, expected)
    key = b"labels" if num_classes == 10 else b"fine_labels"
    assert ds.test.labels.tolist() == test_record[key]
    assert load_dataset(name, folder, val_fraction=0.25).source == str(folder)  # the folder itself works too


def test_python2_style_cifar_pickle(tmp_path: Path) -> None:
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    with (tmp_path / "test_batch").open("wb") as handle:
        record = {"data": data, "labels": [3, 4], "batch_label": "testing batch 1 of 1"}
        Py2StylePickler(handle, protocol=2).dump(record)
    raw = (tmp_path / "test_batch").read_bytes()
    assert b"_codecs" not in raw  # no globals beyond numpy's, like the real files
    x, y = read_cifar_batch(tmp_path / "test_batch", "labels")
    assert torch.equal(x, torch.from_numpy(data).reshape(2, 3, 32, 32)) and y.tolist() == [3, 4]


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    folder = make_cifar_folder(tmp_path / "cifar-10-batches-py", 10)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    write_cifar_pickle(folder / "data_batch_3", {b"data": Evil()})
    pattern = r"(?s)malformed.*data_batch_3.*refusing to load global (posix|nt)\.system"
    with pytest.raises(DataNotFoundError, match=pattern):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()
    evil_bytes = pickle.dumps({"x": Evil()}, protocol=4)
    with pytest.raises(LoritaError, match="refusing"):
        SafeUnpickler(__import__("io").BytesIO(evil_bytes)).load()


def _ndarray_bomb(n: int, reconstruct: bool) -> bytes:
    """A pickle of a few dozen bytes asking numpy for an (n, 3072) uint8 array: ``ndarray(shape, dtype)`` called
    directly, or numpy's ``_reconstruct`` asked for that shape instead of its usual empty start."""
    shape = b"J" + struct.pack("<i", n) + b"M" + struct.pack("<H", 3072) + b"\x86"
    if reconstruct:
        array = b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n" + shape + b"C\x01btR"
    else:
        array = b"cnumpy\nndarray\n(" + shape + b"X\x02\x00\x00\x00u1tR"
    return b"\x80\x03}(C\x04data" + array + b"u."


class _SubarrayBomb:
    """numpy's ``_reconstruct`` with an empty shape but a dtype that is itself a (200000, 3072) block."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct
        return _reconstruct, (np.ndarray, (), np.dtype("(200000,3072)u1"))


@pytest.mark.parametrize("how", ["ndarray", "reconstruct", "dtype"])
def test_a_pickle_cannot_ask_for_an_array_larger_than_the_file(tmp_path: Path, how: str) -> None:
    bomb = pickle.dumps({b"data": _SubarrayBomb()}, protocol=2) if how == "dtype" else \
        _ndarray_bomb(200_000, how == "reconstruct")
    (tmp_path / "bomb").write_bytes(bomb)  # 600 MB from a few hundred bytes
    assert (tmp_path / "bomb").stat().st_size < 400
    with pytest.raises(LoritaError, match="refusing numpy"):
        read_cifar_batch(tmp_path / "bomb", "labels")
    huge = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"x"  # BINBYTES8 declaring a terabyte
    (tmp_path / "huge").write_bytes(huge)
    with pytest.raises(LoritaError, match="cannot read CIFAR pickle .*(truncated|declares a size)"):
        read_cifar_batch(tmp_path / "huge", "labels")


class _ArrayState:
    """Pickles as numpy's own array recipe (``_reconstruct`` of an empty array, then its state) with any state."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct
        return _reconstruct, (np.ndarray, (0,), b"b"), self.state


@pytest.mark.parametrize("state, message", [
    ((1, (100000,), np.dtype("O"), False, [0]), r"dtype \|O"),  # numpy itself crashed on this one (a segfault)
    ((1, (2, 2), np.dtype([("a", "u1")]), False, b"\0\0\0\0"), "dtype(\\(\\.\\.\\.\\) of anything| state)"),
    ((1, (1, 1, 1), np.dtype("u1"), False, b"\0"), "shape"),
    ((1, (4000, 3072), np.dtype("u1"), False, b"\0" * 10), "not its 12288000 items' bytes"),
])
def test_an_array_state_numpy_never_writes_is_refused(tmp_path: Path, state, message: str) -> None:
    write_cifar_pickle(tmp_path / "batch", {b"data": _ArrayState(state), b"labels": []})
    with pytest.raises(LoritaError, match=message):
        read_cifar_batch(tmp_path / "batch", "labels")


def test_back_references_cannot_multiply_a_small_cifar_file(tmp_path: Path) -> None:
    """A row repeated by reference is a few bytes a copy: data must be an array, labels a flat list of ints, each
    checked before anything is converted."""
    row = [0] * 3072
    write_cifar_pickle(tmp_path / "rows", {b"data": [row] * 50_000, b"labels": [0] * 50_000})
    assert (tmp_path / "rows").stat().st_size < 300_000
    with pytest.raises(LoritaError, match="'data' should be a numpy array"):
        read_cifar_batch(tmp_path / "rows", "labels")
    data = np.zeros((2, 3072), dtype=np.uint8)
    inner = [0] * 1000
    write_cifar_pickle(tmp_path / "labels", {b"data": data, b"labels": [inner] * 2})
    with pytest.raises(LoritaError, match="'labels' should be 2 integers"):
        read_cifar_batch(tmp_path / "labels", "labels")
    write_cifar_pickle(tmp_path / "meta", {b"label_names": [b"x" * 100_000] * 500})
    with pytest.raises(LoritaError, match="lists 500 class names, expected 10"):
        read_label_names(tmp_path / "meta", "label_names", 10)
    write_cifar_pickle(tmp_path / "names", {b"label_names": [[b"a"]] * 10})
    with pytest.raises(LoritaError, match="should be names"):
        read_label_names(tmp_path / "names", "label_names", 10)
    write_cifar_pickle(tmp_path / "keys", {b"\xff\xfe": 1, 7: 2})
    with pytest.raises(LoritaError, match=r"no 'label_names' entry \(it has \['<int>', '\ufffd\ufffd'\]\)"):
        read_label_names(tmp_path / "keys", "label_names")


def test_cifar_labels_past_int64_are_said_and_arrays_come_out_plain(tmp_path: Path) -> None:
    data = np.zeros((2, 3072), dtype=np.uint8)
    write_cifar_pickle(tmp_path / "big", {b"data": data, b"labels": [0, 2**64]})
    with pytest.raises(LoritaError, match="'labels' should be 2 integers"):
        read_cifar_batch(tmp_path / "big", "labels")
    write_cifar_pickle(tmp_path / "ok", {b"data": data, b"labels": [0, 1]})
    assert type(load_pickle(tmp_path / "ok")[b"data"]) is np.ndarray  # pickled again as any array


def test_nothing_in_a_cifar_pickle_is_hashed_or_printed_in_exponential_time(tmp_path: Path) -> None:
    """A tuple nested by back-references doubles at each level: hashing it as a key, or printing it in a message,
    would take 2**60 steps from under a kilobyte. Keys must be strings or ints, sets and dtype fields are refused."""
    deep: tuple = ()
    for _ in range(60):
        deep = (deep, deep)
    key = b")" + b"q\x00h\x00\x86" * 60  # the same tuple, written by hand: a dict with it as key cannot be made here
    (tmp_path / "key").write_bytes(b"\x80\x02}" + key + b"K\x01s.")
    for name, record in (("set", {b"data": {1, 2}}), ("shape", {b"data": _ArrayState(
            (1, deep, np.dtype("u1"), False, b""))})):
        write_cifar_pickle(tmp_path / name, record)
    for name in ("key", "set", "shape"):
        assert (tmp_path / name).stat().st_size < 2_000
        with pytest.raises(LoritaError, match="refusing"):
            load_pickle(tmp_path / name)
    nested = np.dtype([("a", "u1")])
    for _ in range(3):
        nested = np.dtype([("x", nested), ("y", nested)])
    write_cifar_pickle(tmp_path / "dtype", {b"data": _ArrayState((1, (0,), nested, False, b""))})
    with pytest.raises(LoritaError, match="refusing a numpy dtype state with sub-arrays, fields"):
        load_pickle(tmp_path / "dtype")


def test_image_and_label_counts_are_compared_before_either_body_is_read(tmp_path: Path, monkeypatch) -> None:
    """A 200 KB gzip file can announce 200 million labels: the headers are compared first."""
    folder = make_idx_folder(tmp_path / "mnist", gz=False)
    labels = folder / "train-labels-idx1-ubyte"
    labels.unlink()
    with gzip.open(labels.with_name(labels.name + ".gz"), "wb") as handle:
        handle.write(struct.pack(">II", LABELS_MAGIC, 200_000_000) + bytes(200_000_000))
    assert labels.with_name(labels.name + ".gz").stat().st_size < 300_000

    def no_body(*args):
        raise AssertionError("a body was read")

    monkeypatch.setattr(idx, "_read_idx", no_body)
    with pytest.raises(DataNotFoundError, match="holds 30 images but .* holds 200000000 labels"):
        load_dataset("mnist", folder)


def test_files_gzip_and_python_3_write_are_read(tmp_path: Path) -> None:
    """Zero padding after a gzip member (gunzip and Python's gzip read it), and the empty bytes Python 3 pickles as
    bytes() at protocol 2."""
    labels = struct.pack(">II", LABELS_MAGIC, 3) + bytes([1, 2, 3])
    (tmp_path / "padded.gz").write_bytes(gzip.compress(labels) + bytes(512))
    assert read_idx_labels(tmp_path / "padded.gz").tolist() == [1, 2, 3]
    (tmp_path / "junk.gz").write_bytes(gzip.compress(labels) + bytes(8) + b"junk")
    with pytest.raises(LoritaError, match="damaged or truncated gzip"):
        read_idx_labels(tmp_path / "junk.gz")
    data = np.zeros((1, 3072), dtype=np.uint8)
    write_cifar_pickle(tmp_path / "batch", {b"data": data, b"labels": [0], b"batch_label": b""})
    assert b"bytes" in (tmp_path / "batch").read_bytes()
    assert read_cifar_batch(tmp_path / "batch", "labels")[1].tolist() == [0]
    with pytest.raises(LoritaError, match=r"refusing bytes\(\.\.\.\) with arguments"):
        SafeUnpickler(__import__("io").BytesIO(b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.")).load()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(LoritaError, match="not a regular file"):
        read_idx_labels(tmp_path / "fifo")
    with pytest.raises(LoritaError, match="not a regular file"):
        load_pickle(tmp_path / "fifo")


def test_an_expected_name_that_is_not_a_file_is_said_so(tmp_path: Path) -> None:
    folder = make_idx_folder(tmp_path / "mnist", gz=False)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    (folder / "t10k-labels-idx1-ubyte").mkdir()
    with pytest.raises(DataNotFoundError, match=rf"looked in {folder} \(t10k-labels-idx1-ubyte is a folder \(or a link "
                       r"to one\), not a file: an archive unpacked under the file's name\? the file may be "
                       r"inside it\)"):
        load_dataset("mnist", folder)  # not called missing
    (folder / "t10k-labels-idx1-ubyte").rmdir()
    (folder / "t10k-labels-idx1-ubyte.gz").symlink_to(folder / "nowhere")
    with pytest.raises(DataNotFoundError, match=r"\(t10k-labels-idx1-ubyte\.gz is a link that leads nowhere"):
        load_dataset("mnist", folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    (folder / "t10k-labels-idx1-ubyte.gz").symlink_to(folder / "t10k-labels-idx1-ubyte.gz")  # a loop
    with pytest.raises(DataNotFoundError, match=r"\(t10k-labels-idx1-ubyte\.gz is a link that leads nowhere"):
        load_dataset("mnist", folder)
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    (cifar / "test_batch").mkdir()
    with pytest.raises(DataNotFoundError, match=r"\(missing data_batch_1, .*, data_batch_5; test_batch is a folder "):
        load_dataset("cifar10", cifar)
    (folder / "plain").mkdir()
    with pytest.raises(DataNotFoundError, match=r"\(missing train-images-idx3-ubyte\[\.gz\], [^;]*\)\n"):
        load_dataset("mnist", folder / "plain")  # nothing there at all: missing, no more


def test_a_folder_that_may_not_be_searched_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_idx_folder(tmp_path / "mnist", gz=False)

    def denied(self: Path) -> bool:  # as Path.is_file under a folder without search permission (root ignores chmod)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_file", denied)
    with pytest.raises(DataNotFoundError, match=rf"looked in {folder} \(cannot be read: Permission denied; check its "
                       r"permissions\)"):
        load_dataset("mnist", folder)
    assert not dataset_status(folder)[0]["available"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_an_expected_name_that_is_a_fifo_is_said_so(tmp_path: Path) -> None:
    folder = make_idx_folder(tmp_path / "mnist", gz=False)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    os.mkfifo(folder / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataNotFoundError, match=r"\(t10k-labels-idx1-ubyte is a FIFO, not a regular file\)"):
        load_dataset("mnist", folder)


def test_a_persistent_id_is_refused_in_one_line() -> None:
    with pytest.raises(LoritaError, match=r"^refusing a persistent id in a CIFAR pickle: official CIFAR files have "
                       r"none$"):
        SafeUnpickler(__import__("io").BytesIO(b"\x80\x02P1\n.")).load()


def test_an_empty_test_split_is_refused_before_training(tmp_path: Path) -> None:
    folder = make_idx_folder(tmp_path / "mnist", gz=False, n_test=0)
    with pytest.raises(DataNotFoundError, match="malformed files in .*: the test files hold no images"):
        load_dataset("mnist", folder)


def test_truncated_cifar_pickle(tmp_path: Path) -> None:
    folder = make_cifar_folder(tmp_path / "cifar-100-python", 100)
    data = (folder / "train").read_bytes()
    (folder / "train").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataNotFoundError, match=r"(?s)malformed files.*cannot read CIFAR pickle .*train"):
        load_dataset("cifar100", tmp_path)


# ---------------------------------------------------------------- Split.batches


def test_batches_cover_in_order_without_shuffle_and_drop_last() -> None:
    s = tiny_split(11)
    assert [y.tolist() for _, y in s.batches(4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert [len(y) for _, y in s.batches(4, drop_last=True)] == [4, 4]
    assert s.num_batches(4) == 3 and s.num_batches(4, drop_last=True) == 2
    x, _ = next(s.batches(4))
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, (s.images[:4].float() / 255 - 0.5) / 0.25)


def test_shuffle_is_a_seeded_permutation() -> None:
    s = tiny_split(11)
    order = lambda **kw: torch.cat([y for _, y in s.batches(4, shuffle=True, **kw)]).tolist()  # noqa: E731
    assert sorted(order(seed=1, epoch=0)) == list(range(11))
    assert order(seed=1, epoch=0) == order(seed=1, epoch=0)
    assert order(seed=1, epoch=0) != order(seed=1, epoch=1) and order(seed=1, epoch=0) != order(seed=2, epoch=0)


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("world_size", [2, 3])
def test_union_over_ranks_equals_single_process(augment: bool, world_size: int) -> None:
    s = tiny_split(11)
    kw = dict(shuffle=True, seed=3, epoch=2, augment=augment)
    single = list(s.batches(4, **kw))
    per_rank = [list(s.batches(4, rank=r, world_size=world_size, **kw)) for r in range(world_size)]
    assert all(len(steps) == len(single) for steps in per_rank)  # same number of steps on every rank
    for step, (x, y) in enumerate(single):
        chunks = torch.tensor_split(torch.arange(len(y)), world_size)
        for r in range(world_size):
            xr, yr = per_rank[r][step]
            assert torch.equal(yr, y[chunks[r]]) and torch.equal(xr, x[chunks[r]])


def test_augmentation_deterministic_shapes_and_changes_something() -> None:
    s = tiny_split(16)
    plain = torch.cat([x for x, _ in s.batches(8)])
    aug = [torch.cat([x for x, _ in s.batches(8, augment=True, seed=s_)]) for s_ in (0, 0, 1)]
    assert aug[0].shape == plain.shape and aug[0].dtype == torch.float32
    assert torch.equal(aug[0], aug[1]) and not torch.equal(aug[0], aug[2])
    assert not torch.equal(aug[0], plain)
    changed = (aug[0] != plain).flatten(1).any(dim=1)
    assert 0 < int(changed.sum()) <= 16


def test_augment_uint8_crop_and_flip() -> None:
    x = torch.arange(1, 17, dtype=torch.uint8).view(1, 1, 4, 4)
    p = torch.tensor([CROP_PADDING])
    assert torch.equal(augment_uint8(x, p, p, torch.tensor([False])), x)
    assert torch.equal(augment_uint8(x, p, p, torch.tensor([True])), x.flip(-1))
    shifted = augment_uint8(x, p - 1, p + 1, torch.tensor([False]))  # window moves up 1 and right 1
    assert shifted[0, 0, 0].tolist() == [0, 0, 0, 0]  # zero padding row on top
    assert shifted[0, 0, 1].tolist() == [2, 3, 4, 0]  # zero padding column on the right


def test_split_rejects_bad_input() -> None:
    s = tiny_split(4)
    with pytest.raises(LoritaError, match="rank must be an int in"):
        next(s.batches(2, rank=2, world_size=2))
    with pytest.raises(LoritaError, match="batch_size must be an int >= 1"):
        next(s.batches(0))
    with pytest.raises(LoritaError, match=r"uint8 tensor \(N, C, H, W\)"):
        Split(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), [0.0], [1.0])
    with pytest.raises(LoritaError, match="one value per channel"):
        Split(torch.zeros(2, 3, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), [0.0], [1.0])


# ---------------------------------------------------------------- bundled and system datasets


def test_digits() -> None:
    pytest.importorskip("sklearn")
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert (len(a.train) + len(a.val), len(a.test)) == (1438, 359)
    assert a.train.images.shape[1:] == (1, 8, 8) and int(a.train.images.max()) == 255
    assert torch.equal(a.test.images, b.test.images)  # the test split is fixed, whatever the seed
    assert sorted(set(a.test.labels.tolist())) == list(range(10)) and a.source == "scikit-learn"
    keep, held = stratified_holdout(a.test.labels, 0.5, DIGITS_TEST_SEED)
    assert len(keep) + len(held) == len(a.test) and not set(keep.tolist()) & set(held.tolist())


def test_dataset_status(tmp_path: Path) -> None:
    make_idx_folder(tmp_path / "mnist", gz=False)
    rows = {row["name"]: row for row in dataset_status(tmp_path)}
    assert list(rows) == list_datasets()
    assert rows["mnist"]["available"] and rows["mnist"]["found_at"] == str(tmp_path / "mnist")
    assert not rows["cifar10"]["available"] and rows["cifar10"]["found_at"] is None
    assert rows["cifar10"]["looked_in"] == [str(tmp_path), str(tmp_path / "cifar-10-batches-py")]
    assert "cifar-10-python.tar.gz" in rows["cifar10"]["how_to_get"]
    assert rows["mnist"]["damaged"] is None


@pytest.mark.parametrize("damage,message", [
    (lambda f: (f / "t10k-labels-idx1-ubyte").write_bytes(b"<html>not found</html>"), "has magic number"),
    (lambda f: (f / "train-images-idx3-ubyte").write_bytes(
        (f / "train-images-idx3-ubyte").read_bytes()[:100]), "is truncated"),
    (lambda f: make_idx_folder(f, gz=False, n_test=7) and (f / "t10k-labels-idx1-ubyte").write_bytes(
        idx_bytes(LABELS_MAGIC, np.zeros(5))), "holds 7 images but")])
def test_dataset_status_reads_the_idx_headers(tmp_path, damage, message, capsys):
    folder = make_idx_folder(tmp_path / "mnist", gz=False)
    damage(folder)
    row = next(row for row in dataset_status(tmp_path) if row["name"] == "mnist")
    assert not row["available"] and row["found_at"] == str(folder) and message in row["damaged"]
    from lorita.cli import main
    assert main(["datasets", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "\nmnist          damaged     " in out and message in out


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist absent")
def test_fashion_mnist_from_debian_folder() -> None:
    ds = load_dataset("fashion-mnist")  # about 2 s: reads 60,000 + 10,000 28x28 images
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54000, 6000, 10000)
    assert ds.train.images.shape[1:] == (1, 28, 28) and ds.source == str(FASHION)
    assert ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10
    assert 0.2 < ds.train.mean[0] < 0.4 and 0.25 < ds.train.std[0] < 0.45  # known ~0.286 / ~0.353


def test_reads_same_folder_compares_the_files_the_readers_find(tmp_path):
    from lorita.data.datasets import reads_same_folder
    found = make_idx_folder(tmp_path / "root" / "mnist", gz=False)
    make_idx_folder(tmp_path / "copy", gz=False)
    (tmp_path / "link").symlink_to(found)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert reads_same_folder("mnist", str(tmp_path / "root"), str(found))  # the readers look in root/mnist
    assert reads_same_folder("MNIST", str(tmp_path / "link"), str(found))
    assert not reads_same_folder("mnist", str(tmp_path / "copy"), str(found))  # the same bytes elsewhere: not the same
    assert not reads_same_folder("mnist", str(tmp_path / "loop"), None)  # a link loop: refused, no RuntimeError
    assert not reads_same_folder("mnist", str(tmp_path / "missing"), str(found))
    assert reads_same_folder("fortunes", "~/t", str(Path("~/t").expanduser()))  # no folder to look in: the names
