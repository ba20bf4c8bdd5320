"""A rerun with nothing changed does nothing: the decision DVC makes, for the CLI and Prefect doors."""

from __future__ import annotations

from electra.pipeline.skip import STATE_FILE, stage_fingerprint, up_to_date
from electra.pipeline.stages import run_stage
from tests.conftest import micro_params


def test_a_stage_reruns_only_when_its_params_code_inputs_or_outputs_change(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = micro_params(tmp_path)
    first = run_stage("ingest", params, progress=False, skip_unchanged=True)
    assert "up_to_date" not in first and (tmp_path / "outputs/ingest" / STATE_FILE).is_file()

    again = run_stage("ingest", params, progress=False, skip_unchanged=True)
    assert again["up_to_date"] is True and again["mlflow_run_id"] == first["mlflow_run_id"]
    # DVC writes .gitignore files beside the outputs after the stage ran: not an output change.
    (tmp_path / "outputs/ingest/.gitignore").write_text("/shard-000.txt\n")
    (tmp_path / "outputs/.gitignore").write_text("/ingest\n")
    assert up_to_date("ingest", params) is not None

    # Another value in the stage's own params section: must run.
    changed = micro_params(tmp_path, "ingest.min_document_chars=101")
    assert stage_fingerprint("ingest", changed) != stage_fingerprint("ingest", params)
    assert up_to_date("ingest", changed) is None
    # Another stage's params are not this stage's business.
    assert up_to_date("ingest", micro_params(tmp_path, "pretrain.lr=0.1")) is not None

    # An output edited by hand: must run again, and then it is up to date once more.
    shard = sorted((tmp_path / "outputs/ingest").glob("shard-*"))[0]
    shard.write_bytes(shard.read_bytes() + b"tampered\n")
    assert up_to_date("ingest", params) is None
    rerun = run_stage("ingest", params, progress=False, skip_unchanged=True)
    assert "up_to_date" not in rerun and rerun["mlflow_run_id"] != first["mlflow_run_id"]
    assert up_to_date("ingest", params) is not None

    # Without skip_unchanged (DVC's own door, or --force) the stage always runs.
    assert "up_to_date" not in run_stage("ingest", params, progress=False)


def test_an_input_change_upstream_reruns_the_stage(tmp_path):
    params = micro_params(tmp_path)
    run_stage("ingest", params, progress=False, skip_unchanged=True)
    before = stage_fingerprint("tokenize", params)
    (tmp_path / "outputs/ingest/extra.txt").write_text("new text\n")
    assert stage_fingerprint("tokenize", params) != before      # its input folder changed


def test_the_stage_code_is_part_of_the_fingerprint(tmp_path):
    params = micro_params(tmp_path)
    one = stage_fingerprint("ingest", params, code=("data/ingest.py",))
    assert one != stage_fingerprint("ingest", params, code=("data/ingest.py", "core/files.py"))
    assert one == stage_fingerprint("ingest", params, code=("data/ingest.py",))
    # A module moved or renamed is another fingerprint even with the same bytes.
    assert stage_fingerprint("ingest", params, code=("core/files.py",)) != stage_fingerprint(
        "ingest", params, code=("core/keys.py",))


def test_one_task_of_a_stage_has_its_own_name_folders_and_fingerprint(tmp_path):
    """finetune@sst2 and evaluate@sst2: what the fan-out and DVC's foreach stages record."""
    import pytest

    from electra.pipeline.table import TABLE, stage_name

    params = micro_params(tmp_path)
    assert stage_name("finetune", "sst2") == "finetune@sst2" and stage_name("register") == "register"
    assert TABLE["finetune"].outputs(params, "sst2") == [tmp_path / "outputs/finetune/sst2"]
    assert TABLE["evaluate"].outputs(params, "ner") == [tmp_path / "outputs/evaluate/tasks/ner",
                                                           tmp_path / "outputs/evaluate/predictions/ner"]
    one = stage_fingerprint("finetune", params, task="sst2")
    assert one != stage_fingerprint("finetune", params, task="rte") != stage_fingerprint("finetune", params)
    assert "tasks" in TABLE["finetune"].code and "registry" not in TABLE["finetune"].code
    # Which tasks exist is a finetune param, so it is part of evaluate@<task>'s fingerprint.
    fewer = micro_params(tmp_path, "finetune.tasks=[sst2,ner]")
    assert stage_fingerprint("evaluate", fewer, task="ner") != stage_fingerprint("evaluate", params, task="ner")
    with pytest.raises(ValueError, match="does not run per task"):
        run_stage("ingest", params, task="sst2")
    with pytest.raises(ValueError, match="not in finetune.tasks"):
        run_stage("finetune", params, task="mnli")


def test_the_cli_has_a_command_per_stage_and_task_options_where_the_table_says():
    from typer.testing import CliRunner

    from electra.cli import app
    from electra.pipeline.table import TABLE

    runner = CliRunner()
    for name, stage in TABLE.items():
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert ("--task" in result.output) == stage.per_task, name
        assert "-S" in result.output and "--profile" in result.output, name
