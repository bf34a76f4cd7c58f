"""Character-level text data: entry parsing, file selection, seeded entry splits, windows, errors.

Every corpus is written to tmp_path here; only the last test reads the real Debian
``fortunes`` package and is skipped where it is not installed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from lorita.data import DataNotFoundError
from lorita.data import text as text_mod
from lorita.data.text import (SEPARATOR, UNK, TextDataset, TextSplit, load_text_dataset, read_entries,
                              split_entries, text_dataset_status)
from lorita.errors import LoritaError


def write_entries(path: Path, entries: list[str], sep: str = "%") -> Path:
    """A fortune-style file: entries separated by lines holding only ``sep``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"\n{sep}\n".join(entries) + f"\n{sep}\n", encoding="utf-8")
    return path


def unique_entries(n: int) -> list[str]:
    """Single-line entries, each with one character no other entry has (so vocab membership tells the split)."""
    return [f"entry {i} {chr(0x100 + i)}" for i in range(n)]


def split_texts(ds: TextDataset) -> dict[str, list[str]]:
    """Each split's entries as decoded (characters outside the vocabulary read as UNK)."""
    return {key: ds.decode(getattr(ds, key).ids).split(SEPARATOR) for key in ("train", "val", "test")}


def split_numbers(ds: TextDataset) -> dict[str, list[int]]:
    """Which of ``unique_entries`` each split holds, by number (the digits are always in train's vocabulary)."""
    return {key: [int(e.split()[1]) for e in texts] for key, texts in split_texts(ds).items()}


# ------------------------------------------------------------------ parsing and files


def test_split_entries_on_percent_lines_blank_lines_and_crlf():
    assert split_entries("a\n%\n b\n  c\n%  \n\n%\n") == ["a", " b\n  c"]  # spaces kept, empty entry dropped
    assert split_entries("a\r\n%\r\nb\r\n") == ["a", "b"]
    assert split_entries("p1 l1\np1 l2\n\n \n\np2\n") == ["p1 l1\np1 l2", "p2"]
    assert split_entries("100% sure\nx\n\ny") == ["100% sure\nx", "y"]  # '%' inside a line is text
    assert split_entries("\n\n") == []


def test_user_folder_reads_regular_files_in_name_order(tmp_path):
    write_entries(tmp_path / "b.txt", ["b1", "b2"])
    (tmp_path / "a").write_text("a1\n\na2\n")  # any name; blank-line entries
    (tmp_path / "a.dat").write_bytes(b"\x00\xff\x00")  # strfile index: skipped
    (tmp_path / ".hidden").write_text("secret")
    write_entries(tmp_path / "sub" / "c.txt", ["not read"])
    (tmp_path / "link.txt").symlink_to(tmp_path / "b.txt")  # same file reached twice: read once
    (tmp_path / "z.txt").symlink_to(Path("sub") / "c.txt")  # a link that stays inside the folder is read
    assert read_entries(tmp_path) == ["a1", "a2", "b1", "b2", "not read"]


@pytest.mark.parametrize("target", ["outside", "/etc/passwd", "/proc/self/environ", "chain"])
def test_a_link_leading_out_of_a_text_folder_is_refused(tmp_path, target):
    """A downloaded corpus holding x.txt -> /etc/shadow must not be trained on (or leak through samples)."""
    folder = tmp_path / "corpus"
    write_entries(folder / "a.txt", [f"entry {i}" for i in range(20)])
    outside = write_entries(tmp_path / "outside.txt", ["secret"])
    if target == "chain":  # a link inside pointing at a link that leads out
        (folder / "y-hop.txt").symlink_to(outside)
        (folder / "x.txt").symlink_to(folder / "y-hop.txt")
    else:
        (folder / "x.txt").symlink_to(outside if target == "outside" else target)
    with pytest.raises(DataNotFoundError, match=r"x.txt is a symbolic link to .*, outside .*corpus; lorita reads "
                                                r"only files inside a text folder"):
        load_text_dataset(folder)
    with pytest.raises(DataNotFoundError, match=r"symbolic link"):
        read_entries(folder)


def test_a_link_loop_in_a_text_folder_is_said_not_a_crash(tmp_path):
    write_entries(tmp_path / "a.txt", [f"entry {i}" for i in range(20)])
    (tmp_path / "b.txt").symlink_to("b.txt")
    with pytest.raises(DataNotFoundError, match=r"b.txt is a symbolic link that leads round in a loop; remove it"):
        load_text_dataset(tmp_path)


