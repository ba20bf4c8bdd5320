"""A rerun with nothing changed does nothing: the decision DVC makes, for the CLI and Prefect doors."""

from __future__ import annotations

from electra.pipeline.stages import STATE_FILE, run_stage, stage_fingerprint, up_to_date
from tests.conftest import ROOT, micro_params


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


def test_the_stage_code_listed_in_dvc_yaml_is_part_of_the_fingerprint(tmp_path):
    params = micro_params(tmp_path)
    one = tmp_path / "one.yaml"
    one.write_text("stages:\n  ingest:\n    deps: [electra/data/ingest.py]\n")
    two = tmp_path / "two.yaml"
    two.write_text("stages:\n  ingest:\n    deps: [electra/data/ingest.py, electra/core/files.py]\n")
    assert stage_fingerprint("ingest", params, one) != stage_fingerprint("ingest", params, two)
    assert stage_fingerprint("ingest", params, one) == stage_fingerprint("ingest", params, one)


def test_one_task_of_a_stage_has_its_own_name_folders_and_fingerprint(tmp_path):
    """finetune@sst2 and evaluate@sst2: what the fan-out and DVC's foreach stages record."""
    import pytest

    from electra.pipeline.stages import _stage_code, stage_name, stage_output_dirs

    params = micro_params(tmp_path)
    assert stage_name("finetune", "sst2") == "finetune@sst2" and stage_name("register") == "register"
    assert stage_output_dirs("finetune", params, "sst2") == [tmp_path / "outputs/finetune/sst2"]
    assert stage_output_dirs("evaluate", params, "ner") == [tmp_path / "outputs/evaluate/tasks/ner",
                                                           tmp_path / "outputs/evaluate/predictions/ner"]
    one = stage_fingerprint("finetune", params, task="sst2")
    assert one != stage_fingerprint("finetune", params, task="rte") != stage_fingerprint("finetune", params)
    # The foreach stage's code is read from its `do:` block in dvc.yaml.
    assert "finetune.py" in {p.name for p in _stage_code("finetune", ROOT / "dvc.yaml")}
    assert "register.py" not in {p.name for p in _stage_code("finetune", ROOT / "dvc.yaml")}
    # Which tasks exist is a finetune param, so it is part of evaluate@<task>'s fingerprint.
    fewer = micro_params(tmp_path, "finetune.tasks=[sst2,ner]")
    assert stage_fingerprint("evaluate", fewer, task="ner") != stage_fingerprint("evaluate", params, task="ner")
    with pytest.raises(ValueError, match="does not run per task"):
        run_stage("ingest", params, task="sst2")
    with pytest.raises(ValueError, match="not in finetune.tasks"):
        run_stage("finetune", params, task="mnli")


def test_the_cli_offers_per_task_runs_for_the_same_stages_as_the_library():
    from electra.cli import PER_TASK_STAGES as cli_stages
    from electra.pipeline.stages import PER_TASK_STAGES

    assert cli_stages == PER_TASK_STAGES
