"""CoNLL-format NER data and its entity scores, as ``conlleval`` computes them.

:func:`read_conll` reads ``token<TAB>tag`` files with BIO tags (WNUT-17 here) into
:class:`Sentence` records, refusing malformed lines with the file and line named;
:func:`label_list` is the label set a model is trained over.

Entity scores follow the CoNLL-2000 ``conlleval`` script: entities are chunks of
BIO tags (:func:`entity_spans`), and a predicted entity counts only if both its span
and its type match a gold entity exactly (:func:`entity_metrics`).

The model side (word-piece alignment, training, prediction) is :mod:`electra.tasks.ner`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

IGNORE_INDEX = -100
OUTSIDE = "O"
# A tag is O, or B-/I- followed by a non-empty type (types may contain "-": "creative-work").
_TAG_RE = re.compile(r"O|[BI]-\S+")


@dataclass(frozen=True)
class Sentence:
    """One sentence: its words and their BIO tags, one tag per word."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]

    def __post_init__(self) -> None:
        # Lists passed in become tuples, so a Sentence stays immutable and hashable.
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "tags", tuple(self.tags))
        if len(self.tokens) != len(self.tags):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.tags)} tags")


class Entity(NamedTuple):
    """A chunk of BIO tags: its type and the word span ``[start, end)``."""

    type: str
    start: int
    end: int


# --------------------------------------------------------------------------- reading


def is_valid_tag(tag: str) -> bool:
    """True for ``O``, ``B-<type>`` and ``I-<type>`` (the type non-empty, without spaces)."""
    return _TAG_RE.fullmatch(tag) is not None


