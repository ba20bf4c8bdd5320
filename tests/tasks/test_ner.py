"""NER scoring against hand-computed cases, and training/prediction on a tiny random ELECTRA."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from electra.tasks.conll import Entity, Sentence, entity_metrics, entity_spans, label_list, read_conll, token_accuracy
from electra.tasks.ner import encode, first_piece_positions, predict_ner, train_ner

ROOT = Path(__file__).resolve().parents[2]
NER = ROOT / "data" / "ner" / "wnut17"
VOCAB = ROOT / "data" / "vocab" / "bert-base-uncased-vocab.txt"

needs_data = pytest.mark.skipif(
    not NER.is_dir() or not VOCAB.is_file(), reason="data/ not present (dvc pull)"
)


# --------------------------------------------------------------------------- chunks


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        (["B-person", "I-person", "O", "B-location"], [("person", 0, 2), ("location", 3, 4)]),
        # an I- after O starts an entity (IOB1-style input is read as conlleval does)
        (["O", "I-person", "I-person"], [("person", 1, 3)]),
        (["I-person", "O"], [("person", 0, 1)]),
        # an I- after another type starts a new entity of its own type
        (["B-person", "I-location", "I-location"], [("person", 0, 1), ("location", 1, 3)]),
        # adjacent entities of the same type stay apart
        (["B-person", "B-person", "I-person"], [("person", 0, 1), ("person", 1, 3)]),
        # types may contain a hyphen
        (["B-creative-work", "I-creative-work", "B-group"], [("creative-work", 0, 2), ("group", 2, 3)]),
        (["O", "O"], []),
        ([], []),
    ],
)
def test_entity_spans(tags, spans):
    assert entity_spans(tags) == [Entity(*s) for s in spans]


# --------------------------------------------------------------------------- entity metrics


def _overall(m):
    return m["correct"], m["predicted"], m["gold"], m["precision"], m["recall"], m["f1"]


def test_exact_match():
    gold = [["B-person", "I-person", "O", "B-location"], ["O", "B-group"]]
    m = entity_metrics(gold, gold)
    assert _overall(m) == (3, 3, 3, 1.0, 1.0, 1.0)
    assert m["token_accuracy"] == 1.0


def test_partial_span_is_wrong_for_precision_and_recall():
    gold = [["B-person", "I-person", "O", "B-location"]]
    pred = [["B-person", "O", "O", "B-location"]]  # person cut short: neither found nor correct
    assert _overall(entity_metrics(gold, pred)) == (1, 2, 2, 0.5, 0.5, 0.5)
    # a span too long is just as wrong
    too_long = entity_metrics([["B-person", "O"]], [["B-person", "I-person"]])
    assert _overall(too_long) == (0, 1, 1, 0.0, 0.0, 0.0)


def test_wrong_type_is_wrong():
    m = entity_metrics([["O", "B-person", "I-person"]], [["O", "B-location", "I-location"]])
    assert _overall(m) == (0, 1, 1, 0.0, 0.0, 0.0)
    assert m["per_type"]["person"] == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "correct": 0, "predicted": 0,
    }
    assert m["per_type"]["location"]["support"] == 0
    assert m["per_type"]["location"]["predicted"] == 1


def test_i_after_o_starts_an_entity():
    gold = [["O", "B-person", "I-person", "O"]]
    pred = [["O", "I-person", "I-person", "O"]]  # same span and type, only the first prefix differs
    m = entity_metrics(gold, pred)
    assert _overall(m) == (1, 1, 1, 1.0, 1.0, 1.0)
    assert m["token_accuracy"] == 0.75  # the tags themselves differ at one word


def test_i_after_another_type_starts_an_entity():
    gold = [["B-person", "I-location"]]
    pred = [["B-person", "B-location"]]
    assert _overall(entity_metrics(gold, pred)) == (2, 2, 2, 1.0, 1.0, 1.0)


def test_adjacent_entities_of_one_type():
    gold = [["B-person", "B-person", "O"]]
    pred = [["B-person", "I-person", "O"]]  # one merged entity matches neither gold one
    assert _overall(entity_metrics(gold, pred)) == (0, 1, 2, 0.0, 0.0, 0.0)
    pred = [["B-person", "B-person", "O"]]
    assert _overall(entity_metrics(gold, pred)) == (2, 2, 2, 1.0, 1.0, 1.0)


def test_all_o_predictions_give_zero_precision_without_error():
    gold = [["B-person", "I-person", "O"], ["B-group"]]
    pred = [["O", "O", "O"], ["O"]]
    m = entity_metrics(gold, pred)
    assert _overall(m) == (0, 0, 2, 0.0, 0.0, 0.0)
    assert m["per_type"]["person"]["precision"] == 0.0
    assert m["token_accuracy"] == 0.25
    # nothing to find and nothing found: still defined
    m = entity_metrics([["O"]], [["O"]])
    assert _overall(m) == (0, 0, 0, 0.0, 0.0, 0.0)
    assert m["per_type"] == {}
    assert _overall(entity_metrics([], [])) == (0, 0, 0, 0.0, 0.0, 0.0)


def test_per_type_and_per_sentence_numbers():
    gold = [
        ["B-person", "I-person", "O", "B-location"],
        ["B-location", "O", "B-product"],
        ["O", "O"],
    ]
    pred = [
        ["B-person", "I-person", "O", "B-person"],
        ["B-location", "O", "O"],
        ["B-product", "O"],
    ]
    # gold: person(s1 0-2), location(s1 3), location(s2 0), product(s2 2)      -> 4
    # pred: person(s1 0-2), person(s1 3),   location(s2 0), product(s3 0)      -> 4
    # correct: person(s1 0-2), location(s2 0)                                  -> 2
    m = entity_metrics(gold, pred)
    assert _overall(m) == (2, 4, 4, 0.5, 0.5, 0.5)
    assert m["tokens"] == 9
    assert m["token_accuracy"] == pytest.approx(6 / 9)
    assert m["per_sentence"] == [(1, 2, 2), (1, 1, 2), (0, 1, 0)]
    per_type = m["per_type"]
    assert list(per_type) == ["location", "person", "product"]
    assert per_type["person"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1, "correct": 1, "predicted": 2}
    )
    assert per_type["location"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2, "correct": 1, "predicted": 1}
    )
    assert per_type["product"] == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "correct": 0, "predicted": 1}
    )
    # The per-sentence tallies are what a bootstrap resamples: their sums give the totals.
    assert tuple(map(sum, zip(*m["per_sentence"], strict=True))) == (2, 4, 4)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="sentence 0"):
        entity_metrics([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="2 gold sentences but 1"):
        entity_metrics([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="X-person"):
        entity_metrics([["X-person"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 1"):
        token_accuracy([["O"], ["O"]], [["O"], []])


# --------------------------------------------------------------------------- prediction (exact, fake model)


class PieceIdModel(torch.nn.Module):
    """A stand-in token classifier whose answer at each piece is ``input_id % num_labels``.

    Its outputs are exact (no float ties), so prediction can be checked piece by piece.
    """

    def __init__(self, labels):
        super().__init__()
        self.config = SimpleNamespace(id2label=dict(enumerate(labels)))
        self.num_labels = len(labels)
        self.calls: list[tuple[int, int]] = []

    def forward(self, input_ids, attention_mask, token_type_ids):
        self.calls.append(tuple(input_ids.shape))
        return SimpleNamespace(logits=torch.nn.functional.one_hot(input_ids % self.num_labels).float())


@needs_data
def test_predict_reads_first_pieces_in_input_order():
    from electra.data.wordpiece import tokenizer_from_vocab

    tokenizer = tokenizer_from_vocab(VOCAB)
    labels = ["O", "B-a", "B-b", "I-a", "I-b"]
    model = PieceIdModel(labels).train()
    sentences = [
        Sentence(("unbelievably", "long", "words", "here"), ("O",) * 4),
        Sentence(("Hi", "\ufe0f", "there"), ("O",) * 3),  # the middle word has no piece
        Sentence(("one",), ("O",)),
        Sentence(tuple(f"w{i}" for i in range(20)), ("O",) * 20),  # cut off at 8 pieces
    ]
    predictions = predict_ner(model, tokenizer, sentences, batch_size=2, max_seq_length=8, device="cpu")
    assert model.training  # the caller's mode is restored
    assert len(model.calls) == 2  # two batches of two, each padded to its own longest row
    expected = []
    for sentence, feature in zip(sentences, encode(tokenizer, sentences, None, 8), strict=True):
        tags = ["O"] * len(sentence.tokens)
        for word, position in first_piece_positions(feature["word_ids"]).items():
            tags[word] = labels[feature["input_ids"][position] % len(labels)]
        expected.append(tags)
    assert predictions == expected
    assert [len(p) for p in predictions] == [4, 3, 1, 20]
    assert predictions[1][1] == "O"
    # "w0".."w19" split into two pieces each: only w0..w2 fit in 8 pieces with [CLS]/[SEP]
    assert predictions[3][3:] == ["O"] * 17
    assert predict_ner(model, tokenizer, [], batch_size=2, max_seq_length=8, device="cpu") == []


# --------------------------------------------------------------------------- training end to end


class RecordingLogger:
    def __init__(self):
        self.calls: list[tuple[dict, int | None]] = []

    def log_metrics(self, metrics, step=None):
        self.calls.append((dict(metrics), step))

    def log_artifacts(self, local_dir, artifact_path):
        return None


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory) -> Path:
    from transformers import ElectraConfig, ElectraForPreTraining

    from electra.data.wordpiece import tokenizer_from_vocab

    tokenizer = tokenizer_from_vocab(VOCAB)
    config = ElectraConfig(
        vocab_size=len(tokenizer), embedding_size=32, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )
    path = tmp_path_factory.mktemp("ner-pretrain") / "discriminator"
    torch.manual_seed(0)
    ElectraForPreTraining(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


LR = 1e-3


@pytest.fixture(scope="module")
def trained(pretrained_dir, tmp_path_factory):
    train = read_conll(NER / "wnut17train.conll")[:64]
    labels = label_list(read_conll(NER / "wnut17train.conll"))
    out = tmp_path_factory.mktemp("ner-out")
    logger = RecordingLogger()
    result = train_ner(
        pretrained_dir, train, labels, out,
        lr=LR, layer_decay=0.8, epochs=3, batch_size=16, max_seq_length=64, warmup_fraction=0.1,
        weight_decay=0.01, adam_eps=1e-6, dropout=0.1, seed=0, device="cpu", logger=logger,
    )
    return result, labels, out, logger


@needs_data
def test_train_ner_runs_and_saves_a_loadable_model(trained):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    result, labels, out, _ = trained
    assert result["train_sentences"] == 64
    assert result["skipped_sentences"] == 0
    assert result["steps"] == 12  # 64 / 16 = 4 steps per epoch, 3 epochs
    assert len(result["losses"]) == 12 and all(math.isfinite(x) for x in result["losses"])
    assert result["train_loss"] == pytest.approx(sum(result["losses"][-4:]) / 4)
    assert result["labels"] == labels
    assert result["seconds"] > 0
    # The head starts from chance over 13 labels; most words are O, which it learns fast.
    assert result["losses"][0] == pytest.approx(math.log(len(labels)), rel=0.2)
    assert result["train_loss"] < result["losses"][0]

    model_dir = Path(result["model_dir"])
    assert model_dir == out / "model"
    assert [p.name for p in out.iterdir()] == ["model"]  # no temporary folder left behind
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    assert type(model).__name__ == "ElectraForTokenClassification"
    assert model.config.id2label == dict(enumerate(labels))
    assert model.config.label2id == {label: i for i, label in enumerate(labels)}
    assert model.config.num_labels == len(labels)
    assert AutoTokenizer.from_pretrained(model_dir).is_fast


@needs_data
def test_train_ner_logs_loss_and_scheduled_lr(trained):
    _, _, _, logger = trained
    # LOG_EVERY is 10: a log at step 10 and one at the last step.
    assert [step for _, step in logger.calls] == [10, 12]
    assert all(set(m) == {"ner.train_loss", "ner.lr"} for m, _ in logger.calls)
    # One warm-up step (10% of 12), then linear decay: the head's lr used at step s
    # (1-based) is LR * (12 - (s - 1)) / (12 - 1).
    assert logger.calls[0][0]["ner.lr"] == pytest.approx(LR * 3 / 11)
    assert logger.calls[1][0]["ner.lr"] == pytest.approx(LR * 1 / 11)


@needs_data
def test_predict_ner_tags_every_dev_word(trained):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    result, labels, _, _ = trained
    model = AutoModelForTokenClassification.from_pretrained(result["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(result["model_dir"])
    dev = read_conll(NER / "emerging.dev.conll")[:100]
    predictions = predict_ner(model, tokenizer, dev, batch_size=32, max_seq_length=64, device="cpu")
    assert [len(p) for p in predictions] == [len(s.tokens) for s in dev]
    assert {tag for p in predictions for tag in p} <= set(labels)
    metrics = entity_metrics([s.tags for s in dev], predictions)
    assert 0.0 <= metrics["f1"] <= 1.0 and len(metrics["per_sentence"]) == 100


@needs_data
def test_empty_log_prefix_gives_bare_metric_names(pretrained_dir, tmp_path):
    logger = RecordingLogger()
    sentences = read_conll(NER / "emerging.dev.conll")[:8]
    train_ner(
        pretrained_dir, sentences, label_list(sentences), tmp_path,
        lr=LR, layer_decay=0.8, epochs=1, batch_size=8, max_seq_length=32, warmup_fraction=0.0,
        weight_decay=0.0, adam_eps=1e-6, dropout=0.0, seed=0, device="cpu", logger=logger, log_prefix="",
    )
    assert [(set(m), step) for m, step in logger.calls] == [({"train_loss", "lr"}, 1)]


def test_train_ner_refuses_empty_input(tmp_path):
    with pytest.raises(ValueError, match="no training sentences"):
        train_ner(
            tmp_path, [], ["O"], tmp_path / "out",
            lr=LR, layer_decay=0.8, epochs=1, batch_size=2, max_seq_length=16, warmup_fraction=0.1,
            weight_decay=0.0, adam_eps=1e-6, dropout=0.1, seed=0, device="cpu", logger=None,
        )
