"""Stage ``ingest``: raw plain-text files in, normalised sentence shards out.

Output layout (``ingest.output_dir``)::

    shard-00000.txt ...   one sentence per line, a blank line between documents
    manifest.json         counts, hashes, per-source counts, per-file encodings, skipped files and why

What it reads, and how, lives beside it: the sources (files, folders, globs, compressed
files, JSON Lines, ``hf:`` datasets, a task's ``tsv:`` train text) in
:mod:`electra.data.sources`, encodings in :mod:`electra.data.decoding`, normalisation and sentence splitting in
:mod:`electra.data.text`, duplicates in :mod:`electra.data.dedup`, the shards in
:mod:`electra.data.shards`. This module is the stage: the unit of work and the assembly.

Each file is a unit of work (processes in parallel: ``ingest.workers``) whose documents
go to a cache entry keyed by the file's content hash, the params and the code that reads
it (``ENTRY_CODE``) (``<output_dir>.cache``); the shards are assembled from the entries in file order,
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

JSON Lines: the whole file is skipped when more than ``ingest.max_bad_record_fraction`` of
its records are bad: past that, the file is a broken export or the field is misnamed, and
training on what is left would be a silent mistake. The rows of a ``tsv:`` task file with
too few columns are bad records in the same way.

Task-adaptive pretraining: a ``tsv:`` source adds the unlabelled text of a fine-tuning
task's *train* file (its named columns; never labels, never a dev or test file, which
:func:`~electra.data.sources.parse_tsv_source` refuses). The manifest's ``task_text`` lists
each such file: path, columns, rows read, what was kept, its sha256. Its cache entry is keyed
by the columns too, so a changed ``columns=`` reads the file again.

Every file found is either kept or recorded as skipped with a reason: unreadable
(vanished, no permission, corrupt compressed data: truncated or garbled anywhere, in any
codec), empty, binary (NUL bytes), undecodable (no encoding found with confidence), too
many bad JSON Lines records, a symlink leading outside its corpus folder, or no usable
text. Nothing is dropped silently: ``files_found = files_kept + files_skipped``, overall
and per source.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from electra.core.config import IngestConfig
from electra.core.files import atomic_dir, atomic_open, read_json, sha256_file, write_json
from electra.core.keys import content_key
from electra.core.parallel import default_workers, map_units
from electra.data.decoding import FileScan, UndecodableError, decoded_blocks, scan_source
from electra.data.dedup import Deduplicator, NearDuplicates
from electra.data.shards import ShardWriter, content_hash, shard_documents
from electra.data.sources import (
    HF_PREFIX,
    TSV_PREFIX,
    BadRecords,
    IngestError,
    TsvSource,
    compression_of,
    hf_texts,
    is_jsonl,
    jsonl_texts,
    outside_corpus,
    parse_tsv_source,
    resolve_sources,
    source_root,
    tsv_documents,
)
from electra.data.text import (
    normalize_text,
    split_document_lines,
    split_documents,
    split_lines,
    split_long,
    split_sentences,
)

# The modules a file's cache entry depends on (besides its bytes, the params and the encoding
# detector): reading it, decoding it, cutting it, and this unit of work. Editing any of them
# makes every entry stale.
ENTRY_CODE = ("data/ingest.py", "data/sources.py", "data/decoding.py", "data/text.py")


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
    rows: int | None = None     # a tsv: file's rows read (bad ones included)


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


@dataclass(frozen=True)
class FileJob:
    """What one worker needs to turn one input into documents: plain, picklable values only."""

    path: str                  # a file, "hf:<dataset>[?name=..&split=..]" or "tsv:<file>?columns=.."
    cache_dir: str
    version: str               # hash of the params and code the documents depend on
    cfg: IngestConfig


def _documents_of(job: FileJob, path: Path, scan: FileScan, bad: BadRecords | None,
                  tsv: TsvSource | None = None) -> Iterator[list[str]]:
    """The file's documents as lists of normalised, filtered sentences (short ones included);
    a JSON Lines file's bad records (a TSV file's short rows) are counted in ``bad``."""
    cfg = job.cfg
    separator = re.compile(cfg.doc_separator_regex) if cfg.doc_separator_regex else None
    if job.path.startswith(HF_PREFIX):
        documents = (paragraphs for body in hf_texts(job.path, cfg.jsonl_text_field)
                     for paragraphs in split_documents(normalize_text(body), separator))
    elif tsv is not None and bad is not None:
        # Split on tabs first: normalisation drops control characters, tabs among them.
        documents = ([p for cell in cells if (p := normalize_text(cell).strip())]
                     for cells in tsv_documents(split_lines(decoded_blocks(path, scan)), tsv, bad))
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
    tsv = parse_tsv_source(job.path) if job.path.startswith(TSV_PREFIX) else None
    path = tsv.path if tsv else Path(job.path)
    if hf:
        # A streamed dataset has no content hash to key it by: it is read every run.
        digest, scan = None, FileScan(encoding="utf-8")
        key = "hf-" + hashlib.sha256(f"{job.version}:{job.path}:{os.getpid()}".encode()).hexdigest()[:24]
    else:
        try:
            digest = sha256_file(path)
        except OSError as exc:   # vanished since it was listed, not readable
            return {"skipped": f"unreadable: {exc.strerror or exc}", "reused": False}
        # A tsv: file's documents depend on its columns too: a changed columns= reads it again.
        spec = f":{tsv.key()}" if tsv else ""
        key = "file-" + hashlib.sha256(f"{job.version}:{digest}{spec}".encode()).hexdigest()[:24]
        meta = cache / f"{key}.json"
        if meta.is_file():
            return {**read_json(meta), "reused": True}
        # Pass 1 reads the file as a stream and keeps nothing; pass 2 writes it.
        scan = scan_source(path, job.cfg.min_encoding_confidence)
        if scan.skipped:
            return {"skipped": scan.skipped, "sha256": digest, "reused": False}
    bad = BadRecords() if tsv or (not hf and is_jsonl(path)) else None
    short = documents = 0
    try:
        with atomic_open(cache / f"{key}.txt", "w", encoding="utf-8") as handle:
            for sentences in _documents_of(job, path, scan, bad, tsv):
                if not sentences or sum(len(s) for s in sentences) < job.cfg.min_document_chars:
                    short += 1
                    continue
                handle.write("\n".join(sentences) + "\n\n")
                documents += 1
            if bad is not None and (reason := _too_many_bad(bad, job.cfg.max_bad_record_fraction)):
                raise _FileRejected(reason)
    except _FileRejected as exc:
        return {"skipped": str(exc), "sha256": digest, "bad_records": bad.summary(), "reused": False,
                **({"rows": bad.records} if tsv else {})}
    except (OSError, UnicodeDecodeError, UndecodableError) as exc:
        if hf:
            raise
        return {"skipped": f"unreadable: changed while being read ({exc})", "sha256": digest, "reused": False}
    info = {"entry": f"{key}.txt", "encoding": scan.encoding, "encoding_confidence": scan.confidence,
            "sha256": digest, "documents": documents, "short_documents": short, "cached": not hf}
    if bad is not None and bad.bad:
        info["bad_records"] = bad.summary()
    if tsv is not None and bad is not None:
        info["rows"] = bad.records
    if not hf:
        write_json(cache / f"{key}.json", info)
    return {**info, "reused": False}


def _version(cfg: IngestConfig) -> str:
    """What a file's documents depend on besides its bytes: the params, the code that reads
    and cuts it (``ENTRY_CODE``) and the encoding detector's version (another may guess
    another encoding for the same bytes)."""
    import charset_normalizer

    settings = [cfg.doc_separator_regex, cfg.min_sentence_chars, cfg.min_document_chars, cfg.max_sentence_chars,
                cfg.jsonl_text_field, cfg.max_bad_record_fraction, cfg.min_encoding_confidence]
    return content_key({"settings": settings, "charset_normalizer": charset_normalizer.__version__},
                       code=ENTRY_CODE)


def _plan(cfg: IngestConfig, files: list[tuple[str, Path]], cache: Path) -> tuple[list[FileJob], dict[int, str]]:
    """The units of work, one per file in order, and the files left out of them: a symlink
    leading outside its corpus folder is skipped with its reason (by file number)."""
    version = _version(cfg)
    roots: dict[str, Path | None] = {}
    outside: dict[int, str] = {}
    jobs: list[FileJob] = []
    for number, (source, path) in enumerate(files):
        named = source.startswith((HF_PREFIX, TSV_PREFIX))   # the job reads the source's own spec
        if not source.startswith(HF_PREFIX) and outside_corpus(path, roots.setdefault(source, source_root(source))):
            outside[number] = f"symlink to {path.resolve()}, outside the corpus folder {source}"
        else:
            jobs.append(FileJob(path=source if named else str(path), cache_dir=str(cache), version=version, cfg=cfg))
    return jobs, outside


class _Assembly:
    """The shards, built from the files' results in file order: each file's documents that are
    not duplicates go to the shards, and its record and the counts are kept for the manifest.

    Cache entries are used once: a cacheable one (``cfg.cache``, not a streamed dataset) is
    kept for the next run (``used``), any other is deleted once read."""

    def __init__(self, cfg: IngestConfig, cache: Path, folder: Path) -> None:
        self.cfg, self.cache = cfg, cache
        self.writer = ShardWriter(folder, int(cfg.shard_size_mb * 1024 * 1024))
        near = NearDuplicates(cfg.near_dedup_threshold, cfg.minhash_permutations) if cfg.near_dedup else None
        self.dedup = Deduplicator(cfg.dedup, near)
        self.stats = IngestStats()
        self.records: list[SourceFile] = []
        self.used: set[str] = set()     # names of the cache entries to keep
        self.from_cache = 0             # files whose entry was already in the cache

    def add(self, source: str, path: Path, result: dict) -> None:
        """Record one file's result and write its new documents to the shards."""
        record = SourceFile(path=path, source=source)
        self.records.append(record)
        per_source = self.stats.per_source.setdefault(
            source, {"files": 0, "kept": 0, "skipped": 0, "documents": 0, "sentences": 0, "characters": 0}
        )
        per_source["files"] += 1
        record.skipped, record.encoding, record.sha256 = result.get("skipped"), result.get("encoding"), \
            result.get("sha256")
        record.encoding_confidence = result.get("encoding_confidence")
        record.bad_records = result.get("bad_records")
        record.rows = result.get("rows")
        self.from_cache += bool(result.get("reused"))
        if record.skipped:
            self.stats.files_skipped += 1
            per_source["skipped"] += 1
            return
        self.stats.files_read += 1
        self.stats.short_documents += result["short_documents"]
        self.stats.bad_records += (record.bad_records or {}).get("bad", 0)
        entry = self.cache / result["entry"]
        self._write_documents(entry, record, per_source)
        if result["cached"] and self.cfg.cache:
            self.used.add(entry.name)
            self.used.add(entry.with_suffix(".json").name)
        else:
            entry.unlink(missing_ok=True)
        if record.documents == 0:
            # The file was read but gave nothing: say so, it is not silently dropped.
            record.skipped = "no usable text (no document long enough, or all duplicates)"
            self.stats.files_skipped += 1
            per_source["skipped"] += 1
        else:
            self.stats.files_kept += 1
            per_source["kept"] += 1

    def _write_documents(self, entry: Path, record: SourceFile, per_source: dict[str, int]) -> None:
        """The entry's documents that are not duplicates, into the shards and the counts."""
        stats = self.stats
        for sentences in shard_documents(entry):
            chars = sum(len(s) for s in sentences)
            if not self.dedup.keep(sentences):
                continue
            self.writer.write(sentences)
            record.documents += 1
            stats.documents += 1
            stats.sentences += len(sentences)
            stats.characters += chars
            per_source["documents"] += 1
            per_source["sentences"] += len(sentences)
            per_source["characters"] += chars

    def finish(self, cfg: IngestConfig, files_found: int) -> dict[str, str]:
        """Close the last shard; the shards' content hashes by name. No document at all is an error."""
        self.writer.close()
        stats = self.stats
        stats.duplicate_documents = self.dedup.duplicates
        stats.near_duplicate_documents = self.dedup.near_duplicates
        if stats.documents == 0:
            raise IngestError(
                f"ingest.sources {cfg.sources}: no usable text in {files_found} files "
                f"({stats.files_skipped} skipped, {stats.short_documents} documents too short)"
            )
        return {p.name: sha256_file(p) for p in self.writer.paths}


