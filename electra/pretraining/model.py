"""The ELECTRA pretraining model: a small generator and a discriminator, trained jointly.

Read top to bottom: the configs, the counter-based randomness, the masking, the Gumbel
sampler, then the model whose ``forward`` is the replaced-token-detection objective step by step
(Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as Discriminators
Rather Than Generators").

Pitfalls this file guards against, each pinned by a test:
- label polarity: 1 = replaced; a sampled token equal to the original is *original*;
- sampling is Gumbel-max over the generator's logits (not probabilities), in fp32;
- no gradient flows from the discriminator into the generator through the sample;
- loss = 1 x generator MLM loss + 50 x discriminator loss;
- of the masked positions 85% show [MASK] and 15% keep their token, none get a random token;
- special tokens and padding are never masked;
- generator and discriminator share one embedding block (one tensor each);
- the generator is narrower than the discriminator, never shallower;
- static shapes (P masked slots per row, padded slots weigh 0) and no host sync in the
  step; each draw is a function of the example's row key (docs/static-step.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from electra.core.config import ModelConfig
from electra.pretraining.dropout import use_fast_dropout


def discriminator_config(cfg: ModelConfig, vocab_size: int, pad_token_id: int = 0) -> ElectraConfig:
    """The discriminator's ``ElectraConfig`` (full width)."""
    return ElectraConfig(
        vocab_size=vocab_size,
        embedding_size=cfg.embedding_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        pad_token_id=pad_token_id,
        attn_implementation="sdpa",
    )


def generator_config(cfg: ModelConfig, vocab_size: int, pad_token_id: int = 0) -> ElectraConfig:
    """The generator's ``ElectraConfig``: the same depth, a fraction of the width.

    The paper (Sec. 3.2, Table 6) shrinks hidden size, heads and FFN size by the
    same factor and keeps the number of layers; a shallower generator is a common
    reimplementation mistake.
    """
    frac = cfg.generator_fraction
    return ElectraConfig(
        vocab_size=vocab_size,
        embedding_size=cfg.embedding_size,  # shared embeddings: same size as the discriminator's
        hidden_size=round(cfg.hidden_size * frac),
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=max(1, round(cfg.num_heads * frac)),
        intermediate_size=max(1, round(cfg.intermediate_size * frac)),
        max_position_embeddings=cfg.max_position_embeddings,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        pad_token_id=pad_token_id,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )


# --- Randomness: counter-based, a pure function of (row key, draw, element) --------------
#
# Every random number of the step is a hash of the example's 64-bit row key (its seeded
# position in the data stream, batches.row_keys), which draw it belongs to, and the element's
# index within the row. No generator state: an example is masked and sampled the same in
# any batch, on any rank, after any resume, and the whole batch draws in a few tensor ops
# (one fused kernel under torch.compile) instead of one tiny RNG kernel per row.

_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B           # < 2**31: a product with a 32-bit value stays below 2**63 (no int64 overflow)
_GOLDEN = 0x9E3779B9       # separates the draws (masking scores, [MASK] choice, Gumbel noise)
DRAW_SCORES, DRAW_SHOW, DRAW_GUMBEL = 0, 1, 2


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash, elementwise: int64 values in [0, 2**32), or int32
    holding the same 32 bits (products wrap, shifts are masked to be logical)."""
    for _ in range(2):
        x = x ^ ((x >> 16) & 0xFFFF)
        x = x * _MIX
        if x.dtype == torch.int64:
            x = x & _MASK32
    return x ^ ((x >> 16) & 0xFFFF)


def _as_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) -> int32 with the same bits (no out-of-range cast)."""
    return (x - ((x >> 31) << 32)).to(torch.int32)


def uniforms(row_keys: torch.Tensor, draw: int, n: int) -> torch.Tensor:
    """[B] int64 row keys -> [B, n] fp32 uniforms in (0, 1), from 23 bits of a 32-bit hash.

    Element j of row b is mix32(state_b ^ mix32(j)): the counter is hashed first, so two
    rows' sequences never line up shifted against each other. The [B, n] hash runs in
    int32, in place: half the memory traffic of int64 (the Gumbel noise is [B, P, V]).
    """
    lo = row_keys & _MASK32                                             # [B]
    hi = (row_keys >> 32) & _MASK32                                     # arithmetic shift, then masked
    state = _as_int32(mix32(lo ^ mix32(hi ^ ((draw * _GOLDEN) & _MASK32))))  # [B]
    counter = _as_int32(mix32(torch.arange(n, device=row_keys.device)))     # [n]
    x = state[:, None] ^ counter[None, :]                               # [B, n] int32
    shifted = torch.empty_like(x)
    for last in (False, False, True):                                   # mix32, in place
        torch.bitwise_right_shift(x, 16, out=shifted)
        x.bitwise_xor_(shifted.bitwise_and_(0xFFFF))
        if not last:
            x.mul_(_MIX)
    bits = x.bitwise_right_shift_(9).bitwise_and_(0x7FFFFF)             # [B, n] in [0, 2**23)
    # 23 bits, so bits + 0.5 is exact in fp32: u in [2**-24, 1 - 2**-24], never 0 or 1.
    return bits.float().add_(0.5).mul_(1.0 / (1 << 23))