def test_a_vocabulary_past_the_models_reach_is_refused_before_training(tmp_path):
    """Every distinct character is a token: a file of every code point would ask the output layer for gigabytes."""
    letters = [chr(c) for c in range(0x10000, 0x10000 + 70_000)]  # 70,000 distinct characters, none a surrogate
    write_entries(tmp_path / "a.txt", ["".join(letters[i::20]) for i in range(20)] * 2)
    with pytest.raises(LoritaError, match=r"distinct characters; lorita's character-level models take at most 65,535"):
        load_text_dataset(tmp_path, val_fraction=0.0, test_fraction=0.1)


def test_a_binary_file_in_a_text_folder_is_refused(tmp_path):
    """An all-NUL 'text' file is valid UTF-8 and trained to 100% validation accuracy: refused as binary."""
    (tmp_path / "zeros.txt").write_bytes(bytes(4096))
    with pytest.raises(DataNotFoundError, match=r"zeros.txt holds NUL bytes: it is a binary file, not text"):
        load_text_dataset(tmp_path)


def test_fortunes_mode_skips_dat_u8_symlinks_and_subfolders(tmp_path, monkeypatch):
    root = tmp_path / "fortunes"
    write_entries(root / "art", [f"art {i}" for i in range(20)])
    (root / "art.dat").write_bytes(b"\x00\x00\x00\x02\xff")
    (root / "art.u8").symlink_to(root / "art")
    write_entries(root / "extra.u8", ["u8 file"])
    (root / "other").symlink_to(write_entries(tmp_path / "elsewhere", ["linked"]))
    write_entries(root / "off" / "sub", ["in subfolder"])
    monkeypatch.setattr(text_mod, "FORTUNES_DIR", root)
    ds = load_text_dataset("fortunes", seed=0)
    assert ds.name == "fortunes" and ds.source == str(root)
    assert sorted(sum(split_texts(ds).values(), [])) == sorted(f"art {i}" for i in range(20))


