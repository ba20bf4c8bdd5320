"""bench/pretrain.py keeps working on a CPU-only machine (tiny shapes; no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_pretrain_bench_prints_a_table_and_a_json_line():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pretrain.py"), "--shapes", "tiny", "--steps", "1", "--warmup", "1",
         "--batch-size", "2", "--seq-len", "32"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert any("ratio" in line for line in lines[:-1])
    summary = json.loads(lines[-1])
    for key in ("ours_tokens_per_s", "baseline_tokens_per_s", "ratio", "ours_peak_rss_mb",
                "baseline_peak_rss_mb", "mfu", "shapes", "device"):
        assert key in summary, key
    assert summary["ratio"] > 0 and 0 < summary["mfu"]


@pytest.mark.slow
def test_gpu_script_falls_back_to_tiny_shapes_on_a_cpu_only_machine():
    import os

    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run the full GPU benchmark")
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], capture_output=True, text=True, timeout=900,
                          cwd=ROOT, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no CUDA device" in proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1])["shapes"] == "tiny"


def test_flops_per_token_counts_the_generator_head_only_at_masked_positions():
    sys.path.insert(0, str(ROOT / "bench"))
    from pretrain import VOCAB, flops_per_token

    full = flops_per_token("small", 128, mask_prob=1.0)
    masked = flops_per_token("small", 128, mask_prob=0.15)
    assert full - masked == pytest.approx(3 * 0.85 * (2 * 64 * 128 + 2 * 128 * VOCAB))
