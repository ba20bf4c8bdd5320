"""The ELECTRA objective's known pitfalls, each pinned on a tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from electra.core.config import ModelConfig
from electra.pretraining.model import ElectraPretrainer, choose_masked, generator_config, gumbel_sample, mask_tokens

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
VOCAB = 30522


def tiny_model(**kwargs) -> ElectraPretrainer:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, embedding_size=16, dropout=0.0)
    return ElectraPretrainer(cfg, VOCAB, PAD, MASK, [PAD, UNK, CLS, SEP, MASK], **kwargs)


def batch(b: int = 8, length: int = 40, pad_tail: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (b, length), generator=g)
    ids[:, 0] = CLS
    ids[:, length // 2] = SEP
    ids[:, length - pad_tail - 1] = SEP
    ids[:, length - pad_tail:] = PAD
    return {
        "input_ids": ids,
        "token_type_ids": torch.zeros_like(ids),
        "attention_mask": (ids != PAD).long(),
    }


def special(ids: torch.Tensor) -> torch.Tensor:
    return torch.isin(ids, torch.tensor([PAD, CLS, SEP, MASK, UNK]))


def test_masking_counts_and_proportions():
    b = batch(b=64, length=128, pad_tail=28)
    ids = b["input_ids"]
    masked_ids, is_masked = mask_tokens(ids, special(ids), MASK, 0.15, 0.85, torch.Generator().manual_seed(1))
    maskable = (~special(ids)).sum(1)
    # A fixed number per sequence: round(15% of the maskable tokens).
    assert torch.equal(is_masked.sum(1), torch.round(maskable.float() * 0.15).long())
    shown = (masked_ids == MASK) & is_masked
    kept = (masked_ids == ids) & is_masked
    # Every masked position is either [MASK] or its original token: no random tokens.
    assert torch.equal(shown | kept, is_masked)
    share = shown.sum().item() / is_masked.sum().item()
    assert 0.80 < share < 0.90, share
    # Unmasked positions are untouched.
    assert torch.equal(masked_ids[~is_masked], ids[~is_masked])


def test_special_tokens_and_padding_never_masked():
    b = batch(b=32, length=64, pad_tail=20)
    ids = b["input_ids"]
    for seed in range(20):
        _, is_masked = mask_tokens(ids, special(ids), MASK, 0.5, 0.85, torch.Generator().manual_seed(seed))
        assert not is_masked[special(ids)].any()


def test_generator_narrower_not_shallower_and_embeddings_shared():
    model = tiny_model()
    gen, disc = model.generator.config, model.discriminator.config
    assert gen.num_hidden_layers == disc.num_hidden_layers
    assert gen.hidden_size == disc.hidden_size // 4
    assert gen.num_attention_heads == disc.num_attention_heads // 4
    assert gen.intermediate_size == disc.intermediate_size // 4
    g_emb, d_emb = model.generator.electra.embeddings, model.discriminator.electra.embeddings
    assert g_emb is d_emb  # one block: word, position, token type and its LayerNorm
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        assert getattr(g_emb, name).weight.data_ptr() == getattr(d_emb, name).weight.data_ptr()
    # The generator's output layer is the word-embedding matrix itself.
    assert model.generator.generator_lm_head.weight is d_emb.word_embeddings.weight
    # Shared tensors count once among the parameters the optimizer sees.
    params = list(model.parameters())
    assert len(params) == len({p.data_ptr() for p in params})


def test_generator_config_follows_fraction():
    cfg = ModelConfig(hidden_size=256, num_layers=12, num_heads=4, intermediate_size=1024, embedding_size=128)
    gen = generator_config(cfg, VOCAB)
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size, gen.num_hidden_layers) == (64, 1, 256, 12)
    assert gen.embedding_size == 128


def test_gumbel_sampling_is_over_logits_in_fp32_and_matches_softmax():
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0]]).repeat(40000, 1).to(torch.bfloat16)
    samples = gumbel_sample(logits, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(samples, minlength=4).float() / samples.numel()
    expected = F.softmax(logits[0].float(), dim=-1)
    assert torch.allclose(freq, expected, atol=0.01), (freq, expected)
    # Temperature sharpens towards the argmax.
    cold = gumbel_sample(logits.float(), 0.05, torch.Generator().manual_seed(0))
    assert (cold == 0).float().mean() > 0.99


def test_gumbel_sample_has_no_gradient():
    logits = torch.randn(5, 10, requires_grad=True)
    out = gumbel_sample(logits)
    assert not out.requires_grad and out.dtype == torch.long


def test_label_polarity_replaced_is_one_and_correct_samples_are_original(monkeypatch):
    model = tiny_model()
    b = batch()
    captured = {}

    def fake_sample(logits, temperature, generator=None, row_keys=None):
        # Odd-numbered masked slots get the true token back, even ones a wrong token.
        targets = captured["masking"].targets                               # [B, P]
        wrong = (targets + 1) % VOCAB
        choose = torch.arange(targets.shape[1])[None, :] % 2 == 1
        return torch.where(choose, targets, wrong)

    def capturing_choose(*args, **kwargs):
        captured["masking"] = masking = choose_masked(*args, **kwargs)
        return masking

    monkeypatch.setattr("electra.pretraining.model.gumbel_sample", fake_sample)
    monkeypatch.setattr("electra.pretraining.model.choose_masked", capturing_choose)
    out = model(**b, generator=torch.Generator().manual_seed(0))
    m = captured["masking"]
    slot_labels = out.is_replaced.gather(1, m.positions)                   # [B, P]
    even = torch.arange(m.positions.shape[1])[None, :] % 2 == 0
    assert torch.equal(slot_labels[m.valid], even.expand_as(m.valid)[m.valid])  # wrong -> 1, right -> 0
    assert not out.is_replaced[~m.is_masked()].any()  # untouched positions (and padded slots) are original


def test_loss_weights_are_1_and_50():
    model = tiny_model()
    out = model(**batch(), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out.loss, out.generator_loss + 50.0 * out.discriminator_loss)
    assert torch.isfinite(out.loss)
    weighted = tiny_model(generator_weight=2.0, discriminator_weight=10.0)
    out2 = weighted(**batch(), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out2.loss, 2.0 * out2.generator_loss + 10.0 * out2.discriminator_loss)


def test_discriminator_loss_ignores_padding():
    model = tiny_model()
    b = batch()
    out = model(**b, generator=torch.Generator().manual_seed(0))
    assert not out.is_replaced[b["attention_mask"] == 0].any()
    assert out.active.sum() == b["attention_mask"].sum()


def test_no_gradient_from_discriminator_into_generator():
    model = tiny_model()
    out = model(**batch(), generator=torch.Generator().manual_seed(0))
    out.discriminator_loss.backward()
    shared = {p.data_ptr() for p in model.discriminator.electra.embeddings.parameters()}
    for name, param in model.generator.named_parameters():
        if param.data_ptr() in shared:
            continue  # the shared embeddings are trained by both losses, as in the paper
        assert param.grad is None or torch.count_nonzero(param.grad) == 0, name
    # ...while the generator loss does reach the generator's own layers.
    model.zero_grad()
    out = model(**batch(), generator=torch.Generator().manual_seed(0))
    out.generator_loss.backward()
    assert model.generator.electra.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_generator_head_only_at_masked_positions():
    model = tiny_model()
    b = batch()
    seen = []
    handle = model.generator.generator_lm_head.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(**b, generator=torch.Generator().manual_seed(0))
    handle.remove()
    # P = ceil(0.15 x 40) = 6 slots per row, static: [B, P, V] whatever the rows' counts.
    assert seen == [torch.Size([8, 6, VOCAB])]


def test_mlm_objective_trains_a_discriminator_sized_masked_lm():
    model = tiny_model(objective="mlm")
    assert model.discriminator is None
    assert model.generator.config.hidden_size == 32
    out = model(**batch(), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out.loss, out.generator_loss)
    export = model.discriminator_for_export()
    for (n1, p1), (n2, p2) in zip(export.electra.state_dict().items(), model.generator.electra.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_mask_token_prob_extremes(prob):
    ids = batch(b=16, length=64)["input_ids"]
    masked_ids, is_masked = mask_tokens(ids, special(ids), MASK, 0.15, prob, torch.Generator().manual_seed(3))
    if prob == 1.0:
        assert (masked_ids[is_masked] == MASK).all()
    else:
        assert torch.equal(masked_ids, ids)


def test_training_flops_match_the_models_matmul_weights():
    """The MFU numerator counts 2 FLOPs per matmul weight per token (x3 for training)."""
    from electra.pretraining.flops import training_flops_per_token

    cfg = ModelConfig(hidden_size=64, num_layers=3, num_heads=4, intermediate_size=256, embedding_size=32)
    model = ElectraPretrainer(cfg, VOCAB, PAD, MASK, [PAD, UNK, CLS, SEP, MASK])
    seq_len, mask_prob = 16, 0.15

    def linear_weights(module) -> int:
        return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))

    gen, disc = model.generator, model.discriminator
    head = gen.generator_predictions.dense.weight.numel() + gen.generator_lm_head.weight.numel()
    per_token = (2 * linear_weights(gen.electra) + 2 * linear_weights(disc.electra)
                 + 2 * linear_weights(disc.discriminator_predictions) + mask_prob * 2 * head
                 + 4 * seq_len * (gen.config.hidden_size + disc.config.hidden_size) * cfg.num_layers)
    expected = 3 * per_token
    assert training_flops_per_token(cfg, seq_len, VOCAB, mask_prob) == pytest.approx(expected, rel=1e-3)


def test_row_keys_make_each_example_independent_of_its_batch():
    """Masking and sampling of an example depend on its own key only (data parallelism relies on it)."""
    model = tiny_model()
    model.eval()
    b = batch(b=6)
    keys = torch.tensor([11, 12, 13, 14, 15, 16]) * 0x9E3779B97F4A7

    with torch.no_grad():
        whole = model(**b, row_keys=keys)
        halves = [model(**{k: v[i:i + 3] for k, v in b.items()}, row_keys=keys[i:i + 3]) for i in (0, 3)]
    assert torch.equal(whole.is_replaced, torch.cat([h.is_replaced for h in halves]))
    total = sum(h.generator_loss_sum for h in halves)
    assert torch.allclose(whole.generator_loss_sum, total, rtol=1e-5)
    assert torch.allclose(whole.discriminator_loss_sum, sum(h.discriminator_loss_sum for h in halves), rtol=1e-5)
    assert whole.masked_count == sum(h.masked_count for h in halves)


def test_outputs_carry_the_discriminator_logits_and_final_states():
    """The validation's learning metrics read these: logits that give the predictions, and
    the encoder's final hidden states (the discriminator's; for mlm the one encoder's)."""
    model = tiny_model().eval()
    out = model(**batch(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.disc_predictions, (out.disc_logits > 0) & out.active)
    assert out.encoder_hidden.shape == (*out.active.shape, 32) and not out.encoder_hidden.requires_grad
    mlm = tiny_model(objective="mlm").eval()
    out = mlm(**batch(), generator=torch.Generator().manual_seed(0))
    assert out.disc_logits is None and out.encoder_hidden.shape == (*out.active.shape, 32)
