"""The six stages as the doors see them: ``run_stage(name, params)``.

Each door (the CLI, ``dvc.yaml`` through the CLI, the Prefect flow) calls
:func:`run_stage`, which opens the stage's MLflow run (named after the stage),
calls the library function with the stage's config section, logs the small
result, and records the run id next to the stage's outputs so that later
stages (``register``) can link back to it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from electra.core.config import OPTIONAL_STAGES, STAGES, Params
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


def _ingest(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.data.ingest import ingest

    return ingest(params.ingest, progress=progress)


def _tokenize(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.data.tokenize import tokenize

    return tokenize(params.tokenize, progress=progress)


def _pretrain(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.pretraining.trainer import pretrain

    return pretrain(params.pretrain, logger=logger, progress=progress)


def _finetune(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.tasks.finetune import finetune, finetune_task

    if task is not None:
        return finetune_task(params.finetune, task, logger=logger, progress=progress)
    return finetune(params.finetune, logger=logger, progress=progress)


def _evaluate(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.evaluation.evaluate import evaluate, evaluate_one

    if task is not None:
        # Recompute: this is the task's own run (the summary step is the one that reuses).
        return evaluate_one(task, params.evaluate, params.finetune, logger=logger, reuse=False)
    return evaluate(params.evaluate, params.finetune, logger=logger, progress=progress)


def _register(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.registry.register import register

    return register(params, progress=progress)


def _compare(params: Params, logger: MetricLogger, progress: bool, task: str | None = None) -> dict:
    from electra.evaluation.compare import compare

    return compare(params.compare, params.pretrain, params.finetune, params.evaluate, logger=logger,
                   progress=progress)


STAGE_FUNCTIONS: dict[str, Callable[..., dict]] = {
    "ingest": _ingest,
    "tokenize": _tokenize,
    "pretrain": _pretrain,
    "finetune": _finetune,
    "evaluate": _evaluate,
    "register": _register,
    "compare": _compare,
}
assert tuple(STAGE_FUNCTIONS) == STAGES + OPTIONAL_STAGES
# Stages that also run one task at a time (``finetune@sst2``): the Prefect fan-out and the
# DVC ``foreach`` stages.
PER_TASK_STAGES = ("finetune", "evaluate")


def stage_name(stage: str, task: str | None = None) -> str:
    """The name of a stage, or of one task of it (``finetune@sst2``, as DVC names foreach stages)."""
    return stage if task is None else f"{stage}@{task}"


def _check_task(stage: str, params: Params, task: str | None) -> None:
    if task is None:
        return
    if stage not in PER_TASK_STAGES:
        raise ValueError(f"stage {stage!r} does not run per task (only {', '.join(PER_TASK_STAGES)} do)")
    if task not in params.finetune.tasks:
        raise ValueError(f"task {task!r} is not in finetune.tasks ({', '.join(params.finetune.tasks)})")


def stage_output_dirs(stage: str, params: Params, task: str | None = None) -> list[Path]:
    """The folders a stage (or one task of it) writes; the first holds ``run.json`` and ``.stage.json``."""
    if task is None:
        return [Path(getattr(params, stage).output_dir)]
    if stage == "finetune":
        return [Path(params.finetune.output_dir) / task]
    out = Path(params.evaluate.output_dir)
    return [out / "tasks" / task, out / "predictions" / task]


def _numeric(result: dict) -> dict[str, float]:
    out = {}
    for key, value in flatten("", result).items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            out[key] = float(value)
    return out


# --- "nothing changed, nothing to do": the decision DVC makes, for the other doors -------

STATE_FILE = ".stage.json"   # in each stage's output folder: what it was built from
# Bookkeeping that is not a stage's output: our state file, and the .gitignore files DVC
# writes beside its outputs after the stage has run.
BOOKKEEPING = frozenset({STATE_FILE, ".gitignore"})


def content_hash(path: Path) -> str:
    """sha256 over a file, or a folder's relative paths and contents, without bookkeeping files."""
    from electra.core.files import sha256_tree

    return sha256_tree(path, skip_names=BOOKKEEPING)