def test_not_utf8_names_the_file_in_own_folder_but_is_replaced_in_fortunes(tmp_path, monkeypatch, caplog):
    (tmp_path / "good.txt").write_text("fine\n%\nalso fine\n")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n%\nna\xefve\n")  # latin-1
    with pytest.raises(DataNotFoundError, match=r"bad\.txt is not UTF-8 text.*iconv"):
        read_entries(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lorita.data.text"):
        entries = read_entries(tmp_path, strict=False)
    assert entries == [f"caf{UNK}", f"na{UNK}ve", "fine", "also fine"]
    assert "bad.txt" in caplog.text and "good.txt" not in caplog.text


# ------------------------------------------------------------------ splits and vocabulary


def test_split_is_by_entry_seeded_and_disjoint(tmp_path):
    entries = unique_entries(100)
    write_entries(tmp_path / "c.txt", entries)
    ds = load_text_dataset(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=5)
    parts = split_numbers(ds)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [70, 10, 20]
    assert [s.num_entries for s in (ds.train, ds.val, ds.test)] == [70, 10, 20]
    # Disjoint by entry and complete; each split keeps file order.
    assert sorted(sum(parts.values(), [])) == list(range(100))
    assert all(p == sorted(p) for p in parts.values())
    assert split_texts(ds)["train"] == [entries[i] for i in parts["train"]]  # whole entries, intact
    again = load_text_dataset(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=5)
    assert split_numbers(again) == parts
    other = load_text_dataset(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=6)
    assert split_numbers(other)["val"] != parts["val"]


def test_vocabulary_comes_from_train_only_and_unknowns_map_to_zero(tmp_path):
    write_entries(tmp_path / "c.txt", unique_entries(40))
    ds = load_text_dataset(tmp_path, val_fraction=0.1, test_fraction=0.1, seed=0)
    entries, parts = unique_entries(40), split_numbers(ds)
    train_text = SEPARATOR.join(entries[i] for i in parts["train"])
    assert ds.vocab[0] == UNK and ds.vocab[1:] == sorted(set(train_text) | set(SEPARATOR))
    assert ds.vocab_size == len(ds.vocab)
    assert ds.decode(ds.train.ids) == train_text  # lossless on train
    val_only = "".join(entries[i][-1] for i in parts["val"])  # each entry's own character
    assert len(parts["val"]) == 4 and not set(val_only) & set(ds.vocab)
    assert (ds.encode(val_only) == 0).all() and int((ds.val.ids == 0).sum()) == 4
    assert ds.decode(ds.val.ids) == SEPARATOR.join(entries[i][:-1] + UNK for i in parts["val"])
    assert ds.encode("").shape == (0,) and ds.decode([]) == ""
    with pytest.raises(LoritaError, match=r"token id 999 is outside the vocabulary"):
        ds.decode([1, 999])


def test_replacement_characters_in_train_are_the_unknown_symbol():
    entries = [f"caf{UNK} {i}" for i in range(10)]  # what fortunes' undecodable bytes turn into
    ds = TextDataset.from_entries("replaced", entries, source="memory", val_fraction=0.1, test_fraction=0.1)
    assert ds.vocab.count(UNK) == 1 and int(ds.encode(UNK)) == 0
    assert ds.decode(ds.train.ids).count(UNK) == 8


def test_splits_hold_compact_ids_encoded_in_chunks(monkeypatch):
    """One byte per character up to 256 symbols (int32 beyond), encoded a chunk at a time: the same ids as
    one pass, and batches still int64. (Before: int64 ids plus UTF-32 and int64 copies, ~38x the text.)"""
    entries = [f"line {i} " + "".join(chr(0x100 + (i * 7 + j) % 50) for j in range(5)) for i in range(200)]
    ds = TextDataset.from_entries("demo", entries, source="memory")
    assert ds.vocab_size <= 256 and ds.train.ids.dtype == torch.uint8
    x, y = next(ds.train.batches(4, 8, steps=1))
    assert x.dtype == y.dtype == torch.int64 and ds.val.eval_windows(4)[0].dtype == torch.int64
    monkeypatch.setattr(text_mod, "ENCODE_CHUNK", 7)
    again = TextDataset.from_entries("demo", entries, source="memory")
    assert torch.equal(again.train.ids, ds.train.ids) and torch.equal(again.test.ids, ds.test.ids)
    assert torch.equal(ds._encode(SEPARATOR.join(entries), torch.int64), ds.encode(SEPARATOR.join(entries)))
    wide = TextDataset.from_entries("wide", [chr(0x4E00 + i) * 3 for i in range(400)], source="memory")
    assert wide.vocab_size > 256 and wide.train.ids.dtype == torch.int32
    assert wide.decode(wide.train.ids[:3]) == wide.decode(wide.encode(wide.decode(wide.train.ids[:3])))


def test_zero_fractions_and_small_corpora(tmp_path):
    write_entries(tmp_path / "c.txt", unique_entries(10))
    ds = load_text_dataset(tmp_path, val_fraction=0.0, test_fraction=0.05, seed=0)
    assert (len(ds.val), ds.val.num_entries, ds.test.num_entries, ds.train.num_entries) == (0, 0, 1, 9)
    # A non-zero fraction always gets at least one entry; train must keep one.
    with pytest.raises(LoritaError, match=r"2 entries are too few to split.*lower the fractions"):
        TextDataset.from_entries("tiny", ["a", "b"], source="memory")
    for bad in (dict(val_fraction=1.0), dict(test_fraction=-0.1), dict(val_fraction=True)):
        with pytest.raises(LoritaError, match=r"_fraction must be a number in \[0, 1\)"):
            load_text_dataset(tmp_path, **bad)
    with pytest.raises(LoritaError, match=r"val_fraction \+ test_fraction must be < 1"):
        load_text_dataset(tmp_path, val_fraction=0.5, test_fraction=0.5)


def test_missing_or_empty_folders_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(text_mod, "FORTUNES_DIR", tmp_path / "no-fortunes")
    with pytest.raises(DataNotFoundError, match=r"(?s)no-fortunes \(does not exist\).*apt-get install fortunes"):
        load_text_dataset("fortunes")
    with pytest.raises(DataNotFoundError, match=r"looked in .*nowhere \(does not exist\)"):
        load_text_dataset(tmp_path / "nowhere")
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "x.dat").write_bytes(b"\x00")
    with pytest.raises(DataNotFoundError, match=r"no text files in .*only"):
        load_text_dataset(tmp_path / "only")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("\n%\n\n")
    with pytest.raises(DataNotFoundError, match=r"hold no entries"):
        load_text_dataset(tmp_path / "blank")


def test_status_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(text_mod, "FORTUNES_DIR", tmp_path / "absent")
    (tmp_path / "mine").mkdir()
    rows = text_dataset_status(tmp_path / "mine")
    assert [r["name"] for r in rows] == ["fortunes", "text"]
    assert set(rows[0]) == {"name", "available", "found_at", "looked_in", "how_to_get"}
    assert not rows[0]["available"] and rows[0]["found_at"] is None
    assert "apt-get install fortunes" in rows[0]["how_to_get"]
    assert not rows[1]["available"]  # empty folder
    (tmp_path / "mine" / "a.txt").write_text("hello")
    assert text_dataset_status(tmp_path / "mine")[1]["found_at"] == str(tmp_path / "mine")


# ------------------------------------------------------------------ windows


