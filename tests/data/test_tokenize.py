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
    # Most examples fill the budget (greedy packing), and most have two segments.
    assert np.mean([len(e.input_ids) for e in examples]) > 45
    assert np.mean([e.input_ids.count(SEP) == 2 for e in examples]) > 0.6


def test_long_sentences_are_split_and_short_targets_happen():
    rng = random.Random(1)
    examples = list(pack_document([[7] * 500], 64, CLS, SEP, rng, short_seq_prob=0.0))
    assert sum(len(e.input_ids) - e.input_ids.count(CLS) - e.input_ids.count(SEP) for e in examples) == 500
    doc = [[5] * 8 for _ in range(400)]
    lengths = [len(e.input_ids) for e in pack_document(doc, 128, CLS, SEP, random.Random(2), short_seq_prob=0.5)]
    assert min(lengths) < 64 < max(lengths)


def test_tokenize_stage_outputs(pretrained_micro):
    out = pretrained_micro / "outputs" / "tokenize"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["max_seq_length"] == 64 and summary["vocab_size"] == 30522
    train = PackedDataset(out, "train")
    valid = PackedDataset(out, "validation")
    assert len(train) == summary["splits"]["train"]["examples"] > 0
    assert len(valid) == summary["splits"]["validation"]["examples"] > 0
    assert len(train) + len(valid) == 1500  # micro's max_examples
    ids, types = train.get(np.arange(min(50, len(train))))
    assert (ids[:, 0] == CLS).all()
    lengths = (ids != PAD).sum(1)
    assert all(ids[i, lengths[i] - 1] == SEP for i in range(len(ids)))
    assert ((types == 0) | (types == 1)).all()
    assert (out / "tokenizer" / "tokenizer.json").exists()


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