def _stage_inputs(stage: str, params: Params, task: str | None = None) -> list[str]:
    """The data a stage reads, from its effective params (outputs may be moved by overrides)."""
    if stage == "evaluate" and task is not None:
        ev = params.evaluate
        return [str(Path(ev.finetune_dir) / task), ev.data_dir]
    if stage == "ingest":
        import glob

        # A Hugging Face source on local disk is hashed as its folder; one on the hub cannot be
        # (pin its revision=): it is named only, so the skip decision sees the name change.
        local = [src.split(":", 1)[1].split("?", 1)[0] if src.startswith("hf:") else src
                 for src in params.ingest.sources]
        return sorted({p for src in local for p in (glob.glob(src) or [src])})
    if stage == "tokenize":
        return [params.tokenize.input_dir, params.tokenize.vocab_file]
    if stage == "pretrain":
        return [params.pretrain.input_dir]
    if stage == "compare":
        return [params.compare.input_dir, params.finetune.data_dir]
    if stage == "finetune":
        ft = params.finetune
        return [ft.model_dir, ft.data_dir, ft.qa_file, ft.qa_dev_file or "", ft.ner_train_file, ft.ner_dev_file]
    if stage == "evaluate":
        ev = params.evaluate
        return [ev.finetune_dir, ev.pretrain_dir, ev.data_dir]
    reg = params.register
    return [reg.pretrain_dir, reg.finetune_dir, reg.evaluate_dir, reg.licenses_file, "data.dvc"]


def _stage_code(stage: str, dvc_yaml: Path) -> list[Path]:
    """The stage's code as DVC lists it: in ``dvc.yaml``, or for a stage outside the
    pipeline (``compare``) in ``<stage>/dvc.yaml`` beside it; else all of ``electra/``."""
    import yaml

    package = Path(__file__).resolve().parents[1]
    for pipeline_file in (dvc_yaml, dvc_yaml.parent / stage / "dvc.yaml"):
        if not pipeline_file.is_file():
            continue
        entry = (yaml.safe_load(pipeline_file.read_text()) or {}).get("stages", {}).get(stage, {}) or {}
        deps = entry.get("do", entry).get("deps", [])  # a foreach stage keeps its deps under `do`
        code: list[Path] = []
        for dep in deps:
            if not (isinstance(dep, str) and dep.startswith("electra/")):
                continue
            path = package / Path(dep).relative_to("electra")
            # A folder of code (electra/registry/serving) counts by its modules, as .dvcignore has DVC do.
            code += sorted(path.rglob("*.py")) if path.is_dir() else [path]
        if code:
            return sorted(code)
    return sorted(package.rglob("*.py"))


def stage_fingerprint(stage: str, params: Params, dvc_yaml: str | Path = "dvc.yaml", task: str | None = None) -> str:
    """sha256 over what decides a stage's outputs: its params section, its code, its inputs' contents."""
    import hashlib

    from electra.core.files import sha256_file

    digest = hashlib.sha256()
    digest.update(f"{stage_name(stage, task)}\0{params.section_hash(stage)}\0".encode())
    if stage == "evaluate":
        # Which tasks exist and how their dev sets are read are finetune params.
        digest.update(f"finetune:{params.section_hash('finetune')}\0".encode())
    if stage == "compare":
        # The encoder, optimizer and fine-tuning protocol compared are these sections'.
        for section in ("pretrain", "finetune", "evaluate"):
            digest.update(f"{section}:{params.section_hash(section)}\0".encode())
    for path in _stage_code(stage, Path(dvc_yaml)):
        digest.update(f"code:{path.relative_to(Path(__file__).resolve().parents[1]).as_posix()}:{sha256_file(path)}\0".encode())
    for raw in _stage_inputs(stage, params, task):
        path = Path(raw) if raw else None
        state = content_hash(path) if path is not None and path.exists() else "missing"
        digest.update(f"input:{raw}:{state}\0".encode())
    return digest.hexdigest()


