"""Dropping documents seen before, in corpus order: exact duplicates (the SHA-256 of the
document's text) and near duplicates (MinHash signatures banded for locality-sensitive
hashing). Which copy stays depends on the documents before it, so this runs where ingest
assembles its shards, never inside a file's unit of work.
"""

from __future__ import annotations

import hashlib

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


class Deduplicator:
    """Says of each document, in corpus order, whether to keep it, and counts what it drops.

    The exact check comes first and remembers every document it passes, near duplicate or
    not, so each dropped document is counted once, as exact or as near."""

    def __init__(self, exact: bool, near: NearDuplicates | None) -> None:
        self.exact = exact
        self.near = near
        self.duplicates = 0          # exact copies of an earlier document
        self.near_duplicates = 0     # near copies (only with ``near``)
        self._seen: set[str] = set()

    def keep(self, sentences: list[str]) -> bool:
        """Whether the document (its sentences) is new; a new one is remembered."""
        if self.exact:
            key = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
            if key in self._seen:
                self.duplicates += 1
                return False
            self._seen.add(key)
        if self.near is not None and self.near.is_duplicate(sentences):
            self.near_duplicates += 1
            return False
        return True