def keys_from(generator: torch.Generator | None, batch: int, device: torch.device) -> torch.Tensor:
    """[B] row keys drawn from ``generator`` (or the global RNG): for callers without stream positions."""
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, 2**62, (batch,), generator=generator, device=where).to(device)


def max_predictions(seq_len: int, mask_prob: float, configured: int | None = None) -> int:
    """P, the masked slots per row: ``configured``, or ceil(mask_prob x L).

    Every row masks round(mask_prob x maskable) <= ceil(mask_prob x L) positions, so the
    default never truncates a row and needs no slack; a smaller ``configured`` caps rows.
    """
    wanted = configured if configured is not None else math.ceil(mask_prob * seq_len)
    return max(1, min(seq_len, wanted))


@dataclass
class Masking:
    """The chosen positions of a batch, in a fixed number P of slots per row."""

    masked_ids: torch.Tensor   # [B, L] the generator's input
    positions: torch.Tensor    # [B, P] long, distinct within a row
    valid: torch.Tensor        # [B, P] bool: slot k < the row's count (the rest are padding, weight 0)
    targets: torch.Tensor      # [B, P] original ids at ``positions``

    def is_masked(self) -> torch.Tensor:
        """[B, L] True at every chosen position."""
        return torch.zeros_like(self.masked_ids, dtype=torch.bool).scatter(1, self.positions, self.valid)


