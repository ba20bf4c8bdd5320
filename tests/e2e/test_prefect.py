"""The Prefect door, for real: a ``prefect server``, served deployments, a CLI-triggered run.

``python -m flows.pipeline serve micro`` serves ``electra-pipeline/micro`` against a
real ``prefect server start``; ``prefect deployment run ... --watch`` triggers it
with overrides that move every output under a temporary folder, and MLflow
tracking goes to a real ``mlflow server``. Both servers keep their state in one real
PostgreSQL (the topology of ``docker/compose.yaml``, without containers).
The run must finish Completed and leave a registered discriminator whose aliases
and lineage tags (the Prefect flow run id among them) are checked on that server.

A cheaper test runs the flow in-process against the same server, with the stages
stubbed out: the six tasks in order, and the flow run id in the environment the
stages read, only for the run's duration.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, stage_dirs
from tests.e2e.services import free_port, running_mlflow_server, running_postgres, stop_process, wait_http

PREFECT = [sys.executable, "-m", "prefect"]
MODEL = "electra-discriminator"
LINEAGE_TAGS = ("git_commit", "data_dvc_md5", "params_hash", "pretrain_run_id", "prefect_flow_run_id")


def _prefect_env(home: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of every Prefect process here: its own home, quiet, fast polling."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "COLUMNS": "250",  # the CLI's rich output must not wrap the flow run id
        **extra,
    }
    # A heartbeat cannot be switched off (the setting must be >= 30 s); its default
    # (180 s) is longer than the micro run anyway.
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server or runner and its children: SIGTERM twice (a runner's first one
    starts a graceful shutdown), then ``stop_process`` (SIGKILL if still alive)."""
    for _ in range(2):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            pass
    stop_process(proc)


@pytest.fixture(scope="module")
def postgres():
    """The scaled-out topology without containers: one PostgreSQL on 127.0.0.1 holding the
    MLflow server's and the Prefect server's databases (as docker/compose.yaml does)."""
    with running_postgres(("mlflow", "prefect")) as base_uri:
        yield base_uri


@pytest.fixture(scope="module")
def pg_mlflow_server(postgres, tmp_path_factory):
    """A real ``mlflow server`` whose backend store is the Postgres database ``mlflow``."""
    # The driver named: SQLAlchemy 2.1's default for postgresql:// is psycopg 3.
    store = postgres.replace("postgresql://", "postgresql+psycopg2://") + "/mlflow"
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-pg"), store) as url:
        yield url


@pytest.fixture(scope="module")
def prefect_server(postgres, tmp_path_factory):
    """A real ``prefect server start`` on 127.0.0.1 on the Postgres database ``prefect``.

    Yields ``(api_url, home)``.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log = open(home / "server.log", "w")
    database = postgres.replace("postgresql://", "postgresql+asyncpg://") + "/prefect"
    proc = subprocess.Popen(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=_prefect_env(home, PREFECT_API_DATABASE_CONNECTION_URL=database),
    )
    try:
        wait_http(f"{api_url}/health", timeout=120, proc=proc)
        yield api_url, home
    finally:
        _stop(proc)
        log.close()


def _stub_stages(monkeypatch, behaviour=None):
    """Replace the stages' work by a recorder: [(stage name, flow run id in the env, params)]."""
    import contextlib

    import flows.pipeline as pipeline
    from electra.pipeline.table import stage_name

    seen: list[tuple[str, str | None, object]] = []

    def fake_run_stage(stage, params, progress=True, skip_unchanged=False, task=None, observer=None):
        name = stage_name(stage, task)
        seen.append((name, os.environ.get("PREFECT__FLOW_RUN_ID"), params))
        if behaviour:
            behaviour(name, sum(1 for n, _, _ in seen if n == name))
        return {"seconds": 0.0, "mlflow_run_id": f"run-{name}"}

    @contextlib.contextmanager
    def fake_pipeline_run(params):
        yield "parent"

    monkeypatch.setattr(pipeline, "run_stage", fake_run_stage)
    monkeypatch.setattr(pipeline, "pipeline_run", fake_pipeline_run)
    return seen


