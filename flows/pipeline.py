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
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.flow_runs import pause_flow_run
from prefect.futures import wait
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed
from prefect.tasks import exponential_backoff

from electra.core.config import (
    STAGES,
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
from electra.pipeline.stages import pipeline_run, run_stage, stage_name, up_to_date
from electra.core.tracking import PARENT_RUN_ENV

# Errors that another try cannot fix: a retry would only wait longer before failing.
PERMANENT_ERRORS = (ConfigError, ValueError, TypeError, KeyError, FileNotFoundError, NotImplementedError,
                    ArithmeticError)   # a diverged run (non-finite loss) diverges again from its checkpoint


def _transient(task_obj, task_run, state) -> bool:
    """Retry condition: retry everything but errors in the params or the data."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, PERMANENT_ERRORS)


def device_limit_name(params: Params) -> str:
    """The global concurrency limit fine-tuning and evaluation hold a slot of: ``gpu`` or ``cpu``."""
    from electra.core.runtime import resolve_device

    return "gpu" if resolve_device(params.finetune.device).type == "cuda" else "cpu"


def ensure_device_limit(name: str, slots: int, params: Params | None = None) -> None:
    """Create the global concurrency limit ``name`` with ``slots`` slots unless it exists
    (an operator's own setting, e.g. the number of GPUs of the pool, is left alone).
    Given up after ``api_wait_s`` (flows/slots.py) with an error naming the server."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    from flows.slots import API_WAIT_S, DeviceSlotError, api_url, exchange, setting

    async def ensure(client) -> None:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another flow created it meanwhile
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))

    try:
        exchange(f"create the global concurrency limit {name!r}", setting(params, "api_wait_s", API_WAIT_S), ensure)
    except Exception as exc:
        raise DeviceSlotError(f"the global concurrency limit {name!r} could not be read or created on the "
                              f"Prefect server at {api_url()}: {exc}") from exc


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


@task(name="unit", task_run_name="{stage}.unit-{index:05d}", retries=0)
def run_unit(stage: str, index: int, fn, job) -> dict:
    """One unit of a data stage (a file to ingest, a shard to tokenize) on a cluster worker."""
    from electra.core.parallel import single_threaded_worker

    single_threaded_worker()   # the cluster's processes are the parallelism
    return fn(job)


