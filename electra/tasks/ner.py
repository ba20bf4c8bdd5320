"""Named-entity recognition (token classification): word pieces, training, prediction, the NER :class:`Task`.

The pretrained discriminator is fine-tuned as an ``ElectraForTokenClassification``
on sentences of CoNLL files (:mod:`electra.tasks.conll`), with the shared recipe
(:mod:`electra.tasks.recipe`): AdamW with layer-wise learning-rate decay, linear
warm-up then linear decay, gradient clipping, length-grouped batches with dynamic padding.

Words are split into word pieces; only the first piece of each word carries a
label (the later pieces and the special tokens get -100, which the loss
ignores), and a word's prediction is read from its first piece. That gives
exactly one decision per word, so the model is trained and scored on words
rather than on an arbitrary number of pieces per word.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from electra.core.config import NEREntry
from electra.core.logs import expected_new_head
from electra.core.runtime import resolve_device
from electra.core.tracking import MetricLogger, NullLogger
from electra.tasks.common import CardInfo, ServingSpec, TaskBase
from electra.tasks.conll import IGNORE_INDEX, OUTSIDE, Sentence, entity_metrics, label_list, read_conll
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
    batch = pad_inputs(features, pad_id)
    if all("labels" in f for f in features):
        labels = torch.full((len(features), batch["input_ids"].shape[1]), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        for row, f in enumerate(features):
            labels[row, : len(f["labels"])] = torch.tensor(f["labels"], dtype=torch.long)
        batch["labels"] = labels
    return batch


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


def _trainable_features(tokenizer: Any, sentences: Sequence[Sentence], labels: list[str],
                        max_seq_length: int) -> tuple[list[dict], list[dict]]:
    """Every sentence encoded with its labels, and those with a word piece to label."""
    label2id = {label: i for i, label in enumerate(labels)}
    encoded = encode(tokenizer, sentences, label2id, max_seq_length)
    # A batch whose labels are all -100 has a NaN mean loss; such sentences teach nothing anyway.
    features = [f for f in encoded if any(label != IGNORE_INDEX for label in f["labels"])]
    if not features:
        raise ValueError("no training sentence has a word piece to label")
    return encoded, features


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
    precision: str = "auto",
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
    encoded, features = _trainable_features(tokenizer, train_sentences, labels, max_seq_length)
    lengths = [len(f["input_ids"]) for f in features]

    model = _load_model(model_dir, labels, dropout).to(dev)

    def make_batch(idx: list[int]) -> dict[str, torch.Tensor]:
        return collate([features[i] for i in idx], pad_id(tokenizer))  # labels: -100 off the first pieces

    trained = train_loop(
        model, lengths, make_batch, lr=lr, layer_decay=layer_decay, weight_decay=weight_decay, adam_eps=adam_eps,
        epochs=epochs, batch_size=batch_size, warmup_fraction=warmup_fraction, seed=seed, device=dev,
        logger=logger, name=log_prefix or "ner", progress=progress, log_prefix=log_prefix, precision=precision,
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
    precision: str = "auto",
) -> list[list[str]]:
    """One predicted tag per word of every sentence, in input order.

    A word's tag is the argmax of the logits at its first word piece, mapped
    through ``model.config.id2label``. Words the model never sees get ``O``:
    those cut off by truncation at ``max_seq_length`` and those the tokenizer
    turns into no piece at all. Runs in eval mode without gradients, in batches
    padded to their own longest row, under :func:`~electra.tasks.recipe.inference`'s
    autocast for ``precision``; ``model`` must already be on ``device``.
    The gold tags of ``sentences`` are not used.
    """
    if not sentences:
        return []
    dev = resolve_device(device)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    features = encode(tokenizer, sentences, None, max_seq_length)
    predictions: list[list[str]] = [[OUTSIDE] * len(s.tokens) for s in sentences]
    was_training = model.training
    model.eval()
    try:
        with inference(dev, precision):
            for idx in longest_first_batches([len(f["input_ids"]) for f in features], batch_size):
                batch = {k: v.to(dev) for k, v in collate([features[i] for i in idx], pad_id(tokenizer)).items()}
                logits = model(**batch).logits  # (B, T, num_labels)
                best = logits.argmax(dim=-1).cpu().tolist()  # (B, T)
                for row, i in enumerate(idx):
                    for word, position in first_piece_positions(features[i]["word_ids"]).items():
                        predictions[i][word] = id2label[best[row][position]]
    finally:
        model.train(was_training)
    return predictions


# --------------------------------------------------------------------------- the kind


def _sentence_f1(tallies: np.ndarray) -> Callable[[np.ndarray], float]:
    """Entity F1 of a resample of sentences from their ``(correct, predicted, gold)`` tallies."""
    def f1_of(idx: np.ndarray) -> float:
        correct, predicted, gold = tallies[idx].sum(axis=0)
        return float(2 * correct / (predicted + gold)) if predicted + gold else 0.0

    return f1_of


class NERTask(TaskBase):
    """NER on CoNLL files (:class:`~electra.core.config.NEREntry`), scored as ``conlleval`` does."""

    kind = "ner"
    entry_class = NEREntry
    group = None

    def splits(self) -> tuple[list[Sentence], list[Sentence], list[str]]:
        """Train and dev sentences and the label list (from the train file)."""
        train_file, dev_file = self.entry.files()
        train = read_conll(train_file)
        return train, read_conll(dev_file), label_list(train)

    def dev_split(self) -> tuple[list, str | None]:
        return self.splits()[1], None

    def finetune_seed(self, seed: int, run_dir: Path, logger: MetricLogger, progress: bool,
                      device: torch.device) -> dict[str, Any]:
        cfg, settings = self.cfg, self.settings()
        train, _, labels = self.splits()
        train = subsample(train, settings["max_train_examples"], cfg.seed)
        result = train_ner(
            cfg.model_dir, train, labels, run_dir, lr=settings["lr"], layer_decay=cfg.layer_decay,
            epochs=settings["epochs"], batch_size=settings["batch_size"], max_seq_length=settings["max_seq_length"],
            warmup_fraction=cfg.warmup_fraction, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps,
            dropout=cfg.dropout, seed=seed, device=device, logger=logger, log_prefix="", progress=progress,
            precision=task_precision(cfg))
        return {**result, "epochs": settings["epochs"], "lr": settings["lr"], "batch_size": settings["batch_size"],
                "max_seq_length": settings["max_seq_length"]}

    def evaluate_run(self, run: dict[str, Any], examples: list, batch_size: int, device: Any,
                     seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(run["model_dir"])
        model = AutoModelForTokenClassification.from_pretrained(run["model_dir"]).to(device)
        predicted = predict_ner(model, tokenizer, examples, batch_size=batch_size,
                                max_seq_length=run["max_seq_length"], device=device,
                                precision=task_precision(self.cfg))
        gold = [list(s.tags) for s in examples]
        result = entity_metrics(gold, predicted)
        scores = {k: result[k] for k in ("precision", "recall", "f1", "token_accuracy", "per_type")}
        scores["main"] = scores["f1"]
        rows = [{"index": i, "tokens": list(s.tokens), "gold": gold[i], "prediction": predicted[i]}
                for i, s in enumerate(examples)]
        return self.with_interval(scores, rows, seed), rows

    def statistic(self, rows: Sequence[dict[str, Any]]) -> Callable[[np.ndarray], float]:
        tallies = entity_metrics([r["gold"] for r in rows], [r["prediction"] for r in rows])["per_sentence"]
        return _sentence_f1(np.asarray(tallies, dtype=np.float64))     # [sentences, (correct, pred, gold)]

    def row_key(self, row: dict[str, Any]) -> str:
        return " ".join(row["tokens"])

    def row_gold(self, row: dict[str, Any]) -> Any:
        return tuple(row["gold"])

    def serving(self, summary: dict[str, Any]) -> ServingSpec:
        run = summary["runs"][str(summary["seeds"][0])]
        entity = {"entity_group": "location", "score": 0.9, "word": "paris", "start": 14, "end": 19}
        return ServingSpec(
            entry="ner_model.py",
            settings={"max_seq_length": int(run.get("max_seq_length", summary.get("max_seq_length", 128)))},
            input_columns=(None,), input_example=["she flew from paris to new york ."],
            output_example={"entities": [[entity]]})

    def datasets(self) -> list[tuple[str, str, str]]:
        train_file, dev_file = self.entry.files()
        return [("ner-train", train_file, "finetuning"), ("ner-dev", dev_file, "evaluation")]

    def card_info(self) -> CardInfo:
        train = self.entry.files()[0]
        dataset = ({"name": "WNUT-17", "type": "leondz/wnut_17", "split": "validation"}
                   if "wnut" in train.lower() else
                   {"name": f"CoNLL NER ({train.rsplit('/', 1)[-1]})", "type": "conll", "split": "validation"})
        return CardInfo(
            title="NER (entity-level)",
            use=("named-entity tagging of English social-media text (person, location, group, "
                 "creative-work, corporation, product)"),
            hf_task=("token-classification", "Token Classification"), dataset=dataset,
            metrics=["precision", "recall", "f1"], main="f1", paths=self.entry.files(), aliases=("ner", "wnut"))

    def report_lines(self, section: dict[str, Any], cell: Callable[[dict], str]) -> list[str]:
        def pct(value: float | None) -> str:
            return "–" if value is None else f"{100 * value:.1f}"

        return ["", "## NER (entity-level, CoNLL-style)", "", "| precision | recall | F1 (95% CI) | dev sentences |",
                "|---|---|---|---|",
                f"| {pct(section['precision'])} | {pct(section['recall'])} | {cell(section)} | "
                f"{section['dev_examples']} |"]