@pytest.mark.slow
def test_flow_in_process_fans_out_the_tasks_with_the_flow_run_id(prefect_server, monkeypatch, tmp_path):
    """The flow's wiring, without the stages' work: stages in order, fine-tuning and evaluation
    fanned out per task (each evaluation after its own fine-tuning), typed sections merged,
    the run id in the env only for the run."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.pipeline as pipeline
    from electra.core.config import RegisterConfig, load_params

    seen = _stub_stages(monkeypatch)
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    api_url, _ = prefect_server
    tasks = load_params(ROOT / "params.yaml", profile="micro").finetune.tasks
    with temporary_settings({PREFECT_API_URL: api_url}):
        state = pipeline.electra_pipeline(
            profile="micro", overrides=stage_dirs(tmp_path), params_file=str(ROOT / "params.yaml"),
            register=RegisterConfig(model_name="from-the-form"), return_state=True)
        assert state.is_completed(), state
        results = state.result()
    names = [name for name, _, _ in seen]
    assert names[:3] == ["ingest", "tokenize", "pretrain"] and names[-2:] == ["evaluate", "register"]
    assert sorted(names[3:-2]) == sorted([f"finetune@{t}" for t in tasks] + [f"evaluate@{t}" for t in tasks])
    for t in tasks:
        assert names.index(f"finetune@{t}") < names.index(f"evaluate@{t}")
    assert {run_id for _, run_id, _ in seen} == {str(state.state_details.flow_run_id)}
    # The form's section is merged over the profile's; the overrides still apply.
    params = seen[-1][2]
    assert params.register.model_name == "from-the-form" and params.register.output_dir.startswith(str(tmp_path))
    assert results["pipeline"] == {"mlflow_run_id": "parent"}
    assert results["dvc-commit"]["skipped"].startswith("dvc.lock left alone: the flow's params differ")
    assert "PREFECT__FLOW_RUN_ID" not in os.environ


@pytest.mark.slow
def test_transient_failures_are_retried_and_bad_input_is_not(prefect_server, monkeypatch, tmp_path):
    """A dropped connection is retried with back-off; a params/data error fails at once, and
    the other tasks of the fan-out still finish."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.pipeline as pipeline

    def behaviour(name: str, call: int) -> None:
        if name == "tokenize" and call == 1:
            raise ConnectionError("tracking server unavailable")
        if name == "finetune@rte":
            raise ValueError("data/glue/RTE/train.tsv line 7: unknown label 'maybe'")

    seen = _stub_stages(monkeypatch, behaviour)
    api_url, _ = prefect_server
    overrides = [*stage_dirs(tmp_path), "prefect.retries=2", "prefect.retry_delay_s=0"]
    with temporary_settings({PREFECT_API_URL: api_url}):
        state = pipeline.electra_pipeline(profile="micro", overrides=overrides,
                                          params_file=str(ROOT / "params.yaml"), return_state=True)
    assert state.is_failed(), state
    names = [name for name, _, _ in seen]
    assert names.count("tokenize") == 2            # retried once, then fine
    assert names.count("finetune@rte") == 1        # not retried: another try cannot fix bad data
    assert "evaluate@rte" not in names and "register" not in names
    assert "evaluate@sst2" in names and "evaluate@ner" in names   # the rest of the fan-out finished


