"""Stage ``ingest``: raw plain-text files in, normalised sentence shards out.

Output layout (``ingest.output_dir``)::

    shard-00000.txt ...   one sentence per line, a blank line between documents
    manifest.json         counts, hashes, per-source counts, skipped files and why

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
corpus size, and a file that turns out corrupt is skipped before any of it is written.

Every file found is either kept (its encoding detected per file, or per line when
a file mixes encodings) or recorded as skipped with a reason: unreadable (vanished,
no permission), empty, binary (NUL bytes), a symlink leading outside its corpus
folder, or no usable text. Nothing is dropped silently: ``files_found = files_kept +
files_skipped``, overall and per source.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import json
import os
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from electra.config import IngestConfig
from electra.files import atomic_dir, atomic_open, read_json, sha256_file, write_json
from electra.parallel import default_workers, map_units

# Tried in order; latin-1 decodes any byte string, so it is the last resort and is
# only reached when the stricter codecs fail.
ENCODINGS = ("utf-8", "cp1252", "latin-1")

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "rev", "hon", "gen", "col", "capt",
    "lt", "sgt", "mt", "vs", "etc", "no", "vol", "fig", "inc", "ltd", "co", "corp", "u.s",
    "e.g", "i.e", "a.m", "p.m",
}
# A sentence ends at . ! or ? (plus closing quotes/brackets) followed by space and an
# opening quote/bracket or an upper-case letter or digit.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\)\]\u201d\u2019]*\s+(?=[\"'\(\[\u201c\u2018]?[A-Z0-9])")
# Runs of these space characters become one " ": each becomes " ", then runs of " " one
# (a regex replacing every single space is slow on megabytes).
_SPACE_TABLE = {ord(c): " " for c in "\t\u00a0\u3000" + "".join(chr(c) for c in range(0x2000, 0x200C))}
_SPACE_RUNS = re.compile(r" {2,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class IngestError(ValueError):
    """Raised when the corpus cannot be ingested at all (no sources, no usable text)."""


@dataclass
class SourceFile:
    """One input file and what became of it."""

    path: Path
    source: str
    encoding: str | None = None
    documents: int = 0
    skipped: str | None = None
    sha256: str | None = None


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


def compression_of(path: Path) -> str | None:
    """The compression a file's suffix names, or None for an uncompressed file."""
    return COMPRESSIONS.get(path.suffix.lower())


def is_jsonl(path: Path) -> bool:
    """A JSON Lines file, compressed or not (``corpus.jsonl.gz``)."""
    name = path.name.lower()
    if compression_of(path):
        name = name[: -len(path.suffix)]
    return name.endswith(JSONL_SUFFIXES)


def open_source(path: Path) -> BinaryIO:
    """A binary stream of a source file's bytes, decompressed by its suffix."""
    compression = compression_of(path)
    if compression is None:
        return open(path, "rb")
    if compression == "gzip":
        import gzip

        return gzip.open(path, "rb")
    if compression == "bzip2":
        import bz2

        return bz2.open(path, "rb")
    if compression == "xz":
        import lzma

        return lzma.open(path, "rb")
    import io

    import zstandard

    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))


def _corrupt(exc: Exception, path: Path) -> bool:
    """Whether ``exc`` is a codec's complaint about corrupt or truncated data."""
    import lzma

    return compression_of(path) is not None and (
        isinstance(exc, (OSError, EOFError, ValueError, lzma.LZMAError)) or type(exc).__name__ == "ZstdError")


READ_BLOCK_BYTES = 1 << 20   # a file is read, decoded and normalised a MiB of whole lines at a time
BOM = b"\xef\xbb\xbf"


def raw_blocks(path: Path) -> Iterator[bytes]:
    """The file's (decompressed) bytes in blocks of whole lines, about ``READ_BLOCK_BYTES``
    each (a longer line is a block of its own). Streams: one block in memory. Corrupt
    compressed data raises ``OSError`` whatever the codec."""
    try:
        with open_source(path) as handle:
            while lines := handle.readlines(READ_BLOCK_BYTES):
                yield b"".join(lines)
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as exc:
        if _corrupt(exc, path):
            raise OSError(f"corrupt {compression_of(path)} data ({exc or type(exc).__name__})") from exc
        raise


