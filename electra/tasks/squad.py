"""SQuAD-format extractive QA data: reading, splitting by article, and the official metrics.

1. :func:`read_squad` reads a SQuAD v1.1 or v2.0 JSON file into :class:`QAExample`
   records, checking every answer against its context.
2. :func:`split_by_article` splits examples into train/dev by article title.
   XQuAD (the QA data shipped in ``data/qa/xquad``) is an evaluation-only set
   with no train split, so the pipeline fine-tunes on some articles and
   evaluates on the others; splitting by article keeps a paragraph's
   neighbours (same topic, same entities) out of the other side.
3. :func:`squad_metrics` scores predictions with the exact-match and F1
   definitions of the official SQuAD v1.1/v2.0 evaluation scripts.

The model side (windows, training, span decoding) is :mod:`electra.tasks.qa`.
"""

from __future__ import annotations

import collections
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class QAExample:
    """One question about one paragraph.

    ``answers`` holds ``(text, start)`` pairs, ``start`` being a character offset
    into ``context``; it is empty for an unanswerable (SQuAD v2.0) question.
    """

    id: str
    title: str
    context: str
    question: str
    answers: tuple[tuple[str, int], ...]
    is_impossible: bool = False

    @property
    def answer_texts(self) -> list[str]:
        """The gold answer strings, in file order."""
        return [text for text, _ in self.answers]


def _require(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]``, checked to exist and to have type ``kind``; ValueError otherwise."""
    # ValueError, not TypeError: a wrongly shaped file is bad input data, like a missing key.
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")  # noqa: TRY004
    if key not in obj:
        raise ValueError(f"{where}: missing key {key!r}")
    value = obj[key]
    # bool is a subclass of int in Python, but `"answer_start": true` is still bad data.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"{where}: {key!r} should be {expected}, got {type(value).__name__}")
    return value


def read_squad(path: str | Path) -> list[QAExample]:
    """Read a SQuAD v1.1 or v2.0 JSON file into examples, in file order.

    The layout is ``{"version", "data": [{"title", "paragraphs": [{"context",
    "qas": [{"id", "question", "answers": [{"text", "answer_start"}],
    "is_impossible"?}]}]}]}``; ``is_impossible`` (v2.0) defaults to false.

    Raises ``ValueError`` naming the file, the problem and where it is (article
    title, question id) when the file is not JSON, a key is missing or has the
    wrong type, an answer's text is not found at its ``answer_start`` in the
    context, a question id repeats, an answerable question has no answers (the
    only kind of question SQuAD v1.1 has), or an unanswerable one has answers.
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: SQuAD file not found (run `dvc pull` for data/qa)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not valid JSON: {exc}") from None

    # "1.1" in v1.1 files, "v2.0" in v2.0 ones; only used in messages.
    version = str(raw.get("version", "")).lstrip("v") if isinstance(raw, dict) else ""
    articles = _require(raw, "data", list, f"{p}")
    examples: list[QAExample] = []
    seen: dict[str, str] = {}  # question id -> title of the article it appeared in
    for a_idx, article in enumerate(articles):
        title = _require(article, "title", str, f"{p}: data[{a_idx}]")
        where_article = f"{p}: article {title!r}"
        paragraphs = _require(article, "paragraphs", list, where_article)
        for p_idx, paragraph in enumerate(paragraphs):
            where_par = f"{where_article}, paragraph {p_idx}"
            context = _require(paragraph, "context", str, where_par)
            for q_idx, qa in enumerate(_require(paragraph, "qas", list, where_par)):
                qid = _require(qa, "id", str, f"{where_par}, question {q_idx}")
                where_q = f"{where_article}, question {qid!r}"
                if qid in seen:
                    raise ValueError(f"{where_q}: duplicate question id (first seen in article {seen[qid]!r})")
                seen[qid] = title
                question = _require(qa, "question", str, where_q)
                impossible = _require(qa, "is_impossible", bool, where_q) if "is_impossible" in qa else False
                answers = []
                for ans_idx, answer in enumerate(_require(qa, "answers", list, where_q)):
                    where_ans = f"{where_q}, answer {ans_idx}"
                    text = _require(answer, "text", str, where_ans)
                    start = _require(answer, "answer_start", int, where_ans)
                    if start < 0 or context[start : start + len(text)] != text:
                        found = context[max(start, 0) : max(start, 0) + len(text)]
                        raise ValueError(
                            f"{where_ans}: text {text!r} is not at answer_start {start} "
                            f"in the context (found {found!r})"
                        )
                    answers.append((text, start))
                if impossible and answers:
                    raise ValueError(f"{where_q}: marked is_impossible but has {len(answers)} answers")
                if not impossible and not answers:
                    kind = f"a SQuAD v{version} question" if version else "an answerable question"
                    raise ValueError(f"{where_q}: {kind} with no answers (and not is_impossible)")
                examples.append(
                    QAExample(
                        id=qid,
                        title=title,
                        context=context,
                        question=question,
                        answers=tuple(answers),
                        is_impossible=impossible,
                    )
                )
    return examples


