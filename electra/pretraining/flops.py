"""FLOP accounting for pretraining: the model FLOPs of a step per token (the numerator of
MFU and the unit of ``electra compare``'s equal-compute budget) and the device's measured
matmul rate (the denominator).
"""

from __future__ import annotations

import time

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


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 4) -> float:
    """Measured dense matmul rate (FLOP/s) of this device and dtype: the MFU denominator."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)
