"""finetune@sst2 killed with SIGKILL and evaluate@sst2 stopped with SIGTERM while they work:
the rerun restarts cleanly and gives what an uninterrupted run gives, byte for byte."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from electra.core.files import sha256_file, sha256_tree
from electra.pipeline.stages import run_stage
from tests.conftest import ROOT, micro_params, stage_dirs

pytestmark = pytest.mark.slow
TASK = "sst2"
# One task, with enough work (3 epochs, the whole dev set) that a signal lands mid-way.
ONLY = [f"finetune.tasks=[{TASK}]", "finetune.epochs=3", "evaluate.max_eval_examples=null"]


def _workspace(pretrained_micro: Path, root: Path) -> None:
    shutil.copytree(pretrained_micro / "outputs" / "pretrain", root / "outputs" / "pretrain")


def _outputs(stage: str, root: Path) -> dict[str, str]:
    if stage == "finetune":
        return {"model": sha256_tree(root / "outputs/finetune" / TASK / "seed-1234" / "model")}
    result = json.loads((root / "outputs/evaluate/tasks" / TASK / "result.json").read_text())["result"]
    return {"metrics": json.dumps(result, sort_keys=True),
            "predictions": sha256_file(root / "outputs/evaluate/predictions" / TASK / "seed-1234.jsonl")}


def _run_opened(store: Path, name: str) -> bool:
    import sqlite3

    if not store.exists():
        return False
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("select count(*) from runs where name = ?", (name,)).fetchone()[0] > 0
    except sqlite3.Error:   # not created yet, or locked by the writer for a moment
        return False


def _signal_while_working(stage: str, root: Path, sig: int, rng: random.Random) -> int:
    """Start ``electra <stage> --task sst2``; once its MLflow run is open (the work starts
    right after), signal it at a random moment of that work. Returns its exit code."""
    overrides = [arg for o in [*stage_dirs(root), *ONLY] for arg in ("-S", o)]
    proc = subprocess.Popen([sys.executable, "-m", "electra.cli", stage, "--task", TASK, "--profile", "micro",
                             "--no-progress", *overrides], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not _run_opened(root / "mlflow.db", f"{stage}@{TASK}"):
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.0))
    proc.send_signal(sig)
    return proc.wait(timeout=120)


def test_fine_tuning_and_evaluation_killed_midway_rerun_to_the_same_outputs(pretrained_micro, tmp_path,
                                                                            monkeypatch):
    rng = random.Random(11)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for root in (reference, killed):
        _workspace(pretrained_micro, root)
    expected = {}
    params = micro_params(reference, *ONLY)
    for stage in ("finetune", "evaluate"):
        run_stage(stage, params, progress=False, task=TASK)
        expected[stage] = _outputs(stage, reference)

    params = micro_params(killed, *ONLY)
    interrupted = []
    for stage, sig in (("finetune", signal.SIGKILL), ("evaluate", signal.SIGTERM)):
        code = _signal_while_working(stage, killed, sig, rng)
        if code != 0:
            interrupted.append(stage)
            # Nothing half-written is visible: the task's record is absent or from a finished run.
            assert not (killed / "outputs" / stage / ("" if stage == "finetune" else "tasks") / TASK /
                        "run.json").exists()
        run_stage(stage, params, progress=False, task=TASK, skip_unchanged=True)
        assert _outputs(stage, killed) == expected[stage], stage
    assert interrupted, "neither stage was still working when the signal came"
    leftovers = [p for p in (killed / "outputs").rglob("*.tmp")]
    assert not leftovers, leftovers
