"""The Prefect door: flow ``electra-pipeline``, one task per stage (per task of a stage).

Each task calls ``electra.pipeline.stages.run_stage`` with the stage's name, the same
function behind the CLI and the DVC stages; artifacts pass between tasks as
paths and hashes on disk, never as objects in memory.

    ingest -> tokenize -> pretrain -> finetune@<task> (.map) -> evaluate@<task> (.map) -> evaluate -> register

Fine-tuning fans out over ``finetune.tasks``; each task's evaluation starts as soon as
its own fine-tuning ends. Both hold a slot of the global concurrency limit named
after the device (``gpu`` or ``cpu``), created with ``prefect.device_slots`` slots
when missing (flows/slots.py: every wait on the server bounded, a slot held through a
server restart given back; past a bound the attempt fails naming the limit and the
server, and the task's retry takes over). ``prefect.pretrain_deployment`` /
``prefect.finetune_deployment`` send those stages to another deployment (``electra-pretrain/<name>``,
``electra-finetune/<name>``: flows of this module, on a GPU work pool) with
``run_deployment``; otherwise they run in this process.

A stage whose params section, code and input contents are those of its last successful
run, outputs untouched, is not run again: its task ends in state ``Skipped`` (the
decision DVC makes). After a run with params.yaml's own profile and no overrides the
flow runs ``dvc commit``, so that ``dvc status`` is clean and ``dvc repro`` skips too.

Serve the deployments (one per profile) and trigger one::

    python -m flows.pipeline serve            # electra-pipeline/tiny, /micro, electra-pretrain/..., ...
    prefect deployment run 'electra-pipeline/tiny' --watch
    prefect deployment run 'electra-pipeline/micro' --watch \
        --params '{"overrides": ["pretrain.max_steps=50"]}'

Run it in-process, without a deployment::

    python -m flows.pipeline micro

The flow's parameters are typed: ``profile``, dotted ``overrides`` (as the CLI's
``-S``), ``force``, and one optional form per stage section (the params models):
a section given there is merged over the profile's, before the overrides.

The flow run id reaches MLflow (``prefect_flow_run_id`` on the pipeline and
stage runs and on every registered version) through ``PREFECT__FLOW_RUN_ID``,
the variable Prefect sets in a served run's process; for an in-process run the
flow sets it itself, for the duration of the run.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed
from prefect.tasks import exponential_backoff

from electra.core.config import (
    ConfigError,
    EvaluateConfig,
    FinetuneConfig,
    IngestConfig,
    Params,
    PretrainConfig,
    RegisterConfig,
    TokenizeConfig,
    load_params,
)
from electra.core.tracking import PARENT_RUN_ENV
from electra.pipeline.skip import up_to_date
from electra.pipeline.stages import pipeline_run, run_stage
from electra.pipeline.table import PIPELINE, TABLE, stage_name
from flows.approval import await_approval
from flows.artifacts import PretrainProgress, publish_compare, publish_evaluation, publish_registration, summary_markdown
from flows.dvc_commit import commit_if_same
from flows.slots import device_limit_name, ensure_device_limit

# Errors that another try cannot fix: a retry would only wait longer before failing.
PERMANENT_ERRORS = (ConfigError, ValueError, TypeError, KeyError, FileNotFoundError, NotImplementedError,
                    ArithmeticError)   # a diverged run (non-finite loss) diverges again from its checkpoint


def _transient(task_obj, task_run, state) -> bool:
    """Retry condition: retry everything but errors in the params or the data."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, PERMANENT_ERRORS)


def _dispatch_parameters(params: Params, force: bool, task_name: str | None) -> dict[str, Any]:
    """What a stage deployment gets: the whole resolved params (typed on the other side)."""
    parameters: dict[str, Any] = {"params": params.model_dump(mode="json"), "force": force,
                                  "mlflow_parent_run_id": os.environ.get(PARENT_RUN_ENV)}
    if task_name is not None:
        parameters["task"] = task_name
    return parameters


