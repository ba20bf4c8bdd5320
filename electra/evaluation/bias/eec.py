"""The Equity Evaluation Corpus (Kiritchenko & Mohammad 2018): does a sentiment classifier
treat sentences differently when only the person in them changes?

Fixed templates are filled with female/male and African-American/European person
words; the positive-class probability of a binary classifier (the fine-tuned SST-2
model) is compared between the two sides of each dimension, template group by template
group, with a bootstrap interval over the groups and paired tests.

Pitfall: the group (Template, Emotion word) is the unit within which the two sides are
matched; subsampling and resampling take whole groups, never single sentences.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from electra.core.runtime import autocast, resolve_device, resolve_precision
from electra.core.stats import paired_bootstrap_ci
import electra.evaluation.bias.common as common
from electra.evaluation.bias.common import (CONFIDENCE, by_length_batches, check_args, finite_or_none,
                                            json_interval, longest_input, pad, progress_bar, read_csv)

EEC_COLUMNS = ("Sentence", "Template", "Person", "Gender", "Race", "Emotion", "Emotion word")
# (result key, CSV column, first side, second side): gaps are first minus second
EEC_DIMENSIONS = (
    ("gender", "Gender", "female", "male"),
    ("race", "Race", "African-American", "European"),
)
# neutral EEC templates carry no emotion; they still form groups of their own
NO_EMOTION = "none"


def _eec_groups(rows: Sequence[dict[str, str]]) -> dict[tuple[str, str], list[int]]:
    """Row indices per (Template, Emotion word): the sentences that differ only in the person."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row["Template"], row["Emotion word"])].append(i)
    return dict(groups)


def _emotion(row: dict[str, str]) -> str:
    return row["Emotion"] or NO_EMOTION


def _subsample_groups(rows: Sequence[dict[str, str]], groups: dict[tuple[str, str], list[int]],
                      max_sentences: int, seed: int = 0) -> dict[tuple[str, str], list[int]]:
    """Whole groups, at most ``max_sentences`` sentences, spread over the emotions.

    Groups are shuffled (seeded) within each emotion and then taken round-robin
    across emotions, so a small budget still sees every emotion. At least one
    group is kept even when it alone exceeds the budget, because a partial group
    would break the female/male and race matching.
    """
    rng = np.random.default_rng(seed)
    by_emotion: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key in sorted(groups):
        by_emotion[_emotion(rows[groups[key][0]])].append(key)
    queues = []
    for emotion in sorted(by_emotion):
        keys = by_emotion[emotion]
        queues.append([keys[i] for i in rng.permutation(len(keys))])
    order = [q[i] for i in range(max(len(q) for q in queues)) for q in queues if i < len(q)]
    chosen: dict[tuple[str, str], list[int]] = {}
    used = 0
    for key in order:
        size = len(groups[key])
        if chosen and used + size > max_sentences:
            break
        chosen[key] = groups[key]
        used += size
    return chosen


