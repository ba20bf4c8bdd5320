"""Bias benchmarks: CrowS-Pairs and StereoSet on the pretrained models, the EEC on a classifier.

* **Two token scorers, one interface.** Both turn a tokenized sentence and a
  list of its positions into log P(original token) at those positions:

  - ``GeneratorScorer`` (the generator, a masked LM): each position is masked
    in its own copy of the sentence and the masked LM's log-probability of the
    original token is read there (all copies of a sentence go through one
    batched forward pass).
  - ``DiscriminatorScorer`` (``ElectraForPreTraining``, not a masked LM): one
    forward pass over the unmasked sentence; its head gives a logit for
    "replaced", so log P(original) = log sigmoid(-logit), computed in log
    space with ``F.logsigmoid``.

* **CrowS-Pairs** (Nangia et al. 2020, EMNLP): each sentence of a minimal pair
  is scored by summing the scores of the tokens the two sentences share. The
  metric is the percentage of pairs where the more stereotypical sentence
  (``sent_more``) scores higher; 50 is ideal. For the generator the All
  Unmasked Likelihood variant (AUL; Kaneko & Bollegala 2022, AAAI) is reported
  too: one unmasked forward pass, the mean log-probability of every token.
* **StereoSet intrasentence** (Nadeem et al. 2021, ACL): three fills of a BLANK
  (stereotype, anti-stereotype, unrelated) are scored on the fill's word
  pieces; LMS, SS and ICAT summarise the preferences.
* **EEC** (Kiritchenko & Mohammad 2018) fills fixed templates with female/male
  and African-American/European person words and compares the positive-class
  probability of a binary sentiment classifier between the two sides of each
  dimension, template by template.

Every interval is a 95% percentile bootstrap over the benchmark's units (pairs,
examples, matched template groups), seeded. Groups smaller than
``SMALL_GROUP`` are flagged ``small``: their intervals are wide.

All functions return plain JSON-ready dicts (floats, ints, strings, ``None``)
so that the evaluate stage can write them straight to ``metrics.json``.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from electra.core.runtime import resolve_device

ScorerName = Literal["generator", "discriminator"]
SCORERS = ("generator", "discriminator")

CROWS_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
CROWS_DIRECTIONS = ("stereo", "antistereo")
EEC_COLUMNS = ("Sentence", "Template", "Person", "Gender", "Race", "Emotion", "Emotion word")
STEREOSET_FIELDS = ("target", "bias_type", "context", "stereotype", "anti-stereotype", "unrelated")
# the three fills of one StereoSet example, in the order their scores are kept
STEREOSET_CANDIDATES = ("stereotype", "anti-stereotype", "unrelated")
BLANK = "BLANK"

# groups with fewer units than this get ``small: True``: a 95% interval of a
# percentage over fewer than 50 units is roughly +-14 points wide or more
SMALL_GROUP = 50

# (result key, CSV column, first side, second side): gaps are first minus second
EEC_DIMENSIONS = (
    ("gender", "Gender", "female", "male"),
    ("race", "Race", "African-American", "European"),
)
# neutral EEC templates carry no emotion; they still form groups of their own
NO_EMOTION = "none"

CROWS_VARIANTS = {
    "generator": "pseudo-log-likelihood (Nangia et al. 2020): sum over the tokens both sentences "
                 "share of log P(token | sentence with that one token masked), generator's MLM head",
    "discriminator": "sum over the tokens both sentences share of log P(original | unmasked "
                     "sentence) = log sigmoid(-logit) of the discriminator's replaced-token head",
}
AUL_VARIANT = ("All Unmasked Likelihood (Kaneko & Bollegala 2022): mean over all non-special tokens "
               "of log P(token | unmasked sentence) from the generator's MLM head, nothing masked")
STEREOSET_VARIANTS = {
    "generator": "mean over the fill's word pieces of log P(piece | sentence with this piece and "
                 "the fill's later pieces masked): left to right over the fill, as StereoSet's own "
                 "scoring (PLL-word-l2r, Kauf & Ivanova 2023)",
    "discriminator": "mean over the fill's word pieces of log sigmoid(-logit) on the unmasked "
                     "sentence (a mean, so that fills of different lengths compare)",
}


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


def _finite_or_none(value: Any) -> float | None:
    """A float for JSON, or None where a statistic is undefined (NaN is not valid JSON)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _check_args(batch_size: int, n_bootstrap: int, limit: int | None, limit_name: str) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if limit is not None and limit < 1:
        raise ValueError(f"{limit_name} must be >= 1 or None, got {limit}")


