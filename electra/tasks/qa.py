"""Extractive question answering in SQuAD format: data, features, training, decoding, metrics.

The pipeline, end to end:

1. :func:`read_squad` reads a SQuAD v1.1 or v2.0 JSON file into :class:`QAExample`
   records, checking every answer against its context.
2. :func:`split_by_article` splits examples into train/dev by article title.
   XQuAD (the QA data shipped in ``data/qa/xquad``) is an evaluation-only set
   with no train split, so the pipeline fine-tunes on some articles and
   evaluates on the others; splitting by article keeps a paragraph's
   neighbours (same topic, same entities) out of the other side.
3. :func:`prepare_features` tokenises question + context into overlapping
   windows (a context longer than one window is read in several); training
   features carry answer token positions, every feature carries the character
   offsets needed to map predicted tokens back to the context.
4. :func:`train_qa` fine-tunes an ELECTRA discriminator with the same recipe as
   the GLUE stage (:mod:`electra.tasks.finetune`): AdamW, layer-wise LR decay, linear
   warm-up/decay, clipping, length-grouped dynamic padding.
5. :func:`predict_qa` runs the model over every window and :func:`postprocess`
   picks, per question, the best-scoring valid span over all its windows (or
   no answer, for SQuAD v2.0).
6. :func:`squad_metrics` scores predictions with the exact-match and F1
   definitions of the official SQuAD v1.1/v2.0 evaluation scripts.
"""

from __future__ import annotations

import collections
import json
import math
import re
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from electra.tasks.finetune import longest_first_batches, save_finetuned, seed_everything, train_loop
from electra.core.logs import expected_new_head
from electra.core.runtime import resolve_device
from electra.core.tracking import MetricLogger, NullLogger

# Tokenise this many examples per call: one call over a whole large file would hold
# every window's encodings in memory at once, for no speed gain beyond this size.
TOKENIZE_CHUNK = 1000

# Special tokens around a question/context pair: [CLS] question [SEP] context [SEP].
PAIR_SPECIAL_TOKENS = 3


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


# -------------------------------------------------------------------------- features


def _truncate_questions(tokenizer: Any, questions: list[str], max_query_length: int) -> list[str]:
    """Cut each question to at most ``max_query_length`` tokens, at a word boundary.

    The pair call truncates only the context (``only_second``), so a long
    question has to be shortened beforehand. Cutting before a whole word (rather
    than mid-word, at a sub-token) guarantees that the kept text tokenises to
    the same tokens again.
    """
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for i, question in enumerate(questions):
        offsets = enc["offset_mapping"][i]
        if len(offsets) <= max_query_length:
            out.append(question)
            continue
        words = enc.word_ids(i)
        first_dropped = words[max_query_length]
        # The first token of the word that token `max_query_length` belongs to.
        cut_token = next(t for t in range(len(words)) if words[t] == first_dropped)
        cut = offsets[cut_token][0]
        if cut_token == 0:  # one giant word: keep whole sub-tokens instead
            cut = offsets[max_query_length - 1][1]
        out.append(question[:cut].rstrip())
    return out


def _answer_token_span(
    offsets: Sequence[tuple[int, int] | None], start_char: int, end_char: int
) -> tuple[int, int]:
    """Token positions ``(start, end)`` of the characters ``[start_char, end_char)``, or ``(0, 0)``.

    ``offsets`` has ``None`` for non-context tokens. ``(0, 0)`` (the [CLS]
    token) means that the answer is not wholly inside this window.
    """
    context = [t for t, off in enumerate(offsets) if off is not None]
    if not context:
        return 0, 0
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    # Start: the last context token that begins at or before the answer's first character.
    start = first
    while start + 1 <= last and offsets[start + 1][0] <= start_char:
        start += 1
    # End: the first token from `start` on that reaches the answer's last character.
    end = start
    while end < last and offsets[end][1] < end_char:
        end += 1
    return start, end


