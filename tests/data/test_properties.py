"""Property-based tests (hypothesis): the text normaliser, the sentence packer and the masking
hold their invariants on any input, not only on the examples someone thought of."""

from __future__ import annotations

import random
import re
import unicodedata

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from electra.data.decoding import decode
from electra.data.packing import pack_document
from electra.data.text import _CONTROL, normalize_text, split_lines, split_long, split_sentences
from electra.pretraining.model import mask_tokens

FAST = settings(max_examples=150, deadline=None)
CLS, SEP, MASK = 101, 102, 103
# The normaliser's definition of spaces: runs of these become one " " (line by line).
SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
# Any unicode text, with the awkward parts over-represented: line endings, control
# characters, odd spaces, combining marks.
texts = st.lists(st.one_of(st.characters(), st.sampled_from(
    ["\r\n", "\r", "\n", "\t", "\x00", "\x0b", "\u00a0", "\u3000", "e\u0301", ". ", "! ", "? ", "Mr. ", "A"])),
    max_size=80).map("".join)


@FAST
@given(texts)
def test_normalised_text_is_nfc_clean_and_stable(text):
    once = normalize_text(text)
    assert normalize_text(once) == once                       # idempotent
    assert unicodedata.is_normalized("NFC", once)
    assert "\r" not in once and not _CONTROL.search(once)
    assert all(line == line.strip() and "  " not in line for line in once.split("\n"))


@FAST
@given(texts)
def test_normalising_at_once_line_by_line_or_block_by_block_is_the_same(text):
    """Ingestion normalises a block of lines at a time with one substitution for the whole
    block: the same text as the definition, collapsing spaces line by line."""
    unified = _CONTROL.sub("", unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n"))
    reference = "\n".join(SPACES.sub(" ", line).strip() for line in unified.split("\n"))
    assert normalize_text(text) == reference
    pieces = text.encode("utf-8", "surrogatepass").splitlines(keepends=True)
    blocks = [p.decode("utf-8", "surrogatepass") for p in pieces]
    assert list(split_lines(blocks, normalize=True)) == reference.split("\n")


@FAST
@given(texts)
def test_sentence_splitting_loses_no_character(text):
    paragraph = " ".join(normalize_text(text).split("\n")).strip()
    sentences = split_sentences(paragraph)
    assert all(s and s == s.strip() for s in sentences)
    assert "".join(sentences).replace(" ", "") == paragraph.replace(" ", "")


@FAST
@given(texts, st.integers(min_value=1, max_value=40))
def test_long_sentences_are_cut_into_bounded_pieces_losing_nothing(text, limit):
    sentence = " ".join(normalize_text(text).split()).strip()
    pieces = split_long(sentence, limit)
    assert all(0 < len(p) <= limit for p in pieces) or not sentence
    assert "".join(pieces).replace(" ", "") == sentence.replace(" ", "")


@FAST
@given(st.text())
def test_utf8_round_trips_and_other_bytes_never_fail(text):
    data = text.encode("utf-8")
    decoded, encoding = decode(data)
    if data.startswith(b"\xef\xbb\xbf"):
        return
    assert (decoded, encoding) == (text, "utf-8")
    # A line in another encoding: decoded line by line, never raising, the UTF-8 part intact.
    garbled, encoding = decode(data + b"\n\xff\xfe caf\xe9\n")
    assert garbled == text + "\n\u00ff\u00fe caf\u00e9\n"
    assert encoding in ("cp1252", "mixed:utf-8+cp1252")


documents = st.lists(st.lists(st.integers(min_value=1000, max_value=30000), min_size=0, max_size=60),
                     min_size=1, max_size=30)


@FAST
@given(documents, st.integers(min_value=5, max_value=128), st.integers(0, 2**32 - 1),
       st.one_of(st.just(0.0), st.floats(0, 1)), st.floats(0, 1))
def test_packed_examples_fit_and_keep_the_document_order(sentences, max_len, seed, short_prob, single_prob):
    examples = list(pack_document(sentences, max_len, CLS, SEP, random.Random(seed), short_prob, single_prob))
    document = [t for s in sentences for t in s]
    position = 0
    for ex in examples:
        ids, types = ex.input_ids, ex.token_type_ids
        assert len(ids) == len(types) <= max_len
        assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) in (1, 2) and CLS not in ids[1:]
        assert types == sorted(types) and set(types) <= {0, 1}
        # The tokens come from this document only, in its order (never crossing, never shuffled).
        for token in (t for t in ids if t not in (CLS, SEP)):
            position = document.index(token, position) + 1
    # Nothing is dropped: a cut sentence's rest starts the next example.
    assert [t for ex in examples for t in ex.input_ids if t not in (CLS, SEP)] == document
    if short_prob == 0:
        # Full fill: every example but the last is max_len long (max_len - 1 when the chunk
        # is one piece of a two-segment example: no sentence boundary to put a second [SEP] at).
        assert all(len(ex.input_ids) >= max_len - 1 for ex in examples[:-1])
    if document:
        assert examples


@FAST
@given(st.integers(1, 6), st.integers(1, 48), st.floats(0.01, 0.99), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_masking_never_touches_special_tokens_and_uses_no_random_tokens(batch, length, mask_prob, mask_token_prob,
                                                                      seed):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 30000, (batch, length), generator=generator)
    special = torch.rand(batch, length, generator=generator) < 0.3
    special[:, 0] = True                                      # [CLS]
    masked_ids, is_masked = mask_tokens(input_ids, special, MASK, mask_prob, mask_token_prob,
                                        generator=torch.Generator().manual_seed(seed + 1))
    assert not (is_masked & special).any()
    n_maskable = (~special).sum(dim=1)
    expected = torch.minimum(torch.clamp(torch.round(n_maskable.float() * mask_prob).long(), min=1), n_maskable)
    assert torch.equal(is_masked.sum(dim=1), expected)
    changed = masked_ids != input_ids
    assert not (changed & ~is_masked).any()                   # only chosen positions change
    assert (masked_ids[changed] == MASK).all()                # ... and only to [MASK]: no random tokens
    if mask_token_prob == 1.0:
        assert torch.equal(changed, is_masked)
    if mask_token_prob == 0.0:
        assert not changed.any()
