"""Finding and opening ingest's sources, and reading records out of them.

Sources are plain-text files and JSON Lines files (``.jsonl``/``.ndjson``: one document
per record, its text in ``ingest.jsonl_text_field``), either of them compressed with
gzip, bzip2, xz or zstandard (by suffix: ``.gz``, ``.bz2``, ``.xz``, ``.zst``), and
Hugging Face datasets, by hub name or local path, streamed:
``hf:<dataset>[?name=<config>&split=<split>&revision=<rev>]`` (one document per record), and
the unlabelled *train* text of a fine-tuning task's tab-separated file, for task-adaptive
pretraining: ``tsv:<path>?columns=<name>[,<name>...]`` (a header row names the columns) or
``tsv:<path>?header=none&columns=<n>[,<n>...]`` (0-based numbers, for header-less files such
as GLUE CoLA's ``train.tsv``). A ``tsv:`` file whose name looks like a held-out split (dev,
test, validation, ...) is refused (:func:`parse_tsv_source`).

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
TSV_PREFIX = "tsv:"
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
    """Expand files, folders (recursively) and globs into ``(source, file)`` pairs, sorted.

    An ``hf:`` source is its own "file" (``Path(source)``); a ``tsv:`` source is the file it
    names, checked here before any work: a held-out split, a missing file or a column its
    header lacks fails now, not in a worker half way through the corpus."""
    found: dict[Path, tuple[str, Path]] = {}
    for source in sources:
        if source.startswith(HF_PREFIX):
            parse_hf_source(source)          # a malformed spec fails here, before any work
            found.setdefault(Path(source), (source, Path(source)))
            continue
        if source.startswith(TSV_PREFIX):
            spec = parse_tsv_source(source)  # refuses dev/test files
            if not spec.path.is_file():
                raise IngestError(f"ingest.sources {source!r}: no such file {spec.path}")
            tsv_header_indices(spec)         # a missing column is named now
            found.setdefault(Path(source), (source, spec.path))
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
            found.setdefault(file, (source, file))
    return [pair for _, pair in sorted(found.items(), key=lambda kv: str(kv[0]))]


def local_path(source: str) -> str:
    """The file or folder on disk a source reads: an ``hf:`` or ``tsv:`` source without its
    prefix and query (a hub dataset's name, for ``hf:``), any other source as it is."""
    for prefix in (HF_PREFIX, TSV_PREFIX):
        if source.startswith(prefix):
            return source[len(prefix):].split("?", 1)[0]
    return source


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
    or None for a single file named on purpose (its link is followed), as a ``tsv:`` file is."""
    if source.startswith(TSV_PREFIX):
        return None
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


# --- task text: the train split of a fine-tuning task, tab-separated --------------------------------

# Rows of a task's file per document. One row (an SST-2 phrase, a CoLA sentence) is far under
# ingest.min_document_chars and a pretraining example, and packing never crosses documents;
# the whole file as one document would put all of it on one side of tokenize's per-document
# train/validation split and make deduplication all or nothing. 50 short rows fill a few
# 128-token examples each; the rows are unrelated, which costs ELECTRA nothing (no
# next-sentence objective).
TSV_ROWS_PER_DOCUMENT = 50
# Words in a file's name that mark a held-out split: its text must never reach pretraining.
HELD_OUT_WORDS = frozenset({"dev", "test", "validation", "valid", "val", "eval", "evaluation", "heldout",
                            "holdout"})


@dataclass(frozen=True)
class TsvSource:
    """A ``tsv:`` source: the file, the columns whose text it gives (names, or 0-based numbers
    when the file has no header row) and whether its first row is a header."""

    source: str
    path: Path
    columns: tuple[str | int, ...]
    header: bool

    def key(self) -> str:
        """What the file's documents depend on besides its bytes (part of its cache key)."""
        return f"header={self.header};columns={list(self.columns)!r}"


def held_out_word(path: Path) -> str | None:
    """The word of a file's name (before its first dot) that marks a held-out split (``dev``,
    ``test``, ``validation``, ``dev_matched``'s ``dev`` ...), or None for a train file."""
    stem = path.name.split(".", 1)[0].lower()
    return next((w for w in re.split(r"[^a-z0-9]+", stem) if w in HELD_OUT_WORDS), None)


def parse_tsv_source(source: str) -> TsvSource:
    """``tsv:<path>?columns=<name>[,<name>...]`` or ``tsv:<path>?header=none&columns=<n>[,...]``
    -> :class:`TsvSource`. A file named like a held-out split raises :class:`IngestError`:
    task-adaptive pretraining reads train text only."""
    from urllib.parse import parse_qsl

    spec = source[len(TSV_PREFIX):]
    path, _, query = spec.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(options) - {"columns", "header"}
    header = options.get("header", "first")
    names = [c.strip() for c in options.get("columns", "").split(",") if c.strip()]
    usage = "expected tsv:<path>?columns=<name>[,<name>...] or tsv:<path>?header=none&columns=<n>[,<n>...]"
    if not path or unknown or not names or header not in ("first", "none"):
        problem = (f"unknown option(s) {sorted(unknown)}" if unknown else "no columns=" if not names
                   else f"header={header!r} (first or none)" if path else "no path")
        raise IngestError(f"ingest.sources {source!r}: {usage}; {problem}")
    if word := held_out_word(Path(path)):
        raise IngestError(
            f"ingest.sources {source!r}: {Path(path).name} looks like a held-out split ({word!r}). "
            "Task-adaptive pretraining reads train text only: the unlabelled text of a task's train file "
            "(Gururangan et al. 2020, \"Don't Stop Pretraining\"). Dev or test text in the pretraining "
            "corpus leaks into the evaluation. Name the task's train file.")
    columns: tuple[str | int, ...] = tuple(names)
    if header == "none":
        if not all(n.isdigit() for n in names):
            raise IngestError(f"ingest.sources {source!r}: header=none takes 0-based column numbers, got {names}")
        columns = tuple(int(n) for n in names)
    return TsvSource(source=source, path=Path(path), columns=columns, header=header == "first")


def _column_indices(spec: TsvSource, header: list[str] | None) -> list[int]:
    """The 0-based positions of the source's columns; a name the header lacks raises
    :class:`IngestError` naming the file and the columns it has."""
    if not spec.header:
        return [int(c) for c in spec.columns]
    names = [h.strip() for h in header or []]
    missing = [c for c in spec.columns if c not in names]
    if missing:
        raise IngestError(f"ingest.sources {spec.source!r}: {spec.path} has no column(s) {missing}; "
                          f"its header row has {names}")
    return [names.index(str(c)) for c in spec.columns]


def tsv_header_indices(spec: TsvSource) -> list[int]:
    """:func:`_column_indices` from the file's first line (read alone, before any pass over
    the file: the header of a task file is ASCII in practice, and a byte that is not UTF-8
    there can only make a name not match, which is then reported)."""
    if not spec.header:
        return _column_indices(spec, None)
    try:
        with open_source(spec.path) as handle:
            first = handle.readline().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise IngestError(f"ingest.sources {spec.source!r}: cannot read {spec.path}: {exc}") from exc
    return _column_indices(spec, first.rstrip("\r\n").split("\t"))


def tsv_documents(lines: Iterable[str], spec: TsvSource, bad: BadRecords) -> Iterator[list[str]]:
    """The text of the source's columns, a row's non-empty cells in column order, each cell
    one paragraph; ``TSV_ROWS_PER_DOCUMENT`` rows to a document.

    GLUE's files are not CSV-quoted (a quote is text), so a line is split on tabs only. A
    row with fewer columns than the source names is a bad record, counted in ``bad`` by
    line number (``ingest.max_bad_record_fraction`` applies as to JSON Lines); blank lines
    are no rows. ``bad.records`` ends as the number of rows read. The last few rows (under
    half a document) join the document before them: alone they would be too short to keep."""
    indices: list[int] | None = None if spec.header else _column_indices(spec, None)
    need = max(indices) + 1 if indices is not None else 0
    document: list[str] = []
    held: list[str] | None = None     # the last full document, held back for the remainder
    rows = 0
    for line_no, line in enumerate(lines, start=1):
        cells = line.rstrip("\r").split("\t")
        if indices is None:     # the header row
            indices = _column_indices(spec, cells)
            need = max(indices) + 1
            continue
        if not line.strip():
            continue
        bad.records += 1
        if len(cells) < need:
            bad.add(f"fewer than {need} tab-separated columns", line_no)
            continue
        document += [cells[i] for i in indices if cells[i].strip()]
        rows += 1
        if rows % TSV_ROWS_PER_DOCUMENT == 0:
            if held is not None:
                yield held
            held, document = document, []
    if held is not None and rows % TSV_ROWS_PER_DOCUMENT < TSV_ROWS_PER_DOCUMENT // 2:
        held, document = held + document, []
    yield from (d for d in (held, document) if d)
