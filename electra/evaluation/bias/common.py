"""What the bias benchmarks share: reading their files, loading the models, and the two
token scorers over one batching scheme.

Two token scorers, one interface. Both turn a tokenized sentence and a list of its
positions into log P(original token) at those positions:

- ``GeneratorScorer`` (the generator, a masked LM): each position is masked in its own
  copy of the sentence and the masked LM's log-probability of the original token is
  read there (all copies of a sentence go through one batched forward pass).
- ``DiscriminatorScorer`` (``ElectraForPreTraining``, not a masked LM): one forward
  pass over the unmasked sentence; its head gives a logit for "replaced", so
  log P(original) = log sigmoid(-logit), computed in log space with ``F.logsigmoid``.

Batches hold sequences of similar length (``by_length_batches``), right-padded with an
attention mask (``pad``). Every interval is a ``CONFIDENCE`` (95%) percentile bootstrap
of :mod:`electra.core.stats` over the benchmark's units (pairs, examples, matched
template groups), seeded; ``json_interval`` turns an undefined bound into None.

Pitfalls: a checkpoint lacking the head a scorer needs is refused (``from_pretrained``
would fill it with random weights and give plausible-looking noise); weights are fp32
and models run in eval mode, so no score depends on dropout or a half-precision checkpoint.
The forward passes run under bf16 autocast where ``precision`` resolves to it
(:func:`~electra.core.runtime.resolve_precision`: CUDA, or a CPU where bf16 measures
faster); the log-probabilities are taken from the logits cast to fp32.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from electra.core.runtime import autocast, enable_tf32, resolve_device, resolve_precision

ScorerName = Literal["generator", "discriminator"]
SCORERS = ("generator", "discriminator")
# the level of every bias interval
CONFIDENCE = 0.95

# groups with fewer units than this get ``small: True``: a 95% interval of a
# percentage over fewer than 50 units is roughly +-14 points wide or more
SMALL_GROUP = 50


# --------------------------------------------------------------------------- files and arguments


def read_csv(path: str | Path, required: Sequence[str]) -> list[dict[str, str]]:
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


def longest_input(model: Any, tokenizer: Any) -> int:
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


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar counting batches (silent unless ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="batch")


def finite_or_none(value: Any) -> float | None:
    """A float for JSON, or None where a statistic is undefined (NaN is not valid JSON)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def check_args(batch_size: int, n_bootstrap: int, limit: int | None, limit_name: str) -> None:
    """Refuse a benchmark's arguments before any model is loaded."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if limit is not None and limit < 1:
        raise ValueError(f"{limit_name} must be >= 1 or None, got {limit}")


def json_interval(bounds: tuple[float, float]) -> tuple[float | None, float | None]:
    """An interval of :mod:`electra.core.stats` for metrics.json: None for a NaN bound."""
    return finite_or_none(bounds[0]), finite_or_none(bounds[1])


# --------------------------------------------------------------------------- loading models


def _prepare(model: Any, device: torch.device) -> Any:
    # fp32 and eval mode: scores must not depend on dropout or on a half-precision checkpoint
    enable_tf32()  # what autocast leaves in fp32 runs on TF32 tensor cores (CUDA only)
    return model.to(device).float().eval()


def _require_folder(model_dir: str | Path, what: str) -> None:
    """A clear error for a model folder that is not there: ``from_pretrained`` would take the
    path for a Hugging Face hub id and fail with "Repo id must be in the form ..."."""
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{model_dir}: no {what} here (evaluate reads it from evaluate.pretrain_dir; "
                                "run pretrain first, or point evaluate.pretrain_dir at a pretraining run's folder)")


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

    _require_folder(model_dir, "masked LM (the generator)")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model, info = AutoModelForMaskedLM.from_pretrained(str(model_dir), output_loading_info=True)
    _check_heads(model_dir, info, "masked LM (the generator)")
    return _prepare(model, device), tokenizer


def _load_discriminator(model_dir: str | Path, device: torch.device):
    """The ELECTRA discriminator (``ElectraForPreTraining``) and its tokenizer."""
    from transformers import AutoTokenizer, ElectraForPreTraining

    _require_folder(model_dir, "discriminator")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model, info = ElectraForPreTraining.from_pretrained(str(model_dir), output_loading_info=True)
    _check_heads(model_dir, info, "replaced-token-detection model (the discriminator)")
    return _prepare(model, device), tokenizer


def load_classifier(model_dir: str | Path, device: torch.device):
    """The fine-tuned SST-2 classifier and its tokenizer (kept separate so tests can substitute)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    return _prepare(model, device), tokenizer


