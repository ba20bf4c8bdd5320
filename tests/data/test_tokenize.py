"""Tokenisation and ELECTRA-style packing on the real corpus."""

from __future__ import annotations

import json
import random

import numpy as np

from electra.data.packing import pack_document
from electra.data.packed import PackedDataset

CLS, SEP, PAD = 101, 102, 0


def test_packing_never_crosses_documents_and_respects_length():
    rng = random.Random(0)
    doc = [[1000 + i] * rng.randint(1, 30) for i in range(40)]
    examples = list(pack_document(doc, 64, CLS, SEP, rng, short_seq_prob=0.0))
    tokens = [t for ex in examples for t in ex.input_ids if t not in (CLS, SEP)]
    assert tokens == [t for s in doc for t in s]  # every token once, in order, nothing from elsewhere
    for ex in examples:
        assert len(ex.input_ids) <= 64
        assert ex.input_ids[0] == CLS and ex.input_ids[-1] == SEP
        n_sep = ex.input_ids.count(SEP)
        assert n_sep in (1, 2)
        first_sep = ex.input_ids.index(SEP)
        assert ex.token_type_ids == [0] * (first_sep + 1) + [1] * (len(ex.input_ids) - first_sep - 1)
    # Every example but the document's last is full (the overflowing sentence is cut), and
    # most have two segments.
    assert all(len(e.input_ids) == 64 for e in examples[:-1])
    assert np.mean([e.input_ids.count(SEP) == 2 for e in examples]) > 0.6


def test_the_cut_sentence_starts_the_next_example():
    # Sentences of 40 tokens in examples of 64 (61 for A and B): the second sentence is cut
    # after 21 tokens, and its other 19 open the next example.
    doc = [[1000 + i] * 40 for i in range(6)]
    examples = list(pack_document(doc, 64, CLS, SEP, random.Random(0), short_seq_prob=0.0,
                                  single_segment_prob=0.0))
    first, second = examples[0].input_ids, examples[1].input_ids
    assert first == [CLS, *[1000] * 40, SEP, *[1001] * 21, SEP]
    assert second[:20] == [CLS, *[1001] * 19]
    assert [len(e.input_ids) for e in examples] == [64, 64, 64, 60]   # 240 tokens = 3 x 61 + 57


