"""FLOP accounting for pretraining: the model FLOPs of a step per token (the numerator of
MFU and the unit of ``electra compare``'s equal-compute budget) and the device's measured
matmul rate (the denominator).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from electra.core.config import ModelConfig


def flops_breakdown(cfg: ModelConfig, seq_len: int, vocab_size: int, mask_prob: float = 0.15,
                    objective: str = "electra") -> dict[str, float]:
    """Forward FLOPs per token of one pretraining step, by component (2 FLOPs per multiply-add).

    Matmuls only; lookups, norms, softmax and the loss are left out (they are a few percent
    at these widths). Per encoder of width ``H``, feed-forward ``I``, ``N`` layers:

    - embeddings: the projection from the embedding size ``E`` to ``H`` (none when equal);
    - attention: ``N * (2 * 4 * H^2 + 2 * 2 * L * H)``: Q, K, V and output projections, then
      scores (Q K^T) and the weighted sum of values over ``L`` positions;
    - feed_forward: ``N * 2 * 2 * H * I``;
    - heads: the MLM head (``H -> E`` transform, ``E -> V`` decoder tied to the embeddings) at
      the masked positions only (``mask_prob`` of the tokens), and the discriminator's
      ``H -> H -> 1`` head at every token.

    ``electra`` counts the generator (``generator_fraction`` of the width, same depth) and
    the discriminator; ``mlm`` one encoder of the discriminator's size with an MLM head.
    """
    def encoder(prefix: str, hidden: int, inter: int) -> dict[str, float]:
        return {
            f"{prefix}.embeddings": float(2 * cfg.embedding_size * hidden if cfg.embedding_size != hidden else 0),
            f"{prefix}.attention": float(cfg.num_layers * (2 * 4 * hidden * hidden + 2 * 2 * seq_len * hidden)),
            f"{prefix}.feed_forward": float(cfg.num_layers * 2 * 2 * hidden * inter),
        }

    def mlm_head(hidden: int) -> float:
        return mask_prob * (2 * hidden * cfg.embedding_size + 2 * cfg.embedding_size * vocab_size)

    if objective == "mlm":
        return {**encoder("encoder", cfg.hidden_size, cfg.intermediate_size),
                "encoder.mlm_head": mlm_head(cfg.hidden_size)}
    gen_hidden = round(cfg.hidden_size * cfg.generator_fraction)
    gen_inter = max(1, round(cfg.intermediate_size * cfg.generator_fraction))
    return {**encoder("generator", gen_hidden, gen_inter), "generator.mlm_head": mlm_head(gen_hidden),
            **encoder("discriminator", cfg.hidden_size, cfg.intermediate_size),
            "discriminator.head": float(2 * cfg.hidden_size * (cfg.hidden_size + 1))}


def training_flops_per_token(cfg: ModelConfig, seq_len: int, vocab_size: int, mask_prob: float = 0.15,
                             objective: str = "electra") -> float:
    """Model FLOPs of one training step per token: forward (:func:`flops_breakdown`) x 3,
    the backward pass costing twice the forward. The numerator of MFU, and the unit of
    ``electra compare``'s equal-compute budget."""
    return 3.0 * sum(flops_breakdown(cfg, seq_len, vocab_size, mask_prob, objective).values())


# Dense (no structured sparsity) bf16 tensor-core peak of each chip, FLOP/s, from NVIDIA's
# datasheets, which print the sparse figure (twice the dense one) with a footnote:
# - A100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/a100/): BF16 312 TFLOPS
#   (624 with sparsity), SXM and PCIe alike.
# - H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100/): BF16 1,979 TFLOPS
#   with sparsity on H100 SXM (989.4 dense), 1,513 on H100 PCIe (756), 1,671 on H100 NVL (835.5).
# - H200 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h200/): BF16 1,979 TFLOPS
#   with sparsity on H200 SXM (989.4 dense; the GH200 superchip's GPU is the same), 1,671 on
#   H200 NVL (835.5).
# Matched against torch.cuda.get_device_name() in lower case, first match wins: the more
# specific names come first ("h100 pcie" before "h100").
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("h200 nvl", 835.5e12),
    ("h200", 989.4e12),
    ("h100 pcie", 756.0e12),
    ("h100 nvl", 835.5e12),
    ("h100", 989.4e12),
    ("a100", 312.0e12),
)

# The measured fallback's matmul size: 8192^3 keeps a GPU's tensor cores busy (1 TFLOP a
# call); on a CPU that would take seconds per call, so a 1024^3 one (2 GFLOP) stands in.
CUDA_PROBE_N = 8192
CPU_PROBE_N = 1024


def table_peak_flops(device_name: str, dtype: torch.dtype = torch.bfloat16) -> float | None:
    """The datasheet's dense peak (FLOP/s) for a chip named ``device_name`` in ``dtype``.

    None for a chip not in :data:`PEAK_BF16_FLOPS`, or a dtype other than bf16/fp16 (the
    tensor cores' rate for those two is the same; fp32 runs at other rates).
    """
    if dtype not in (torch.bfloat16, torch.float16):
        return None
    name = device_name.lower()
    for key, flops in PEAK_BF16_FLOPS:
        if key in name:
            return flops
    return None


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                       repeats: int = 4) -> float:
    """Measured dense matmul rate (FLOP/s) of this device and dtype, the best of ``repeats``.

    ``n`` defaults to :data:`CUDA_PROBE_N` on CUDA and :data:`CPU_PROBE_N` elsewhere. The
    operands are drawn from a generator of their own: the global RNG stream is not moved.
    """
    n = n or (CUDA_PROBE_N if device.type == "cuda" else CPU_PROBE_N)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    a @ b  # warm-up: kernel selection, first-touch of the output
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


@dataclass(frozen=True)
class PeakFlops:
    """The two MFU denominators: the chip's datasheet peak (None when not in the table,
    or on a CPU) and the measured matmul rate. ``denominator`` is the table's when known
    (the honest one: a measured rate is below the peak, and so inflates MFU)."""

    device_name: str
    table: float | None
    measured: float

    @property
    def denominator(self) -> float:
        return self.table if self.table is not None else self.measured


def device_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> PeakFlops:
    """The datasheet peak and the measured matmul rate of ``device`` in ``dtype`` (see :class:`PeakFlops`)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        table = table_peak_flops(name, dtype)
    else:
        name, table = device.type, None
    return PeakFlops(name, table, matmul_flops_per_s(device, dtype))
