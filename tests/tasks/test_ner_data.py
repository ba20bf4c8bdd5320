"""Reading the WNUT-17 CoNLL files and aligning word labels with word pieces."""

from __future__ import annotations

from pathlib import Path

import pytest

from electra.tasks.conll import IGNORE_INDEX, Sentence, label_list, read_conll
from electra.tasks.ner import collate, encode

ROOT = Path(__file__).resolve().parents[2]
NER = ROOT / "data" / "ner" / "wnut17"
VOCAB = ROOT / "data" / "vocab" / "bert-base-uncased-vocab.txt"
FILES = {"train": "wnut17train.conll", "dev": "emerging.dev.conll", "test": "emerging.test.annotated"}
WNUT_TYPES = ["corporation", "creative-work", "group", "location", "person", "product"]
# U+FE0F (emoji variation selector): a word of its own in the dev and test files, and
# the uncased BERT normaliser strips it (it is a combining mark), leaving no piece.
VARIATION_SELECTOR = "\ufe0f"

pytestmark = pytest.mark.skipif(
    not NER.is_dir() or not VOCAB.is_file(), reason="data/ not present (dvc pull)"
)


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[Sentence]]:
    return {split: read_conll(NER / name) for split, name in FILES.items()}


@pytest.fixture(scope="module")
def tokenizer():
    from electra.data.wordpiece import tokenizer_from_vocab

    return tokenizer_from_vocab(VOCAB)


# --------------------------------------------------------------------------- reading


def test_sentence_counts(corpus):
    assert {split: len(s) for split, s in corpus.items()} == {"train": 3394, "dev": 1009, "test": 1287}


def test_sentences_are_clean(corpus):
    # The training file separates sentences with lines holding only a tab: none of
    # them may turn into an empty token, and no tag keeps stray whitespace.
    for sentences in corpus.values():
        for s in sentences:
            assert s.tokens and len(s.tokens) == len(s.tags)
            assert all(t.strip() for t in s.tokens)
            assert all(tag == tag.strip() for tag in s.tags)
    first = corpus["train"][0]
    assert first.tokens[:3] == ("@paulwalk", "It", "'s")
    assert first.tags[14:17] == ("B-location", "I-location", "I-location")  # Empire State Building
    # The tab-only line after "last evening ." ends the first sentence.
    assert first.tokens[-3:] == ("last", "evening", ".")
    assert corpus["train"][1].tokens[:3] == ("From", "Green", "Newsfeed")


def test_label_list(corpus):
    expected = ["O", *[f"B-{t}" for t in WNUT_TYPES], *[f"I-{t}" for t in WNUT_TYPES]]
    assert label_list(corpus["train"]) == expected
    assert label_list(corpus["dev"]) == expected
    assert label_list(list(reversed(corpus["train"]))) == expected  # order of the data does not matter


def test_label_list_pairs_every_type_and_always_has_o():
    sentences = [Sentence(["a", "b"], ["B-zeta", "I-alpha"])]  # lists are stored as tuples
    assert sentences[0].tokens == ("a", "b")
    assert label_list(sentences) == ["O", "B-alpha", "B-zeta", "I-alpha", "I-zeta"]
    assert label_list([]) == ["O"]


def test_tolerated_formatting(tmp_path):
    path = tmp_path / "ok.conll"
    # BOM, CRLF, a tab-only separator, doubled blank lines, trailing spaces after a tag,
    # and a U+2028 inside a token (str.splitlines would split the line there).
    path.write_bytes(
        "\ufeffNew\tB-location\r\nYork\tI-location \r\n\t\r\n\n\nhi\u2028there\tO\r\n".encode()
    )
    assert read_conll(path) == [
        Sentence(("New", "York"), ("B-location", "I-location")),
        Sentence(("hi\u2028there",), ("O",)),
    ]


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ("a\tO\nb\n", 2, "no tag column"),
        ("a\tO\n\nb\t\n", 3, "no tag column"),
        ("a\tO\nb\tB-person\n\nc\tX-person\n", 4, "not O, B-<type> or I-<type>"),
        ("a\tB-\n", 1, "not O, B-<type> or I-<type>"),
        ("a\tb-person\n", 1, "not O, B-<type> or I-<type>"),
        ("a\tO\n\tO\n", 2, "empty token"),
        ("", 1, "no sentences"),
        ("\n\t\n\n", 3, "no sentences"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path, content, line, reason):
    path = tmp_path / "bad.conll"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_conll(path)
    message = str(info.value)
    assert str(path) in message
    assert f"line {line}:" in message
    assert reason in message


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.conll"
    path.write_bytes(b"a\tO\ncaf\xe9\tO\n")
    with pytest.raises(ValueError, match=r"latin1\.conll, line 2: not valid UTF-8"):
        read_conll(path)


# --------------------------------------------------------------------------- alignment


