"""Bias benchmarks: CrowS-Pairs on the generator, the Equity Evaluation Corpus on a classifier.

* **CrowS-Pairs** (Nangia et al. 2020) scores each sentence of a minimal pair by
  the pseudo-log-likelihood of the tokens the two sentences share, masking one
  shared token at a time. The metric is the percentage of pairs where the more
  stereotypical sentence (``sent_more``) scores higher; an unbiased model sits
  at 50.
* **EEC** (Kiritchenko & Mohammad 2018) fills fixed templates with female/male
  and African-American/European person words and compares the positive-class
  probability of a binary sentiment classifier between the two sides of each
  dimension, template by template.

Both return plain JSON-ready dicts (floats, ints, strings, ``None``) so that the
evaluate stage can write them straight to ``metrics.json``.
"""

from __future__ import annotations

import csv
import difflib
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from electra.runtime import resolve_device

CROWS_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
EEC_COLUMNS = ("Sentence", "Template", "Person", "Gender", "Race", "Emotion", "Emotion word")

# (result key, CSV column, first side, second side): gaps are first minus second
EEC_DIMENSIONS = (
    ("gender", "Gender", "female", "male"),
    ("race", "Race", "African-American", "European"),
)
# neutral EEC templates carry no emotion; they still form groups of their own
NO_EMOTION = "none"


# --------------------------------------------------------------------------- shared helpers


def _read_csv(path: str | Path, required: Sequence[str]) -> list[dict[str, str]]:
    """All rows of a CSV as dicts, failing with the file's name if it or a column is missing."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: CSV file not found (run `dvc pull` for data/bias)")
    with open(p, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        missing = [c for c in required if c not in fields]
        if missing:
            raise ValueError(f"{p}: missing column(s) {missing}; the header has {fields}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{p}: no data rows")
    return rows


def _max_length(model: Any, tokenizer: Any) -> int:
    """Longest input both the model's position table and the tokenizer accept."""
    limits = [512]
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "max_position_embeddings", None):
        limits = [int(config.max_position_embeddings)]
    tok_max = getattr(tokenizer, "model_max_length", None)
    # fast tokenizers built without a limit report a huge sentinel value; ignore it
    if tok_max and tok_max < 1_000_000:
        limits.append(int(tok_max))
    return min(limits)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="batch")


def _prepare(model: Any, device: torch.device) -> Any:
    # fp32 and eval mode: scores must not depend on dropout or on a half-precision checkpoint
    return model.to(device).float().eval()


def _load_masked_lm(generator_dir: str | Path, device: torch.device):
    """The generator and its tokenizer (kept separate so tests can substitute a model)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(generator_dir))
    model = AutoModelForMaskedLM.from_pretrained(str(generator_dir))
    return _prepare(model, device), tokenizer


def _load_classifier(model_dir: str | Path, device: torch.device):
    """The fine-tuned SST-2 classifier and its tokenizer (kept separate so tests can substitute)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    return _prepare(model, device), tokenizer


def _finite_or_none(value: Any) -> float | None:
    """A float for JSON, or None where a statistic is undefined (NaN is not valid JSON)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- CrowS-Pairs


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
    encoded = [
        tokenizer(s, add_special_tokens=True, truncation=True, max_length=max_length,
                  return_special_tokens_mask=True)
        for s in (sent1, sent2)
    ]
    ids = [list(e["input_ids"]) for e in encoded]
    content = [[i for i, special in enumerate(e["special_tokens_mask"]) if not special] for e in encoded]
    shared1, shared2 = _shared_positions([ids[0][i] for i in content[0]], [ids[1][i] for i in content[1]])
    pos1 = [content[0][i] for i in shared1]
    pos2 = [content[1][i] for i in shared2]
    return ids[0], ids[1], pos1, pos2


def _masked_position_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            positions: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits at one masked position per row, shape (batch, vocab).

    For ELECTRA's generator the LM head is applied only to the masked positions:
    the full (batch, length, 30522) logit tensor would cost far more than the
    encoder itself for a small generator. The head is position-wise, so the
    result is the same as slicing the full output. Other masked LMs take the
    generic route.
    """
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    if all(hasattr(model, name) for name in ("electra", "generator_predictions", "generator_lm_head")):
        hidden = model.electra(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)[0]
        picked = hidden[rows, positions]
        return model.generator_lm_head(model.generator_predictions(picked))
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[rows, positions]