def decoded_blocks(path: Path) -> Iterator[tuple[bytes, str, list[str]]]:
    """``(raw block, text, encodings)`` for each block of a file, as :func:`decode` would
    decode the whole file: UTF-8 where the block is valid UTF-8 (a newline byte never
    falls inside a UTF-8 sequence, so a file valid as a whole is valid block by block),
    otherwise line by line with the first of ``ENCODINGS`` that accepts each line.
    ``encodings`` are those of the block's non-ASCII lines, in order; the first block's
    text has no byte-order mark."""
    first = True
    for raw in raw_blocks(path):
        data = raw
        if first:
            first = False
            if data.startswith(BOM):
                data = data[3:]
        yield raw, *_decode_block(data)


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


@dataclass
class FileScan:
    """What a first pass over a file finds, before anything of it is written."""

    skipped: str | None = None
    encoding: str | None = None
    one_per_line: bool = False   # no blank line: one paragraph per line (WikiText, dumps)


def scan_source(path: Path) -> FileScan:
    """Read a file once, as a stream, without keeping it: whether it is unreadable, empty or
    binary, its encoding, and whether it has blank lines (how paragraphs are cut). Reading
    it all first means a corrupt or vanishing file is skipped before any of it is written."""
    seen = 0
    nonspace = nul = has_bom = False
    used: dict[str, None] = {}
    blank_before_last = False
    previous: str | None = None

    def texts() -> Iterator[str]:
        nonlocal seen, nonspace, nul, has_bom
        for raw, text, encodings in decoded_blocks(path):
            if seen == 0 and raw.startswith(BOM):
                has_bom = True
            if seen < 65536 and b"\x00" in raw[: 65536 - seen]:   # binary: a NUL in the first 64 KiB
                nul = True
            seen += len(raw)
            nonspace = nonspace or bool(raw.strip())
            used.update(dict.fromkeys(encodings))
            yield text

    try:
        for line in split_lines(texts(), normalize=True):
            if previous == "":
                blank_before_last = True   # a blank line that is not the text after the last break
            previous = line
    except OSError as exc:   # vanished since it was listed, not readable, corrupt
        return FileScan(skipped=f"unreadable: {exc.strerror or exc}")
    if not nonspace:
        return FileScan(skipped="empty file")
    if nul:
        return FileScan(skipped="binary file (NUL bytes)")
    return FileScan(encoding=_encoding_label(list(used), has_bom), one_per_line=not blank_before_last)


def jsonl_texts(lines: Iterable[str], field: str, path: Path) -> Iterator[str]:
    """The text of each record of a JSON Lines file; a bad record is an error naming the
    file and line (a corpus with a broken export should not train on half of it)."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestError(f"{path}:{line_no}: not a JSON record ({exc.msg})") from None
        yield record_text(record, field, f"{path}:{line_no}")


def record_text(record: object, field: str, where: str) -> str:
    """The text at ``field`` (dotted for a nested one) of a JSON Lines or dataset record;
    a record without it is an error naming ``where`` (file and line, or source and record)."""
    value = record
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            raise IngestError(f"{where}: the record has no field {field!r} (set ingest.jsonl_text_field)")
        value = value[key]
    if not isinstance(value, str):
        raise IngestError(f"{where}: field {field!r} is {type(value).__name__}, not text")
    return value


def _decode_line(line: bytes) -> tuple[str, str]:
    for encoding in ENCODINGS:
        try:
            return line.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")  # pragma: no cover


def _decode_by_line(data: bytes) -> tuple[str, list[str]]:
    """Decode each line with the first of ``ENCODINGS`` that accepts it; the text and the
    encodings of the non-ASCII lines, in order of first use."""
    parts: list[str] = []
    used: dict[str, None] = {}
    for line in data.splitlines(keepends=True):
        text, encoding = _decode_line(line)
        parts.append(text)
        if not line.isascii():
            used[encoding] = None
    return "".join(parts), list(used)


def _decode_block(data: bytes) -> tuple[str, list[str]]:
    """UTF-8 when ``data`` is valid UTF-8, else line by line; the text and the encodings of
    its non-ASCII lines, in order of first use."""
    try:
        return data.decode("utf-8"), ([] if data.isascii() else ["utf-8"])
    except UnicodeDecodeError:
        return _decode_by_line(data)


def _encoding_label(encodings: list[str], bom: bool) -> str:
    """A file's encoding from those of its non-ASCII lines: ``utf-8`` (``utf-8-sig`` with a
    byte-order mark), the one codec every line used, or ``mixed:<enc>+<enc>``."""
    if all(encoding == "utf-8" for encoding in encodings):
        return "utf-8-sig" if bom else "utf-8"
    return encodings[0] if len(encodings) == 1 else "mixed:" + "+".join(encodings)


def decode(data: bytes) -> tuple[str, str]:
    """Decode bytes; return ``(text, encoding)``.

    UTF-8 (with or without BOM) when the whole file is valid UTF-8; otherwise line by
    line, each line with the first of ``ENCODINGS`` that accepts it, so that a file
    pasted together from UTF-8 and Windows-1252 parts keeps both readable. The encoding
    is then the one every line used, or ``mixed:<enc>+<enc>``.
    """
    bom = data.startswith(BOM)
    text, encodings = _decode_block(data[3:] if bom else data)
    return text, _encoding_label(encodings, bom)


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


def split_sentences(paragraph: str) -> list[str]:
    """Split one paragraph into sentences with a rule-based splitter (no model, any language
    that ends sentences with . ! or ?); abbreviations and initials do not end a sentence."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        before = paragraph[start : match.start() + 1].rstrip()
        last_word = before.split()[-1] if before.split() else ""
        token = last_word.rstrip(".!?\"')]\u201d\u2019").lower().lstrip("(\"'[\u201c\u2018")
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


