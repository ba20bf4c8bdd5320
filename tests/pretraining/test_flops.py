"""The MFU denominators: the datasheet peak matched from the CUDA device's name, and the
measured matmul rate that stands in (or sits beside it)."""

from __future__ import annotations

import pytest
import torch

from electra.pretraining import flops
from electra.pretraining.flops import PeakFlops, device_peak_flops, matmul_flops_per_s, table_peak_flops


@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100-PCIE-40GB", 312.0),
    ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA H100 80GB HBM3", 989.4),
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.4),
    ("NVIDIA H200 NVL", 835.5),
    ("NVIDIA GH200 480GB", 989.4),
])
def test_known_chips_get_their_datasheet_bf16_peak(name, tflops):
    assert table_peak_flops(name) == pytest.approx(tflops * 1e12)
    assert table_peak_flops(name, torch.float16) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-16GB", "NVIDIA L4", ""])
def test_an_unknown_chip_has_no_table_peak(name):
    assert table_peak_flops(name) is None


def test_fp32_has_no_table_peak():
    assert table_peak_flops("NVIDIA H100 80GB HBM3", torch.float32) is None


def test_the_cpu_gets_a_measured_rate_and_no_table_peak():
    before = torch.get_rng_state()
    peak = device_peak_flops(torch.device("cpu"), torch.float32)
    assert peak.table is None and peak.measured > 0
    assert peak.denominator == peak.measured
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is not moved


def test_the_measured_fallback_on_cpu_is_positive_at_a_small_size():
    assert matmul_flops_per_s(torch.device("cpu"), torch.bfloat16, n=256, repeats=2) > 0


def test_the_table_peak_is_the_denominator_when_known():
    peak = PeakFlops("NVIDIA H200", 989.4e12, 700e12)
    assert peak.denominator == 989.4e12


def test_a_cuda_device_reads_its_name_from_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    monkeypatch.setattr(flops, "matmul_flops_per_s", lambda device, dtype: 1.0)
    peak = device_peak_flops(torch.device("cuda", 0), torch.bfloat16)
    assert peak == PeakFlops("NVIDIA H100 PCIe", 756.0e12, 1.0)
