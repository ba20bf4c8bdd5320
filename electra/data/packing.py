"""Packing: tokenised sentences into fixed-length pretraining examples.

A document's sentences (token ids, :func:`encoded_documents`) are packed into
``[CLS] A [SEP] B [SEP]`` examples filled to ``max_seq_length`` tokens, never crossing a
document (:func:`pack_document`). Pure functions of ids and a seeded random stream: the
same ids and seed give the same examples.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class PackedExample:
    """One pretraining example before padding: ``[CLS] A [SEP] (B [SEP])``."""

    input_ids: list[int]
    token_type_ids: list[int]


def pack_document(
    sentences: list[list[int]],
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    rng: random.Random,
    short_seq_prob: float = 0.1,
    single_segment_prob: float = 0.1,
) -> Iterator[PackedExample]:
    """Pack one document's tokenised sentences into full examples, never crossing documents.

    Each example first draws its shape from ``rng``: one segment (with
    ``single_segment_prob``, room for ``max_seq_length - 2`` tokens) or two (``- 3``), and
    a target length, the whole room or, with ``short_seq_prob``, a shorter random one so
    that the model also sees short inputs (as BERT's and ELECTRA's builders do). Sentences
    are then added until the target is reached, and the sentence that would overflow is
    cut to fit, as the original ELECTRA builder does. Every example but the document's
    last (and the deliberately short ones) is therefore exactly ``max_seq_length`` long.

    The cut sentence's remainder is not dropped (ELECTRA drops it) but starts the next
    example: on a corpus of a couple of million tokens, dropping the rest of a sentence per
    example would throw away about a tenth of the text, while starting mid-sentence costs
    nothing to replaced-token detection or masked LM (there is no next-sentence task that
    needs segment A to start at a sentence boundary). The same rule splits a sentence
    longer than an example over as many examples as it needs.

    Pitfall: every draw from ``rng`` happens in the same order whatever the data, so the
    examples are a function of the ids and the seed only (the unit of work seeds ``rng``).
    """
    budget = max_seq_length - 3          # tokens left for A and B beside [CLS] A [SEP] B [SEP]
    queue = deque(ids for ids in sentences if ids)
    while queue:
        # 1. The example's shape: one or two segments, and its target length in tokens.
        single = rng.random() < single_segment_prob
        room = budget + 1 if single else budget
        target = rng.randint(min(2, room), room) if rng.random() < short_seq_prob else room
        # 2. Whole sentences up to the target; the one that overflows is cut, its rest
        #    goes back to the front of the queue to start the next example.
        chunk: list[list[int]] = []
        size = 0
        while queue and size < target:
            piece = queue.popleft()
            fits = target - size
            if len(piece) > fits:
                queue.appendleft(piece[fits:])
                piece = piece[:fits]
            chunk.append(piece)
            size += len(piece)
        # 3. Split into segments at a sentence boundary and add the special tokens.
        yield _make_example(chunk, single, cls_id, sep_id)


def _make_example(chunk: list[list[int]], single: bool, cls_id: int, sep_id: int) -> PackedExample:
    """``[CLS] A [SEP] B [SEP]`` from a chunk of sentences (the last maybe cut), A ending at
    the first sentence boundary where it holds at least half the tokens; ``[CLS] A [SEP]``
    when ``single`` or when the chunk is one sentence (no boundary to split at)."""
    split = len(chunk)
    if not single and len(chunk) > 1:
        total = sum(len(p) for p in chunk)
        running = 0
        for i, piece in enumerate(chunk[:-1]):
            running += len(piece)
            split = i + 1
            if running * 2 >= total:
                break
    seg_a = [t for p in chunk[:split] for t in p]
    seg_b = [t for p in chunk[split:] for t in p]
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