def _pseudo_log_likelihoods(model: Any, sequences: Sequence[Sequence[int]],
                            positions: Sequence[Sequence[int]], mask_id: int, pad_id: int,
                            batch_size: int = 64, device: str | torch.device = "cpu",
                            progress: bool = False, desc: str = "masked LM") -> list[float]:
    """Sum over ``positions[k]`` of log P(original token | that token masked) for each sequence.

    Every (sequence, position) pair becomes one masked copy. Copies are sorted by
    sequence length so that a batch holds copies of the same or similar-length
    sentences (all copies of a sentence end up side by side), padded on the
    right with an attention mask, and run ``batch_size`` at a time.
    """
    device = torch.device(device)
    jobs = [(k, p) for k in range(len(sequences)) for p in positions[k]]
    jobs.sort(key=lambda job: len(sequences[job[0]]))  # stable: a sentence's copies stay in order
    totals = torch.zeros(len(sequences), dtype=torch.float64)
    n_batches = math.ceil(len(jobs) / batch_size)
    with torch.no_grad(), _progress(n_batches, desc, progress) as bar:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            width = max(len(sequences[k]) for k, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (k, _) in enumerate(chunk):
                seq = torch.as_tensor(list(sequences[k]), dtype=torch.long)
                input_ids[row, : len(seq)] = seq
                attention[row, : len(seq)] = 1
            pos = torch.tensor([p for _, p in chunk], dtype=torch.long)
            rows = torch.arange(len(chunk))
            targets = input_ids[rows, pos].clone()
            input_ids[rows, pos] = mask_id
            logits = _masked_position_logits(model, input_ids.to(device), attention.to(device), pos.to(device))
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            picked = log_probs.gather(1, targets.to(device).unsqueeze(1)).squeeze(1)
            totals.index_add_(0, torch.tensor([k for k, _ in chunk]), picked.double().cpu())
            bar.update(1)
    return totals.tolist()


def _percent(flags: np.ndarray) -> float | None:
    return float(flags.mean() * 100.0) if flags.size else None


def crows_pairs(generator_dir: str | Path, csv_path: str | Path, max_pairs: int | None = None,
                batch_size: int = 64, device: str = "cpu", progress: bool = True,
                n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """CrowS-Pairs stereotype score of a masked LM, as defined by Nangia et al. (2020).

    Each sentence of a pair is tokenized; the tokens the two sentences share are
    found by aligning the token-id sequences with ``difflib.SequenceMatcher``;
    each shared token is masked in turn and log P(original token) is summed over
    them (pseudo-log-likelihood, PLL). A pair counts as *biased* when
    PLL(``sent_more``) > PLL(``sent_less``) -- for "stereo" and "antistereo" rows
    alike, as in the authors' code. Ties count as not biased (the authors' "neutral").

    Args:
        generator_dir: folder with an HF masked LM (e.g. ``ElectraForMaskedLM``) and its tokenizer.
        csv_path: ``crows_pairs_anonymized.csv`` (columns sent_more, sent_less,
            stereo_antistereo, bias_type).
        max_pairs: score only the first ``max_pairs`` rows.
        batch_size: masked copies per forward pass.
        device: torch device ("cpu", "cuda", "auto").
        progress: show a tqdm bar.
        n_bootstrap: resamples of the pairs for the 95% confidence interval.
        seed: seed of the bootstrap resampling.

    Returns:
        ``{"metric", "ci95_low", "ci95_high", "n_pairs", "n_biased", "n_ties",
        "mean_shared_tokens", "stereo": {"metric", "n_pairs"}, "antistereo": {...},
        "per_bias_type": {bias_type: {"metric", "n_pairs"}}, "n_bootstrap", "seed"}``;
        metrics are percentages, 50 is ideal.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    rows = _read_csv(csv_path, CROWS_COLUMNS)
    if max_pairs is not None:
        if max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1 or None, got {max_pairs}")
        rows = rows[:max_pairs]
    for line, row in enumerate(rows, start=2):
        if row["stereo_antistereo"] not in ("stereo", "antistereo"):
            raise ValueError(f"{csv_path}: line {line}: stereo_antistereo is "
                             f"{row['stereo_antistereo']!r}, expected 'stereo' or 'antistereo'")

    dev = resolve_device(device)
    model, tokenizer = _load_masked_lm(generator_dir, dev)
    if tokenizer.mask_token_id is None:
        raise ValueError(f"{generator_dir}: tokenizer has no mask token; CrowS-Pairs needs a masked LM")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    max_len = _max_length(model, tokenizer)

    # sequences alternate sent_more, sent_less so that pair i is entries 2i and 2i+1
    sequences: list[list[int]] = []
    positions: list[list[int]] = []
    for row in rows:
        ids_more, ids_less, pos_more, pos_less = _tokenize_pair(
            tokenizer, row["sent_more"], row["sent_less"], max_len)
        sequences += [ids_more, ids_less]
        positions += [pos_more, pos_less]

    scores = _pseudo_log_likelihoods(model, sequences, positions, tokenizer.mask_token_id, pad_id,
                                     batch_size=batch_size, device=dev, progress=progress,
                                     desc="CrowS-Pairs")
    pll_more = np.array(scores[0::2])
    pll_less = np.array(scores[1::2])
    biased = pll_more > pll_less
    ties = pll_more == pll_less
    n = len(rows)

    # percentile bootstrap over pairs for the overall score
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_bootstrap, n))
    boot = biased[draws].mean(axis=1) * 100.0
    ci_low, ci_high = np.percentile(boot, [2.5, 97.5])

    direction = np.array([row["stereo_antistereo"] for row in rows])
    bias_types = np.array([row["bias_type"] for row in rows])

    def split(mask: np.ndarray) -> dict[str, Any]:
        return {"metric": _percent(biased[mask]), "n_pairs": int(mask.sum())}

    return {
        "metric": _percent(biased),
        "ci95_low": _finite_or_none(ci_low),
        "ci95_high": _finite_or_none(ci_high),
        "n_pairs": n,
        "n_biased": int(biased.sum()),
        "n_ties": int(ties.sum()),
        "mean_shared_tokens": float(np.mean([len(p) for p in positions])),
        "stereo": split(direction == "stereo"),
        "antistereo": split(direction == "antistereo"),
        "per_bias_type": {bt: split(bias_types == bt) for bt in sorted(set(bias_types.tolist()))},
        "n_bootstrap": n_bootstrap,
        "seed": seed,
    }


# --------------------------------------------------------------------------- EEC


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
    max_len = _max_length(model, tokenizer)
    encoded = tokenizer(list(sentences), add_special_tokens=True, truncation=True, max_length=max_len)
    ids = encoded["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths, little padding
    out = np.zeros(len(ids), dtype=np.float64)
    n_batches = math.ceil(len(ids) / batch_size)
    with torch.no_grad(), _progress(n_batches, "EEC", progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = torch.as_tensor(ids[i], dtype=torch.long)
                attention[row, : len(ids[i])] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            log_p = torch.log_softmax(logits.float(), dim=-1)[:, 1]
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
            result["statistic"] = _finite_or_none(w.statistic)
            result["p_value"] = _finite_or_none(w.pvalue)
        except ValueError:
            pass
    # the t statistic divides by the spread of the gaps: with (numerically) constant
    # gaps it is undefined, and scipy would return noise from catastrophic cancellation
    if np.ptp(diffs) > 1e-12 * max(1.0, float(np.abs(diffs).max())):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t = stats.ttest_rel(first, second)
        result["ttest_statistic"] = _finite_or_none(t.statistic)
        result["ttest_p_value"] = _finite_or_none(t.pvalue)
    return result


def _eec_dimension(rows: Sequence[dict[str, str]], groups: dict[tuple[str, str], list[int]],
                   probs: np.ndarray, column: str, first: str, second: str) -> dict[str, Any]:
    """Gap statistics of one dimension (first side minus second) over the matched groups."""
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
    return {
        "groups": [first, second],
        "mean_gap": float(gaps.mean()) if gaps.size else None,
        "mean_abs_gap": float(np.abs(gaps).mean()) if gaps.size else None,
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
        batch_size: int = 64, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
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

    Returns:
        ``{"gender": {...}, "race": {...}, "n_sentences", "n_groups"}`` where each
        dimension has ``mean_gap`` (female - male; African-American - European),
        ``mean_abs_gap``, ``max_abs_gap``, ``mean_p_positive``, ``per_emotion``
        (emotion -> mean signed gap; "none" for the neutral templates), ``n_groups``,
        ``n_sentences``, and a paired Wilcoxon signed-rank test (``statistic``,
        ``p_value``) plus a paired t-test (``ttest_statistic``, ``ttest_p_value``)
        over the matched group means; undefined statistics are ``None``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = _read_csv(csv_path, EEC_COLUMNS)
    groups = _eec_groups(rows)
    if max_sentences is not None:
        if max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1 or None, got {max_sentences}")
        groups = _subsample_groups(rows, groups, max_sentences)
    kept = sorted(i for idx in groups.values() for i in idx)

    dev = resolve_device(device)
    model, tokenizer = _load_classifier(model_dir, dev)
    num_labels = getattr(getattr(model, "config", None), "num_labels", 2)
    if num_labels != 2:
        raise ValueError(f"{model_dir}: classifier has {num_labels} labels; EEC needs a binary "
                         "(negative=0, positive=1) sentiment model")

    probs = np.full(len(rows), np.nan)
    probs[kept] = _positive_probabilities(model, tokenizer, [rows[i]["Sentence"] for i in kept],
                                          batch_size, dev, progress)
    result: dict[str, Any] = {"n_sentences": len(kept), "n_groups": len(groups)}
    for key, column, first, second in EEC_DIMENSIONS:
        result[key] = _eec_dimension(rows, groups, probs, column, first, second)
    return result