def read_conll(path: str | Path) -> list[Sentence]:
    """Sentences of a CoNLL file: one ``token<TAB>tag`` per line, sentences separated by blank lines.

    The token is the first tab-separated column and the tag the last one. A line
    that is empty or only whitespace ends a sentence: the WNUT-17 training file
    separates its sentences with lines holding a single tab. Line endings may be
    ``\\n`` or ``\\r\\n``; a UTF-8 byte-order mark is dropped; whitespace around
    the tag is dropped (the token is kept as written).

    Raises ValueError naming the file and the 1-based line for a line without a
    tag column, an empty token, a tag that is not O/B-x/I-x, bytes that are not
    UTF-8, and a file with no sentence at all.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    # Split on "\n" only: str.splitlines() would also break lines at characters such
    # as U+2028 or U+0085, which can occur inside tweets' tokens.
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last line; it does not start another

    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    for line_no, raw_line in enumerate(lines, start=1):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}, line {line_no}: not valid UTF-8 ({exc.reason})") from None
        line = line.rstrip("\r")
        if not line.strip():
            if tokens:
                sentences.append(Sentence(tuple(tokens), tuple(tags)))
                tokens, tags = [], []
            continue
        columns = line.split("\t")
        tag = columns[-1].strip()
        if len(columns) < 2 or not tag:
            raise ValueError(f"{path}, line {line_no}: no tag column (expected token<TAB>tag): {line!r}")
        token = columns[0]
        if not token.strip():
            raise ValueError(f"{path}, line {line_no}: empty token: {line!r}")
        if not is_valid_tag(tag):
            raise ValueError(f"{path}, line {line_no}: tag {tag!r} is not O, B-<type> or I-<type>")
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append(Sentence(tuple(tokens), tuple(tags)))
    if not sentences:
        raise ValueError(f"{path}, line {max(1, len(lines))}: no sentences (the file is empty)")
    return sentences


def label_list(sentences: Sequence[Sentence]) -> list[str]:
    """The label set of ``sentences``: ``O`` first, then ``B-``/``I-`` tags sorted by name.

    Every entity type seen gets both its ``B-`` and its ``I-`` label, even if the
    data holds only one of them, so that the classifier can still output the
    other (a type seen only in one-word entities may have multi-word ones
    elsewhere). ``O`` is always included: it is the fallback tag for words the
    model does not see. The result depends only on the set of tags, not on
    their order.
    """
    types = {tag[2:] for sentence in sentences for tag in sentence.tags if tag != OUTSIDE}
    return [OUTSIDE, *sorted(f"{prefix}-{t}" for t in types for prefix in ("B", "I"))]


# --------------------------------------------------------------------------- metrics


def _split_tag(tag: str) -> tuple[str, str | None]:
    """``("B", "person")`` for ``B-person``, ``("O", None)`` for ``O``."""
    if not is_valid_tag(tag):
        raise ValueError(f"tag {tag!r} is not O, B-<type> or I-<type>")
    if tag == OUTSIDE:
        return OUTSIDE, None
    # Split at the first hyphen only: types such as "creative-work" contain one.
    return tag[0], tag[2:]


def entity_spans(tags: Sequence[str]) -> list[Entity]:
    """The entities (chunks) in one sentence's BIO tags, as ``conlleval`` reads them.

    A chunk starts at every ``B-x``, and at an ``I-x`` that follows ``O`` or a tag
    of another type (so ``O I-x`` and ``B-y I-x`` both start an ``x`` entity); it
    continues over ``I-x`` of the same type and ends before anything else.
    """
    spans: list[Entity] = []
    open_type: str | None = None
    start = 0
    for i, tag in enumerate(tags):
        prefix, tag_type = _split_tag(tag)
        if open_type is not None and (prefix != "I" or tag_type != open_type):
            spans.append(Entity(open_type, start, i))
            open_type = None
        if prefix == "B" or (prefix == "I" and open_type is None):
            open_type, start = tag_type, i
    if open_type is not None:
        spans.append(Entity(open_type, start, len(tags)))
    return spans


def precision_recall_f1(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1 in [0, 1] from counts; a ratio with a zero denominator is 0."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _check_aligned(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted ones")


def token_accuracy(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """Fraction of words whose predicted tag equals the gold tag (0 when there are no words)."""
    _check_aligned(gold, pred)
    total = sum(len(g) for g in gold)
    same = sum(
        g_tag == p_tag for g, p in zip(gold, pred, strict=True) for g_tag, p_tag in zip(g, p, strict=True)
    )
    return same / total if total else 0.0


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level precision, recall and F1, as the CoNLL-2000 ``conlleval`` script computes them.

    ``gold`` and ``pred`` hold one tag sequence per sentence, of equal lengths.
    An entity is correct only when its span and type both match a gold entity
    (see :func:`entity_spans`); entities never cross sentences. Scores are in
    [0, 1]; with no predicted entity the precision is 0 (as in ``conlleval``).

    Returns ``precision``, ``recall``, ``f1``; the counts ``correct``,
    ``predicted``, ``gold`` and ``tokens``; ``token_accuracy``; ``per_type``:
    ``{type: {precision, recall, f1, support, correct, predicted}}`` for every
    type in either side (``support`` = gold entities of that type); and
    ``per_sentence``: one ``(correct, predicted, gold)`` tuple per sentence, so
    that a bootstrap can resample sentences and recompute the scores from sums.
    """
    _check_aligned(gold, pred)
    correct_by_type: Counter[str] = Counter()
    predicted_by_type: Counter[str] = Counter()
    gold_by_type: Counter[str] = Counter()
    per_sentence: list[tuple[int, int, int]] = []
    for gold_tags, pred_tags in zip(gold, pred, strict=True):
        gold_spans = set(entity_spans(gold_tags))
        pred_spans = set(entity_spans(pred_tags))
        # Spans within one sentence never overlap, so exact-match entities are the intersection.
        correct_spans = gold_spans & pred_spans
        correct_by_type.update(e.type for e in correct_spans)
        predicted_by_type.update(e.type for e in pred_spans)
        gold_by_type.update(e.type for e in gold_spans)
        per_sentence.append((len(correct_spans), len(pred_spans), len(gold_spans)))

    per_type: dict[str, dict[str, float | int]] = {}
    for entity_type in sorted(set(gold_by_type) | set(predicted_by_type)):
        c, p, g = correct_by_type[entity_type], predicted_by_type[entity_type], gold_by_type[entity_type]
        precision, recall, f1 = precision_recall_f1(c, p, g)
        per_type[entity_type] = {
            "precision": precision, "recall": recall, "f1": f1, "support": g, "correct": c, "predicted": p,
        }
    correct = sum(s[0] for s in per_sentence)
    predicted = sum(s[1] for s in per_sentence)
    gold_total = sum(s[2] for s in per_sentence)
    precision, recall, f1 = precision_recall_f1(correct, predicted, gold_total)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "correct": correct,
        "predicted": predicted,
        "gold": gold_total,
        "tokens": sum(len(g) for g in gold),
        "token_accuracy": token_accuracy(gold, pred),
        "per_type": per_type,
        "per_sentence": per_sentence,
    }
