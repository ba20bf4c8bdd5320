"""Is pretraining learning? The validation pass's learning metrics, and their maths.

A falling loss does not answer it: a discriminator that predicts the base rate of
replaced tokens everywhere has a low loss and has learned nothing (issue 20: after
2,000 tiny steps the loss equalled the entropy of the replaced rate, and fine-tuning
from it was worse than from random weights). These metrics do answer it:

- replaced-token ROC-AUC: does the discriminator rank replaced tokens above originals?
  0.5 = no better than chance, whatever the base rate;
- information gain (bits per token): the entropy of the base rate minus the
  discriminator's cross-entropy. 0 = it learned nothing; negative = worse than the prior;
- generator accuracy and perplexity at masked positions;
- representation health of the exported encoder on a fixed probe (the validation
  batches): the effective rank of its final hidden states and the mean cosine between
  two tokens' states. A collapsed encoder (low rank, states all alike) ignores its input.

Read top to bottom: the pure functions (each pinned by a test), then
:class:`ValidationProbe`, which the trainer feeds batch by batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Collapse thresholds. Measured in issue 20 (tiny, hidden 128, final hidden states of
# SST-2 sentences): random init rank 96 (0.75 of hidden), cosine 0.39; masked LM 75
# (0.59), 0.19; an ELECTRA discriminator that learned 62 (0.49), 0.53; two stuck at the
# prior 31 (0.24), 0.79 and 7.6 (0.06), 0.83 -- and those two fine-tuned worse than
# random weights. The bounds sit between the healthy and the stuck runs.
COLLAPSED_RANK_FRACTION = 0.25   # effective rank below this share of hidden_size: collapsed
COLLAPSED_COSINE = 0.7           # mean token cosine above this: collapsed


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the positives in ``labels``.

    The Mann-Whitney form: the chance that a random positive scores above a random
    negative, ties counting one half (tied scores share their average rank). Pitfall:
    bf16 logits tie often, and ranking ties in array order would bias the AUC.
    Returns NaN when one class is absent (the AUC is undefined) or a score is not finite
    (a diverged model: NaN has no rank).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0 or not np.isfinite(scores).all():
        return float("nan")
    # 1. Sort; each run of equal scores is a tie group.
    order = np.argsort(scores, kind="stable")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    # 2. A group at sorted positions first..first+count-1 has the 1-based average rank below.
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    # 3. U statistic of the positives, normalised by the number of (positive, negative) pairs.
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def binary_entropy_bits(p: float) -> float:
    """H(p) in bits: the cross-entropy of always predicting the base rate ``p``."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return float(-(p * math.log2(p) + (1 - p) * math.log2(1 - p)))


