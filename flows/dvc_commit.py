"""After a flow run that did exactly what ``dvc repro`` would (params.yaml's own profile, no
overrides): ``dvc commit``, so that ``dvc status`` is clean and ``dvc repro`` skips too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from electra.core.config import ConfigError, Params, load_params
from electra.pipeline.table import PIPELINE


DVC_SECTIONS = ("profile", "output_root", *PIPELINE)   # what dvc.yaml's stages list as params


def dvc_would_run_the_same(params: Params, params_file: str) -> str | None:
    """None when params.yaml alone (its own profile, no overrides) gives these params; else why not."""
    try:
        plain = load_params(params_file)
    except ConfigError as exc:
        return f"params.yaml does not load: {exc}"
    ours, theirs = params.model_dump(mode="json"), plain.model_dump(mode="json")
    differ = [k for k in DVC_SECTIONS if ours[k] != theirs[k]]
    return f"the flow's params differ from params.yaml's in {', '.join(differ)}" if differ else None


@task(name="dvc-commit", task_run_name="dvc-commit", retries=0)
def dvc_commit(project: str) -> dict[str, Any]:
    """``dvc commit``: record the outputs the flow made in dvc.lock (and the DVC cache), so that
    ``dvc status`` is clean and ``dvc repro`` skips what the flow already did."""
    import json

    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    # The pipeline's dvc.yaml only: compare/dvc.yaml's stage is not the flow's to record.
    commit = subprocess.run([dvc, "commit", "--force", "--quiet", "dvc.yaml"], cwd=project, capture_output=True,
                            text=True)
    if commit.returncode != 0:
        raise RuntimeError(f"dvc commit failed in {project}: {commit.stderr.strip() or commit.stdout.strip()}")
    status = subprocess.run([dvc, "status", "--json", "dvc.yaml"], cwd=project, capture_output=True, text=True)
    changed = json.loads(status.stdout or "{}") if status.returncode == 0 else {"error": status.stderr}
    return {"clean": not changed, "status": changed}


def commit_if_same(params: Params, params_file: str) -> dict[str, Any]:
    """``dvc commit`` when the flow ran what ``dvc repro`` would; otherwise say why not."""
    why_not = dvc_would_run_the_same(params, params_file) if params.prefect.dvc_commit else "prefect.dvc_commit is false"
    project = Path(params_file).resolve().parent
    if why_not is None and not (project / "dvc.yaml").is_file():
        why_not = f"no dvc.yaml in {project}"
    if why_not is None:
        return dvc_commit(str(project))
    get_run_logger().info("dvc.lock left alone: %s", why_not)
    return {"skipped": f"dvc.lock left alone: {why_not}"}
