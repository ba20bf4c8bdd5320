"""The shape of ``metrics.json``, in one place: where each task's section sits, the GLUE
score, and the published rows the report and the model card compare with.

``metrics.json`` holds one section per task: under a group when the task's kind has one
(``{"glue": {"sst2": {...}, "score": .., "score_tasks": [..]}}``), else at the top level
(``{"qa": {...}, "ner": {...}}``), beside ``bias`` and ``gain_over_scratch`` (the
summary of the scratch control). A section with ``main`` was
evaluated; one with ``skipped`` was not trained. Readers that hold only the file (the
gate, the model card) find sections by that shape, never by a task's kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Top-level keys of metrics.json that are not tasks.
NOT_TASKS = ("bias", "gain_over_scratch")
GROUP_SUMMARY_KEYS = ("score", "score_tasks")

# GLUE dev results published in the google-research/electra README ("Expected
# results"; GLUE dev, pretrained on different data: OpenWebText, or the paper's
# Wikipedia + BooksCorpus + more for Small++). In percent.
REFERENCE_ROWS = {
    "ELECTRA-Small-OWT (google-research/electra README)": {
        "cola": 56.8, "sst2": 88.3, "mrpc": 87.4, "stsb": 86.8, "qnli": 87.9, "rte": 68.5},
    "ELECTRA-Small++ (google-research/electra README)": {
        "cola": 57.0, "sst2": 91.2, "mrpc": 88.0, "stsb": 87.5, "qnli": 88.4, "rte": 66.7},
}
# The paper's GLUE column order (WNLI excluded); the GLUE score averages over these.
GLUE_ORDER = ("cola", "sst2", "mrpc", "stsb", "qnli", "rte")
# The task whose registered model the Equity Evaluation Corpus scores (its bias is its own).
EEC_TASK = "sst2"


def place(result: dict[str, Any], task: str, group: str | None, section: dict[str, Any]) -> None:
    """Put ``task``'s section into ``result`` under its group (or at the top level)."""
    if group is None:
        result[task] = section
    else:
        result.setdefault(group, {})[task] = section


def glue_score(result: dict[str, Any]) -> None:
    """Add the ELECTRA paper's GLUE score to ``result["glue"]``: the plain mean of the main
    numbers of the GLUE tasks evaluated (CoLA MCC, STS-B Spearman, accuracy elsewhere)."""
    glue = result.setdefault("glue", {})
    tasks = [t for t in GLUE_ORDER if t in glue and "main" in glue[t]]
    glue["score"] = float(np.mean([glue[t]["main"] for t in tasks])) if tasks else None
    glue["score_tasks"] = tasks


def _is_task(section: Any) -> bool:
    return isinstance(section, dict) and ("main" in section or "skipped" in section)


def all_sections(metrics: dict[str, Any]) -> dict[str, dict]:
    """Every task's section of ``metrics`` (grouped ones by their own name), skipped ones too."""
    out: dict[str, dict] = {}
    for key, value in (metrics or {}).items():
        if key in NOT_TASKS or not isinstance(value, dict):
            continue
        if _is_task(value):
            out[key] = value
        else:   # a group: its members, beside its summary keys
            out.update({t: s for t, s in value.items() if t not in GROUP_SUMMARY_KEYS and _is_task(s)})
    return out


def task_sections(metrics: dict[str, Any]) -> dict[str, dict]:
    """Every evaluated task's section (with ``main``), skipped ones left out."""
    return {t: s for t, s in all_sections(metrics).items() if "main" in s}


def section_of(metrics: dict[str, Any], task: str) -> dict[str, Any] | None:
    """The section of ``task`` at the top level or in a group (whatever it holds), or None."""
    if task not in NOT_TASKS and isinstance((metrics or {}).get(task), dict):
        return metrics[task]
    for key, value in (metrics or {}).items():
        if key not in NOT_TASKS and isinstance(value, dict) and isinstance(value.get(task), dict):
            return value[task]
    return None


def metric_key(task: str, metrics: dict[str, Any] | None = None, group: str | None = None) -> str:
    """The dotted key of a task's section in metrics.json (``glue.sst2``, ``qa``): where
    ``metrics`` holds it, else under ``group``."""
    for key, value in (metrics or {}).items():
        if key == task and _is_task(value):
            return task
        if isinstance(value, dict) and key not in NOT_TASKS and _is_task(value.get(task)):
            return f"{key}.{task}"
    return f"{group}.{task}" if group else task
