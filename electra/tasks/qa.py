"""Extractive question answering: windows, training, span decoding, and the QA :class:`Task`.

The pipeline, end to end (the data and metrics are :mod:`electra.tasks.squad`):

1. :func:`prepare_features` tokenises question + context into overlapping
   windows (a context longer than one window is read in several); training
   features carry answer token positions, every feature carries the character
   offsets needed to map predicted tokens back to the context.
2. :func:`train_qa` fine-tunes an ELECTRA discriminator with the shared recipe
   (:mod:`electra.tasks.recipe`): AdamW, layer-wise LR decay, linear
   warm-up/decay, clipping, length-grouped dynamic padding.
3. :func:`predict_qa` runs the model over every window and :func:`postprocess`
   picks, per question, the best-scoring valid span over all its windows (or
   no answer, for SQuAD v2.0).
4. :class:`QATask` is the kind: its splits (a dev file, or the file split by
   article), one seed's run, rows scored by :func:`~electra.tasks.squad.squad_metrics`.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from electra.core.config import QAEntry
from electra.core.logs import expected_new_head
from electra.core.runtime import resolve_device
from electra.core.tracking import MetricLogger, NullLogger
from electra.tasks.common import CardInfo, ServingSpec, TaskBase
from electra.tasks.recipe import (
    inference,
    longest_first_batches,
    pad_id,
    pad_inputs,
    save_finetuned,
    seed_everything,
    subsample,
    task_precision,
    train_loop,
)
from electra.tasks.squad import QAExample, read_squad, split_by_article, squad_metrics

# Tokenise this many examples per call: one call over a whole large file would hold
# every window's encodings in memory at once, for no speed gain beyond this size.
TOKENIZE_CHUNK = 1000

# Special tokens around a question/context pair: [CLS] question [SEP] context [SEP].
PAIR_SPECIAL_TOKENS = 3


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
        _check_room(chunk, q_lengths, max_seq_length, doc_stride)
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
        features += [_window_feature(enc, i, chunk[local], chunk_start + local, training)
                     for i, local in enumerate(enc["overflow_to_sample_mapping"])]
    return features


def _check_room(chunk: Sequence[QAExample], q_lengths: Sequence[int], max_seq_length: int, doc_stride: int) -> None:
    """Refuse a question that leaves no more than ``doc_stride`` context tokens per window."""
    for ex, q_len in zip(chunk, q_lengths, strict=True):
        room = max_seq_length - q_len - PAIR_SPECIAL_TOKENS
        # The Rust tokenizer panics (not a Python error) when the stride does not fit.
        if room <= doc_stride:
            raise ValueError(
                f"question {ex.id!r}: max_seq_length {max_seq_length} leaves {room} context tokens "
                f"per window after its {q_len}-token question, not more than doc_stride {doc_stride}"
            )


def _window_feature(enc: Any, i: int, example: QAExample, example_index: int, training: bool) -> dict[str, Any]:
    """Window ``i`` of a tokenizer call as a feature (see :func:`prepare_features`)."""
    offsets = [tuple(off) if seq == 1 else None
               for off, seq in zip(enc["offset_mapping"][i], enc.sequence_ids(i), strict=True)]
    feature: dict[str, Any] = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                               "example_index": example_index, "offset_mapping": offsets}
    if training:
        if example.is_impossible or not example.answers:
            start, end = 0, 0
        else:
            text, start_char = example.answers[0]
            start, end = _answer_token_span(offsets, start_char, start_char + len(text))
        feature["start_positions"] = start
        feature["end_positions"] = end
    return feature


def collate(features: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of features to its own longest one (dynamic padding).

    Returns ``input_ids``, ``token_type_ids`` and ``attention_mask`` of shape
    ``(batch, width)``, plus ``start_positions``/``end_positions`` of shape
    ``(batch,)`` when the features carry them (training).
    """
    batch = pad_inputs(features, pad_id)
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


# ------------------------------------------------------------------ train and predict


