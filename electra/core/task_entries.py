"""The entries of ``finetune.catalog``: one per task, validated by its ``kind``.

Each task carries its own kind, data and overrides of the recipe (:class:`TaskConfig`).
:data:`TASK_ENTRIES` maps a kind to its entry class (a discriminated union on ``kind``
that ``electra.tasks.base.register_task`` extends); :data:`DEFAULT_TASKS` gives the
tasks known without an entry in params. :class:`~electra.core.config.FinetuneConfig`
holds them; it lives beside, in :mod:`electra.core.config`, which re-exports these.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class TaskConfig(BaseModel):
    """Per-task overrides of the fine-tuning recipe (None: the ``finetune`` section's value)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: float | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    max_train_examples: int | None = Field(default=None, ge=1)
    max_seq_length: int | None = Field(default=None, ge=8)
    batch_size: int | None = Field(default=None, ge=1)


class TaskEntry(TaskConfig):
    """One task of ``finetune.catalog``: its kind, the data it reads, its own overrides.

    ``data`` is the one file or folder holding everything the task reads (the DVC
    dependency of its ``finetune@<task>`` stage); a kind's file names are relative to it.
    Each kind subclasses this with its own fields; :data:`TASK_ENTRIES` maps a kind to
    its class, so an entry is validated by its ``kind`` (a discriminated union that
    ``electra.tasks.base.register_task`` can extend).
    """

    kind: str
    data: str

    def files(self) -> list[str]:
        """The files and folders the task reads (each must exist before it trains)."""
        return [self.data]

    def check(self, ft: Any) -> None:
        """Raise ValueError when the entry cannot work with the section's recipe (``ft``: the
        ``FinetuneConfig`` holding it)."""


class GlueEntry(TaskEntry):
    """A GLUE task: ``data`` is its folder of ``train.tsv`` and ``dev.tsv``."""

    kind: Literal["glue"] = "glue"


class QAEntry(TaskEntry):
    """Extractive QA on SQuAD v1.1/v2.0 files under ``data``. Without ``dev_file`` the
    ``file`` is split by article (XQuAD has no train split): ``dev_fraction`` of the
    articles are held out."""

    kind: Literal["qa"] = "qa"
    data: str = "data/qa/xquad"
    file: str = "xquad.en.json"
    dev_file: str | None = None
    dev_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    version_2: bool = False
    doc_stride: int = Field(default=128, ge=1)
    max_answer_length: int = Field(default=30, ge=1)

    def files(self) -> list[str]:
        return [str(Path(self.data) / f) for f in (self.file, self.dev_file) if f]

    def check(self, ft: Any) -> None:
        length = self.max_seq_length or ft.max_seq_length
        # A window holds [CLS] question [SEP] context [SEP] with the question cut at 64 tokens;
        # the stride must leave room for new context in each window.
        if self.doc_stride >= length - 64 - 3:
            raise ValueError(
                f"doc_stride ({self.doc_stride}) must be below the QA max_seq_length ({length}) "
                f"minus 67 (question of up to 64 tokens and 3 special tokens)"
            )


class NEREntry(TaskEntry):
    """Named-entity recognition on CoNLL files under ``data`` (token<TAB>tag, BIO)."""

    kind: Literal["ner"] = "ner"
    data: str = "data/ner/wnut17"
    train_file: str = "wnut17train.conll"
    dev_file: str = "emerging.dev.conll"

    def files(self) -> list[str]:
        return [str(Path(self.data) / f) for f in (self.train_file, self.dev_file)]


# kind -> entry class: how an entry of ``finetune.catalog`` is validated.
TASK_ENTRIES: dict[str, type[TaskEntry]] = {"glue": GlueEntry, "qa": QAEntry, "ner": NEREntry}

# The tasks known without an entry in params: name -> the entry's fields. "{data_dir}" is
# the section's ``data_dir`` (GLUE's folder). A task kind registered later may add its own.
DEFAULT_TASKS: dict[str, dict[str, Any]] = {
    **{name: {"kind": "glue", "data": f"{{data_dir}}/{folder}"} for name, folder in (
        ("sst2", "SST-2"), ("mrpc", "MRPC"), ("rte", "RTE"), ("cola", "CoLA"), ("stsb", "STS-B"),
        ("qnli", "QNLI"))},
    "qa": {"kind": "qa"},
    "ner": {"kind": "ner"},
}


def task_entry(name: str, fields: Mapping[str, Any] | TaskEntry | None, data_dir: str = "data/glue") -> TaskEntry:
    """The entry of task ``name``: ``fields`` over its default (:data:`DEFAULT_TASKS`),
    validated by the class of its ``kind``. Raises ValueError naming the task."""
    if isinstance(fields, TaskEntry):
        return fields
    merged = {k: (v.format(data_dir=data_dir) if isinstance(v, str) else v)
              for k, v in DEFAULT_TASKS.get(name, {}).items()}
    merged.update(fields or {})
    kind = merged.get("kind")
    if kind is None:
        raise ValueError(f"finetune.tasks: unknown task {name!r} (known: {sorted(DEFAULT_TASKS)}; "
                         f"or give finetune.catalog.{name} with a kind)")
    if kind not in TASK_ENTRIES:
        raise ValueError(f"finetune.catalog.{name}: unknown kind {kind!r} (known: {sorted(TASK_ENTRIES)})")
    try:
        return TASK_ENTRIES[kind].model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"finetune.catalog.{name} ({kind}): {problems}") from None
