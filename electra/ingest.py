"""Stage ``ingest``: raw plain-text files in, normalised sentence shards out.

Output layout (``ingest.output_dir``)::

    shard-00000.txt ...   one sentence per line, a blank line between documents
    manifest.json         counts, hashes, per-source counts, skipped files and why

Every file found is either read (its encoding detected per file) or recorded
as skipped with a reason; nothing is dropped silently.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import re
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from electra.config import IngestConfig
from electra.files import atomic_dir, sha256_file, write_json

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
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
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


@dataclass
class IngestStats:
    files_read: int = 0
    files_skipped: int = 0
    documents: int = 0
    duplicate_documents: int = 0
    short_documents: int = 0
    sentences: int = 0
    characters: int = 0
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)


def resolve_sources(sources: list[str], exclude: list[str]) -> list[tuple[str, Path]]:
    """Expand files, folders (recursively) and globs into ``(source, file)`` pairs, sorted."""
    found: dict[Path, str] = {}
    for source in sources:
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


def decode(data: bytes) -> tuple[str, str]:
    """Decode bytes with the first encoding that accepts them; return ``(text, encoding)``."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")  # pragma: no cover


def normalize_text(text: str) -> str:
    """NFC-normalise, unify line endings, drop control characters, collapse spaces per line."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return "\n".join(lines)


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
    """Yield documents as lists of paragraphs from normalised text (lines already stripped).

    A file is one document unless a line matches ``separator``, which then starts a
    new one (the line itself is a title and is dropped)."""
    paragraphs: list[str] = []
    current: list[str] = []
    lines = text.split("\n")
    # Hard-wrapped prose separates paragraphs with blank lines; a file with no blank
    # line at all (WikiText, one-paragraph-per-line dumps) has one paragraph per line.
    one_per_line = "" not in lines[:-1]

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


def read_shards(folder: str | Path) -> Iterator[list[str]]:
    """Yield the documents (lists of sentences) stored in an ingest output folder."""
    root = Path(folder)
    manifest = root / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest}: not found; run `electra ingest` first")
    for shard in sorted(root.glob("shard-*.txt")):
        document: list[str] = []
        with open(shard, encoding="utf-8") as handle:
            for line in handle:
                line = line.rstrip("\n")
                if line:
                    document.append(line)
                elif document:
                    yield document
                    document = []
        if document:
            yield document


def ingest(cfg: IngestConfig, progress: bool = True) -> dict:
    """Read the corpus named by ``cfg.sources`` and write normalised, deduplicated sentence shards.

    Returns a small result: output folder, shard paths, counts and the content hash.
    """
    from tqdm import tqdm

    started = time.time()
    files = resolve_sources(cfg.sources, cfg.exclude)
    if not files:
        raise IngestError(f"ingest.sources {cfg.sources}: no files found (after exclude {cfg.exclude})")
    separator = re.compile(cfg.doc_separator_regex) if cfg.doc_separator_regex else None
    stats = IngestStats()
    records: list[SourceFile] = []
    seen_docs: set[str] = set()

    with atomic_dir(cfg.output_dir) as tmp:
        writer = _ShardWriter(tmp, int(cfg.shard_size_mb * 1024 * 1024))
        for source, path in tqdm(files, desc="ingest", unit="file", disable=not progress):
            record = SourceFile(path=path, source=source)
            records.append(record)
            per_source = stats.per_source.setdefault(
                source, {"files": 0, "skipped": 0, "documents": 0, "sentences": 0, "characters": 0}
            )
            try:
                data = path.read_bytes()
            except OSError as exc:
                record.skipped = f"unreadable: {exc.strerror or exc}"
            else:
                if not data.strip():
                    record.skipped = "empty file"
                elif b"\x00" in data[:65536]:
                    record.skipped = "binary file (NUL bytes)"
            if record.skipped:
                stats.files_skipped += 1
                per_source["skipped"] += 1
                continue
            text, record.encoding = decode(data)
            text = normalize_text(text)
            stats.files_read += 1
            per_source["files"] += 1
            for paragraphs in split_documents(text, separator):
                sentences = [
                    s
                    for paragraph in paragraphs
                    for s in split_sentences(paragraph)
                    if len(s) >= cfg.min_sentence_chars
                ]
                chars = sum(len(s) for s in sentences)
                if not sentences or chars < cfg.min_document_chars:
                    stats.short_documents += 1
                    continue
                if cfg.dedup:
                    key = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
                    if key in seen_docs:
                        stats.duplicate_documents += 1
                        continue
                    seen_docs.add(key)
                writer.write(sentences)
                record.documents += 1
                stats.documents += 1
                stats.sentences += len(sentences)
                stats.characters += chars
                per_source["documents"] += 1
                per_source["sentences"] += len(sentences)
                per_source["characters"] += chars
            if record.documents == 0:
                # The file was read but gave nothing: say so, it is not silently dropped.
                record.skipped = "no document long enough (or all duplicates)"
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
            "files_found": len(files),
            "files_read": stats.files_read,
            "files_skipped": stats.files_skipped,
            "documents": stats.documents,
            "duplicate_documents": stats.duplicate_documents,
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
                    "documents": r.documents,
                    **({"skipped": r.skipped} if r.skipped else {}),
                }
                for r in records
            ],
            "skipped": [{"path": str(r.path), "reason": r.skipped} for r in records if r.skipped],
            "shards": shard_hashes,
            "content_hash": content_hash,
            "seconds": round(time.time() - started, 3),
        }
        write_json(tmp / "manifest.json", manifest)
    out = Path(cfg.output_dir)
    return {
        "output_dir": str(out),
        "shards": [str(out / name) for name in shard_hashes],
        "documents": stats.documents,
        "sentences": stats.sentences,
        "characters": stats.characters,
        "files_read": stats.files_read,
        "files_skipped": stats.files_skipped,
        "content_hash": content_hash,
    }