def _run_on_deployment(deployment: str, stage: str, params: Params, force: bool, task_name: str | None) -> dict:
    """Run a stage as a flow run of ``deployment`` (a GPU work pool) and wait for it.

    The result is read back from the stage's recorded state beside its outputs, which
    the worker wrote on the shared storage: paths and hashes, never objects.
    """
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    logger.info("%s: running on deployment %s", stage_name(stage, task_name), deployment)
    child = run_deployment(deployment, parameters=_dispatch_parameters(params, force, task_name),
                           timeout=None, as_subflow=True)
    if child.state is None or not child.state.is_completed():
        state = child.state.name if child.state else "unknown"
        raise RuntimeError(f"{stage_name(stage, task_name)}: flow run {child.id} of {deployment} ended {state}")
    recorded = up_to_date(stage, params, task_name)
    if recorded is None:
        raise RuntimeError(
            f"{stage_name(stage, task_name)} ran on {deployment} (flow run {child.id}) but its outputs are not "
            "visible here: the worker and this flow must share the outputs folder")
    return {**recorded, "deployment": deployment, "deployment_flow_run_id": str(child.id)}


@task(name="stage")
def run_stage_task(stage: str, params: Params, force: bool = False, task_name: str | None = None,
                   dispatch: bool = True, upstream: Any = None) -> Any:
    """One stage (or one task of it) as a Prefect task; ``upstream`` only orders it after its input."""
    deployment = {"pretrain": params.prefect.pretrain_deployment,
                  "finetune": params.prefect.finetune_deployment}.get(stage) if dispatch else None
    if deployment:
        # Decided here, before anything is dispatched: an unchanged stage sends no GPU job.
        previous = None if force else up_to_date(stage, params, task_name)
        result = {**previous, "up_to_date": True} if previous is not None else \
            _run_on_deployment(deployment, stage, params, force, task_name)
    elif task_name is not None:
        from flows.slots import device_slot

        # The device is the scarce thing: tasks queue for a slot of its limit, server-wide. Not
        # prefect.concurrency's concurrency(): its per-process client outlives the server it was
        # opened for, and its waits have no bound (flows/slots.py says how and why).
        with device_slot(device_limit_name(params), params):
            result = run_stage(stage, params, progress=False, skip_unchanged=not force, task=task_name)
    elif stage in ("ingest", "tokenize") and params.prefect.task_runner == "dask":
        from electra.core.parallel import unit_mapper

        from flows.units import dask_unit_mapper

        with unit_mapper(dask_unit_mapper(stage, params)):
            result = run_stage(stage, params, progress=False, skip_unchanged=not force)
    else:
        observer = PretrainProgress(params.pretrain.max_steps) if stage == "pretrain" else None
        result = run_stage(stage, params, progress=False, skip_unchanged=not force, observer=observer)
    if result.get("up_to_date"):
        # Same params section, code and input contents as the last run, outputs untouched:
        # the decision DVC makes. The state's name shows it in the UI and the API.
        return Completed(data=result, name="Skipped", message="inputs, params and code unchanged")
    return result


def _stage_task(stage: str, params: Params, per_task: bool = False):
    """The stage's task with its name, run name and retry policy (from params.prefect)."""
    retries = params.prefect.retries
    return run_stage_task.with_options(
        name=stage,
        task_run_name=f"{stage}@{{task_name}}" if per_task else stage,
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=params.prefect.retry_delay_s) if retries else 0,
        retry_jitter_factor=0.5 if retries else None,
        retry_condition_fn=_transient,
    )


@contextlib.contextmanager
def _flow_run_id_in_env() -> Iterator[None]:
    """Expose the current flow run id as ``PREFECT__FLOW_RUN_ID`` (electra's lineage reads it).

    A served or worker-started run already has it; an in-process call does not,
    so set it for the run and restore the environment afterwards.
    """
    key = "PREFECT__FLOW_RUN_ID"
    if os.environ.get(key) or not flow_run.id:
        yield
        return
    os.environ[key] = flow_run.id
    try:
        yield
    finally:
        os.environ.pop(key, None)