def test_batches_are_shifted_windows_deterministic_and_rank_aware():
    split = TextSplit(torch.arange(1000) * 7, num_entries=1)  # ids distinguish positions
    batches = list(split.batches(7, 16, steps=3, seed=2, epoch=1))
    assert len(batches) == 3
    for x, y in batches:
        assert x.shape == y.shape == (7, 16) and x.dtype == torch.int64
        starts = x[:, 0] // 7
        assert torch.equal(x, split.ids[starts[:, None] + torch.arange(16)])
        assert torch.equal(y, split.ids[starts[:, None] + 1 + torch.arange(16)])
    again = list(split.batches(7, 16, steps=3, seed=2, epoch=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    assert not torch.equal(next(split.batches(7, 16, steps=1, seed=2, epoch=2))[0], batches[0][0])
    # Union over ranks of each step = the single-process batch (uneven chunks, and empty ones).
    for world, size in ((3, 7), (4, 2)):
        full = list(split.batches(size, 16, steps=3, seed=2, epoch=1))
        parts = [list(split.batches(size, 16, steps=3, seed=2, epoch=1, rank=r, world_size=world))
                 for r in range(world)]
        for step in range(3):
            assert torch.equal(torch.cat([p[step][0] for p in parts]), full[step][0])
            assert torch.equal(torch.cat([p[step][1] for p in parts]), full[step][1])


def test_batches_reach_both_ends_and_reject_bad_arguments():
    split = TextSplit(torch.arange(6), num_entries=1)
    x, y = next(split.batches(200, 5, steps=1))
    assert x[:, 0].unique().tolist() == [0] and y[:, -1].unique().tolist() == [5]  # the only window
    with pytest.raises(LoritaError, match=r"holds 6 tokens, a window needs context \+ 1 = 7"):
        next(split.batches(2, 6, steps=1))
    for kwargs, pattern in ((dict(batch_size=0), "batch_size"), (dict(steps=-1), "steps"),
                            (dict(rank=2, world_size=2), r"rank must be an int in \[0, 2\)"),
                            (dict(world_size=0), "world_size")):
        args = dict(batch_size=2, context=3, steps=1) | kwargs
        with pytest.raises(LoritaError, match=pattern):
            next(split.batches(args.pop("batch_size"), args.pop("context"), **args))


def test_eval_windows_cover_the_split_in_order():
    split = TextSplit(torch.arange(103), num_entries=1)
    x, y = split.eval_windows(10)
    assert x.shape == y.shape == (10, 10)  # (103 - 1) // 10 windows; the last 2 targets are left out
    assert torch.equal(x.flatten(), torch.arange(100)) and torch.equal(y.flatten(), torch.arange(1, 101))
    xs, ys = split.eval_windows(10, max_windows=4)
    assert xs[:, 0].tolist() == [0, 30, 60, 90]  # evenly spaced whole windows, in order
    assert torch.equal(ys, y[[0, 3, 6, 9]])
    assert torch.equal(split.eval_windows(10, max_windows=50)[0], x)
    with pytest.raises(LoritaError, match=r"max_windows must be an int >= 1"):
        split.eval_windows(10, max_windows=0)
    with pytest.raises(LoritaError, match=r"context must be an int >= 1"):
        split.eval_windows(0)


def test_text_split_rejects_non_integer_ids():
    with pytest.raises(LoritaError, match=r"1-D integer tensor, got torch.float32"):
        TextSplit(torch.zeros(3), num_entries=1)


# ------------------------------------------------------------------ the real corpus


@pytest.mark.skipif(not Path("/usr/share/games/fortunes").is_dir(), reason="Debian package fortunes not installed")
def test_real_fortunes_corpus():
    ds = load_text_dataset("fortunes", seed=0)
    counts = [s.num_entries for s in (ds.train, ds.val, ds.test)]
    total = sum(counts)
    assert 10_000 < total < 30_000  # Debian 12: 15217 entries in 43 files
    assert counts[1] == counts[2] == round(0.05 * total)
    assert 1_500_000 < len(ds.train) < 4_000_000 and len(ds.val) > 50_000 and len(ds.test) > 50_000
    assert 80 < ds.vocab_size < 200  # printable ASCII plus a few control and accented characters
    # Disjoint by entry: a long entry (a short one, say one word, may recur inside another) lies
    # wholly inside exactly one split. Entries may hold blank lines, so look them up as substrings.
    entries = read_entries(text_mod.FORTUNES_DIR, strict=False)
    assert len(entries) == total
    texts = [ds.decode(s.ids) for s in (ds.train, ds.val, ds.test)]
    long = [e for e in entries if len(e) > 300][::10]  # a sample keeps the substring search fast
    homes = [sum(e in t for t in texts) for e in long]
    assert len(long) > 100 and all(h >= 1 for h in homes)
    assert sum(h > 1 for h in homes) <= len(long) // 100  # only the package's few duplicated entries
    assert ds.val.eval_windows(256)[0].shape[1] == 256