def _positive_probabilities(model: Any, tokenizer: Any, sentences: Sequence[str], batch_size: int,
                            device: torch.device, progress: bool) -> np.ndarray:
    """P(label 1 = positive) per sentence, via log_softmax in fp32."""
    encoded = tokenizer(list(sentences), add_special_tokens=True, truncation=True,
                        max_length=longest_input(model, tokenizer))
    ids = encoded["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros(len(ids), dtype=np.float64)
    batches = by_length_batches(ids, batch_size)          # similar lengths, little padding
    # bf16 autocast where it measures faster (CUDA; a CPU with fast bf16), the softmax in fp32.
    with torch.no_grad(), autocast(device, resolve_precision("auto", device)), \
            progress_bar(len(batches), "EEC", progress) as bar:
        for chunk in batches:
            input_ids, attention = pad([ids[i] for i in chunk], pad_id)           # (batch, width) each
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            log_p = torch.log_softmax(logits.float(), dim=-1)[:, 1]               # (batch,)
            out[chunk] = log_p.exp().double().cpu().numpy()
            bar.update(1)
    return out


def _paired_tests(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """Wilcoxon signed-rank and paired t-test over matched group means (None where undefined)."""
    from scipy import stats

    result: dict[str, Any] = {"statistic": None, "p_value": None,
                              "ttest_statistic": None, "ttest_p_value": None}
    diffs = first - second
    if diffs.size < 2:
        return result
    if np.any(diffs != 0):
        # wilcoxon rejects an all-zero difference vector; then there is nothing to test
        try:
            w = stats.wilcoxon(first, second)
            result["statistic"] = finite_or_none(w.statistic)
            result["p_value"] = finite_or_none(w.pvalue)
        except ValueError:
            pass
    # the t statistic divides by the spread of the gaps: with (numerically) constant
    # gaps it is undefined, and scipy would return noise from catastrophic cancellation
    if np.ptp(diffs) > 1e-12 * max(1.0, float(np.abs(diffs).max())):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t = stats.ttest_rel(first, second)
        result["ttest_statistic"] = finite_or_none(t.statistic)
        result["ttest_p_value"] = finite_or_none(t.pvalue)
    return result


def _eec_dimension(rows: Sequence[dict[str, str]], groups: dict[tuple[str, str], list[int]],
                   probs: np.ndarray, column: str, first: str, second: str,
                   n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Gap statistics of one dimension (first side minus second) over the matched groups.

    The intervals resample whole groups: the group is the unit within which the
    two sides are matched, so resampling sentences would break the pairing.
    """
    means_first, means_second, emotions = [], [], []
    n_first = n_second = 0
    for key in sorted(groups):
        idx = groups[key]
        a = [probs[i] for i in idx if rows[i][column] == first]
        b = [probs[i] for i in idx if rows[i][column] == second]
        if not a or not b:
            continue  # unmatched group: one side has no sentence here
        means_first.append(float(np.mean(a)))
        means_second.append(float(np.mean(b)))
        emotions.append(_emotion(rows[idx[0]]))
        n_first += len(a)
        n_second += len(b)
    mf, ms = np.array(means_first), np.array(means_second)
    gaps = mf - ms
    per_emotion = {
        emotion: float(gaps[[e == emotion for e in emotions]].mean()) for emotion in sorted(set(emotions))
    }
    tests = _paired_tests(mf, ms)
    # the same resamples of groups for both (one seed); None bounds without a matched group
    gap_ci = json_interval(paired_bootstrap_ci(np.mean, mf, ms, n_bootstrap, CONFIDENCE, seed))
    abs_ci = json_interval(paired_bootstrap_ci(lambda d: np.abs(d).mean(), mf, ms, n_bootstrap, CONFIDENCE, seed))
    return {
        "groups": [first, second],
        "mean_gap": float(gaps.mean()) if gaps.size else None,
        "mean_gap_ci95_low": gap_ci[0],
        "mean_gap_ci95_high": gap_ci[1],
        "mean_abs_gap": float(np.abs(gaps).mean()) if gaps.size else None,
        "mean_abs_gap_ci95_low": abs_ci[0],
        "mean_abs_gap_ci95_high": abs_ci[1],
        "max_abs_gap": float(np.abs(gaps).max()) if gaps.size else None,
        "mean_p_positive": {first: float(mf.mean()) if mf.size else None,
                            second: float(ms.mean()) if ms.size else None},
        "test": "wilcoxon",
        "statistic": tests["statistic"],
        "p_value": tests["p_value"],
        "ttest_statistic": tests["ttest_statistic"],
        "ttest_p_value": tests["ttest_p_value"],
        "n_groups": int(gaps.size),
        "n_sentences": {first: n_first, second: n_second},
        "per_emotion": per_emotion,
    }


def eec(model_dir: str | Path, csv_path: str | Path, max_sentences: int | None = None,
        batch_size: int = 64, device: str = "cpu", progress: bool = True, *,
        n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Gender and race gaps of a binary sentiment classifier on the Equity Evaluation Corpus.

    Sentences are grouped by (Template, Emotion word): within a group they differ
    only in the person. For each group the mean P(positive) of the female
    sentences is compared with that of the male ones (names and noun phrases),
    and the mean over African-American names with that over European names
    (rows with a Race). P(positive) = softmax(logits)[:, 1] (label 1 = positive,
    as in SST-2), computed in log space in fp32.

    Args:
        model_dir: folder with an HF sequence classifier (2 labels) and its tokenizer.
        csv_path: ``Equity-Evaluation-Corpus.csv``.
        max_sentences: keep at most this many sentences, by whole groups (seeded,
            spread over the emotions) so that every kept pair stays matched; at
            least one group is kept.
        batch_size: sentences per forward pass.
        device: torch device ("cpu", "cuda", "auto").
        progress: show a tqdm bar.
        n_bootstrap: resamples of the matched groups for the 95% intervals.
        seed: seed of the bootstrap resampling.

    Returns:
        ``{"gender": {...}, "race": {...}, "n_sentences", "n_groups", "n_bootstrap",
        "seed"}`` where each dimension has ``mean_gap`` (female - male;
        African-American - European) and ``mean_abs_gap``, each with a 95%
        bootstrap interval over the groups (``mean_gap_ci95_low``/``_high``,
        ``mean_abs_gap_ci95_low``/``_high``), ``max_abs_gap``, ``mean_p_positive``, ``per_emotion``
        (emotion -> mean signed gap; "none" for the neutral templates), ``n_groups``,
        ``n_sentences``, and a paired Wilcoxon signed-rank test (``statistic``,
        ``p_value``) plus a paired t-test (``ttest_statistic``, ``ttest_p_value``)
        over the matched group means; undefined statistics are ``None``.
    """
    check_args(batch_size, n_bootstrap, max_sentences, "max_sentences")
    rows = read_csv(csv_path, EEC_COLUMNS)
    groups = _eec_groups(rows)
    if max_sentences is not None:
        groups = _subsample_groups(rows, groups, max_sentences)
    kept = sorted(i for idx in groups.values() for i in idx)

    dev = resolve_device(device)
    # through the module, so that a test can substitute the model
    model, tokenizer = common.load_classifier(model_dir, dev)
    num_labels = getattr(getattr(model, "config", None), "num_labels", 2)
    if num_labels != 2:
        raise ValueError(f"{model_dir}: classifier has {num_labels} labels; EEC needs a binary "
                         "(negative=0, positive=1) sentiment model")

    probs = np.full(len(rows), np.nan)
    probs[kept] = _positive_probabilities(model, tokenizer, [rows[i]["Sentence"] for i in kept],
                                          batch_size, dev, progress)
    result: dict[str, Any] = {"n_sentences": len(kept), "n_groups": len(groups),
                              "n_bootstrap": n_bootstrap, "seed": seed}
    for key, column, first, second in EEC_DIMENSIONS:
        result[key] = _eec_dimension(rows, groups, probs, column, first, second, n_bootstrap, seed)
    return result
