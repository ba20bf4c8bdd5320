"""The DVC door end to end, on a throwaway copy of the repository.

The copy holds what git would hand a new clone (tracked files, plus files not yet
committed but not ignored), gets its data with a real ``dvc pull`` from the
project's default remote, switches ``params.yaml`` to the ``micro`` profile and
then checks that

1. ``dvc repro`` runs every stage (fine-tuning as one ``finetune@<task>`` stage per
   task, from ``foreach``) and ``dvc metrics show`` lists the evaluate metrics;
2. a second ``dvc repro`` changes nothing and ``dvc status`` is clean;
3. ``dvc exp run -S profiles/micro.yaml:evaluate.max_eval_examples=64`` (a value the
   profile sets: its file is a params dependency too) reruns evaluate and register only,
   and ``dvc exp show``, ``dvc metrics diff`` and ``dvc plots diff`` show the change;
4. the Prefect flow, after another params change, runs what changed and then
   ``dvc commit``: ``dvc status`` is clean and ``dvc repro`` has nothing to do.

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

# The copy fine-tunes three tasks (a trained one, one without a train split, a non-GLUE one):
# every finetune@<task> stage is a process of its own, and the CLI and Prefect tests train all.
TASKS = ("sst2", "qnli", "ner")
UPSTREAM = ("ingest", "tokenize", "pretrain")
STAGES = (*UPSTREAM, *(f"finetune@{t}" for t in TASKS), "evaluate", "register")
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
    """What a new clone gets: the files git tracks (their working-tree contents), and
    nothing else, so that no run's by-products in the user's checkout (outputs, dvc.lock,
    metrics) leak into the copy. A new file must be `git add`-ed to be tested here."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    names = [p for p in out.decode().split("\0") if p]
    return sorted(p for p in names if (root / p).is_file())  # skip deleted-but-tracked files


def _default_remote_url(root: Path) -> tuple[str, str]:
    """The default remote's name and its url as an absolute path (relative urls are relative to .dvc/)."""
    config = configparser.ConfigParser()
    config.read(root / ".dvc" / "config")
    name = config.get("core", "remote").strip()
    url = config.get(f"'remote \"{name}\"'", "url").strip()
    if "://" not in url and not os.path.isabs(url):
        url = os.path.normpath(root / ".dvc" / url)
    return name, url