def prepare_features(
    tokenizer: Any,
    examples: Sequence[QAExample],
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int = 64,
    *,
    training: bool,
) -> list[dict[str, Any]]:
    """Tokenise examples into model inputs: ``[CLS] question [SEP] context-window [SEP]``.

    A context that does not fit in ``max_seq_length`` tokens is read in several
    windows, consecutive windows sharing ``doc_stride`` context tokens (the
    meaning HF tokenizers give ``stride``; the original BERT/ELECTRA scripts
    used ``doc_stride`` for the step between window starts instead). Questions
    longer than ``max_query_length`` tokens are cut at a word boundary. Nothing
    is padded: :func:`collate` pads each batch to its own longest feature.

    ``tokenizer`` must be a HF *fast* tokenizer (character offsets are needed).

    Each feature is a dict with ``input_ids`` and ``token_type_ids`` (lists of
    int), ``example_index`` (index into ``examples``) and ``offset_mapping``
    (for each token, its ``(start, end)`` characters in the context, or ``None``
    for question and special tokens). With ``training=True`` it also has
    ``start_positions``/``end_positions``: the token span of the first answer,
    or 0 (the [CLS] token) for both when the answer is not wholly inside the
    window or the question is unanswerable. Features come grouped by example,
    in example order.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("prepare_features needs a fast (Rust-backed) tokenizer for character offsets")
    if doc_stride < 0 or max_query_length < 1:
        raise ValueError(f"need doc_stride >= 0 and max_query_length >= 1, got {doc_stride}, {max_query_length}")

    features: list[dict[str, Any]] = []
    for chunk_start in range(0, len(examples), TOKENIZE_CHUNK):
        chunk = examples[chunk_start : chunk_start + TOKENIZE_CHUNK]
        # Leading spaces carry no information and some SQuAD questions have many.
        questions = _truncate_questions(tokenizer, [ex.question.lstrip() for ex in chunk], max_query_length)
        q_lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
        for ex, q_len in zip(chunk, q_lengths, strict=True):
            room = max_seq_length - q_len - PAIR_SPECIAL_TOKENS
            # The Rust tokenizer panics (not a Python error) when the stride does not fit.
            if room <= doc_stride:
                raise ValueError(
                    f"question {ex.id!r}: max_seq_length {max_seq_length} leaves {room} context tokens "
                    f"per window after its {q_len}-token question, not more than doc_stride {doc_stride}"
                )
        enc = tokenizer(
            questions,
            [ex.context for ex in chunk],
            truncation="only_second",
            max_length=max_seq_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids=True,
            return_attention_mask=False,
            padding=False,
        )
        for i, local_index in enumerate(enc["overflow_to_sample_mapping"]):
            example = chunk[local_index]
            sequence_ids = enc.sequence_ids(i)
            offsets = [
                tuple(off) if seq == 1 else None
                for off, seq in zip(enc["offset_mapping"][i], sequence_ids, strict=True)
            ]
            feature: dict[str, Any] = {
                "input_ids": enc["input_ids"][i],
                "token_type_ids": enc["token_type_ids"][i],
                "example_index": chunk_start + local_index,
                "offset_mapping": offsets,
            }
            if training:
                if example.is_impossible or not example.answers:
                    start, end = 0, 0
                else:
                    text, start_char = example.answers[0]
                    start, end = _answer_token_span(offsets, start_char, start_char + len(text))
                feature["start_positions"] = start
                feature["end_positions"] = end
            features.append(feature)
    return features


def collate(features: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of features to its own longest one (dynamic padding).

    Returns ``input_ids``, ``token_type_ids`` and ``attention_mask`` of shape
    ``(batch, width)``, plus ``start_positions``/``end_positions`` of shape
    ``(batch,)`` when the features carry them (training).
    """
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)  # (batch, width)
    token_type_ids = torch.zeros((len(features), width), dtype=torch.long)  # (batch, width)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)  # (batch, width)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[row, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
        token_type_ids[row, :n] = torch.tensor(f["token_type_ids"], dtype=torch.long)
        attention_mask[row, :n] = 1
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    if all("start_positions" in f for f in features):
        batch["start_positions"] = torch.tensor([f["start_positions"] for f in features], dtype=torch.long)
        batch["end_positions"] = torch.tensor([f["end_positions"] for f in features], dtype=torch.long)
    return batch


# ------------------------------------------------------------------- post-processing


def _best_span(
    start: np.ndarray, end: np.ndarray, context: np.ndarray, n_best: int, max_answer_length: int
) -> tuple[float, int, int] | None:
    """Best ``(score, start, end)`` over valid spans of one window, or None if it has no context.

    ``start``/``end`` are the window's logits, shape ``(length,)``; ``context``
    is the boolean mask of context tokens, shape ``(length,)``. A span is valid
    when both ends are context tokens, ``end >= start`` and it is at most
    ``max_answer_length`` tokens long. Candidates are the ``n_best`` highest
    start and end logits among context tokens (as in the reference scripts);
    if no pair of those is valid, every valid span is searched instead, so that
    inconsistent top logits never leave a window without an answer.
    """
    positions = np.flatnonzero(context)  # (n_context,)
    if positions.size == 0:
        return None
    starts = positions[np.argsort(-start[positions], kind="stable")[:n_best]]
    ends = positions[np.argsort(-end[positions], kind="stable")[:n_best]]
    best: tuple[float, int, int] | None = None
    for s in starts:
        for e in ends:
            if e < s or e - s + 1 > max_answer_length:
                continue
            score = float(start[s] + end[e])
            if best is None or score > best[0]:
                best = (score, int(s), int(e))
    if best is not None:
        return best
    # Fallback: exhaustive search over the band end - start in [0, max_answer_length).
    scores = start[positions][:, None] + end[positions][None, :]  # (n_context, n_context)
    gap = positions[None, :] - positions[:, None]  # token distance end - start, (n_context, n_context)
    scores = np.where((gap >= 0) & (gap < max_answer_length), scores, -np.inf)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[i, j]), int(positions[i]), int(positions[j])