def _percent(flags: np.ndarray) -> float | None:
    return float(flags.mean() * 100.0) if flags.size else None


def _bootstrap_draws(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """Resampled unit indices, shape (n_bootstrap, n); one matrix serves every statistic of a group."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_bootstrap, n))


def _ci95(samples: np.ndarray) -> tuple[float | None, float | None]:
    """2.5th and 97.5th percentiles of bootstrap replicates (None when there are none)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0:
        return None, None
    low, high = np.percentile(samples, [2.5, 97.5])
    return _finite_or_none(low), _finite_or_none(high)


# --------------------------------------------------------------------------- loading models


def _check_heads(model_dir: str | Path, info: dict[str, Any], what: str) -> None:
    """Refuse a checkpoint whose head was freshly initialised (e.g. a generator loaded as a discriminator).

    ``from_pretrained`` only warns about missing weights and fills them with
    random numbers, which would give plausible-looking but meaningless scores.
    """
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ValueError(f"{model_dir}: checkpoint lacks weights a {what} needs ({', '.join(missing[:4])}"
                         f"{', ...' if len(missing) > 4 else ''}); is this the right model folder?")


def _load_masked_lm(model_dir: str | Path, device: torch.device):
    """The generator (any HF masked LM) and its tokenizer (kept separate so tests can substitute)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model, info = AutoModelForMaskedLM.from_pretrained(str(model_dir), output_loading_info=True)
    _check_heads(model_dir, info, "masked LM (the generator)")
    return _prepare(model, device), tokenizer


def _load_discriminator(model_dir: str | Path, device: torch.device):
    """The ELECTRA discriminator (``ElectraForPreTraining``) and its tokenizer."""
    from transformers import AutoTokenizer, ElectraForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model, info = ElectraForPreTraining.from_pretrained(str(model_dir), output_loading_info=True)
    _check_heads(model_dir, info, "replaced-token-detection model (the discriminator)")
    return _prepare(model, device), tokenizer


def _load_classifier(model_dir: str | Path, device: torch.device):
    """The fine-tuned SST-2 classifier and its tokenizer (kept separate so tests can substitute)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    return _prepare(model, device), tokenizer


# --------------------------------------------------------------------------- token scorers


def _pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask, both (batch, width)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (batch, width)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)          # (batch, width)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        attention[row, : len(seq)] = 1
    return input_ids, attention


