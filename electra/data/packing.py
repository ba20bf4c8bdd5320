"""Packing: tokenised sentences into fixed-length pretraining examples.

A document's sentences (token ids, :func:`encoded_documents`) are packed greedily into
``[CLS] A [SEP] B [SEP]`` examples of at most ``max_seq_length`` tokens, never crossing
a document (:func:`pack_document`). Pure functions of ids and a seeded random stream:
the same ids and seed give the same examples.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


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
        if len(ids) > budget:
            pieces.extend(_split_long(ids, budget))
        elif ids:
            pieces.append(ids)
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

    # encode_batch_fast skips the character offsets, which packing does not use (same ids).
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)

    def encode_group() -> Iterator[tuple[list[str], list[list[int]]]]:
        sentences = [sentence for document in group for sentence in document]
        ids: list[list[int]] = []
        for at in range(0, len(sentences), batch):
            ids.extend(e.ids for e in encode(sentences[at:at + batch], add_special_tokens=False))
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

