"""Ingestion on the real corpus and on deliberately awkward files."""

from __future__ import annotations

import json
import unicodedata

import pytest

from electra.config import IngestConfig
from electra.ingest import IngestError, decode, ingest, normalize_text, read_shards, split_sentences
from tests.conftest import DATA


def _cfg(tmp_path, sources, **kw) -> IngestConfig:
    return IngestConfig(sources=[str(s) for s in sources], output_dir=str(tmp_path / "out"), **kw)


def test_real_corpus_counts_add_up_and_latin1_files_are_read(tmp_path):
    result = ingest(_cfg(tmp_path, [DATA / "pretrain"]), progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # 13 Gutenberg books + 55 inaugural speeches + WikiText-2 test (READMEs excluded).
    assert manifest["files_found"] == 69 == manifest["files_read"] + manifest["files_skipped"]
    assert manifest["files_skipped"] == 0
    # Some inaugural files are Latin-1: decoded per file, never dropped.
    assert manifest["encodings"].get("cp1252", 0) + manifest["encodings"].get("latin-1", 0) >= 1
    assert sum(s["documents"] for s in manifest["per_source"].values()) == result["documents"]
    # WikiText's " = Title = " headings split it into many articles.
    wiki = [f for f in manifest["files"] if f["path"].endswith("wiki.test.raw")][0]
    assert wiki["documents"] > 40
    docs = list(read_shards(tmp_path / "out"))
    assert len(docs) == result["documents"]
    assert sum(len(d) for d in docs) == result["sentences"]
    assert all(unicodedata.is_normalized("NFC", s) for d in docs[:20] for s in d)
    assert result["content_hash"] == manifest["content_hash"]


def test_duplicates_empty_and_binary_files_are_recorded_not_lost(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = "The first sentence is here. And a second one follows it.\n\nA new paragraph starts. " * 5
    (corpus / "a.txt").write_text(text)
    (corpus / "b.txt").write_text(text)  # exact duplicate document
    (corpus / "empty.txt").write_text("")
    (corpus / "binary.bin").write_bytes(b"\x00\x01\x02" * 100)
    (corpus / "latin.txt").write_bytes(("Caf\xe9 society met in the evening. " * 10).encode("latin-1"))
    (corpus / "crlf.txt").write_bytes(("Windows lines end here.\r\nThey continue on.\r\n" * 10).encode())
    ingest(_cfg(tmp_path, [corpus]), progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["files_found"] == 6 == manifest["files_read"] + manifest["files_skipped"]
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in manifest["skipped"]}
    assert reasons["empty.txt"] == "empty file"
    assert "binary" in reasons["binary.bin"]
    assert "duplicates" in reasons["b.txt"]
    assert manifest["duplicate_documents"] == 1
    docs = list(read_shards(tmp_path / "out"))
    assert any("Café society met in the evening." in s for d in docs for s in d)
    assert not any("\r" in s for d in docs for s in d)


def test_no_usable_text_and_missing_sources_are_clear_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(IngestError, match="no usable text"):
        ingest(_cfg(tmp_path, [tmp_path / "empty.txt"]), progress=False)
    with pytest.raises(IngestError, match="matches no file"):
        ingest(_cfg(tmp_path, [tmp_path / "nope" / "*.txt"]), progress=False)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_globs_select_files(tmp_path):
    result = ingest(_cfg(tmp_path, [str(DATA / "pretrain" / "inaugural" / "19*.txt")]), progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert all("/19" in f["path"] for f in manifest["files"])
    assert result["files_read"] == len(list((DATA / "pretrain" / "inaugural").glob("19*.txt")))


def test_sentence_splitter_keeps_abbreviations_and_initials():
    text = "Mr. Knightley arrived at noon. He met G. K. Chesterton! Did they talk? Yes, of course."
    assert split_sentences(text) == [
        "Mr. Knightley arrived at noon.",
        "He met G. K. Chesterton!",
        "Did they talk?",
        "Yes, of course.",
    ]


def test_normalizer_and_decoder():
    assert normalize_text("a\u00a0 b\t\tc\r\nd\x07e") == "a b c\nde"
    assert normalize_text("cafe\u0301") == "caf\u00e9"
    assert decode("naïve".encode()) == ("naïve", "utf-8")
    assert decode(b"\xef\xbb\xbfhi") == ("hi", "utf-8-sig")
    assert decode("na\xefve".encode("latin-1"))[0] == "naïve"
