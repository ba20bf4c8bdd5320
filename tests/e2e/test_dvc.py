"""The DVC door end to end, on a throwaway copy of the repository.

The copy holds what git would hand a new clone (tracked files, plus files not yet
committed but not ignored), gets its data with a real ``dvc pull`` from the
project's default remote, switches ``params.yaml`` to the ``micro`` profile and
then checks that

1. ``dvc repro`` runs every stage and ``dvc metrics show`` lists the evaluate metrics;
2. a second ``dvc repro`` changes nothing and ``dvc status`` is clean;
3. changing a param of a late stage (``evaluate.batch_size``) reruns evaluate and
   register and skips everything upstream.

The project's own ``outputs/``, ``mlflow.db`` and DVC cache are never touched: the
stages run in the copy, with the copy's embedded MLflow store.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"

pytestmark = pytest.mark.slow

UPSTREAM = ("ingest", "tokenize", "pretrain", "finetune")
STAGES = (*UPSTREAM, "evaluate", "register")
UP_TO_DATE = "Data and pipelines are up to date."


def _skipped(stage: str) -> str:
    return f"Stage '{stage}' didn't change, skipping"


def _running(stage: str) -> str:
    return f"Running stage '{stage}'"


def _env(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            # The venv holds an editable install of /work/main: put the copy's package first
            # so that the stages run the copy's code.
            "PYTHONPATH": str(copy),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(copy / ".hf"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": str(copy / ".dvc-site-cache"),
            "TOKENIZERS_PARALLELISM": "false",
            "GIT_AUTHOR_NAME": "e2e",
            "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
            "GIT_COMMITTER_NAME": "e2e",
            "GIT_COMMITTER_EMAIL": "e2e@example.invalid",
        }
    )
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command; fail the test with its whole output when it fails."""
    started = time.monotonic()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    proc.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` exited with {proc.returncode} after {proc.seconds:.1f}s\n"  # type: ignore[attr-defined]
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )
    return proc


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def _git_files(root: Path) -> list[str]:
    """What a new clone would get: tracked files, plus untracked files that are not ignored."""
    listed = []
    for extra in ([], ["--others", "--exclude-standard"]):
        out = subprocess.run(["git", "ls-files", "-z", *extra], cwd=root, capture_output=True, check=True).stdout
        names = [p for p in out.decode().split("\0") if p]
        if extra:
            # An uncommitted dvc.lock is a local run's by-product, not part of a clone.
            names = [p for p in names if p != "dvc.lock"]
        listed += names
    return sorted({p for p in listed if (root / p).is_file()})  # skip deleted-but-tracked files


def _default_remote_url(root: Path) -> tuple[str, str]:
    """The default remote's name and its url as an absolute path (relative urls are relative to .dvc/)."""
    config = configparser.ConfigParser()
    config.read(root / ".dvc" / "config")
    name = config.get("core", "remote").strip()
    url = config.get(f"'remote \"{name}\"'", "url").strip()
    if "://" not in url and not os.path.isabs(url):
        url = os.path.normpath(root / ".dvc" / url)
    return name, url


def _set_yaml_line(path: Path, section: str | None, key: str, value: str) -> None:
    """Rewrite ``key: ...`` at the top level (section None) or inside a top-level section, keeping comments."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    in_section = section is None
    indent = "" if section is None else "  "
    for i, line in enumerate(lines):
        if section is not None and re.match(r"^\S", line):
            in_section = line.startswith(f"{section}:")
            continue
        if in_section and re.match(rf"^{indent}{re.escape(key)}:", line):
            comment = line[line.index("#"):].rstrip("\n") if "#" in line else ""
            lines[i] = f"{indent}{key}: {value}" + (f"  {comment}" if comment else "") + "\n"
            path.write_text("".join(lines), encoding="utf-8")
            return
    raise AssertionError(f"{path}: no {key!r} in section {section!r}")


def _check_sha256sums(data: Path) -> None:
    sums = data / "SHA256SUMS"
    if not sums.exists():
        return
    for line in sums.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        name = name.lstrip("*")
        actual = hashlib.sha256((data / name).read_bytes()).hexdigest()
        assert actual == digest, f"data/{name}: sha256 mismatch after dvc pull"


def _metrics_files(show_json: dict) -> dict[str, dict]:
    """``dvc metrics show --json`` -> {path: metrics} for the workspace."""
    # {rev: {"data": {path: {"data": metrics}}}}; the workspace rev is "workspace" or "" by version.
    revs = [v for k, v in show_json.items() if k in ("workspace", "")] or list(show_json.values())
    files = revs[0].get("data", {}) if revs else {}
    return {path: entry.get("data", {}) for path, entry in files.items() if isinstance(entry, dict)}


def test_dvc_repro_end_to_end(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    copy.mkdir()
    for rel in _git_files(ROOT):
        target = copy / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    assert (copy / "dvc.yaml").is_file() and (copy / "data.dvc").is_file()
    assert not (copy / "data").exists() and not (copy / "outputs").exists() and not (copy / "dvc.lock").exists()

    env = _env(copy)
    dvc = str(VENV_BIN / "dvc")
    _run(["git", "init", "-q"], copy, env)
    _run(["git", "add", "-A"], copy, env)
    _run(["git", "commit", "-q", "-m", "e2e copy"], copy, env)

    # The stages must import the copy's code, not the editable install's.
    probe = _run([str(VENV_BIN / "python"), "-c", "import electra; print(electra.__file__)"], copy, env)
    assert Path(probe.stdout.strip()).resolve().is_relative_to(copy.resolve()), probe.stdout

    # Data, for real: the project's default remote, made absolute (it is relative to the project's .dvc/).
    remote, url = _default_remote_url(ROOT)
    assert Path(url).is_dir(), f"DVC remote {remote!r} not found at {url}"
    _run([dvc, "config", "--local", "core.check_update", "false"], copy, env)
    _run([dvc, "remote", "modify", "--local", remote, "url", url], copy, env)
    # Only data.dvc: a fresh clone has no dvc.lock, so a bare `dvc pull` also tries the
    # (never pushed) pipeline outputs and exits 1.
    _run([dvc, "pull", "data.dvc"], copy, env, timeout=300)
    assert (copy / "data" / "MANIFEST.md").is_file()
    _check_sha256sums(copy / "data")

    _set_yaml_line(copy / "params.yaml", None, "profile", "micro")
    _run(["git", "commit", "-q", "-am", "micro profile"], copy, env)

    # 1. The whole pipeline.
    first = _run([dvc, "repro"], copy, env, timeout=600)
    out = _output(first)
    print(f"\nfirst dvc repro: {first.seconds:.1f}s")  # type: ignore[attr-defined]
    for stage in STAGES:
        assert _running(stage) in out, f"stage {stage} did not run:\n{out}"
    for rel in ("outputs/evaluate/metrics.json", "outputs/register/registration.json", "dvc.lock"):
        assert (copy / rel).is_file(), f"{rel} missing after dvc repro:\n{out}"
    assert (copy / "mlflow.db").is_file(), "the copy's embedded MLflow store was not used"
    shown = _run([dvc, "metrics", "show", "--json"], copy, env)
    metrics = _metrics_files(json.loads(shown.stdout))
    evaluate_metrics = metrics.get("outputs/evaluate/metrics.json")
    assert evaluate_metrics, f"dvc metrics show does not list the evaluate metrics:\n{shown.stdout}"
    flat = json.dumps(evaluate_metrics)
    assert "sst2" in flat and "accuracy" in flat, flat

    # 2. Nothing changed: nothing runs, and the workspace matches dvc.lock.
    second = _run([dvc, "repro"], copy, env, timeout=120)
    out = _output(second)
    print(f"second dvc repro: {second.seconds:.1f}s")  # type: ignore[attr-defined]
    assert "Running stage" not in out, out
    assert UP_TO_DATE in out or all(_skipped(s) in out for s in STAGES), out
    status = _run([dvc, "status"], copy, env)
    assert UP_TO_DATE in _output(status), _output(status)

    # 3. One late param: only evaluate changed by itself (the dry run plans evaluate and
    #    nothing upstream); running it rewrites outputs/evaluate/run.json (a new MLflow run id,
    #    which register records as lineage), so register reruns too; nothing upstream does.
    _set_yaml_line(copy / "params.yaml", "evaluate", "batch_size", "32")
    changed = json.loads(_run([dvc, "status", "--json"], copy, env).stdout)
    assert set(changed) == {"evaluate"}, changed  # dvc status lists only stages whose own deps changed
    # DVC tracks the whole `evaluate` params section, so it reports the section as modified.
    assert "params.yaml" in json.dumps(changed["evaluate"]), changed

    dry = _output(_run([dvc, "repro", "--dry"], copy, env))
    assert _running("evaluate") in dry, dry
    for stage in UPSTREAM:
        assert _skipped(stage) in dry and _running(stage) not in dry, f"{stage}:\n{dry}"

    third = _run([dvc, "repro"], copy, env, timeout=300)
    out = _output(third)
    print(f"dvc repro after evaluate.batch_size: {third.seconds:.1f}s")  # type: ignore[attr-defined]
    assert _running("evaluate") in out, out
    for stage in UPSTREAM:
        assert _skipped(stage) in out and _running(stage) not in out, f"{stage}:\n{out}"
    assert _running("register") in out, out
    evaluate_run_id = json.loads((copy / "outputs/evaluate/run.json").read_text())["mlflow_run_id"]
    assert evaluate_run_id in (copy / "outputs/register/registration.json").read_text(), \
        "registration.json does not record the new evaluate run"
    assert UP_TO_DATE in _output(_run([dvc, "status"], copy, env))
