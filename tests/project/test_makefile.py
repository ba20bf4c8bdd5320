"""The Makefile as a newcomer meets it: `make help`, and a clear error when the data's remote is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BIN = str(Path(sys.executable).parent)   # dvc, from the test's environment


def _make(target: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    return subprocess.run(["make", "-s", target], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_make_help_lists_the_targets():
    shown = _make("help", ROOT)
    assert shown.returncode == 0, shown.stderr
    for target in ("run", "test", "mlflow-ui", "serve-model", "prefect-server", "check-remote"):
        assert f"  {target} " in shown.stdout, target


def _project(tmp_path: Path, config: str) -> Path:
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    shutil.copy2(ROOT / "Makefile", project / "Makefile")
    (project / ".dvc" / "config").write_text(config)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    return project


def test_a_missing_default_remote_says_how_to_add_one(tmp_path):
    project = _project(tmp_path, "[core]\n    no_scm = false\n")
    checked = _make("check-remote", project)
    assert checked.returncode != 0
    assert "no default DVC remote" in checked.stderr and "dvc remote add -d" in checked.stderr
    assert "ingest.sources" in checked.stderr


def test_a_default_remote_that_is_not_there_is_named_with_the_fix(tmp_path):
    # The project's own remote setting, on a machine without the sibling folder it names.
    project = _project(tmp_path, (ROOT / ".dvc" / "config").read_text())
    checked = _make("check-remote", project)
    assert checked.returncode != 0, (checked.stdout, checked.stderr, project)
    assert "does not exist" in checked.stderr and "dvc remote add -d" in checked.stderr
    assert f"{tmp_path}/shared/dvc-remote, which does not exist" in checked.stderr
    # Here, beside ../shared, the same setting passes.
    assert _make("check-remote", ROOT).returncode == 0
