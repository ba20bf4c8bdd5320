"""Two data-parallel processes (torchrun, gloo on the CPU) train the same model as one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, stage_dirs

# Dropout off: each rank has its own dropout stream, everything else is rank-invariant.
# A large Adam epsilon makes the update proportional to the gradient: with the default
# 1e-6, parameters whose gradient is ~0 take full-size steps in the sign of float noise,
# which would hide a real mismatch behind an amplified rounding one.
OVERRIDES = ["pretrain.max_steps=3", "pretrain.batch_size=8", "pretrain.precision=fp32", "pretrain.device=cpu",
             "pretrain.model.dropout=0.0", "pretrain.checkpoint_every=100", "pretrain.log_every=1",
             "pretrain.adam_eps=1.0", "pretrain.lr=0.05", "pretrain.warmup_steps=0"]


def _pretrain_cmd(tmp, launcher: list[str]) -> list[str]:
    sets = [a for o in [*stage_dirs(tmp), *OVERRIDES] for a in ("-S", o)]
    return [*launcher, "-m", "electra.cli", "pretrain", "--profile", "micro", "--no-progress", "--json", *sets]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(pretrained_micro, tmp_path):
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("single", "ddp"):
        shutil.copytree(pretrained_micro / "outputs" / "tokenize", tmp_path / name / "outputs" / "tokenize")
    single = subprocess.run(_pretrain_cmd(tmp_path / "single", [sys.executable]), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    # nproc_per_node=2: the stage relaunches itself under torchrun (2 ranks, gloo).
    ddp = subprocess.run(_pretrain_cmd(tmp_path / "ddp", [sys.executable]) + ["-S", "pretrain.nproc_per_node=2"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    assert json.loads(ddp.stdout)["world_size"] == 2
    assert (tmp_path / "ddp/outputs/pretrain/run.json").exists()
    results = {n: json.loads((tmp_path / n / "outputs/pretrain/result.json").read_text()) for n in ("single", "ddp")}
    assert results["single"]["world_size"] == 1 and results["ddp"]["world_size"] == 2
    weights = {n: load_file(tmp_path / n / "outputs/pretrain/discriminator/model.safetensors") for n in ("single", "ddp")}
    assert weights["single"].keys() == weights["ddp"].keys()
    for key, value in weights["single"].items():
        assert torch.allclose(value, weights["ddp"][key], atol=1e-6, rtol=1e-5), key
    history = {n: (tmp_path / n / "outputs/pretrain/history.csv").read_text().splitlines() for n in ("single", "ddp")}
    assert len(history["single"]) == len(history["ddp"]) == 4  # header + 3 steps


def test_nproc_per_node_relaunches_pretrain_under_torchrun(tmp_path):
    from electra.pipeline.stages import torchrun_command
    from tests.conftest import micro_params

    params = micro_params(tmp_path, "pretrain.nproc_per_node=4")
    cmd = torchrun_command(params, tmp_path / "snapshot.yaml")
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=4" in cmd and cmd[-2:] == ["--resolved", str(tmp_path / "snapshot.yaml")]


def test_resolved_snapshot_round_trips(tmp_path):
    from electra.core.config import load_resolved, write_resolved
    from tests.conftest import micro_params

    params = micro_params(tmp_path, "pretrain.lr=1e-3")
    assert load_resolved(write_resolved(params, tmp_path / "p.yaml")) == params
