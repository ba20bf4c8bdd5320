"""MLflow tracking: one run per stage, named after the stage, with lineage tags.

The library talks to MLflow only through this module. With no
``MLFLOW_TRACKING_URI`` (and no ``tracking.tracking_uri``) it uses an embedded
store: a sqlite file and a local artifact folder in the working directory.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from electra.config import Params, TrackingConfig

PARENT_RUN_ENV = "ELECTRA_PARENT_RUN_ID"


def tracking_uri(cfg: TrackingConfig) -> str:
    """The tracking URI in force: env var, then params, then the embedded sqlite store."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg.tracking_uri:
        return cfg.tracking_uri
    return f"sqlite:///{Path(cfg.store_path).resolve()}"


def configure(cfg: TrackingConfig) -> str:
    """Point mlflow at the tracking store and experiment; return the experiment id."""
    import mlflow

    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:") or uri.startswith("file:"):
        # MLflow also uses the tracking store for the registry unless told otherwise.
        mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:"):
        # Without this MLflow would put artifacts under ./mlruns of whatever folder it runs in.
        artifact_location = Path(cfg.artifact_dir).resolve().as_uri()
    try:
        return mlflow.create_experiment(cfg.experiment, artifact_location=artifact_location)
    except Exception:  # another process created it between our check and create
        experiment = mlflow.get_experiment_by_name(cfg.experiment)
        if experiment is None:
            raise
        return experiment.experiment_id


def git_info(cwd: str | Path = ".") -> dict[str, str]:
    """The git commit of the working tree and whether it has uncommitted changes."""
    def _git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = _git("rev-parse", "HEAD") or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": str(bool(status)).lower()}


def flatten(prefix: str, data: Any) -> dict[str, Any]:
    """Flatten nested dicts into dotted keys (MLflow params are flat)."""
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), value))
        return out
    return {prefix: data}


class MetricLogger(Protocol):
    """What the training loops need from a logger (swappable: MLflow, or none in tests)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None: ...

    def child(self, name: str, tags: Mapping[str, str] | None = None) -> contextlib.AbstractContextManager[MetricLogger]:
        """A logger for one sub-run (a task and seed): a nested run where tracking has runs."""
        ...


class NullLogger:
    """A logger that drops everything (library calls made outside any tracking)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        return None

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        return None

    @contextlib.contextmanager
    def child(self, name: str, tags: Mapping[str, str] | None = None) -> Iterator[NullLogger]:
        yield self


class MlflowLogger:
    """Logs to the active MLflow run."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        import mlflow

        mlflow.log_artifacts(local_dir, artifact_path=artifact_path)

    @contextlib.contextmanager
    def child(self, name: str, tags: Mapping[str, str] | None = None) -> Iterator[MlflowLogger]:
        """A nested MLflow run under the active one (same experiment), active inside the block."""
        import mlflow

        parent = mlflow.active_run()
        experiment_id = parent.info.experiment_id if parent else None
        with mlflow.start_run(run_name=name, nested=True, experiment_id=experiment_id, tags=dict(tags or {})):
            yield MlflowLogger()


@contextlib.contextmanager
def stage_run(stage: str, params: Params, extra_tags: Mapping[str, str] | None = None,
              run_name: str | None = None) -> Iterator[Any]:
    """Open the MLflow run of one stage: named after it (``run_name``: one task of it, e.g.
    ``finetune@sst2``), its params section logged, lineage tagged."""
    import mlflow

    experiment_id = configure(params.tracking)
    tags = {
        "stage": stage,
        "profile": params.profile,
        "params_hash": params.params_hash(),
        f"{stage}_params_hash": params.section_hash(stage),
        **git_info(),
    }
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
    if flow_run:
        tags["prefect_flow_run_id"] = flow_run
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    tags.update(extra_tags or {})
    # CPU/GPU/memory utilisation sampled alongside the long-running training stage.
    system_metrics = stage == "pretrain"
    with mlflow.start_run(run_name=run_name or stage, experiment_id=experiment_id, tags=tags,
                          log_system_metrics=system_metrics) as run:
        section = getattr(params, stage).model_dump(mode="json")
        flat = {k: ("" if v is None else v) for k, v in flatten(stage, section).items()}
        # MLflow caps a param value at 6000 characters; long lists are summarised.
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        yield run
