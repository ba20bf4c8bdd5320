"""Evaluation metrics, their bootstrap intervals and the summary over seeds, in NumPy.

Our own implementations (tests check them against scikit-learn and SciPy on fixed
predictions): accuracy, F1 of the positive class, Matthews correlation, Pearson
and Spearman correlation. Degenerate inputs follow scikit-learn's conventions:
MCC is 0 when a side predicts a single class, F1 is 0 with no positive prediction
or label, and a correlation with a constant vector is 0 (not NaN, so metrics.json
stays valid JSON).

``bootstrap_ci`` resamples dev examples with replacement (percentile interval);
``seed_summary`` reports the median and spread over fine-tuning seeds (never the best).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def accuracy(gold: np.ndarray, pred: np.ndarray) -> float:
    """Share of exact matches."""
    return float(np.mean(np.asarray(gold) == np.asarray(pred)))


def binary_f1(gold: np.ndarray, pred: np.ndarray, positive: int = 1) -> float:
    """F1 of the ``positive`` class (MRPC's paraphrase); 0 when it is never predicted nor gold."""
    gold, pred = np.asarray(gold) == positive, np.asarray(pred) == positive
    tp = float(np.sum(gold & pred))
    denominator = float(np.sum(gold) + np.sum(pred))
    return 2 * tp / denominator if denominator else 0.0


def mcc(gold: np.ndarray, pred: np.ndarray) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004; binary = the phi coefficient)."""
    gold, pred = np.asarray(gold), np.asarray(pred)
    classes = np.union1d(gold, pred)
    g = (gold[:, None] == classes[None, :]).astype(np.float64)          # [n, k] one-hot gold
    p = (pred[:, None] == classes[None, :]).astype(np.float64)          # [n, k] one-hot predicted
    n = float(len(gold))
    correct = float(np.sum(gold == pred))
    t, q = g.sum(axis=0), p.sum(axis=0)                                 # [k] counts per class
    numerator = correct * n - float(t @ q)
    denominator = np.sqrt(n * n - float(q @ q)) * np.sqrt(n * n - float(t @ t))
    return float(numerator / denominator) if denominator else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; 0 when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denominator) if denominator else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values, and the mean rank of the run.
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    run_id = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(values)] - 1
    mean_rank = (first + last) / 2.0 + 1.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[run_id]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return 0.0
    return pearson(_average_ranks(x), _average_ranks(y))


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` examples.

    ``statistic`` receives an index array (resampled with replacement) and returns
    the metric on those examples, so any metric, including corpus-level ones such
    as F1 or MCC, can be resampled.
    """
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Median and spread (min, max, quartiles, IQR) of one metric over seeds."""
    array = np.asarray(values, dtype=np.float64)
    q1, median, q3 = np.quantile(array, [0.25, 0.5, 0.75])
    return {"median": float(median), "min": float(array.min()), "max": float(array.max()),
            "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1), "n": int(len(array))}
