"""What a person reads: the CLI's options, one line per stage, the summary, step lines, noise."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _electra(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "electra.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))


def test_version_and_a_missing_params_file_is_an_error_naming_it(tmp_path):
    from electra import __version__

    shown = _electra("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"electra-pipeline {__version__}"
    missing = _electra("params", "--params", str(tmp_path / "missing.yaml"))
    assert missing.returncode == 2, missing.stdout
    assert "missing.yaml not found" in missing.stderr
    assert missing.stdout == ""          # nothing ran on defaults
    bad_level = _electra("--log-level", "loud", "params")
    assert bad_level.returncode == 2 and "log level" in bad_level.stderr


def test_load_params_refuses_a_missing_file(tmp_path):
    from electra.core.config import ConfigError, load_params

    with pytest.raises(ConfigError, match="nope.yaml not found"):
        load_params(tmp_path / "nope.yaml")


def test_one_line_per_stage_says_what_how_long_and_where():
    from electra.pipeline.summary import stage_line

    ingest = {"output_dir": "outputs/ingest", "documents": 129, "sentences": 63559, "files_kept": 69,
              "files_skipped": 2, "seconds": 7.678}
    line = stage_line("ingest", ingest)
    assert line == ("ingest: 69 files -> 129 documents, 63,559 sentences (2 skipped: see manifest.json) "
                    "in 7.7s -> outputs/ingest")
    task = {"task": "sst2", "runs": {"1234": {}}, "train_loss": 0.61234, "model_dir": "outputs/finetune/sst2/seed-1234/model",
            "seconds": 12.0}
    assert stage_line("finetune", task, "sst2") == (
        "finetune@sst2: 1 seed(s), train loss 0.612 in 12.0s -> outputs/finetune/sst2/seed-1234/model")
    skipped = stage_line("tokenize", {"up_to_date": True, "output_dir": "outputs/tokenize"})
    assert skipped.startswith("tokenize: up to date") and skipped.endswith("-> outputs/tokenize")
    assert "\n" not in stage_line("register", {"outcomes": {"electra-discriminator": "champion"},
                                               "versions": {"electra-discriminator": "3"}, "seconds": 1.0})


def test_the_summary_reads_the_outputs(tmp_path):
    from electra.core.config import load_params
    from electra.pipeline.summary import summary_text

    params = load_params(ROOT / "params.yaml", overrides=[f"evaluate.output_dir={tmp_path}/evaluate",
                                                          f"register.output_dir={tmp_path}/register"])
    assert "no evaluation yet" in summary_text(params)
    spread = {"main": {"min": 0.8, "max": 0.9, "n": 2}}
    metrics = {"glue": {"sst2": {"main": 0.85, "main_ci": [0.8, 0.9], "spread": spread, "dev_examples": 872},
                        "qnli": {"skipped": "no train split"}, "score": 0.85, "score_tasks": ["sst2"]},
               "ner": {"main": 0.2, "main_ci": [0.1, 0.3], "spread": {"main": {"n": 1}}, "dev_examples": 1009},
               "bias": {"crows": {"generator": {"metric": 55.0, "ci95_low": 52.0, "ci95_high": 58.0}}}}
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "register").mkdir()
    (tmp_path / "register" / "registration.json").write_text(json.dumps({
        "versions": {"electra-discriminator": "2"}, "aliases": {"electra-discriminator": ["challenger", "champion"]},
        "gates": {"electra-discriminator": {"outcome": "champion"}}, "tracking_uri": "sqlite:///mlflow.db"}))
    text = summary_text(params)
    assert "85.0 [80.0, 90.0; seeds 80.0–90.0]" in text          # median [interval; seed range]
    assert "not trained" in text and "ner f1" in text and "sst2 accuracy" in text and "20.0 [10.0, 30.0]" in text
    assert "CrowS-Pairs (generator)" in text and "55.0 [52.0, 58.0]" in text
    assert "electra-discriminator" in text and "challenger, champion" in text and "v2" in text
    assert "make mlflow-ui" in text


def test_the_summary_and_the_evaluate_line_show_the_gain_over_scratch(tmp_path):
    from electra.core.config import load_params
    from electra.pipeline.summary import stage_line, summary_text

    params = load_params(ROOT / "params.yaml", overrides=[f"evaluate.output_dir={tmp_path}/evaluate",
                                                          f"register.output_dir={tmp_path}/register"])
    scratch = {"main": 0.5, "main_ci": [0.45, 0.55], "spread": {"main": {"n": 1}}, "dev_examples": 872}
    sst2 = {"main": 0.62, "main_ci": [0.58, 0.66], "spread": {"main": {"n": 1}}, "dev_examples": 872,
            "scratch": scratch, "gain_over_scratch": 0.12, "gain_over_scratch_ci": [0.07, 0.17]}
    verdict = "pretraining beat scratch on 1 of 1 tasks (95% interval above 0); the GLUE mean gain is +12.0 [+7.0, +17.0] points."
    metrics = {"glue": {"sst2": sst2, "score": 0.62, "score_tasks": ["sst2"]},
               "gain_over_scratch": {"glue_mean": 0.12, "glue_mean_ci": [0.07, 0.17], "glue_tasks": ["sst2"],
                                     "beat": 1, "of": 1, "verdict": verdict}}
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
    text = summary_text(params, ui_hint=False)
    assert "Pretrained vs from scratch" in text and verdict in text
    row = next(line for line in text.splitlines() if line.strip().startswith("sst2  "))
    assert "62.0" in row and "50.0" in row and "+12.0 [+7.0, +17.0]" in row and "one seed" in row
    assert "GLUE mean (sst2)" in text
    line = stage_line("evaluate", {**metrics, "seconds": 3.0})
    assert "gain over scratch +12.0 [+7.0, +17.0] points" in line and "\n" not in line


def test_step_lines_carry_loss_rate_and_eta_at_most_every_few_seconds():
    from electra.core.logs import StepLog

    stream = io.StringIO()
    logger = logging.getLogger("electra.test_step_lines")
    logger.addHandler(logging.StreamHandler(stream))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    log = StepLog("pretrain", total=100, every_s=3600, logger=logger)
    log.started -= 10.0                    # ten seconds ago: 10 steps/s after 100
    assert not log.update(50, loss=3.0)   # within every_s of the start: quiet
    log.last -= 3600
    assert log.update(50, loss=3.21, tokens_per_s=12345.6)
    assert log.update(100, loss=2.5)      # the last step always
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("pretrain step 50/100 (50%) loss 3.21 tokens_per_s 12,346")
    assert "ETA 0:" in lines[0] and "ETA" not in lines[1]


def test_the_expected_load_report_is_dropped_only_where_expected(tmp_path):
    import transformers
    from transformers import ElectraConfig, ElectraForPreTraining, ElectraForSequenceClassification

    from electra.core.logs import expected_new_head

    config = ElectraConfig(vocab_size=50, embedding_size=8, hidden_size=8, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
    ElectraForPreTraining(config).save_pretrained(tmp_path / "disc")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    source = logging.getLogger("transformers.modeling_utils")
    source.addHandler(handler)
    transformers.logging.set_verbosity_warning()
    try:
        with expected_new_head():
            ElectraForSequenceClassification.from_pretrained(tmp_path / "disc", num_labels=2)
        assert "LOAD REPORT" not in stream.getvalue()
        ElectraForSequenceClassification.from_pretrained(tmp_path / "disc", num_labels=2)
        assert "LOAD REPORT" in stream.getvalue()     # outside the block it is still shown
    finally:
        source.removeHandler(handler)


def test_a_run_leaves_a_clone_clean_but_dvc_lock_stays_committable(tmp_path):
    """Outputs (the small metrics files included) are git-ignored; dvc.lock must not be:
    DVC refuses a git-ignored lock file (FileIsGitIgnored)."""
    def ignored(rel: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", rel], cwd=ROOT).returncode == 0

    for rel in ("outputs/evaluate/metrics.json", "outputs/pretrain/history.csv", "outputs/pretrain/metrics.json",
                "outputs/register/registration.json", ".hypothesis/examples/x", "mlflow.db"):
        assert ignored(rel), rel
    for rel in ("dvc.lock", "params.yaml", "electra/cli.py"):
        assert not ignored(rel), rel