def resolve_params(profile: str, overrides: list[str] | None, params_file: str,
                   sections: dict[str, Any]) -> Params:
    """params.yaml + the profile + the sections given in the form + the dotted overrides."""
    return load_params(params_file, profile=profile, overrides=overrides or [], sections=sections)


def _result(state) -> dict:
    """A finished task's result (a Skipped state carries the recorded one)."""
    return state.result()


@flow(name="electra-pipeline", log_prints=True)
def electra_pipeline(
    profile: str = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    ingest: IngestConfig | None = None,
    tokenize: TokenizeConfig | None = None,
    pretrain: PretrainConfig | None = None,
    finetune: FinetuneConfig | None = None,
    evaluate: EvaluateConfig | None = None,
    register: RegisterConfig | None = None,
    params_file: str = "params.yaml",
) -> dict[str, dict]:
    """Run the stages in order on ``profile``, fanning fine-tuning and evaluation out over the tasks.

    A stage whose params section, code and input contents are those of its last
    successful run (and whose outputs are untouched) ends in state ``Skipped`` with its
    recorded result; ``force`` runs every stage regardless. A stage section given
    (``pretrain``, ...) is merged over the profile's; ``overrides`` are dotted
    ``section.key=value`` strings merged last (as the CLI's ``-S``). ``params_file`` is
    read relative to the working directory, with ``profiles/`` beside it.
    """
    logger = get_run_logger()
    params = resolve_params(profile, overrides, params_file, {
        "ingest": ingest, "tokenize": tokenize, "pretrain": pretrain, "finetune": finetune,
        "evaluate": evaluate, "register": register})
    results: dict[str, dict] = {}

    def note(name: str, result: dict) -> None:
        results[name] = result
        if result.get("up_to_date"):
            logger.info("%s skipped: inputs, params and code unchanged", name)
        else:
            logger.info("%s finished in %.1fs", name, result.get("seconds", 0.0))

    # The table's order: the stages before the per-task ones, the per-task ones fanned out
    # over finetune.tasks, then the rest. The last per-task stage also runs whole, as the
    # summary (evaluate: bias benchmarks, report, metrics.json), reusing each task's result.
    fanned = [s for s in PIPELINE if TABLE[s].per_task]
    before = PIPELINE[:PIPELINE.index(fanned[0])]
    after = PIPELINE[PIPELINE.index(fanned[-1]) + 1:]
    publish = {"evaluate": lambda r: publish_evaluation(params), "register": publish_registration}

    def whole(stage: str) -> None:
        note(stage, _result(_stage_task(stage, params)(stage, params, force=force, return_state=True)))
        publish.get(stage, lambda r: None)(results[stage])

    with _flow_run_id_in_env(), pipeline_run(params) as parent_id:
        for stage in before:
            whole(stage)
        _fan_out(fanned, params, force, note)
        whole(fanned[-1])
        for stage in after:
            whole(stage)
        results["pipeline"] = {"mlflow_run_id": parent_id}
    results["dvc-commit"] = commit_if_same(params, params_file)
    pending = results.get("register", {}).get("pending_approval") or {}
    if pending:   # register.require_approval: the versions that passed the gate wait for a person
        results["promote"] = await_approval(params, pending)
    create_markdown_artifact(key="electra-pipeline-summary", markdown=summary_markdown(results, params),
                             description="Stages, MLflow runs, registered versions, DVC")
    return results


def _fan_out(stages: list[str], params: Params, force: bool, note) -> None:
    """Each per-task stage mapped over the tasks, each task's run waiting for its own run of
    the stage before (an evaluation starts when its own fine-tuning ends, not the slowest)."""
    ensure_device_limit(device_limit_name(params), params.prefect.device_slots, params)
    tasks = list(params.finetune.tasks)
    futures: dict[str, list] = {}
    upstream = None
    for stage in stages:
        futures[stage] = upstream = _stage_task(stage, params, per_task=True).map(
            unmapped(stage), unmapped(params), force=unmapped(force), task_name=tasks, upstream=upstream)
    # Every task of the fan-out finishes (or fails) before a failure fails the flow: what
    # finished is kept, and a rerun skips it.
    wait([f for stage in stages for f in futures[stage]])
    for stage in stages:
        for task_name, future in zip(tasks, futures[stage], strict=True):
            note(stage_name(stage, task_name), _result(future.state))


