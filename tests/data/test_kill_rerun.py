"""SIGKILL and SIGTERM in the middle of a data stage, then a rerun: the same outputs as a
run never interrupted, and never a half-written output in between."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from electra.pipeline.stages import run_stage
from tests.conftest import ROOT, micro_params, stage_dirs

pytestmark = pytest.mark.slow


def _start(stage: str, tmp: Path) -> subprocess.Popen:
    overrides = [arg for o in stage_dirs(tmp) for arg in ("-S", o)]
    return subprocess.Popen([sys.executable, "-m", "electra.cli", stage, "--profile", "micro", "--no-progress",
                             *overrides], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_while_writing(proc: subprocess.Popen, out: Path, sig: int, rng: random.Random) -> None:
    """Wait until the stage is writing (its temporary folder exists), then signal it at a random moment."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list(out.parent.glob(f".{out.name}.*.tmp")):
            break
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(sig)
    proc.wait(timeout=60)


def _outputs(stage: str, out: Path) -> str:
    if stage == "ingest":
        return json.loads((out / "manifest.json").read_text())["content_hash"]
    summary = json.loads((out / "summary.json").read_text())
    return json.dumps({k: v for k, v in summary.items() if k not in ("seconds", "tokens_per_s", "run")}, sort_keys=True)


def test_ingest_and_tokenize_killed_midway_rerun_to_the_same_outputs(tmp_path):
    """ingest gets SIGKILL (no cleanup at all), tokenize SIGTERM, each at a random moment
    while it writes; each rerun gives the outputs of a run never interrupted."""
    rng = random.Random(7)
    reference = tmp_path / "reference"
    params = micro_params(reference)
    expected = {}
    for stage in ("ingest", "tokenize"):
        run_stage(stage, params, progress=False)
        expected[stage] = _outputs(stage, reference / "outputs" / stage)

    killed = tmp_path / "killed"
    params = micro_params(killed)
    interrupted = []
    for stage, sig in (("ingest", signal.SIGKILL), ("tokenize", signal.SIGTERM)):
        out = killed / "outputs" / stage
        proc = _start(stage, killed)
        _kill_while_writing(proc, out, sig, rng)
        if proc.returncode == 0:
            continue   # it finished before the signal: nothing to check for this stage
        interrupted.append(stage)
        # A reader never sees a partial output: either no folder, or a complete one from before.
        assert not out.exists() or (out / ("manifest.json" if stage == "ingest" else "summary.json")).is_file()
        run_stage(stage, params, progress=False)
        assert _outputs(stage, out) == expected[stage], stage
        assert not list(out.parent.glob(f".{out.name}.*.tmp")), "the killed run's temporary copy lingers"
    assert interrupted, "no stage was still running when the signal came"
