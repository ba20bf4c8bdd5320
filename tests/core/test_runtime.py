"""Precision choice and TF32: explicit settings are honoured, ``auto`` follows the device
(and, on a CPU, the measured bf16 matmul), TF32 is switched on only where CUDA is."""

from __future__ import annotations

import pytest
import torch

from electra.core import runtime
from electra.core.runtime import autocast, cpu_bf16_speedup, enable_tf32, resolve_precision, tf32_enabled

CPU = torch.device("cpu")


def test_explicit_precision_is_honoured_whatever_the_probe_says(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: 0.1)  # bf16 10x slower here
    assert resolve_precision("bf16", CPU) is torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: 10.0)
    assert resolve_precision("fp32", CPU) is None


@pytest.mark.parametrize(("speedup", "expected"), [(0.25, None), (1.1, None), (1.25, torch.bfloat16),
                                                   (6.0, torch.bfloat16)])
def test_auto_on_a_cpu_takes_bf16_only_where_the_probe_measures_it_faster(monkeypatch, speedup, expected):
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: speedup)
    assert resolve_precision("auto", CPU) is expected


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="auto, bf16 or fp32"):
        resolve_precision("fp16", CPU)


def test_the_probe_measures_a_positive_ratio_once_without_moving_the_global_rng():
    cpu_bf16_speedup.cache_clear()
    before = torch.get_rng_state()
    ratio = cpu_bf16_speedup(n=128, repeats=1)
    assert ratio > 0
    assert torch.equal(torch.get_rng_state(), before)
    assert cpu_bf16_speedup(n=128, repeats=1) == ratio  # cached: measured once per process
    cpu_bf16_speedup.cache_clear()


def test_autocast_follows_the_resolved_dtype():
    x = torch.randn(4, 4)
    with autocast(CPU, torch.bfloat16):
        assert (x @ x).dtype is torch.bfloat16
    with autocast(CPU, None):
        assert (x @ x).dtype is torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_tf32_is_a_no_op_without_cuda():
    before = tf32_enabled()
    assert enable_tf32() is False
    assert tf32_enabled() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tf32_is_enabled_on_cuda():
    assert enable_tf32() is True
    assert tf32_enabled()
