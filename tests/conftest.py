"""Shared test set-up: offline, quiet, every store in a temporary folder.

Tests use the real data under ``data/`` (``make test`` pulls it first) and the
``micro`` profile, with every stage's output folder moved under a temporary
directory so that tests never touch the project's own ``outputs/``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes share the cores (pytest -n 2): one compute thread each, inherited by
    # the stages they start, instead of each oversubscribing every core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

if not (DATA / "MANIFEST.md").exists():  # pragma: no cover - a setup problem, not a test failure
    raise pytest.UsageError("data/ is missing: run `make data` (dvc pull) first")


BACKSTOP_FACTOR = 2.0
BACKSTOP_GRACE_S = float(os.environ.get("ELECTRA_TEST_BACKSTOP_GRACE_S", "60"))   # a test of it shortens it


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A backstop behind pytest-timeout. Its SIGALRM fails a hung test once; code that
    swallows that exception and waits again (a broad ``except`` around a lock or a
    server call) would still hang the run. Past twice the test's limit plus a minute, the
    process prints every thread's stack and exits: pytest-xdist reports the test as a
    crash, and CI ends instead of reaching its own limit."""
    import faulthandler

    marker = item.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    if limit > 0:
        # Written where pytest's own faulthandler writes: the terminal's stderr, not the
        # test's captured output (which dies with the process).
        from _pytest.faulthandler import fault_handler_stderr_fd_key

        out = item.config.stash.get(fault_handler_stderr_fd_key, None)
        faulthandler.dump_traceback_later(limit * BACKSTOP_FACTOR + BACKSTOP_GRACE_S, exit=True,
                                          file=out if out is not None else sys.__stderr__)
    try:
        yield
    finally:
        if limit > 0:
            faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _mlflow_uri_does_not_leak():
    """A test's MLflow URIs die with it. ``mlflow.set_tracking_uri`` / ``set_registry_uri``
    set process globals (and export ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``): a
    later test's client would otherwise find the registry of a store that test no longer
    uses, and its subprocesses a server that test already stopped."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {k: os.environ.get(k) for k in keys}
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def stage_dirs(tmp: Path) -> list[str]:
    """Overrides that put every stage's outputs (and the MLflow store) under ``tmp``; data stays in data/."""
    return [f"output_root={tmp}/outputs", f"tracking.store_path={tmp}/mlflow.db",
            f"tracking.artifact_dir={tmp}/mlartifacts"]


def micro_params(tmp: Path, *extra: str):
    """The micro profile with all outputs under ``tmp``."""
    from electra.core.config import load_params

    return load_params(ROOT / "params.yaml", profile="micro", overrides=[*stage_dirs(tmp), *extra])


@pytest.fixture(scope="session")
def pretrained_micro(tmp_path_factory) -> Path:
    """ingest + tokenize + pretrain on the micro profile, once per session; returns the tmp root."""
    from electra.data.ingest import ingest
    from electra.pretraining.trainer import pretrain
    from electra.data.tokenize import tokenize

    tmp = tmp_path_factory.mktemp("micro")
    params = micro_params(tmp)
    ingest(params.ingest, progress=False)
    tokenize(params.tokenize, progress=False)
    pretrain(params.pretrain, progress=False)
    return tmp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200 (or the process dies, or time runs out)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a server and its children (servers start workers of their own)."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@contextlib.contextmanager
def running_postgres(databases: tuple[str, ...] = ("mlflow", "prefect")) -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 (Debian's package) with ``databases``, for the block.

    Yields the base URI ``postgresql://electra@127.0.0.1:PORT`` (trust authentication, on
    loopback only). Run as root, the server runs as the ``postgres`` user, as it requires.
    """
    import glob
    import shutil
    import tempfile

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    bindir = Path(bins[-1]) if bins else Path(shutil.which("initdb") or "initdb").parent
    as_owner: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="electra-pg-"))   # under /tmp: the server user can reach it
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"
    try:
        subprocess.run([*as_owner, str(bindir / "initdb"), "-D", str(data), "-U", "electra", "--auth=trust",
                        "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"),
                        "-o", f"-h 127.0.0.1 -p {port} -k {folder}", "-w", "start"],
                       check=True, capture_output=True, timeout=120)
        for name in databases:
            subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "electra", name],
                           check=True, capture_output=True, timeout=60)
        yield f"postgresql://electra@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_mlflow_server(tmp: Path, backend_store_uri: str | None = None) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (sqlite backend unless given one, local artifacts)
    for the block; yields its URL."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", backend_store_uri or f"sqlite:///{tmp}/mlflow.db",
         "--artifacts-destination", str(tmp / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=120, proc=proc)
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` shared by the session's tests; yields its URL."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url
