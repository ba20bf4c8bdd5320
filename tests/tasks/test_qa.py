"""SQuAD metrics, span decoding, and QA fine-tuning end to end on a tiny random ELECTRA (CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from electra.tasks.qa import postprocess, predict_qa, prepare_features, train_qa
from electra.tasks.squad import QAExample, exact_match, f1, normalize_answer, read_squad, split_by_article, squad_metrics

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
XQUAD = DATA / "qa" / "xquad" / "xquad.en.json"
VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"

needs_data = pytest.mark.skipif(
    not XQUAD.is_file() or not VOCAB.is_file(), reason="data/ not present (dvc pull)"
)


def _example(qid: str, answers: tuple[str, ...] = (), context: str = "", impossible: bool = False) -> QAExample:
    # Metrics only read the answer texts; the offsets are irrelevant to them.
    return QAExample(qid, "t", context, "?", tuple((text, 0) for text in answers), impossible)


# ------------------------------------------------------------------------- metrics


def test_normalize_answer():
    assert normalize_answer("The  Cat,  a dog!") == "cat dog"
    assert normalize_answer("An apple\tand\nTHE pear.") == "apple and pear"
    # Only whole words are articles.
    assert normalize_answer("theatre anthem") == "theatre anthem"
    # Punctuation goes first, so a hyphenated article is no longer a word of its own.
    assert normalize_answer("the-end") == "theend"
    assert normalize_answer("  ...  ") == ""


def test_exact_match_and_f1():
    assert exact_match("The Eiffel Tower.", "eiffel  tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert f1("The Eiffel Tower.", "eiffel tower") == 1.0
    # pred {big, red, dog}, gold {red, dog, barked}: overlap 2, P = R = 2/3.
    assert f1("the big red dog", "red dog barked") == pytest.approx(2 / 3)
    # pred {denver}, gold {denver, broncos}: P = 1, R = 1/2, F1 = 2/3.
    assert f1("Denver", "Denver Broncos") == pytest.approx(2 / 3)
    # Repeated tokens count as often as both sides have them: x x y vs x y y share x and y once.
    assert f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert f1("cat", "dog") == 0.0


def test_empty_answers_follow_squad_v2():
    assert f1("", "") == 1.0
    assert exact_match("", "") == 1.0
    assert f1("", "Paris") == 0.0
    assert f1("Paris", "") == 0.0
    # "the" normalises to nothing, so it counts as an empty answer.
    assert f1("the", "") == 1.0


def test_squad_metrics_takes_the_best_gold_answer():
    examples = [
        _example("q1", ("Denver Broncos", "Broncos")),
        _example("q2", ("Denver Broncos", "Broncos")),
        _example("q3", ("Santa Clara",)),
    ]
    predictions = {"q1": "the Broncos", "q2": "Denver", "extra": "ignored"}
    result = squad_metrics(examples, predictions)
    assert result["em_per_example"] == [1.0, 0.0, 0.0]
    # q2: max(F1 vs "Denver Broncos" = 2/3, F1 vs "Broncos" = 0); q3 is missing, scored as "".
    assert result["f1_per_example"] == pytest.approx([1.0, 2 / 3, 0.0])
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert result["count"] == 3 and result["missing"] == 1
    assert "HasAns_f1" not in result  # v1.1: no breakdown
    with pytest.raises(ValueError, match="no examples"):
        squad_metrics([], {})


def test_squad_metrics_v2_breakdown():
    examples = [
        _example("has-right", ("Paris",)),
        _example("has-wrong", ("Paris",)),
        _example("no-right", impossible=True),
        _example("no-wrong", impossible=True),
    ]
    predictions = {"has-right": "paris", "has-wrong": "", "no-right": "", "no-wrong": "Lyon"}
    result = squad_metrics(examples, predictions)
    assert result["em_per_example"] == [1.0, 0.0, 1.0, 0.0]
    assert result["exact_match"] == result["f1"] == 50.0
    assert result["HasAns_exact_match"] == result["HasAns_f1"] == 50.0
    assert result["NoAns_exact_match"] == result["NoAns_f1"] == 50.0
    assert result["HasAns_count"] == result["NoAns_count"] == 2
    assert result["missing"] == 0


# ------------------------------------------------------------------- post-processing

# A hand-made window: [CLS] q q [SEP] c0 c1 c2 c3 [SEP] over the context below.
CONTEXT = "alpha beta gamma delta"
OFFSETS = [None, None, None, None, (0, 5), (6, 10), (11, 16), (17, 22), None]


def _feature(example_index: int = 0, offsets=OFFSETS) -> dict:
    return {"input_ids": [0] * len(offsets), "example_index": example_index, "offset_mapping": list(offsets)}


def _logits(length: int, **peaks: float) -> np.ndarray:
    out = np.zeros(length, dtype=np.float32)
    for position, value in peaks.items():
        out[int(position[1:])] = value
    return out


def test_postprocess_picks_the_best_valid_span():
    ex = QAExample("q", "t", CONTEXT, "?", (("beta", 6),))
    # The highest start is a question token (1) and the highest end the last [SEP] (8): both
    # outside the context. Among context tokens, start 6 + end 5 scores most (10) but ends
    # before it starts; the best valid span is start 6 + end 7 (5 + 2): "gamma delta".
    start = _logits(9, p1=20, p6=5, p5=1)
    end = _logits(9, p8=20, p5=5.5, p6=1, p7=2)
    assert postprocess([ex], [_feature()], [start], [end]) == {"q": "gamma delta"}
    # With one-token answers only, start 5 + end 5 (6.5) beats start 6 + end 6 (6): "beta".
    assert postprocess([ex], [_feature()], [start], [end], max_answer_length=1) == {"q": "beta"}
    # n_best=1 keeps only start 6 and end 5, an invalid pair: the exhaustive fallback still answers.
    assert postprocess([ex], [_feature()], [start], [end], n_best=1) == {"q": "gamma delta"}


def test_postprocess_searches_all_windows_and_ignores_padding():
    ex = QAExample("q", "t", CONTEXT, "?", ())
    second = [None, None, None, (11, 16), (17, 22), None]  # a later window over "gamma delta"
    features = [_feature(0), _feature(0, second)]
    start = [_logits(9, p4=2), _logits(12, p4=3, p10=99)]  # position 10 is padding
    end = [_logits(9, p4=2), _logits(12, p4=3, p11=99)]
    assert postprocess([ex], features, start, end) == {"q": "delta"}


def test_postprocess_null_answer_for_v2():
    ex = QAExample("q", "t", CONTEXT, "?", (), True)
    span = {"p5": 2.0}
    # Null score 3 + 3 = 6 beats the best span (2 + 2 = 4) by 2.
    start, end = _logits(9, p0=3, **span), _logits(9, p0=3, **span)
    assert postprocess([ex], [_feature()], [start], [end], version_2=True) == {"q": ""}
    assert postprocess([ex], [_feature()], [start], [end], version_2=True, null_threshold=2.5) == {"q": "beta"}
    assert postprocess([ex], [_feature()], [start], [end], version_2=False) == {"q": "beta"}
    # The null score is the minimum over windows: one window unsure of "no answer" is enough.
    low_null = _logits(9, p0=-5)
    features = [_feature(), _feature()]
    assert postprocess([ex], features, [start, low_null], [end, low_null], version_2=True) == {"q": "beta"}


def test_postprocess_random_logits_match_brute_force():
    rng = np.random.default_rng(0)
    context = "one two three four five six seven eight"
    words = [(0, 3), (4, 7), (8, 13), (14, 18), (19, 23), (24, 27), (28, 33), (34, 39)]
    windows = [[None, None, *words[:5], None], [None, None, *words[3:], None]]
    ex = QAExample("q", "t", context, "?", ())
    features = [_feature(0, w) for w in windows]
    for _ in range(200):
        start = [rng.normal(size=len(w)).astype(np.float32) for w in windows]
        end = [rng.normal(size=len(w)).astype(np.float32) for w in windows]
        max_len = int(rng.integers(1, 4))
        best_score, best_text = -math.inf, None
        for w, offsets in enumerate(windows):
            for s in range(len(offsets)):
                for e in range(s, min(len(offsets), s + max_len)):
                    if offsets[s] is None or offsets[e] is None:
                        continue
                    score = start[w][s] + end[w][e]
                    if score > best_score:
                        best_score, best_text = score, context[offsets[s][0] : offsets[e][1]]
        n_best = int(rng.integers(1, 9))
        got = postprocess([ex], features, start, end, n_best=n_best, max_answer_length=max_len)["q"]
        assert got and got in context and len(got.split()) <= max_len
        if n_best >= 8:  # every context token is a candidate: the exact best span
            assert got == best_text


# ---------------------------------------------------------------------- end to end


class RecordingLogger:
    def __init__(self):
        self.calls: list[tuple[dict, int | None]] = []

    def log_metrics(self, metrics, step=None):
        self.calls.append((dict(metrics), step))


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory) -> Path:
    from transformers import ElectraConfig, ElectraForPreTraining

    from electra.data.wordpiece import tokenizer_from_vocab

    path = tmp_path_factory.mktemp("qa-pretrain") / "discriminator"
    config = ElectraConfig(
        vocab_size=30522, embedding_size=32, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    ElectraForPreTraining(config).save_pretrained(path)
    tokenizer_from_vocab(VOCAB).save_pretrained(path)
    return path


@needs_data
def test_train_and_predict_end_to_end(pretrained_dir, tmp_path):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    train, dev = split_by_article(read_squad(XQUAD), dev_fraction=0.2, seed=0)
    train, dev = train[:40], dev[:16]
    logger = RecordingLogger()
    settings = {"max_seq_length": 96, "doc_stride": 32}
    result = train_qa(
        pretrained_dir, train, tmp_path / "qa", lr=1e-3, layer_decay=0.8, epochs=1, batch_size=16,
        warmup_fraction=0.1, weight_decay=0.01, adam_eps=1e-6, dropout=0.1, seed=0, device="cpu",
        logger=logger, log_prefix="xquad", **settings,
    )
    model_dir = Path(result["model_dir"])
    assert model_dir == tmp_path / "qa" / "model"
    assert result["train_examples"] == 40 and result["train_features"] > 40  # long contexts: several windows
    assert result["steps"] == math.ceil(result["train_features"] / 16)
    assert math.isfinite(result["train_loss"]) and result["train_loss"] > 0 and result["seconds"] > 0
    # One log per LOG_EVERY steps plus the last step, under the given prefix.
    assert logger.calls and logger.calls[-1][1] == result["steps"]
    assert set(logger.calls[0][0]) == {"xquad.train_loss", "xquad.lr"}
    assert len(result["curve"]) == len(logger.calls) and all(math.isfinite(x) for x in result["losses"])
    assert len(result["losses"]) == result["steps"]

    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    assert type(model).__name__ == "ElectraForQuestionAnswering"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    predictions = predict_qa(model_dir, None, dev, batch_size=8, device="cpu", **settings)
    assert set(predictions) == {ex.id for ex in dev}
    # The same model in memory gives the same answers, and keeps its train/eval mode.
    model.train()
    assert predict_qa(model, tokenizer, dev, batch_size=8, device="cpu", **settings) == predictions
    assert model.training
    # Each prediction is a non-empty piece of its own context (v1.1: never the null answer),
    # at most max_answer_length (30) tokens, so at most 30 words, long.
    for ex in dev:
        assert predictions[ex.id] and predictions[ex.id] in ex.context
        assert len(predictions[ex.id].split()) <= 30

    metrics = squad_metrics(dev, predictions)
    assert metrics["count"] == len(dev) and metrics["missing"] == 0
    assert 0.0 <= metrics["exact_match"] <= metrics["f1"] <= 100.0
    assert len(metrics["em_per_example"]) == len(metrics["f1_per_example"]) == len(dev)


@needs_data
def test_collated_features_feed_the_span_head(pretrained_dir):
    """A collated batch goes straight into the model; its loss is the cross-entropy at our positions."""
    from transformers import AutoTokenizer, ElectraForQuestionAnswering

    from electra.tasks.qa import collate

    tokenizer = AutoTokenizer.from_pretrained(pretrained_dir)
    examples = read_squad(XQUAD)[:4]
    features = prepare_features(tokenizer, examples, 96, 32, training=True)
    batch = collate(features, tokenizer.pad_token_id)
    model = ElectraForQuestionAnswering.from_pretrained(pretrained_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(**batch)
    expected = (
        torch.nn.functional.cross_entropy(out.start_logits, batch["start_positions"])
        + torch.nn.functional.cross_entropy(out.end_logits, batch["end_positions"])
    ) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
