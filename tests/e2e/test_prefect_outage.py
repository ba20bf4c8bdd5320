"""The Prefect server goes away in the middle of a flow run and comes back: the run carries on.

A real ``prefect server start`` (sqlite in its home) is killed with SIGKILL while the
pretrain task runs, and restarted on the same port with the same database a few
seconds later. The flow (stages stubbed: this is about the orchestration) keeps
retrying its API calls with back-off (``PREFECT_CLIENT_MAX_RETRIES``), finishes
Completed, and the server, back, holds the flow run's final state and its artifacts.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, stage_dirs, wait_http
from tests.e2e.test_prefect import PREFECT, _artifacts, _prefect_env, _stop, _stub_stages, _task_states

pytestmark = pytest.mark.slow
DOWN_S = 8.0   # how long the server stays away before it is started again


class PrefectServer:
    """``prefect server start`` on a fixed port, which can be killed and started again."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.home / f"server-{self.starts}.log", "w")
        self.proc = subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--analytics-off"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=_prefect_env(self.home))
        wait_http(f"{self.api_url}/health", timeout=180, proc=self.proc)

    def kill(self) -> None:
        import os
        import signal

        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


def test_the_flow_carries_on_when_the_prefect_server_is_away_for_a_while(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    import flows.pipeline as pipeline

    server = PrefectServer(tmp_path / "home")
    server.home.mkdir()
    server.start()
    outage: dict[str, float] = {}
    restarted: list[threading.Thread] = []

    def behaviour(name: str, call: int) -> None:
        if name != "pretrain":
            return
        # The server dies while pretraining runs; it is back DOWN_S later (plus its start-up).
        server.kill()
        outage["killed"] = time.time()

        def come_back() -> None:
            time.sleep(DOWN_S)
            server.start()
            outage["back"] = time.time()

        thread = threading.Thread(target=come_back, daemon=True)
        thread.start()
        restarted.append(thread)
        time.sleep(1.0)   # the task ends while the server is still down

    seen = _stub_stages(monkeypatch, behaviour)
    try:
        # Prefect's client retries a lost connection with exponential back-off (2, 4, 8 … s):
        # seven tries ride out about four minutes, room for a slow restart on a busy CI machine.
        with temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_CLIENT_MAX_RETRIES: 7}):
            state = pipeline.electra_pipeline(profile="micro", overrides=stage_dirs(tmp_path),
                                              params_file=str(ROOT / "params.yaml"), return_state=True)
        for thread in restarted:
            thread.join(timeout=240)
        assert "back" in outage, "the server was not started again"
        print(f"Prefect server away for {outage['back'] - outage['killed']:.1f} s")
        assert state.is_completed(), state
        names = [name for name, _, _ in seen]
        assert names[:3] == ["ingest", "tokenize", "pretrain"] and names[-1] == "register"
        assert names.count("pretrain") == 1          # the stage itself did not run twice
        # The server, back, holds the run's outcome: the flow run Completed, and the
        # artifacts written after the outage (API calls, retried) are there.
        from prefect.client.orchestration import get_client

        flow_run_id = state.state_details.flow_run_id
        with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
            assert client.read_flow_run(flow_run_id).state.name == "Completed"
        assert _artifacts(server.api_url, "electra-pipeline-summary")
        # Task-run states travel as events over a websocket; Prefect's events client gives up
        # after ten reconnection attempts (about ten seconds), so states sent while the server
        # was down longer are missing there. Every state the server does hold is Completed,
        # and the stages after the outage reported theirs.
        time.sleep(3.0)   # the event recorder writes asynchronously
        states = _task_states(server.api_url, str(flow_run_id))
        assert set(states.values()) == {"Completed"}, states
        assert {"evaluate", "register"} <= set(states), states
    finally:
        for thread in restarted:
            thread.join(timeout=240)
        server.stop()