def choose_masked(input_ids: torch.Tensor, special_mask: torch.Tensor, mask_token_id: int, row_keys: torch.Tensor,
                  mask_prob: float = 0.15, mask_token_prob: float = 0.85, slots: int | None = None) -> Masking:
    """Choose positions to predict with static shapes: index tensors, no boolean indexing.

    Each row gets round(mask_prob x maskable) positions (at least 1, at most ``slots``),
    uniformly among its maskable ones: the P lowest of uniform scores, maskable first.
    Of the chosen, ``mask_token_prob`` show [MASK]; the rest keep their token (no random
    tokens: ELECTRA, Sec. 3.1). Padded slots point at unchosen positions and change nothing.
    """
    batch, length = input_ids.shape
    slots = slots or max_predictions(length, mask_prob)
    maskable = ~special_mask                                            # [B, L]
    n_maskable = maskable.sum(dim=1)                                    # [B]
    n_mask = torch.clamp(torch.round(n_maskable.float() * mask_prob).long(), min=1)
    n_mask = torch.minimum(torch.minimum(n_mask, n_maskable), torch.full_like(n_mask, slots))
    scores = uniforms(row_keys, DRAW_SCORES, length).masked_fill(special_mask, 2.0)  # never chosen: last
    positions = scores.topk(slots, dim=1, largest=False, sorted=True).indices         # [B, P] ascending
    valid = torch.arange(slots, device=input_ids.device)[None, :] < n_mask[:, None]  # [B, P]
    targets = input_ids.gather(1, positions)                            # [B, P]
    show = (uniforms(row_keys, DRAW_SHOW, slots) < mask_token_prob) & valid
    masked_ids = input_ids.scatter(1, positions, torch.where(show, torch.full_like(targets, mask_token_id), targets))
    return Masking(masked_ids, positions, valid, targets)


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    mask_token_id: int,
    mask_prob: float = 0.15,
    mask_token_prob: float = 0.85,
    generator: torch.Generator | None = None,
    row_keys: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`choose_masked` as [B, L] tensors: ``(masked_ids, is_masked)``.

    Args:
        input_ids: [B, L] original token ids.
        special_mask: [B, L] True where the token may never be masked ([CLS], [SEP], [PAD]).
    The draws come from ``row_keys`` ([B], one per example) or, without them, from keys
    drawn from ``generator``.
    """
    if row_keys is None:
        row_keys = keys_from(generator, input_ids.shape[0], input_ids.device)
    masking = choose_masked(input_ids, special_mask, mask_token_id, row_keys, mask_prob, mask_token_prob)
    return masking.masked_ids, masking.is_masked()


def gumbel_sample(logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
                  row_keys: torch.Tensor | None = None) -> torch.Tensor:
    """Draw one token per row of softmax(logits / T) with the Gumbel-max trick, in fp32.

    Args:
        logits: [B, ..., V] unnormalised scores (not probabilities); row b's noise comes
            from ``row_keys[b]`` (or keys drawn from ``generator``).
    Returns:
        [B, ...] sampled token ids. No gradient: the sample is a discrete input to the
        discriminator, so nothing flows back into the generator through it.
    """
    with torch.no_grad():
        logits = logits.detach().float()
        if row_keys is None:
            row_keys = keys_from(generator, logits.shape[0], logits.device)
        u = uniforms(row_keys, DRAW_GUMBEL, logits[0].numel()).view_as(logits)  # fp32 (0, 1)
        gumbel = u.log_().neg_().log_().neg_()                         # -log(-log u) ~ Gumbel(0, 1)
        return (logits / temperature + gumbel).argmax(dim=-1)


@dataclass
class PretrainOutput:
    """Losses (fp32 scalars) and the tensors the metrics need."""

    loss: torch.Tensor
    generator_loss: torch.Tensor
    discriminator_loss: torch.Tensor
    generator_correct: torch.Tensor       # [] predicted-token hits at masked positions
    masked_count: torch.Tensor            # []
    generator_loss_sum: torch.Tensor      # [] summed over masked positions (for global averaging)
    discriminator_loss_sum: torch.Tensor  # [] summed over non-padding tokens
    active_count: torch.Tensor            # []
    is_replaced: torch.Tensor | None      # [B, L] discriminator labels (1 = replaced)
    disc_predictions: torch.Tensor | None  # [B, L] discriminator says "replaced"
    active: torch.Tensor                  # [B, L] non-padding positions
    # For the validation's learning metrics (electra/pretraining/learning.py), detached:
    disc_logits: torch.Tensor | None = None    # [B, L] the discriminator's logits (None for mlm)
    encoder_hidden: torch.Tensor | None = None  # [B, L, H] final states of the encoder that is exported


class ElectraPretrainer(nn.Module):
    """Generator + discriminator with shared embeddings (or one MLM encoder for ``objective="mlm"``)."""

    def __init__(
        self,
        cfg: ModelConfig,
        vocab_size: int,
        pad_token_id: int,
        mask_token_id: int,
        special_token_ids: list[int],
        objective: str = "electra",
        mask_prob: float = 0.15,
        mask_token_prob: float = 0.85,
        temperature: float = 1.0,
        generator_weight: float = 1.0,
        discriminator_weight: float = 50.0,
        max_predictions: int | None = None,
    ) -> None:
        super().__init__()
        self.objective = objective
        self.mask_token_id = mask_token_id
        self.mask_prob = mask_prob
        self.mask_token_prob = mask_token_prob
        self.temperature = temperature
        self.generator_weight = generator_weight
        self.discriminator_weight = discriminator_weight
        self.max_predictions = max_predictions      # P slots per row; None: ceil(mask_prob x L)
        self.register_buffer("special_ids", torch.tensor(sorted(set(special_token_ids + [pad_token_id]))), persistent=False)

        disc_cfg = discriminator_config(cfg, vocab_size, pad_token_id)
        if objective == "mlm":
            # The BERT-style baseline: one discriminator-sized encoder trained as a masked LM.
            gen_cfg = discriminator_config(cfg, vocab_size, pad_token_id)
            gen_cfg.tie_word_embeddings = True
            self.generator = ElectraForMaskedLM(gen_cfg)
            self.discriminator = None
        else:
            self.generator = ElectraForMaskedLM(generator_config(cfg, vocab_size, pad_token_id))
            self.discriminator = ElectraForPreTraining(disc_cfg)
            # One embedding block (word, position, token type, LayerNorm) for both models,
            # and the generator's output projection tied to the word embeddings.
            self.generator.electra.embeddings = self.discriminator.electra.embeddings
            self.generator.generator_lm_head.weight = self.discriminator.electra.embeddings.word_embeddings.weight
        # The same dropout, drawn 4x cheaper on the CPU (electra/pretraining/dropout.py; no change on CUDA).
        for model in (self.generator, self.discriminator):
            if model is not None:
                use_fast_dropout(model)

    def special_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, L] True at special tokens and padding (never masked)."""
        return torch.isin(input_ids, self.special_ids)

    def generator_logits_at(self, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits only at the masked slots: [B, L, H] x [B, P] -> [B, P, V].

        Projecting every position onto the 30k vocabulary would cost ~6x more for
        nothing: only the masked positions have a loss and are sampled.
        """
        index = positions[:, :, None].expand(-1, -1, hidden.shape[-1])     # [B, P, H]
        selected = hidden.gather(1, index)                                  # [B, P, H]
        return self.generator.generator_lm_head(self.generator.generator_predictions(selected))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        row_keys: torch.Tensor | None = None,
    ) -> PretrainOutput:
        """One objective evaluation on a batch of original token ids [B, L].

        Static shapes throughout (P masked slots per row, index tensors, weights for the
        padded slots) and no host sync: ``torch.compile`` captures it in one graph.
        ``attention_mask`` None means no padding (SDPA may then use its flash kernels).
        ``row_keys`` ([B] int64, batches.row_keys) make every draw a function of the
        example; without them keys are drawn from ``generator`` or the global RNG.
        """
        if row_keys is None:
            row_keys = keys_from(generator, input_ids.shape[0], input_ids.device)
        # 1. Mask: choose ~15% of the real tokens into P slots per row; 85% of those show [MASK].
        m = choose_masked(input_ids, self.special_mask(input_ids), self.mask_token_id, row_keys,
                          self.mask_prob, self.mask_token_prob, self.max_predictions)
        weights = m.valid.float()                                           # [B, P] 0 at padded slots

        # 2. Generator: a small masked LM predicts the original tokens at the masked slots.
        gen_hidden = self.generator.electra(
            m.masked_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state                                                 # [B, L, Hg]
        gen_logits = self.generator_logits_at(gen_hidden, m.positions)     # [B, P, V]
        token_loss = F.cross_entropy(gen_logits.float().flatten(0, 1), m.targets.flatten(), reduction="none")
        generator_loss_sum = (token_loss.view_as(weights) * weights).sum()
        masked_count = m.valid.sum()
        generator_loss = generator_loss_sum / masked_count.clamp(min=1)
        generator_correct = ((gen_logits.detach().argmax(-1) == m.targets) & m.valid).sum()
        active = (attention_mask.bool() if attention_mask is not None
                  else torch.ones_like(input_ids, dtype=torch.bool))        # [B, L]
        active_count = active.sum()

        if self.discriminator is None:  # objective == "mlm"
            zero = torch.zeros((), device=input_ids.device)
            return PretrainOutput(
                loss=generator_loss, generator_loss=generator_loss, discriminator_loss=zero,
                generator_correct=generator_correct, masked_count=masked_count,
                generator_loss_sum=generator_loss_sum, discriminator_loss_sum=zero, active_count=active_count,
                is_replaced=None, disc_predictions=None, active=active,
                encoder_hidden=gen_hidden.detach(),  # mlm exports this encoder as its discriminator
            )

        # 3. Sample replacements from the generator (Gumbel-max over fp32 logits, no grad);
        #    padded slots write back their original token, so they change nothing.
        sampled = gumbel_sample(gen_logits, self.temperature, row_keys=row_keys)  # [B, P]
        corrupted = input_ids.scatter(1, m.positions, torch.where(m.valid, sampled, m.targets))  # [B, L]

        # 4. Labels: 1 where the token differs from the original. A masked position whose
        #    sample equals the original is labelled original (0), as in the paper.
        is_replaced = (corrupted != input_ids) & active                     # [B, L]

        # 5. Discriminator: per-token "was this replaced?" over every non-padding token.
        #    The encoder and the head called apart, as ElectraForPreTraining.forward does:
        #    the final hidden states are kept for the validation's representation metrics.
        disc_hidden = self.discriminator.electra(
            corrupted, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state                                                 # [B, L, H]
        disc_logits = self.discriminator.discriminator_predictions(disc_hidden)  # [B, L]
        token_bce = F.binary_cross_entropy_with_logits(disc_logits.float(), is_replaced.float(), reduction="none")
        discriminator_loss_sum = (token_bce * active).sum()
        discriminator_loss = discriminator_loss_sum / active_count.clamp(min=1)

        # 6. Total: lambda = 50 balances the (much smaller) discriminator loss (paper, Sec. 3.1).
        loss = self.generator_weight * generator_loss + self.discriminator_weight * discriminator_loss
        return PretrainOutput(
            loss=loss, generator_loss=generator_loss, discriminator_loss=discriminator_loss,
            generator_correct=generator_correct, masked_count=masked_count,
            generator_loss_sum=generator_loss_sum, discriminator_loss_sum=discriminator_loss_sum,
            active_count=active_count, is_replaced=is_replaced, disc_predictions=(disc_logits.detach() > 0) & active,
            active=active, disc_logits=disc_logits.detach(), encoder_hidden=disc_hidden.detach(),
        )

    def discriminator_for_export(self) -> ElectraForPreTraining:
        """The discriminator to save; for ``mlm`` an ElectraForPreTraining carrying the MLM's encoder."""
        if self.discriminator is not None:
            return self.discriminator
        export = ElectraForPreTraining(self.generator.config)
        export.electra.load_state_dict(self.generator.electra.state_dict())
        export.set_attn_implementation("sdpa")
        return export
