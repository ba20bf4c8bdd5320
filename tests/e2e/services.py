"""Real servers on 127.0.0.1 for the end-to-end tests: ports, waiting for a server to
answer, stopping it with its children, PostgreSQL (Debian's package) and ``mlflow server``."""

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
