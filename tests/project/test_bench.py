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
         "--batch-size", "2", "--accum", "2", "--seq-len", "32"],
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
    assert summary["accum"] == 2 and summary["batch_size"] == 2
    # The baseline runs in ours' precision, and in fp32 as well when ours is bf16.
    variants = {(r["variant"], r["precision"]) for r in summary["all"]}
    assert ("naive", summary["precision"]) in variants and ("naive", "fp32") in variants


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_script_falls_back_to_tiny_shapes_on_a_cpu_only_machine(tmp_path):
    import os

    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run the full GPU benchmark")
    if not (ROOT / "data" / "pretrain").is_dir():
        pytest.skip("data/pretrain is not pulled (make data)")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "BENCH_RUN_ROOT": str(tmp_path / "run"),
           "BENCH_PRETRAIN_VIA": "library"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], capture_output=True, text=True, timeout=900,
                          cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no CUDA device" in proc.stdout
    assert json.loads((out / "small.json").read_text())["shapes"] == "tiny"
    assert (out / "history.csv").is_file() and (out / "gpu.log").is_file()
    assert "pretraining loss curve" in proc.stdout


def test_ours_gets_the_stages_randomness_argument():
    """The bench passes our forward the per-example row keys the stage passes: one int64 key
    per example, the same keys the stage's loader draws for that stream position."""
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from pretrain import _randomness

    from electra.pretraining.batches import row_keys

    rnd = _randomness(step=1, micro=0, batch_size=3, accum=1, device=torch.device("cpu"))
    assert set(rnd) == {"row_keys"} and rnd["row_keys"].dtype == torch.int64
    assert torch.equal(rnd["row_keys"], row_keys(1, 0, 3, 1, 0, range(3)))


def test_flops_per_token_counts_the_generator_head_only_at_masked_positions():
    sys.path.insert(0, str(ROOT / "bench"))
    from pretrain import VOCAB, flops_per_token

    full = flops_per_token("small", 128, mask_prob=1.0)
    masked = flops_per_token("small", 128, mask_prob=0.15)
    assert full - masked == pytest.approx(3 * 0.85 * (2 * 64 * 128 + 2 * 128 * VOCAB))
