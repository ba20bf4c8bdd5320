"""Evaluation metrics, their bootstrap and Student-t intervals, and the summary over seeds, in NumPy.

Our own implementations (tests check them against scikit-learn and SciPy on fixed
predictions): accuracy, F1 of the positive class, Matthews correlation, Pearson
and Spearman correlation. Degenerate inputs follow scikit-learn's conventions:
MCC is 0 when a side predicts a single class, F1 is 0 with no positive prediction
or label, and a correlation with a constant vector is 0 (not NaN, so metrics.json
stays valid JSON).

Every interval of the project is made here, one way each:

1. resampling: ``bootstrap_indices`` draws ``resamples`` index arrays of ``n`` units
   with replacement from one seeded generator, in one order (the order is part of the
   result: the same seed gives the same intervals, bit for bit);
2. a statistic of each resample: ``bootstrap_replicates``; a statistic may be
   corpus-level (F1, MCC), because it receives the indices, not the values;
3. the interval: ``percentile_interval``, the quantiles of the replicates that leave
   (1 - c)/2 of them on each side (linear interpolation, as ``np.quantile``).

``bootstrap_ci`` is the three in a row; ``paired_bootstrap_ci`` and ``paired_bootstrap``
resample two aligned samples with the same indices, so that what two models share
(hard examples, an easy template) cancels in their difference. ``t_interval`` is the
Student-t interval of a few values (fine-tuning seeds), where a bootstrap would be too
coarse. ``seed_summary`` reports the median and spread over fine-tuning seeds (never the best).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

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


# --- bootstrap intervals ------------------------------------------------------------

def bootstrap_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """``resamples`` index arrays, each ``n`` draws with replacement from ``range(n)``.

    One ``np.random.default_rng(seed)`` makes them one after another; drawing them one
    row at a time gives the same numbers as one ``(resamples, n)`` matrix would, without
    holding it (``resamples x n`` integers: 80 MB for 10,000 dev examples).
    """
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield rng.integers(0, n, size=n)                                # [n] indices into the sample


def bootstrap_replicates(statistic: Callable[[np.ndarray], object], n: int, resamples: int,
                         seed: int) -> np.ndarray:
    """``statistic(indices)`` on each resample of ``bootstrap_indices(n, resamples, seed)``.

    A statistic returning one number gives ``[resamples]``; one returning a fixed-length
    vector (several statistics of the same resamples) gives ``[resamples, k]``.
    """
    return np.asarray([statistic(idx) for idx in bootstrap_indices(n, resamples, seed)], dtype=np.float64)


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates; NaN bounds when there are none.

    Pitfall: the tails are computed as ``(1 - confidence) / 2`` in floating point
    (0.025000000000000022 for 0.95, not 0.025); every interval uses this one formula,
    so intervals made here agree with each other to the last bit.
    """
    values = np.asarray(replicates, dtype=np.float64)
    if values.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` examples.

    ``statistic`` receives an index array (resampled with replacement) and returns
    the metric on those examples, so any metric, including corpus-level ones such
    as F1 or MCC, can be resampled. NaN bounds for an empty sample.
    """
    if n == 0:
        return (float("nan"), float("nan"))
    return percentile_interval(bootstrap_replicates(statistic, n, resamples, seed), confidence)


def paired_bootstrap_ci(statistic: Callable[[np.ndarray], float], first: np.ndarray, second: np.ndarray,
                        resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic(first - second)`` over aligned units.

    ``first[i]`` and ``second[i]`` are one unit measured twice (a template group's mean
    for two groups of people); each resample takes the same units from both, so the
    statistic (e.g. ``np.mean``, a mean absolute gap) is of the paired differences.
    NaN bounds for an empty sample.
    """
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and aligned, got {first.shape} and {second.shape}")
    return bootstrap_ci(lambda idx: statistic(first[idx] - second[idx]), len(first), resamples, confidence, seed)


def paired_bootstrap(new: Callable[[np.ndarray], float], old: Callable[[np.ndarray], float], n: int,
                     resamples: int, confidence: float, seed: int) -> tuple[float, float, float]:
    """(new - old) on all ``n`` examples and its percentile interval, both scored on each resample.

    ``new`` and ``old`` are two models' metric on the same examples (given as an index
    array); the interval is of the difference of the metrics, for a metric that is no
    mean of per-example values (F1, MCC) as much as for one that is.
    """
    everything = np.arange(n)
    diffs = bootstrap_replicates(lambda idx: new(idx) - old(idx), n, resamples, seed)    # [resamples]
    low, high = percentile_interval(diffs, confidence)
    return float(new(everything) - old(everything)), low, high


def t_interval(values: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """Mean and Student-t interval of ``values`` (NaN bounds with fewer than two)."""
    from scipy import stats   # SciPy's import costs a second; only the compare stage needs it

    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if len(arr) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf((1 + confidence) / 2, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
    return mean, mean - half, mean + half


# --- summaries over seeds ------------------------------------------------------------

def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Median and spread (min, max, quartiles, IQR) of one metric over seeds."""
    array = np.asarray(values, dtype=np.float64)
    q1, median, q3 = np.quantile(array, [0.25, 0.5, 0.75])
    return {"median": float(median), "min": float(array.min()), "max": float(array.max()),
            "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1), "n": int(len(array))}