def _file_entry(r: SourceFile) -> dict:
    """One file in the manifest: only the fields that apply to it."""
    return {
        "path": str(r.path),
        "encoding": r.encoding,
        **({"encoding_confidence": r.encoding_confidence} if r.encoding_confidence is not None else {}),
        **({"sha256": r.sha256} if r.sha256 else {}),
        **({"compression": compression_of(r.path)} if compression_of(r.path) else {}),
        "documents": r.documents,
        **({"bad_records": r.bad_records} if r.bad_records else {}),
        **({"skipped": r.skipped} if r.skipped else {}),
    }


def _task_text(assembly: _Assembly) -> list[dict]:
    """The manifest's ``task_text``: each ``tsv:`` source (task-adaptive pretraining on a task's
    unlabelled train text), what was read of it and what went into the shards."""
    entries = []
    for r in assembly.records:
        if not r.source.startswith(TSV_PREFIX):
            continue
        spec, kept = parse_tsv_source(r.source), assembly.stats.per_source[r.source]
        entries.append({
            "source": r.source, "path": str(r.path), "columns": list(spec.columns),
            "header": spec.header, "split": "train", "rows": r.rows,
            "bad_rows": (r.bad_records or {}).get("bad", 0),
            "documents": kept["documents"], "sentences": kept["sentences"], "characters": kept["characters"],
            "sha256": r.sha256, **({"skipped": r.skipped} if r.skipped else {}),
        })
    return entries


