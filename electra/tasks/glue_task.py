"""The GLUE kind: sentence (pair) classification, and STS-B's regression, as a :class:`Task`.

The discriminator gets a fresh ``ElectraForSequenceClassification`` head (STS-B: one
output, ``problem_type="regression"``), features are ``[CLS] a [SEP] b [SEP]`` padded
per batch, and the task's metrics are :func:`electra.tasks.glue.metrics`. The data
formats, label sets and metric names are :data:`electra.tasks.glue.TASKS`; a task's
folder is its catalog entry's ``data``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from electra.core.config import GlueEntry
from electra.core.logs import expected_new_head
from electra.core.runtime import resolve_device
from electra.core.tracking import MetricLogger
from electra.tasks.common import CardInfo, ServingSpec, TaskBase
from electra.tasks.glue import Example, TaskSpec, get_task, metrics, read_split
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

# The names a registered model answers (the Hugging Face ``glue`` dataset's). SST-2, MRPC and
# CoLA store ids ("0"/"1") in their TSVs; RTE and QNLI store the names themselves.
GLUE_LABEL_NAMES = {
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "cola": ("unacceptable", "acceptable"),
}

# What each task's model does, for a model card's "intended use".
TASK_USE = {
    "sst2": "binary sentiment (negative / positive) of English sentences from movie reviews",
    "mrpc": "whether two English sentences (news) are paraphrases of each other",
    "rte": "whether one English sentence entails another",
    "cola": "whether an English sentence is grammatically acceptable",
    "stsb": "the semantic similarity of two English sentences on a 0-5 scale",
    "qnli": "whether an English sentence answers a question",
}


# --- features and prediction ----------------------------------------------------------

def encode(tokenizer: Any, examples: Sequence[Example], max_seq_length: int) -> list[dict[str, list[int]]]:
    """Tokenise examples (pairs as ``[CLS] a [SEP] b [SEP]``), truncated, not padded."""
    if not examples:
        return []
    texts_a = [ex.text_a for ex in examples]
    pair = examples[0].text_b is not None
    texts_b = [ex.text_b or "" for ex in examples] if pair else None
    enc = tokenizer(texts_a, texts_b, truncation=True, max_length=max_seq_length, padding=False,
                    return_attention_mask=False, return_token_type_ids=True)
    return [{"input_ids": ids, "token_type_ids": types}
            for ids, types in zip(enc["input_ids"], enc["token_type_ids"], strict=True)]


def collate(features: Sequence[dict[str, list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest sequence (dynamic padding)."""
    return pad_inputs(features, pad)


def predict_loaded(model: torch.nn.Module, tokenizer: Any, examples: Sequence[Example], batch_size: int,
                   max_seq_length: int, device: torch.device, precision: str = "auto") -> np.ndarray:
    """:func:`predict` for a model and tokenizer already in memory (model already on ``device``);
    under :func:`~electra.tasks.recipe.inference`'s autocast for ``precision``."""
    num_labels = int(model.config.num_labels)
    regression = model.config.problem_type == "regression" or num_labels == 1
    if not examples:
        return np.zeros((0,) if regression else (0, num_labels), dtype=np.float32)
    features = encode(tokenizer, examples, max_seq_length)
    out = np.zeros((len(features), num_labels), dtype=np.float32)                # (n, labels)
    was_training = model.training
    model.eval()
    try:
        with inference(device, precision):
            for idx in longest_first_batches([len(f["input_ids"]) for f in features], batch_size):
                batch = {k: v.to(device) for k, v in collate([features[i] for i in idx], pad_id(tokenizer)).items()}
                out[idx] = model(**batch).logits.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out[:, 0] if regression else out


def predict(model_dir: str | Path, examples: Sequence[Example], batch_size: int = 64, max_seq_length: int = 128,
            device: str | torch.device = "auto", precision: str = "auto") -> np.ndarray:
    """Outputs of the fine-tuned model in ``model_dir`` for ``examples``, in input order.

    Classification: logits of shape ``(n, num_labels)``. Regression (STS-B): scores
    of shape ``(n,)``. Batched with dynamic padding, in eval mode, without gradients.
    """
    from transformers import AutoTokenizer, ElectraForSequenceClassification

    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: fine-tuned model not found (run the finetune stage first)")
    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = ElectraForSequenceClassification.from_pretrained(path, dtype=torch.float32).to(dev)
    return predict_loaded(model, tokenizer, examples, batch_size, max_seq_length, dev, precision)