@contextlib.contextmanager
def _parent_run(run_id: str | None) -> Iterator[None]:
    """Nest the stage's MLflow run under the calling pipeline's run, for this flow run only."""
    previous = os.environ.get(PARENT_RUN_ENV)
    if run_id:
        os.environ[PARENT_RUN_ENV] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PARENT_RUN_ENV, None)
        else:
            os.environ[PARENT_RUN_ENV] = previous


def _stage_flow_params(params: Params | None, profile: str, overrides: list[str] | None, params_file: str) -> Params:
    return params if params is not None else resolve_params(profile, overrides, params_file, {})


@flow(name="electra-pretrain", log_prints=True)
def electra_pretrain(params: Params | None = None, profile: str = "tiny", overrides: list[str] | None = None,
                     force: bool = False, params_file: str = "params.yaml",
                     mlflow_parent_run_id: str | None = None) -> dict:
    """The pretrain stage alone, for a GPU work pool; the pipeline sends ``params`` (resolved).

    Resumes from the stage's last checkpoint, like every pretraining retry.
    """
    resolved = _stage_flow_params(params, profile, overrides, params_file)
    with _flow_run_id_in_env(), _parent_run(mlflow_parent_run_id):
        return _result(_stage_task("pretrain", resolved)("pretrain", resolved, force=force, dispatch=False,
                                                         return_state=True))


@flow(name="electra-finetune", log_prints=True)
def electra_finetune(task: str, params: Params | None = None, profile: str = "tiny",
                     overrides: list[str] | None = None, force: bool = False, params_file: str = "params.yaml",
                     mlflow_parent_run_id: str | None = None) -> dict:
    """One fine-tuning task (``finetune@<task>``) alone, for a GPU work pool."""
    resolved = _stage_flow_params(params, profile, overrides, params_file)
    ensure_device_limit(device_limit_name(resolved), resolved.prefect.device_slots, resolved)
    with _flow_run_id_in_env(), _parent_run(mlflow_parent_run_id):
        return _result(_stage_task("finetune", resolved, per_task=True)(
            "finetune", resolved, force=force, task_name=task, dispatch=False, return_state=True))


STAGE_FLOWS = {"pretrain": electra_pretrain, "finetune": electra_finetune}


@flow(name="electra-compare", log_prints=True)
def electra_compare(profile: str = "tiny", overrides: list[str] | None = None, force: bool = False,
                    params_file: str = "params.yaml") -> dict:
    """``electra compare`` as a flow: ELECTRA against masked LM at equal training FLOPs on the
    tokenized corpus (run the pipeline's ingest and tokenize first). Publishes the report."""
    params = resolve_params(profile, overrides, params_file, {})
    with _flow_run_id_in_env():
        result = _result(_stage_task("compare", params)("compare", params, force=force, return_state=True))
    publish_compare(result)
    return result


def deployments_for(profile: str):
    """The deployments served for a profile: the pipeline and the two GPU stage flows."""
    return [
        electra_pipeline.to_deployment(name=profile, parameters={"profile": profile}, tags=["electra", profile]),
        *(f.to_deployment(name=profile, parameters={"profile": profile}, tags=["electra", profile, "gpu"])
          for f in STAGE_FLOWS.values()),
        electra_compare.to_deployment(name=profile, parameters={"profile": profile}, tags=["electra", profile]),
    ]


def serve(profiles: list[str]) -> None:
    """Serve ``electra-pipeline/<profile>``, ``electra-pretrain/<profile>`` and
    ``electra-finetune/<profile>`` for each profile from this process."""
    from prefect import serve as prefect_serve

    prefect_serve(*[d for p in profiles for d in deployments_for(p)])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2:] or ["tiny", "micro"])
    else:
        electra_pipeline(profile=sys.argv[1] if len(sys.argv) > 1 else "tiny")