def split_by_article(
    examples: Sequence[QAExample], dev_fraction: float, seed: int
) -> tuple[list[QAExample], list[QAExample]]:
    """Split examples into ``(train, dev)`` by article title, deterministically.

    XQuAD has no train split, so the pipeline trains on some of its articles and
    evaluates on the others. Whole articles go to one side, so that no paragraph
    or topic is seen in training and then scored in evaluation.

    ``round(dev_fraction * n_articles)`` articles (at least one, and at least one
    left for training, when ``0 < dev_fraction < 1`` and there are two or more
    articles) are drawn for dev by ``seed``; the draw depends only on the set of
    titles, not on the order of ``examples``. Both lists keep the input order.
    """
    if not 0.0 <= dev_fraction <= 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1], got {dev_fraction}")
    # Sorted, so the same titles give the same split whatever order they arrive in.
    titles = sorted({ex.title for ex in examples})
    n_dev = round(dev_fraction * len(titles))
    if 0.0 < dev_fraction < 1.0 and len(titles) >= 2:
        n_dev = min(max(n_dev, 1), len(titles) - 1)
    rng = np.random.default_rng(seed)
    dev_titles = {titles[i] for i in rng.permutation(len(titles))[:n_dev]}
    train = [ex for ex in examples if ex.title not in dev_titles]
    dev = [ex for ex in examples if ex.title in dev_titles]
    return train, dev


# --------------------------------------------------------------------------- metrics

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD answer normalisation: lowercase, drop punctuation and articles, collapse whitespace.

    The steps and their order follow the official evaluation scripts, which
    remove punctuation before articles (so ``"the-end"`` becomes ``"theend"``).
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 between normalised strings (a bag of words: repeats count).

    As in the SQuAD v2.0 script: when either side normalises to no tokens, the
    score is 1.0 if both do and 0.0 otherwise (v1.1 gold answers are never
    empty, so this only matters for unanswerable questions).
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _gold_texts(example: QAExample) -> list[str]:
    """Gold strings to score against; ``[""]`` for an unanswerable question.

    As in the v2.0 script, gold answers that normalise to nothing are dropped.
    """
    golds = [text for text, _ in example.answers if normalize_answer(text)]
    return golds or [""]


def squad_metrics(
    examples: Sequence[QAExample], predictions: Mapping[str, str], version_2: bool | None = None
) -> dict[str, Any]:
    """Exact match and F1 of ``predictions`` (question id -> text), as the SQuAD scripts define them.

    Each question scores the maximum over its gold answers. Returns
    ``exact_match`` and ``f1`` (means in percent), ``count`` (examples scored),
    ``missing`` (examples without a prediction, scored as ``""``), and
    ``em_per_example``/``f1_per_example``: per-example scores in [0, 1] in
    example order (for bootstrap intervals and paired comparisons). For SQuAD
    v2.0 (``version_2``; by default, when any example is unanswerable) also
    ``HasAns_exact_match``/``HasAns_f1``/``HasAns_count`` and the same with
    ``NoAns_`` over answerable and unanswerable questions. Predictions for ids
    not among ``examples`` are ignored.
    """
    if not examples:
        raise ValueError("squad_metrics: no examples to score")
    if version_2 is None:
        version_2 = any(ex.is_impossible for ex in examples)
    em_scores: list[float] = []
    f1_scores: list[float] = []
    missing = 0
    for ex in examples:
        if ex.id not in predictions:
            missing += 1
        prediction = predictions.get(ex.id, "")
        golds = _gold_texts(ex)
        em_scores.append(max(exact_match(prediction, gold) for gold in golds))
        f1_scores.append(max(f1(prediction, gold) for gold in golds))

    def percent(scores: Sequence[float]) -> float:
        return 100.0 * sum(scores) / len(scores) if scores else 0.0

    result: dict[str, Any] = {
        "exact_match": percent(em_scores),
        "f1": percent(f1_scores),
        "count": len(examples),
        "missing": missing,
        "em_per_example": em_scores,
        "f1_per_example": f1_scores,
    }
    if version_2:
        for prefix, wanted in (("HasAns", False), ("NoAns", True)):
            idx = [i for i, ex in enumerate(examples) if ex.is_impossible == wanted]
            result[f"{prefix}_exact_match"] = percent([em_scores[i] for i in idx])
            result[f"{prefix}_f1"] = percent([f1_scores[i] for i in idx])
            result[f"{prefix}_count"] = len(idx)
    return result
