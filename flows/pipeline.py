"""The Prefect door: flow ``electra-pipeline``, one task per stage.

Each task calls ``electra.stages.run_stage`` with the stage's name, the same
function behind the CLI and the DVC stages; artifacts pass between tasks as
paths and hashes on disk, never as objects in memory.

Serve the deployments (one per profile) and trigger one::

    python -m flows.pipeline serve            # deployments electra-pipeline/tiny, /micro, ...
    prefect deployment run 'electra-pipeline/tiny' --watch
    prefect deployment run 'electra-pipeline/micro' --watch \
        --params '{"overrides": ["pretrain.max_steps=50"]}'

Run it in-process, without a deployment::

    python -m flows.pipeline micro

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
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed

from electra.config import STAGES, Params, load_params
from electra.stages import pipeline_run, run_stage


def _stage_task(stage: str, retries: int = 0):
    @task(name=stage, task_run_name=stage, retries=retries, retry_delay_seconds=[10, 60][:retries])
    def run(params: Params, force: bool = False):
        result = run_stage(stage, params, progress=False, skip_unchanged=not force)
        if result.get("up_to_date"):
            # Same params section, code and input contents as the last run, outputs untouched:
            # the decision DVC makes. The state's name shows it in the UI and the API.
            return Completed(data=result, name="Skipped", message="inputs, params and code unchanged")
        return result

    return run


ingest = _stage_task("ingest")
tokenize = _stage_task("tokenize")
# Pretraining resumes from its last checkpoint, so a retry never starts from zero.
pretrain = _stage_task("pretrain", retries=1)
finetune = _stage_task("finetune")
evaluate = _stage_task("evaluate")
# Registration talks to the tracking server: retry transient failures.
register = _stage_task("register", retries=2)
TASKS = {"ingest": ingest, "tokenize": tokenize, "pretrain": pretrain,
         "finetune": finetune, "evaluate": evaluate, "register": register}
assert tuple(TASKS) == STAGES


class PromotionApproval(RunInput):
    """The form a person fills in the Prefect UI to let gated versions become champion."""

    approve: bool = False
    approver: str = ""
    reason: str = ""


@task(name="promote", task_run_name="promote")
def promote_approved(params: Params, pending: dict[str, str], approval: PromotionApproval) -> dict[str, dict]:
    """Move champion to each version the person approved (the approval recorded as the reason)."""
    from electra.register import promote
    from electra.tracking import configure

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


def _summary_markdown(results: dict[str, dict]) -> str:
    lines = ["# ELECTRA pipeline", "", "| stage | seconds | MLflow run |", "|---|---|---|"]
    for stage in STAGES:
        if stage in results:
            r = results[stage]
            lines.append(f"| {stage} | {r.get('seconds', 0):.1f} | `{r.get('mlflow_run_id', '')}` |")
    reg = results.get("register", {})
    if reg:
        lines += ["", f"Registered `{reg.get('model_name')}` version {reg.get('version')}; "
                  f"gate passed: {reg.get('gate_passed')}."]
    return "\n".join(lines)


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


@flow(name="electra-pipeline", log_prints=True)
def electra_pipeline(profile: str = "tiny", overrides: list[str] | None = None,
                     params_file: str = "params.yaml", force: bool = False) -> dict[str, dict]:
    """Run the six stages in order on ``profile``, skipping those with nothing changed.

    A stage whose params section, code and input contents are those of its last
    successful run (and whose outputs are untouched) ends in state ``Skipped`` with its
    recorded result; ``force`` runs every stage regardless.

    ``overrides`` are dotted ``section.key=value`` strings merged last (as the
    CLI's ``-S``), e.g. to move every stage's outputs elsewhere; ``params_file``
    is read relative to the working directory, with ``profiles/`` beside it.
    """
    logger = get_run_logger()
    params = load_params(params_file, profile=profile, overrides=overrides or [])
    results: dict[str, dict] = {}
    with _flow_run_id_in_env(), pipeline_run(params) as parent_id:
        for stage in STAGES:
            # A skipped task ends in a named state (Skipped) that carries the recorded result.
            results[stage] = TASKS[stage](params, force=force, return_state=True).result()
            if results[stage].get("up_to_date"):
                logger.info("%s skipped: inputs, params and code unchanged", stage)
            else:
                logger.info("%s finished in %.1fs", stage, results[stage].get("seconds", 0.0))
        results["pipeline"] = {"mlflow_run_id": parent_id}
    _publish_registration(results["register"])
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
    create_markdown_artifact(key="electra-pipeline-summary", markdown=_summary_markdown(results),
                             description="Stage timings, MLflow runs and the registered version")
    return results


def serve(profiles: list[str]) -> None:
    """Serve one deployment per profile (``electra-pipeline/<profile>``) from this process."""
    from prefect import serve as prefect_serve

    deployments = [
        electra_pipeline.to_deployment(name=p, parameters={"profile": p}, tags=["electra", p])
        for p in profiles
    ]
    prefect_serve(*deployments)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2:] or ["tiny", "micro"])
    else:
        electra_pipeline(profile=sys.argv[1] if len(sys.argv) > 1 else "tiny")
