"""The tracking server goes away in the middle of a run and comes back: no metric is lost."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest
from mlflow import MlflowClient

from electra.core.tracking import MlflowLogger
from tests.e2e.services import free_port, stop_process, wait_http

pytestmark = pytest.mark.slow


def _server(tmp_path, port: int) -> subprocess.Popen:
    """A real ``mlflow server`` on a fixed port over one sqlite store (so it can come back)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**__import__("os").environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    wait_http(f"http://127.0.0.1:{port}/health", timeout=120, proc=proc)
    return proc


def test_metrics_logged_while_the_server_is_down_arrive_when_it_is_back(tmp_path, monkeypatch):
    """Down for a while: buffered, then sent in order with their steps. Down for good: a clear
    error from flush, and the metrics still held, never dropped silently."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Fail fast instead of MLflow's own minutes of HTTP retries: the buffer is what is tested.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    server = _server(tmp_path, port)
    try:
        client = MlflowClient(url)
        run = client.create_run(client.get_experiment_by_name("Default").experiment_id, run_name="outage")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        logger = MlflowLogger(run_id=run.info.run_id)
        for step in range(5):
            logger.log_metrics({"train/loss": 10.0 - step}, step=step)
        assert not logger.pending
        stop_process(server)                       # the server goes away mid-run
        for step in range(5, 10):
            logger.log_metrics({"train/loss": 10.0 - step}, step=step)   # no exception: buffered
        assert len(logger.pending) == 5
        server = _server(tmp_path, port)           # ... and comes back
        logger.log_metrics({"train/loss": 0.0}, step=10)
        logger.flush()
        assert not logger.pending
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
            [(step, 10.0 - step) for step in range(11)]

        stop_process(server)                       # gone for good
        logger.log_metrics({"train/loss": -1.0}, step=11)
        with pytest.raises(ConnectionError, match="could not be sent after 3 attempts"):
            logger.flush(attempts=3, first_delay_s=0.1)
        assert len(logger.pending) == 1
    finally:
        stop_process(server)
