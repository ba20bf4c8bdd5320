"""Registration against a real ``mlflow server``: the gate refuses, promotes, rolls back.

One real micro model is fine-tuned on SST-2 and evaluated once. Three registrations
then present it with three evaluations of the same dev examples: the real one, one
made 25 points worse by flipping correct predictions, and one made perfect. The
gate's paired bootstrap reads those prediction files exactly as it reads real ones,
so this exercises the whole decision on controlled evidence.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.conftest import ROOT, micro_params
from tests.e2e.services import running_mlflow_server

pytestmark = pytest.mark.slow


def _rewrite_predictions(evaluate_dir: Path, target: Path, how: str) -> None:
    """Copy an evaluate folder, making the SST-2 predictions worse or perfect."""
    shutil.copytree(evaluate_dir, target)
    metrics = json.loads((target / "metrics.json").read_text())
    seed = metrics["glue"]["sst2"]["registered_seed"]
    path = target / "predictions" / "sst2" / f"seed-{seed}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if how == "worse":
        correct = [r for r in rows if r["prediction"] == r["label"]]
        for row in correct[: len(rows) // 4]:
            row["prediction"] = 1 - row["label"]
    else:
        for row in rows:
            row["prediction"] = row["label"]
    accuracy = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
    metrics["glue"]["sst2"]["accuracy"] = metrics["glue"]["sst2"]["main"] = accuracy
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (target / "metrics.json").write_text(json.dumps(metrics))


SECRET = "planted-secret-7f3a9c"
PLANTED_ENV = ("MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "POSTGRES_PASSWORD",
               "HF_TOKEN")


def _assert_no_secret_logged(client: MlflowClient, tmp_path: Path) -> None:
    """Scan every run's params, tags and artifacts, every version's tags and description,
    and every file the stages wrote, for the planted credentials."""
    experiment = client.get_experiment_by_name("gate")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    assert runs
    found = []
    for run in runs:
        for kind, values in (("param", run.data.params), ("tag", run.data.tags)):
            found += [f"run {run.info.run_id} {kind} {k}" for k, v in values.items() if SECRET in f"{k}={v}"]
        folder = tmp_path / "scanned" / run.info.run_id
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(folder))
        found += [str(f) for f in folder.rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
    for model in ("electra-sst2", "electra-discriminator"):
        for version in client.search_model_versions(f"name='{model}'"):
            text = json.dumps(version.tags) + (version.description or "")
            if SECRET in text:
                found.append(f"{model} version {version.version}")
    found += [str(f) for f in tmp_path.rglob("*") if f.is_file() and "scanned" not in f.parts
              and f.stat().st_size < 50_000_000 and SECRET.encode() in f.read_bytes()]
    assert not found, f"a planted credential was written down: {found}"


def _cli(*args: str):
    """The ``electra`` command in this process (typer's runner: the CLI's own code path,
    without paying a fresh interpreter's imports per call)."""
    from typer.testing import CliRunner

    from electra.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.timeout(900)   # three registrations of every model, on a 2-core machine shared with the suite
def test_gate_refuses_a_worse_version_promotes_a_better_one_and_rolls_back(pretrained_micro, tmp_path,
                                                                             monkeypatch):
    from electra.pipeline.stages import run_stage

    root = pretrained_micro
    strict = ["finetune.tasks=[sst2]", "register.gate.non_inferiority_margin=0.02", "register.gate.bias_drift=true",
              f"finetune.output_dir={tmp_path}/finetune", f"evaluate.finetune_dir={tmp_path}/finetune",
              f"register.finetune_dir={tmp_path}/finetune", f"evaluate.output_dir={tmp_path}/evaluate",
              "tracking.experiment=gate"]
    with running_mlflow_server(tmp_path) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        # Credentials a real deployment has in its environment: none may end up written down.
        for variable in PLANTED_ENV:
            monkeypatch.setenv(variable, f"{SECRET}-{variable}")
        base = micro_params(root, *strict)
        run_stage("finetune", base, progress=False)
        run_stage("evaluate", base, progress=False)
        _rewrite_predictions(tmp_path / "evaluate", tmp_path / "evaluate-worse", "worse")
        _rewrite_predictions(tmp_path / "evaluate", tmp_path / "evaluate-better", "better")

        def register(evaluate_dir: Path, out: str) -> dict:
            params = micro_params(root, *strict, f"register.evaluate_dir={evaluate_dir}",
                                  f"register.output_dir={tmp_path}/{out}")
            return run_stage("register", params, progress=False)

        client = MlflowClient(url)
        first = register(tmp_path / "evaluate", "register-1")
        assert first["outcomes"] == {"electra-discriminator": "champion", "electra-sst2": "champion"}
        assert client.get_model_version_by_alias("electra-sst2", "champion").version == "1"

        # Version 2: 25 points worse on the same dev examples -> stays challenger, with the reason.
        second = register(tmp_path / "evaluate-worse", "register-2")
        assert second["outcomes"]["electra-sst2"] == "challenger"
        v2 = client.get_model_version("electra-sst2", "2")
        assert v2.tags["gate.passed"] == "false" and v2.tags["gate.compared_to"] == "1"
        assert "non_inferiority.sst2" in v2.tags["gate.reasons"] and "FAIL" in v2.tags["gate.reasons"]
        assert "challenger" in v2.aliases
        assert client.get_model_version_by_alias("electra-sst2", "champion").version == "1"
        report = Path(second["gate_report"]).read_text()
        assert "electra-sst2 version 2: challenger" in report and "**FAIL**" in report
        # The discriminator is gated on every task: refused too.
        assert second["outcomes"]["electra-discriminator"] == "challenger"

        # Version 3: better than the champion -> champion.
        third = register(tmp_path / "evaluate-better", "register-3")
        assert third["outcomes"]["electra-sst2"] == "champion"
        v3 = client.get_model_version("electra-sst2", "3")
        assert v3.tags["gate.passed"] == "true" and v3.tags["gate.compared_to"] == "1"
        assert "ok" in v3.tags["gate.check.non_inferiority.sst2"]
        assert client.get_model_version_by_alias("electra-sst2", "champion").version == "3"

        # Lineage, model card and datasets on the version.
        for key in ("git_commit", "git_dirty", "data_dvc_md5", "params_hash", "profile", "pretrain_run_id",
                    "torch_version", "transformers_version", "gate.evidence_run_id", "model_card"):
            assert v3.tags.get(key), key
        card = mlflow.artifacts.download_artifacts(v3.tags["model_card"], dst_path=str(tmp_path / "card"))
        card_text = Path(card).read_text()
        assert card_text.startswith("---") and "model-index" in card_text and "champion" in card_text
        register_run = client.get_run(v3.tags["gate.evidence_run_id"])
        inputs = {d.dataset.name: d for d in register_run.inputs.dataset_inputs}
        from electra.registry.register import content_digest

        assert inputs["glue-sst2"].dataset.digest == content_digest(ROOT / "data" / "glue" / "SST-2")
        assert {"glue-sst2", "crows-pairs", "vocab"} <= set(inputs)
        assert any(n.startswith("corpus:") for n in inputs) and inputs["vocab"].dataset.source

        _assert_no_secret_logged(client, tmp_path)

        # The champion serves: load it by alias and predict; it answers SST-2's label names.
        model = mlflow.pyfunc.load_model("models:/electra-sst2@champion")
        predictions = model.predict(["a wonderful, moving film .", "a dull and lifeless mess ."])
        assert len(predictions) == 2 and set(predictions["label"]) <= {"negative", "positive"}

        # By hand, through the CLI: rollback, then promote with a reason.
        rolled = _cli("rollback", "--model", "electra-sst2", "--reason", "v3 misbehaves in canary")
        assert rolled.exit_code == 0, rolled.output
        assert json.loads(rolled.stdout)["champion"] == "1"
        assert client.get_model_version_by_alias("electra-sst2", "champion").version == "1"
        assert client.get_model_version("electra-sst2", "3").tags["rolled_back.reason"] == "v3 misbehaves in canary"
        promoted = _cli("promote", "--model", "electra-sst2", "--version", "2", "--reason", "accepted by review")
        assert promoted.exit_code == 0, promoted.output
        v2 = client.get_model_version("electra-sst2", "2")
        assert "champion" in v2.aliases and v2.tags["promoted.reason"] == "accepted by review"
        missing = _cli("promote", "--model", "electra-sst2", "--version", "99", "--reason", "x")
        assert missing.exit_code == 1 and "version 99" in missing.stderr

        # A person sees it in the registry UI: the alias on the right version.
        from tests.e2e.mlflow_ui import versions_with_alias_in_ui

        assert versions_with_alias_in_ui(url, "electra-sst2", "champion") == ["2"]
        _assert_descriptions_read_well(url, client, card_text, tmp_path)


def _assert_descriptions_read_well(url: str, client: MlflowClient, card_text: str, tmp_path: Path) -> None:
    """Each version's Description in the registry UI, by what a person reads there: the card's
    summary first, the headline metric with its interval, the gate outcome, a link that opens
    the whole card; no front matter turned into headings, rules or YAML lines."""
    from tests.e2e.mlflow_ui import version_descriptions_in_ui

    shown = version_descriptions_in_ui(url, "electra-sst2", ["3", "2"], screenshot=tmp_path / "description.png")
    # The card's summary paragraph (the line under its title), as rendered: inline code unquoted.
    summary = card_text.split("---\n", 2)[2].splitlines()[2].replace("`", "")
    assert summary.startswith("ELECTRA fine-tuned for GLUE SST-2") and "version 3" in summary
    assert shown["3"]["text"].startswith(summary), shown["3"]["text"][:300]
    for version, outcome in (("3", "Gate passed"), ("2", "Gate failed")):
        seen = shown[version]
        text = seen["text"]
        assert text.startswith(summary.replace("version 3", f"version {version}").split(";")[0]), text[:300]
        assert seen["headings"] == [] and seen["rules"] == 0 and seen["tables"] == 0, seen
        assert "---" not in text and "model-index" not in text
        assert not re.search(r"^(language|license|library_name|tags|datasets|pipeline_tag):", text, re.M)
        assert re.search(r"GLUE SST-2, Accuracy: \d+\.\d \[\d+\.\d, \d+\.\d\]", text), text
        assert outcome in text
        run_id = client.get_model_version("electra-sst2", version).tags["gate.evidence_run_id"]
        assert [h for t, h in seen["links"] if t == "MODEL_CARD.md"] == [
            f"#/experiments/{client.get_run(run_id).info.experiment_id}/runs/{run_id}/artifacts/"
            "model_cards/electra-sst2/MODEL_CARD.md"]
        # The link opens the full card, front matter included, in the run's artifacts.
        assert "model-index" in seen["card_text"] and f"electra-sst2 (version {version})" in seen["card_text"]
    assert "promoted to champion" in shown["3"]["text"] and "Compared with champion version 1" in shown["3"]["text"]
    assert "kept as challenger" in shown["2"]["text"] and "non_inferiority.sst2" in shown["2"]["text"]


def test_promotion_lock_sits_beside_the_store_and_is_git_ignored():
    """The embedded store's lock file is next to mlflow.db, and git ignores it (and the journal)."""
    import subprocess

    from electra.registry.register import promotion_lock_path

    assert promotion_lock_path("http://127.0.0.1:5000") is None   # a server locks in its registry
    lock = promotion_lock_path(f"sqlite:///{ROOT}/mlflow.db")
    assert lock == ROOT / "mlflow.db.promote.lock"
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, text=True)
    if inside.stdout.strip() != "true":
        pytest.skip("not a git checkout")
    for path in (lock, ROOT / "mlflow.db", ROOT / "mlflow.db-journal"):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT)
        assert ignored.returncode == 0, f"{path.name} is not git-ignored"


