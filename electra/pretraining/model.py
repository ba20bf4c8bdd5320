"""The ELECTRA pretraining model: a small generator and a discriminator, trained jointly.

Read top to bottom: the configs, the masking, the Gumbel sampler, then the
model whose ``forward`` is the replaced-token-detection objective step by step
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
- the generator is narrower than the discriminator, never shallower.
"""

from __future__ import annotations

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


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    mask_token_id: int,
    mask_prob: float = 0.15,
    mask_token_prob: float = 0.85,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose positions to predict and hide most of them behind [MASK].

    Args:
        input_ids: [B, L] original token ids.
        special_mask: [B, L] True where the token may never be masked ([CLS], [SEP], [PAD]).
    Returns:
        masked_ids: [B, L] ids with [MASK] at ``mask_token_prob`` of the chosen positions;
            the others keep their original token (no random tokens: ELECTRA, Sec. 3.1).
        is_masked: [B, L] True at every chosen position (these are predicted).

    A fixed number of positions per sequence (round(mask_prob x maskable), at least 1)
    is chosen uniformly among the maskable ones, as ELECTRA's implementation does.
    ``generator`` may be one generator for the batch or one per row; per-row
    generators make each example's masking independent of which process or batch
    it lands in (data-parallel runs match a single process).
    """
    maskable = ~special_mask                                            # [B, L]
    n_maskable = maskable.sum(dim=1)                                    # [B]
    n_mask = torch.clamp(torch.round(n_maskable.float() * mask_prob).long(), min=1)
    n_mask = torch.minimum(n_mask, n_maskable)                          # [B]
    scores, show_noise = _uniform_pair(input_ids.shape, generator, input_ids.device)  # [B, L] each
    scores = scores.masked_fill(~maskable, 2.0)                         # never chosen: sort last
    ranks = scores.argsort(dim=1).argsort(dim=1)                        # [B, L] rank of each score
    is_masked = (ranks < n_mask[:, None]) & maskable                    # [B, L]
    show_mask = show_noise < mask_token_prob
    masked_ids = torch.where(is_masked & show_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    return masked_ids, is_masked


def _uniform_pair(shape: torch.Size, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two [B, L] uniform tensors, from one generator or row by row from per-row generators."""
    if isinstance(generator, list):
        rows = [torch.rand(2, shape[1], generator=g, device=device) for g in generator]
        both = torch.stack(rows, dim=1)                                  # [2, B, L]
        return both[0], both[1]
    return (torch.rand(shape, generator=generator, device=device),
            torch.rand(shape, generator=generator, device=device))


def gumbel_sample(logits: torch.Tensor, temperature: float = 1.0,
                  generator: torch.Generator | list[torch.Generator] | None = None,
                  row_counts: list[int] | None = None) -> torch.Tensor:
    """Draw one token per row from softmax(logits / T) with the Gumbel-max trick, in fp32.

    Args:
        logits: [M, V] unnormalised scores (not probabilities).
    Returns:
        [M] sampled token ids. No gradient: the sample is a discrete input to the
        discriminator, so nothing flows back into the generator through it.
    With per-row generators, ``row_counts`` says how many of the M rows of ``logits``
    belong to each example (row-major order, as boolean indexing yields them).
    """
    with torch.no_grad():
        logits = logits.detach().float()
        # Gumbel(0, 1) noise g = -log(-log(u)), u ~ U(0, 1), built in place: on CPU the
        # [M, V] noise tensor is the step's largest, and torch's uniform_ is ~4x faster
        # than its exponential_ (bench measured), so the two in-place logs are cheaper.
        noise = torch.empty_like(logits)
        tiny = torch.finfo(torch.float32).tiny
        if isinstance(generator, list):
            if row_counts is None or len(row_counts) != len(generator):
                raise ValueError("per-row generators need row_counts, one count per generator")
            for chunk, g in zip(noise.split(row_counts), generator):
                chunk.uniform_(tiny, 1.0, generator=g)
        else:
            noise.uniform_(tiny, 1.0, generator=generator)
        noise.log_().neg_().log_().neg_()
        return (logits / temperature + noise).argmax(dim=-1)


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
    ) -> None:
        super().__init__()
        self.objective = objective
        self.mask_token_id = mask_token_id
        self.mask_prob = mask_prob
        self.mask_token_prob = mask_token_prob
        self.temperature = temperature
        self.generator_weight = generator_weight
        self.discriminator_weight = discriminator_weight
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

    def generator_logits_at(self, hidden: torch.Tensor, is_masked: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits only at masked positions: [B, L, H] x [B, L] -> [M, V].

        Projecting every position onto the 30k vocabulary would cost ~6x more for
        nothing: only the masked positions have a loss and are sampled.
        """
        selected = hidden[is_masked]                                        # [M, H]
        return self.generator.generator_lm_head(self.generator.generator_predictions(selected))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> PretrainOutput:
        """One objective evaluation on a batch of original token ids [B, L]."""
        # 1. Mask: choose ~15% of the real tokens; 85% of those show [MASK].
        masked_ids, is_masked = mask_tokens(
            input_ids, self.special_mask(input_ids), self.mask_token_id,
            self.mask_prob, self.mask_token_prob, generator,
        )                                                                   # [B, L], [B, L]
        targets = input_ids[is_masked]                                      # [M]

        # 2. Generator: a small masked LM predicts the original tokens at masked positions.
        gen_hidden = self.generator.electra(
            masked_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state                                                 # [B, L, Hg]
        gen_logits = self.generator_logits_at(gen_hidden, is_masked)        # [M, V]
        generator_loss_sum = F.cross_entropy(gen_logits.float(), targets, reduction="sum")
        masked_count = torch.tensor(targets.numel(), device=input_ids.device)
        generator_loss = generator_loss_sum / masked_count.clamp(min=1)
        generator_correct = (gen_logits.detach().argmax(-1) == targets).sum()
        active = attention_mask.bool()                                      # [B, L]
        active_count = active.sum()

        if self.discriminator is None:  # objective == "mlm"
            return PretrainOutput(
                loss=generator_loss, generator_loss=generator_loss,
                discriminator_loss=torch.zeros((), device=input_ids.device),
                generator_correct=generator_correct, masked_count=masked_count,
                generator_loss_sum=generator_loss_sum,
                discriminator_loss_sum=torch.zeros((), device=input_ids.device), active_count=active_count,
                is_replaced=None, disc_predictions=None, active=active,
                encoder_hidden=gen_hidden.detach(),  # mlm exports this encoder as its discriminator
            )

        # 3. Sample replacements from the generator (Gumbel-max over fp32 logits, no grad).
        row_counts = is_masked.sum(dim=1).tolist() if isinstance(generator, list) else None
        sampled = gumbel_sample(gen_logits, self.temperature, generator, row_counts)  # [M]
        corrupted = input_ids.clone()
        corrupted[is_masked] = sampled                                      # [B, L]

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
        discriminator_loss_sum = F.binary_cross_entropy_with_logits(
            disc_logits[active].float(), is_replaced[active].float(), reduction="sum"
        )
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
