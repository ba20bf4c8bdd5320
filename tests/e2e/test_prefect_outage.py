"""The Prefect server goes away in the middle of a flow run and comes back: the run carries on.

A real ``prefect server start`` (sqlite in its home) is killed with SIGKILL while a task
runs, and restarted on the same port with the same database a few seconds later: during
pretraining (no slot held), and during a fine-tuning task that holds the ``cpu`` slot (the
server, which keeps leases in memory, forgets that lease; the slot is given back by name,
else every later task would wait for it for ever). The flow (stages stubbed: this is about
the orchestration) keeps retrying its API calls with back-off (``PREFECT_CLIENT_MAX_RETRIES``),
finishes Completed, and the server, back, holds the flow run's final state and its artifacts.

No wait on the server is unbounded (flows/slots.py): a flow run against a second server in
the same process gets its slots there (Prefect's own acquisition service kept the first
server's client for the life of the process: this is what hung ``make test`` when
test_prefect.py ran before this module in one worker); a slot that cannot be had fails the
attempt, naming the limit and the server, and the task's retry takes over; a server that
accepts connections and never answers costs an attempt ``api_wait_s``, not for ever.
"""

from __future__ import annotations

import concurrent.futures
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, stage_dirs
from tests.e2e.services import free_port, wait_http
from tests.e2e.test_prefect import PREFECT, _artifacts, _prefect_env, _stop, _stub_stages, _task_states

# A hang here is in a Prefect flow: the engine catches the signal method's exception and then
# waits for its task threads, so only the thread method (stacks dumped, process ended) ends it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]
DOWN_S = 8.0   # how long the server stays away before it is started again


def _drop_prefect_services(deliver: bool = False) -> None:
    """Stop Prefect's per-process services, dropping what they still hold (``deliver``: sending
    it first, for at most 15 s, to a server that is still there).

    They (the events worker that carries task-run states, the API log worker) stay bound to
    the server of their first use, whatever server a later flow in the process talks to: a
    flow against another server sends its events to the first one, each refused for about ten
    seconds, and at exit Prefect waits for the whole backlog (minutes) before the process ends.
    Prefect's concurrency slot services are left as they are: the flows do not use them (see
    flows/slots.py), and a process that switches servers keeps them (what hung ``make test``).
    """
    from prefect._internal.concurrency.services import _active_services

    services = [s for s in list(_active_services) if not type(s).__name__.startswith("ConcurrencySlotAcquisition")]
    for service in services if not deliver else []:
        with service._queue.mutex:   # keep a stopped service's end-of-queue marker (None)
            service._queue.queue = type(service._queue.queue)(i for i in service._queue.queue if i is None)
    futures = [service._drain() for service in services]
    concurrent.futures.wait(futures, timeout=15)


@pytest.fixture(autouse=True)
def fresh_prefect_services():
    """Each test here starts Prefect servers of its own: it starts with no Prefect service
    bound to another server, and leaves none bound to its own (gone by then)."""
    _drop_prefect_services()
    yield
    _drop_prefect_services()


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
        if self.proc is not None and self.proc.poll() is None:
            _drop_prefect_services(deliver=True)   # while the server is there to take what they hold
        if self.proc is not None:
            _stop(self.proc)


# A busy CI machine may take minutes to start the server again; past this, a hang (as in
# issue 18, in acquire_concurrency_slots_with_lease) fails with every thread's stack.
@pytest.mark.timeout(600, method="thread")
@pytest.mark.parametrize("during", ["pretrain", "finetune@sst2"])
def test_the_flow_carries_on_when_the_prefect_server_is_away_for_a_while(tmp_path, monkeypatch, during):
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    import flows.pipeline as pipeline

    server = PrefectServer(tmp_path / "home")
    server.home.mkdir()
    server.start()
    outage: dict[str, float] = {}
    restarted: list[threading.Thread] = []

    def behaviour(name: str, call: int) -> None:
        if name != during or call > 1:
            return
        # The server dies while the task runs; it is back DOWN_S later (plus its start-up).
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
        assert names.count(during) == 1              # the stage itself did not run twice
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
        # No slot is left taken: one held through the restart was given back by name.
        assert _limit(server.api_url, "cpu").active_slots == 0
    finally:
        for thread in restarted:
            thread.join(timeout=240)
        server.stop()


