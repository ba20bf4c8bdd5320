"""Stage ``ingest``: raw plain-text files in, normalised sentence shards out.

Output layout (``ingest.output_dir``)::

    shard-00000.txt ...   one sentence per line, a blank line between documents
    manifest.json         counts, hashes, per-source counts, per-file encodings, skipped files and why

Sources are plain-text files and JSON Lines files (``.jsonl``/``.ndjson``: one document
per record, its text in ``ingest.jsonl_text_field``), either of them compressed with
gzip, bzip2, xz or zstandard (by suffix: ``.gz``, ``.bz2``, ``.xz``, ``.zst``), and
Hugging Face datasets, by hub name or local path, streamed:
``hf:<dataset>[?name=<config>&split=<split>&revision=<rev>]`` (one document per record).

Each file is a unit of work (processes in parallel: ``ingest.workers``) whose documents
go to a cache entry keyed by the file's content hash, the params and this code
(``<output_dir>.cache``); the shards are assembled from the entries in file order,
dropping exact duplicates (sha256 of the document) and, with ``ingest.near_dedup``,
near duplicates (MinHash + LSH). A rerun after files were added, or after a kill, reads
only the files without an entry, and its output is a fresh run's.

Files are streamed, never read whole: a first pass over each file finds whether it is
usable, its encoding and how its paragraphs are cut, and a second writes its documents,
a MiB block of lines at a time. Memory holds one block and one document, whatever the
corpus size. A file that turns out corrupt is skipped before any of it is written, and
the second pass writes into a temporary entry that is renamed only once the whole file
is done: whatever stops it half way (a file changed between the passes, too many bad
JSON Lines records) leaves nothing of that file behind.

Encodings, file by file (:func:`scan_source`):

1. A byte-order mark decides: UTF-8, UTF-16 or UTF-32, little- or big-endian (the mark
   itself is dropped).
2. Otherwise a block of lines that is valid UTF-8 is UTF-8 (the fast path; ASCII is UTF-8).
3. The lines that are not valid UTF-8 go, up to ``ENCODING_SAMPLE_BYTES`` of them, to
   charset-normalizer (:func:`detect_encoding`); every other such line of the file must
   then decode in the encoding found. A file that joins UTF-8 lines and lines in one
   legacy encoding keeps both readable (its encoding reads ``mixed:utf-8+cp1252``).
4. The manifest records each file's encoding and the confidence of it (1.0 where nothing
   was guessed: UTF-8, a byte-order mark). A file whose encoding is not found with
   ``ingest.min_encoding_confidence`` is skipped as undecodable, never written as mojibake.

JSON Lines: a record that is not JSON, has no ``ingest.jsonl_text_field`` or no string
there is skipped and counted, per file, with its reason and the first line numbers
(the manifest's ``bad_records``). The whole file is skipped when more than
``ingest.max_bad_record_fraction`` of its records are bad: past that, the file is a broken
export or the field is misnamed, and training on what is left would be a silent mistake.

Every file found is either kept or recorded as skipped with a reason: unreadable
(vanished, no permission, corrupt compressed data: truncated or garbled anywhere, in any
codec), empty, binary (NUL bytes), undecodable (no encoding found with confidence), too
many bad JSON Lines records, a symlink leading outside its corpus folder, or no usable
text. Nothing is dropped silently: ``files_found = files_kept + files_skipped``, overall
and per source.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import fnmatch
import glob
import hashlib
import io
import json
import lzma
import os
import re
import time
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from electra.core.config import IngestConfig
from electra.core.files import atomic_dir, atomic_open, read_json, sha256_file, write_json
from electra.core.parallel import default_workers, map_units

# Byte-order marks and the codec each names, longest first (UTF-32-LE's begins with UTF-16-LE's).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
BOM = codecs.BOM_UTF8
# A file that is neither UTF-8 nor marked by a BOM is looked for among these legacy
# encodings (Python's names): about the set Firefox's detector (chardetng) guesses among,
# the Windows code pages, the ISO 8859 parts still in use, KOI8, DOS Cyrillic and the CJK
# encodings. Why a closed list: rare code pages read real text as mojibake with no more
# "chaos" than the truth (French cp1252 scores better as mac_latin2, Polish ISO-8859-2 as
# ISO-8859-14, short Russian as cp1125). All of them are ASCII-compatible and never put a
# line-break byte inside a character, so a file can be decoded line by line.
LEGACY_ENCODINGS = (
    "cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "cp874",
    "iso8859_2", "iso8859_4", "iso8859_5", "iso8859_6", "iso8859_7", "iso8859_8", "iso8859_13",
    "koi8_r", "koi8_u", "cp866", "gb18030", "big5", "euc_jp", "cp932", "cp949",
)
# Of encodings that fit a sample equally well, this one: the WHATWG default for unlabelled
# legacy text, and what most stray bytes in English corpora are.
DEFAULT_LEGACY_ENCODING = "cp1252"
# The lines that are not UTF-8 given to the detector: a bounded sample (the first MiB of
# them), so detection costs the same memory for any file size; the rest is checked against it.
ENCODING_SAMPLE_BYTES = 1 << 20
# A detected encoding must be this sure, unless the caller says otherwise (ingest.min_encoding_confidence).
DEFAULT_MIN_ENCODING_CONFIDENCE: float = IngestConfig.model_fields["min_encoding_confidence"].default
# charset-normalizer's own margins for "fits as well": chaos within 0.01, coherence within 0.02.
_CHAOS_TIE, _COHERENCE_TIE = 0.01, 0.02
# The first line numbers of each kind of bad JSON Lines record kept in the manifest.
BAD_RECORD_LINES = 5

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "rev", "hon", "gen", "col", "capt",
    "lt", "sgt", "mt", "vs", "etc", "no", "vol", "fig", "inc", "ltd", "co", "corp", "u.s",
    "e.g", "i.e", "a.m", "p.m",
}
# Quotes and brackets that may close a sentence after its . ! or ?, and that may open the
# next one before its first letter (Spanish opens questions with ¿ and exclamations with ¡;
# French quotes « », German „ “ and » «).
_CLOSERS = "\"')]\u201d\u2019\u201c\u2018\u00bb\u00ab\u203a\u2039"
_OPENERS = "\"'([\u201c\u2018\u201e\u201a\u00ab\u00bb\u2039\u203a\u00bf\u00a1"
# A candidate sentence end: . ! or ? (plus closers) and space. It ends a sentence when the
# next word starts like one (:func:`_starts_sentence`), which a regex cannot say for every
# script: Python's ``re`` has no class for "upper-case letter" beyond ASCII.
_SENTENCE_END = re.compile(r"[.!?]+[" + re.escape(_CLOSERS) + r"]*\s+")
# Runs of these space characters become one " ": each becomes " ", then runs of " " one
# (a regex replacing every single space is slow on megabytes).
_SPACE_TABLE = {ord(c): " " for c in "\t\u00a0\u3000" + "".join(chr(c) for c in range(0x2000, 0x200C))}
_SPACE_RUNS = re.compile(r" {2,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class IngestError(ValueError):
    """Raised when the corpus cannot be ingested at all (no sources, no usable text)."""


class UndecodableError(ValueError):
    """Raised when text has no encoding that decodes it with confidence; the message is the
    reason a file is skipped for."""


class BadRecord(IngestError):
    """A JSON Lines or dataset record without usable text. ``reason`` says why without saying
    where (the key under which a file's bad records are counted)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class SourceFile:
    """One input file and what became of it."""

    path: Path
    source: str
    encoding: str | None = None
    encoding_confidence: float | None = None
    documents: int = 0
    skipped: str | None = None
    sha256: str | None = None
    bad_records: dict | None = None


@dataclass
class IngestStats:
    files_read: int = 0       # decoded
    files_kept: int = 0       # gave at least one document
    files_skipped: int = 0    # every other file found, each with its reason
    documents: int = 0
    duplicate_documents: int = 0
    near_duplicate_documents: int = 0
    short_documents: int = 0
    sentences: int = 0
    characters: int = 0
    bad_records: int = 0      # JSON Lines records skipped in the files kept
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)