def _check_alignment(tokenizer, sentences, label2id, max_seq_length):
    """Every word with pieces gets one label, on its first piece; returns (words cut, zero-piece words)."""
    normalize = tokenizer.backend_tokenizer.normalizer.normalize_str
    features = encode(tokenizer, sentences, label2id, max_seq_length)
    assert len(features) == len(sentences)
    truncated = zero_piece = 0
    for sentence, f in zip(sentences, features, strict=True):
        ids, labels, word_ids = f["input_ids"], f["labels"], f["word_ids"]
        assert len(ids) == len(labels) == len(word_ids) <= max_seq_length
        assert labels[0] == labels[-1] == IGNORE_INDEX  # [CLS] ... [SEP]
        labelled = [p for p, label in enumerate(labels) if label != IGNORE_INDEX]
        # one labelled piece per word seen, in word order, each the word's first piece
        assert [word_ids[p] for p in labelled] == sorted(set(word_ids) - {-1})
        for p in labelled:
            word = word_ids[p]
            assert p == word_ids.index(word)
            assert labels[p] == label2id[sentence.tags[word]]
            # The piece decodes back to the start of its (normalised) word.
            piece = tokenizer.convert_ids_to_tokens(ids[p])
            assert not piece.startswith("##")
            assert piece == "[UNK]" or normalize(sentence.tokens[word]).lstrip().startswith(piece)
        seen = set(word_ids) - {-1}
        missing = [w for w in range(len(sentence.tokens)) if w not in seen]
        cut = len(ids) == max_seq_length
        for w in missing:
            if cut and w > max(seen, default=-1):
                truncated += 1
            else:
                # not truncated: the word really has no piece of its own
                assert tokenizer(sentence.tokens[w], add_special_tokens=False)["input_ids"] == []
                zero_piece += 1
    return truncated, zero_piece


def test_alignment_on_real_sentences(corpus, tokenizer):
    labels = label_list(corpus["train"])
    label2id = {label: i for i, label in enumerate(labels)}
    # Long enough for every sentence: nothing truncated, and the dev file's lone
    # U+FE0F words (four of them) are the only words without a piece.
    assert _check_alignment(tokenizer, corpus["train"], label2id, 512) == (0, 0)
    assert _check_alignment(tokenizer, corpus["dev"], label2id, 512) == (0, 4)
    # Short: many sentences lose their tail, never their alignment.
    truncated, _ = _check_alignment(tokenizer, corpus["dev"], label2id, 16)
    assert truncated > 1000


def test_zero_piece_word_does_not_shift_labels(corpus, tokenizer):
    label2id = {"O": 0, "B-location": 1, "I-location": 2, "B-person": 3}
    sentence = Sentence(("Paris", VARIATION_SELECTOR, "Hilton"), ("B-location", "O", "B-person"))
    f = encode(tokenizer, [sentence], label2id, 32)[0]
    assert f["word_ids"] == [-1, 0, 2, -1]
    assert f["labels"] == [IGNORE_INDEX, 1, 3, IGNORE_INDEX]
    # The same in a real dev sentence: "❤ ️ enjoyed ... SG TRY" keeps SG's B-creative-work.
    real = next(s for s in corpus["dev"] if VARIATION_SELECTOR in s.tokens and "SG" in s.tokens)
    f = encode(tokenizer, [real], {t: i for i, t in enumerate(sorted(set(real.tags)))}, 128)[0]
    sg = real.tokens.index("SG")
    position = f["word_ids"].index(sg)
    assert tokenizer.convert_ids_to_tokens(f["input_ids"][position]) == "sg"
    assert f["labels"][position] == sorted(set(real.tags)).index("B-creative-work")


def test_unknown_tag_and_slow_tokenizer_are_refused(tokenizer):
    with pytest.raises(ValueError, match="sentence 1, word 0: tag 'B-person'"):
        encode(tokenizer, [Sentence(("x",), ("O",)), Sentence(("Ann",), ("B-person",))], {"O": 0}, 16)
    with pytest.raises(ValueError, match="max_seq_length"):
        encode(tokenizer, [Sentence(("Ann",), ("O",))], {"O": 0}, 2)

    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast tokenizer"):
        encode(Slow(), [Sentence(("Ann",), ("O",))], {"O": 0}, 16)


def test_collate_pads_to_the_longest(tokenizer):
    sentences = [
        Sentence(("hi",), ("O",)),
        Sentence(("Ann", "lives", "in", "Oslo"), ("B-p", "O", "O", "B-l")),
    ]
    label2id = {"O": 0, "B-p": 1, "B-l": 2}
    features = encode(tokenizer, sentences, label2id, 32)
    batch = collate(features, pad_id=tokenizer.pad_token_id)
    width = max(len(f["input_ids"]) for f in features)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        k: (2, width) for k in ("input_ids", "token_type_ids", "attention_mask", "labels")
    }
    n = len(features[0]["input_ids"])
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (width - n)
    assert batch["input_ids"][0, n:].tolist() == [tokenizer.pad_token_id] * (width - n)
    assert batch["labels"][0].tolist() == features[0]["labels"] + [IGNORE_INDEX] * (width - n)
    assert batch["labels"][1].tolist() == features[1]["labels"]
    # Without labels (prediction), there is no labels tensor.
    unlabelled = encode(tokenizer, sentences, None, 32)
    assert "labels" not in collate(unlabelled, pad_id=0)