def _limit(api_url: str, name: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


def _run_micro(api_url: str, tmp_path: Path, *overrides: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.pipeline as pipeline

    with temporary_settings({PREFECT_API_URL: api_url}):
        return pipeline.electra_pipeline(profile="micro", overrides=[*stage_dirs(tmp_path), *overrides],
                                         params_file=str(ROOT / "params.yaml"), return_state=True)


@pytest.fixture
def prefect_sqlite_server(tmp_path):
    server = PrefectServer(tmp_path / "home")
    server.home.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_flow_run_against_another_server_in_the_same_process_gets_its_slots_there(tmp_path, monkeypatch):
    """What hung ``make test`` (issue 18): test_prefect.py's in-process flow ran first in the same
    worker, and Prefect's per-process slot acquisition service kept that (stopped) server's client.
    Every slot request of the next flow went there: refused, retried, queued one behind the other,
    the run neither ending nor failing. Before the fix this test ran into its timeout."""
    seen = _stub_stages(monkeypatch)
    first, second = PrefectServer(tmp_path / "first"), PrefectServer(tmp_path / "second")
    for server in (first, second):
        server.home.mkdir()
    try:
        first.start()
        assert _run_micro(first.api_url, tmp_path / "one").is_completed()
        first.stop()
        second.start()
        started = time.monotonic()
        state = _run_micro(second.api_url, tmp_path / "two")
        assert state.is_completed(), state
        assert time.monotonic() - started < 120
        finetuned = sorted(name for name, _, _ in seen if name.startswith("finetune@"))
        assert finetuned == sorted(f"finetune@{t}" for t in _micro_tasks() * 2)   # each task, once per run
        assert _limit(second.api_url, "cpu").active_slots == 0
    finally:
        first.stop()
        second.stop()


def test_a_slot_that_cannot_be_had_fails_the_attempt_naming_the_limit_and_the_server(
        prefect_sqlite_server, tmp_path, monkeypatch):
    """The ``cpu`` limit's only slot is taken for good (as a slot held through a restart of a
    server that keeps leases in memory is): each attempt waits ``slot_wait_s``, fails with an error
    that names the limit and the server, the task's retry takes over, and the run ends Failed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.slots as slots

    api_url = prefect_sqlite_server.api_url
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="cpu", limit=1))
        client.increment_concurrency_slots(names=["cpu"], slots=1, mode="concurrency")   # no lease: never freed
    monkeypatch.setenv("ELECTRA_PREFECT_SLOT_WAIT_S", "3")
    attempts: list[str] = []
    acquire = slots._acquire

    def counting(name, *args):
        attempts.append(name)
        return acquire(name, *args)

    monkeypatch.setattr(slots, "_acquire", counting)
    seen = _stub_stages(monkeypatch)
    started = time.monotonic()
    state = _run_micro(api_url, tmp_path, "prefect.retries=1", "prefect.retry_delay_s=0")
    assert state.is_failed(), state
    assert time.monotonic() - started < 120
    assert f"no slot of the global concurrency limit 'cpu' on the Prefect server at {api_url} within 3 s" in \
        state.message, state.message
    assert "1/1 slots taken" in state.message
    tasks = [name for name, _, _ in seen if name.startswith("finetune@")]
    assert tasks == []                                   # no stage ran without its slot
    assert attempts.count("cpu") == 2 * len(_micro_tasks())   # each fine-tuning task: its try and its retry
    assert _limit(api_url, "cpu").active_slots == 1      # nothing taken, nothing given back by mistake


def _micro_tasks() -> list[str]:
    from electra.core.config import load_params

    return list(load_params(ROOT / "params.yaml", profile="micro").finetune.tasks)


def test_a_server_that_accepts_and_never_answers_costs_an_attempt_api_wait_s(monkeypatch):
    """A socket that never answers (a half-dead server, a stale keep-alive connection): the
    slot request is given up after ``api_wait_s`` with an error naming the limit and the server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.slots import DeviceSlotError, device_slot

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)                   # connections complete in the backlog; nothing answers
        api_url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
        monkeypatch.setenv("ELECTRA_PREFECT_API_WAIT_S", "2")
        started = time.monotonic()
        with temporary_settings({PREFECT_API_URL: api_url}), pytest.raises(DeviceSlotError) as error:
            with device_slot("cpu"):
                pytest.fail("a slot from a server that never answered")
        assert time.monotonic() - started < 2 + 15
    assert "'cpu'" in str(error.value) and api_url in str(error.value) and "within 2 s" in str(error.value)
