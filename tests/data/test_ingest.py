"""Ingestion on the real corpus and on deliberately awkward files."""

from __future__ import annotations

import json
import unicodedata

import pytest

from electra.core.config import IngestConfig
from electra.data.decoding import decode
from electra.data.ingest import ingest
from electra.data.shards import read_shards
from electra.data.sources import IngestError
from electra.data.text import normalize_text, split_sentences
from tests.conftest import DATA


def _cfg(tmp_path, sources, **kw) -> IngestConfig:
    return IngestConfig(sources=[str(s) for s in sources], output_dir=str(tmp_path / "out"), **kw)


@pytest.mark.data
def test_real_corpus_counts_add_up_and_latin1_files_are_read(tmp_path):
    result = ingest(_cfg(tmp_path, [DATA / "pretrain"]), progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # 13 Gutenberg books + 55 inaugural speeches + WikiText-2 test (READMEs excluded).
    assert manifest["files_found"] == 69 == manifest["files_kept"] + manifest["files_skipped"]
    # 2005-Bush.txt writes its dashes and apostrophes as the Big5 bytes of "—" and "’" ("\xa1X",
    # "\xa1\xa6"), in English text: no encoding reads it with confidence (cp1252 made it
    # "nation¡¦s"), so it is skipped with the reason instead of being written as mojibake.
    assert [(s["path"].rsplit("/", 1)[-1], s["reason"].split(" (")[0]) for s in manifest["skipped"]] == [
        ("2005-Bush.txt", "undecodable: ambiguous encoding")]
    # Some Gutenberg files hold Latin-1/Windows-1252 lines: detected per file, never dropped.
    assert manifest["encodings"].get("cp1252", 0) >= 1
    assert all(f["encoding_confidence"] >= 0.9 for f in manifest["files"] if not f.get("skipped"))
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
    assert manifest["files_found"] == 6 == manifest["files_kept"] + manifest["files_skipped"]
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


@pytest.mark.data
def test_globs_select_files(tmp_path):
    result = ingest(_cfg(tmp_path, [str(DATA / "pretrain" / "inaugural" / "19*.txt")]), progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert all("/19" in f["path"] for f in manifest["files"])
    assert result["files_kept"] == len(list((DATA / "pretrain" / "inaugural").glob("19*.txt")))


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


def _manifest(tmp_path) -> dict:
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # Nothing is lost: every file found is kept or skipped with its reason, overall and per source.
    assert manifest["files_found"] == manifest["files_kept"] + manifest["files_skipped"]
    assert manifest["files_skipped"] == len(manifest["skipped"])
    for counts in manifest["per_source"].values():
        assert counts["files"] == counts["kept"] + counts["skipped"]
    return manifest


SENTENCES = "The committee met on Tuesday. It agreed on the plan and went home early.\n" * 4


def test_mixed_encodings_in_one_file_keep_every_line_readable(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    utf8 = "Zoë read the naïve résumé aloud. Everyone applauded.\n".encode()
    cp1252 = "Caf\xe9 owners met in the \u201cold\u201d hall. They talked.\n".encode("cp1252")   # 0x93, 0x94
    (corpus / "mixed.txt").write_bytes(utf8 + SENTENCES.encode() + cp1252)
    (corpus / "bad-utf8.txt").write_bytes(SENTENCES.encode() + b"Broken \xff\xfe bytes here. Then more text.\n")
    ingest(_cfg(tmp_path, [corpus]), progress=False)
    manifest = _manifest(tmp_path)
    encodings = {f["path"].rsplit("/", 1)[-1]: f["encoding"] for f in manifest["files"]}
    assert encodings["mixed.txt"] == "mixed:utf-8+cp1252"
    text = "\n".join(s for d in read_shards(tmp_path / "out") for s in d)
    assert "Zoë read the naïve résumé aloud." in text
    assert "Café owners met in the \u201cold\u201d hall." in text
    assert "\ufffd" not in text and manifest["files_kept"] == 2


def test_symlinks_out_of_the_corpus_are_skipped_with_the_reason(tmp_path):
    corpus, outside = tmp_path / "corpus", tmp_path / "elsewhere"
    corpus.mkdir()
    outside.mkdir()
    (corpus / "kept.txt").write_text(SENTENCES)
    (outside / "secret.txt").write_text("Private notes that must never be trained on. " * 10)
    (corpus / "link.txt").symlink_to(outside / "secret.txt")
    (corpus / "linked-dir").symlink_to(outside, target_is_directory=True)
    (corpus / "inside-link.txt").symlink_to(corpus / "kept.txt")   # inside: followed (a duplicate)
    ingest(_cfg(tmp_path, [corpus], workers=1), progress=False)   # in this process: the patch applies
    manifest = _manifest(tmp_path)
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in manifest["skipped"]}
    assert "outside the corpus folder" in reasons["link.txt"]
    text = "\n".join(s for d in read_shards(tmp_path / "out") for s in d)
    assert "Private notes" not in text
    assert manifest["files_kept"] == 1


def test_files_that_vanish_or_cannot_be_read_during_ingestion_are_recorded(tmp_path, monkeypatch):
    import electra.data.decoding as decoding_module
    import electra.data.ingest as ingest_module
    import electra.data.sources as sources_module

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a.txt", "gone.txt", "locked.txt"):
        (corpus / name).write_text(SENTENCES.replace("Tuesday", name))
    listed = ingest_module.resolve_sources

    def list_then_delete(*args, **kwargs):
        files = listed(*args, **kwargs)
        (corpus / "gone.txt").unlink()   # removed after the listing, before it is read
        return files

    real_open = sources_module.open_source

    def open_source(path):
        if path.name == "locked.txt":   # as a file with no read permission (root ignores chmod)
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(ingest_module, "resolve_sources", list_then_delete)
    for module in (sources_module, decoding_module):   # each module that opens files
        monkeypatch.setattr(module, "open_source", open_source)
    ingest(_cfg(tmp_path, [corpus], workers=1), progress=False)   # in this process: the patch applies
    manifest = _manifest(tmp_path)
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in manifest["skipped"]}
    assert reasons == {"gone.txt": "unreadable: No such file or directory",
                       "locked.txt": "unreadable: Permission denied"}


def test_a_single_100_mb_line_is_cut_into_bounded_sentences(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = "token " * 16_000_000 + "\n"            # 96 MB, no sentence end, one line
    (corpus / "one-line.txt").write_text(SENTENCES + words)
    (corpus / "nul-late.txt").write_bytes(SENTENCES.encode() * 3000 + b"x\x00y. Tail sentence here.\n")
    ingest(_cfg(tmp_path, [corpus], max_sentence_chars=2000, dedup=False), progress=False)
    manifest = _manifest(tmp_path)
    assert manifest["files_kept"] == 2
    longest = max(len(s) for d in read_shards(tmp_path / "out") for s in d)
    assert longest <= 2000
    assert manifest["characters"] > 90_000_000       # cut, not dropped


def test_bad_ingest_params_are_rejected_before_any_work(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_sentence_chars"):
        IngestConfig(max_sentence_chars=10)
    with pytest.raises(IngestError, match="no usable text"):
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "short.txt").write_text("Hi.\n")
        ingest(_cfg(tmp_path, [tmp_path / "c"]), progress=False)
