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

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from electra.config import STAGES, Params, load_params
from electra.stages import pipeline_run, run_stage


def _stage_task(stage: str, retries: int = 0):
    @task(name=stage, task_run_name=stage, retries=retries, retry_delay_seconds=[10, 60][:retries])
    def run(params: Params) -> dict:
        return run_stage(stage, params, progress=False)

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
                     params_file: str = "params.yaml") -> dict[str, dict]:
    """Run the six stages in order on ``profile``.

    ``overrides`` are dotted ``section.key=value`` strings merged last (as the
    CLI's ``-S``), e.g. to move every stage's outputs elsewhere; ``params_file``
    is read relative to the working directory, with ``profiles/`` beside it.
    """
    logger = get_run_logger()
    params = load_params(params_file, profile=profile, overrides=overrides or [])
    results: dict[str, dict] = {}
    with _flow_run_id_in_env(), pipeline_run(params) as parent_id:
        for stage in STAGES:
            results[stage] = TASKS[stage](params)
            logger.info("%s finished in %.1fs", stage, results[stage].get("seconds", 0.0))
        results["pipeline"] = {"mlflow_run_id": parent_id}
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
