"""Shared test set-up: offline, quiet, every store in a temporary folder.

Tests use the real data under ``data/`` (``make test`` pulls it first) and the
``micro`` profile, with every stage's output folder moved under a temporary
directory so that tests never touch the project's own ``outputs/``.
"""

from __future__ import annotations

import os
import sys
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

# The datasets come from `make data` (dvc pull). Without them the tests that read them skip,
# saying so, and the rest (config, statistics, the architecture, the CLI's plumbing) still run.
HAVE_DATA = (DATA / "MANIFEST.md").exists()
NO_DATA = "data/ is missing: run `make data` (dvc pull) first"


def require_data() -> None:
    """Skip the calling test (or fixture) when data/ has not been pulled."""
    if not HAVE_DATA:
        pytest.skip(NO_DATA)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``data`` (a module's ``pytestmark``) skip with the reason when data/ is missing."""
    if HAVE_DATA:
        return
    for item in items:
        if item.get_closest_marker("data"):
            item.add_marker(pytest.mark.skip(reason=NO_DATA))


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
    """The micro profile with all outputs under ``tmp`` (skips the test without data/)."""
    from electra.core.config import load_params

    require_data()
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
