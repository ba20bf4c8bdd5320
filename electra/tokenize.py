"""Stage ``tokenize``: sentence shards in, packed pretraining examples out.

Output layout (``tokenize.output_dir``)::

    tokenizer/                       the WordPiece tokenizer (AutoTokenizer loads it)
    train/input_ids-00000.npy ...    (N, max_seq_length) token ids, right-padded with [PAD]
    train/token_type_ids-00000.npy   (N, max_seq_length) segment ids (0 for A, 1 for B)
    train/lengths-00000.npy          (N,) real lengths
    validation/...                   the same for the held-out documents
    summary.json                     counts, shapes, dtypes, hashes

The ``.npy`` files open as memory maps (``np.load(mmap_mode="r")``), so
training reads only the rows it needs. Documents, not examples, are split
between train and validation, so no text leaks across the split.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from electra.config import TokenizeConfig
from electra.files import atomic_dir, sha256_tree, write_json
from electra.ingest import read_shards
from electra.tokenizer import tokenizer_from_vocab, train_tokenizer


@dataclass(frozen=True)
class PackedExample:
    """One pretraining example before padding: ``[CLS] A [SEP] (B [SEP])``."""

    input_ids: list[int]
    token_type_ids: list[int]


def _split_long(ids: list[int], limit: int) -> list[list[int]]:
    """Cut a sentence longer than ``limit`` tokens into pieces (rare: headings, lists)."""
    return [ids[i : i + limit] for i in range(0, len(ids), limit)]


def pack_document(
    sentences: list[list[int]],
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    rng: random.Random,
    short_seq_prob: float = 0.1,
    single_segment_prob: float = 0.1,
) -> Iterator[PackedExample]:
    """Pack one document's tokenised sentences into examples, greedily, never crossing documents.

    Sentences are added to the current chunk until the next one would overflow the
    target length (``max_seq_length - 3`` for the special tokens; with probability
    ``short_seq_prob`` a shorter random target, as ELECTRA does so that the model also
    sees short inputs). A full chunk is split at a sentence boundary into segments A
    and B of about equal size (or kept as one segment with ``single_segment_prob``).
    """
    budget = max_seq_length - 3

    def new_target() -> int:
        if rng.random() < short_seq_prob:
            return rng.randint(2, budget)
        return budget

    pieces: list[list[int]] = []
    for ids in sentences:
        if ids:
            pieces.extend(_split_long(ids, budget))
    target = new_target()
    chunk: list[list[int]] = []
    size = 0
    for piece in pieces:
        if chunk and size + len(piece) > target:
            yield _make_example(chunk, budget, cls_id, sep_id, rng, single_segment_prob)
            chunk, size, target = [], 0, new_target()
        chunk.append(piece)
        size += len(piece)
    if chunk:
        yield _make_example(chunk, budget, cls_id, sep_id, rng, single_segment_prob)


def _make_example(
    chunk: list[list[int]], budget: int, cls_id: int, sep_id: int, rng: random.Random,
    single_segment_prob: float,
) -> PackedExample:
    total = sum(len(p) for p in chunk)
    split = len(chunk)
    if len(chunk) > 1 and rng.random() >= single_segment_prob:
        # First boundary at which segment A holds at least half of the tokens.
        running = 0
        for i, piece in enumerate(chunk[:-1]):
            running += len(piece)
            if running * 2 >= total:
                split = i + 1
                break
        else:
            split = len(chunk) - 1
    seg_a = [t for p in chunk[:split] for t in p]
    seg_b = [t for p in chunk[split:] for t in p]
    # A chunk can exceed the budget by one sentence only when it is a single piece
    # that already fits; trimming here keeps the invariant len <= max_seq_length.
    overflow = len(seg_a) + len(seg_b) - budget
    if overflow > 0:
        seg_b = seg_b[: max(0, len(seg_b) - overflow)]
        if len(seg_a) + len(seg_b) > budget:
            seg_a = seg_a[:budget]
    ids = [cls_id, *seg_a, sep_id]
    types = [0] * len(ids)
    if seg_b:
        ids += [*seg_b, sep_id]
        types += [1] * (len(seg_b) + 1)
    return PackedExample(ids, types)


def _is_validation(document: list[str], fraction: float, seed: int) -> bool:
    """Assign a document to validation by a seeded hash of its text (stable across runs)."""
    digest = hashlib.sha256(f"{seed}:{document[0]}:{len(document)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class _ShardedArrayWriter:
    """Writes examples into ``.npy`` shards of at most ``shard_examples`` rows.

    Each example goes straight into the shard's preallocated arrays (2-3 bytes per
    position), so memory is one shard's worth whatever the corpus size.
    """

    def __init__(self, folder: Path, max_seq_length: int, pad_id: int, id_dtype: np.dtype, shard_examples: int):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_seq_length = max_seq_length
        self.pad_id = pad_id
        self.id_dtype = id_dtype
        self.shard_examples = shard_examples
        self._ids: np.ndarray | None = None
        self._types: np.ndarray | None = None
        self._lengths: np.ndarray | None = None
        self._rows = 0
        self.shards = 0
        self.count = 0
        self.tokens = 0

    def _grow(self) -> None:
        """Room for more rows: doubling from 1024 up to a whole shard (small splits stay small)."""
        have = 0 if self._ids is None else self._ids.shape[0]
        rows = min(self.shard_examples, max(1024, 2 * have))
        ids = np.full((rows, self.max_seq_length), self.pad_id, dtype=self.id_dtype)
        types = np.zeros((rows, self.max_seq_length), dtype=np.uint8)
        lengths = np.zeros(rows, dtype=np.int32)
        if have:
            ids[:have], types[:have], lengths[:have] = self._ids, self._types, self._lengths
        self._ids, self._types, self._lengths = ids, types, lengths

    def add(self, example: PackedExample) -> None:
        if self._ids is None or self._rows == self._ids.shape[0]:
            self._grow()
        row, length = self._rows, len(example.input_ids)
        self._ids[row, :length] = example.input_ids
        self._types[row, : len(example.token_type_ids)] = example.token_type_ids
        self._lengths[row] = length
        self._rows += 1
        if self._rows >= self.shard_examples:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        n = self._rows
        name = f"{self.shards:05d}"
        np.save(self.folder / f"input_ids-{name}.npy", self._ids[:n])
        np.save(self.folder / f"token_type_ids-{name}.npy", self._types[:n])
        np.save(self.folder / f"lengths-{name}.npy", self._lengths[:n])
        self.shards += 1
        self.count += n
        self.tokens += int(self._lengths[:n].sum())
        # The next shard reuses the arrays: back to padding.
        self._ids.fill(self.pad_id)
        self._types.fill(0)
        self._lengths.fill(0)
        self._rows = 0


ENCODE_BATCH_SENTENCES = 4096


def encoded_documents(documents: Iterable[list[str]], backend,
                      batch: int = ENCODE_BATCH_SENTENCES) -> Iterator[tuple[list[str], list[list[int]]]]:
    """Each document with its sentences' token ids, in order.

    Sentences go to ``encode_batch`` ``batch`` at a time across documents (or slices of
    one long document), so the tokenizer's threads have work enough, and only the ids
    are kept (an ``Encoding`` also holds tokens, offsets and masks). Ids do not depend on
    how sentences are batched, so the output is the same as one call per document.
    """
    group: list[list[str]] = []
    size = 0

    def encode_group() -> Iterator[tuple[list[str], list[list[int]]]]:
        sentences = [sentence for document in group for sentence in document]
        ids: list[list[int]] = []
        for at in range(0, len(sentences), batch):
            ids.extend(e.ids for e in backend.encode_batch(sentences[at:at + batch], add_special_tokens=False))
        at = 0
        for document in group:
            yield document, ids[at:at + len(document)]
            at += len(document)

    for document in documents:
        group.append(document)
        size += len(document)
        if size >= batch:
            yield from encode_group()
            group, size = [], 0
    if group:
        yield from encode_group()


def tokenize(cfg: TokenizeConfig, progress: bool = True) -> dict:
    """Tokenise the ingested corpus and pack it into fixed-length pretraining examples.

    Returns the output folder, example counts and the content hash of the output.
    """
    from tqdm import tqdm

    started = time.time()
    # The shards are read as a stream (twice when training the vocab), never held whole:
    # memory stays flat whatever the corpus size.
    if cfg.train_vocab:
        tokenizer = train_tokenizer(
            (s for doc in read_shards(cfg.input_dir) for s in doc), vocab_size=cfg.vocab_size,
            lowercase=cfg.lowercase,
        )
    else:
        tokenizer = tokenizer_from_vocab(cfg.vocab_file, lowercase=cfg.lowercase)
    vocab_size = len(tokenizer)
    id_dtype = np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.int32)
    cls_id, sep_id, pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    backend = tokenizer.backend_tokenizer
    rng = random.Random(cfg.seed)

    with atomic_dir(cfg.output_dir) as tmp:
        tokenizer.save_pretrained(tmp / "tokenizer")
        writers = {
            split: _ShardedArrayWriter(tmp / split, cfg.max_seq_length, pad_id, id_dtype, cfg.shard_examples)
            for split in ("train", "validation")
        }
        produced = documents = 0
        stream = encoded_documents(read_shards(cfg.input_dir), backend)
        for document, sentence_ids in tqdm(stream, desc="tokenize", unit="doc", disable=not progress):
            documents += 1
            split = "validation" if _is_validation(document, cfg.validation_fraction, cfg.seed) else "train"
            for example in pack_document(
                sentence_ids, cfg.max_seq_length, cls_id, sep_id, rng, cfg.short_seq_prob
            ):
                writers[split].add(example)
                produced += 1
                if cfg.max_examples and produced >= cfg.max_examples:
                    break
            if cfg.max_examples and produced >= cfg.max_examples:
                break
        for writer in writers.values():
            writer.flush()
        if writers["train"].count == 0:
            raise ValueError(f"{cfg.input_dir}: the corpus produced no training examples")
        if writers["validation"].count == 0:
            raise ValueError(
                f"{cfg.input_dir}: no document fell into validation (fraction "
                f"{cfg.validation_fraction} of {documents} documents); raise tokenize.validation_fraction"
            )
        summary = {
            "stage": "tokenize",
            "vocab_size": vocab_size,
            "vocab_source": "trained" if cfg.train_vocab else cfg.vocab_file,
            "max_seq_length": cfg.max_seq_length,
            "id_dtype": id_dtype.name,
            "special_ids": {"cls": cls_id, "sep": sep_id, "pad": pad_id, "mask": tokenizer.mask_token_id},
            "splits": {
                split: {"examples": w.count, "tokens": w.tokens, "shards": w.shards}
                for split, w in writers.items()
            },
            "documents": documents,
            "seconds": round(time.time() - started, 3),
        }
        summary["content_hash"] = sha256_tree(tmp)
        write_json(tmp / "summary.json", summary)
    return {
        "output_dir": cfg.output_dir,
        "train_examples": summary["splits"]["train"]["examples"],
        "validation_examples": summary["splits"]["validation"]["examples"],
        "train_tokens": summary["splits"]["train"]["tokens"],
        "vocab_size": vocab_size,
        "content_hash": summary["content_hash"],
    }


class PackedDataset:
    """Read-only view over a split written by :func:`tokenize`, backed by memory maps."""

    def __init__(self, folder: str | Path, split: str = "train") -> None:
        root = Path(folder) / split
        id_files = sorted(root.glob("input_ids-*.npy"))
        if not id_files:
            raise FileNotFoundError(f"{root}: no input_ids-*.npy shards; run `electra tokenize` first")
        self.input_ids = [np.load(p, mmap_mode="r") for p in id_files]
        self.token_type_ids = [np.load(root / p.name.replace("input_ids", "token_type_ids"), mmap_mode="r") for p in id_files]
        self.offsets = np.cumsum([0] + [a.shape[0] for a in self.input_ids])
        self.max_seq_length = int(self.input_ids[0].shape[1])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``indices`` as int64 ``(ids, token_types)`` arrays of shape (len(indices), L)."""
        ids = np.empty((len(indices), self.max_seq_length), dtype=np.int64)
        types = np.empty((len(indices), self.max_seq_length), dtype=np.int64)
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        for row, (index, shard) in enumerate(zip(indices, shard_of)):
            local = index - self.offsets[shard]
            ids[row] = self.input_ids[shard][local]
            types[row] = self.token_type_ids[shard][local]
        return ids, types