def _task_states(api_url: str, flow_run_id: str) -> dict[str, str]:
    """Each task run of a flow run, by task name, with its final state's name (from the API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.state.name for run in runs}


def _deployment_flow_runs(api_url: str, deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(deployment).id
        return [r for r in client.read_flow_runs() if r.deployment_id == deployment_id]


def _artifacts(api_url: str, key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


@pytest.mark.slow
@pytest.mark.timeout(1200)   # two deployment runs (the first trains, up to its 430 s), the serve process
def test_served_micro_deployment_completes_and_registers(prefect_server, pg_mlflow_server, tmp_path):
    """`prefect deployment run 'electra-pipeline/micro'` from the CLI, twice.

    The first run sends pretraining to the ``electra-pretrain/micro`` deployment (as the
    GPU pool gets it) with run_deployment, fans fine-tuning out per task and registers;
    the second skips every stage. Both are read back from the Prefect API.
    """
    from mlflow import MlflowClient

    api_url, home = prefect_server
    env = _prefect_env(home, api_url, MLFLOW_TRACKING_URI=pg_mlflow_server)
    serve_log = tmp_path / "serve.log"
    # Three tasks (trained, no train split, non-GLUE) keep it short; the CLI test trains all.
    tasks = ["sst2", "qnli", "ner"]
    overrides = [*stage_dirs(tmp_path), "prefect.pretrain_deployment=electra-pretrain/micro",
                 f"finetune.tasks=[{','.join(tasks)}]"]
    with open(serve_log, "w") as log:
        # cwd: the project root, where params.yaml, profiles/, data/ and data.dvc resolve.
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.pipeline", "serve", "micro"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        try:
            for name in ("electra-pipeline/micro", "electra-pretrain/micro", "electra-finetune/micro"):
                wait_http(f"{api_url}/deployments/name/{name}", timeout=60, proc=serve)

            def deployment_run() -> tuple[subprocess.CompletedProcess, float]:
                started = time.time()
                run = subprocess.run(
                    [*PREFECT, "deployment", "run", "electra-pipeline/micro",
                     "--params", json.dumps({"overrides": overrides}),
                     "--watch", "--watch-interval", "1", "--watch-timeout", "400"],
                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=430,
                )
                return run, time.time() - started

            run, seconds = deployment_run()
            # Nothing changed: the second run must skip every stage (the decision DVC makes).
            rerun, rerun_seconds = deployment_run() if run.returncode == 0 else (run, 0.0)
        finally:
            _stop(serve)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"deployment run failed:\n{output}\n--- serve log ---\n{serve_log.read_text()[-6000:]}"
    assert "Completed" in output, output
    print(f"prefect deployment run electra-pipeline/micro: first {seconds:.1f}s, second (skipping) "
          f"{rerun_seconds:.1f}s")
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert match, f"no flow run id in the CLI's output:\n{output}"
    flow_run_id = match.group(1)
    assert rerun.returncode == 0 and "Completed" in rerun.stdout + rerun.stderr, rerun.stdout + rerun.stderr
    rerun_id = re.search(r"UUID:\s*([0-9a-f-]{36})", rerun.stdout + rerun.stderr).group(1)
    expected = ["ingest", "tokenize", "pretrain", *(f"finetune@{t}" for t in tasks),
                *(f"evaluate@{t}" for t in tasks), "evaluate", "register"]
    # Pretraining ran as a flow run of its own deployment, a subflow of the first run only
    # (the rerun found it unchanged and sent nothing).
    pretrain_runs = _deployment_flow_runs(api_url, "electra-pretrain/micro")
    assert len(pretrain_runs) == 1 and pretrain_runs[0].state.name == "Completed", pretrain_runs
    first_states = _task_states(api_url, flow_run_id)
    # run_deployment(as_subflow=True) also shows the child flow run as a task run of the parent.
    extra = {name: state for name, state in first_states.items() if name not in expected}
    assert list(extra.values()) == ["Completed"], first_states
    assert {name: first_states.get(name) for name in expected} == {name: "Completed" for name in expected}
    assert _task_states(api_url, rerun_id) == {name: "Skipped" for name in expected}
    assert _task_states(api_url, str(pretrain_runs[0].id)) == {"pretrain": "Completed"}
    progress = _artifacts(api_url, "pretrain-progress")
    assert progress and float(progress[0].data) == 100.0, progress
    table = _artifacts(api_url, "evaluation-results")
    assert table and "sst2" in str(table[0].data), table

    # The overrides moved every output under tmp_path.
    registration = json.loads((tmp_path / "outputs/register/registration.json").read_text())
    version = registration["versions"][MODEL]

    client = MlflowClient(tracking_uri=pg_mlflow_server, registry_uri=pg_mlflow_server)
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    champion = client.get_model_version_by_alias(MODEL, "champion")  # micro's gates are loose
    assert challenger.version == champion.version == version
    missing = [t for t in LINEAGE_TAGS if not challenger.tags.get(t)]
    assert not missing, f"missing lineage tags {missing}: {challenger.tags}"
    assert challenger.tags["prefect_flow_run_id"] == flow_run_id
    assert challenger.tags["profile"] == "micro"  # the deployment's parameter, kept beside --params
    assert challenger.tags["data_dvc_md5"] != "unknown"
    assert challenger.tags["git_commit"] != "unknown"
    # The pretrain MLflow run belongs to the pretrain deployment's flow run, nested under the
    # pipeline's MLflow run; each fine-tuning task has its own run, named as in DVC.
    pretrain_run = client.get_run(challenger.tags["pretrain_run_id"])
    assert pretrain_run.data.tags["prefect_flow_run_id"] == str(pretrain_runs[0].id)
    parent = client.get_run(pretrain_run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["prefect_flow_run_id"] == flow_run_id
    finetune_runs = dict(part.split(":") for part in challenger.tags["finetune_run_id"].split(","))
    assert set(finetune_runs) == set(tasks)
    assert client.get_run(finetune_runs["sst2"]).info.run_name == "finetune@sst2"


@pytest.mark.slow
def test_approval_pauses_the_flow_until_a_person_approves(prefect_server, pg_mlflow_server, monkeypatch, tmp_path):
    """register.require_approval: the flow pauses with a typed form; on approval, champion moves.

    The stages are stubbed (their work is tested elsewhere); the version to approve is a
    real one on the real MLflow server, and the pause and resume go through the real
    Prefect server, as the UI's Resume form does.
    """
    import contextlib
    import contextvars
    import threading

    import mlflow
    import mlflow.pyfunc
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.pipeline as pipeline

    class Length(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [len(str(x)) for x in model_input]

    name = "approval-check"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pg_mlflow_server)
    mlflow.set_tracking_uri(pg_mlflow_server)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Length(), registered_model_name=name,
                                       pip_requirements=["mlflow"])
    version = str(info.registered_model_version)
    flow_run_ids: list[str] = []

    def fake_run_stage(stage, params, progress=True, skip_unchanged=False, task=None, observer=None):
        flow_run_ids.append(os.environ.get("PREFECT__FLOW_RUN_ID"))
        result = {"seconds": 0.0, "mlflow_run_id": f"run-{stage}"}
        if stage == "register":
            result.update(versions={name: version}, pending_approval={name: version})
        return result

    @contextlib.contextmanager
    def fake_pipeline_run(params):
        yield "parent"

    monkeypatch.setattr(pipeline, "run_stage", fake_run_stage)
    monkeypatch.setattr(pipeline, "pipeline_run", fake_pipeline_run)
    api_url, _ = prefect_server
    overrides = [*stage_dirs(tmp_path), "register.require_approval=true", "register.approval_timeout_s=300"]
    states = []
    with temporary_settings({PREFECT_API_URL: api_url}):
        context = contextvars.copy_context()   # the flow's thread sees the same API URL
        runner = threading.Thread(target=context.run, args=(lambda: states.append(pipeline.electra_pipeline(
            profile="micro", overrides=overrides, params_file=str(ROOT / "params.yaml"), return_state=True)),))
        runner.start()
        try:
            deadline = time.time() + 120
            paused = False
            while time.time() < deadline and not paused:
                time.sleep(1)
                if flow_run_ids and flow_run_ids[-1]:
                    with get_client(sync_client=True) as client:
                        paused = client.read_flow_run(flow_run_ids[-1]).state.is_paused()
            assert paused, "the flow never paused for approval"
            # Still waiting: nothing promoted yet.
            versions = MlflowClient(pg_mlflow_server).search_model_versions(f"name='{name}'")
            assert all("champion" not in v.aliases for v in versions)
            resume_flow_run(flow_run_ids[-1], run_input={"approve": True, "approver": "tester",
                                                         "reason": "gate report reviewed"})
            runner.join(timeout=120)
        finally:
            runner.join(timeout=1)
    assert states and states[0].is_completed(), states
    promoted = MlflowClient(pg_mlflow_server).get_model_version_by_alias(name, "champion")
    assert promoted.version == version
    assert promoted.tags["promoted.reason"].startswith("approved by tester in Prefect flow run ")
    assert "gate report reviewed" in promoted.tags["promoted.reason"]


@pytest.mark.slow
def test_prefect_yaml_deploys_every_profile_to_the_process_work_pool(prefect_server, tmp_path):
    """`prefect deploy --all` from the project root: one deployment per profile, on the pool."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url, home = prefect_server
    env = _prefect_env(home, api_url)
    for pool_name in ("electra-process", "electra-gpu"):
        pool = subprocess.run([*PREFECT, "work-pool", "create", pool_name, "--type", "process",
                               "--overwrite"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = subprocess.run([*PREFECT, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for profile in ("micro", "tiny", "laptop", "small", "base"):
            deployment = client.read_deployment_by_name(f"electra-pipeline/{profile}")
            assert deployment.work_pool_name == "electra-process"
            on_gpu = ["prefect.pretrain_deployment=electra-pretrain/gpu",
                       "prefect.finetune_deployment=electra-finetune/gpu"]
            assert deployment.parameters == ({"profile": profile} if profile in ("micro", "tiny", "laptop")
                                             else {"profile": profile, "overrides": on_gpu})
            # The typed parameters make the UI's run form: profile, overrides, force and a
            # form per stage section (the params models, with their fields and limits).
            schema = deployment.parameter_openapi_schema
            assert {"profile", "overrides", "force", "pretrain", "finetune", "register"} <= set(schema["properties"])
            assert "PretrainConfig" in json.dumps(schema)
        for flow_name in ("electra-pretrain", "electra-finetune"):
            deployment = client.read_deployment_by_name(f"{flow_name}/gpu")
            assert deployment.work_pool_name == "electra-gpu"
            assert "params" in deployment.parameter_openapi_schema["properties"]
        # The Kubernetes GPU pool's base job template passes the server's own validation.
        from prefect.client.schemas.actions import WorkPoolCreate

        template = json.loads((ROOT / "docker" / "k8s-gpu-base-job-template.json").read_text())
        pool = client.create_work_pool(WorkPoolCreate(name="electra-k8s", type="kubernetes",
                                                      base_job_template=template))
        assert pool.base_job_template["variables"]["properties"]["gpus"]["default"] == 1


@pytest.mark.slow
def test_data_stages_on_a_local_dask_cluster_give_the_single_machine_output(prefect_server, tmp_path):
    """prefect.task_runner=dask: ingest's files and tokenize's shards run as Prefect tasks on a
    local Dask cluster of two worker processes; the outputs are those of a run on one machine."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.pipeline as pipeline
    from electra.data.ingest import ingest
    from electra.data.tokenize import tokenize
    from tests.conftest import micro_params

    # Thirteen speeches (200 KB) in 50 KB ingest shards: thirteen units, then four.
    extra = (f"ingest.sources=['{ROOT}/data/pretrain/inaugural/19[0-4]*.txt']", "ingest.shard_size_mb=0.05",
             "tokenize.max_examples=null", "tokenize.validation_fraction=0.5")
    local = micro_params(tmp_path / "local", *extra)
    expected = {"ingest": ingest(local.ingest, progress=False)["content_hash"]}
    expected["tokenize"] = tokenize(local.tokenize, progress=False)["content_hash"]
    params = micro_params(tmp_path / "dask", *extra, "prefect.task_runner=dask", "prefect.dask_workers=2")

    @flow(name="data-stages-on-dask")
    def data_stages() -> dict:
        return {stage: pipeline._stage_task(stage, params)(stage, params, force=True) for stage in ("ingest", "tokenize")}

    api_url, _ = prefect_server
    with temporary_settings({PREFECT_API_URL: api_url}):
        results = data_stages()
        with get_client(sync_client=True) as client:
            unit_flows = client.read_flow_runs(flow_filter=FlowFilter(
                name=FlowFilterName(any_=["ingest-units", "tokenize-units"])))
    assert {stage: results[stage]["content_hash"] for stage in expected} == expected
    # The units ran as the stages' own nested flows, through the Dask task runner.
    assert len(unit_flows) == 2 and all(run.state.is_completed() for run in unit_flows)


@pytest.mark.slow
def test_compare_flow_runs_the_compare_stage_and_publishes_its_report(prefect_server, monkeypatch, tmp_path):
    """The electra-compare flow's wiring: the compare stage as its task (the stage itself is
    tested in tests/model/test_compare.py), its report published as a markdown artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.pipeline as pipeline

    calls = []

    def fake_run_stage(stage, params, progress=True, skip_unchanged=False, task=None, observer=None):
        calls.append((stage, params.compare.electra_steps))
        report = tmp_path / "report.md"
        report.write_text("# compared\n\nno significant difference\n")
        return {"report": str(report), "conclusion": "no significant difference", "seconds": 0.0}

    monkeypatch.setattr(pipeline, "run_stage", fake_run_stage)
    api_url, _ = prefect_server
    with temporary_settings({PREFECT_API_URL: api_url}):
        state = pipeline.electra_compare(profile="micro", overrides=stage_dirs(tmp_path),
                                         params_file=str(ROOT / "params.yaml"), return_state=True)
        assert state.is_completed(), state
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["electra-compare-report"])))
    assert calls == [("compare", 8)]      # the micro profile's budget
    assert artifacts and "no significant difference" in artifacts[0].data