def _load_model(source: Path, dropout: float):
    from transformers import ElectraForQuestionAnswering

    with expected_new_head("the span head of a QA run"):
        return ElectraForQuestionAnswering.from_pretrained(
            source,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            # Fine-tune in fp32 whatever dtype the checkpoint was saved in.
            dtype=torch.float32,
        )


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
    precision: str = "auto",
) -> dict[str, Any]:
    """Fine-tune the discriminator in ``model_dir`` for extractive QA on ``train_examples``.

    Loads ``ElectraForQuestionAnswering`` (a fresh span head over the
    pretrained encoder) in fp32 with ``dropout`` for hidden and attention
    dropout, and the tokenizer saved next to it. Trains on every window of
    every example with the shared recipe of :mod:`electra.tasks.recipe`: AdamW over
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
    from transformers import AutoTokenizer

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
    pad = pad_id(tokenizer)

    model = _load_model(source, dropout).to(dev)

    def make_batch(idx: list[int]) -> dict[str, torch.Tensor]:
        return collate([features[i] for i in idx], pad)  # carries start/end positions

    trained = train_loop(
        model, lengths, make_batch, lr=lr, layer_decay=layer_decay, weight_decay=weight_decay, adam_eps=adam_eps,
        epochs=epochs, batch_size=batch_size, warmup_fraction=warmup_fraction, seed=seed, device=dev,
        logger=logger, name=log_prefix or "qa", progress=progress, log_prefix=log_prefix, precision=precision,
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
    precision: str = "auto",
) -> dict[str, str]:
    """Predicted answer text per question id (see :func:`postprocess`).

    ``model_dir_or_model`` is a folder saved by :func:`train_qa` (loaded in
    fp32; ``tokenizer`` may then be None to load the one saved with it) or an
    ``ElectraForQuestionAnswering`` in memory, which is moved to ``device``
    and put back in its train/eval mode afterwards. Runs in eval mode without
    gradients, over length-sorted batches padded per batch, under
    :func:`~electra.tasks.recipe.inference`'s autocast for ``precision``.
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
    pad = pad_id(tokenizer)
    start_logits: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(features)
    end_logits: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(features)
    was_training = model.training
    model.eval()
    try:
        with inference(dev, precision):
            for idx in longest_first_batches(lengths, batch_size):
                batch = {k: v.to(dev) for k, v in collate([features[i] for i in idx], pad).items()}
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


# --------------------------------------------------------------------------- the kind


