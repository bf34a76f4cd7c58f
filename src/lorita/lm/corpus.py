"""Real English text for pretrained language models, read offline and split by document.

Sources (``TEXT_SOURCES``), each a list of documents:

* ``"fortunes"``: the Debian package ``fortunes`` (BSD licence): about 15,000 quotations,
  jokes, poems and definitions, one document per entry (read by ``lorita.data.text``).
* ``"python-docs"``: the Python Language Reference as CPython ships it for ``help()``
  (``pydoc_data.topics``, PSF License 2.0): 79 topics of technical prose with grammar and
  code examples, one document per topic. Part of every CPython installation.
* ``"debian-handbook"``: The Debian Administrator's Handbook, the Debian package ``debian-handbook``
  (GPL-2+ or CC-BY-SA 3.0): a book of system-administration prose, about 1.1 million characters,
  one document per English HTML page (its running text, ``lorita.lm.html_text``; pages of under
  200 characters skipped). Broader English than the other two; it quotes no licence in full.
  Not installed by default: ``apt-get install debian-handbook``.
* ``"licenses"``: the licence texts Debian ships in ``/usr/share/common-licenses`` (package
  ``base-files``; each text's own terms allow verbatim copies): legal prose, one document per
  licence, symlinked duplicates read once. Used here for evaluation only, never to
  calibrate or train, so it is text the cut models have not seen.
* a path: a UTF-8 file (one document) or a folder of them (one document per file).

Documents, not characters or tokens, are assigned to train/val/test (``split_documents``,
the same seeded rule as ``lorita.data.text``), so no document straddles two splits. Text
is tokenized with the model's own tokenizer, documents joined by a blank line
(``encode``), the way WikiText-2 perplexity is usually computed.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lorita.checks import check_int
from lorita.data.datasets import DataNotFoundError
from lorita.data.split import derive_seed
from lorita.data.text import FORTUNES_DIR, FORTUNES_HOW_TO_GET, read_entries, split_indices
from lorita.errors import LoritaError
from lorita.lm.html_text import html_text

logger = logging.getLogger(__name__)

SEPARATOR = "\n\n"
LICENSES_DIR = Path("/usr/share/common-licenses")
HANDBOOK_DIR = Path("/usr/share/doc/debian-handbook/html/en-US")
HANDBOOK_MIN_CHARS = 200  # a handbook page with less running text than this is only a title and links


def _fortunes() -> list[str]:
    if not FORTUNES_DIR.is_dir():
        raise DataNotFoundError(f"fortunes: {FORTUNES_DIR} does not exist; {FORTUNES_HOW_TO_GET}")
    return read_entries(FORTUNES_DIR, strict=False)


def _python_docs() -> list[str]:
    try:
        topics = importlib.import_module("pydoc_data.topics").topics  # CPython's standard library
    except ImportError:
        raise DataNotFoundError("python-docs: this Python has no pydoc_data (the help() topics); use a Python "
                                "with its full standard library (Debian: apt-get install libpython3-stdlib)") from None
    return [topics[key].strip() for key in sorted(topics) if topics[key].strip()]


def _licenses() -> list[str]:
    if not LICENSES_DIR.is_dir():
        raise DataNotFoundError(f"licenses: {LICENSES_DIR} does not exist (Debian's base-files package ships it)")
    return _folder_documents(LICENSES_DIR)


def _debian_handbook() -> list[str]:
    pages = sorted(HANDBOOK_DIR.glob("*.html")) if HANDBOOK_DIR.is_dir() else []
    if not pages:
        raise DataNotFoundError(f"debian-handbook: no HTML pages in {HANDBOOK_DIR}; install them with "
                                "'sudo apt-get install debian-handbook'")
    texts = (html_text(_read_utf8(page)) for page in pages)
    return [text for text in texts if len(text) >= HANDBOOK_MIN_CHARS]


@dataclass(frozen=True)
class TextSource:
    """A named offline text: how to read its documents, its licence, what kind of text it is."""

    read: Callable[[], list[str]]
    licence: str
    kind: str


TEXT_SOURCES: dict[str, TextSource] = {
    "fortunes": TextSource(_fortunes, "BSD (Debian package fortunes)", "quotations, jokes, poems"),
    "python-docs": TextSource(_python_docs, "PSF License 2.0 (CPython's pydoc_data)",
                              "technical documentation (the Python Language Reference)"),
    "debian-handbook": TextSource(_debian_handbook, "GPL-2+ or CC-BY-SA 3.0 (Debian package debian-handbook)",
                                  "a book: system-administration prose"),
    "licenses": TextSource(_licenses, "verbatim copying allowed by each licence (Debian base-files)",
                           "legal prose: software licences, evaluation only"),
}
CALIBRATION_SOURCES = ("fortunes", "python-docs")


def _text_files(folder: Path) -> list[Path]:
    """The files of a text folder that are read: visible regular files, each file once (links to one file)."""
    files, seen = [], set()
    for path in sorted(folder.iterdir()):
        real = path.resolve()
        if path.name.startswith(".") or not path.is_file() or real in seen:
            continue
        seen.add(real)
        files.append(path)
    return files


def _folder_documents(folder: Path) -> list[str]:
    return [d for d in (_read_utf8(path) for path in _text_files(folder)) if d.strip()]


def _read_utf8(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataNotFoundError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); convert it "
                                "(e.g. iconv -f latin1 -t utf-8)") from None
    if "\0" in text:  # as lorita.data.text refuses it: a binary file, not text
        raise DataNotFoundError(f"{path} holds NUL bytes: it is a binary file, not text; give a text file")
    return text.replace("\r\n", "\n").strip("\n")


def check_text(source: str | os.PathLike) -> str:
    """``source`` as text if it names a text source (``TEXT_SOURCES``) or an existing file or folder; nothing is read.

    Example:
        >>> check_text("fortunes")
        'fortunes'
        >>> check_text("/no/such/text")
        Traceback (most recent call last):
        ...
        lorita.data.datasets.DataNotFoundError: no text '/no/such/text': name one of fortunes, python-docs, debian-handbook, licenses, or a UTF-8 file or folder of them
    """
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise DataNotFoundError(f"a text is one of {', '.join(TEXT_SOURCES)}, or a UTF-8 file or folder of them, got "
                                f"{source!r}")
    if (isinstance(source, str) and source in TEXT_SOURCES) or Path(source).expanduser().exists():
        return str(source)
    raise DataNotFoundError(f"no text {str(source)!r}: name one of {', '.join(TEXT_SOURCES)}, or a UTF-8 file or "
                            "folder of them")


MAX_TEXT_BYTES = 64 << 20  # a user's text for a language model, file or folder: a few MiB is already a long text
MAX_TEXT_CHARACTERS = 16 * 10**6  # the tokenizer holds a text's ids and offsets at once: about 300 bytes a token


def read_user_text(source: str | os.PathLike) -> list[str]:
    """``read_documents(source)`` for a text a user gives, bounded: a file or folder past ``MAX_TEXT_BYTES`` is refused
    by its size before it is read, one past ``MAX_TEXT_CHARACTERS`` once read (the tokenizer would take gigabytes).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.txt"; _ = path.write_text("One line.")
        >>> read_user_text(path)
        ['One line.']
    """
    if not (isinstance(source, str) and source in TEXT_SOURCES):
        path = Path(source).expanduser()
        files = [path] if path.is_file() else _text_files(path) if path.is_dir() else []
        size = sum(p.stat().st_size for p in files)
        if size > MAX_TEXT_BYTES:
            raise LoritaError(f"{source} holds {size:,} bytes of text, more than the {MAX_TEXT_BYTES >> 20} MiB lorita "
                              "reads for a language model: give a part of it")
    documents = read_documents(source)
    characters = sum(len(d) for d in documents)
    if characters > MAX_TEXT_CHARACTERS:
        raise LoritaError(f"{source} holds {characters:,} characters; lorita reads at most {MAX_TEXT_CHARACTERS:,} "
                          "(the tokenizer takes hundreds of times a text's size in memory): give a part of it")
    return documents


def read_documents(source: str | os.PathLike) -> list[str]:
    """The documents of a named source (``TEXT_SOURCES``) or of a UTF-8 file (one document) or folder (one per file).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.txt").write_text("First document.\\n"); _ = (folder / "b.txt").write_text("Second.")
        >>> read_documents(folder)
        ['First document.', 'Second.']
    """
    if isinstance(source, str) and source in TEXT_SOURCES:
        docs = TEXT_SOURCES[source].read()
    else:
        path = Path(source).expanduser()
        if path.is_file():
            docs = [_read_utf8(path)]
        elif path.is_dir():
            docs = _folder_documents(path)
        else:
            raise DataNotFoundError(f"{source} is not a text source ({', '.join(TEXT_SOURCES)}), nor a UTF-8 file "
                                    "or folder of them")
    if not any(d.strip() for d in docs):
        raise DataNotFoundError(f"{source}: no text in it")
    return docs


@dataclass(frozen=True)
class DocumentSplits:
    """The documents of one source, split into ``train`` / ``val`` / ``test`` lists."""

    name: str
    train: list[str]
    val: list[str]
    test: list[str]


def split_documents(name: str, documents: list[str], *, val_fraction: float = 0.05, test_fraction: float = 0.05,
                    seed: int = 0) -> DocumentSplits:
    """Documents assigned to train/val/test by a seeded permutation (``lorita.data.text.split_indices``).

    Example:
        >>> parts = split_documents("demo", [f"doc {i}" for i in range(20)], val_fraction=0.1, test_fraction=0.1)
        >>> len(parts.train), parts.val
        (16, ['doc 4', 'doc 18'])
    """
    parts = split_indices(len(documents), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                          name=name)
    return DocumentSplits(name, *([documents[i] for i in parts[key]] for key in ("train", "val", "test")))


def encode(tokenizer, documents: list[str]) -> torch.Tensor:
    """Token ids (1-D int64) of ``documents`` joined by a blank line, with the model's own tokenizer, no special tokens.

    Example:
        >>> class Bytes:  # a stand-in tokenizer: one id per byte
        ...     def __call__(self, text, add_special_tokens=True):
        ...         return {"input_ids": list(text.encode())}
        >>> encode(Bytes(), ["ab", "c"]).tolist()
        [97, 98, 10, 10, 99]
    """
    text = SEPARATOR.join(documents)
    if not text:
        raise LoritaError("no text to encode: the document list is empty")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.int64)


def check_ids_fit(ids: torch.Tensor, tokenizer, rows: int) -> torch.Tensor:
    """``ids``, when every one has a row in the model's embedding of ``rows``; else a LoritaError naming the token (a
    tokenizer's added tokens, such as chat markers, may lie past the rows of a model that never learnt them).

    Example:
        >>> check_ids_fit(torch.tensor([1, 2]), None, 3).tolist()
        [1, 2]
    """
    if ids.numel() and int(ids.max()) >= rows:
        top = int(ids.max())
        token = tokenizer.convert_ids_to_tokens(top) if hasattr(tokenizer, "convert_ids_to_tokens") else top
        raise LoritaError(f"the text holds token {token!r} (id {top}), past the {rows} rows of the model's embedding: "
                          "its tokenizer has tokens the model has no place for; leave them out of the text")
    return ids


def check_calibration(calibration, model) -> torch.Tensor:
    """``calibration`` when it is a ``(windows, tokens)`` tensor of token ids (int64 or int32, the dtypes an embedding
    takes), both at least 1, each with a
    row in ``model``'s input embedding (where it has one: ``get_input_embeddings``); else a LoritaError saying what
    is wrong (the model would fail on it with an index or shape error).

    Example:
        >>> check_calibration(torch.zeros(2, 3, dtype=torch.long), None).shape
        torch.Size([2, 3])
        >>> check_calibration(torch.zeros(2, 3), None)
        Traceback (most recent call last):
        ...
        lorita.errors.LoritaError: calibration must be token ids shaped (windows, tokens), e.g. lorita.lm.corpus.random_windows(...); got a tensor of torch.float32 shaped (2, 3)
    """
    if not isinstance(calibration, torch.Tensor):
        got = type(calibration).__name__
    elif calibration.dim() != 2 or 0 in calibration.shape or calibration.dtype not in (torch.long, torch.int32):
        got = f"a tensor of {calibration.dtype} shaped {tuple(calibration.shape)}"
    else:
        got = None
    if got is not None:
        raise LoritaError("calibration must be token ids shaped (windows, tokens), e.g. "
                          f"lorita.lm.corpus.random_windows(...); got {got}")
    try:
        rows = model.get_input_embeddings().num_embeddings
    except Exception:  # a model without one (or not a transformers model): its own forward checks the ids
        rows = None
    low, high = int(calibration.min()), int(calibration.max())
    if low < 0 or (rows is not None and high >= rows):
        raise LoritaError(f"calibration holds token id {low if low < 0 else high}, outside the model's embedding "
                          f"({'rows 0 to ' + str(rows - 1) if rows is not None else 'ids are at least 0'}); "
                          "draw the windows from text encoded with the model's own tokenizer")
    return calibration


def random_windows(streams: list[torch.Tensor], count: int, context: int, *, seed: int = 0) -> torch.Tensor:
    """``count`` windows of ``context`` token ids (int64, (count, context)), drawn in turn from each stream.

    Window starts are uniform over each stream, seeded by ``(seed, stream index)``:
    SVD-LLM's and GPTQ's calibration recipe (random windows of the training text), with the
    windows shared out evenly among the sources.

    Example:
        >>> w = random_windows([torch.arange(100), torch.arange(1000, 1100)], 4, 8)
        >>> tuple(w.shape), [int(row[0]) >= 1000 for row in w]
        ((4, 8), [False, True, False, True])
    """
    check_int("count", count)
    check_int("context", context)
    if not streams:
        raise LoritaError("random_windows needs at least one token stream")
    rows = []
    for index, ids in enumerate(streams):
        share = len(range(index, count, len(streams)))
        if len(ids) < context:
            raise LoritaError(f"stream {index} holds {len(ids)} tokens, fewer than one window of {context}")
        gen = torch.Generator().manual_seed(derive_seed(seed, index))
        starts = torch.randint(0, len(ids) - context + 1, (share,), generator=gen)
        rows.append(ids[starts[:, None] + torch.arange(context)])  # (share, T)
    out = torch.empty(count, context, dtype=torch.int64)
    for index, block in enumerate(rows):
        out[index::len(streams)] = block
    return out


@dataclass(frozen=True)
class TokenSplits:
    """Token streams (1-D int64) of one source's train / val / test documents."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def tokenized_splits(tokenizer, source: str, *, val_fraction: float = 0.05, test_fraction: float = 0.05,
                     seed: int = 0) -> TokenSplits:
    """``read_documents`` + ``split_documents`` + ``encode`` of each split (an empty split: an empty stream).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for i in range(20):
        ...     _ = (folder / f"{i:02}.txt").write_text(f"doc {i}")
        >>> parts = tokenized_splits(lambda text, add_special_tokens: {"input_ids": list(text.encode())}, str(folder))
        >>> len(parts.val) > 0, len(parts.train) > len(parts.val)
        (True, True)
    """
    parts = split_documents(source, read_documents(source), val_fraction=val_fraction, test_fraction=test_fraction,
                            seed=seed)
    streams = [encode(tokenizer, docs) if docs else torch.zeros(0, dtype=torch.int64)
               for docs in (parts.train, parts.val, parts.test)]
    return TokenSplits(str(source), *streams)