def label_names(task: str) -> list[str] | None:
    """The names a registered GLUE model answers, in label-id order; None for regression (STS-B)."""
    spec = get_task(task)
    if spec.labels is None:
        return None
    names = list(GLUE_LABEL_NAMES.get(task, spec.labels))
    if len(names) != spec.num_labels:
        raise ValueError(f"{task}: {len(names)} label names for {spec.num_labels} labels")
    return names


def _load_model(model_dir: str, spec: TaskSpec, dropout: float):
    from transformers import ElectraForSequenceClassification

    if spec.is_regression:
        label_kwargs: dict[str, Any] = {"num_labels": 1, "problem_type": "regression"}
    else:
        assert spec.labels is not None
        label_kwargs = {"num_labels": spec.num_labels, "problem_type": "single_label_classification",
                        "id2label": dict(enumerate(spec.labels)),
                        "label2id": {label: i for i, label in enumerate(spec.labels)}}
    with expected_new_head("the classifier head of a fine-tuning run"):
        return ElectraForSequenceClassification.from_pretrained(
            model_dir, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
            # None would fall back to hidden_dropout_prob anyway; explicit beats a stale pretrain value.
            classifier_dropout=dropout,
            dtype=torch.float32,          # fine-tune in fp32 whatever dtype the checkpoint was saved in
            **label_kwargs)


# --- the kind -------------------------------------------------------------------------

