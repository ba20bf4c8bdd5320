"""GLUE tasks: a registry of the tasks this project fine-tunes on, strict readers, metrics.

Each task is described once (:data:`TASKS`): its folder under ``data/glue``, which
columns hold the text, how labels are read, and which metric the ELECTRA paper
reports for it. :func:`read_task` turns one split into :class:`Example` rows and
refuses malformed input with the file and line named; :func:`metrics` computes
the official GLUE dev metrics plus a ``"main"`` key.

All GLUE TSVs are read with ``csv.QUOTE_NONE`` (sentences contain bare ``"``)
and ``utf-8-sig`` (MRPC starts with a byte-order mark).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TASK_NAMES = ("sst2", "mrpc", "rte", "cola", "stsb", "qnli")


@dataclass(frozen=True)
class TaskSpec:
    """How one GLUE task is stored and scored.

    Columns are header names, or 0-based positions when the file has no header
    (CoLA). ``labels`` lists the raw label strings in id order; ``None`` means a
    regression target read as a float.
    """

    name: str
    folder: str
    text_a: str | int
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None
    metric_names: tuple[str, ...]
    main_metric: str
    has_header: bool = True
    # Columns a headerless file must have (only used when has_header is False).
    num_columns: int | None = None

    @property
    def is_regression(self) -> bool:
        """True for STS-B (a similarity score), False for the classification tasks."""
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Output size of the classifier: 1 for regression, else the number of classes."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        """True when examples are sentence pairs."""
        return self.text_b is not None


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        name="sst2", folder="SST-2", text_a="sentence", text_b=None, label="label",
        labels=("0", "1"), metric_names=("accuracy",), main_metric="accuracy",
    ),
    "mrpc": TaskSpec(
        name="mrpc", folder="MRPC", text_a="#1 String", text_b="#2 String", label="Quality",
        labels=("0", "1"), metric_names=("accuracy", "f1"), main_metric="accuracy",
    ),
    # Label ids follow the GLUE/HF convention: entailment = 0, not_entailment = 1.
    "rte": TaskSpec(
        name="rte", folder="RTE", text_a="sentence1", text_b="sentence2", label="label",
        labels=("entailment", "not_entailment"), metric_names=("accuracy",), main_metric="accuracy",
    ),
    # CoLA has no header: source code, label, original author's mark, sentence.
    "cola": TaskSpec(
        name="cola", folder="CoLA", text_a=3, text_b=None, label=1,
        labels=("0", "1"), metric_names=("mcc",), main_metric="mcc",
        has_header=False, num_columns=4,
    ),
    "stsb": TaskSpec(
        name="stsb", folder="STS-B", text_a="sentence1", text_b="sentence2", label="score",
        labels=None, metric_names=("pearson", "spearman"), main_metric="spearman",
    ),
    "qnli": TaskSpec(
        name="qnli", folder="QNLI", text_a="question", text_b="sentence", label="label",
        labels=("entailment", "not_entailment"), metric_names=("accuracy",), main_metric="accuracy",
    ),
}


@dataclass(frozen=True)
class Example:
    """One labelled GLUE example; ``line`` is its 1-based line number in the source file."""

    text_a: str
    text_b: str | None
    label: int | float
    line: int


def get_task(task: str) -> TaskSpec:
    """The :class:`TaskSpec` of ``task``; raises ValueError naming the known tasks."""
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"unknown GLUE task {task!r} (known: {list(TASK_NAMES)})") from None


def task_file(data_dir: str | Path, task: str, split: str) -> Path:
    """Path of ``{data_dir}/{Folder}/{split}.tsv`` (``data_dir`` is the ``glue`` folder)."""
    return Path(data_dir) / get_task(task).folder / f"{split}.tsv"


def _column_index(spec_col: str | int, header: list[str] | None, path: Path) -> int:
    if isinstance(spec_col, int):
        return spec_col
    assert header is not None
    try:
        return header.index(spec_col)
    except ValueError:
        raise ValueError(
            f"{path}:1: missing column {spec_col!r} in header (found {header})"
        ) from None


def _parse_label(spec: TaskSpec, raw: str, path: Path, line: int) -> int | float:
    value = raw.strip()
    if spec.labels is None:
        try:
            score = float(value)
        except ValueError:
            raise ValueError(f"{path}:{line}: label {raw!r} is not a number") from None
        if not math.isfinite(score):
            raise ValueError(f"{path}:{line}: label {raw!r} is not a finite number")
        return score
    try:
        return spec.labels.index(value)
    except ValueError:
        raise ValueError(
            f"{path}:{line}: unknown label {raw!r} (expected one of {list(spec.labels)})"
        ) from None


def read_task(data_dir: str | Path, task: str, split: str) -> list[Example]:
    """Read ``split`` (``train`` or ``dev``) of ``task`` from ``data_dir`` (the ``glue`` folder).

    Returns the examples in file order. Raises FileNotFoundError when the split is
    absent (QNLI has no train split here) and ValueError, naming the file and line,
    for a missing column, a row with the wrong number of fields, an empty text or
    an unknown label. Blank lines are skipped.
    """
    return read_split(Path(data_dir) / get_task(task).folder, task, split)


def read_split(folder: str | Path, task: str, split: str) -> list[Example]:
    """:func:`read_task` from the task's own folder (``{folder}/{split}.tsv``)."""
    spec = get_task(task)
    path = Path(folder) / f"{split}.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {split} split for GLUE task {task!r}")
    examples: list[Example] = []
    # newline="" lets csv see raw line ends; QUOTE_NONE because sentences hold bare quotes.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header: list[str] | None = None
        width = spec.num_columns
        if spec.has_header:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}:1: file is empty (expected a header row)")
            header = [h.strip() for h in header]
            width = len(header)
        cols = [spec.text_a, spec.label] + ([spec.text_b] if spec.text_b is not None else [])
        idx_a, idx_label, *rest = (_column_index(c, header, path) for c in cols)
        idx_b = rest[0] if rest else None
        assert width is not None
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < width:
                raise ValueError(
                    f"{path}:{line}: short row: expected {width} tab-separated fields, got {len(row)}"
                )
            if len(row) > width:
                # With QUOTE_NONE a stray tab inside a sentence would silently shift columns.
                raise ValueError(
                    f"{path}:{line}: too many fields: expected {width}, got {len(row)}"
                )
            text_a = row[idx_a].strip()
            text_b = row[idx_b].strip() if idx_b is not None else None
            if not text_a or (idx_b is not None and not text_b):
                raise ValueError(f"{path}:{line}: empty sentence")
            label = _parse_label(spec, row[idx_label], path, line)
            examples.append(Example(text_a=text_a, text_b=text_b, label=label, line=line))
    return examples