def dask_unit_mapper(stage: str, params: Params):
    """A unit mapper (``electra.core.parallel.unit_mapper``) that runs each unit as a Prefect task
    on a Dask cluster: ``prefect.dask_address``'s scheduler, else a local cluster of
    ``prefect.dask_workers`` processes for the stage's duration. Results come back in the
    units' order, so the stage's output is the one a local run makes."""
    from prefect_dask import DaskTaskRunner

    pf = params.prefect
    runner = DaskTaskRunner(address=pf.dask_address) if pf.dask_address else DaskTaskRunner(
        cluster_kwargs={"n_workers": pf.dask_workers, "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None})

    def mapper(fn, jobs):
        @flow(name=f"{stage}-units", task_runner=runner, log_prints=True)
        def units() -> list[dict]:
            futures = [run_unit.submit(stage, index, fn, job) for index, job in enumerate(jobs)]
            return [future.result() for future in futures]

        yield from units()

    return mapper


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


class PromotionApproval(RunInput):
    """The form a person fills in the Prefect UI to let gated versions become champion."""

    approve: bool = False
    approver: str = ""
    reason: str = ""


@task(name="promote", task_run_name="promote")
def promote_approved(params: Params, pending: dict[str, str], approval: PromotionApproval) -> dict[str, dict]:
    """Move champion to each version the person approved (the approval recorded as the reason)."""
    from electra.registry.register import promote
    from electra.core.tracking import configure

    configure(params.tracking)
    reason = f"approved by {approval.approver or 'unknown'} in Prefect flow run {flow_run.id}: {approval.reason}"
    return {name: promote(name, version, reason) for name, version in pending.items()}


def _publish_registration(result: dict) -> None:
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


def _summary_markdown(results: dict[str, dict], params: Params) -> str:
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

    glue = metrics.get("glue", {})
    for name, section in glue.items():
        if isinstance(section, dict):
            row(name, section)
    for name in ("qa", "ner"):
        if isinstance(metrics.get(name), dict):
            row(name, metrics[name])
    if glue.get("score") is not None:
        rows.append({"task": "GLUE score", "main": round(glue["score"], 4), "ci95": "",
                     "dev examples": None, "note": "mean over " + ", ".join(glue.get("score_tasks", []))})
    return rows


def _publish_evaluation(params: Params) -> None:
    from electra.core.files import read_json

    path = Path(params.evaluate.output_dir) / "metrics.json"
    if path.is_file():
        create_table_artifact(key="evaluation-results", table=evaluation_table(read_json(path)),
                              description="Dev results: median over seeds, 95% bootstrap interval")


DVC_SECTIONS = ("profile", *STAGES)   # what dvc.yaml's stages list as params


def dvc_would_run_the_same(params: Params, params_file: str) -> str | None:
    """None when params.yaml alone (its own profile, no overrides) gives these params; else why not."""
    try:
        plain = load_params(params_file)
    except ConfigError as exc:
        return f"params.yaml does not load: {exc}"
    ours, theirs = params.model_dump(mode="json"), plain.model_dump(mode="json")
    differ = [k for k in DVC_SECTIONS if ours[k] != theirs[k]]
    return f"the flow's params differ from params.yaml's in {', '.join(differ)}" if differ else None


@task(name="dvc-commit", task_run_name="dvc-commit", retries=0)
def dvc_commit(project: str) -> dict[str, Any]:
    """``dvc commit``: record the outputs the flow made in dvc.lock (and the DVC cache), so that
    ``dvc status`` is clean and ``dvc repro`` skips what the flow already did."""
    import json

    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    # The pipeline's dvc.yaml only: compare/dvc.yaml's stage is not the flow's to record.
    commit = subprocess.run([dvc, "commit", "--force", "--quiet", "dvc.yaml"], cwd=project, capture_output=True,
                            text=True)
    if commit.returncode != 0:
        raise RuntimeError(f"dvc commit failed in {project}: {commit.stderr.strip() or commit.stdout.strip()}")
    status = subprocess.run([dvc, "status", "--json", "dvc.yaml"], cwd=project, capture_output=True, text=True)
    changed = json.loads(status.stdout or "{}") if status.returncode == 0 else {"error": status.stderr}
    return {"clean": not changed, "status": changed}


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

    tasks = list(params.finetune.tasks)
    with _flow_run_id_in_env(), pipeline_run(params) as parent_id:
        for stage in ("ingest", "tokenize", "pretrain"):
            note(stage, _result(_stage_task(stage, params)(stage, params, force=force, return_state=True)))
        ensure_device_limit(device_limit_name(params), params.prefect.device_slots, params)
        # Each task's evaluation waits for its own fine-tuning only, not for the slowest task.
        finetuned = _stage_task("finetune", params, per_task=True).map(
            unmapped("finetune"), unmapped(params), force=unmapped(force), task_name=tasks)
        evaluated = _stage_task("evaluate", params, per_task=True).map(
            unmapped("evaluate"), unmapped(params), force=unmapped(force), task_name=tasks, upstream=finetuned)
        # Every task of the fan-out finishes (or fails) before a failure fails the flow: what
        # finished is kept, and a rerun skips it.
        wait([*finetuned, *evaluated])
        for name, future in [*zip((f"finetune@{t}" for t in tasks), finetuned, strict=True),
                             *zip((f"evaluate@{t}" for t in tasks), evaluated, strict=True)]:
            note(name, _result(future.state))
        # The summary: bias benchmarks, report, plots, metrics.json; reuses each task's result.
        note("evaluate", _result(_stage_task("evaluate", params)("evaluate", params, force=force, return_state=True)))
        _publish_evaluation(params)
        note("register", _result(_stage_task("register", params)("register", params, force=force, return_state=True)))
        results["pipeline"] = {"mlflow_run_id": parent_id}
    _publish_registration(results["register"])
    why_not = dvc_would_run_the_same(params, params_file) if params.prefect.dvc_commit else "prefect.dvc_commit is false"
    project = Path(params_file).resolve().parent
    if why_not is None and not (project / "dvc.yaml").is_file():
        why_not = f"no dvc.yaml in {project}"
    if why_not is None:
        results["dvc-commit"] = dvc_commit(str(project))
    else:
        logger.info("dvc.lock left alone: %s", why_not)
        results["dvc-commit"] = {"skipped": f"dvc.lock left alone: {why_not}"}
    pending = results["register"].get("pending_approval") or {}
    if pending:
        # register.require_approval: the versions that passed the gate wait for a person.
        logger.info("awaiting approval to promote %s", pending)
        approval = pause_flow_run(wait_for_input=PromotionApproval, timeout=params.register.approval_timeout_s,
                                  poll_interval=5)
        if approval.approve:
            results["promote"] = promote_approved(params, pending, approval)
        else:
            logger.info("promotion declined by %s: %s", approval.approver or "unknown", approval.reason)
            results["promote"] = {"declined": approval.reason}
    create_markdown_artifact(key="electra-pipeline-summary", markdown=_summary_markdown(results, params),
                             description="Stages, MLflow runs, registered versions, DVC")
    return results


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
    report = Path(result["report"])
    if report.is_file():
        create_markdown_artifact(key="electra-compare-report", markdown=report.read_text(encoding="utf-8"),
                                 description=result.get("conclusion", ""))
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
