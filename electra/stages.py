"""The six stages as the doors see them: ``run_stage(name, params)``.

Each door (the CLI, ``dvc.yaml`` through the CLI, the Prefect flow) calls
:func:`run_stage`, which opens the stage's MLflow run (named after the stage),
calls the library function with the stage's config section, logs the small
result, and records the run id next to the stage's outputs so that later
stages (``register``) can link back to it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from electra.config import STAGES, Params
from electra.files import write_json
from electra.tracking import (
    PARENT_RUN_ENV,
    MetricLogger,
    MlflowLogger,
    NullLogger,
    configure,
    flatten,
    stage_run,
)


def _ingest(params: Params, logger: MetricLogger, progress: bool) -> dict:
    from electra.ingest import ingest

    return ingest(params.ingest, progress=progress)


def _tokenize(params: Params, logger: MetricLogger, progress: bool) -> dict:
    from electra.tokenize import tokenize

    return tokenize(params.tokenize, progress=progress)


def _pretrain(params: Params, logger: MetricLogger, progress: bool) -> dict:
    from electra.pretrain import pretrain

    return pretrain(params.pretrain, logger=logger, progress=progress)


def _finetune(params: Params, logger: MetricLogger, progress: bool) -> dict:
    from electra.finetune import finetune

    return finetune(params.finetune, logger=logger, progress=progress)


def _evaluate(params: Params, logger: MetricLogger, progress: bool) -> dict:
    from electra.evaluate import evaluate

    return evaluate(params.evaluate, params.finetune, logger=logger, progress=progress)


def _register(params: Params, logger: MetricLogger, progress: bool) -> dict:
    from electra.register import register

    return register(params, progress=progress)


STAGE_FUNCTIONS: dict[str, Callable[[Params, MetricLogger, bool], dict]] = {
    "ingest": _ingest,
    "tokenize": _tokenize,
    "pretrain": _pretrain,
    "finetune": _finetune,
    "evaluate": _evaluate,
    "register": _register,
}
assert tuple(STAGE_FUNCTIONS) == STAGES


def _numeric(result: dict) -> dict[str, float]:
    out = {}
    for key, value in flatten("", result).items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            out[key] = float(value)
    return out


# --- "nothing changed, nothing to do": the decision DVC makes, for the other doors -------

STATE_FILE = ".stage.json"   # in each stage's output folder: what it was built from


def _stage_inputs(stage: str, params: Params) -> list[str]:
    """The data a stage reads, from its effective params (outputs may be moved by overrides)."""
    if stage == "ingest":
        import glob

        return sorted({p for src in params.ingest.sources for p in (glob.glob(src) or [src])})
    if stage == "tokenize":
        return [params.tokenize.input_dir, params.tokenize.vocab_file]
    if stage == "pretrain":
        return [params.pretrain.input_dir]
    if stage == "finetune":
        ft = params.finetune
        return [ft.model_dir, ft.data_dir, ft.qa_file, ft.qa_dev_file or "", ft.ner_train_file, ft.ner_dev_file]
    if stage == "evaluate":
        ev = params.evaluate
        return [ev.finetune_dir, ev.pretrain_dir, ev.data_dir]
    reg = params.register
    return [reg.pretrain_dir, reg.finetune_dir, reg.evaluate_dir, reg.licenses_file, "data.dvc"]


def _stage_code(stage: str, dvc_yaml: Path) -> list[Path]:
    """The stage's code as ``dvc.yaml`` lists it; without a dvc.yaml, all of ``electra/``."""
    package = Path(__file__).resolve().parent
    if dvc_yaml.is_file():
        import yaml

        deps = ((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).get(stage, {}) or {}).get("deps", [])
        code = [package / Path(d).name for d in deps if isinstance(d, str) and d.startswith("electra/")]
        if code:
            return sorted(code)
    return sorted(package.glob("*.py"))


def stage_fingerprint(stage: str, params: Params, dvc_yaml: str | Path = "dvc.yaml") -> str:
    """sha256 over what decides a stage's outputs: its params section, its code, its inputs' contents."""
    import hashlib

    from electra.files import sha256_file, sha256_tree

    digest = hashlib.sha256()
    digest.update(f"{stage}\0{params.section_hash(stage)}\0".encode())
    for path in _stage_code(stage, Path(dvc_yaml)):
        digest.update(f"code:{path.name}:{sha256_file(path)}\0".encode())
    for raw in _stage_inputs(stage, params):
        path = Path(raw) if raw else None
        state = sha256_tree(path) if path is not None and path.exists() else "missing"
        digest.update(f"input:{raw}:{state}\0".encode())
    return digest.hexdigest()


def _outputs_hash(stage: str, params: Params) -> str:
    """sha256 over the stage's output folder, leaving out the state file written after it."""
    import hashlib

    from electra.files import sha256_file

    folder = Path(getattr(params, stage).output_dir)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STATE_FILE):
        digest.update(f"{file.relative_to(folder).as_posix()}:{sha256_file(file)}\0".encode())
    return digest.hexdigest()


def up_to_date(stage: str, params: Params) -> dict | None:
    """The recorded result when the stage's inputs, params and code are unchanged and its
    outputs are as it left them; None when it must run."""
    from electra.files import read_json

    state_path = Path(getattr(params, stage).output_dir) / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = read_json(state_path)
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != stage_fingerprint(stage, params):
        return None
    if state.get("outputs") != _outputs_hash(stage, params):
        return None
    return state.get("result")


