"""Real text for language models (documents, splits, calibration windows) and perplexity, one standard way."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lorita.data.datasets import DataNotFoundError
from lorita.lm.corpus import TEXT_SOURCES, encode, random_windows, read_documents, split_documents
from lorita.lm.perplexity import perplexity, windows


class Bytes:
    """A stand-in tokenizer: one id per UTF-8 byte."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": list(text.encode())}


def test_a_folder_is_one_document_per_file_and_a_file_is_one_document(tmp_path):
    (tmp_path / "b.txt").write_text("Second\r\nfile.\n")
    (tmp_path / "a.txt").write_text("First file.\n\nWith two paragraphs.\n")
    (tmp_path / ".hidden").write_text("never read")
    assert read_documents(tmp_path) == ["First file.\n\nWith two paragraphs.", "Second\nfile."]
    assert read_documents(tmp_path / "b.txt") == ["Second\nfile."]


def test_text_that_is_not_there_or_not_utf8_is_named(tmp_path):
    with pytest.raises(DataNotFoundError, match="is not a text source"):
        read_documents(tmp_path / "missing")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataNotFoundError, match="latin.txt is not UTF-8 text"):
        read_documents(tmp_path / "latin.txt")


def test_documents_split_whole_and_seeded():
    docs = [f"document number {i}" for i in range(40)]
    parts = split_documents("demo", docs, val_fraction=0.1, test_fraction=0.1, seed=3)
    assert sorted(parts.train + parts.val + parts.test) == sorted(docs)
    assert (len(parts.train), len(parts.val), len(parts.test)) == (32, 4, 4)
    assert split_documents("demo", docs, val_fraction=0.1, test_fraction=0.1, seed=3) == parts
    assert split_documents("demo", docs, val_fraction=0.1, test_fraction=0.1, seed=4) != parts


def test_the_python_docs_source_is_the_language_reference():
    docs = read_documents("python-docs")
    assert len(docs) > 50 and any(d.startswith('The "if" statement') for d in docs)
    assert "PSF" in TEXT_SOURCES["python-docs"].licence


def test_the_handbook_source_is_the_running_text_of_each_long_enough_page(tmp_path, monkeypatch):
    import lorita.lm.corpus as corpus

    body = "<p>" + "Falcot Corp administrators install packages with APT. " * 5 + "</p>"
    (tmp_path / "apt.html").write_text(f'<html><body><div class="navheader">Prev Next</div><h1>APT</h1>{body}'
                                       '<span class="indexterm">apt</span></body></html>')
    (tmp_path / "index.html").write_text('<html><body><div class="toc">1. APT</div><p>Contents</p></body></html>')
    monkeypatch.setattr(corpus, "HANDBOOK_DIR", tmp_path)
    docs = read_documents("debian-handbook")
    assert docs == ["APT\n\n" + ("Falcot Corp administrators install packages with APT. " * 5).strip()]
    monkeypatch.setattr(corpus, "HANDBOOK_DIR", tmp_path / "missing")
    with pytest.raises(DataNotFoundError, match="apt-get install debian-handbook"):
        read_documents("debian-handbook")


def test_calibration_windows_share_the_sources_and_repeat_with_the_seed():
    streams = [torch.arange(0, 500), torch.arange(1000, 1300)]
    w = random_windows(streams, 7, 16, seed=1)
    assert w.shape == (7, 16) and torch.equal(w, random_windows(streams, 7, 16, seed=1))
    assert [int(row[0]) >= 1000 for row in w] == [False, True] * 3 + [False]
    assert bool(((w[:, 1:] - w[:, :-1]) == 1).all())  # contiguous text
    assert not torch.equal(w, random_windows(streams, 7, 16, seed=2))


def test_encode_joins_documents_by_a_blank_line():
    assert encode(Bytes(), ["a", "b"]).tolist() == [97, 10, 10, 98]


@pytest.mark.parametrize("length, context, stride", [(2, 2, None), (10, 4, None), (37, 8, 3), (64, 16, 16),
                                                      (100, 7, 1), (5, 16, 4), (33, 8, 7)])
def test_each_token_is_scored_once_and_only_window_starts_are_skipped(length, context, stride):
    scored = []
    for begin, end, count in windows(length, context, stride):
        assert end - begin <= context and 1 <= count <= end - begin - 1
        scored += list(range(end - count, end))
    if stride is not None and stride < context:  # overlapping windows: every token after the first
        assert scored == list(range(1, length))
    else:  # disjoint windows: all but each window's first token, which has no context in its window
        assert scored == [t for t in range(1, length) if t % context]


class Bigram(nn.Module):
    """A model whose next-token logits depend on the current token only: its perplexity needs no context."""

    def __init__(self, vocab=11):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, x):
        return self.table(x)  # (B, T, V)


def test_perplexity_is_the_exponential_of_the_mean_token_loss():
    torch.manual_seed(0)
    model, ids = Bigram(), torch.randint(0, 11, (203,))
    with torch.no_grad():
        losses = F.cross_entropy(model(ids[None, :-1])[0].double(), ids[1:], reduction="none")  # (L-1,): token t+1
    for context, stride, batch in [(203, None, 1), (16, 4, 3), (50, None, 2)]:
        scored = [t for b, e, count in windows(len(ids), context, stride) for t in range(e - count, e)]
        expected = losses[torch.tensor(scored) - 1].mean().item()  # the same tokens, scored without context
        result = perplexity(model, ids, context=context, stride=stride, batch_size=batch)
        assert result.tokens == len(scored) and math.isclose(result.nll, expected, rel_tol=1e-6)
        assert math.isclose(result.ppl, math.exp(expected), rel_tol=1e-6)


def test_perplexity_reads_a_transformers_output_and_restores_the_mode():
    transformers = pytest.importorskip("transformers")
    from tiny_lm import tiny_llama

    model = tiny_llama().train()
    ids = torch.randint(0, 200, (40,))
    result = perplexity(model, ids, context=40)
    with torch.no_grad():
        model.eval()
        direct = F.cross_entropy(model(ids[None]).logits[0, :-1], ids[1:]).item()
        model.train()
    assert model.training and isinstance(model, transformers.PreTrainedModel)
    assert math.isclose(result.nll, direct, rel_tol=1e-5)


def test_a_text_holding_nul_bytes_is_refused_as_binary(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"words\x00more words\n")
    with pytest.raises(DataNotFoundError, match="holds NUL bytes: it is a binary file"):
        read_documents(tmp_path / "a.txt")