class GlueTask(TaskBase):
    """A GLUE task (its :class:`~electra.tasks.glue.TaskSpec` by name); STS-B's regression
    differs only in its labels, head and rows, which :attr:`spec` says."""

    kind = "glue"
    entry_class = GlueEntry
    group = "glue"

    @property
    def spec(self) -> TaskSpec:
        return get_task(self.name)

    def read(self, split: str) -> list[Example]:
        return read_split(self.entry.data, self.name, split)

    def skip_reason(self) -> str | None:
        path = Path(self.entry.data) / "train.tsv"
        return None if path.is_file() else f"{path} does not exist: no train split, evaluation-only here"

    def dev_split(self) -> tuple[list, str | None]:
        return self.read("dev"), None

    def finetune_seed(self, seed: int, run_dir: Path, logger: MetricLogger, progress: bool,
                      device: torch.device) -> dict[str, Any]:
        from transformers import AutoTokenizer

        cfg, spec, settings = self.cfg, self.spec, self.settings()
        started = time.perf_counter()
        # 1. Reseed per task and seed so one run's result does not depend on which ran before it.
        seed_everything(seed)
        # 2. The training subset is the same for every seed: the seeds measure fine-tuning noise.
        train = subsample(self.read("train"), settings["max_train_examples"], cfg.seed)
        if not train:
            raise ValueError(f"{Path(self.entry.data) / 'train.tsv'}: no training examples")
        tokenizer = AutoTokenizer.from_pretrained(cfg.model_dir)
        features = encode(tokenizer, train, settings["max_seq_length"])
        dtype = torch.float32 if spec.is_regression else torch.long
        labels = torch.tensor([ex.label for ex in train], dtype=dtype)            # (n,)
        model = _load_model(cfg.model_dir, spec, cfg.dropout).to(device)

        def make_batch(idx: list[int]) -> dict[str, torch.Tensor]:
            return {**collate([features[i] for i in idx], pad_id(tokenizer)), "labels": labels[idx]}

        # 3. The shared recipe, then the model swapped into place.
        trained = train_loop(
            model, [len(f["input_ids"]) for f in features], make_batch, lr=settings["lr"],
            layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps,
            epochs=settings["epochs"], batch_size=settings["batch_size"], warmup_fraction=cfg.warmup_fraction,
            seed=seed, device=device, logger=logger, name=self.name, progress=progress,
            precision=task_precision(cfg))
        model_dir = save_finetuned(model, tokenizer, run_dir / "model")
        return {"train_examples": len(train), "steps": trained["steps"], "epochs": settings["epochs"],
                "lr": settings["lr"], "batch_size": settings["batch_size"],
                "max_seq_length": settings["max_seq_length"], "train_loss": trained["train_loss"],
                "curve": trained["curve"], "seconds": time.perf_counter() - started,
                "model_dir": str(model_dir), "num_labels": spec.num_labels}

    def evaluate_run(self, run: dict[str, Any], examples: list, batch_size: int, device: Any,
                     seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        spec = self.spec
        outputs = predict(run["model_dir"], examples, batch_size, run.get("max_seq_length", 128), device,
                          task_precision(self.cfg))
        labels = np.asarray([ex.label for ex in examples])
        scores = metrics(self.name, outputs, labels)
        if spec.is_regression:
            rows = [{"index": i, "line": ex.line, "label": ex.label, "prediction": float(p), "score": float(p)}
                    for i, (ex, p) in enumerate(zip(examples, outputs, strict=True))]
        else:
            probs = _softmax(outputs.astype(np.float64))                         # (n, labels)
            rows = [{"index": i, "line": ex.line, "label": int(ex.label), "prediction": int(p.argmax()),
                     "probabilities": [float(x) for x in p]}
                    for i, (ex, p) in enumerate(zip(examples, probs, strict=True))]
        scores = self.with_interval(scores, rows, seed)
        if not spec.is_regression:
            preds = outputs.argmax(axis=1)
            scores["confusion"] = _confusion(labels.astype(int), preds.astype(int), spec.num_labels)
        return scores, rows

    def statistic(self, rows: Sequence[dict[str, Any]]) -> Callable[[np.ndarray], float]:
        main = self.spec.main_metric
        preds = np.asarray([r["prediction"] for r in rows])
        labels = np.asarray([r["label"] for r in rows])
        return lambda idx: float(metrics(self.name, preds[idx], labels[idx])[main])

    def row_key(self, row: dict[str, Any]) -> str:
        return str(row["line"])

    def row_gold(self, row: dict[str, Any]) -> Any:
        return row["label"]

    def serving(self, summary: dict[str, Any]) -> ServingSpec:
        spec, names = self.spec, label_names(self.name)
        run = summary["runs"][str(summary["seeds"][0])]
        length = int(run.get("max_seq_length", summary.get("max_seq_length", 128)))
        if spec.is_pair:
            columns: tuple[str | None, ...] = ("text", "text_pair")
            example: Any = {"text": ["the chef cooked the meal ."], "text_pair": ["the meal was cooked by the chef ."]}
        else:
            # One unnamed string column: a list of strings is accepted as well as a `text` column
            # (MLflow refuses a plain list against a named column).
            columns, example = (None,), ["the chef cooked a wonderful meal ."]
        output = {"score": [2.5]} if names is None else {"label": [names[-1]], "score": [0.9]}
        return ServingSpec(entry="classifier_model.py",
                           settings={"task": self.name, "pair": spec.is_pair, "max_seq_length": length},
                           input_columns=columns, input_example=example, output_example=output, label_names=names)

    def datasets(self) -> list[tuple[str, str, str]]:
        return [(f"glue-{self.name}", self.entry.data, "finetuning")]

    def card_info(self) -> CardInfo:
        spec = self.spec
        return CardInfo(
            title=f"GLUE {spec.folder}", use=TASK_USE.get(self.name, f"the GLUE task {self.name}"),
            hf_task=("text-classification", "Text Classification"),
            dataset={"name": f"GLUE {spec.folder}", "type": "nyu-mll/glue", "config": self.name,
                     "split": "validation"},
            metrics=list(spec.metric_names), main=spec.main_metric, paths=[self.entry.data],
            aliases=(self.name, spec.folder.lower()), benchmark="GLUE")

    def report_lines(self, section: dict[str, Any], cell: Callable[[dict], str]) -> list[str]:
        return []         # the report's GLUE table shows it


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _confusion(gold: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (gold, pred), 1)
    return matrix.tolist()