def test_no_example_crosses_a_document():
    # Documents with disjoint ids, packed one after another from one random stream (as a unit
    # of work does): each example holds one document's tokens, and each document's tokens
    # are all there, in order, none dropped by the cuts.
    rng = random.Random(3)
    documents = [[[10_000 * (d + 1) + i] * rng.randint(1, 50) for i in range(rng.randint(1, 60))] for d in range(8)]
    for d, document in enumerate(documents):
        examples = list(pack_document(document, 128, CLS, SEP, rng))
        content = [[t for t in e.input_ids if t not in (CLS, SEP)] for e in examples]
        assert all({t // 10_000 for t in tokens} == {d + 1} for tokens in content)
        assert [t for tokens in content for t in tokens] == [t for s in document for t in s]


def test_short_targets_happen_at_about_their_probability():
    # Examples shorter than the room for one segment (126 of 128) are the short targets
    # (and the document's last): about short_seq_prob of them.
    doc = [[5] * random.Random(i).randint(1, 40) for i in range(5000)]
    lengths = [len(e.input_ids) for e in pack_document(doc, 128, CLS, SEP, random.Random(4), short_seq_prob=0.1)]
    short = np.mean([n < 127 for n in lengths[:-1]])
    assert 0.07 < short < 0.13


def test_long_sentences_are_split_and_short_targets_happen():
    rng = random.Random(1)
    examples = list(pack_document([[7] * 500], 64, CLS, SEP, rng, short_seq_prob=0.0))
    assert sum(len(e.input_ids) - e.input_ids.count(CLS) - e.input_ids.count(SEP) for e in examples) == 500
    doc = [[5] * 8 for _ in range(400)]
    lengths = [len(e.input_ids) for e in pack_document(doc, 128, CLS, SEP, random.Random(2), short_seq_prob=0.5)]
    assert min(lengths) < 64 < max(lengths)


def _assert_well_formed(ids: np.ndarray, types: np.ndarray) -> None:
    """Rows of ``[CLS] A [SEP] (B [SEP])`` then padding: segment ids 0 up to the first
    [SEP], 1 after it up to the second, 0 on padding."""
    lengths = (ids != PAD).sum(1)
    for row, n in zip(range(len(ids)), lengths):
        real = ids[row, :n]
        assert (ids[row, n:] == PAD).all() and real[0] == CLS and real[-1] == SEP and CLS not in real[1:]
        seps = np.flatnonzero(real == SEP)
        assert len(seps) in (1, 2)
        want = np.zeros(ids.shape[1], dtype=types.dtype)
        want[seps[0] + 1 : n] = 1
        assert (types[row] == want).all()


def test_tokenize_stage_outputs(pretrained_micro):
    out = pretrained_micro / "outputs" / "tokenize"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["max_seq_length"] == 64 and summary["vocab_size"] == 30522
    train = PackedDataset(out, "train")
    valid = PackedDataset(out, "validation")
    assert len(train) == summary["splits"]["train"]["examples"] > 0
    assert len(valid) == summary["splits"]["validation"]["examples"] > 0
    assert len(train) + len(valid) == 1500  # micro's max_examples
    for split in (train, valid):
        _assert_well_formed(*split.get(np.arange(len(split))))
    assert (out / "tokenizer" / "tokenizer.json").exists()


def test_the_micro_corpus_packs_at_full_fill(pretrained_micro, tmp_path):
    """Real tokens / (examples x 64) on micro (the inaugural speeches, 64 tokens). Measured:
    0.9366 (87,218 real tokens in 1,455 x 64) with micro's short_seq_prob of 0.1, whose
    short examples are about half empty by design (0.1 x 0.5 of the slots); 0.9894
    (92,255 in 1,457 x 64) without them, the rest being each document's last example.
    Before examples were filled (the sentence that overflowed closed the example) it was
    about 0.80."""
    out = pretrained_micro / "outputs" / "tokenize"
    summary = json.loads((out / "summary.json").read_text())
    train = summary["splits"]["train"]
    data = PackedDataset(out, "train")
    lengths = (data.get(np.arange(len(data)))[0] != PAD).sum(1)
    assert train["tokens"] == int(lengths.sum()) and (lengths <= 64).all()
    assert summary["fill_fraction"] == train["fill_fraction"] == round(train["tokens"] / (train["examples"] * 64), 4)
    assert summary["fill_fraction"] >= 0.93

    from electra.core.config import TokenizeConfig
    from electra.data.tokenize import tokenize

    cfg = TokenizeConfig(input_dir=str(pretrained_micro / "outputs" / "ingest"), output_dir=str(tmp_path / "tok"),
                         max_seq_length=64, max_examples=1500, short_seq_prob=0.0)
    assert tokenize(cfg, progress=False)["fill_fraction"] >= 0.98


def test_a_vocab_trained_on_the_corpus_is_saved_with_the_data(pretrained_micro, tmp_path):
    from transformers import AutoTokenizer

    from electra.core.config import TokenizeConfig
    from electra.data.tokenize import tokenize

    cfg = TokenizeConfig(input_dir=str(pretrained_micro / "outputs" / "ingest"), output_dir=str(tmp_path / "tok"),
                         train_vocab=True, vocab_size=2000, max_seq_length=64, max_examples=200)
    result = tokenize(cfg, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok" / "tokenizer")
    assert result["vocab_size"] == len(tokenizer) <= 2000
    summary = json.loads((tmp_path / "tok" / "summary.json").read_text())
    assert summary["vocab_source"] == "trained" and summary["id_dtype"] == "uint16"
    ids = tokenizer("fellow citizens of the senate")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and tokenizer.unk_token_id not in ids
    train = PackedDataset(tmp_path / "tok", "train")
    assert int(train.get(np.arange(len(train)))[0].max()) < len(tokenizer)