def postprocess(
    examples: Sequence[QAExample],
    features: Sequence[Mapping[str, Any]],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_threshold: float = 0.0,
) -> dict[str, str]:
    """Answer text per question id, from the model's logits over all windows.

    ``start_logits[i]``/``end_logits[i]`` are feature ``i``'s logits, of shape
    ``(length,)`` with ``length >= len(features[i]["input_ids"])`` (padding
    beyond the feature is ignored); a ``(n_features, width)`` array works too.
    Per example, the answer is the highest ``start + end`` logit span over all
    of its windows that is valid (see :func:`_best_span`), cut from the original
    context through the offsets, so casing and spacing are the context's.

    With ``version_2``, the answer is ``""`` when the null score (``start[0] +
    end[0]``, the [CLS] token, the minimum over the example's windows) exceeds
    the best span's score by more than ``null_threshold``. An example without
    any context token in any window gets ``""``.
    """
    if len(start_logits) != len(features) or len(end_logits) != len(features):
        raise ValueError(
            f"{len(features)} features but {len(start_logits)} start and {len(end_logits)} end logit rows"
        )
    by_example: dict[int, list[int]] = collections.defaultdict(list)
    for f_idx, feature in enumerate(features):
        by_example[feature["example_index"]].append(f_idx)

    predictions: dict[str, str] = {}
    for ex_idx, example in enumerate(examples):
        best: tuple[float, int, int, int] | None = None  # (score, feature, start token, end token)
        null_score = math.inf
        for f_idx in by_example.get(ex_idx, []):
            offsets = features[f_idx]["offset_mapping"]
            n = len(offsets)
            start = np.asarray(start_logits[f_idx], dtype=np.float64)[:n]  # (n,)
            end = np.asarray(end_logits[f_idx], dtype=np.float64)[:n]  # (n,)
            # The minimum over windows: the window most confident that an answer exists decides.
            null_score = min(null_score, float(start[0] + end[0]))
            context = np.array([off is not None for off in offsets], dtype=bool)  # (n,)
            span = _best_span(start, end, context, n_best, max_answer_length)
            if span is not None and (best is None or span[0] > best[0]):
                best = (span[0], f_idx, span[1], span[2])
        if best is None:
            predictions[example.id] = ""
            continue
        score, f_idx, s, e = best
        if version_2 and null_score - score > null_threshold:
            predictions[example.id] = ""
            continue
        offsets = features[f_idx]["offset_mapping"]
        predictions[example.id] = example.context[offsets[s][0] : offsets[e][1]]
    return predictions


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


