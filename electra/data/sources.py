"""Finding and opening ingest's sources, and reading records out of them.

Sources are plain-text files and JSON Lines files (``.jsonl``/``.ndjson``: one document
per record, its text in ``ingest.jsonl_text_field``), either of them compressed with
gzip, bzip2, xz or zstandard (by suffix: ``.gz``, ``.bz2``, ``.xz``, ``.zst``), and
Hugging Face datasets, by hub name or local path, streamed:
``hf:<dataset>[?name=<config>&split=<split>&revision=<rev>]`` (one document per record).

Files, folders (recursively) and globs are expanded to files (:func:`resolve_sources`);
hidden files and the ``ingest.exclude`` patterns are left out, and a symlink leading
outside its corpus folder is found here (:func:`outside_corpus`) for ingest to skip.
A file is read as a stream of its decompressed bytes (:func:`open_source`), corrupt
compressed data (truncated or garbled anywhere, in any codec) raising ``OSError``.

JSON Lines: a record that is not JSON, has no ``ingest.jsonl_text_field`` or no string
there is skipped and counted, per file, with its reason and the first line numbers
(:class:`BadRecords`, the manifest's ``bad_records``).
"""

from __future__ import annotations

import bz2
import fnmatch
import glob
import io
import json
import lzma
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

HF_PREFIX = "hf:"
# The first line numbers of each kind of bad JSON Lines record kept in the manifest.
BAD_RECORD_LINES = 5
_SURROGATE = re.compile("[\ud800-\udfff]")


class IngestError(ValueError):
    """Raised when the corpus cannot be ingested at all (no sources, no usable text)."""


class BadRecord(IngestError):
    """A JSON Lines or dataset record without usable text. ``reason`` says why without saying
    where (the key under which a file's bad records are counted)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- finding the files -----------------------------------------------------------------------


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


def outside_corpus(path: Path, root: Path | None) -> bool:
    """A symlink (or a file under a symlinked folder) whose target lies outside ``root``."""
    if root is None:
        return False
    try:
        return not path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def source_root(source: str) -> Path | None:
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


# --- reading a file's bytes: compressed or not ---------------------------------------------------

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


# --- Hugging Face datasets and JSON Lines records ------------------------------------------------


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