def _manifest(cfg: IngestConfig, assembly: _Assembly, files_found: int, files_processed: int,
              shard_hashes: dict[str, str], started: float) -> dict:
    """The output's ``manifest.json``: counts, per-source counts, per-file records, the shards."""
    stats, records = assembly.stats, assembly.records
    return {
        "stage": "ingest",
        "sources": cfg.sources,
        "files_found": files_found,        # = files_kept + files_skipped
        "files_kept": stats.files_kept,
        "files_skipped": stats.files_skipped,
        "files_read": stats.files_read,
        "documents": stats.documents,
        "duplicate_documents": stats.duplicate_documents,
        **({"near_duplicate_documents": stats.near_duplicate_documents} if assembly.dedup.near is not None else {}),
        "short_documents": stats.short_documents,
        "bad_records": stats.bad_records,  # JSON Lines records skipped in the files read (per file below)
        "sentences": stats.sentences,
        "characters": stats.characters,
        "per_source": stats.per_source,
        "encodings": {
            enc: sum(1 for r in records if r.encoding == enc)
            for enc in sorted({r.encoding for r in records if r.encoding})
        },
        "files": [_file_entry(r) for r in records],
        # Fine-tuning tasks' train text added to the corpus (tsv: sources); never dev or test text.
        "task_text": _task_text(assembly),
        "skipped": [{"path": str(r.path), "reason": r.skipped} for r in records if r.skipped],
        "shards": shard_hashes,
        "content_hash": content_hash(shard_hashes),
        "seconds": round(time.time() - started, 3),
        # How this run went (the same output whichever): files read now, files from the cache.
        "run": {"workers": cfg.workers or default_workers(), "files_processed": files_processed,
                "files_from_cache": assembly.from_cache},
    }


