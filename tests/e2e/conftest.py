"""Fixtures of the end-to-end tests: servers shared by a session."""

from __future__ import annotations

import pytest

from tests.e2e.services import running_mlflow_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` shared by the session's tests; yields its URL."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url
