"""SQuAD-format reading, the article split and QA features, on the real XQuAD-en file."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from electra.tasks.qa import collate, prepare_features
from electra.tasks.squad import QAExample, read_squad, split_by_article

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
XQUAD = DATA / "qa" / "xquad" / "xquad.en.json"
VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"

pytestmark = pytest.mark.skipif(
    not XQUAD.is_file() or not VOCAB.is_file(), reason="data/ not present (dvc pull)"
)


@pytest.fixture(scope="module")
def xquad() -> list[QAExample]:
    return read_squad(XQUAD)


@pytest.fixture(scope="module")
def tokenizer():
    from electra.data.wordpiece import tokenizer_from_vocab

    return tokenizer_from_vocab(VOCAB)


def _squad(*articles: dict, version: str = "1.1") -> dict:
    return {"version": version, "data": list(articles)}


def _article(title: str, context: str, *qas: dict) -> dict:
    return {"title": title, "paragraphs": [{"context": context, "qas": list(qas)}]}


def _qa(qid: str, question: str, answers: list[tuple[str, int]], **extra) -> dict:
    return {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers], **extra}


def _write(tmp_path: Path, data, name: str = "squad.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# ------------------------------------------------------------------------- reading


def test_xquad_counts(xquad):
    assert len(xquad) == 1190
    assert len({ex.title for ex in xquad}) == 48
    assert len({(ex.title, ex.context) for ex in xquad}) == 240
    assert len({ex.id for ex in xquad}) == 1190
    # XQuAD is SQuAD v1.1: every question answerable, one answer each.
    assert not any(ex.is_impossible for ex in xquad)
    assert all(len(ex.answers) == 1 for ex in xquad)
    first = xquad[0]
    assert first.title == "Super_Bowl_50"
    assert first.id == "56beb4343aeaaa14008c925b"
    assert first.answers == (("308", 34),)


def test_every_answer_is_at_its_offset(xquad):
    for ex in xquad:
        for text, start in ex.answers:
            assert ex.context[start : start + len(text)] == text, ex.id
    assert xquad[0].answer_texts == ["308"]


def test_examples_are_frozen(xquad):
    with pytest.raises(AttributeError):
        xquad[0].question = "changed"  # type: ignore[misc]


def test_split_by_article_is_disjoint_deterministic_and_complete(xquad):
    train, dev = split_by_article(xquad, dev_fraction=0.25, seed=13)
    train_titles = {ex.title for ex in train}
    dev_titles = {ex.title for ex in dev}
    assert not train_titles & dev_titles
    assert len(dev_titles) == 12  # round(0.25 * 48)
    assert len(train) + len(dev) == len(xquad)
    assert sorted(ex.id for ex in train + dev) == sorted(ex.id for ex in xquad)
    # Input order is kept on both sides.
    position = {ex.id: i for i, ex in enumerate(xquad)}
    assert [position[ex.id] for ex in train] == sorted(position[ex.id] for ex in train)

    again_train, again_dev = split_by_article(xquad, dev_fraction=0.25, seed=13)
    assert [ex.id for ex in again_train] == [ex.id for ex in train]
    assert [ex.id for ex in again_dev] == [ex.id for ex in dev]
    # The draw depends on the set of titles, not on the order of the examples.
    _, reversed_dev = split_by_article(list(reversed(xquad)), dev_fraction=0.25, seed=13)
    assert {ex.title for ex in reversed_dev} == dev_titles
    _, other_dev = split_by_article(xquad, dev_fraction=0.25, seed=14)
    assert {ex.title for ex in other_dev} != dev_titles


def test_split_edge_fractions(xquad):
    train, dev = split_by_article(xquad, dev_fraction=0.0, seed=0)
    assert len(train) == len(xquad) and dev == []
    # A tiny fraction still puts one article in dev (and never all of them in dev).
    _, dev = split_by_article(xquad, dev_fraction=0.001, seed=0)
    assert len({ex.title for ex in dev}) == 1
    train, _ = split_by_article(xquad, dev_fraction=0.999, seed=0)
    assert len({ex.title for ex in train}) == 1
    with pytest.raises(ValueError, match="dev_fraction"):
        split_by_article(xquad, dev_fraction=1.5, seed=0)


def test_not_json(tmp_path):
    path = _write(tmp_path, "{not json", "broken.json")
    with pytest.raises(ValueError, match=r"broken\.json.*not valid JSON"):
        read_squad(path)


def test_missing_keys(tmp_path):
    path = _write(tmp_path, {"version": "1.1"}, "nodata.json")
    with pytest.raises(ValueError, match=r"nodata\.json.*missing key 'data'"):
        read_squad(path)

    no_context = _squad({"title": "Art", "paragraphs": [{"qas": []}]})
    with pytest.raises(ValueError, match=r"squad\.json.*'Art'.*missing key 'context'"):
        read_squad(_write(tmp_path, no_context))

    no_question = _squad(_article("Art", "Some text.", {"id": "q-7", "answers": []}))
    with pytest.raises(ValueError, match=r"squad\.json.*'q-7'.*missing key 'question'"):
        read_squad(_write(tmp_path, no_question))

    string_start = {"id": "q-8", "question": "?", "answers": [{"text": "Some", "answer_start": "0"}]}
    bad_start = _squad(_article("Art", "Some text.", string_start))
    with pytest.raises(ValueError, match=r"'q-8'.*'answer_start' should be int"):
        read_squad(_write(tmp_path, bad_start))


def test_answer_not_at_its_offset(tmp_path):
    data = _squad(_article("Paris", "Paris is the capital of France.", _qa("q-off", "Capital of?", [("France", 3)])))
    path = _write(tmp_path, data, "misaligned.json")
    with pytest.raises(ValueError, match=r"misaligned\.json.*'Paris'.*'q-off'.*not at answer_start 3"):
        read_squad(path)


def test_duplicate_question_ids(tmp_path):
    context = "Paris is the capital of France."
    data = _squad(
        _article("Paris", context, _qa("q-dup", "What city?", [("Paris", 0)])),
        _article("France", context, _qa("q-dup", "What country?", [("France", 24)])),
    )
    with pytest.raises(ValueError, match=r"squad\.json.*'q-dup'.*duplicate question id"):
        read_squad(_write(tmp_path, data))


def test_v11_question_without_answers(tmp_path):
    data = _squad(_article("Paris", "Paris is the capital of France.", _qa("q-none", "Why?", [])))
    with pytest.raises(ValueError, match=r"squad\.json.*'q-none'.*v1\.1 question with no answers"):
        read_squad(_write(tmp_path, data))


def test_v2_impossible_question_parses(tmp_path):
    context = "Paris is the capital of France."
    data = _squad(
        _article(
            "Paris",
            context,
            _qa("q-ans", "What is the capital of France?", [("Paris", 0)], is_impossible=False),
            _qa("q-imp", "What is the capital of Spain?", [], is_impossible=True, plausible_answers=[]),
        ),
        version="v2.0",
    )
    answerable, impossible = read_squad(_write(tmp_path, data))
    assert answerable == QAExample("q-ans", "Paris", context, "What is the capital of France?", (("Paris", 0),), False)
    assert impossible.is_impossible and impossible.answers == ()
    # An unanswerable question that still lists answers is contradictory.
    data["data"][0]["paragraphs"][0]["qas"][1]["answers"] = [{"text": "Paris", "answer_start": 0}]
    with pytest.raises(ValueError, match=r"'q-imp'.*is_impossible but has 1 answers"):
        read_squad(_write(tmp_path, data))


# ------------------------------------------------------------------------ features


def _context_offsets(feature) -> list[tuple[int, int]]:
    return [off for off in feature["offset_mapping"] if off is not None]


def test_windows_overlap_by_doc_stride(tokenizer, xquad):
    example = max(xquad, key=lambda ex: len(ex.context))  # a context several windows long
    max_seq_length, doc_stride = 64, 16
    features = prepare_features(tokenizer, [example], max_seq_length, doc_stride, training=False)
    assert len(features) >= 5
    assert all(f["example_index"] == 0 for f in features)
    assert all(len(f["input_ids"]) <= max_seq_length for f in features)
    windows = [_context_offsets(f) for f in features]
    for before, after in itertools.pairwise(windows):
        assert before[-doc_stride:] == after[:doc_stride]
    # Together the windows read the whole context, once each apart from the overlaps.
    whole = prepare_features(tokenizer, [example], 4096, 0, training=False)
    assert len(whole) == 1
    everything = _context_offsets(whole[0])
    stitched = windows[0] + [off for w in windows[1:] for off in w[doc_stride:]]
    assert stitched == everything
    # Question and special tokens carry no offsets; [CLS] opens every window.
    cls_id = tokenizer.cls_token_id
    for f in features:
        assert f["input_ids"][0] == cls_id and f["offset_mapping"][0] is None
        assert "start_positions" not in f


def test_training_positions_map_back_to_the_answer(tokenizer, xquad):
    examples = xquad
    features = prepare_features(tokenizer, examples, 96, 32, training=True)
    inside = cut_mid_token = 0
    for f in features:
        ex = examples[f["example_index"]]
        text, start_char = ex.answers[0]
        start, end = f["start_positions"], f["end_positions"]
        offsets = f["offset_mapping"]
        context = _context_offsets(f)
        in_window = context[0][0] <= start_char and start_char + len(text) <= context[-1][1]
        if not in_window:
            assert (start, end) == (0, 0), ex.id
            continue
        inside += 1
        assert 0 < start <= end and offsets[start] is not None and offsets[end] is not None
        span = ex.context[offsets[start][0] : offsets[end][1]]
        if start_char in {s for s, _ in context} and start_char + len(text) in {e for _, e in context}:
            assert span == text, ex.id
        else:
            # A gold answer cut mid-token (XQuAD has one: "... (2,70"): the smallest covering span.
            assert text in span and len(span) - len(text) < 10, (ex.id, span, text)
            cut_mid_token += 1
    assert inside >= len(examples)  # each answer lies wholly in at least one window
    assert any(f["start_positions"] == 0 for f in features)  # and some windows miss it
    assert cut_mid_token <= 3


def test_impossible_question_points_at_cls(tokenizer):
    ex = QAExample("q", "t", "Paris is the capital of France.", "Capital of Spain?", (), True)
    (feature,) = prepare_features(tokenizer, [ex], 64, 16, training=True)
    assert (feature["start_positions"], feature["end_positions"]) == (0, 0)


def test_long_question_is_cut_and_bad_lengths_are_refused(tokenizer):
    question = " ".join(["why"] * 100) + "?"
    ex = QAExample("q-long", "t", "Paris is the capital of France.", question, (("Paris", 0),))
    (feature,) = prepare_features(tokenizer, [ex], 128, 16, max_query_length=10, training=True)
    assert feature["token_type_ids"].count(0) == 10 + 2  # [CLS] + 10 question tokens + [SEP]
    assert (feature["start_positions"], feature["end_positions"]) == (12, 12)
    with pytest.raises(ValueError, match=r"'q-long'.*doc_stride 16"):
        prepare_features(tokenizer, [ex], 24, 16, max_query_length=10, training=True)


def test_collate_pads_to_the_longest(tokenizer, xquad):
    features = prepare_features(tokenizer, xquad[:4], 384, 128, training=True)
    batch = collate(features, pad_id=tokenizer.pad_token_id)
    width = max(len(f["input_ids"]) for f in features)
    assert batch["input_ids"].shape == (len(features), width)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        assert batch["attention_mask"][row].sum().item() == n
        assert batch["input_ids"][row, :n].tolist() == f["input_ids"]
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
    assert batch["start_positions"].tolist() == [f["start_positions"] for f in features]
    eval_batch = collate(prepare_features(tokenizer, xquad[:4], 384, 128, training=False), pad_id=0)
    assert "start_positions" not in eval_batch