def ingest(cfg: IngestConfig, progress: bool = True) -> dict:
    """Read the corpus named by ``cfg.sources`` and write normalised, deduplicated sentence shards.

    Files are processed in parallel (``cfg.workers``) into the cache, then assembled in
    order; a file whose entry is in the cache (same bytes, params and code) is not read
    again. Returns a small result: output folder, shard paths, counts and the content hash.
    """
    from tqdm import tqdm

    started = time.time()
    # 1. The files, in order, and a unit of work for each (a symlink out of the corpus is skipped).
    files = resolve_sources(cfg.sources, cfg.exclude)
    if not files:
        raise IngestError(f"ingest.sources {cfg.sources}: no files found (after exclude {cfg.exclude})")
    cache = Path(f"{cfg.output_dir}.cache")
    cache.mkdir(parents=True, exist_ok=True)
    jobs, outside = _plan(cfg, files, cache)
    # 2. Each file's documents into its cache entry, in parallel; results come back in file order.
    results = map_units(ingest_file, jobs, cfg.workers)

    # 3. The shards from the entries, in file order, duplicates dropped; the manifest written last.
    with atomic_dir(cfg.output_dir) as tmp, contextlib.closing(results):
        assembly = _Assembly(cfg, cache, tmp)
        for number, (source, path) in enumerate(tqdm(files, desc="ingest", unit="file", disable=not progress)):
            assembly.add(source, path, {"skipped": outside[number]} if number in outside else next(results))
        shard_hashes = assembly.finish(cfg, len(files))
        manifest = _manifest(cfg, assembly, len(files), len(jobs) - assembly.from_cache, shard_hashes, started)
        write_json(tmp / "manifest.json", manifest)
    # 4. Entries of files no longer in the corpus (or of other params or code) go.
    for stale in cache.iterdir():
        if stale.name not in assembly.used and not stale.name.startswith("."):
            stale.unlink(missing_ok=True)
    out, stats = Path(cfg.output_dir), assembly.stats
    return {
        "output_dir": str(out),
        "shards": [str(out / name) for name in shard_hashes],
        "documents": stats.documents,
        "sentences": stats.sentences,
        "characters": stats.characters,
        "files_found": len(files),
        "files_kept": stats.files_kept,
        "files_skipped": stats.files_skipped,
        "files_from_cache": assembly.from_cache,
        "content_hash": manifest["content_hash"],
    }
