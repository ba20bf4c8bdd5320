"""Dropout that is cheap on the CPU, for the pretraining models.

Why: on the CPU, ``torch.bernoulli_`` (behind ``nn.Dropout`` and behind SDPA's
attention dropout) spends a random draw and a float compare on every element;
at ELECTRA-Small shapes it measured ~17% of a whole training step
(``bench/pretrain.py``, profiled). Here one 64-bit draw from the same global
generator gives four 15-bit uniform lanes, so the masks cost a quarter of the
draws. An element is dropped when its lane is below ``round(p * 2**15)``, so the
drop rate is ``p`` to within 1/65536 (0.1 -> 0.10001); kept elements are scaled
by ``1 / (1 - p)`` as usual.

On CUDA, in eval mode and with ``p == 0`` everything goes through torch's own
dropout and SDPA kernels. The attention function is registered with
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
        if x.device.type != "cpu":
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
    if dropout == 0.0 or query.device.type != "cpu":
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


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap every ``nn.Dropout`` of an HF model for :class:`FastDropout` and select :data:`ATTENTION`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    model.set_attn_implementation(ATTENTION)
    return model
