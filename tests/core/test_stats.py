"""Our metrics against scikit-learn and SciPy on fixed predictions, plus the edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from electra.core import stats as m

RNG = np.random.default_rng(7)
GOLD = RNG.integers(0, 2, 500)
PRED = np.where(RNG.random(500) < 0.7, GOLD, 1 - GOLD)
GOLD3 = RNG.integers(0, 3, 400)
PRED3 = np.where(RNG.random(400) < 0.6, GOLD3, RNG.integers(0, 3, 400))


def test_classification_metrics_match_sklearn():
    assert m.accuracy(GOLD, PRED) == pytest.approx(accuracy_score(GOLD, PRED))
    assert m.binary_f1(GOLD, PRED) == pytest.approx(f1_score(GOLD, PRED))
    assert m.mcc(GOLD, PRED) == pytest.approx(matthews_corrcoef(GOLD, PRED))
    assert m.mcc(GOLD3, PRED3) == pytest.approx(matthews_corrcoef(GOLD3, PRED3))


def test_mcc_and_f1_degenerate_cases_follow_sklearn():
    one_class = np.zeros_like(GOLD)
    assert m.mcc(GOLD, one_class) == matthews_corrcoef(GOLD, one_class) == 0.0
    assert m.binary_f1(GOLD, one_class) == f1_score(GOLD, one_class, zero_division=0.0) == 0.0
    assert m.mcc(GOLD, GOLD) == pytest.approx(1.0)
    assert m.mcc(GOLD, 1 - GOLD) == pytest.approx(-1.0)


def test_correlations_match_scipy_including_ties():
    x = RNG.normal(size=300)
    y = 0.5 * x + RNG.normal(size=300)
    tied_x, tied_y = np.round(x, 1), np.round(y * 2) / 2  # STS-B gold scores are tied in steps
    assert m.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert m.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert m.spearman(tied_x, tied_y) == pytest.approx(stats.spearmanr(tied_x, tied_y)[0])
    assert m.pearson(x, np.ones_like(x)) == 0.0 and m.spearman(x, np.ones_like(x)) == 0.0


def test_bootstrap_interval_covers_the_estimate_and_narrows_with_n():
    def width(n):
        gold, pred = GOLD[:n], PRED[:n]
        low, high = m.bootstrap_ci(lambda idx: m.accuracy(gold[idx], pred[idx]), n, resamples=500)
        assert low <= m.accuracy(gold, pred) <= high
        return high - low

    assert width(500) < width(50)
    # Binomial normal approximation for n = 500, p ~ 0.7: 95% width ~ 2 * 1.96 * 0.0205 = 0.08.
    assert 0.06 < width(500) < 0.10


def test_bootstrap_is_deterministic_for_a_seed():
    stat = lambda idx: m.mcc(GOLD[idx], PRED[idx])  # noqa: E731
    assert m.bootstrap_ci(stat, len(GOLD), resamples=100, seed=3) == m.bootstrap_ci(stat, len(GOLD), resamples=100, seed=3)


def test_seed_summary_is_median_and_spread_never_the_best():
    summary = m.seed_summary([0.80, 0.70, 0.90, 0.75, 0.85])
    assert summary["median"] == pytest.approx(0.80)
    assert (summary["min"], summary["max"]) == (0.70, 0.90)
    assert summary["iqr"] == pytest.approx(0.85 - 0.75)
    assert summary["n"] == 5