def _record_state(stage: str, params: Params, fingerprint: str, result: dict) -> None:
    folder = Path(getattr(params, stage).output_dir)
    write_json(folder / STATE_FILE, {"stage": stage, "fingerprint": fingerprint,
                                     "outputs": _outputs_hash(stage, params), "result": result})


def run_stage(stage: str, params: Params, progress: bool = True, skip_unchanged: bool = False) -> dict:
    """Run one stage inside its MLflow run; return the stage's result plus the run id.

    With ``skip_unchanged``, a stage whose params section, code and inputs are those of
    its last successful run, and whose outputs are untouched since, is not run again:
    its recorded result comes back with ``"up_to_date": True``.
    """
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    if skip_unchanged and int(os.environ.get("RANK", "0")) == 0:
        previous = up_to_date(stage, params)
        if previous is not None:
            return {**previous, "up_to_date": True}
    fingerprint = stage_fingerprint(stage, params) if skip_unchanged else None
    if stage == "pretrain" and params.pretrain.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        # Every door (CLI, DVC, Prefect) gets data parallelism the same way: relaunch under torchrun.
        full = run_pretrain_distributed(params)
        if fingerprint is not None:
            _record_state(stage, params, fingerprint, full)
        return full
    if int(os.environ.get("RANK", "0")) > 0:
        # A non-zero torchrun rank does its share of the work; rank 0 tracks and records it.
        return STAGE_FUNCTIONS[stage](params, NullLogger(), False)
    started = time.time()
    with stage_run(stage, params) as run:
        import mlflow

        result = STAGE_FUNCTIONS[stage](params, MlflowLogger(), progress)
        seconds = time.time() - started
        numbers = {k: v for k, v in _numeric(result).items() if len(k) < 250}
        if numbers:
            mlflow.log_metrics({f"result.{k}": v for k, v in numbers.items()})
        mlflow.log_metric("stage_seconds", seconds)
        mlflow.log_dict(result, f"{stage}_result.json")
        run_id = run.info.run_id
    output_dir = Path(getattr(params, stage).output_dir)
    write_json(output_dir / "run.json", {"stage": stage, "mlflow_run_id": run_id, "seconds": round(seconds, 3)})
    full = {**result, "mlflow_run_id": run_id, "seconds": round(seconds, 3)}
    if fingerprint is not None:
        # Fingerprinted before the run: an input edited while it ran makes the next run redo it.
        _record_state(stage, params, fingerprint, full)
    return full


@contextlib.contextmanager
def pipeline_run(params: Params, name: str = "pipeline") -> Iterator[str]:
    """A parent MLflow run for a whole pipeline; the stage runs started inside are its children."""
    from mlflow import MlflowClient

    experiment_id = configure(params.tracking)
    client = MlflowClient()
    tags = {"mlflow.runName": name, "profile": params.profile, "params_hash": params.params_hash()}
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
    if flow_run:
        tags["prefect_flow_run_id"] = flow_run
    run = client.create_run(experiment_id, tags=tags)
    previous = os.environ.get(PARENT_RUN_ENV)
    os.environ[PARENT_RUN_ENV] = run.info.run_id
    try:
        yield run.info.run_id
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    else:
        client.set_terminated(run.info.run_id, "FINISHED")
    finally:
        if previous is None:
            os.environ.pop(PARENT_RUN_ENV, None)
        else:
            os.environ[PARENT_RUN_ENV] = previous


def torchrun_command(params: Params, resolved_path: str | Path) -> list[str]:
    """The command that runs the pretrain stage under torchrun on this node."""
    import sys

    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={params.pretrain.nproc_per_node}",
        "-m", "electra.cli", "pretrain", "--no-progress", "--resolved", str(resolved_path),
    ]


def run_pretrain_distributed(params: Params) -> dict:
    """Run ``pretrain`` in ``nproc_per_node`` processes with torchrun; return rank 0's result.

    The effective params are written as a resolved snapshot so that every rank
    sees exactly this configuration; rank 0 opens the MLflow run and writes run.json.
    """
    import subprocess
    import sys

    from electra.config import write_resolved
    from electra.files import read_json

    out = Path(params.pretrain.output_dir)
    snapshot = write_resolved(params, out.parent / f".{out.name}.params.yaml")
    # The ranks' own output goes to stderr: stdout belongs to the caller's result.
    proc = subprocess.run(torchrun_command(params, snapshot), check=False, stdout=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"pretrain under torchrun exited with {proc.returncode}")
    result = read_json(out / "result.json")
    return {**result, **read_json(out / "run.json")}


def run_pipeline(params: Params, stages: list[str] | None = None, progress: bool = True,
                 on_stage: Callable[[str, dict], Any] | None = None) -> dict[str, dict]:
    """Run the stages in order (all by default) under one parent MLflow run."""
    chosen = stages or list(STAGES)
    results: dict[str, dict] = {}
    with pipeline_run(params) as parent_id:
        for stage in chosen:
            results[stage] = run_stage(stage, params, progress=progress)
            if on_stage:
                on_stage(stage, results[stage])
        results["pipeline"] = {"mlflow_run_id": parent_id}
    return results