def resolve_sources(sources: list[str], exclude: list[str]) -> list[tuple[str, Path]]:
    """Expand files, folders (recursively) and globs into ``(source, file)`` pairs, sorted."""
    found: dict[Path, str] = {}
    for source in sources:
        if source.startswith(HF_PREFIX):
            parse_hf_source(source)          # a malformed spec fails here, before any work
            found.setdefault(Path(source), source)
            continue
        path = Path(source)
        if path.is_file():
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file())
        else:
            candidates = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
            if not candidates:
                raise IngestError(f"ingest.sources: {source!r} matches no file or folder")
        for file in candidates:
            if any(fnmatch.fnmatch(file.name, pattern) for pattern in exclude):
                continue
            if any(part.startswith(".") for part in file.parts if part not in (".", "..")):
                continue  # hidden files and folders (.git, .dvc) are never corpus text
            found.setdefault(file, source)
    return [(src, file) for file, src in sorted(found.items(), key=lambda kv: str(kv[0]))]


COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstandard"}
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# Compressed bytes fed to a decompressor at a time: what one call may expand is bounded by
# this times the codec's ratio (the codecs' objects differ in how they bound output, not in this).
COMPRESSED_READ_BYTES = 1 << 16


def compression_of(path: Path) -> str | None:
    """The compression a file's suffix names, or None for an uncompressed file."""
    return COMPRESSIONS.get(path.suffix.lower())


def is_jsonl(path: Path) -> bool:
    """A JSON Lines file, compressed or not (``corpus.jsonl.gz``)."""
    name = path.name.lower()
    if compression_of(path):
        name = name[: -len(path.suffix)]
    return name.endswith(JSONL_SUFFIXES)


def _decompressor(codec: str):
    """A fresh decompressor for one stream of ``codec``; all four share ``decompress(data)``,
    ``eof`` and ``unused_data``."""
    if codec == "gzip":
        return zlib.decompressobj(wbits=31)   # one gzip member; zlib checks its CRC and length
    if codec == "bzip2":
        return bz2.BZ2Decompressor()
    if codec == "xz":
        return lzma.LZMADecompressor()
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


def _decompressed_chunks(handle: BinaryIO, codec: str) -> Iterator[bytes]:
    """The decompressed bytes of ``handle``, stream after stream (gzip members, bzip2 and xz
    streams, zstd frames may follow one another in a file), read strictly.

    Why not the standard library's readers: gzip's lets ``zlib.error`` escape, bz2's and
    lzma's drop garbage after the last stream without a word, and zstandard's stream reader
    ends a truncated frame as if it were whole. Here every codec's complaint, a file that
    ends inside a stream and anything but NUL padding after a stream raise ``OSError``
    ("corrupt <codec> data (...)"), so a bad file is one kind of skip whatever its codec.
    """
    errors: tuple[type[BaseException], ...] = (zlib.error, OSError, EOFError, lzma.LZMAError)
    if codec == "zstandard":
        import zstandard

        errors += (zstandard.ZstdError,)
    decompressor, started = _decompressor(codec), False
    try:
        while data := handle.read(COMPRESSED_READ_BYTES):
            while data:
                if decompressor.eof:
                    # A stream ended: another follows, or padding (NUL bytes, as gzip and xz allow).
                    data = data.lstrip(b"\x00")
                    if not data:
                        break
                    decompressor = _decompressor(codec)
                started = True
                if out := decompressor.decompress(data):
                    yield out
                data = decompressor.unused_data if decompressor.eof else b""
        if started and not decompressor.eof:
            raise EOFError("truncated: the file ends inside a compressed stream")
    except errors as exc:
        raise OSError(f"corrupt {codec} data ({exc or type(exc).__name__})") from exc


class _DecompressedFile(io.RawIOBase):
    """A compressed file read as the raw stream of its decompressed bytes
    (:func:`_decompressed_chunks`), so a buffered reader can cut it into lines."""

    def __init__(self, path: Path, codec: str) -> None:
        super().__init__()
        self._file = open(path, "rb")
        self._chunks = _decompressed_chunks(self._file, codec)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            self._chunks.close()
            self._file.close()
        super().close()


def open_source(path: Path) -> BinaryIO:
    """A binary stream of a source file's bytes, decompressed by its suffix; corrupt
    compressed data raises ``OSError`` when read, whatever the codec."""
    compression = compression_of(path)
    if compression is None:
        return open(path, "rb")
    return io.BufferedReader(_DecompressedFile(path, compression), buffer_size=COMPRESSED_READ_BYTES)


READ_BLOCK_BYTES = 1 << 20   # a file is read, decoded and normalised a MiB of whole lines at a time


def raw_blocks(path: Path) -> Iterator[bytes]:
    """The file's (decompressed) bytes in blocks of whole lines, about ``READ_BLOCK_BYTES``
    each (a longer line is a block of its own). Streams: one block in memory. Corrupt
    compressed data raises ``OSError`` whatever the codec (:func:`open_source`)."""
    with open_source(path) as handle:
        while lines := handle.readlines(READ_BLOCK_BYTES):
            yield b"".join(lines)


