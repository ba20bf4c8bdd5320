"""A pretraining process killed with SIGKILL mid-run resumes and lands on the same losses."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, stage_dirs

OVERRIDES = ["pretrain.max_steps=30", "pretrain.checkpoint_every=10", "pretrain.log_every=5",
             "pretrain.precision=fp32", "pretrain.device=cpu", "pretrain.keep_checkpoints=5"]


def _cmd(tmp) -> list[str]:
    return [sys.executable, "-c", "from electra.pretraining.trainer import pretrain; from electra.core.config import load_params; "
            "import sys; p = load_params(sys.argv[1], profile='micro', overrides=sys.argv[2:]); "
            "pretrain(p.pretrain, progress=False)",
            str(ROOT / "params.yaml"), *stage_dirs(tmp), *OVERRIDES]


def _history(path) -> list[dict]:
    return list(csv.DictReader(open(path)))


@pytest.mark.slow
def test_sigkill_then_rerun_matches_an_uninterrupted_run(pretrained_micro, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("full", "killed"):
        shutil.copytree(pretrained_micro / "outputs" / "tokenize", tmp_path / name / "outputs" / "tokenize")

    subprocess.run(_cmd(tmp_path / "full"), env=env, check=True, capture_output=True, timeout=600)
    full = _history(tmp_path / "full/outputs/pretrain/history.csv")

    killed_root = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(killed_root), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed_root / "outputs/pretrain/checkpoints/step-0000010/trainer_state.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed_root / "outputs/pretrain/result.json").exists()

    rerun = subprocess.run(_cmd(killed_root), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = _history(killed_root / "outputs/pretrain/history.csv")
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    for a, b in zip(full, resumed):
        for key in ("loss", "generator_loss", "discriminator_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-6), (a["step"], key)
