"""The learning metrics' maths (electra/pretraining/learning.py), against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from electra.pretraining.learning import (COLLAPSED_COSINE, COLLAPSED_RANK_FRACTION, ValidationProbe,
                                          binary_entropy_bits, collapse_warning, effective_rank,
                                          information_gain_bits, mean_bce_nats, mean_pair_cosine, roc_auc)


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_scikit_learn_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(500) < 0.15
    scores = rng.normal(size=500) + labels * rng.uniform(0, 2)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    tied = np.round(scores, 1)     # many ties, as bf16 logits have
    assert roc_auc(tied, labels) == pytest.approx(roc_auc_score(labels, tied), abs=1e-12)


def test_roc_auc_edge_cases():
    assert roc_auc([0.1, 0.9], [False, True]) == 1.0
    assert roc_auc([0.9, 0.1], [False, True]) == 0.0
    assert roc_auc(np.zeros(10), np.arange(10) % 2 == 0) == 0.5     # all tied: chance
    assert math.isnan(roc_auc([0.1, 0.2], [False, False]))          # one class: undefined
    assert math.isnan(roc_auc([0.1, float("nan")], [False, True]))  # a diverged model: no ranking


def test_information_gain_is_zero_at_the_prior_and_positive_when_informative():
    rng = np.random.default_rng(0)
    labels = rng.random(20000) < 0.134
    rate = labels.mean()
    prior = np.full(labels.size, math.log(rate / (1 - rate)))        # the base rate's logit everywhere
    assert information_gain_bits(rate, mean_bce_nats(prior, labels)) == pytest.approx(0.0, abs=1e-9)
    # Issue 20's stuck discriminator: loss 0.3937 nats against its 13.4% rate's entropy of 0.3938 nats.
    assert binary_entropy_bits(0.134) * math.log(2) == pytest.approx(0.3938, abs=2e-4)
    informative = np.where(labels, 2.0, -3.0)
    assert information_gain_bits(rate, mean_bce_nats(informative, labels)) > 0.3
    wrong = np.where(labels, -3.0, 2.0)
    assert information_gain_bits(rate, mean_bce_nats(wrong, labels)) < 0


def test_bce_matches_torch_and_is_stable_at_large_logits():
    x = np.array([-200.0, -2.0, 0.0, 3.0, 200.0])
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(y))
    assert mean_bce_nats(x, y) == pytest.approx(float(expected), rel=1e-12)


def test_effective_rank_of_known_spectra():
    eye = torch.eye(8, dtype=torch.float64)
    assert effective_rank(eye.T @ eye) == pytest.approx(8.0)             # all directions equal
    line = torch.randn(100, 1, dtype=torch.float64) @ torch.randn(1, 8, dtype=torch.float64)
    assert effective_rank(line.T @ line) == pytest.approx(1.0, abs=1e-5)  # one direction
    x = torch.randn(300, 16, dtype=torch.float64)
    s = torch.linalg.svdvals(x)
    p = s / s.sum()
    assert effective_rank(x.T @ x) == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-9)
    assert math.isnan(effective_rank(torch.full((4, 4), float("nan"))))   # diverged: no rank, no raise


def test_mean_pair_cosine_equals_the_mean_over_every_pair():
    x = torch.randn(40, 6, dtype=torch.float64) + 0.5
    u = torch.nn.functional.normalize(x, dim=-1)
    cos = u @ u.T
    off_diagonal = cos[~torch.eye(40, dtype=torch.bool)]
    assert mean_pair_cosine(u.sum(0), 40) == pytest.approx(float(off_diagonal.mean()), rel=1e-9)
    same = torch.ones(5, 6, dtype=torch.float64)
    assert mean_pair_cosine(torch.nn.functional.normalize(same, dim=-1).sum(0), 5) == pytest.approx(1.0)


def test_collapse_warning_names_what_tripped():
    assert collapse_warning({"effective_rank": 60.0, "token_cosine": 0.5}, 128) is None
    low = collapse_warning({"effective_rank": COLLAPSED_RANK_FRACTION * 128 - 1, "token_cosine": 0.5}, 128)
    assert low and "effective rank" in low and "cosine" not in low
    alike = collapse_warning({"effective_rank": 60.0, "token_cosine": COLLAPSED_COSINE + 0.01}, 128)
    assert alike and "mean token cosine" in alike
    assert collapse_warning({}, 128) is None     # nothing measured: nothing to say


class _Out:
    """The fields of a PretrainOutput the probe reads."""

    def __init__(self, logits, labels, hidden, active):
        self.disc_logits, self.is_replaced, self.encoder_hidden, self.active = logits, labels, hidden, active
        self.generator_loss_sum = torch.tensor(6.0)
        self.masked_count = torch.tensor(3)


def test_probe_pools_batches_and_scores_only_the_given_positions():
    torch.manual_seed(0)
    probe = ValidationProbe(hidden_size=4)
    all_logits, all_labels = [], []
    for _ in range(2):
        logits = torch.randn(2, 5)
        labels = torch.rand(2, 5) < 0.3
        labels[0, 0] = True
        labels[0, 1] = False    # both classes present
        active = torch.ones(2, 5, dtype=torch.bool)
        active[1, 4] = False    # padding
        scored = active.clone()
        scored[:, 0] = False    # [CLS]: never scored
        probe.add(_Out(logits, labels, torch.randn(2, 5, 4), active), scored)
        all_logits.append(logits[scored])
        all_labels.append(labels[scored])
    got = probe.metrics()
    logits, labels = torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()
    assert got["replaced_auc"] == pytest.approx(roc_auc_score(labels, logits))
    assert got["replaced_rate"] == pytest.approx(labels.mean())
    assert got["generator_perplexity"] == pytest.approx(math.exp(2.0))     # 12 / 6 nats per masked token
    assert probe.tokens == 18 and 1.0 <= got["effective_rank"] <= 4.0
