"""Running the stages of the table: ``run_stage(name, params)`` and ``run_pipeline``.

Each door (the CLI, ``dvc.yaml`` through the CLI, the Prefect flow) calls
:func:`run_stage`, which opens the stage's MLflow run (named after the stage),
calls the stage's function from the table with the params, logs the small
result, records the run id next to the stage's outputs so that later stages
(``register``) can link back to it, and records what it was built from so that an
unchanged stage is skipped next time (:mod:`electra.pipeline.skip`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from electra.core.config import Params
from electra.core.files import write_json
from electra.core.tracking import (
    PARENT_RUN_ENV,
    MetricLogger,
    MlflowLogger,
    NullLogger,
    configure,
    flatten,
    stage_run,
)
from electra.pipeline.skip import record_state, record_task_states, stage_fingerprint, up_to_date
from electra.pipeline.table import PER_TASK, PIPELINE, get_stage, stage_name


def _check_task(stage: str, params: Params, task: str | None) -> None:
    if task is None:
        return
    if stage not in PER_TASK:
        raise ValueError(f"stage {stage!r} does not run per task (only {', '.join(PER_TASK)} do)")
    if task not in params.finetune.tasks:
        raise ValueError(f"task {task!r} is not in finetune.tasks ({', '.join(params.finetune.tasks)})")


def _numeric(result: dict) -> dict[str, float]:
    out = {}
    for key, value in flatten("", result).items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            out[key] = float(value)
    return out


class _TeeLogger:
    """Metrics to the tracker and to an observer (e.g. the Prefect progress artifact);
    artifacts and nested runs to the tracker only."""

    def __init__(self, tracker: MetricLogger, observer: MetricLogger) -> None:
        self.tracker, self.observer = tracker, observer

    def log_metrics(self, metrics, step: int | None = None) -> None:
        self.tracker.log_metrics(metrics, step=step)
        self.observer.log_metrics(metrics, step=step)

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        self.tracker.log_artifacts(local_dir, artifact_path)

    def child(self, name: str, tags=None):
        return self.tracker.child(name, tags)


def run_stage(stage: str, params: Params, progress: bool = True, skip_unchanged: bool = False,
              task: str | None = None, observer: MetricLogger | None = None) -> dict:
    """Run one stage (or one task of it: ``task``) inside its MLflow run; return the result plus the run id.

    The run is named as the stage is everywhere (``finetune``, or ``finetune@sst2`` for
    one task). After a successful run the stage's fingerprint (params section, code,
    input contents) and a hash of its outputs are recorded beside them; with
    ``skip_unchanged``, a stage whose fingerprint matches and whose outputs are untouched
    is not run again: its recorded result comes back with ``"up_to_date": True``.
    ``observer`` also receives the stage's metrics (a progress display, say).
    """
    row = get_stage(stage)
    _check_task(stage, params, task)
    rank = int(os.environ.get("RANK", "0"))
    if skip_unchanged and rank == 0:
        previous = up_to_date(stage, params, task)
        if previous is not None:
            return {**previous, "up_to_date": True}
    # Fingerprinted before the run: an input edited while it runs makes the next run redo it.
    fingerprint = stage_fingerprint(stage, params, task=task) if rank == 0 else None
    if stage == "pretrain" and params.pretrain.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        # Every door (CLI, DVC, Prefect) gets data parallelism the same way: relaunch under torchrun.
        full = run_pretrain_distributed(params)
        if fingerprint is not None:
            record_state(stage, params, fingerprint, full)
        return full
    if rank > 0:
        # A non-zero torchrun rank does its share of the work; rank 0 tracks and records it.
        return row.run(params, NullLogger(), False, None)
    name = stage_name(stage, task)
    started = time.time()
    with stage_run(stage, params, extra_tags={"task": task} if task else None, run_name=name) as run:
        import mlflow

        tracker = MlflowLogger()
        logger: MetricLogger = tracker if observer is None else _TeeLogger(tracker, observer)
        result = row.run(params, logger, progress, task)
        tracker.flush()   # metrics buffered while the tracking server was away go now
        seconds = time.time() - started
        numbers = {k: v for k, v in _numeric(result).items() if len(k) < 250}
        if numbers:
            mlflow.log_metrics({f"result.{k}": v for k, v in numbers.items()})
        mlflow.log_metric("stage_seconds", seconds)
        mlflow.log_dict(result, f"{name.replace('@', '_')}_result.json")
        run_id = run.info.run_id
    output_dir = row.outputs(params, task)[0]
    # The result for scripts too (the CLI prints it with --json): run.json beside the outputs.
    write_json(output_dir / "run.json", {"stage": name, "mlflow_run_id": run_id, "seconds": round(seconds, 3),
                                         "result": result})
    full = {**result, "mlflow_run_id": run_id, "seconds": round(seconds, 3)}
    if fingerprint is not None:
        if row.per_task and task is None:
            record_task_states(stage, params, run_id)
        record_state(stage, params, fingerprint, full, task)
    return full


@contextlib.contextmanager
def pipeline_run(params: Params, name: str = "pipeline") -> Iterator[str]:
    """A parent MLflow run for a whole pipeline; the stage runs started inside are its children."""
    from mlflow import MlflowClient

    experiment_id = configure(params.tracking)
    client = MlflowClient()
    tags = {"mlflow.runName": name, "profile": params.profile, "params_hash": params.params_hash()}
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
    if flow_run:
        tags["prefect_flow_run_id"] = flow_run
    run = client.create_run(experiment_id, tags=tags)
    previous = os.environ.get(PARENT_RUN_ENV)
    os.environ[PARENT_RUN_ENV] = run.info.run_id
    try:
        yield run.info.run_id
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    else:
        client.set_terminated(run.info.run_id, "FINISHED")
    finally:
        if previous is None:
            os.environ.pop(PARENT_RUN_ENV, None)
        else:
            os.environ[PARENT_RUN_ENV] = previous


def torchrun_command(params: Params, resolved_path: str | Path) -> list[str]:
    """The command that runs the pretrain stage under torchrun on this node."""
    import sys

    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={params.pretrain.nproc_per_node}",
        "-m", "electra.cli", "pretrain", "--no-progress", "--resolved", str(resolved_path),
    ]


def run_pretrain_distributed(params: Params) -> dict:
    """Run ``pretrain`` in ``nproc_per_node`` processes with torchrun; return rank 0's result.

    The effective params are written as a resolved snapshot so that every rank
    sees exactly this configuration; rank 0 opens the MLflow run and writes run.json.
    """
    import subprocess
    import sys

    from electra.core.config import write_resolved
    from electra.core.files import read_json

    out = Path(params.pretrain.output_dir)
    snapshot = write_resolved(params, out.parent / f".{out.name}.params.yaml")
    # The ranks' own output goes to stderr: stdout belongs to the caller's result.
    proc = subprocess.run(torchrun_command(params, snapshot), check=False, stdout=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"pretrain under torchrun exited with {proc.returncode}")
    result = read_json(out / "result.json")
    return {**result, **read_json(out / "run.json")}


def run_pipeline(params: Params, stages: list[str] | None = None, progress: bool = True,
                 on_stage: Callable[[str, dict], Any] | None = None, skip_unchanged: bool = False) -> dict[str, dict]:
    """Run the stages in order (all by default) under one parent MLflow run.

    With ``skip_unchanged`` a stage whose last run is still current is not run again
    (see :func:`run_stage`).
    """
    chosen = stages or list(PIPELINE)
    results: dict[str, dict] = {}
    with pipeline_run(params) as parent_id:
        for stage in chosen:
            results[stage] = run_stage(stage, params, progress=progress, skip_unchanged=skip_unchanged)
            if on_stage:
                on_stage(stage, results[stage])
        results["pipeline"] = {"mlflow_run_id": parent_id}
    return results