def test_champion_moves_only_from_the_version_the_gate_compared_with(tmp_path):
    """The compare-and-set under concurrent pipelines: a stale comparison never promotes."""
    import mlflow.pyfunc

    from electra.registry.register import _move_champion, rollback

    class Length(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [len(str(x)) for x in model_input]

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        # Artifacts in tmp_path too (a sqlite store's default artifact root is ./mlruns).
        mlflow.create_experiment("cas", artifact_location=(tmp_path / "artifacts").as_uri())
        mlflow.set_experiment("cas")
        for _ in range(3):
            with mlflow.start_run():
                mlflow.pyfunc.log_model(name="m", python_model=Length(), registered_model_name="cas-model",
                                        pip_requirements=["mlflow"])
        client = MlflowClient(uri)
        with pytest.raises(ValueError, match="no champion to roll back"):
            rollback("cas-model")
        assert _move_champion(client, "cas-model", "1", None, "first", "promoted")
        # Pipeline A gated version 2 against champion 1 and promotes it; pipeline B gated
        # version 3 against champion 1 too, but champion is 2 by now: B must not move it.
        assert _move_champion(client, "cas-model", "2", "1", "A", "promoted")
        assert not _move_champion(client, "cas-model", "3", "1", "B", "promoted")
        assert str(client.get_model_version_by_alias("cas-model", "champion").version) == "2"
        assert "promoted.reason" not in client.get_model_version("cas-model", "3").tags
        history = json.loads(client.get_registered_model("cas-model").tags["champion.history"])
        assert [h["version"] for h in history] == ["1", "2"]
        assert rollback("cas-model", "bad canary")["champion"] == "1"
    finally:
        mlflow.set_tracking_uri(None)      # and MLFLOW_TRACKING_URI, which it had set
        mlflow.set_registry_uri(None)
