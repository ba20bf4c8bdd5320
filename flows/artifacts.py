"""What the flow shows in the Prefect UI: pretraining progress, the evaluation table, the
gate report and model cards, the compare report, and the run's summary with links to
MLflow. A display never fails the flow."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from electra.core.config import Params
from electra.evaluation.results import all_sections


class PretrainProgress:
    """A metric logger that drives a Prefect progress artifact from the training step."""

    def __init__(self, total_steps: int, key: str = "pretrain-progress") -> None:
        self.total = max(1, total_steps)
        self.key = key
        self.artifact_id = None
        self.shown = -1.0

    def _show(self, percent: float) -> None:
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(
                    progress=percent, key=self.key, description="Pretraining: optimizer steps done")
            else:
                update_progress_artifact(self.artifact_id, progress=percent)
            self.shown = percent
        except Exception as exc:  # the display must never stop the training
            get_run_logger().warning("progress artifact not updated: %s", exc)

    def log_metrics(self, metrics, step: int | None = None) -> None:
        if step is None:
            return
        percent = round(min(100.0, 100.0 * step / self.total), 1)
        if percent - self.shown >= 1.0 or percent >= 100.0 > self.shown:
            self._show(percent)

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        return None

    @contextlib.contextmanager
    def child(self, name: str, tags=None) -> Iterator[PretrainProgress]:
        yield self


def publish_registration(result: dict) -> None:
    """The gate report and each model card as markdown artifacts in the Prefect UI."""
    report = Path(result.get("gate_report", ""))
    if report.is_file():
        create_markdown_artifact(key="gate-report", markdown=report.read_text(encoding="utf-8"),
                                 description="Promotion gate: every check against the champion")
    for name, card in (result.get("model_cards") or {}).items():
        if Path(card).is_file():
            key = "model-card-" + "".join(ch if ch.isalnum() else "-" for ch in name.lower())
            create_markdown_artifact(key=key, markdown=Path(card).read_text(encoding="utf-8"),
                                     description=f"MODEL_CARD.md of {name} version {result['versions'][name]}")


def _mlflow_links(params: Params) -> tuple[str | None, str | None]:
    """(MLflow UI base url, experiment id) when tracking goes to a server; (None, id) otherwise."""
    from electra.core.tracking import configure, redact_uri, tracking_uri

    uri = redact_uri(tracking_uri(params.tracking))
    try:
        experiment_id = configure(params.tracking)
    except Exception:  # a link is a convenience: never fail the flow for it
        experiment_id = None
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else None
    return base, experiment_id


def summary_markdown(results: dict[str, dict], params: Params) -> str:
    """Stage timings and states, with links to their MLflow runs and the registry versions."""
    from electra.core.tracking import redact_uri, tracking_uri

    base, experiment_id = _mlflow_links(params)

    def run_link(run_id: str) -> str:
        if not run_id:
            return ""
        if base and experiment_id:
            return f"[`{run_id[:12]}`]({base}/#/experiments/{experiment_id}/runs/{run_id})"
        return f"`{run_id}`"

    lines = ["# ELECTRA pipeline", "", "| stage | state | seconds | MLflow run |", "|---|---|---|---|"]
    for name, r in results.items():
        if name in ("pipeline", "promote", "dvc-commit") or not isinstance(r, dict):
            continue
        state = "skipped (unchanged)" if r.get("up_to_date") else (
            f"ran on `{r['deployment']}`" if r.get("deployment") else "ran")
        lines.append(f"| {name} | {state} | {r.get('seconds', 0):.1f} | {run_link(r.get('mlflow_run_id', ''))} |")
    parent = results.get("pipeline", {}).get("mlflow_run_id")
    if parent:
        lines += ["", f"Pipeline run (parent of the stage runs): {run_link(parent)}."]
    reg = results.get("register", {})
    if reg.get("versions"):
        lines += ["", "| registered model | version | gate |", "|---|---|---|"]
        outcomes = reg.get("outcomes") or {}
        for model, version in reg["versions"].items():
            link = f"[{version}]({base}/#/models/{model}/versions/{version})" if base else str(version)
            lines.append(f"| {model} | {link} | {outcomes.get(model, '')} |")
    if not base:
        lines += ["", f"Browse the runs with `mlflow ui --backend-store-uri {redact_uri(tracking_uri(params.tracking))}`."]
    commit = results.get("dvc-commit")
    if commit:
        lines += ["", f"DVC: {commit.get('skipped') or 'dvc.lock updated (dvc commit); dvc status clean: ' + str(commit.get('clean'))}."]
    return "\n".join(lines)


def evaluation_table(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task (and the GLUE score) from evaluate's metrics.json, for a table artifact."""
    rows: list[dict[str, Any]] = []

    def row(task: str, section: dict[str, Any]) -> None:
        if "skipped" in section:
            rows.append({"task": task, "main": None, "ci95": "", "dev examples": None, "note": section["skipped"]})
            return
        ci = section.get("main_ci") or []
        rows.append({"task": task, "main": round(section.get("main", float("nan")), 4),
                     "ci95": f"[{ci[0]:.4f}, {ci[1]:.4f}]" if len(ci) == 2 else "",
                     "dev examples": section.get("dev_examples"), "note": section.get("dev", "")})

    for name, section in all_sections(metrics).items():   # GLUE's tasks, QA, NER, ...
        row(name, section)
    glue = metrics.get("glue", {})
    if glue.get("score") is not None:
        rows.append({"task": "GLUE score", "main": round(glue["score"], 4), "ci95": "",
                     "dev examples": None, "note": "mean over " + ", ".join(glue.get("score_tasks", []))})
    return rows


def publish_evaluation(params: Params) -> None:
    from electra.core.files import read_json

    path = Path(params.evaluate.output_dir) / "metrics.json"
    if path.is_file():
        create_table_artifact(key="evaluation-results", table=evaluation_table(read_json(path)),
                              description="Dev results: median over seeds, 95% bootstrap interval")


def publish_compare(result: dict) -> None:
    """The comparison's report as a markdown artifact."""
    report = Path(result["report"])
    if report.is_file():
        create_markdown_artifact(key="electra-compare-report", markdown=report.read_text(encoding="utf-8"),
                                 description=result.get("conclusion", ""))
