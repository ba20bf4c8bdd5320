"""What every task kind shares beyond the recipe: :class:`TaskBase`, the defaults of the
:class:`~electra.tasks.base.Task` protocol (construction, settings, logging, the main
metric's interval, a plain report section), and the descriptions a kind gives of its
served model (:class:`ServingSpec`) and of itself on a model card (:class:`CardInfo`).
A kind subclasses :class:`TaskBase` and overrides the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from electra.core import stats
from electra.core.config import FinetuneConfig, TaskEntry
from electra.core.tracking import MetricLogger
from electra.tasks.recipe import task_settings

# Resamples of each task's main-metric interval (95%, over dev examples).
BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class ServingSpec:
    """How a task's registered model is served: a pyfunc from code (``electra/registry/serving/<entry>``).

    ``input_columns``: the string columns of its input (``(None,)``: one unnamed column,
    so a plain list of strings is accepted); ``input_example`` a list of strings or a dict
    of columns; ``output_example`` a dict of columns (the signature's outputs).
    ``label_names``, when set, are written into the logged copy's ``id2label``.
    """

    entry: str
    settings: dict[str, Any]
    input_columns: tuple[str | None, ...]
    input_example: Any
    output_example: dict[str, list]
    label_names: list[str] | None = None


@dataclass(frozen=True)
class CardInfo:
    """What a model card says about a task: its title, Hugging Face ids, metrics, data."""

    title: str
    use: str
    hf_task: tuple[str, str]
    dataset: dict[str, str]
    metrics: list[str]
    main: str
    paths: list[str]
    # Strings naming the task in a logged dataset's name or source (case-insensitive words).
    aliases: tuple[str, ...] = ()
    # The benchmark whose own terms LICENSES.md quotes ("GLUE"), if any.
    benchmark: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def scalars(scores: dict[str, Any]) -> dict[str, float]:
    """The numeric scores (bools, lists and tables left out), as floats."""
    return {k: float(v) for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class TaskBase:
    """Defaults shared by the task kinds; ``kind``, ``entry_class`` and ``group`` are set by each."""

    kind: ClassVar[str]
    entry_class: ClassVar[type[TaskEntry]]
    group: ClassVar[str | None] = None

    def __init__(self, name: str, entry: TaskEntry, cfg: FinetuneConfig) -> None:
        self.name = name
        self.entry = entry
        self.cfg = cfg

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def settings(self) -> dict[str, Any]:
        """The effective recipe settings (the entry's overrides over the section's)."""
        return task_settings(self.cfg, self.name)

    def skip_reason(self) -> str | None:
        for file in self.entry.files():
            if not _exists(file):
                raise FileNotFoundError(f"{file}: data file for task {self.name!r} not found (finetune params)")
        return None

    def statistic(self, rows: Sequence[dict[str, Any]]) -> Callable[[np.ndarray], float]:
        raise NotImplementedError

    def with_interval(self, scores: dict[str, Any], rows: Sequence[dict[str, Any]], seed: int) -> dict[str, Any]:
        """``scores`` with ``main_ci``: the 95% bootstrap interval of :meth:`statistic` over ``rows``."""
        scores["main_ci"] = list(stats.bootstrap_ci(self.statistic(rows), len(rows), BOOTSTRAP_RESAMPLES, seed=seed))
        return scores

    def log_run(self, logger: MetricLogger, scores: dict[str, Any]) -> None:
        logger.log_metrics(scalars(scores))

    def report_lines(self, section: dict[str, Any], cell: Callable[[dict], str]) -> list[str]:
        info = self.card_info()  # type: ignore[attr-defined]
        return ["", f"## {info.title}", "", f"| {info.main} (95% CI) | dev examples |", "|---|---|",
                f"| {cell(section)} | {section.get('dev_examples', '–')} |"]


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).exists()
