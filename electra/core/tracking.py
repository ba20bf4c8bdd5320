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

from electra.core.config import Params, TrackingConfig

PARENT_RUN_ENV = "ELECTRA_PARENT_RUN_ID"


def tracking_uri(cfg: TrackingConfig) -> str:
    """The tracking URI in force: env var, then params, then the embedded sqlite store."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if cfg.tracking_uri:
        return cfg.tracking_uri
    return f"sqlite:///{Path(cfg.store_path).resolve()}"


def redact_uri(uri: str) -> str:
    """``uri`` without a password or token, for anything written down (artifacts, tags, links)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(uri)
    secret_keys = ("token", "key", "secret", "password")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(w in k.lower() for k, _ in pairs for w in secret_keys):
        return uri
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    query = urlencode([(k, "***" if any(w in k.lower() for w in secret_keys) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def configure(cfg: TrackingConfig) -> str:
    """Point mlflow at the tracking store and experiment; return the experiment id."""
    import mlflow

    uri = tracking_uri(cfg)
    # mlflow also exports the URIs as MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, which
    # tracking_uri() ranks above params: a later stage in this process with another
    # ``tracking`` section, or a process started from it, would log to this store. The
    # URI is set in mlflow itself; the environment stays what the user gave.
    exported = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:") or uri.startswith("file:"):
        # MLflow also uses the tracking store for the registry unless told otherwise.
        mlflow.set_registry_uri(uri)
    else:
        mlflow.set_registry_uri(None)    # the registry of a previous store must not linger
    for key, value in exported.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
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
    """The git commit of the working tree and whether it has uncommitted changes.

    Outside a git checkout (a container image holds the code, not ``.git``) the commit
    comes from ``ELECTRA_GIT_COMMIT`` / ``ELECTRA_GIT_DIRTY``, set when the image was built;
    with neither, both say "unknown" (never a clean "false" nobody checked).
    """
    def _git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):   # no git binary in the image
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = _git("rev-parse", "HEAD")
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no")
        return {"git_commit": commit, "git_dirty": str(bool(status)).lower()}
    return {"git_commit": os.environ.get("ELECTRA_GIT_COMMIT") or "unknown",
            "git_dirty": os.environ.get("ELECTRA_GIT_DIRTY") or "unknown"}


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
    """Logs to the MLflow run active when it was made, through a buffer.

    A metric that cannot be sent (the tracking server restarting, a network blip beyond
    MLflow's own HTTP retries) stays in the buffer and goes with the next call, in order,
    with its original step and timestamp; :meth:`flush` (at the end of the run) retries
    with back-off, so a server that is down for a while loses nothing.
    """

    def __init__(self, run_id: str | None = None) -> None:
        import mlflow

        run = mlflow.active_run()
        self.run_id = run_id or (run.info.run_id if run else None)
        self.pending: list[tuple[dict[str, float], int | None, int]] = []
        self._warned = False

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        self.pending.append(({k: float(v) for k, v in metrics.items()}, step, int(time.time() * 1000)))
        self._send()

    def _send(self) -> bool:
        """Send what is pending, oldest first; False (kept for later) when the server refuses."""
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        if self.run_id is None:  # made outside any run: MLflow's fluent API decides where they go
            import mlflow

            while self.pending:
                metrics, step, _ = self.pending.pop(0)
                mlflow.log_metrics(metrics, step=step)
            return True
        client = MlflowClient()
        while self.pending:
            metrics, step, timestamp = self.pending[0]
            try:
                client.log_batch(self.run_id, metrics=[Metric(k, v, timestamp, step or 0)
                                                       for k, v in metrics.items()])
            except Exception as exc:  # the server is unreachable or failing: keep it, say so once
                if not self._warned:
                    import logging

                    logging.getLogger(__name__).warning(
                        "tracking server unavailable (%s); buffering metrics until it is back", exc)
                    self._warned = True
                return False
            self.pending.pop(0)
        self._warned = False
        return True

    def flush(self, attempts: int = 6, first_delay_s: float = 2.0) -> None:
        """Send everything pending, retrying with exponential back-off; raise if it never goes."""
        import time

        delay = first_delay_s
        for attempt in range(attempts):
            if self._send():
                return
            if attempt < attempts - 1:
                time.sleep(delay)
                delay *= 2
        raise ConnectionError(f"{len(self.pending)} metric batches for MLflow run {self.run_id} could not be sent "
                              f"after {attempts} attempts: the tracking server is unavailable")

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        import mlflow

        self.flush()
        mlflow.log_artifacts(local_dir, artifact_path=artifact_path)

    @contextlib.contextmanager
    def child(self, name: str, tags: Mapping[str, str] | None = None) -> Iterator[MlflowLogger]:
        """A nested MLflow run under the active one (same experiment), active inside the block."""
        import mlflow

        parent = mlflow.active_run()
        experiment_id = parent.info.experiment_id if parent else None
        with mlflow.start_run(run_name=name, nested=True, experiment_id=experiment_id, tags=dict(tags or {})):
            logger = MlflowLogger()
            yield logger
            logger.flush()


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
