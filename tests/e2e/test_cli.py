"""The CLI door end to end: `electra run --profile micro` against a real MLflow server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, stage_dirs


def _electra(*args: str, env: dict[str, str], cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "electra.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_bad_params_fail_before_any_work_naming_the_field(tmp_path):
    proc = _electra("pretrain", "-S", "pretrain.mask_prob=1.5", *sum((["-S", o] for o in stage_dirs(tmp_path)), []),
                    env=dict(os.environ))
    assert proc.returncode == 2
    assert "pretrain.mask_prob" in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
@pytest.mark.timeout(1200)   # a whole micro pipeline (every task trained and registered) under the CLI's own 900 s
def test_micro_pipeline_through_the_cli_registers_a_discriminator(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    overrides = sum((["-S", o] for o in stage_dirs(tmp_path)), [])
    proc = _electra("run", "--profile", "micro", "--no-progress", "--json", *overrides, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout)
    for stage in ("ingest", "tokenize", "pretrain", "finetune", "evaluate", "register"):
        assert results[stage]["mlflow_run_id"]

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    version = client.get_model_version_by_alias("electra-discriminator", "challenger")
    assert version.version == results["register"]["version"]
    champion = client.get_model_version_by_alias("electra-discriminator", "champion")
    assert champion.version == version.version  # micro's gates are loose: promoted
    tags = version.tags
    for key in ("git_commit", "git_dirty", "data_dvc_md5", "params_hash", "pretrain_run_id", "profile", "gate.passed"):
        assert tags.get(key), key
    assert tags["pretrain_run_id"] == results["pretrain"]["mlflow_run_id"]
    assert tags["profile"] == "micro"
    for task in ("sst2", "mrpc", "rte", "cola", "stsb", "qa", "ner"):
        assert client.get_model_version_by_alias(f"electra-{task}", "challenger"), task
    with pytest.raises(Exception):  # QNLI has no train split here: nothing to register
        client.get_registered_model("electra-qnli")

    # Each stage is an MLflow run named after it, children of one pipeline run.
    stage_run = client.get_run(results["pretrain"]["mlflow_run_id"])
    assert stage_run.info.run_name == "pretrain"
    assert stage_run.data.tags["mlflow.parentRunId"] == results["pipeline"]["mlflow_run_id"]
    assert "train/loss" in stage_run.data.metrics and "train/mfu" in stage_run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(stage_run.info.run_id)}
    assert {"discriminator", "generator"} <= artifacts
    evaluate_run = client.get_run(results["evaluate"]["mlflow_run_id"])
    for key in ("glue.sst2.accuracy", "glue.cola.mcc", "glue.stsb.spearman", "glue.score", "qa.f1", "ner.f1",
                "bias.crows.generator.metric", "bias.crows.generator.aul.metric", "bias.crows.discriminator.metric",
                "bias.stereoset.generator.lms", "bias.stereoset.discriminator.ss", "bias.eec.gender.mean_abs_gap"):
        assert key in evaluate_run.data.metrics, key
    assert {"plots", "report"} <= {a.path for a in client.list_artifacts(evaluate_run.info.run_id)}
    # One nested run per task and seed under the evaluate and finetune stage runs; under
    # evaluate also one per task for its from-scratch control.
    trained = ("sst2", "mrpc", "rte", "cola", "stsb", "qa", "ner")
    for stage, extra in (("finetune", set()), ("evaluate", {f"{t}/scratch" for t in trained})):
        parent = results[stage]["mlflow_run_id"]
        children = client.search_runs([evaluate_run.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent}'")
        assert {r.info.run_name for r in children} == {f"{t}/seed-1234" for t in trained} | extra

    # The registered discriminator loads back and scores tokens.
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model("models:/electra-discriminator@champion")
    out = model.predict(pd.DataFrame({"text": ["the cat sat on the mat ."]}))
    probs = out.iloc[0]["replaced_probability"]
    assert len(probs) == len(out.iloc[0]["tokens"]) and all(0.0 <= p <= 1.0 for p in probs)

    # The QA model (a pyfunc: transformers 5 has no QA pipeline) answers with a span of its context.
    qa = mlflow.pyfunc.load_model("models:/electra-qa@challenger")
    context = "The chef cooked the meal in the small kitchen."
    answer = qa.predict(pd.DataFrame({"question": ["Who cooked the meal?"], "context": [context]})).iloc[0]["answer"]
    assert answer and answer in context
