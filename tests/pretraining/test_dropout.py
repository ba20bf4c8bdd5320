"""The CPU dropout (electra/pretraining/dropout.py) is dropout: rate p, expectation kept, same attention."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from electra.core.config import ModelConfig
from electra.pretraining.dropout import ATTENTION, FastDropout, attention, fast_dropout
from electra.pretraining.model import ElectraPretrainer


def test_drop_rate_is_p_and_the_mean_is_kept():
    torch.manual_seed(0)
    n, p = 2_000_000, 0.1
    out = fast_dropout(torch.ones(n), p)
    dropped = (out == 0).float().mean().item()
    # 6 binomial standard deviations: a wrong threshold (e.g. 8-bit lanes: 26/256) is far outside.
    assert abs(dropped - p) < 6 * math.sqrt(p * (1 - p) / n)
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / (1 - p)))
    assert abs(out.mean().item() - 1.0) < 6 * math.sqrt(p / (1 - p) / n)


def test_each_lane_of_a_draw_is_independent_of_its_neighbours():
    """Four masks come from one 64-bit draw: neighbouring elements must not be correlated."""
    torch.manual_seed(1)
    kept = (fast_dropout(torch.ones(1_000_000), 0.5) != 0).float().view(-1, 4)   # [draws, lanes]
    rates = kept.mean(dim=0)
    assert torch.all((rates - 0.5).abs() < 0.005), rates                  # the top lane too
    both = (kept[:, 0] * kept[:, 3]).mean().item()
    assert abs(both - 0.25) < 0.005


def test_gradient_is_zero_where_dropped_and_scaled_where_kept():
    torch.manual_seed(2)
    x = torch.randn(64, 32, requires_grad=True)
    out = fast_dropout(x, 0.25)
    out.sum().backward()
    kept = out.detach() != 0
    assert torch.all(x.grad[~kept] == 0)
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.75))


def test_module_is_identity_in_eval_and_draws_from_the_global_generator():
    layer = FastDropout(0.1)
    x = torch.randn(8, 16)
    assert torch.equal(layer.eval()(x), x)
    layer.train()
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)  # seeded and resumable like nn.Dropout


def test_attention_math_path_equals_sdpa_with_padding_mask():
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 4, 10, 8) for _ in range(3))
    mask = torch.ones(2, 1, 10, 10, dtype=torch.bool)
    mask[1, :, :, 7:] = False                                            # row 1 has 3 padding keys
    module = nn.Module().train()
    reference, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=8 ** -0.5, is_causal=False)
    # A rate that rounds to zero dropped lanes takes the math path and drops nothing.
    ours, _ = attention(module, q, k, v, mask, dropout=1e-9, scaling=8 ** -0.5, is_causal=False)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_pretrainer_uses_it_everywhere_and_exports_plain_sdpa_models(tmp_path):
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, embedding_size=16)
    for objective in ("electra", "mlm"):
        model = ElectraPretrainer(cfg, 200, 0, 4, [0, 1, 2, 3, 4], objective=objective)
        dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        assert dropouts and all(type(m) is FastDropout for m in dropouts)
        assert model.generator.config._attn_implementation == ATTENTION
        exported = model.discriminator_for_export()
        exported.save_pretrained(tmp_path / objective)
        # Another process (without electra imported) must load the folder as a plain HF model.
        assert ATTENTION not in (tmp_path / objective / "config.json").read_text()
        if objective == "mlm":  # a fresh model built for export: back on HF's SDPA
            assert exported.config._attn_implementation == "sdpa"
