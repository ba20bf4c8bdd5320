"""Ingest's output: shards of documents, one sentence per line and a blank line after each
document, written to about a size each and read back document by document.

The shards are what tokenize reads (:func:`read_shards`, :func:`shard_documents`); a
per-file cache entry of ingest has the same format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path


class ShardWriter:
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


def content_hash(shard_hashes: dict[str, str]) -> str:
    """The hash of an ingest output: of its shards' names and content hashes, in name order."""
    return hashlib.sha256(
        "".join(f"{name}:{digest}\n" for name, digest in sorted(shard_hashes.items())).encode()
    ).hexdigest()