def mean_bce_nats(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy (nats) of ``logits`` against 0/1 ``labels``, computed stably:
    log(1 + e^x) - y x (no sigmoid, which would round to 0 or 1 at large |x|)."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    with np.errstate(invalid="ignore"):    # a diverged model's NaN/inf logits give NaN, quietly
        return float(np.mean(np.logaddexp(0.0, x) - y * x))


def information_gain_bits(base_rate: float, bce_nats: float) -> float:
    """Bits per token the discriminator knows beyond the base rate: H(base_rate) - BCE / ln 2."""
    return binary_entropy_bits(base_rate) - bce_nats / math.log(2.0)


def effective_rank(gram: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of X, from its Gram matrix X^T X [H, H].

    Roy & Vetterli (2007): between 1 (every row of X on one line) and H (all directions
    used equally). X is not centred: a direction every token shares (the drift a
    collapsing encoder shows) counts against the rank, as it should here.
    The singular values of X are the square roots of the eigenvalues of X^T X.
    NaN for a non-finite X (a diverged model), where the eigensolver would raise.
    """
    if not bool(torch.isfinite(gram).all()):
        return float("nan")
    eigenvalues = torch.linalg.eigvalsh(gram.double()).clamp(min=0.0)    # [H], ascending
    singular = eigenvalues.sqrt()
    if float(singular.sum()) == 0.0:
        return 0.0
    p = singular / singular.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def mean_pair_cosine(unit_sum: torch.Tensor, n: int) -> float:
    """Mean cosine over all pairs of distinct tokens, from the sum of their unit vectors.

    |sum u|^2 = sum_i sum_j u_i.u_j = n (the i = j terms) + the sum over ordered pairs
    i != j: so every pair counts, with no sampling and no seed, in one pass.
    """
    if n < 2:
        return float("nan")
    squared = float(unit_sum.double().pow(2).sum())
    return (squared - n) / (n * (n - 1))


def collapse_warning(metrics: dict[str, float], hidden_size: int) -> str | None:
    """A sentence when the validation metrics say the encoder collapsed, else None."""
    rank, cosine = metrics.get("effective_rank"), metrics.get("token_cosine")
    reasons = []
    if rank is not None and rank < COLLAPSED_RANK_FRACTION * hidden_size:
        reasons.append(f"effective rank {rank:.1f} < {COLLAPSED_RANK_FRACTION} x hidden size {hidden_size}")
    if cosine is not None and cosine > COLLAPSED_COSINE:
        reasons.append(f"mean token cosine {cosine:.2f} > {COLLAPSED_COSINE}")
    if not reasons:
        return None
    return ("the encoder's representations look collapsed (" + "; ".join(reasons) + "): its final hidden states "
            "barely depend on the input, and fine-tuning from it may do worse than from random weights. "
            "Check the validation AUC and information gain; see issue 20 for the levers.")


class ValidationProbe:
    """Accumulates one validation pass, batch by batch, into the learning metrics.

    Per batch it keeps the discriminator's logits and labels at scored positions (for the
    AUC, which needs them all), sums for the generator, and the Gram matrix and unit-vector
    sum of the encoder's hidden states (fixed size [H, H] and [H], whatever the probe's size).
    """

    def __init__(self, hidden_size: int) -> None:
        self.logits: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.generator_loss_sum = 0.0
        self.masked = 0
        self.gram = torch.zeros(hidden_size, hidden_size, dtype=torch.float64)
        self.unit_sum = torch.zeros(hidden_size, dtype=torch.float64)
        self.tokens = 0

    def add(self, out, scored: torch.Tensor) -> None:
        """One batch's ``PretrainOutput``; ``scored`` [B, L]: non-pad, non-special positions."""
        # 1. The generator, pooled over masked positions (not a mean of batch means).
        self.generator_loss_sum += float(out.generator_loss_sum)
        self.masked += int(out.masked_count)
        # 2. The discriminator's scores where a replacement can happen (None for mlm).
        if out.disc_logits is not None:
            self.logits.append(out.disc_logits[scored].float().cpu().numpy())
            self.labels.append(out.is_replaced[scored].cpu().numpy())
        # 3. The encoder's final states at non-pad tokens, in float64 on the host.
        states = out.encoder_hidden[out.active].double().cpu()                # [N, H]
        self.gram += states.T @ states
        self.unit_sum += torch.nn.functional.normalize(states, dim=-1).sum(dim=0)
        self.tokens += states.shape[0]

    def metrics(self) -> dict[str, float]:
        """The learning metrics of the batches added so far."""
        result = {
            "generator_perplexity": math.exp(self.generator_loss_sum / max(1, self.masked)),
            "effective_rank": effective_rank(self.gram),
            "token_cosine": mean_pair_cosine(self.unit_sum, self.tokens),
        }
        if self.logits:
            logits, labels = np.concatenate(self.logits), np.concatenate(self.labels)
            base_rate = float(labels.mean())
            bce = mean_bce_nats(logits, labels)
            result.update(
                replaced_auc=roc_auc(logits, labels),
                replaced_rate=base_rate,
                base_rate_entropy_bits=binary_entropy_bits(base_rate),
                information_gain_bits=information_gain_bits(base_rate, bce),
            )
        return result
