"""Nothing unpickled, servers on loopback, credentials only from the environment."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

CODE = sorted(p for folder in ("electra", "flows", "bench") for p in (ROOT / folder).rglob("*.py"))
UNPICKLERS = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _calls(tree: ast.AST, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            dotted = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if dotted == name:
                yield node


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_path_unpickles_what_it_reads(path: Path):
    """torch.load only with weights_only=True, no pickle-family module, no np.load(allow_pickle),
    no archive extraction without a traversal filter."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            assert not {n.split(".")[0] for n in names if n} & UNPICKLERS, f"{path}:{node.lineno} imports {names}"
    for call in _calls(tree, "load"):
        owner = call.func.value.id if isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name) else ""
        if owner == "torch":
            assert _keyword(call, "weights_only") is True, f"{path}:{call.lineno}: torch.load without weights_only=True"
        if owner in ("np", "numpy"):
            assert _keyword(call, "allow_pickle") is not True, f"{path}:{call.lineno}: np.load(allow_pickle=True)"
    for call in _calls(tree, "extractall"):
        assert _keyword(call, "filter") == "data", f"{path}:{call.lineno}: extractall without filter='data'"


def test_the_scan_catches_what_it_looks_for(tmp_path):
    """The checks above are not vacuous: each flags a planted offence."""
    planted = {
        "import pickle\n": "imports",
        "import torch\ntorch.load('x.pt')\n": "weights_only",
        "import numpy as np\nnp.load('x.npy', allow_pickle=True)\n": "allow_pickle",
        "import tarfile\ntarfile.open('a.tgz').extractall('out')\n": "filter",
    }
    for source, expected in planted.items():
        bad = tmp_path / "bad.py"
        bad.write_text(source)
        with pytest.raises(AssertionError, match=expected):
            test_no_code_path_unpickles_what_it_reads(bad)


def test_servers_the_project_starts_listen_on_loopback():
    """make mlflow-ui / prefect-server and the test servers bind 127.0.0.1; compose publishes
    container ports on 127.0.0.1 only (tests/code/test_docker.py checks the ports)."""
    makefile = (ROOT / "Makefile").read_text()
    for command in ("mlflow server", "prefect server start"):
        lines = [line for line in makefile.splitlines() if command in line]
        assert lines and all("--host 127.0.0.1" in line for line in lines), lines
    for source in (ROOT / "tests" / "conftest.py", ROOT / "tests" / "e2e" / "test_prefect.py"):
        text = source.read_text()
        for match in re.finditer(r'"--host",\s*"([^"]+)"', text):
            assert match.group(1) == "127.0.0.1", f"{source}: a server on {match.group(1)}"


def test_credentials_never_go_in_params_and_are_redacted_when_written():
    from electra.core.config import ConfigError, load_params
    from electra.core.tracking import redact_uri

    with pytest.raises(ConfigError, match="tracking.tracking_uri holds a password"):
        load_params(ROOT / "params.yaml", overrides=["tracking.tracking_uri=https://alice:hunter2@mlflow.example.com"])
    assert redact_uri("https://alice:hunter2@mlflow.example.com:5000/x?token=abc&run=1") == \
        "https://alice:***@mlflow.example.com:5000/x?token=***&run=1"
    for plain in ("sqlite:////work/mlflow.db", "http://127.0.0.1:5000", "databricks"):
        assert redact_uri(plain) == plain