def _outputs_hash(stage: str, params: Params, task: str | None = None) -> str:
    """sha256 over the stage's output folders, leaving out the state files written after them."""
    import hashlib

    digest = hashlib.sha256()
    for folder in stage_output_dirs(stage, params, task):
        digest.update(f"{folder}\0{content_hash(folder) if folder.exists() else 'missing'}\0".encode())
    return digest.hexdigest()


def up_to_date(stage: str, params: Params, task: str | None = None) -> dict | None:
    """The recorded result when the stage's inputs, params and code are unchanged and its
    outputs are as it left them; None when it must run."""
    from electra.core.files import read_json

    state_path = stage_output_dirs(stage, params, task)[0] / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = read_json(state_path)
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != stage_fingerprint(stage, params, task=task):
        return None
    if state.get("outputs") != _outputs_hash(stage, params, task):
        return None
    return state.get("result")


def _record_state(stage: str, params: Params, fingerprint: str, result: dict, task: str | None = None) -> None:
    folder = stage_output_dirs(stage, params, task)[0]
    write_json(folder / STATE_FILE, {"stage": stage_name(stage, task), "fingerprint": fingerprint,
                                     "outputs": _outputs_hash(stage, params, task), "result": result})


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
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES + OPTIONAL_STAGES)}")
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
            _record_state(stage, params, fingerprint, full)
        return full
    if rank > 0:
        # A non-zero torchrun rank does its share of the work; rank 0 tracks and records it.
        return STAGE_FUNCTIONS[stage](params, NullLogger(), False)
    name = stage_name(stage, task)
    started = time.time()
    with stage_run(stage, params, extra_tags={"task": task} if task else None, run_name=name) as run:
        import mlflow

        tracker = MlflowLogger()
        logger: MetricLogger = tracker if observer is None else _TeeLogger(tracker, observer)
        result = STAGE_FUNCTIONS[stage](params, logger, progress, task)
        tracker.flush()   # metrics buffered while the tracking server was away go now
        seconds = time.time() - started
        numbers = {k: v for k, v in _numeric(result).items() if len(k) < 250}
        if numbers:
            mlflow.log_metrics({f"result.{k}": v for k, v in numbers.items()})
        mlflow.log_metric("stage_seconds", seconds)
        mlflow.log_dict(result, f"{name.replace('@', '_')}_result.json")
        run_id = run.info.run_id
    output_dir = stage_output_dirs(stage, params, task)[0]
    # The result for scripts too (the CLI prints it with --json): run.json beside the outputs.
    write_json(output_dir / "run.json", {"stage": name, "mlflow_run_id": run_id, "seconds": round(seconds, 3),
                                         "result": result})
    full = {**result, "mlflow_run_id": run_id, "seconds": round(seconds, 3)}
    if fingerprint is not None:
        if stage in PER_TASK_STAGES and task is None:
            _record_task_states(stage, params, run_id)
        _record_state(stage, params, fingerprint, full, task)
    return full


def _record_task_states(stage: str, params: Params, run_id: str) -> None:
    """After a whole-stage run (``electra finetune``/``evaluate``), record each task as done, as
    ``<stage>@<task>`` would have: a fanned-out run (the Prefect flow) then skips them too."""
    from electra.core.files import read_json

    for task in params.finetune.tasks:
        first = stage_output_dirs(stage, params, task)[0]
        result_file = first / "result.json"
        if not result_file.is_file():
            continue
        recorded = read_json(result_file)
        if stage == "evaluate":
            recorded = recorded.get("result", {})
        _record_state(stage, params, stage_fingerprint(stage, params, task=task),
                      {**recorded, "mlflow_run_id": run_id, "seconds": 0.0}, task)


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
    chosen = stages or list(STAGES)
    results: dict[str, dict] = {}
    with pipeline_run(params) as parent_id:
        for stage in chosen:
            results[stage] = run_stage(stage, params, progress=progress, skip_unchanged=skip_unchanged)
            if on_stage:
                on_stage(stage, results[stage])
        results["pipeline"] = {"mlflow_run_id": parent_id}
    return results
