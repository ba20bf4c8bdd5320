"""Nothing changed, nothing to do: the decision ``dvc repro`` makes, for the other doors.

After a stage runs, ``.stage.json`` in its first output folder records its fingerprint
(its params sections, its code and its inputs' contents, as the Stage table lists
them) and a hash of the outputs it left. A later run with the same fingerprint, whose
outputs are untouched, is skipped and returns the recorded result.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from electra.core.config import Params
from electra.core.files import read_json, sha256_tree, write_json
from electra.core.keys import content_key
from electra.pipeline.table import get_stage, stage_name

STATE_FILE = ".stage.json"   # in each stage's output folder: what it was built from
# Bookkeeping that is not a stage's output: our state file, and the .gitignore files DVC
# writes beside its outputs after the stage has run.
BOOKKEEPING = frozenset({STATE_FILE, ".gitignore"})


def content_hash(path: Path) -> str:
    """sha256 over a file, or a folder's relative paths and contents, without bookkeeping files."""
    return sha256_tree(path, skip_names=BOOKKEEPING)


def stage_fingerprint(stage: str, params: Params, task: str | None = None,
                      code: tuple[str, ...] | None = None) -> str:
    """What decides a stage's outputs: its params sections, its code and its inputs' contents.

    ``code`` replaces the table's code list (a test's way to point at other files)."""
    row = get_stage(stage)
    sections = {name: params.section_hash(name) for name in row.sections}
    inputs = {}
    for raw in row.inputs(params, task):
        path = Path(raw)
        inputs[raw] = content_hash(path) if path.exists() else "missing"
    return content_key(values=[stage_name(stage, task), sections, inputs], code=code or row.code)


def _outputs_hash(stage: str, params: Params, task: str | None = None) -> str:
    """sha256 over the stage's output folders, leaving out the state files written after them."""
    digest = hashlib.sha256()
    for folder in get_stage(stage).outputs(params, task):
        digest.update(f"{folder}\0{content_hash(folder) if folder.exists() else 'missing'}\0".encode())
    return digest.hexdigest()


def up_to_date(stage: str, params: Params, task: str | None = None) -> dict | None:
    """The recorded result when the stage's inputs, params and code are unchanged and its
    outputs are as it left them; None when it must run."""
    state_path = get_stage(stage).outputs(params, task)[0] / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = read_json(state_path)
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != stage_fingerprint(stage, params, task=task):
        return None
    if state.get("outputs") != _outputs_hash(stage, params, task):
        return None
    return state.get("result")


def record_state(stage: str, params: Params, fingerprint: str, result: dict, task: str | None = None) -> None:
    """Write ``.stage.json``: the fingerprint the stage ran under and the outputs it left."""
    folder = get_stage(stage).outputs(params, task)[0]
    write_json(folder / STATE_FILE, {"stage": stage_name(stage, task), "fingerprint": fingerprint,
                                     "outputs": _outputs_hash(stage, params, task), "result": result})


def record_task_states(stage: str, params: Params, run_id: str) -> None:
    """After a whole-stage run (``electra finetune``/``evaluate``), record each task as done, as
    ``<stage>@<task>`` would have: a fanned-out run (the Prefect flow) then skips them too."""
    for task in params.finetune.tasks:
        result_file = get_stage(stage).outputs(params, task)[0] / "result.json"
        if not result_file.is_file():
            continue
        recorded = read_json(result_file)
        if stage == "evaluate":
            recorded = recorded.get("result", {})
        record_state(stage, params, stage_fingerprint(stage, params, task=task),
                     {**recorded, "mlflow_run_id": run_id, "seconds": 0.0}, task)
