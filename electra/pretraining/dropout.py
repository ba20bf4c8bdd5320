"""Dropout that is cheap on the CPU, for the pretraining models.

Why: on the CPU, ``torch.bernoulli_`` (behind ``nn.Dropout`` and behind SDPA's
attention dropout) spends a random draw and a float compare on every element;
at ELECTRA-Small shapes it measured ~17% of a whole training step
(``bench/pretrain.py``, profiled). Here one 64-bit draw from the same global
generator gives four 15-bit uniform lanes, so the masks cost a quarter of the
draws. An element is dropped when its lane is below ``round(p * 2**15)``, so the
drop rate is ``p`` to within 1/65536 (0.1 -> 0.10001); kept elements are scaled
by ``1 / (1 - p)`` as usual.

On CUDA, under ``torch.compile`` (the int16 view of the draws would break the graph;
inductor fuses its own dropout RNG), in eval mode and with ``p == 0`` everything goes
through torch's own dropout and SDPA kernels. The attention function is registered with
transformers under ``ATTENTION`` and falls back to HF's SDPA function there;
exported models are plain HF models (``config.json`` does not record it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "electra_sdpa"
_LANE_BITS = 15


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of ``x`` (any shape) with masks from 15-bit lanes of 64-bit draws."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()  # [ceil(n/4)]
    # random_() fills int64 with [0, 2**63): the top bit of the 4th lane is always 0,
    # so every lane keeps its low 15 bits, uniform on [0, 2**15).
    lanes = words.view(torch.int16)[:n].view(x.shape).bitwise_and_((1 << _LANE_BITS) - 1)
    dropped = lanes < round(p * (1 << _LANE_BITS))                      # x.shape, bool
    return x.masked_fill(dropped, 0.0).mul_(1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` that uses :func:`fast_dropout` for training on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():  # compiled: inductor's own fused RNG
            return F.dropout(x, self.p, True, self.inplace)
        return fast_dropout(x, self.p)


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              **kwargs) -> tuple[torch.Tensor, None]:
    """HF attention function: SDPA, except CPU training with attention dropout (then the
    math path SDPA would take anyway, with :func:`fast_dropout` on the probabilities).

    Shapes: query/key/value [B, heads, L, d]; attention_mask None or bool [B, 1, L, L]
    (True = attend, as HF's SDPA mask); returns [B, L, heads, d].
    """
    if dropout == 0.0 or query.device.type != "cpu" or torch.compiler.is_compiling():
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)).mul_(scale)      # [B, h, L, L]
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout)        # [B, h, L, L]
    out = torch.matmul(probs, value)                                     # [B, h, L, d]
    return out.transpose(1, 2).contiguous(), None


def padding_mask(*args, **kwargs) -> torch.Tensor | None:
    """HF's SDPA mask, without its host sync: a batch without padding arrives with no mask
    at all (batches.load_batch decides on the host), so a given mask is never all ones and
    HF's ``padding_mask.all()`` check (a device read-back every encoder call) is skipped."""
    if kwargs.get("attention_mask") is not None:
        kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, padding_mask)


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap every ``nn.Dropout`` of an HF model for :class:`FastDropout` and select :data:`ATTENTION`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    model.set_attn_implementation(ATTENTION)
    return model


def sdpa_backend(device: torch.device, dtype: torch.dtype | None, heads: int, head_dim: int, dropout: float) -> str:
    """Which scaled-dot-product-attention kernel the encoders get here: one line for the log.

    On CUDA it is probed: the first enabled backend, in the order flash, memory-efficient,
    cuDNN, math, that runs a [1, heads, 128, head_dim] attention of ``dtype`` with
    ``dropout``, without a mask (a batch without padding) and with one. On the CPU,
    training with attention dropout takes this module's math path (:func:`attention`);
    without dropout SDPA's CPU flash kernel runs when there is no mask.
    """
    if device.type != "cuda":
        return "cpu: math with fast dropout" if dropout > 0 else "cpu: flash without padding, math with padding"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [(SDPBackend.FLASH_ATTENTION, torch.backends.cuda.flash_sdp_enabled()),
                (SDPBackend.EFFICIENT_ATTENTION, torch.backends.cuda.mem_efficient_sdp_enabled()),
                (SDPBackend.CUDNN_ATTENTION, torch.backends.cuda.cudnn_sdp_enabled()),
                (SDPBackend.MATH, torch.backends.cuda.math_sdp_enabled())]
    q = torch.zeros(1, heads, 128, head_dim, device=device, dtype=dtype or torch.float32)
    found = []
    for mask in (None, torch.ones(1, 1, 128, 128, dtype=torch.bool, device=device)):
        name = "none"
        for backend, enabled in backends:
            try:
                if enabled:
                    with sdpa_kernel([backend]):
                        F.scaled_dot_product_attention(q, q, q, attn_mask=mask, dropout_p=dropout)
                    name = backend.name.lower()
                    break
            except RuntimeError:  # this backend does not take these inputs here
                continue
        found.append(name)
    return f"cuda: {found[0]} without padding, {found[1]} with padding"
