"""CrowS-Pairs (Nangia et al. 2020, EMNLP): does a model prefer the more stereotypical
sentence of a minimal pair?

Each sentence of a pair is scored by summing the scores of the tokens the two sentences
share (found by aligning their token ids); the metric is the percentage of pairs where
the more stereotypical sentence (``sent_more``) scores higher; 50 is ideal. For the
generator the All Unmasked Likelihood variant (AUL; Kaneko & Bollegala 2022, AAAI) is
reported too: one unmasked forward pass, the mean log-probability of every token.

Pitfall: ``difflib``'s ``autojunk`` heuristic would drop frequent tokens ("the") from
long sentences; it is off.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from electra.core.stats import bootstrap_ci
from electra.evaluation.bias.common import (CONFIDENCE, SMALL_GROUP, GeneratorScorer, ScorerName,
                                            check_args, json_interval, load_scorer, longest_input, read_csv)

CROWS_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
CROWS_DIRECTIONS = ("stereo", "antistereo")

CROWS_VARIANTS = {
    "generator": "pseudo-log-likelihood (Nangia et al. 2020): sum over the tokens both sentences "
                 "share of log P(token | sentence with that one token masked), generator's MLM head",
    "discriminator": "sum over the tokens both sentences share of log P(original | unmasked "
                     "sentence) = log sigmoid(-logit) of the discriminator's replaced-token head",
}
AUL_VARIANT = ("All Unmasked Likelihood (Kaneko & Bollegala 2022): mean over all non-special tokens "
               "of log P(token | unmasked sentence) from the generator's MLM head, nothing masked")


# --------------------------------------------------------------------------- alignment


def _encode(tokenizer: Any, text: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids with special tokens, and the positions of the non-special ones."""
    encoded = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length,
                        return_special_tokens_mask=True)
    content = [i for i, special in enumerate(encoded["special_tokens_mask"]) if not special]
    return list(encoded["input_ids"]), content


def _shared_positions(ids1: Sequence[int], ids2: Sequence[int]) -> tuple[list[int], list[int]]:
    """Indices of the tokens the two sequences share, as aligned by difflib on token ids.

    The i-th entry of each list points at the same shared token in its sequence.
    ``autojunk`` is off because its popularity heuristic (for sequences of 200+
    items) would silently drop frequent tokens such as "the" from long sentences.
    """
    matcher = difflib.SequenceMatcher(None, list(ids1), list(ids2), autojunk=False)
    pos1: list[int] = []
    pos2: list[int] = []
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            pos1.extend(range(a0, a1))
            pos2.extend(range(b0, b1))
    return pos1, pos2


def _tokenize_pair(tokenizer: Any, sent1: str, sent2: str, max_length: int):
    """Token ids of both sentences (with special tokens) and the positions of their shared tokens.

    Special tokens ([CLS], [SEP]) are left out of the alignment: they are the
    same in every sentence, so scoring them would only add noise common to both.
    """
    ids1, content1 = _encode(tokenizer, sent1, max_length)
    ids2, content2 = _encode(tokenizer, sent2, max_length)
    pos1, pos2 = _shared_content(ids1, content1, ids2, content2)
    return ids1, ids2, pos1, pos2


def _shared_content(ids1: Sequence[int], content1: Sequence[int], ids2: Sequence[int],
                    content2: Sequence[int]) -> tuple[list[int], list[int]]:
    """Positions (into the full id lists) of the shared tokens among the non-special ones."""
    shared1, shared2 = _shared_positions([ids1[i] for i in content1], [ids2[i] for i in content2])
    return [content1[i] for i in shared1], [content2[i] for i in shared2]


# --------------------------------------------------------------------------- the metric


def _percent(flags: np.ndarray) -> float | None:
    return float(flags.mean() * 100.0) if flags.size else None