def _keep_catalog(path: Path, tasks: tuple[str, ...]) -> None:
    """Keep only ``tasks`` in params.yaml's finetune.catalog (DVC's task list), keeping comments."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out, section, in_catalog, keep = [], None, False, True
    for line in lines:
        if re.match(r"^\S", line):
            section, in_catalog, keep = line.split(":")[0], False, True
        elif section == "finetune" and re.match(r"^  \S", line):
            in_catalog, keep = line.startswith("  catalog:"), True
        elif in_catalog and (entry := re.match(r"^    (\w+):", line)):
            keep = entry.group(1) in tasks
        if keep:
            out.append(line)
    path.write_text("".join(out), encoding="utf-8")


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


# Three micro pipeline runs (dvc repro, dvc exp run, the flow), a stage per process, on a
# 2-core machine shared with the suite: an estimated 10-15 minutes (its subprocess limits add up to 36 minutes).
@pytest.mark.timeout(1800)
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

    from electra.core.config import load_params

    _set_yaml_line(copy / "params.yaml", None, "profile", "micro")
    _keep_catalog(copy / "params.yaml", TASKS)   # one finetune@<task> stage per catalog entry
    # The discriminator alone is registered here (three times): task models are the CLI test's.
    _set_yaml_line(copy / "params.yaml", "register", "register_finetuned", "false")
    assert tuple(load_params(copy / "params.yaml").finetune.tasks) == TASKS
    _run(["git", "commit", "-q", "-am", "micro profile, three tasks"], copy, env)

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
    status = _run([dvc, "status", "dvc.yaml"], copy, env)
    assert UP_TO_DATE in _output(status), _output(status)
    # `electra compare` has a pipeline file of its own, outside `dvc repro`'s default; its
    # stage would run the CLI on the tokenized corpus the pipeline made, and nothing upstream.
    dry = _output(_run([dvc, "repro", "--dry", "compare/dvc.yaml"], copy, env))
    assert _running("compare/dvc.yaml:compare") in dry and "electra compare --no-progress" in dry, dry
    assert not any(_running(stage) in dry for stage in UPSTREAM), dry

    # 3. An experiment on a late param, against the committed baseline: only evaluate
    #    changed by itself; it rewrites outputs/evaluate/run.json (a new MLflow run id, which
    #    register records as lineage), so register reruns too; nothing upstream does.
    # What DVC leaves to git (cache: false) is committed with dvc.lock; .gitignore lets it.
    # They are git-ignored (a run leaves a clone clean): versioning a run adds them by force.
    _run(["git", "add", "dvc.lock"], copy, env)
    _run(["git", "add", "-f", "outputs/evaluate/metrics.json", "outputs/pretrain/metrics.json",
          "outputs/pretrain/history.csv"], copy, env)
    _run(["git", "commit", "-q", "-m", "baseline"], copy, env)
    experiment = _run([dvc, "exp", "run", "-S", "profiles/micro.yaml:evaluate.max_eval_examples=64"], copy, env,
                      timeout=300)
    out = _output(experiment)
    print(f"dvc exp run -S profiles/micro.yaml:evaluate.max_eval_examples=64: {experiment.seconds:.1f}s")  # type: ignore[attr-defined]
    assert _running("evaluate") in out and _running("register") in out, out
    for stage in UPSTREAM:
        assert _running(stage) not in out, f"{stage}:\n{out}"
    assert not any(_running(f"finetune@{t}") in out for t in TASKS), out

    shown = json.dumps(json.loads(_run([dvc, "exp", "show", "--json"], copy, env).stdout))
    assert "max_eval_examples" in shown and "outputs/evaluate/metrics.json" in shown, shown[:2000]
    diff = json.loads(_run([dvc, "metrics", "diff", "--json"], copy, env).stdout)
    # {"diff": {path: {metric: {"old", "new", "diff"}}}} (older dvc: no "diff" level)
    changed = diff.get("diff", diff).get("outputs/evaluate/metrics.json", {})
    assert changed.get("glue.sst2.dev_examples", {}).get("old") == 128, changed
    assert changed["glue.sst2.dev_examples"]["new"] == 64, changed
    plots = _output(_run([dvc, "plots", "diff", "--json"], copy, env))
    for plot in ("pretrain_losses", "pretrain_accuracy", "outputs/evaluate/plots"):
        assert plot in plots, f"{plot} not in dvc plots diff:\n{plots[:2000]}"
    assert UP_TO_DATE in _output(_run([dvc, "status", "dvc.yaml"], copy, env))

    # 4. The Prefect door in the same project: a change for register only, the flow (its own
    #    embedded Prefect server) skips every stage DVC ran (their records are shared), runs
    #    register, then `dvc commit`: DVC agrees with what the flow made.
    _set_yaml_line(copy / "params.yaml", "register", "approval_timeout_s", "3600")
    assert set(json.loads(_run([dvc, "status", "--json", "dvc.yaml"], copy, env).stdout)) == {"register"}
    flow_env = {**env, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "false"}
    flow_env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    flow = _run([str(VENV_BIN / "python"), "-m", "flows.pipeline", "micro"], copy, flow_env, timeout=600)
    print(f"flow after register.approval_timeout_s=3600: {time.monotonic() - started:.1f}s")
    out = _output(flow)
    done_by_dvc = [*UPSTREAM, *(f"{stage}@{t}" for stage in ("finetune", "evaluate") for t in TASKS), "evaluate"]
    for stage in done_by_dvc:
        assert f"{stage} skipped: inputs, params and code unchanged" in out, f"{stage}:\n{out[-4000:]}"
    assert "register finished" in out, out[-4000:]
    assert "dvc.lock left alone" not in out, out[-4000:]
    status = _run([dvc, "status", "dvc.yaml"], copy, env)
    assert UP_TO_DATE in _output(status), _output(status)
    after = _output(_run([dvc, "repro"], copy, env, timeout=120))
    assert "Running stage" not in after, after
    assert "approval_timeout_s: 3600" in (copy / "dvc.lock").read_text(), \
        "dvc.lock does not record the params the flow ran with"


def test_the_copy_is_what_a_clone_gets_whatever_the_checkout_holds(tmp_path: Path) -> None:
    """A run's by-products in the user's checkout (untracked, even un-ignored) stay out."""
    repo = tmp_path / "checkout"
    (repo / "outputs" / "evaluate").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text("stages: {}\n")
    subprocess.run(["git", "add", "dvc.yaml"], cwd=repo, check=True)
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    (repo / "outputs" / "evaluate" / "metrics.json").write_text("{}")
    assert _git_files(repo) == ["dvc.yaml"]