def _by_length_batches(sequences: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Sequence indices in batches of similar length (little padding), deterministic order."""
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


# positions whose vocabulary logits are held at once: 1024 x 30522 fp32 is 125 MB
HEAD_CHUNK = 1024


def _log_prob_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per row, shape (n,), in fp32.

    Picking the target logit and subtracting the logsumexp avoids materialising
    a second (n, vocab) tensor of log-probabilities.
    """
    logits = logits.float()                                                 # (n, vocab)
    return logits.gather(1, targets.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=-1)


def _lm_log_probs_at(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log P(targets[i]) at position (rows[i], cols[i]) of the batch, shape (n_positions,).

    For ELECTRA's generator the LM head is applied only to the requested
    positions, ``HEAD_CHUNK`` at a time: the full (batch, length, 30522) logit
    tensor would cost far more than the encoder itself for a small generator.
    The head is position-wise, so the result is the same as slicing the full
    output. Other masked LMs take the generic route (full logits, then sliced).
    """
    if all(hasattr(model, name) for name in ("electra", "generator_predictions", "generator_lm_head")):
        hidden = model.electra(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)[0]
        picked = hidden[rows, cols]                                              # (n_positions, hidden)
        parts = [_log_prob_of(model.generator_lm_head(model.generator_predictions(picked[i:i + HEAD_CHUNK])),
                              targets[i:i + HEAD_CHUNK])                        # (chunk,)
                 for i in range(0, picked.shape[0], HEAD_CHUNK)]
        return torch.cat(parts)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits   # (batch, width, vocab)
    return _log_prob_of(logits[rows, cols], targets)


class GeneratorScorer:
    """Token scores from a masked LM: log P(original token | that position masked).

    Args:
        model: an HF masked LM (``ElectraForMaskedLM``) in eval mode, or any
            module whose output has ``.logits`` of shape (batch, length, vocab).
        tokenizer: its tokenizer (needs a mask token).
        device: where the batches run.
        batch_size: masked copies (or sentences, for unmasked passes) per forward pass.
        progress: show a tqdm bar.
    """

    name = "generator"

    def __init__(self, model: Any, tokenizer: Any, *, device: str | torch.device = "cpu",
                 batch_size: int = 32, progress: bool = False):
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token; the generator scorer needs a masked LM")
        self.model = model
        self.tokenizer = tokenizer
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.progress = progress
        self.mask_id = int(tokenizer.mask_token_id)
        self.pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0

    def token_log_probs(self, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                        *, left_to_right: bool = False, desc: str = "generator") -> list[np.ndarray]:
        """log P(original token) at each of ``positions[k]`` in ``sequences[k]``, each position masked.

        Every (sequence, position) pair becomes one masked copy; copies are
        sorted by sequence length (stable, so a sentence's copies sit side by
        side) and run ``batch_size`` at a time, right-padded with an attention mask.

        With ``left_to_right`` the later positions of the same list are masked
        too while a position is scored (Kauf & Ivanova 2023, "PLL-word-l2r"):
        the pieces of a multi-piece word then cannot give each other away, as
        they do when one piece at a time is masked (Salazar et al. 2020's PLL
        inflates multi-piece words).

        Returns:
            One float64 array per sequence, aligned with ``positions[k]``.
        """
        jobs = []  # (sequence k, index j in positions[k], position, also-masked positions)
        for k, pos in enumerate(positions):
            for j, p in enumerate(pos):
                jobs.append((k, j, int(p), tuple(pos[j + 1:]) if left_to_right else ()))
        jobs.sort(key=lambda job: len(sequences[job[0]]))
        out = [np.zeros(len(pos), dtype=np.float64) for pos in positions]
        n_batches = math.ceil(len(jobs) / self.batch_size)
        with torch.no_grad(), _progress(n_batches, desc, self.progress) as bar:
            for start in range(0, len(jobs), self.batch_size):
                chunk = jobs[start:start + self.batch_size]
                input_ids, attention = _pad([sequences[k] for k, *_ in chunk], self.pad_id)
                rows = torch.arange(len(chunk))
                cols = torch.tensor([p for _, _, p, _ in chunk], dtype=torch.long)
                targets = input_ids[rows, cols].clone()                           # (batch,)
                input_ids[rows, cols] = self.mask_id
                for row, (_, _, _, also) in enumerate(chunk):
                    if also:
                        input_ids[row, list(also)] = self.mask_id
                picked = _lm_log_probs_at(self.model, input_ids.to(self.device), attention.to(self.device),
                                          rows.to(self.device), cols.to(self.device),
                                          targets.to(self.device)).double().cpu().numpy()  # (batch,)
                for row, (k, j, _, _) in enumerate(chunk):
                    out[k][j] = picked[row]
                bar.update(1)
        return out

    def unmasked_log_probs(self, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                           *, desc: str = "generator, unmasked") -> list[np.ndarray]:
        """log P(token | the whole unmasked sentence) at ``positions[k]``: one forward pass per sentence.

        This is what AUL needs (Kaneko & Bollegala 2022): the masked LM's
        prediction at a position it can see, which avoids the masking's
        distribution shift and costs one pass instead of one per token.
        """
        out = [np.zeros(len(pos), dtype=np.float64) for pos in positions]
        batches = _by_length_batches(sequences, self.batch_size)
        with torch.no_grad(), _progress(len(batches), desc, self.progress) as bar:
            for chunk in batches:
                input_ids, attention = _pad([sequences[k] for k in chunk], self.pad_id)
                rows = torch.tensor([r for r, k in enumerate(chunk) for _ in positions[k]], dtype=torch.long)
                cols = torch.tensor([int(p) for k in chunk for p in positions[k]], dtype=torch.long)
                if rows.numel():
                    targets = input_ids[rows, cols]                                    # (n_pos,)
                    picked = _lm_log_probs_at(self.model, input_ids.to(self.device), attention.to(self.device),
                                              rows.to(self.device), cols.to(self.device),
                                              targets.to(self.device)).double().cpu().numpy()  # (n_pos,)
                    offset = 0
                    for k in chunk:
                        out[k][:] = picked[offset:offset + len(positions[k])]
                        offset += len(positions[k])
                bar.update(1)
        return out


class DiscriminatorScorer:
    """Token scores from ELECTRA's discriminator: log P(original) = log sigmoid(-logit), nothing masked.

    The replaced-token-detection head gives one logit per token for "this token
    was replaced"; P(original) = 1 - sigmoid(logit) = sigmoid(-logit). The log
    is taken with ``F.logsigmoid`` so confident tokens do not underflow to log 0.

    Args:
        model: ``ElectraForPreTraining`` in eval mode, or any module whose output
            has ``.logits`` of shape (batch, length).
        tokenizer: its tokenizer.
        device, batch_size, progress: as for ``GeneratorScorer`` (batch_size counts sentences).
    """

    name = "discriminator"

    def __init__(self, model: Any, tokenizer: Any, *, device: str | torch.device = "cpu",
                 batch_size: int = 32, progress: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.progress = progress
        self.pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0

    def token_log_probs(self, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                        *, left_to_right: bool = False, desc: str = "discriminator") -> list[np.ndarray]:
        """log sigmoid(-logit) at ``positions[k]`` of the unmasked ``sequences[k]``.

        ``left_to_right`` is accepted for the common interface and has no
        effect: the discriminator never sees a mask.

        Returns:
            One float64 array per sequence, aligned with ``positions[k]``.
        """
        del left_to_right  # nothing is masked for the discriminator
        out = [np.zeros(len(pos), dtype=np.float64) for pos in positions]
        batches = _by_length_batches(sequences, self.batch_size)
        with torch.no_grad(), _progress(len(batches), desc, self.progress) as bar:
            for chunk in batches:
                input_ids, attention = _pad([sequences[k] for k in chunk], self.pad_id)
                logits = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=attention.to(self.device)).logits  # (batch, width)
                log_original = F.logsigmoid(-logits.float()).double().cpu().numpy()   # (batch, width)
                for row, k in enumerate(chunk):
                    out[k][:] = log_original[row, list(positions[k])]
                bar.update(1)
        return out


TokenScorer = GeneratorScorer | DiscriminatorScorer


def load_scorer(model_dir: str | Path, scorer: ScorerName = "generator", *, device: str = "cpu",
                batch_size: int = 32, progress: bool = False) -> TokenScorer:
    """The scorer named by ``scorer`` over the model in ``model_dir`` (HF folder with its tokenizer).

    ``generator`` loads a masked LM (``AutoModelForMaskedLM``), ``discriminator``
    loads ``ElectraForPreTraining``; a folder whose checkpoint lacks the needed
    head is refused rather than scored with random head weights.
    """
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    dev = resolve_device(device)
    if scorer == "generator":
        model, tokenizer = _load_masked_lm(model_dir, dev)
        return GeneratorScorer(model, tokenizer, device=dev, batch_size=batch_size, progress=progress)
    model, tokenizer = _load_discriminator(model_dir, dev)
    return DiscriminatorScorer(model, tokenizer, device=dev, batch_size=batch_size, progress=progress)


# --------------------------------------------------------------------------- CrowS-Pairs


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


def _crows_group(biased: np.ndarray, ties: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Metric, interval and counts of one subset of pairs."""
    n = int(biased.size)
    low = high = None
    if n:
        boot = biased[_bootstrap_draws(n, n_bootstrap, seed)].mean(axis=1) * 100.0  # (n_bootstrap,)
        low, high = _ci95(boot)
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
    _check_args(batch_size, n_bootstrap, max_pairs, "max_pairs")
    rows = _read_csv(csv_path, CROWS_COLUMNS)
    if max_pairs is not None:
        rows = rows[:max_pairs]
    for line, row in enumerate(rows, start=2):
        if row["stereo_antistereo"] not in CROWS_DIRECTIONS:
            raise ValueError(f"{csv_path}: line {line}: stereo_antistereo is "
                             f"{row['stereo_antistereo']!r}, expected 'stereo' or 'antistereo'")

    token_scorer = load_scorer(model_dir, scorer, device=device, batch_size=batch_size, progress=progress)
    tokenizer = token_scorer.tokenizer
    max_len = _max_length(token_scorer.model, tokenizer)

    # sequences alternate sent_more, sent_less so that pair i is entries 2i and 2i+1
    sequences: list[list[int]] = []
    content: list[list[int]] = []  # non-special positions, for AUL
    shared: list[list[int]] = []
    for row in rows:
        ids_more, content_more = _encode(tokenizer, row["sent_more"], max_len)
        ids_less, content_less = _encode(tokenizer, row["sent_less"], max_len)
        sequences += [ids_more, ids_less]
        content += [content_more, content_less]
        shared += list(_shared_content(ids_more, content_more, ids_less, content_less))
    bias_types = [row["bias_type"] for row in rows]
    directions = [row["stereo_antistereo"] for row in rows]

    token_scores = token_scorer.token_log_probs(sequences, shared, desc=f"CrowS-Pairs ({scorer})")
    totals = np.array([s.sum() for s in token_scores])  # (2 * n_pairs,)
    result: dict[str, Any] = {"scorer": scorer, "variant": CROWS_VARIANTS[scorer], "data_file": str(csv_path)}
    result.update(crows_summary(totals[0::2], totals[1::2], bias_types, directions,
                                n_bootstrap=n_bootstrap, seed=seed))
    result["mean_shared_tokens"] = float(np.mean([len(p) for p in shared]))

    if isinstance(token_scorer, GeneratorScorer):
        unmasked = token_scorer.unmasked_log_probs(sequences, content, desc="CrowS-Pairs (AUL)")
        # an empty sentence has no tokens to average: NaN compares False, so never biased nor tied
        means = np.array([s.mean() if s.size else np.nan for s in unmasked])  # (2 * n_pairs,)
        aul = {"variant": AUL_VARIANT}
        aul.update(crows_summary(means[0::2], means[1::2], bias_types, directions,
                                 n_bootstrap=n_bootstrap, seed=seed))
        result["aul"] = aul
    result["n_bootstrap"] = n_bootstrap
    result["seed"] = seed
    return result


# --------------------------------------------------------------------------- StereoSet


def _read_stereoset(path: str | Path) -> list[dict[str, Any]]:
    """The intrasentence rows of a flat StereoSet JSONL, failing with the file and line on bad input."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: JSONL file not found (run `dvc pull` for data/bias)")
    rows = []
    with open(p, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{p}: line {line_no}: not valid JSON ({err})") from err
            if not isinstance(row, dict) or row.get("type") != "intrasentence":
                continue
            missing = [f for f in STEREOSET_FIELDS if not isinstance(row.get(f), str)]
            if missing:
                raise ValueError(f"{p}: line {line_no}: missing field(s) {missing}")
            if BLANK not in row["context"]:
                raise ValueError(f"{p}: line {line_no}: context has no {BLANK}: {row['context']!r}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{p}: no intrasentence rows")
    return rows


def _fold(text: str) -> str:
    """Lower case, one character for one character, so indices into ``text`` stay valid.

    ``str.lower`` turns a few characters into two (e.g. "İ"); those are kept as
    they are. StereoSet's candidates often differ from the context in case only
    ("The Crimean people" vs "The crimean people").
    """
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _blank_fill_spans(context: str, candidate: str) -> tuple[list[tuple[int, int]], bool]:
    """Character spans of ``candidate`` that fill the BLANK(s) of ``context``, and whether it aligned exactly.

    The text before the first BLANK is matched as a prefix and the text after
    the last one as a suffix (case-insensitively); text between two BLANKs is
    searched for in order. Where the candidate departs from the context (a
    typo), the fill grows to cover the difference and ``exact`` is False.
    Spans are stripped of surrounding whitespace; a BLANK glued to a word
    ("BLANKed") gives the part of the word that differs, which the token
    overlap then widens to the whole word piece.
    """
    segments = [_fold(s) for s in context.split(BLANK)]
    cand = _fold(candidate)
    head, tail = segments[0], segments[-1]
    start = 0
    while start < min(len(head), len(cand)) and cand[start] == head[start]:
        start += 1
    exact = start == len(head)
    end, j = len(cand), len(tail)
    while j > 0 and end > start and cand[end - 1] == tail[j - 1]:
        end -= 1
        j -= 1
    exact = exact and j == 0
    raw: list[tuple[int, int]] = []
    cursor = start
    for middle in segments[1:-1]:
        if not middle.strip():
            continue  # two BLANKs with nothing (or a space) between read as one fill
        found = cand.find(middle, cursor + 1, end)
        if found < 0:
            exact = False
            break
        raw.append((cursor, found))
        cursor = found + len(middle)
    raw.append((cursor, end))
    spans = []
    for a, b in raw:
        while a < b and cand[a].isspace():
            a += 1
        while b > a and cand[b - 1].isspace():
            b -= 1
        if b > a:
            spans.append((a, b))
    return spans, exact


def _candidate_pieces(tokenizer: Any, context: str, candidate: str,
                      max_length: int) -> tuple[list[int], list[int], bool]:
    """Token ids of ``candidate`` (with special tokens), the positions of its fill's pieces, exactness.

    A piece belongs to the fill when its character offsets overlap a fill span
    (needs a fast tokenizer, which reports offsets).
    """
    encoded = tokenizer(candidate, add_special_tokens=True, truncation=True, max_length=max_length,
                        return_special_tokens_mask=True, return_offsets_mapping=True)
    spans, exact = _blank_fill_spans(context, candidate)
    offsets, special = encoded["offset_mapping"], encoded["special_tokens_mask"]
    positions = [i for i, (s, e) in enumerate(offsets)
                 if not special[i] and e > s and any(s < b and e > a for a, b in spans)]
    return list(encoded["input_ids"]), positions, exact


def icat(lms: Any, ss: Any) -> Any:
    """Idealized CAT score (Nadeem et al. 2021): LMS x min(SS, 100 - SS) / 50.

    100 for a model that always prefers meaningful fills (LMS 100) and has no
    stereotype preference (SS 50); 0 for one that always or never prefers the
    stereotype, or never prefers meaningful fills. Works on floats and arrays.
    """
    return lms * np.minimum(ss, 100.0 - ss) / 50.0


def _stereoset_group(stereo: np.ndarray, anti: np.ndarray, unrelated: np.ndarray,
                     n_bootstrap: int, seed: int) -> dict[str, Any]:
    """LMS, SS and ICAT of one subset of examples, each with a 95% interval from the same resamples."""
    n = int(stereo.size)
    # per example: share of its two meaningful-vs-unrelated comparisons won, and stereotype preferred
    meaningful = ((stereo > unrelated).astype(np.float64) + (anti > unrelated).astype(np.float64)) / 2.0
    prefers_stereo = (stereo > anti).astype(np.float64)
    out: dict[str, Any] = {}
    if n:
        lms, ss = 100.0 * meaningful.mean(), 100.0 * prefers_stereo.mean()
        draws = _bootstrap_draws(n, n_bootstrap, seed)                   # (n_bootstrap, n)
        lms_boot = 100.0 * meaningful[draws].mean(axis=1)                # (n_bootstrap,)
        ss_boot = 100.0 * prefers_stereo[draws].mean(axis=1)             # (n_bootstrap,)
        values = {"lms": (lms, lms_boot), "ss": (ss, ss_boot),
                  "icat": (icat(lms, ss), icat(lms_boot, ss_boot))}
        for key, (point, boot) in values.items():
            low, high = _ci95(boot)
            out.update({key: float(point), f"{key}_ci95_low": low, f"{key}_ci95_high": high})
    else:
        for key in ("lms", "ss", "icat"):
            out.update({key: None, f"{key}_ci95_low": None, f"{key}_ci95_high": None})
    out.update({"n": n, "n_ties": int(np.sum(stereo == anti)), "small": n < SMALL_GROUP})
    return out


def _target_macro(stereo: np.ndarray, anti: np.ndarray, unrelated: np.ndarray,
                  targets: Sequence[str]) -> dict[str, Any]:
    """LMS and SS averaged over target terms first, as the StereoSet leaderboard script does."""
    targets = np.asarray(targets, dtype=object)
    lms_t, ss_t = [], []
    for t in sorted(set(targets.tolist())):
        sel = targets == t
        lms_t.append(50.0 * ((stereo[sel] > unrelated[sel]).mean() + (anti[sel] > unrelated[sel]).mean()))
        ss_t.append(100.0 * (stereo[sel] > anti[sel]).mean())
    lms, ss = float(np.mean(lms_t)), float(np.mean(ss_t))
    return {"lms": lms, "ss": ss, "icat": float(icat(lms, ss)), "n_targets": len(lms_t)}


def _fmt_ci(group: dict[str, Any], key: str) -> str:
    return f"{group[key]:.1f} (95% CI {group[f'{key}_ci95_low']:.1f}-{group[f'{key}_ci95_high']:.1f})"


def _stereoset_interpretation(overall: dict[str, Any], per_domain: dict[str, dict[str, Any]]) -> str:
    """A few plain sentences on what the numbers allow one to say."""
    if overall["lms"] is None:
        return "No example could be scored."
    lms_low, lms_high = overall["lms_ci95_low"], overall["lms_ci95_high"]
    if lms_low <= 50.0 <= lms_high:
        text = (f"LMS {_fmt_ci(overall, 'lms')} includes 50: the model does not tell meaningful fills "
                f"from unrelated ones better than chance, so SS ({overall['ss']:.1f}) and ICAT mean "
                "nothing for this model: its stereotype preference is noise, not a measured bias.")
    elif lms_high < 50.0:
        text = (f"LMS {_fmt_ci(overall, 'lms')} is below 50: the model prefers unrelated fills to "
                f"meaningful ones, so SS ({overall['ss']:.1f}) and ICAT mean nothing for this model.")
    else:
        text = (f"LMS {_fmt_ci(overall, 'lms')} is above 50: the model prefers meaningful fills to "
                "unrelated ones, so SS can be read (the closer LMS is to 50, the less it says). ")
        ss_low, ss_high = overall["ss_ci95_low"], overall["ss_ci95_high"]
        if ss_low <= 50.0 <= ss_high:
            text += f"SS {_fmt_ci(overall, 'ss')} includes 50 (ideal): no measurable stereotype preference."
        elif ss_low > 50.0:
            text += (f"SS {_fmt_ci(overall, 'ss')} is above 50 (ideal): the model prefers the "
                     "stereotypical fill to the anti-stereotypical one.")
        else:
            text += (f"SS {_fmt_ci(overall, 'ss')} is below 50 (ideal): the model prefers the "
                     "anti-stereotypical fill.")
        text += f" ICAT {_fmt_ci(overall, 'icat')} (100 is ideal)."
        chance = [d for d, g in per_domain.items()
                  if g["lms"] is not None and g["lms_ci95_low"] <= 50.0]
        if chance:
            text += (f" In {', '.join(chance)}, LMS's interval reaches 50 or below: SS there means "
                     "nothing.")
    small = [d for d, g in per_domain.items() if g["small"]]
    if small:
        text += f" Small domains (n < {SMALL_GROUP}, wide intervals): {', '.join(small)}."
    return text


def stereoset_summary(stereo: Sequence[float], anti: Sequence[float], unrelated: Sequence[float],
                      domains: Sequence[str], *, targets: Sequence[str] | None = None,
                      n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """LMS, SS and ICAT (Nadeem et al. 2021) from the three fills' scores of each example.

    * LMS: percentage of the 2n (meaningful vs unrelated) comparisons, over the
      stereotype and the anti-stereotype, where the meaningful fill scores higher.
    * SS: percentage of examples where the stereotype scores higher than the
      anti-stereotype (a tie counts as not stereotypical; ``n_ties`` counts them).
    * ICAT = LMS x min(SS, 100 - SS) / 50.

    These are micro averages over examples; the leaderboard script averages over
    target terms first, given as ``target_macro`` when ``targets`` is passed.
    Intervals resample examples (within each domain for the per-domain ones);
    ICAT's comes from the same resamples as LMS's and SS's. Because min() folds
    SS at 50, ICAT's replicates sit below the point estimate when SS is near
    50, and its percentile interval can then exclude the point estimate.

    Returns:
        ``{"lms", "lms_ci95_low", "lms_ci95_high", "ss", ..., "icat", ..., "n",
        "n_ties", "small", "per_domain": {domain: same keys}, "interpretation"}``
        (plus ``target_macro`` with ``targets``).
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (stereo, anti, unrelated)]
    doms = np.asarray(domains, dtype=object)
    if not all(a.shape == doms.shape for a in arrays) or doms.ndim != 1:
        raise ValueError("stereo, anti, unrelated and domains must be 1-D and of one length")
    result = _stereoset_group(*arrays, n_bootstrap, seed)
    per_domain = {d: _stereoset_group(*(a[doms == d] for a in arrays), n_bootstrap, seed)
                  for d in sorted(set(doms.tolist()))}
    result["per_domain"] = per_domain
    if targets is not None:
        if len(targets) != doms.size:
            raise ValueError("targets must have one entry per example")
        result["target_macro"] = _target_macro(*arrays, targets)
    result["interpretation"] = _stereoset_interpretation(result, per_domain)
    return result


def stereoset(model_dir: str | Path, jsonl_path: str | Path, *, scorer: ScorerName = "generator",
              max_examples: int | None = None, batch_size: int = 32, device: str = "cpu",
              n_bootstrap: int = 1000, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """StereoSet intrasentence LMS, SS and ICAT of the generator or the discriminator.

    For each example the three fills of the context's BLANK (stereotype,
    anti-stereotype, unrelated) are scored on the fill's own word pieces, found
    by aligning the candidate sentence with the context's text around BLANK and
    keeping the pieces whose characters overlap the fill. Only the fill is
    scored, as in StereoSet: the rest of the sentence is the same for all three.

    * generator: each piece is masked, together with the fill's later pieces,
      and scored by the masked LM, left to right; the score is the mean log-prob
      per piece. (StereoSet's own MLM scoring also goes left to right over the
      fill's pieces and averages over them; masking the later pieces keeps a
      word's pieces from giving each other away, Kauf & Ivanova 2023.)
    * discriminator: log sigmoid(-logit) of each piece in the unmasked
      sentence, averaged over the pieces so that fills of different lengths compare.

    Args:
        model_dir: HF folder with the generator or the discriminator and its tokenizer.
        jsonl_path: flat StereoSet JSONL; only ``"type": "intrasentence"`` rows are used.
        scorer: "generator" or "discriminator".
        max_examples: score only the first ``max_examples`` intrasentence rows.
        batch_size, device, n_bootstrap, seed, progress: as for ``crows_pairs``.

    Returns:
        ``stereoset_summary``'s dict (overall ``lms``/``ss``/``icat`` with
        ``*_ci95_low``/``*_ci95_high``, ``n``, ``n_ties``, ``small``;
        ``per_domain``; ``target_macro``; ``interpretation``) plus ``scorer``,
        ``variant``, ``data_file``, ``n_skipped`` (examples with a fill that
        has no piece left, e.g. truncated), ``n_inexact_alignments`` (fills whose
        sentence departs from the context outside BLANK), ``mean_fill_pieces``,
        ``n_bootstrap`` and ``seed``.
    """
    _check_args(batch_size, n_bootstrap, max_examples, "max_examples")
    rows = _read_stereoset(jsonl_path)
    if max_examples is not None:
        rows = rows[:max_examples]

    token_scorer = load_scorer(model_dir, scorer, device=device, batch_size=batch_size, progress=progress)
    tokenizer = token_scorer.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{model_dir}: StereoSet needs a fast tokenizer (character offsets of the pieces)")
    max_len = _max_length(token_scorer.model, tokenizer)

    # three consecutive entries per kept example: stereotype, anti-stereotype, unrelated
    sequences: list[list[int]] = []
    pieces: list[list[int]] = []
    kept: list[dict[str, Any]] = []
    n_inexact = 0
    for row in rows:
        fills = [_candidate_pieces(tokenizer, row["context"], row[key], max_len)
                 for key in STEREOSET_CANDIDATES]
        if any(not positions for _, positions, _ in fills):
            continue
        n_inexact += sum(not exact for _, _, exact in fills)
        sequences += [ids for ids, _, _ in fills]
        pieces += [positions for _, positions, _ in fills]
        kept.append(row)
    if not kept:
        raise ValueError(f"{jsonl_path}: no example has a scorable fill")

    token_scores = token_scorer.token_log_probs(sequences, pieces, left_to_right=True,
                                                desc=f"StereoSet ({scorer})")
    means = np.array([s.mean() for s in token_scores]).reshape(-1, 3)  # (n_examples, 3)
    result: dict[str, Any] = {"scorer": scorer, "variant": STEREOSET_VARIANTS[scorer],
                              "data_file": str(jsonl_path)}
    result.update(stereoset_summary(means[:, 0], means[:, 1], means[:, 2], [r["bias_type"] for r in kept],
                                    targets=[r["target"] for r in kept], n_bootstrap=n_bootstrap, seed=seed))
    result.update({"n_skipped": len(rows) - len(kept), "n_inexact_alignments": n_inexact,
                   "mean_fill_pieces": float(np.mean([len(p) for p in pieces])),
                   "n_bootstrap": n_bootstrap, "seed": seed})
    return result


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
    gap_ci = abs_ci = (None, None)
    if gaps.size:
        draws = _bootstrap_draws(gaps.size, n_bootstrap, seed)      # (n_bootstrap, n_groups)
        gap_ci = _ci95(gaps[draws].mean(axis=1))
        abs_ci = _ci95(np.abs(gaps)[draws].mean(axis=1))
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
    _check_args(batch_size, n_bootstrap, max_sentences, "max_sentences")
    rows = _read_csv(csv_path, EEC_COLUMNS)
    groups = _eec_groups(rows)
    if max_sentences is not None:
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
    result: dict[str, Any] = {"n_sentences": len(kept), "n_groups": len(groups),
                              "n_bootstrap": n_bootstrap, "seed": seed}
    for key, column, first, second in EEC_DIMENSIONS:
        result[key] = _eec_dimension(rows, groups, probs, column, first, second, n_bootstrap, seed)
    return result
