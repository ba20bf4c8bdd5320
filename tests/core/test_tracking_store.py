"""Which store a stage logs to: params decide, and one stage's store never leaks into the next."""

from __future__ import annotations

import os

import mlflow

from electra.core.config import TrackingConfig
from electra.core.tracking import configure, tracking_uri


def test_a_second_configure_in_the_same_process_uses_its_own_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    first = TrackingConfig(store_path=str(tmp_path / "a.db"), artifact_dir=str(tmp_path / "a"))
    second = TrackingConfig(store_path=str(tmp_path / "b.db"), artifact_dir=str(tmp_path / "b"))
    try:
        configure(first)
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; configure leaves the environment alone.
        assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
        assert tracking_uri(second).endswith("b.db")
        configure(second)
        assert mlflow.get_tracking_uri().endswith("b.db") and mlflow.get_registry_uri().endswith("b.db")
        with mlflow.start_run(run_name="probe"):
            pass
        assert mlflow.search_runs(search_all_experiments=True, filter_string="run_name = 'probe'").shape[0] == 1
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'a.db'}")
        assert mlflow.search_runs(search_all_experiments=True, filter_string="run_name = 'probe'").shape[0] == 0
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.pop("MLFLOW_REGISTRY_URI", None)


def test_the_environment_outranks_params(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    cfg = TrackingConfig(store_path=str(tmp_path / "a.db"), tracking_uri="http://127.0.0.1:5000")
    assert tracking_uri(cfg) == "http://127.0.0.1:5999"


def test_lineage_outside_a_checkout_comes_from_the_image_build(tmp_path, monkeypatch):
    """A container holds the code without .git: the commit baked in at build time is used,
    and with none the lineage says unknown, never a clean tree nobody checked."""
    from electra.core.tracking import git_info

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))   # no repo above tmp_path either
    monkeypatch.delenv("ELECTRA_GIT_COMMIT", raising=False)
    monkeypatch.delenv("ELECTRA_GIT_DIRTY", raising=False)
    assert git_info(tmp_path) == {"git_commit": "unknown", "git_dirty": "unknown"}
    monkeypatch.setenv("ELECTRA_GIT_COMMIT", "0123abc")
    monkeypatch.setenv("ELECTRA_GIT_DIRTY", "false")
    assert git_info(tmp_path) == {"git_commit": "0123abc", "git_dirty": "false"}
    here = git_info(os.path.dirname(__file__))
    assert len(here["git_commit"]) == 40 and here["git_dirty"] in ("true", "false")   # a checkout wins