def metrics(
    task: str, predictions: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Official GLUE dev metrics for ``task`` plus ``"main"`` (the ELECTRA paper's metric).

    ``predictions`` are label ids, or logits of shape ``(n, num_labels)`` (argmax is
    taken), for classification; scores of shape ``(n,)`` or ``(n, 1)`` for STS-B.
    Keys: CoLA ``mcc``; SST-2/RTE/QNLI ``accuracy``; MRPC ``accuracy`` and ``f1``
    (positive class = paraphrase); STS-B ``pearson`` and ``spearman``. ``main`` is
    CoLA's mcc, STS-B's spearman, accuracy elsewhere. Values are fractions, not percent.
    """
    from electra.core import stats as m

    spec = get_task(task)
    preds = np.asarray(predictions)
    gold = np.asarray(labels)
    if spec.is_regression:
        preds = preds.reshape(len(preds), -1)
        if preds.shape[1] != 1:
            raise ValueError(f"{task}: regression predictions must have one value per example")
        preds = preds[:, 0].astype(np.float64)
        gold = gold.astype(np.float64)
    elif preds.ndim == 2:
        preds = preds.argmax(axis=1)
    if len(preds) != len(gold):
        raise ValueError(f"{task}: {len(preds)} predictions for {len(gold)} labels")
    if len(gold) == 0:
        raise ValueError(f"{task}: no examples to score")

    out: dict[str, float] = {}
    if spec.is_regression:
        out["pearson"] = m.pearson(preds, gold)
        out["spearman"] = m.spearman(preds, gold)
    else:
        preds = preds.astype(np.int64)
        gold = gold.astype(np.int64)
        if "accuracy" in spec.metric_names:
            out["accuracy"] = m.accuracy(gold, preds)
        if "f1" in spec.metric_names:
            out["f1"] = m.binary_f1(gold, preds, positive=1)
        if "mcc" in spec.metric_names:
            out["mcc"] = m.mcc(gold, preds)
    out["main"] = out[spec.main_metric]
    return out