# ------------------------------------------------------------------ train and predict


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def train_qa(
    model_dir: str | Path,
    train_examples: Sequence[QAExample],
    out_dir: str | Path,
    *,
    lr: float,
    layer_decay: float,
    epochs: float,
    batch_size: int,
    max_seq_length: int,
    doc_stride: int,
    warmup_fraction: float,
    weight_decay: float,
    adam_eps: float,
    dropout: float,
    seed: int,
    device: str | torch.device,
    logger: MetricLogger | None,
    log_prefix: str = "qa",
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune the discriminator in ``model_dir`` for extractive QA on ``train_examples``.

    Loads ``ElectraForQuestionAnswering`` (a fresh span head over the
    pretrained encoder) in fp32 with ``dropout`` for hidden and attention
    dropout, and the tokenizer saved next to it. Trains on every window of
    every example with the GLUE recipe of :mod:`electra.tasks.finetune`: AdamW over
    layer-wise LR groups (``eps=adam_eps``), linear warm-up over
    ``warmup_fraction`` of the steps then linear decay to zero, gradient
    clipping at ``MAX_GRAD_NORM``, length-grouped batches padded per batch.
    ``epochs`` may be fractional (steps = ``ceil(epochs * batches per epoch)``).

    Logs ``{log_prefix}.train_loss`` (mean over the window) and
    ``{log_prefix}.lr`` (the head's) every ``LOG_EVERY`` steps and at the last
    (plain ``train_loss``/``lr`` when ``log_prefix`` is empty).
    Saves model + tokenizer to ``out_dir/model`` (swapped in only once complete).

    Returns ``{"train_examples", "train_features", "steps", "train_loss" (mean
    over the last epoch's worth of steps), "losses" (the logged window means),
    "seconds", "model_dir"}``.
    """
    from transformers import AutoTokenizer, ElectraForQuestionAnswering

    logger = logger or NullLogger()
    source = Path(model_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: pretrained model not found (run the pretrain stage first)")
    if not train_examples:
        raise ValueError("train_qa: no training examples")
    started = time.perf_counter()
    seed_everything(seed)
    dev = resolve_device(device)

    tokenizer = AutoTokenizer.from_pretrained(source)
    features = prepare_features(tokenizer, train_examples, max_seq_length, doc_stride, training=True)
    lengths = [len(f["input_ids"]) for f in features]
    pad_id = _pad_id(tokenizer)

    with expected_new_head("the span head of a QA run"):
        model = ElectraForQuestionAnswering.from_pretrained(
            source,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            # Fine-tune in fp32 whatever dtype the checkpoint was saved in.
            dtype=torch.float32,
        ).to(dev)

    def make_batch(idx: list[int]) -> dict[str, torch.Tensor]:
        return collate([features[i] for i in idx], pad_id)  # carries start/end positions

    trained = train_loop(
        model, lengths, make_batch, lr=lr, layer_decay=layer_decay, weight_decay=weight_decay, adam_eps=adam_eps,
        epochs=epochs, batch_size=batch_size, warmup_fraction=warmup_fraction, seed=seed, device=dev,
        logger=logger, name=log_prefix or "qa", progress=progress, log_prefix=log_prefix,
    )
    target = save_finetuned(model, tokenizer, Path(out_dir) / "model")
    return {
        "train_examples": len(train_examples),
        "train_features": len(features),
        "steps": trained["steps"],
        "train_loss": trained["train_loss"],
        "losses": trained["losses"],
        "curve": trained["curve"],
        "seconds": time.perf_counter() - started,
        "model_dir": str(target),
    }


def predict_qa(
    model_dir_or_model: str | Path | torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[QAExample],
    *,
    batch_size: int,
    max_seq_length: int,
    doc_stride: int,
    device: str | torch.device,
    version_2: bool = False,
    n_best: int = 20,
    max_answer_length: int = 30,
    null_threshold: float = 0.0,
) -> dict[str, str]:
    """Predicted answer text per question id (see :func:`postprocess`).

    ``model_dir_or_model`` is a folder saved by :func:`train_qa` (loaded in
    fp32; ``tokenizer`` may then be None to load the one saved with it) or an
    ``ElectraForQuestionAnswering`` in memory, which is moved to ``device``
    and put back in its train/eval mode afterwards. Runs in eval mode without
    gradients, over length-sorted batches padded per batch.
    """
    from transformers import AutoTokenizer, ElectraForQuestionAnswering

    dev = resolve_device(device)
    if isinstance(model_dir_or_model, (str, Path)):
        path = Path(model_dir_or_model)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: QA model not found (run train_qa first)")
        model = ElectraForQuestionAnswering.from_pretrained(path, dtype=torch.float32)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
    else:
        model = model_dir_or_model
        if tokenizer is None:
            raise ValueError("predict_qa: a tokenizer is needed with a model given in memory")
    model.to(dev)
    if not examples:
        return {}

    features = prepare_features(tokenizer, examples, max_seq_length, doc_stride, training=False)
    lengths = [len(f["input_ids"]) for f in features]
    pad_id = _pad_id(tokenizer)
    start_logits: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(features)
    end_logits: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(features)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx in longest_first_batches(lengths, batch_size):
                batch = {k: v.to(dev) for k, v in collate([features[i] for i in idx], pad_id).items()}
                out = model(**batch)
                starts = out.start_logits.float().cpu().numpy()  # (batch, width)
                ends = out.end_logits.float().cpu().numpy()  # (batch, width)
                for row, f_idx in enumerate(idx):
                    # Drop the padding columns: postprocess only reads real tokens.
                    starts_row = starts[row, : lengths[f_idx]]  # (length,)
                    ends_row = ends[row, : lengths[f_idx]]  # (length,)
                    start_logits[f_idx] = starts_row
                    end_logits[f_idx] = ends_row
    finally:
        model.train(was_training)
    return postprocess(
        examples,
        features,
        start_logits,
        end_logits,
        n_best=n_best,
        max_answer_length=max_answer_length,
        version_2=version_2,
        null_threshold=null_threshold,
    )
