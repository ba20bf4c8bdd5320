"""Our metrics against scikit-learn and SciPy on fixed predictions, plus the edge cases;
the bootstrap's resampling order, its interval and paired forms, and the t interval."""

from __future__ import annotations

import math

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


def test_bootstrap_indices_are_one_seeded_stream_in_one_order():
    rows = list(m.bootstrap_indices(37, 25, seed=4))
    # the same numbers as one (resamples, n) matrix from the same generator: the bias
    # benchmarks drew them that way before, and their intervals must not move
    assert np.array_equal(np.stack(rows), np.random.default_rng(4).integers(0, 37, size=(25, 37)))
    assert all(r.shape == (37,) and r.min() >= 0 and r.max() < 37 for r in rows)


def test_replicates_of_a_vector_statistic_come_from_the_same_resamples():
    values = RNG.normal(size=40)
    both = m.bootstrap_replicates(lambda idx: (values[idx].mean(), values[idx].max()), 40, 30, seed=2)
    means = m.bootstrap_replicates(lambda idx: values[idx].mean(), 40, 30, seed=2)
    assert both.shape == (30, 2) and np.array_equal(both[:, 0], means)


def test_percentile_interval_is_the_quantiles_leaving_the_tails_out():
    replicates = RNG.normal(size=999)
    assert m.percentile_interval(replicates, 0.9) == pytest.approx(tuple(np.quantile(replicates, [0.05, 0.95])))
    # the tail is (1 - confidence) / 2 in floating point (0.04999999999999999 here), as the gate had it
    assert m.percentile_interval(replicates, 0.9) == tuple(np.quantile(replicates, [(1 - 0.9) / 2, 1 - (1 - 0.9) / 2]))
    assert m.percentile_interval(np.full(10, 3.0)) == (3.0, 3.0)
    assert all(math.isnan(b) for b in m.percentile_interval(np.array([])))
    assert all(math.isnan(b) for b in m.bootstrap_ci(lambda idx: 0.0, 0))


def test_paired_bootstrap_ci_resamples_the_differences():
    first, second = RNG.normal(size=60), RNG.normal(size=60)
    paired = m.paired_bootstrap_ci(np.mean, first, second, resamples=300, seed=5)
    assert paired == m.bootstrap_ci(lambda idx: float(np.mean((first - second)[idx])), 60, 300, seed=5)
    assert m.paired_bootstrap_ci(np.mean, first, first, resamples=50) == (0.0, 0.0)
    with pytest.raises(ValueError, match="aligned"):
        m.paired_bootstrap_ci(np.mean, first, second[:-1])


def test_paired_bootstrap_scores_both_models_on_each_resample():
    new = lambda idx: m.mcc(GOLD[idx], PRED[idx])  # noqa: E731
    old = lambda idx: m.mcc(GOLD[idx], np.roll(PRED, 1)[idx])  # noqa: E731
    diff, low, high = m.paired_bootstrap(new, old, len(GOLD), 200, 0.9, 3)
    # the definition, written out: one generator, each resample scored by both, then quantiles
    rng = np.random.default_rng(3)
    diffs = []
    for _ in range(200):
        idx = rng.integers(0, len(GOLD), size=len(GOLD))
        diffs.append(new(idx) - old(idx))
    assert (low, high) == tuple(np.quantile(diffs, [(1 - 0.9) / 2, 1 - (1 - 0.9) / 2]))
    assert diff == new(np.arange(len(GOLD))) - old(np.arange(len(GOLD))) and low < diff < high
    assert m.paired_bootstrap(new, new, 10, 100, 0.95, 0) == (0.0, 0.0, 0.0)


def test_t_interval_matches_the_t_table():
    mean, low, high = m.t_interval([1.0, 2.0, 3.0], 0.95)
    assert mean == 2.0 and high - mean == pytest.approx(4.303 / math.sqrt(3), rel=1e-3)   # t(0.975, 2) = 4.303
    assert mean - low == pytest.approx(high - mean)
    mean, low, high = m.t_interval([0.7], 0.95)
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)


def test_seed_summary_is_median_and_spread_never_the_best():
    summary = m.seed_summary([0.80, 0.70, 0.90, 0.75, 0.85])
    assert summary["median"] == pytest.approx(0.80)
    assert (summary["min"], summary["max"]) == (0.70, 0.90)
    assert summary["iqr"] == pytest.approx(0.85 - 0.75)
    assert summary["n"] == 5