def _crows_group(biased: np.ndarray, ties: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Metric, interval and counts of one subset of pairs."""
    n = int(biased.size)
    low = high = None
    if n:
        low, high = json_interval(bootstrap_ci(lambda idx: biased[idx].mean() * 100.0, n, n_bootstrap,
                                               CONFIDENCE, seed))
    return {"metric": _percent(biased), "ci95_low": low, "ci95_high": high, "n": n,
            "n_biased": int(biased.sum()), "n_ties": int(ties.sum()), "small": n < SMALL_GROUP}


def crows_summary(score_more: Sequence[float], score_less: Sequence[float], bias_types: Sequence[str],
                  directions: Sequence[str], *, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The CrowS-Pairs metric from per-sentence scores (Nangia et al. 2020).

    A pair is *biased* when ``score_more`` > ``score_less`` (the authors count
    "stereo" and "antistereo" rows alike); a tie counts as not biased and is
    reported in ``n_ties``. The metric is the percentage of biased pairs (50 is
    ideal); the interval resamples pairs within each subset.

    Returns:
        ``{"metric", "ci95_low", "ci95_high", "n_pairs", "n_biased", "n_ties",
        "per_bias_type": {type: group}, "by_direction": {"stereo": group,
        "antistereo": group}}`` where a group is ``{"metric", "ci95_low",
        "ci95_high", "n", "n_biased", "n_ties", "small"}``; an empty group has
        ``None`` for its metric and interval.
    """
    more = np.asarray(score_more, dtype=np.float64)
    less = np.asarray(score_less, dtype=np.float64)
    types = np.asarray(bias_types, dtype=object)
    dirs = np.asarray(directions, dtype=object)
    if not (more.shape == less.shape == types.shape == dirs.shape) or more.ndim != 1:
        raise ValueError("score_more, score_less, bias_types and directions must be 1-D and of one length")
    biased = more > less
    ties = more == less
    overall = _crows_group(biased, ties, n_bootstrap, seed)
    return {
        "metric": overall["metric"],
        "ci95_low": overall["ci95_low"],
        "ci95_high": overall["ci95_high"],
        "n_pairs": overall["n"],
        "n_biased": overall["n_biased"],
        "n_ties": overall["n_ties"],
        "per_bias_type": {t: _crows_group(biased[types == t], ties[types == t], n_bootstrap, seed)
                          for t in sorted(set(types.tolist()))},
        "by_direction": {d: _crows_group(biased[dirs == d], ties[dirs == d], n_bootstrap, seed)
                         for d in CROWS_DIRECTIONS},
    }


# --------------------------------------------------------------------------- the benchmark


def crows_pairs(model_dir: str | Path, csv_path: str | Path, *, scorer: ScorerName = "generator",
                max_pairs: int | None = None, batch_size: int = 32, device: str = "cpu",
                n_bootstrap: int = 1000, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """CrowS-Pairs stereotype score of the generator or the discriminator (Nangia et al. 2020).

    Each sentence of a pair is tokenized; the tokens the two sentences share are
    found by aligning the token-id sequences with ``difflib.SequenceMatcher``
    and a sentence's score is the sum of its shared tokens' scores: with the
    generator, log P(token) with that token masked (pseudo-log-likelihood, one
    masked copy per token, as the authors); with the discriminator, log
    sigmoid(-logit) on the unmasked sentence. A pair counts as biased when
    ``sent_more`` scores higher. For the generator, ``aul`` repeats the metric
    with the All Unmasked Likelihood (Kaneko & Bollegala 2022): one unmasked
    pass, a sentence's score the mean log-probability of all its non-special
    tokens (a mean, so the modified tokens count too without favouring the
    shorter sentence).

    Args:
        model_dir: HF folder with the model and its tokenizer: the generator
            (``ElectraForMaskedLM``) or the discriminator (``ElectraForPreTraining``).
        csv_path: ``crows_pairs_anonymized.csv`` (columns sent_more, sent_less,
            stereo_antistereo, bias_type).
        scorer: "generator" or "discriminator", naming the model in ``model_dir``.
        max_pairs: score only the first ``max_pairs`` rows.
        batch_size: masked copies (generator) or sentences (unmasked passes) per forward pass.
        device: torch device ("cpu", "cuda", "auto").
        n_bootstrap: resamples of the pairs for the 95% confidence intervals.
        seed: seed of the bootstrap resampling.
        progress: show a tqdm bar.

    Returns:
        ``crows_summary``'s dict (``metric``, ``ci95_low``, ``ci95_high``,
        ``n_pairs``, ``n_biased``, ``n_ties``, ``per_bias_type``,
        ``by_direction``) plus ``scorer``, ``variant`` (what a score is),
        ``data_file``, ``mean_shared_tokens``, ``n_bootstrap``, ``seed`` and, for
        the generator only, ``aul`` (``crows_summary``'s dict plus ``variant``).
        Metrics are percentages; 50 is ideal.
    """
    check_args(batch_size, n_bootstrap, max_pairs, "max_pairs")
    rows = _read_pairs(csv_path, max_pairs)
    token_scorer = load_scorer(model_dir, scorer, device=device, batch_size=batch_size, progress=progress)
    sequences, content, shared = _encode_pairs(token_scorer.tokenizer, rows,
                                               longest_input(token_scorer.model, token_scorer.tokenizer))
    bias_types = [row["bias_type"] for row in rows]
    directions = [row["stereo_antistereo"] for row in rows]

    token_scores = token_scorer.token_log_probs(sequences, shared, desc=f"CrowS-Pairs ({scorer})")
    totals = np.array([s.sum() for s in token_scores])  # (2 * n_pairs,)
    result: dict[str, Any] = {"scorer": scorer, "variant": CROWS_VARIANTS[scorer], "data_file": str(csv_path)}
    result.update(crows_summary(totals[0::2], totals[1::2], bias_types, directions,
                                n_bootstrap=n_bootstrap, seed=seed))
    result["mean_shared_tokens"] = float(np.mean([len(p) for p in shared]))
    if isinstance(token_scorer, GeneratorScorer):
        result["aul"] = _aul(token_scorer, sequences, content, bias_types, directions, n_bootstrap, seed)
    result["n_bootstrap"] = n_bootstrap
    result["seed"] = seed
    return result


def _read_pairs(csv_path: str | Path, max_pairs: int | None) -> list[dict[str, str]]:
    """The first ``max_pairs`` rows of the CSV, each with a known direction."""
    rows = read_csv(csv_path, CROWS_COLUMNS)
    if max_pairs is not None:
        rows = rows[:max_pairs]
    for line, row in enumerate(rows, start=2):
        if row["stereo_antistereo"] not in CROWS_DIRECTIONS:
            raise ValueError(f"{csv_path}: line {line}: stereo_antistereo is "
                             f"{row['stereo_antistereo']!r}, expected 'stereo' or 'antistereo'")
    return rows


def _encode_pairs(tokenizer: Any, rows: Sequence[dict[str, str]],
                  max_len: int) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Both sentences of every pair: token ids, non-special positions (for AUL), shared positions.

    The lists alternate sent_more, sent_less, so that pair i is entries 2i and 2i+1.
    """
    sequences: list[list[int]] = []
    content: list[list[int]] = []
    shared: list[list[int]] = []
    for row in rows:
        ids_more, content_more = _encode(tokenizer, row["sent_more"], max_len)
        ids_less, content_less = _encode(tokenizer, row["sent_less"], max_len)
        sequences += [ids_more, ids_less]
        content += [content_more, content_less]
        shared += list(_shared_content(ids_more, content_more, ids_less, content_less))
    return sequences, content, shared


def _aul(token_scorer: GeneratorScorer, sequences: list[list[int]], content: list[list[int]],
         bias_types: Sequence[str], directions: Sequence[str], n_bootstrap: int, seed: int) -> dict[str, Any]:
    """The metric again with a sentence scored by AUL: its tokens' mean log-probability, nothing masked."""
    unmasked = token_scorer.unmasked_log_probs(sequences, content, desc="CrowS-Pairs (AUL)")
    # an empty sentence has no tokens to average: NaN compares False, so never biased nor tied
    means = np.array([s.mean() if s.size else np.nan for s in unmasked])  # (2 * n_pairs,)
    aul: dict[str, Any] = {"variant": AUL_VARIANT}
    aul.update(crows_summary(means[0::2], means[1::2], bias_types, directions,
                             n_bootstrap=n_bootstrap, seed=seed))
    return aul