# --------------------------------------------------------------------------- token scorers


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask, both (batch, width)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (batch, width)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)          # (batch, width)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        attention[row, : len(seq)] = 1
    return input_ids, attention


def by_length_batches(sequences: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
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
        precision: the forward's autocast (``auto``, ``bf16``, ``fp32``), resolved on ``device``.
            A model handed in is scored as given (fp32) unless asked; :func:`load_scorer`,
            the benchmarks' door, defaults to ``auto``.
    """

    name = "generator"

    def __init__(self, model: Any, tokenizer: Any, *, device: str | torch.device = "cpu",
                 batch_size: int = 32, progress: bool = False, precision: str = "fp32"):
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token; the generator scorer needs a masked LM")
        self.model = model
        self.tokenizer = tokenizer
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)  # autocast dtype; None: fp32
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
        with torch.no_grad(), autocast(self.device, self.dtype), progress_bar(n_batches, desc, self.progress) as bar:
            for start in range(0, len(jobs), self.batch_size):
                chunk = jobs[start:start + self.batch_size]
                input_ids, attention = pad([sequences[k] for k, *_ in chunk], self.pad_id)
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
        batches = by_length_batches(sequences, self.batch_size)
        with torch.no_grad(), autocast(self.device, self.dtype), progress_bar(len(batches), desc, self.progress) as bar:
            for chunk in batches:
                input_ids, attention = pad([sequences[k] for k in chunk], self.pad_id)
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
        device, batch_size, progress, precision: as for ``GeneratorScorer`` (batch_size counts sentences).
    """

    name = "discriminator"

    def __init__(self, model: Any, tokenizer: Any, *, device: str | torch.device = "cpu",
                 batch_size: int = 32, progress: bool = False, precision: str = "fp32"):
        self.model = model
        self.tokenizer = tokenizer
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)  # autocast dtype; None: fp32
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
        batches = by_length_batches(sequences, self.batch_size)
        with torch.no_grad(), autocast(self.device, self.dtype), progress_bar(len(batches), desc, self.progress) as bar:
            for chunk in batches:
                input_ids, attention = pad([sequences[k] for k in chunk], self.pad_id)
                logits = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=attention.to(self.device)).logits  # (batch, width)
                log_original = F.logsigmoid(-logits.float()).double().cpu().numpy()   # (batch, width)
                for row, k in enumerate(chunk):
                    out[k][:] = log_original[row, list(positions[k])]
                bar.update(1)
        return out


TokenScorer = GeneratorScorer | DiscriminatorScorer


def load_scorer(model_dir: str | Path, scorer: ScorerName = "generator", *, device: str = "cpu",
                batch_size: int = 32, progress: bool = False, precision: str = "auto") -> TokenScorer:
    """The scorer named by ``scorer`` over the model in ``model_dir`` (HF folder with its tokenizer).

    ``generator`` loads a masked LM (``AutoModelForMaskedLM``), ``discriminator``
    loads ``ElectraForPreTraining``; a folder whose checkpoint lacks the needed
    head is refused rather than scored with random head weights. ``precision``: the
    forwards' autocast, as :func:`~electra.core.runtime.resolve_precision` resolves it.
    """
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    dev = resolve_device(device)
    if scorer == "generator":
        model, tokenizer = _load_masked_lm(model_dir, dev)
        return GeneratorScorer(model, tokenizer, device=dev, batch_size=batch_size, progress=progress,
                               precision=precision)
    model, tokenizer = _load_discriminator(model_dir, dev)
    return DiscriminatorScorer(model, tokenizer, device=dev, batch_size=batch_size, progress=progress,
                               precision=precision)