def _documents_of(job: FileJob, path: Path, scan: FileScan | None) -> Iterator[list[str]]:
    """The file's documents as lists of normalised, filtered sentences (short ones included)."""
    cfg = job.cfg
    separator = re.compile(cfg.doc_separator_regex) if cfg.doc_separator_regex else None
    if job.path.startswith(HF_PREFIX):
        documents = (paragraphs for body in hf_texts(job.path, cfg.jsonl_text_field)
                     for paragraphs in split_documents(normalize_text(body), separator))
    else:
        texts = (text for _, text, _ in decoded_blocks(path))
        if is_jsonl(path):
            # Each record is a document (or several, should its text hold separators).
            documents = (paragraphs for body in jsonl_texts(split_lines(texts), cfg.jsonl_text_field, path)
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


def ingest_file(job: FileJob) -> dict:
    """Turn one input into documents in its cache entry; return what became of it.

    The entry (``file-<key>.txt``: sentences one per line, a blank line after each
    document; ``file-<key>.json`` written last) is reused when present. Skipped files
    are not cached: the reason (vanished, unreadable) may not hold next time.
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
        scan = scan_source(path)
        if scan.skipped:
            return {"skipped": scan.skipped, "sha256": digest, "reused": False}
    short = documents = 0
    with atomic_open(cache / f"{key}.txt", "w", encoding="utf-8") as handle:
        for sentences in _documents_of(job, path, scan):
            if not sentences or sum(len(s) for s in sentences) < job.cfg.min_document_chars:
                short += 1
                continue
            handle.write("\n".join(sentences) + "\n\n")
            documents += 1
    info = {"entry": f"{key}.txt", "encoding": scan.encoding, "sha256": digest, "documents": documents,
            "short_documents": short, "cached": not hf}
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
    """What a file's documents depend on besides its bytes: the params and this code."""
    settings = [cfg.doc_separator_regex, cfg.min_sentence_chars, cfg.min_document_chars, cfg.max_sentence_chars,
                cfg.jsonl_text_field]
    return hashlib.sha256(json.dumps([settings, sha256_file(Path(__file__))]).encode()).hexdigest()


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
            from_cache += bool(result.get("reused"))
            if record.skipped:
                stats.files_skipped += 1
                per_source["skipped"] += 1
                continue
            stats.files_read += 1
            stats.short_documents += result["short_documents"]
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
                    **({"sha256": r.sha256} if r.sha256 else {}),
                    **({"compression": compression_of(r.path)} if compression_of(r.path) else {}),
                    "documents": r.documents,
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
