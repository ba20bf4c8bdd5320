"""Text from the real world (issue 18, section 5), through the real ``ingest``: corrupt
archives in every codec and at every point, JSON Lines with bad records, UTF-16/32 with a
byte-order mark, legacy encodings detected (never guessed as cp1252 and written as
mojibake), and sentences split after capitals of any script."""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import lzma
import random
import shutil
from pathlib import Path

import pytest
import zstandard

import electra.core.keys as keys_module
import electra.data.decoding as decoding_module
import electra.data.ingest as ingest_module
import electra.data.sources as sources_module
from electra.core.config import IngestConfig
from electra.data.decoding import UndecodableError, decode
from electra.data.ingest import ingest
from electra.data.shards import read_shards
from electra.data.text import split_sentences


def _run(tmp_path: Path, corpus: Path, out: str = "out", **params) -> tuple[dict, str]:
    """Ingest ``corpus`` in this process (``workers=1``: monkeypatches apply); the manifest and
    the shards' text, one sentence a line."""
    folder = tmp_path / out
    ingest(IngestConfig(sources=[str(corpus)], output_dir=str(folder), workers=1, **params), progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    # Nothing is lost: every file found is kept or skipped with its reason.
    assert manifest["files_found"] == manifest["files_kept"] + manifest["files_skipped"]
    assert manifest["files_skipped"] == len(manifest["skipped"])
    return manifest, "\n".join(s for d in read_shards(folder) for s in d)


def _by_name(manifest: dict) -> dict[str, dict]:
    return {Path(f["path"]).name: f for f in manifest["files"]}


def _corpus(tmp_path: Path) -> Path:
    """A corpus folder holding one good English file (so a run never ends with no text)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text(
        "The good file is plain English. It is here so that every run keeps something.\n" * 3, encoding="utf-8")
    return corpus


# --- 1. corrupt compressed files -------------------------------------------------------------

CODECS = {
    "gzip": (".gz", gzip.compress),
    "bzip2": (".bz2", bz2.compress),
    "xz": (".xz", lzma.compress),
    # With a content checksum, as the zstd tool writes by default: without one, bytes overwritten
    # in the middle of a frame can decode to other bytes that no check catches.
    "zstandard": (".zst", lambda data: zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)),
}
MARKER = "quarantined"   # a word only the corrupt files hold
BODY = "".join(f"Line {i} of the {MARKER} archive holds sentence number {i * 7919}. It ends here.\n"
               for i in range(4000)).encode()


def _corruptions(blob: bytes) -> dict[str, bytes]:
    """The ways a compressed file arrives broken: cut short or overwritten with garbage right
    after its header, in the middle and at the end (the trailer: checksums, sizes), or with
    garbage after a whole stream."""
    garbage = bytes(random.Random(18).randrange(1, 256) for _ in range(64))
    mid = len(blob) // 2
    return {
        "cut-after-header": blob[:16],
        "cut-in-the-middle": blob[:mid],
        "cut-by-one-byte": blob[:-1],
        "garbage-after-header": blob[:16] + garbage + blob[16 + 64:],
        "garbage-in-the-middle": blob[:mid] + garbage + blob[mid + 64:],
        "garbage-at-the-end": blob[:-8] + garbage[:8],
        "garbage-after-the-stream": blob + garbage,
        "not-compressed-at-all": BODY[:2000],
    }


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_a_corrupt_archive_is_a_recorded_skip_with_nothing_written(tmp_path, codec):
    suffix, compress = CODECS[codec]
    corpus = _corpus(tmp_path)
    broken = _corruptions(compress(BODY))
    for name, data in broken.items():
        (corpus / f"{name}.txt{suffix}").write_bytes(data)
    # Several whole streams in one file (as pigz, pbzip2, pzstd write them), with NUL padding
    # where the format allows it, are one good file.
    padding = b"\0" * 4 if codec in ("gzip", "xz") else b""
    (corpus / f"two-streams.txt{suffix}").write_bytes(
        compress(b"The first stream has this sentence in it. And a second one follows it here.\n" * 3)
        + padding + compress(b"The second stream adds another sentence. It is read after the first.\n" * 3))
    manifest, text = _run(tmp_path, corpus)

    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {f"{name}.txt{suffix}" for name in broken}, reasons
    for name, reason in reasons.items():
        assert reason.startswith(f"unreadable: corrupt {codec} data ("), (name, reason)
    assert "truncated" in reasons[f"cut-in-the-middle.txt{suffix}"]
    # Nothing of a corrupt file reaches the shards, nor the cache (the kept files' entries only).
    assert MARKER not in text
    assert all(_by_name(manifest)[name]["documents"] == 0 for name in reasons)
    assert len(list((tmp_path / "out.cache").glob("file-*.txt"))) == 2
    assert "The second stream adds another sentence." in text
    assert manifest["files_kept"] == 2


def test_corruption_found_only_while_writing_leaves_nothing_of_the_file(tmp_path, monkeypatch):
    """Pass 1 reads every byte, so corruption is found before anything is written; should a
    file still fail while pass 2 writes it (it changed between the passes), the partly written
    entry is dropped: a skip, not half a file."""
    corpus = _corpus(tmp_path)
    (corpus / "changes.txt.gz").write_bytes(gzip.compress(BODY))
    real_open = sources_module.open_source
    opened: dict[str, int] = {}

    def open_source(path):
        opened[path.name] = opened.get(path.name, 0) + 1
        if path.name == "changes.txt.gz" and opened[path.name] == 3:   # pass 2 (after the BOM sniff, pass 1)
            path.write_bytes(gzip.compress(BODY)[: len(BODY) // 40])
        return real_open(path)

    for module in (sources_module, decoding_module):   # each module that opens files
        monkeypatch.setattr(module, "open_source", open_source)
    manifest, text = _run(tmp_path, corpus)
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert reasons["changes.txt.gz"].startswith("unreadable: changed while being read (corrupt gzip data")
    assert MARKER not in text
    assert len(list((tmp_path / "out.cache").glob("file-*"))) == 2   # good.txt's entry and its .json


# --- 2. JSON Lines with bad records ----------------------------------------------------------

BAD_LINES = {
    **{line: "not JSON {" for line in (10, 20, 30, 40, 50, 60, 70)},
    80: json.dumps({"body": "the text is elsewhere"}),
    90: json.dumps({"text": 42}),
    100: '{"text": "a lone surrogate \\ud800 is not text"}',
    110: json.dumps(["a", "list"]),
    120: "[" * 100_000,   # nested deeper than Python's stack
}


def _jsonl(path: Path, records: int) -> None:
    """``records`` records, bad at the lines of ``BAD_LINES``, and two blank lines."""
    lines = []
    for number in range(1, records + 1):
        lines.append(BAD_LINES.get(number) or json.dumps(
            {"text": f"Record {number} of the export is a document. It has a second sentence, long enough "
                     f"for the document to be kept."}))
        if number in (500, 501):
            lines.append("")   # blank lines are not records (after the bad ones: line = record number)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_bad_json_lines_records_are_skipped_counted_and_named_in_the_manifest(tmp_path):
    corpus = _corpus(tmp_path)
    _jsonl(corpus / "export.jsonl", 600)   # 12 bad of 600: 2%
    manifest, text = _run(tmp_path, corpus, max_bad_record_fraction=0.05)
    entry = _by_name(manifest)["export.jsonl"]
    assert entry["documents"] == 588 and "skipped" not in entry
    assert entry["bad_records"] == {
        "bad": 12, "records": 600,
        "reasons": {
            # The first five line numbers of each reason, its count in full.
            "not a JSON record": {"count": 8, "lines": [10, 20, 30, 40, 50]},
            "no field 'text'": {"count": 2, "lines": [80, 110]},
            "field 'text' is int, not text": {"count": 1, "lines": [90]},
            "field 'text' holds a lone surrogate": {"count": 1, "lines": [100]},
        },
    }
    assert manifest["bad_records"] == 12
    assert "Record 601" not in text and "Record 599 of the export is a document." in text


def test_a_json_lines_file_past_the_bad_fraction_is_skipped_whole(tmp_path):
    corpus = _corpus(tmp_path)
    _jsonl(corpus / "export.jsonl", 600)   # 2% bad > the default 1%
    _jsonl(corpus / "small.jsonl", 9)      # no bad line among the first 9
    manifest, text = _run(tmp_path, corpus)
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert reasons == {"export.jsonl": "12 of 600 records bad (2.0%) > ingest.max_bad_record_fraction (0.01)"}
    assert _by_name(manifest)["export.jsonl"]["bad_records"]["bad"] == 12
    assert "Record 11 " not in text and "Record 9 of the export" in text   # small.jsonl's, not export's
    assert manifest["bad_records"] == 0    # the skipped file's bad records are its entry's, not the kept files'
    assert len(list((tmp_path / "out.cache").glob("file-*.txt"))) == 2


def test_the_bad_record_fraction_is_a_validated_param(tmp_path):
    from pydantic import ValidationError

    assert IngestConfig().max_bad_record_fraction == 0.01
    for wrong in (-0.1, 1.5):
        with pytest.raises(ValidationError, match="max_bad_record_fraction"):
            IngestConfig(max_bad_record_fraction=wrong)
        with pytest.raises(ValidationError, match="min_encoding_confidence"):
            IngestConfig(min_encoding_confidence=wrong)


# --- 3. encodings -----------------------------------------------------------------------------

SPANISH = ("Llegó tarde a la estación. Él dijo que la niña había comido piñas en el jardín. "
           "¿Quién lo sabía? Nadie en el pueblo, según contó después su hermano mayor.")
SPANISH_QUOTES = ("La señora García leyó el periódico en voz alta. \u201cEs increíble\u201d, dijo su marido. "
                  "Después salieron a pasear por el parque y compraron castañas asadas.")
RUSSIAN = ("Это был старый дом на краю деревни. Он стоял на холме, и никто не жил в нём уже много лет. "
           "Вечером пришёл сосед и сказал, что завтра будет сильный дождь.")
RUSSIAN_KOI8 = ("Летом мы жили у бабушки в маленьком городе. Каждое утро она пекла пироги с капустой. "
                "После обеда мы ходили на реку и купались до самого вечера.")
GREEK = ("Η Αθήνα είναι η πρωτεύουσα της Ελλάδας. Είναι μια πολύ παλιά πόλη με πολλά μνημεία. "
         "Κάθε χρόνο χιλιάδες τουρίστες επισκέπτονται την Ακρόπολη.")
POLISH = ("Wczoraj poszliśmy do kina z całą rodziną. Film był bardzo ciekawy, ale trochę za długi. "
          "Później zjedliśmy kolację w małej restauracji przy rynku.")
JAPANESE = "東京は日本の首都です。多くの人が住んでいます。今日は天気がいいですね。明日は雨が降るかもしれません。" * 3
CHINESE = "北京是中国的首都。很多人住在这里。今天天气很好。我们明天去公园散步，然后一起吃午饭。" * 3
UNICODE = f"{SPANISH}\n\n{RUSSIAN}\n\n{GREEK}"

FILES = {   # name: (text, encoding it is written in, the encoding the manifest must record)
    "es-cp1252.txt": (SPANISH_QUOTES, "cp1252", "cp1252"),
    "es-latin1.txt": (SPANISH, "latin-1", "cp1252"),   # the same text in cp1252: cp1252, the WHATWG default
    "ru-cp1251.txt": (RUSSIAN, "cp1251", "cp1251"),
    "ru-koi8r.txt": (RUSSIAN_KOI8, "koi8_r", "koi8_r"),
    "el-cp1253.txt": (GREEK, "cp1253", "cp1253"),
    "pl-cp1250.txt": (POLISH, "cp1250", "cp1250"),
    "ja-shift-jis.txt": (JAPANESE, "shift_jis", "cp932"),
    "zh-gb18030.txt": (CHINESE, "gb18030", "gb18030"),
}
BOM_FILES = {   # name: (byte-order mark + text encoded, the encoding recorded)
    "utf16le-bom.txt": (codecs.BOM_UTF16_LE + ("le " + UNICODE).encode("utf-16-le"), "utf-16-le"),
    "utf16be-bom.txt": (codecs.BOM_UTF16_BE + ("be " + UNICODE).encode("utf-16-be"), "utf-16-be"),
    "utf32le-bom.txt": (codecs.BOM_UTF32_LE + ("32 " + UNICODE).encode("utf-32-le"), "utf-32-le"),
    "utf8-bom.txt": (codecs.BOM_UTF8 + ("8 " + UNICODE).encode("utf-8"), "utf-8-sig"),
}


def _sentences(text: str) -> list[str]:
    return [s for paragraph in text.split("\n") for s in split_sentences(paragraph)]


def test_files_in_legacy_encodings_and_with_byte_order_marks_are_decoded(tmp_path):
    corpus = _corpus(tmp_path)
    for name, (text, written_in, _) in FILES.items():
        (corpus / name).write_bytes((text + "\n").encode(written_in))
    for name, (data, _) in BOM_FILES.items():
        (corpus / name).write_bytes(data)
    # A JSON Lines file from a Windows tool: UTF-16 with a BOM, CRLF line ends.
    (corpus / "records.jsonl").write_bytes(codecs.BOM_UTF16_LE + "\r\n".join(
        json.dumps({"text": f"Record {i}: {GREEK}"}, ensure_ascii=False) for i in range(3)).encode("utf-16-le"))
    manifest, text = _run(tmp_path, corpus)

    assert manifest["skipped"] == []
    files = _by_name(manifest)
    for name, (original, _, encoding) in FILES.items():
        assert files[name]["encoding"] == encoding, (name, files[name])
        assert files[name]["encoding_confidence"] >= 0.9
        for sentence in _sentences(original):
            assert sentence in text.split("\n"), (name, sentence)   # decoded exactly, not mojibake
    for name, (_, encoding) in BOM_FILES.items():
        assert (files[name]["encoding"], files[name]["encoding_confidence"]) == (encoding, 1.0)
    assert files["records.jsonl"]["encoding"] == "utf-16-le" and files["records.jsonl"]["documents"] == 3
    assert files["good.txt"]["encoding_confidence"] == 1.0
    for prefix in ("le", "be", "32", "8"):
        assert f"{prefix} Llegó tarde a la estación." in text.split("\n")
    assert "\ufeff" not in text and "\ufffd" not in text and "\x00" not in text
    assert manifest["encodings"]["utf-16-le"] == 2 and manifest["encodings"]["cp1252"] == 2


def test_text_that_cannot_be_decoded_with_confidence_is_skipped_not_written(tmp_path, monkeypatch):
    monkeypatch.setattr(decoding_module, "ENCODING_SAMPLE_BYTES", 2048)
    corpus = _corpus(tmp_path)
    rng = random.Random(5)
    # 1. Bytes that read as nothing: random high bytes in words and lines (no NUL).
    (corpus / "noise.txt").write_bytes(b"\n".join(
        b" ".join(bytes(rng.randrange(0x80, 0x100) for _ in range(6)) for _ in range(12)) for _ in range(40)))
    # 2. A cp1251 file whose text, past the sample the encoding was detected on, is not cp1251
    #    (0x98 is no character in it): the whole file is checked, not the sample only.
    head = ((RUSSIAN + "\n") * 20).encode("cp1251")
    (corpus / "ru-then-not.txt").write_bytes(head + b"\xcf\xf0\xe8\x98\xe5\xf2 tail.\n")
    # 3. Too short to tell its encoding: three Cyrillic words read as well in cp1251 and KOI8-R.
    (corpus / "ru-short.txt").write_bytes("Это был старый дом. Он стоял на холме.\n".encode("cp1251"))
    manifest, text = _run(tmp_path, corpus)
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"noise.txt", "ru-then-not.txt", "ru-short.txt"}
    assert reasons["noise.txt"].startswith("undecodable: ")
    assert reasons["ru-then-not.txt"] == (
        f"undecodable: the text at byte {len(head) + 3} is not cp1251, the encoding detected "
        "from the file's first non-UTF-8 lines")
    assert reasons["ru-short.txt"].startswith("undecodable: ambiguous encoding (cp1251, koi8_r")
    assert set(text.split("\n")) == set(_sentences("The good file is plain English. It is here so that every "
                                                   "run keeps something."))
    # 4. Below the confidence asked for: skipped, with the confidence it had (kept by default).
    (corpus / "pl-pangram.txt").write_bytes(
        "Zażółć gęślą jaźń. Pójdźże, kiń tę chmurność w głąb flaszy. Świętość życia jest ważna.\n".encode("cp1250"))
    manifest, _ = _run(tmp_path, corpus, out="default")
    assert _by_name(manifest)["pl-pangram.txt"]["encoding"] == "cp1250"
    assert 0.9 <= _by_name(manifest)["pl-pangram.txt"]["encoding_confidence"] < 0.99
    manifest, _ = _run(tmp_path, corpus, out="strict", min_encoding_confidence=0.99)
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert reasons["pl-pangram.txt"].startswith("undecodable: cp1250 at confidence 0.9")
    assert reasons["pl-pangram.txt"].endswith("< ingest.min_encoding_confidence (0.99)")


def test_decode_detects_the_encoding_of_bytes_in_memory():
    assert decode(codecs.BOM_UTF16_BE + "Él vino.".encode("utf-16-be")) == ("Él vino.", "utf-16-be")
    assert decode(codecs.BOM_UTF32_LE + "Он".encode("utf-32-le")) == ("Он", "utf-32-le")
    assert decode((RUSSIAN + "\n").encode("cp1251")) == (RUSSIAN + "\n", "cp1251")
    mixed = "Zoë said hello.\n".encode() + (RUSSIAN + "\n").encode("cp1251")
    assert decode(mixed) == ("Zoë said hello.\n" + RUSSIAN + "\n", "mixed:utf-8+cp1251")
    with pytest.raises(UndecodableError, match="not valid utf-16-le"):
        decode(codecs.BOM_UTF16_LE + b"\x00\xd8")   # a lone surrogate
    with pytest.raises(UndecodableError, match="ambiguous"):
        decode("Привет мир".encode("cp1251"))


def test_a_large_legacy_file_is_read_as_a_stream(tmp_path):
    """A 24 MB cp1251 file (the per-line path, the encoding detected on a bounded sample) costs
    about what a small one costs, as a UTF-8 file does (test_sources)."""
    from tests.data.test_sources import _peak_rss_mib

    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_bytes(f"= Article 0 =\n{RUSSIAN}\n".encode("cp1251"))
    with open(large, "wb") as handle:
        written = k = 0
        while written < 24 * 2**20:
            written += handle.write(f"= Article {k} =\nСтатья номер {k}. {RUSSIAN}\n".encode("cp1251"))
            k += 1
    baseline = _peak_rss_mib(small, tmp_path / "out-small")
    peak = _peak_rss_mib(large, tmp_path / "out-large")
    manifest = json.loads((tmp_path / "out-large" / "manifest.json").read_text())
    assert manifest["files"][0]["encoding"] == "cp1251" and manifest["documents"] == k
    print(f"peak RSS: small file {baseline:.1f} MiB, 24 MB cp1251 file {peak:.1f} MiB")
    assert peak - baseline < 16, (baseline, peak)   # MiB: the 1 MiB sample and its decodings, not the file


# --- 4. sentences in any script ----------------------------------------------------------------


@pytest.mark.parametrize("paragraph, sentences", [
    ("Llegó tarde. Él no dijo nada. ¿Por qué? ¡Nadie lo sabe!",
     ["Llegó tarde.", "Él no dijo nada.", "¿Por qué?", "¡Nadie lo sabe!"]),
    ("Мы вернулись в дом. Он был пуст. «Где все?» — спросила она.",
     ["Мы вернулись в дом.", "Он был пуст.", "«Где все?» — спросила она."]),
    ("Η Αθήνα είναι παλιά. Έχει πολλά μνημεία.", ["Η Αθήνα είναι παλιά.", "Έχει πολλά μνημεία."]),
    ("Er kam spät. „Warum?“ fragte sie. Il est parti. « Oui », dit-il.",
     ["Er kam spät.", "„Warum?“ fragte sie.", "Il est parti.", "« Oui », dit-il."]),
    # Initials and abbreviations in any script do not end a sentence; a lower-case word does not start one.
    ("А. С. Пушкин родился в Москве. Sr. García llegó, etc. y luego se fue.",
     ["А. С. Пушкин родился в Москве.", "Sr. García llegó, etc. y luego se fue."]),
])
def test_sentences_split_after_capitals_of_any_script(paragraph, sentences):
    assert split_sentences(paragraph) == sentences


# --- 5. the cache follows the params and the code ----------------------------------------------


def test_the_cache_key_follows_the_new_params_and_the_code(tmp_path, monkeypatch):
    base = IngestConfig()
    version = ingest_module._version(base)
    assert ingest_module._version(base.model_copy(update={"max_bad_record_fraction": 0.5})) != version
    assert ingest_module._version(base.model_copy(update={"min_encoding_confidence": 0.5})) != version
    # Editing any module a file's entry depends on, not only ingest.py, makes a new key: the
    # package copied, one module changed, and the key made over the copy.
    package = tmp_path / "package"
    shutil.copytree(Path(keys_module.PACKAGE_ROOT) / "data", package / "data")
    monkeypatch.setattr(keys_module, "PACKAGE_ROOT", package)
    assert ingest_module._version(base) == version
    for module in ("text.py", "decoding.py", "sources.py", "ingest.py"):
        with open(package / "data" / module, "a") as handle:
            handle.write("\n# changed\n")
        assert ingest_module._version(base) != version, module
        version = ingest_module._version(base)

    # End to end: a file kept (and cached) under a lenient threshold is not reused under a strict one.
    monkeypatch.undo()
    corpus = _corpus(tmp_path)
    _jsonl(corpus / "export.jsonl", 600)
    lenient, _ = _run(tmp_path, corpus, out="out", max_bad_record_fraction=0.05)
    again, _ = _run(tmp_path, corpus, out="out", max_bad_record_fraction=0.05)
    strict, _ = _run(tmp_path, corpus, out="out", max_bad_record_fraction=0.01)
    assert lenient["files_kept"] == 2 and again["run"]["files_from_cache"] == 2
    assert [Path(s["path"]).name for s in strict["skipped"]] == ["export.jsonl"]
    assert strict["run"]["files_from_cache"] == 0


def test_a_rerun_from_the_cache_records_the_same_encodings(tmp_path):
    """The cache entry keeps the encoding and its confidence: a rerun from the cache writes
    the same manifest entries as the first run."""
    corpus = _corpus(tmp_path)
    (corpus / "ru-cp1251.txt").write_bytes((RUSSIAN + "\n").encode("cp1251"))
    first, _ = _run(tmp_path, corpus)
    second, _ = _run(tmp_path, corpus)
    assert second["run"]["files_from_cache"] == 2
    assert second["files"] == first["files"]
    assert _by_name(second)["ru-cp1251.txt"]["encoding"] == "cp1251"