class QATask(TaskBase):
    """Extractive QA on a SQuAD-format file (:class:`~electra.core.config.QAEntry`)."""

    kind = "qa"
    entry_class = QAEntry
    group = None

    def _path(self, name: str) -> str:
        return str(Path(self.entry.data) / name)

    def splits(self) -> tuple[list[QAExample], list[QAExample], str]:
        """Train and dev examples, and how the dev set was made (said in the report)."""
        entry, seed = self.entry, self.cfg.seed
        examples = read_squad(self._path(entry.file))
        if entry.dev_file:
            return examples, read_squad(self._path(entry.dev_file)), f"dev = {self._path(entry.dev_file)}"
        train, dev = split_by_article(examples, entry.dev_fraction, seed)
        titles = len({ex.title for ex in dev})
        return train, dev, (f"{self._path(entry.file)} split by article (no article in both): {len(train)} train / "
                            f"{len(dev)} dev questions, {titles} dev articles, seed {seed}")

    def dev_split(self) -> tuple[list, str | None]:
        _, dev, note = self.splits()
        return dev, note

    def finetune_seed(self, seed: int, run_dir: Path, logger: MetricLogger, progress: bool,
                      device: torch.device) -> dict[str, Any]:
        cfg, settings, stride = self.cfg, self.settings(), self.entry.doc_stride
        train = subsample(self.splits()[0], settings["max_train_examples"], cfg.seed)
        result = train_qa(
            cfg.model_dir, train, run_dir, lr=settings["lr"], layer_decay=cfg.layer_decay,
            epochs=settings["epochs"], batch_size=settings["batch_size"], max_seq_length=settings["max_seq_length"],
            doc_stride=stride, warmup_fraction=cfg.warmup_fraction, weight_decay=cfg.weight_decay,
            adam_eps=cfg.adam_eps, dropout=cfg.dropout, seed=seed, device=device, logger=logger,
            log_prefix="", progress=progress, precision=task_precision(cfg))
        return {**result, "epochs": settings["epochs"], "lr": settings["lr"], "batch_size": settings["batch_size"],
                "max_seq_length": settings["max_seq_length"], "doc_stride": stride}

    def evaluate_run(self, run: dict[str, Any], examples: list, batch_size: int, device: Any,
                     seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        # From the folder: predict_qa loads the model and the tokenizer saved with it.
        predictions = predict_qa(run["model_dir"], None, examples, batch_size=batch_size,
                                 max_seq_length=run["max_seq_length"],
                                 doc_stride=run.get("doc_stride", self.entry.doc_stride), device=device,
                                 version_2=self.entry.version_2, precision=task_precision(self.cfg))
        result = squad_metrics(examples, predictions)
        em, f1s = result["em_per_example"], result["f1_per_example"]
        scores = {"exact_match": result["exact_match"] / 100, "f1": result["f1"] / 100, "count": result["count"]}
        scores["main"] = scores["f1"]
        # The per-example scores are fractions already (their mean x 100 is the aggregate).
        rows = [{"id": ex.id, "prediction": predictions.get(ex.id, ""), "answers": [a[0] for a in ex.answers],
                 "exact_match": float(em[i]), "f1": float(f1s[i])} for i, ex in enumerate(examples)]
        return self.with_interval(scores, rows, seed), rows

    def statistic(self, rows: Sequence[dict[str, Any]]) -> Callable[[np.ndarray], float]:
        f1s = np.asarray([r["f1"] for r in rows], dtype=np.float64)
        return lambda idx: float(f1s[idx].mean())

    def row_key(self, row: dict[str, Any]) -> str:
        return str(row["id"])

    def row_gold(self, row: dict[str, Any]) -> Any:
        return tuple(row["answers"])

    def serving(self, summary: dict[str, Any]) -> ServingSpec:
        run = summary["runs"][str(summary["seeds"][0])]
        return ServingSpec(
            entry="qa_model.py",
            settings={"max_seq_length": run["max_seq_length"], "doc_stride": run.get("doc_stride", 128)},
            input_columns=("question", "context"),
            input_example={"question": ["Who cooked the meal?"], "context": ["The chef cooked the meal."]},
            output_example={"answer": ["The chef"]})

    def datasets(self) -> list[tuple[str, str, str]]:
        found = [("qa", self._path(self.entry.file), "finetuning")]
        if self.entry.dev_file:
            found.append(("qa-dev", self._path(self.entry.dev_file), "evaluation"))
        return found

    def card_info(self) -> CardInfo:
        qa_file = self._path(self.entry.file)
        if "xquad" in qa_file.lower():
            dataset = {"name": "XQuAD (English)" + (", held-out articles" if self.entry.dev_file is None else ""),
                       "type": "google/xquad", "config": "xquad.en", "split": "validation"}
        else:
            dataset = {"name": f"SQuAD-format QA ({qa_file.rsplit('/', 1)[-1]})", "type": "squad",
                       "split": "validation"}
        return CardInfo(
            title="Extractive QA",
            use="extractive question answering: the span of an English paragraph that answers a question",
            hf_task=("question-answering", "Question Answering"), dataset=dataset,
            metrics=["exact_match", "f1"], main="f1", paths=[p for _, p, _ in self.datasets()],
            aliases=("qa", "xquad", "squad"))

    def report_lines(self, section: dict[str, Any], cell: Callable[[dict], str]) -> list[str]:
        em = section["exact_match"]
        return ["", "## Extractive QA", "", "| EM | F1 (95% CI) | dev questions |", "|---|---|---|",
                f"| {'–' if em is None else f'{100 * em:.1f}'} | {cell(section)} | {section['dev_examples']} |", "",
                f"Dev set: {section.get('dev', '')}."]