def bom_codec(head: bytes) -> tuple[str | None, int]:
    """The codec a byte-order mark at the start of ``head`` names, and the mark's length;
    ``(None, 0)`` without one."""
    for mark, codec in BOMS:
        if head.startswith(mark):
            return codec, len(mark)
    return None, 0


def _wide_text_blocks(path: Path, codec: str, skip: int) -> Iterator[str]:
    """The text of a UTF-16 or UTF-32 file (after its ``skip`` bytes of BOM) in blocks of
    whole lines. These encodings put NUL and newline bytes inside characters, so their bytes
    cannot be cut into lines: they are decoded as a stream, and the text cut at line breaks."""
    decoder = codecs.getincrementaldecoder(codec)()   # strict
    pending = ""
    with open_source(path) as handle:
        handle.read(skip)
        while True:
            chunk = handle.read(READ_BLOCK_BYTES)
            try:
                pending += decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                raise UndecodableError(f"undecodable: not valid {codec} ({exc.reason})") from None
            if not chunk:
                break
            cut = pending.rfind("\n") + 1
            if cut:
                yield pending[:cut]
                pending = pending[cut:]
    yield pending


def _decode_lines(data: bytes, legacy: str | None) -> str:
    """Decode a block of whole lines: UTF-8 when the block is valid UTF-8 (a newline byte never
    falls inside a UTF-8 sequence, so a file valid as a whole is valid block by block),
    otherwise line by line, each line UTF-8 or else ``legacy``, strictly (``UnicodeDecodeError``)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if legacy is None:
            raise
    return "".join(_decode_line(line, legacy) for line in data.splitlines(keepends=True))


def _decode_line(line: bytes, legacy: str) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode(legacy)


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class FileScan:
    """What a first pass over a file finds, before anything of it is written; what its
    second pass (:func:`decoded_blocks`) decodes it with."""

    skipped: str | None = None
    encoding: str | None = None         # utf-8, utf-8-sig, utf-16-le, cp1251, mixed:utf-8+cp1252 ...
    confidence: float | None = None     # of the encoding: 1.0 unless it was detected
    wide: str | None = None             # a UTF-16/32 codec (named by the BOM): decoded as one stream
    bom_bytes: int = 0
    legacy: str | None = None           # the codec of the lines that are not UTF-8
    one_per_line: bool = False          # no blank line: one paragraph per line (WikiText, dumps)


def decoded_blocks(path: Path, scan: FileScan) -> Iterator[str]:
    """The file's text in blocks of whole lines (each ends with a line break, but the last),
    decoded as its first pass (:func:`scan_source`) found; without a byte-order mark."""
    if scan.wide:
        yield from _wide_text_blocks(path, scan.wide, scan.bom_bytes)
        return
    first = True
    for raw in raw_blocks(path):
        if first:
            first = False
            raw = raw[scan.bom_bytes:]
        yield _decode_lines(raw, scan.legacy)


def split_lines(texts: Iterable[str], normalize: bool = False) -> Iterator[str]:
    """``"".join(texts).split("\\n")`` (normalised first when ``normalize``), streamed.

    Each text ends with a line break (but the last), and nothing in normalisation reaches
    across one, so normalising text by text gives the same lines as the whole text."""
    pending = ""
    for text in texts:
        pending += normalize_text(text) if normalize else text
        *complete, pending = pending.split("\n")
        yield from complete
    yield pending


def _has_blank_line(text: str) -> bool:
    """Whether a line of ``text`` that ends with a line break is blank once normalised (the
    text ends with a break, or is a file's last line). What cuts a file into paragraphs."""
    return "" in normalize_text(text).split("\n")[:-1]


def _bounded_sample(lines: list[bytes]) -> bytes:
    """The lines joined, cut to about ``ENCODING_SAMPLE_BYTES`` at a space or line break (bytes
    that no legacy encoding uses inside a character, so the cut splits no character)."""
    sample = b"".join(lines)
    if len(sample) > ENCODING_SAMPLE_BYTES:
        cut = max(sample.rfind(b" ", 0, ENCODING_SAMPLE_BYTES), sample.rfind(b"\n", 0, ENCODING_SAMPLE_BYTES))
        sample = sample[:cut] if cut > 0 else sample[:ENCODING_SAMPLE_BYTES]
    return sample


@dataclass(frozen=True)
class EncodingGuess:
    """An encoding :func:`detect_encoding` found, and how sure it is (1 - chaos)."""

    encoding: str
    confidence: float


def detect_encoding(sample: bytes, min_confidence: float) -> EncodingGuess:
    """The legacy encoding of ``sample`` (bytes that are not UTF-8), with charset-normalizer.

    1. charset-normalizer decodes the sample in each of ``LEGACY_ENCODINGS`` and measures,
       for each decoding that succeeds, its chaos (the share of improbable characters, as
       mojibake has) and its coherence (how well its letters match a language's).
    2. The best fit has the least chaos (within charset-normalizer's own margin, 0.01); of
       those, the ones that glue the fewest symbols to letters (:func:`_glued_symbols`:
       "poci¹giem" is Polish read as cp1252; charset-normalizer's chaos, averaged over
       mostly-ASCII text, barely sees it); of those, the most coherent (within 0.02).
       Encodings that give the same text are one answer (``could_be_from_charset``).
    3. One answer: its encoding. Several (a few accented letters read as well in several
       code pages): cp1252 if it is one of them, else none: the file is ambiguous. (Some
       confusions only words can settle: Hungarian cp1250 "ő" and "ű" are cp1252 "õ" and
       "û", letters both, so such a file is read as cp1252.)
    4. The confidence is 1 - chaos of the answer (what charset-normalizer's chardet-style
       ``detect`` reports); below ``min_confidence``, no answer.

    No answer raises :class:`UndecodableError`, its message the reason to skip the file.
    """
    from charset_normalizer import from_bytes

    matches = list(from_bytes(sample, cp_isolation=list(LEGACY_ENCODINGS)))
    if not matches:
        raise UndecodableError("undecodable: no known encoding decodes it (charset-normalizer)")
    least_chaos = min(m.chaos for m in matches)
    close = [m for m in matches if m.chaos <= least_chaos + _CHAOS_TIE]
    if len(close) > 1:
        glued = {id(m): _glued_symbols(str(m)) for m in close}
        close = [m for m in close if glued[id(m)] == min(glued.values())]
    most_coherent = max(m.coherence for m in close)
    best = [m for m in close if m.coherence >= most_coherent - _COHERENCE_TIE]
    preferred = [m for m in best if DEFAULT_LEGACY_ENCODING in m.could_be_from_charset]
    if len(best) > 1 and not preferred:
        names = ", ".join(m.encoding for m in best[:4]) + (", ..." if len(best) > 4 else "")
        raise UndecodableError(f"undecodable: ambiguous encoding ({names} fit equally well)")
    match = (preferred or best)[0]
    encoding = DEFAULT_LEGACY_ENCODING if DEFAULT_LEGACY_ENCODING in match.could_be_from_charset else match.encoding
    confidence = round(1.0 - match.chaos, 3)
    if confidence < min_confidence:
        raise UndecodableError(f"undecodable: {encoding} at confidence {confidence} "
                               f"< ingest.min_encoding_confidence ({min_confidence})")
    return EncodingGuess(encoding, confidence)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


# Non-letters that real words hold: apostrophes, the Catalan middle dot, hyphens.
_IN_WORD = "\u2019\u02bc\u00b7\u00ad\u2010\u2011"


def _glued_symbols(text: str) -> int:
    """How many characters outside ASCII that are not letters sit glued to a letter: between
    two letters, or a symbol, superscript digit or inverted mark (¡ ¿) right after one. That
    is what a wrong code page makes of letters ("poci¹giem", "sabbatical”Xand"), and rare
    in real prose (apostrophes and hyphens aside)."""
    count = 0
    for match in _NON_ASCII.finditer(text):
        at = match.start()
        char = text[at]
        if char.isalpha() or char in _IN_WORD or not (at and text[at - 1].isalpha()):
            continue
        category = unicodedata.category(char)
        if category[0] == "M":   # a combining mark belongs to its letter
            continue
        if (at + 1 < len(text) and text[at + 1].isalpha()) or category[0] == "S" or category == "No" \
                or char in "\u00a1\u00bf":
            count += 1
    return count


def _encoding_label(utf8_lines: bool, legacy: str | None, bom: bool) -> str:
    """A file's encoding: ``utf-8`` (``utf-8-sig`` with a byte-order mark), the legacy one, or
    ``mixed:utf-8+<legacy>`` when some non-ASCII lines are UTF-8 and others are not."""
    if legacy is None:
        return "utf-8-sig" if bom else "utf-8"
    return f"mixed:utf-8+{legacy}" if utf8_lines else legacy


def _scan_wide(path: Path, codec: str, skip: int) -> FileScan:
    """:func:`scan_source` for a UTF-16 or UTF-32 file: NUL characters (not bytes) make it binary."""
    seen, nonspace, blank = 0, False, False
    for text in _wide_text_blocks(path, codec, skip):
        if seen < 65536 and "\x00" in text[: 65536 - seen]:
            return FileScan(skipped="binary file (NUL bytes)")
        seen += len(text)
        nonspace = nonspace or bool(text.strip())
        blank = blank or _has_blank_line(text)
    if not nonspace:
        return FileScan(skipped="empty file")
    return FileScan(
        encoding=codec, confidence=1.0, wide=codec, bom_bytes=skip, one_per_line=not blank)


def _scan_bytes(path: Path, min_confidence: float) -> FileScan:
    """:func:`scan_source` for a file read as bytes cut into lines (UTF-8, a legacy encoding, or both)."""
    seen = offset = 0
    nonspace = blank = utf8_lines = bom = False
    sample: list[bytes] = []      # lines not UTF-8 while no encoding is known for them
    sample_bytes = 0
    guess: EncodingGuess | None = None

    def settle() -> None:
        # 1. Detect on the sample; 2. its lines must decode whole (the sample may be cut).
        nonlocal guess, blank
        guess = detect_encoding(_bounded_sample(sample), min_confidence)
        blank = blank or _has_blank_line("".join(_legacy_text(line, guess.encoding, None) for line in sample))
        sample.clear()

    for raw in raw_blocks(path):
        data = raw
        if offset == 0 and raw.startswith(BOM):
            bom, data = True, raw[len(BOM):]
        if seen < 65536 and b"\x00" in raw[: 65536 - seen]:   # binary: a NUL in the first 64 KiB
            return FileScan(skipped="binary file (NUL bytes)")
        seen += len(raw)
        nonspace = nonspace or bool(data.strip())
        at = offset + len(raw) - len(data)
        offset += len(raw)
        try:
            text = data.decode("utf-8")   # the fast path: a whole block of UTF-8
        except UnicodeDecodeError:
            pass
        else:
            utf8_lines = utf8_lines or not data.isascii()
            blank = blank or _has_blank_line(text)
            continue
        texts: list[str] = []   # the block's lines decoded so far (each ends with a break: joined, still lines)
        for line in data.splitlines(keepends=True):
            if _is_utf8(line):
                utf8_lines = utf8_lines or not line.isascii()
                texts.append(line.decode("utf-8"))
            elif guess is None:
                sample.append(line)
                sample_bytes += len(line)
                if sample_bytes >= ENCODING_SAMPLE_BYTES:
                    settle()
            else:
                texts.append(_legacy_text(line, guess.encoding, at))
            at += len(line)
        blank = blank or _has_blank_line("".join(texts))
    if sample:
        settle()
    if not nonspace:
        return FileScan(skipped="empty file")
    legacy = guess.encoding if guess else None
    return FileScan(encoding=_encoding_label(utf8_lines, legacy, bom), confidence=guess.confidence if guess else 1.0,
                    legacy=legacy, bom_bytes=len(BOM) if bom else 0, one_per_line=not blank)


def _legacy_text(line: bytes, encoding: str, at: int | None) -> str:
    """A non-UTF-8 line decoded in the file's detected encoding, or the reason the file is undecodable."""
    try:
        return line.decode(encoding)
    except UnicodeDecodeError as exc:
        where = f" at byte {at + exc.start}" if at is not None else ""
        raise UndecodableError(f"undecodable: the text{where} is not {encoding}, the encoding detected "
                               f"from the file's first non-UTF-8 lines") from None


def scan_source(path: Path, min_confidence: float = DEFAULT_MIN_ENCODING_CONFIDENCE) -> FileScan:
    """Read a file once, as a stream, without keeping it: whether it is unreadable (or corrupt),
    empty, binary or undecodable, its encoding (see the module's docstring) and whether it has
    blank lines (how paragraphs are cut). Reading it all first means a corrupt, undecodable or
    vanishing file is skipped before any of it is written."""
    try:
        with open_source(path) as handle:
            wide, skip = bom_codec(handle.read(4))
        if wide and wide != "utf-8-sig":
            return _scan_wide(path, wide, skip)
        return _scan_bytes(path, min_confidence)
    except OSError as exc:   # vanished since it was listed, not readable, corrupt
        return FileScan(skipped=f"unreadable: {exc.strerror or exc}")
    except UndecodableError as exc:
        return FileScan(skipped=str(exc))


@dataclass
class BadRecords:
    """The records of one JSON Lines file that could not be used: counted by reason, with the
    first ``BAD_RECORD_LINES`` line numbers of each."""

    records: int = 0    # records seen (non-blank lines), good or bad
    bad: int = 0
    reasons: dict[str, dict] = field(default_factory=dict)

    def add(self, reason: str, line: int) -> None:
        self.bad += 1
        entry = self.reasons.setdefault(reason, {"count": 0, "lines": []})
        entry["count"] += 1
        if len(entry["lines"]) < BAD_RECORD_LINES:
            entry["lines"].append(line)

    def summary(self) -> dict:
        return {"bad": self.bad, "records": self.records, "reasons": self.reasons}


def jsonl_texts(lines: Iterable[str], field: str, bad: BadRecords) -> Iterator[str]:
    """The text of each good record of a JSON Lines file; a bad record (not JSON, no string at
    ``field``, text that is not valid unicode) is skipped and counted in ``bad``, by reason and
    line number. Whether the file is still worth keeping is the caller's call."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        bad.records += 1
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):   # JSONDecodeError, or nesting deeper than Python's stack
            bad.add("not a JSON record", line_no)
            continue
        try:
            text = record_text(record, field, f"line {line_no}")
        except BadRecord as exc:
            bad.add(exc.reason, line_no)
            continue
        if _SURROGATE.search(text):   # a "\\ud800" escape: not text, and not writable as UTF-8
            bad.add(f"field {field!r} holds a lone surrogate", line_no)
            continue
        yield text


def record_text(record: object, field: str, where: str) -> str:
    """The text at ``field`` (dotted for a nested one) of a JSON Lines or dataset record;
    a record without it raises :class:`BadRecord` naming ``where`` (file and line, or
    source and record)."""
    value = record
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            raise BadRecord(f"{where}: the record has no field {field!r} (set ingest.jsonl_text_field)",
                            f"no field {field!r}")
        value = value[key]
    if not isinstance(value, str):
        reason = f"field {field!r} is {type(value).__name__}, not text"
        raise BadRecord(f"{where}: {reason}", reason)
    return value


def decode(data: bytes, min_confidence: float = DEFAULT_MIN_ENCODING_CONFIDENCE) -> tuple[str, str]:
    """Decode bytes held in memory as ingestion decodes a file; return ``(text, encoding)``.

    A byte-order mark decides (and is dropped); else UTF-8 when ``data`` is valid UTF-8; else
    line by line, UTF-8 lines as UTF-8 and the others in the encoding :func:`detect_encoding`
    finds for them, so a file pasted together from UTF-8 and Windows-1252 parts keeps both
    readable (``mixed:utf-8+cp1252``). Raises :class:`UndecodableError` when no encoding
    is found with ``min_confidence``, or the lines do not all decode in the one found.
    """
    codec, skip = bom_codec(data)
    if codec and codec != "utf-8-sig":
        try:
            return data[skip:].decode(codec), codec
        except UnicodeDecodeError as exc:
            raise UndecodableError(f"undecodable: not valid {codec} ({exc.reason})") from None
    body = data[skip:]
    if _is_utf8(body):
        return body.decode("utf-8"), _encoding_label(False, None, bool(skip))
    lines = body.splitlines(keepends=True)
    sample: list[bytes] = []
    sampled = 0
    for line in lines:
        if sampled >= ENCODING_SAMPLE_BYTES:
            break
        if not _is_utf8(line):
            sample.append(line)
            sampled += len(line)
    guess = detect_encoding(_bounded_sample(sample), min_confidence)
    text = "".join(_legacy_text(line, guess.encoding, None) if not _is_utf8(line) else line.decode("utf-8")
                   for line in lines)
    utf8_lines = any(not line.isascii() and _is_utf8(line) for line in lines)
    return text, _encoding_label(utf8_lines, guess.encoding, bool(skip))


def split_long(sentence: str, max_chars: int) -> list[str]:
    """Cut a sentence longer than ``max_chars`` at spaces (hard cuts where a piece has none).

    Walks positions instead of re-slicing the rest, so a 100 MB line costs one pass."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    start, end = 0, len(sentence)
    while end - start > max_chars:
        cut = sentence.rfind(" ", start, start + max_chars + 1)
        if cut <= start:
            cut = start + max_chars
        piece = sentence[start:cut].strip()
        if piece:
            pieces.append(piece)
        start = cut
        while start < end and sentence[start] == " ":
            start += 1
    tail = sentence[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def _outside_corpus(path: Path, root: Path | None) -> bool:
    """A symlink (or a file under a symlinked folder) whose target lies outside ``root``."""
    if root is None:
        return False
    try:
        return not path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def _source_root(source: str) -> Path | None:
    """The corpus folder a source names: the folder itself, a glob's fixed leading folders,
    or None for a single file named on purpose (its link is followed)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.is_file():
        return None
    fixed = []
    for part in path.parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def normalize_text(text: str) -> str:
    """NFC-normalise, unify line endings, drop control characters, collapse spaces per line."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Neither the control nor the space characters hold "\\n": the whole text at once is per line.
    text = _SPACE_RUNS.sub(" ", _CONTROL.sub("", text).translate(_SPACE_TABLE))
    return "\n".join(line.strip() for line in text.split("\n"))


def _starts_sentence(text: str, at: int) -> bool:
    """Whether the word at ``at`` can start a sentence: after any opening quotes or brackets
    (and one space after them, as in French "« Oui"), a digit or a letter that is not lower
    case: upper or title case in any script ("Él", "Он", "Η"), or a letter of a script without
    case. A lower-case letter ("e.g. the") does not start one."""
    end = len(text)
    opened = at
    while at < end and text[at] in _OPENERS:
        at += 1
    if at > opened and at < end and text[at] == " ":
        at += 1
    if at >= end:
        return False
    char = text[at]
    return char in "0123456789" or (char.isalpha() and not char.islower())


def split_sentences(paragraph: str) -> list[str]:
    """Split one paragraph into sentences with a rule-based splitter (no model, any language
    that ends sentences with . ! or ? and a space): a sentence ends there when the next word
    starts like a sentence (:func:`_starts_sentence`), but abbreviations and initials do not
    end one."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        if not _starts_sentence(paragraph, match.end()):
            continue
        before = paragraph[start : match.start() + 1].rstrip()
        last_word = before.split()[-1] if before.split() else ""
        token = last_word.rstrip(".!?" + _CLOSERS).lower().lstrip(_OPENERS)
        if paragraph[match.start()] == "." and (
            token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())
        ):
            continue
        sentence = paragraph[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def split_documents(text: str, separator: re.Pattern[str] | None) -> Iterator[list[str]]:
    """Yield documents as lists of paragraphs from normalised text (lines already stripped)."""
    lines = text.split("\n")
    return split_document_lines(lines, separator, one_per_line="" not in lines[:-1])


def split_document_lines(lines: Iterable[str], separator: re.Pattern[str] | None,
                         one_per_line: bool) -> Iterator[list[str]]:
    """Yield documents as lists of paragraphs from a stream of normalised lines.

    A file is one document unless a line matches ``separator``, which then starts a
    new one (the line itself is a title and is dropped). Hard-wrapped prose separates
    paragraphs with blank lines; a file with no blank line at all (``one_per_line``:
    WikiText, one-paragraph-per-line dumps) has one paragraph per line. Only the
    current document is held in memory.
    """
    paragraphs: list[str] = []
    current: list[str] = []

    def flush_paragraph() -> None:
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    for raw_line in lines:
        if separator is not None and separator.match(raw_line):
            flush_paragraph()
            if paragraphs:
                yield list(paragraphs)
                paragraphs.clear()
            continue
        line = raw_line.strip()
        if not line:
            flush_paragraph()
        else:
            current.append(line)
            if one_per_line:
                flush_paragraph()
    flush_paragraph()
    if paragraphs:
        yield paragraphs


class _ShardWriter:
    """Writes documents into shards of about ``shard_bytes`` each."""

    def __init__(self, folder: Path, shard_bytes: int) -> None:
        self.folder = folder
        self.shard_bytes = shard_bytes
        self.paths: list[Path] = []
        self._handle = None
        self._size = 0

    def write(self, sentences: list[str]) -> None:
        block = ("\n".join(sentences) + "\n\n").encode("utf-8")
        if self._handle is None or self._size + len(block) > self.shard_bytes and self._size:
            self._open_next()
        self._handle.write(block)
        self._size += len(block)

    def _open_next(self) -> None:
        self.close()
        path = self.folder / f"shard-{len(self.paths):05d}.txt"
        self.paths.append(path)
        self._handle = open(path, "wb")
        self._size = 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def shard_documents(path: str | Path) -> Iterator[list[str]]:
    """The documents (lists of sentences) of one shard: a blank line ends a document."""
    document: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line:
                document.append(line)
            elif document:
                yield document
                document = []
    if document:
        yield document


def read_shards(folder: str | Path) -> Iterator[list[str]]:
    """Yield the documents (lists of sentences) stored in an ingest output folder."""
    root = Path(folder)
    manifest = root / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest}: not found; run `electra ingest` first")
    for shard in sorted(root.glob("shard-*.txt")):
        yield from shard_documents(shard)


# --- the unit of work: one input file ---------------------------------------------------------
#
# Each file (or Hugging Face dataset) is decoded, normalised, cut into documents and
# filtered on its own, by a plain function of plain values, into an entry of the cache
# beside the output (``<output_dir>.cache``) keyed by the file's content hash and every
# param and line of code its documents depend on. The shards are then assembled from the
# entries in file order, where duplicates are dropped (they depend on the files before).
# So files run in parallel, a killed run redoes only the files not finished, and a run
# after files were added to the corpus processes only the new ones: the output is the
# same as a fresh run's.

HF_PREFIX = "hf:"


@dataclass(frozen=True)
class FileJob:
    """What one worker needs to turn one input into documents: plain, picklable values only."""

    path: str                  # a file, or "hf:<dataset>[?name=..&split=..]"
    cache_dir: str
    version: str               # hash of the params and code the documents depend on
    cfg: IngestConfig


def parse_hf_source(source: str) -> tuple[str, dict[str, str]]:
    """``hf:<name or local path>[?name=<config>&split=<split>&revision=<rev>]`` -> (path, options)."""
    from urllib.parse import parse_qsl

    spec = source[len(HF_PREFIX):]
    path, _, query = spec.partition("?")
    options = dict(parse_qsl(query))
    unknown = set(options) - {"name", "split", "revision", "data_dir"}
    if not path or unknown:
        raise IngestError(f"ingest.sources {source!r}: expected hf:<dataset>[?name=..&split=..&revision=..]"
                          + (f"; unknown option(s) {sorted(unknown)}" if unknown else ""))
    return path, options


def hf_texts(source: str, field: str) -> Iterator[str]:
    """The text of each record of a Hugging Face dataset, streamed (never downloaded whole)."""
    import datasets

    path, options = parse_hf_source(source)
    split = options.pop("split", "train")
    try:
        stream = datasets.load_dataset(path, split=split, streaming=True, **options)
    except Exception as exc:   # not found, offline, no such split: say which source
        raise IngestError(f"ingest.sources {source!r}: cannot open the dataset: {exc}") from exc
    for number, record in enumerate(stream):
        yield record_text(record, field, f"{source} record {number}")


def _documents_of(job: FileJob, path: Path, scan: FileScan, bad: BadRecords | None) -> Iterator[list[str]]:
    """The file's documents as lists of normalised, filtered sentences (short ones included);
    a JSON Lines file's bad records are counted in ``bad``."""
    cfg = job.cfg
    separator = re.compile(cfg.doc_separator_regex) if cfg.doc_separator_regex else None
    if job.path.startswith(HF_PREFIX):
        documents = (paragraphs for body in hf_texts(job.path, cfg.jsonl_text_field)
                     for paragraphs in split_documents(normalize_text(body), separator))
    else:
        texts = decoded_blocks(path, scan)
        if bad is not None:
            # Each record is a document (or several, should its text hold separators).
            documents = (paragraphs for body in jsonl_texts(split_lines(texts), cfg.jsonl_text_field, bad)
                         for paragraphs in split_documents(normalize_text(body), separator))
        else:
            documents = split_document_lines(split_lines(texts, normalize=True), separator, scan.one_per_line)
    for paragraphs in documents:
        yield [
            piece
            for paragraph in paragraphs
            for s in split_sentences(paragraph)
            for piece in split_long(s, cfg.max_sentence_chars)
            if len(piece) >= cfg.min_sentence_chars
        ]


class _FileRejected(Exception):
    """Raised while a file's entry is being written when the file turns out not to be usable:
    leaving the ``atomic_open`` block by it drops the partly written entry."""


def _too_many_bad(bad: BadRecords, limit: float) -> str | None:
    """The reason to skip a JSON Lines file whose share of bad records passes ``limit``, or None."""
    if not bad.records or bad.bad / bad.records <= limit:
        return None
    return (f"{bad.bad} of {bad.records} records bad ({bad.bad / bad.records:.1%}) "
            f"> ingest.max_bad_record_fraction ({limit})")


def ingest_file(job: FileJob) -> dict:
    """Turn one input into documents in its cache entry; return what became of it.

    The entry (``file-<key>.txt``: sentences one per line, a blank line after each
    document; ``file-<key>.json`` written last) is reused when present. Skipped files
    are not cached: the reason (vanished, unreadable) may not hold next time.

    1. Pass 1 (:func:`scan_source`) reads the whole file: unreadable, corrupt, empty,
       binary or undecodable files are skipped here, before anything is written.
    2. Pass 2 writes the documents into a temporary entry, renamed only when the file is
       done. A JSON Lines file with more than ``ingest.max_bad_record_fraction`` bad
       records, or a file that fails now although pass 1 read it (it changed in between),
       is skipped with the reason, and nothing of it stays in the cache or the shards.
    """
    cache = Path(job.cache_dir)
    hf = job.path.startswith(HF_PREFIX)
    path = Path(job.path)
    if hf:
        # A streamed dataset has no content hash to key it by: it is read every run.
        digest, scan = None, FileScan(encoding="utf-8")
        key = "hf-" + hashlib.sha256(f"{job.version}:{job.path}:{os.getpid()}".encode()).hexdigest()[:24]
    else:
        try:
            digest = sha256_file(path)
        except OSError as exc:   # vanished since it was listed, not readable
            return {"skipped": f"unreadable: {exc.strerror or exc}", "reused": False}
        key = "file-" + hashlib.sha256(f"{job.version}:{digest}".encode()).hexdigest()[:24]
        meta = cache / f"{key}.json"
        if meta.is_file():
            return {**read_json(meta), "reused": True}
        # Pass 1 reads the file as a stream and keeps nothing; pass 2 writes it.
        scan = scan_source(path, job.cfg.min_encoding_confidence)
        if scan.skipped:
            return {"skipped": scan.skipped, "sha256": digest, "reused": False}
    bad = BadRecords() if not hf and is_jsonl(path) else None
    short = documents = 0
    try:
        with atomic_open(cache / f"{key}.txt", "w", encoding="utf-8") as handle:
            for sentences in _documents_of(job, path, scan, bad):
                if not sentences or sum(len(s) for s in sentences) < job.cfg.min_document_chars:
                    short += 1
                    continue
                handle.write("\n".join(sentences) + "\n\n")
                documents += 1
            if bad is not None and (reason := _too_many_bad(bad, job.cfg.max_bad_record_fraction)):
                raise _FileRejected(reason)
    except _FileRejected as exc:
        return {"skipped": str(exc), "sha256": digest, "bad_records": bad.summary(), "reused": False}
    except (OSError, UnicodeDecodeError, UndecodableError) as exc:
        if hf:
            raise
        return {"skipped": f"unreadable: changed while being read ({exc})", "sha256": digest, "reused": False}
    info = {"entry": f"{key}.txt", "encoding": scan.encoding, "encoding_confidence": scan.confidence,
            "sha256": digest, "documents": documents, "short_documents": short, "cached": not hf}
    if bad is not None and bad.bad:
        info["bad_records"] = bad.summary()
    if not hf:
        write_json(cache / f"{key}.json", info)
    return {**info, "reused": False}


# --- near duplicates: MinHash with locality-sensitive hashing -----------------------------------

_MERSENNE = (1 << 61) - 1


class NearDuplicates:
    """Finds documents whose word 5-gram sets overlap (Jaccard) at about ``threshold`` or more.

    Each document gets a MinHash signature of ``permutations`` values (Broder 1997); the
    signature's first ``bands x rows`` values are cut into ``bands`` bands, and a document sharing any
    whole band with an earlier one is a near duplicate (the LSH banding of Leskovec et al.,
    Mining of Massive Datasets, ch. 3: the pair is caught with probability
    ``1 - (1 - J**rows)**bands``, a step at about ``(1/bands)**(1/rows)``). Memory: one
    set entry per band per kept document, not the documents.
    """

    def __init__(self, threshold: float, permutations: int, seed: int = 1) -> None:
        import numpy as np

        # The bands x rows (at most the signature's length) whose step lies within 0.01 of the
        # threshold, using the most of the signature (the more values, the sharper the step).
        self.bands, self.rows = min(
            ((b, r) for r in range(1, permutations + 1) for b in range(1, permutations // r + 1)),
            key=lambda br: (round(abs((1 / br[0]) ** (1 / br[1]) - threshold), 2), -br[0] * br[1]),
        )
        rng = np.random.default_rng(seed)
        # Hash functions h(x) = (a x + b) mod p over 32-bit shingle hashes; a, b < 2**32 keep
        # a x + b below 2**64, so uint64 arithmetic does not wrap.
        self._a = rng.integers(1, 1 << 32, size=permutations, dtype=np.uint64)
        self._b = rng.integers(0, 1 << 32, size=permutations, dtype=np.uint64)
        self._seen: list[set[bytes]] = [set() for _ in range(self.bands)]

    def signature(self, sentences: list[str]):
        import zlib

        import numpy as np

        words = " ".join(sentences).lower().split()
        shingles = [" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))]
        hashes = np.fromiter((zlib.crc32(s.encode("utf-8")) for s in shingles), dtype=np.uint64, count=len(shingles))
        signature = np.full(len(self._a), np.iinfo(np.uint64).max, dtype=np.uint64)
        for at in range(0, len(hashes), 4096):   # bounded memory for a book-length document
            chunk = hashes[at:at + 4096, None]
            np.minimum(signature, ((chunk * self._a + self._b) % _MERSENNE).min(axis=0), out=signature)
        return signature

    def is_duplicate(self, sentences: list[str]) -> bool:
        """Whether the document nearly duplicates one seen before; if not, remember it."""
        signature = self.signature(sentences)
        keys = [signature[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]
        if any(key in seen for key, seen in zip(keys, self._seen)):
            return True
        for key, seen in zip(keys, self._seen):
            seen.add(key)
        return False


def _version(cfg: IngestConfig) -> str:
    """What a file's documents depend on besides its bytes: the params, this code and the
    encoding detector's version (another may guess another encoding for the same bytes)."""
    import charset_normalizer

    settings = [cfg.doc_separator_regex, cfg.min_sentence_chars, cfg.min_document_chars, cfg.max_sentence_chars,
                cfg.jsonl_text_field, cfg.max_bad_record_fraction, cfg.min_encoding_confidence]
    return hashlib.sha256(json.dumps([settings, sha256_file(Path(__file__)),
                                      charset_normalizer.__version__]).encode()).hexdigest()


def ingest(cfg: IngestConfig, progress: bool = True) -> dict:
    """Read the corpus named by ``cfg.sources`` and write normalised, deduplicated sentence shards.

    Files are processed in parallel (``cfg.workers``) into the cache, then assembled in
    order; a file whose entry is in the cache (same bytes, params and code) is not read
    again. Returns a small result: output folder, shard paths, counts and the content hash.
    """
    from tqdm import tqdm

    started = time.time()
    files = resolve_sources(cfg.sources, cfg.exclude)
    if not files:
        raise IngestError(f"ingest.sources {cfg.sources}: no files found (after exclude {cfg.exclude})")
    stats = IngestStats()
    records: list[SourceFile] = []
    seen_docs: set[str] = set()
    near = NearDuplicates(cfg.near_dedup_threshold, cfg.minhash_permutations) if cfg.near_dedup else None
    roots: dict[str, Path | None] = {}
    cache = Path(f"{cfg.output_dir}.cache")
    cache.mkdir(parents=True, exist_ok=True)
    version = _version(cfg)
    outside: dict[int, str] = {}
    jobs: list[FileJob] = []
    for number, (source, path) in enumerate(files):
        if not source.startswith(HF_PREFIX) and _outside_corpus(path, roots.setdefault(source, _source_root(source))):
            outside[number] = f"symlink to {path.resolve()}, outside the corpus folder {source}"
        else:
            jobs.append(FileJob(path=source if source.startswith(HF_PREFIX) else str(path), cache_dir=str(cache),
                                version=version, cfg=cfg))
    results = map_units(ingest_file, jobs, cfg.workers)
    used: set[str] = set()
    from_cache = 0

    with atomic_dir(cfg.output_dir) as tmp, contextlib.closing(results):
        writer = _ShardWriter(tmp, int(cfg.shard_size_mb * 1024 * 1024))
        for number, (source, path) in enumerate(tqdm(files, desc="ingest", unit="file", disable=not progress)):
            record = SourceFile(path=path, source=source)
            records.append(record)
            per_source = stats.per_source.setdefault(
                source, {"files": 0, "kept": 0, "skipped": 0, "documents": 0, "sentences": 0, "characters": 0}
            )
            per_source["files"] += 1
            result = {"skipped": outside[number]} if number in outside else next(results)
            record.skipped, record.encoding, record.sha256 = result.get("skipped"), result.get("encoding"), \
                result.get("sha256")
            record.encoding_confidence = result.get("encoding_confidence")
            record.bad_records = result.get("bad_records")
            from_cache += bool(result.get("reused"))
            if record.skipped:
                stats.files_skipped += 1
                per_source["skipped"] += 1
                continue
            stats.files_read += 1
            stats.short_documents += result["short_documents"]
            stats.bad_records += (record.bad_records or {}).get("bad", 0)
            entry = cache / result["entry"]
            for sentences in shard_documents(entry):
                chars = sum(len(s) for s in sentences)
                if cfg.dedup:
                    key = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
                    if key in seen_docs:
                        stats.duplicate_documents += 1
                        continue
                    seen_docs.add(key)
                if near is not None and near.is_duplicate(sentences):
                    stats.near_duplicate_documents += 1
                    continue
                writer.write(sentences)
                record.documents += 1
                stats.documents += 1
                stats.sentences += len(sentences)
                stats.characters += chars
                per_source["documents"] += 1
                per_source["sentences"] += len(sentences)
                per_source["characters"] += chars
            if result["cached"] and cfg.cache:
                used.add(entry.name)
                used.add(entry.with_suffix(".json").name)
            else:
                entry.unlink(missing_ok=True)
            if record.documents == 0:
                # The file was read but gave nothing: say so, it is not silently dropped.
                record.skipped = "no usable text (no document long enough, or all duplicates)"
                stats.files_skipped += 1
                per_source["skipped"] += 1
            else:
                stats.files_kept += 1
                per_source["kept"] += 1
        writer.close()
        if stats.documents == 0:
            raise IngestError(
                f"ingest.sources {cfg.sources}: no usable text in {len(files)} files "
                f"({stats.files_skipped} skipped, {stats.short_documents} documents too short)"
            )
        shard_hashes = {p.name: sha256_file(p) for p in writer.paths}
        content_hash = hashlib.sha256(
            "".join(f"{name}:{digest}\n" for name, digest in sorted(shard_hashes.items())).encode()
        ).hexdigest()
        manifest = {
            "stage": "ingest",
            "sources": cfg.sources,
            "files_found": len(files),        # = files_kept + files_skipped
            "files_kept": stats.files_kept,
            "files_skipped": stats.files_skipped,
            "files_read": stats.files_read,
            "documents": stats.documents,
            "duplicate_documents": stats.duplicate_documents,
            **({"near_duplicate_documents": stats.near_duplicate_documents} if near is not None else {}),
            "short_documents": stats.short_documents,
            "bad_records": stats.bad_records,  # JSON Lines records skipped in the files read (per file below)
            "sentences": stats.sentences,
            "characters": stats.characters,
            "per_source": stats.per_source,
            "encodings": {
                enc: sum(1 for r in records if r.encoding == enc)
                for enc in sorted({r.encoding for r in records if r.encoding})
            },
            "files": [
                {
                    "path": str(r.path),
                    "encoding": r.encoding,
                    **({"encoding_confidence": r.encoding_confidence} if r.encoding_confidence is not None else {}),
                    **({"sha256": r.sha256} if r.sha256 else {}),
                    **({"compression": compression_of(r.path)} if compression_of(r.path) else {}),
                    "documents": r.documents,
                    **({"bad_records": r.bad_records} if r.bad_records else {}),
                    **({"skipped": r.skipped} if r.skipped else {}),
                }
                for r in records
            ],
            "skipped": [{"path": str(r.path), "reason": r.skipped} for r in records if r.skipped],
            "shards": shard_hashes,
            "content_hash": content_hash,
            "seconds": round(time.time() - started, 3),
            # How this run went (the same output whichever): files read now, files from the cache.
            "run": {"workers": cfg.workers or default_workers(), "files_processed": len(jobs) - from_cache,
                    "files_from_cache": from_cache},
        }
        write_json(tmp / "manifest.json", manifest)
    # Entries of files no longer in the corpus (or of other params or code) go.
    for stale in cache.iterdir():
        if stale.name not in used and not stale.name.startswith("."):
            stale.unlink(missing_ok=True)
    out = Path(cfg.output_dir)
    return {
        "output_dir": str(out),
        "shards": [str(out / name) for name in shard_hashes],
        "documents": stats.documents,
        "sentences": stats.sentences,
        "characters": stats.characters,
        "files_found": len(files),
        "files_kept": stats.files_kept,
        "files_skipped": stats.files_skipped,
        "files_from_cache": from_cache,
        "content_hash": content_hash,
    }
