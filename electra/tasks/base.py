"""The Task protocol and the registry of task kinds.

A *kind* (GLUE classification or regression, extractive QA, NER) is one class that
implements :class:`Task`; :func:`register_task` files it under its ``kind`` (and files
its config entry class with :mod:`electra.core.config`, so ``finetune.catalog`` entries
of that kind validate). A *task* is one entry of ``finetune.catalog``: a name, its kind,
its data. :func:`task_for` builds the kind's object for one task of a ``FinetuneConfig``.

The stages (finetune, evaluate, register, the gate, the report, the model card) only
ever call the protocol: they never ask which kind a task is. Adding a kind is one class
and one :func:`register_task` call (see ``tests/tasks/test_extra_task.py``).

The built-in kinds are registered on first use (:func:`_builtin_kinds`); their modules
never import this one (they satisfy the protocol by shape), so there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from electra.core import config as config_module
from electra.core.config import FinetuneConfig, TaskEntry
from electra.core.tracking import MetricLogger
from electra.tasks.common import CardInfo, ServingSpec


@runtime_checkable
class Task(Protocol):
    """One task of one kind, bound to its name, its catalog entry and the finetune section.

    Every method the stages call; none of them is told the kind. Rows are the
    per-example prediction records ``evaluate`` writes (JSON Lines) and the gate reads.
    """

    kind: ClassVar[str]
    entry_class: ClassVar[type[TaskEntry]]
    # The metrics.json section holding the task ("glue"); None: its own top-level section.
    group: ClassVar[str | None]
    name: str
    entry: TaskEntry
    cfg: FinetuneConfig

    def skip_reason(self) -> str | None:
        """Why the task cannot be trained here (it is then evaluation-only), or None.
        Raises FileNotFoundError naming a missing data file."""

    def dev_split(self) -> tuple[list, str | None]:
        """The dev examples, and a note saying how the dev set was made (or None)."""

    def finetune_seed(self, seed: int, run_dir: Path, logger: MetricLogger, progress: bool,
                      device: torch.device) -> dict[str, Any]:
        """Fine-tune one seed's model into ``run_dir/model``; its result (``model_dir``,
        ``train_loss``, ``curve``, ``seconds``, ``max_seq_length``, ...)."""

    def evaluate_run(self, run: dict[str, Any], examples: list, batch_size: int, device: Any,
                     seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One seed's model on the dev examples: its scores (with ``main`` and ``main_ci``)
        and one prediction row per example."""

    def statistic(self, rows: Sequence[dict[str, Any]]) -> Callable[[np.ndarray], float]:
        """The main metric on a resample of ``rows`` (an index array): what the bootstrap
        interval and the gate's paired bootstrap resample."""

    def row_key(self, row: dict[str, Any]) -> str:
        """What identifies a dev example across two evaluations of the same data."""

    def row_gold(self, row: dict[str, Any]) -> Any:
        """The row's gold answer (two evaluations are comparable only when they agree)."""

    def log_run(self, logger: MetricLogger, scores: dict[str, Any]) -> None:
        """Log one seed's scores to the tracker."""

    def serving(self, summary: dict[str, Any]) -> ServingSpec:
        """How the registered model (the first seed's, ``summary["model_dir"]``) is served."""

    def datasets(self) -> list[tuple[str, str, str]]:
        """The data it was built from: ``(name, path, role)``, role finetuning or evaluation."""

    def card_info(self) -> CardInfo:
        """What its model card says about it."""

    def report_lines(self, section: dict[str, Any], cell: Callable[[dict], str]) -> list[str]:
        """Its section of ``report.md``, ``cell`` rendering 'median [interval]' as the report
        does (a kind shown in a group's table, GLUE's, gives none)."""


# kind -> the class implementing it.
_KINDS: dict[str, type] = {}


def register_task(kind: str, impl: type, entry_class: type[TaskEntry] | None = None,
                  defaults: dict[str, dict[str, Any]] | None = None) -> None:
    """File ``impl`` (a :class:`Task` class) under ``kind``, and its config entry class
    (``impl.entry_class`` unless given) with :data:`electra.core.config.TASK_ENTRIES`.

    ``defaults`` (task name -> entry fields) adds tasks known without a catalog entry, as
    ``sst2`` is: ``finetune.tasks=[name]`` then selects it. Registering a kind again
    replaces it (a test may).
    """
    _KINDS[kind] = impl
    config_module.TASK_ENTRIES[kind] = entry_class or impl.entry_class
    for name, fields in (defaults or {}).items():
        config_module.DEFAULT_TASKS[name] = {"kind": kind, **fields}


def _builtin_kinds() -> None:
    """Register GLUE, QA and NER the first time a kind is looked up."""
    if {"glue", "qa", "ner"} <= set(_KINDS):
        return
    from electra.tasks.glue_task import GlueTask
    from electra.tasks.ner import NERTask
    from electra.tasks.qa import QATask

    for impl in (GlueTask, QATask, NERTask):
        _KINDS.setdefault(impl.kind, impl)


def get_task(kind: str) -> type:
    """The class registered for ``kind``; ValueError naming the known kinds."""
    _builtin_kinds()
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown task kind {kind!r} (known: {sorted(_KINDS)})") from None


def kinds() -> list[str]:
    """Every registered kind."""
    _builtin_kinds()
    return sorted(_KINDS)


def task_for(cfg: FinetuneConfig, name: str) -> Task:
    """The :class:`Task` of the selected task ``name`` of ``cfg``."""
    entry = cfg.entry(name)
    return get_task(entry.kind)(name, entry, cfg)


def task_named(name: str, finetune: FinetuneConfig | dict | None = None) -> Task | None:
    """The :class:`Task` of ``name`` from a finetune section (a config or its dumped dict,
    as the model card gets it), else from its default entry; None when neither knows it.

    For readers that hold only outputs (the gate's evidence, a model card): the row
    keys, statistic and card facts of a kind do not depend on the entry's recipe.
    """
    section = finetune.model_dump(mode="json") if isinstance(finetune, FinetuneConfig) else dict(finetune or {})
    catalog = section.get("catalog") if isinstance(section.get("catalog"), dict) else {}
    data_dir = section.get("data_dir") if isinstance(section.get("data_dir"), str) else "data/glue"
    _builtin_kinds()
    try:
        entry = config_module.task_entry(name, catalog.get(name) if isinstance(catalog.get(name), dict) else None,
                                         data_dir)
    except ValueError:
        return None
    # Built without the section's cross-checks (a QA window against the recipe's length):
    # what is read here (rows, statistic, card facts) does not depend on them.
    cfg = FinetuneConfig.model_construct(tasks=[name], catalog={name: entry}, data_dir=data_dir)
    return get_task(entry.kind)(name, entry, cfg)
