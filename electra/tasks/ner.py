"""Named-entity recognition (token classification) on CoNLL-format files.

The pretrained discriminator is fine-tuned as an ``ElectraForTokenClassification``
on sentences read from ``token<TAB>tag`` files with BIO tags (WNUT-17 here),
with the same recipe as the GLUE stage (:mod:`electra.tasks.finetune`): AdamW with
layer-wise learning-rate decay, linear warm-up then linear decay, gradient
clipping, length-grouped batches with dynamic padding.

Words are split into word pieces; only the first piece of each word carries a
label (the later pieces and the special tokens get -100, which the loss
ignores), and a word's prediction is read from its first piece. That gives
exactly one decision per word, so the model is trained and scored on words
rather than on an arbitrary number of pieces per word.

Entity scores follow the CoNLL-2000 ``conlleval`` script: entities are chunks of
BIO tags, and a predicted entity counts only if both its span and its type match
a gold entity exactly.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from electra.tasks.finetune import longest_first_batches, save_finetuned, seed_everything, train_loop
from electra.core.logs import expected_new_head
from electra.core.runtime import resolve_device
from electra.core.tracking import MetricLogger, NullLogger

# Label of positions the loss must skip (PyTorch's CrossEntropyLoss ignore_index default).
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


# --------------------------------------------------------------------------- encoding


def encode(
    tokenizer: Any,
    sentences: Sequence[Sentence],
    label2id: Mapping[str, int] | None,
    max_seq_length: int,
) -> list[dict[str, list[int]]]:
    """Tokenise pre-split sentences into word pieces and align the word labels with them.

    Each feature has ``input_ids``, ``token_type_ids``, ``word_ids`` (the index of
    the word each piece belongs to, -1 for special tokens) and, when
    ``label2id`` is given, ``labels``: the first piece of each word carries the
    word's label id, later pieces and special tokens carry -100 so the loss
    ignores them (one decision per word, read from its first piece at
    prediction time). Sequences are truncated to ``max_seq_length`` pieces
    (special tokens included), not padded; words past the cut get no label.

    The alignment comes from the fast tokenizer's ``word_ids()``, so a word that
    turns into no piece at all (a lone emoji variation selector, a control
    character) is simply absent and does not shift the later words' labels.
    Raises ValueError for a slow tokenizer or a tag missing from ``label2id``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("word-piece alignment needs a fast tokenizer (word_ids() is only on fast ones)")
    if max_seq_length <= tokenizer.num_special_tokens_to_add():
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for any word piece")
    if not sentences:
        return []
    enc = tokenizer(
        [list(s.tokens) for s in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=max_seq_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    features: list[dict[str, list[int]]] = []
    for i, sentence in enumerate(sentences):
        word_ids = [-1 if w is None else w for w in enc.word_ids(i)]
        feature = {
            "input_ids": list(enc["input_ids"][i]),
            "token_type_ids": list(enc["token_type_ids"][i]),
            "word_ids": word_ids,
        }
        if label2id is not None:
            feature["labels"] = _align_labels(i, sentence, word_ids, label2id)
        features.append(feature)
    return features


def _align_labels(
    index: int, sentence: Sentence, word_ids: Sequence[int], label2id: Mapping[str, int]
) -> list[int]:
    labels: list[int] = []
    previous = -1
    for word in word_ids:
        if word == -1 or word == previous:
            labels.append(IGNORE_INDEX)  # a special token, or a continuation piece
        else:
            tag = sentence.tags[word]
            if tag not in label2id:
                raise ValueError(
                    f"sentence {index}, word {word}: tag {tag!r} is not in the label set {sorted(label2id)}"
                )
            labels.append(label2id[tag])
        # Specials never sit between two pieces of one word, so only the last word id matters.
        previous = word
    return labels


def first_piece_positions(word_ids: Sequence[int]) -> dict[int, int]:
    """Map word index → position of that word's first piece (words without a piece are absent)."""
    positions: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word != -1 and word not in positions:
            positions[word] = position
    return positions


def collate(features: Sequence[Mapping[str, Sequence[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest sequence; labels are padded with -100.

    Returns ``input_ids``, ``token_type_ids``, ``attention_mask`` and, when the
    features have them, ``labels``, each of shape ``(batch, longest)``.
    """
    width = max(len(f["input_ids"]) for f in features)
    has_labels = all("labels" in f for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)  # (B, T)
    token_type_ids = torch.zeros((len(features), width), dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)  # (B, T)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[row, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
        token_type_ids[row, :n] = torch.tensor(f["token_type_ids"], dtype=torch.long)
        attention_mask[row, :n] = 1
        if has_labels:
            labels[row, :n] = torch.tensor(f["labels"], dtype=torch.long)
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    if has_labels:
        batch["labels"] = labels
    return batch


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


# --------------------------------------------------------------------------- training


def _load_model(model_dir: str | Path, labels: Sequence[str], dropout: float):
    from transformers import ElectraForTokenClassification

    with expected_new_head("the token-classification head of a NER run"):
        return ElectraForTokenClassification.from_pretrained(
            model_dir,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            # None would fall back to hidden_dropout_prob anyway; explicit beats a stale pretrain value.
            classifier_dropout=dropout,
            # Fine-tune in fp32 whatever dtype the checkpoint was saved in.
            dtype=torch.float32,
        )


def train_ner(
    model_dir: str | Path,
    train_sentences: Sequence[Sentence],
    labels: Sequence[str],
    out_dir: str | Path,
    *,
    lr: float,
    layer_decay: float,
    epochs: float,
    batch_size: int,
    max_seq_length: int,
    warmup_fraction: float,
    weight_decay: float,
    adam_eps: float,
    dropout: float,
    seed: int,
    device: str | torch.device,
    logger: MetricLogger | None,
    log_prefix: str = "ner",
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune the discriminator in ``model_dir`` for token classification over ``labels``.

    AdamW over ELECTRA's layer-wise learning-rate groups, linear warm-up over
    ``warmup_fraction`` of the steps then linear decay to 0, gradient clipping at
    ``MAX_GRAD_NORM``, length-grouped batches padded to their own longest row.
    ``epochs`` may be fractional (the step count is rounded up). Logs
    ``{log_prefix}.train_loss`` (mean of the last ``LOG_EVERY`` steps) and
    ``{log_prefix}.lr`` (the head's learning rate) every ``LOG_EVERY`` steps and at
    the last one (plain ``train_loss``/``lr`` when ``log_prefix`` is empty).
    Saves the model and tokenizer to ``out_dir/model`` (swapped in only once
    complete).

    Returns ``train_sentences``, ``steps``, ``train_loss`` (mean over the last
    epoch's steps), ``losses`` (one per step), ``seconds``, ``model_dir``,
    ``labels`` and ``skipped_sentences`` (sentences with no word piece left to
    label, which cannot contribute to the loss).
    """
    from transformers import AutoTokenizer

    started = time.perf_counter()
    logger = logger or NullLogger()
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels has duplicates: {labels}")
    if not train_sentences:
        raise ValueError("no training sentences")
    dev = resolve_device(device)
    seed_everything(seed)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    label2id = {label: i for i, label in enumerate(labels)}
    encoded = encode(tokenizer, train_sentences, label2id, max_seq_length)
    # A batch whose labels are all -100 has a NaN mean loss; such sentences teach nothing anyway.
    features = [f for f in encoded if any(label != IGNORE_INDEX for label in f["labels"])]
    if not features:
        raise ValueError("no training sentence has a word piece to label")
    lengths = [len(f["input_ids"]) for f in features]

    model = _load_model(model_dir, labels, dropout).to(dev)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def make_batch(idx: list[int]) -> dict[str, torch.Tensor]:
        return collate([features[i] for i in idx], pad_id)  # labels: -100 off the first pieces

    trained = train_loop(
        model, lengths, make_batch, lr=lr, layer_decay=layer_decay, weight_decay=weight_decay, adam_eps=adam_eps,
        epochs=epochs, batch_size=batch_size, warmup_fraction=warmup_fraction, seed=seed, device=dev,
        logger=logger, name=log_prefix or "ner", progress=progress, log_prefix=log_prefix,
    )
    saved_dir = save_finetuned(model, tokenizer, Path(out_dir) / "model")
    return {
        "train_sentences": len(train_sentences),
        "skipped_sentences": len(encoded) - len(features),
        "steps": trained["steps"],
        "train_loss": trained["train_loss"],
        "losses": trained["losses"],
        "curve": trained["curve"],
        "seconds": time.perf_counter() - started,
        "model_dir": str(saved_dir),
        "labels": labels,
    }


# --------------------------------------------------------------------------- prediction


def predict_ner(
    model: torch.nn.Module,
    tokenizer: Any,
    sentences: Sequence[Sentence],
    *,
    batch_size: int,
    max_seq_length: int,
    device: str | torch.device,
) -> list[list[str]]:
    """One predicted tag per word of every sentence, in input order.

    A word's tag is the argmax of the logits at its first word piece, mapped
    through ``model.config.id2label``. Words the model never sees get ``O``:
    those cut off by truncation at ``max_seq_length`` and those the tokenizer
    turns into no piece at all. Runs in eval mode without gradients, in batches
    padded to their own longest row; ``model`` must already be on ``device``.
    The gold tags of ``sentences`` are not used.
    """
    if not sentences:
        return []
    dev = resolve_device(device)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    features = encode(tokenizer, sentences, None, max_seq_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    predictions: list[list[str]] = [[OUTSIDE] * len(s.tokens) for s in sentences]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx in longest_first_batches([len(f["input_ids"]) for f in features], batch_size):
                batch = {k: v.to(dev) for k, v in collate([features[i] for i in idx], pad_id).items()}
                logits = model(**batch).logits  # (B, T, num_labels)
                best = logits.argmax(dim=-1).cpu().tolist()  # (B, T)
                for row, i in enumerate(idx):
                    for word, position in first_piece_positions(features[i]["word_ids"]).items():
                        predictions[i][word] = id2label[best[row][position]]
    finally:
        model.train(was_training)
    return predictions
