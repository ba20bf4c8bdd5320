"""The fine-tuning recipe every task kind shares: ELECTRA's, as in its ``run_finetuning``.

1. :func:`seed_everything` before each (task, seed) run, so no run depends on another.
2. :func:`layerwise_lr_groups`: AdamW groups with layer-wise learning-rate decay (the head
   at ``lr``, each layer below ``layer_decay`` times the one above).
3. :func:`linear_schedule`: linear warm-up then linear decay to zero.
4. :func:`train_loop`: length-grouped batches (:func:`length_grouped_batches`), gradient
   clipping, the loss curve logged; :func:`save_finetuned` swaps the model into place.
   The forward runs under bf16 autocast where :func:`~electra.core.runtime.resolve_precision`
   picks it (CUDA; a CPU where bf16 measures faster), the loss in fp32 (:func:`forward_loss`).
5. :func:`longest_first_batches`: prediction batches that need little padding; predictions
   run under :func:`inference` (no gradients, the same autocast).

:func:`task_settings` gives a task's effective epochs, lr, sizes (its catalog entry's
overrides over the section's values) and :func:`subsample` its training subset.
Nothing here knows a task kind: each kind (GLUE, QA, NER) brings its features and head.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from electra.core.config import FinetuneConfig
from electra.core.files import atomic_dir
from electra.core.logs import StepLog
from electra.core.runtime import autocast, enable_tf32, linear_warmup_decay, resolve_precision
from electra.core.tracking import MetricLogger

T = TypeVar("T")

# Batch keys that are targets, not model inputs: the loss is computed from the logits here.
TARGET_KEYS = ("labels", "start_positions", "end_positions")

# Log the running train loss every this many optimiser steps (and at the last one).
LOG_EVERY = 10
# A length bucket holds this many batches: sorting inside a bucket groups similar
# lengths, while buckets drawn from a fresh shuffle keep batches varied across epochs.
BUCKET_BATCHES = 50
MAX_GRAD_NORM = 1.0
# Parameters whose name contains one of these get no weight decay (as in ELECTRA/BERT).
NO_DECAY = ("LayerNorm", "layer_norm", "bias")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def task_settings(cfg: FinetuneConfig, task: str) -> dict[str, Any]:
    """Effective ``epochs``, ``lr``, ``max_train_examples``, ``max_seq_length`` and
    ``batch_size`` for ``task`` (its catalog entry's overrides win)."""
    entry = cfg.entry(task)
    settings = {"epochs": cfg.epochs, "lr": cfg.lr, "max_train_examples": cfg.max_train_examples,
                "max_seq_length": cfg.max_seq_length, "batch_size": cfg.batch_size}
    for key in settings:
        value = getattr(entry, key)
        if value is not None:
            settings[key] = value
    return settings


def task_precision(cfg: Any) -> str:
    """The fine-tuning and evaluation precision: the section's ``precision`` when it has one,
    else ``auto`` (bf16 autocast where :func:`~electra.core.runtime.resolve_precision` picks it)."""
    return str(getattr(cfg, "precision", "auto"))


@contextlib.contextmanager
def inference(device: torch.device, precision: str = "auto"):
    """No gradients, and autocast as ``precision`` resolves on ``device`` (TF32 on CUDA).
    Callers read the logits with ``.float()``."""
    enable_tf32()
    with torch.no_grad(), autocast(device, resolve_precision(precision, device)):
        yield


def fp32_loss(model: torch.nn.Module, out: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The loss Hugging Face's Electra heads compute, from the logits cast to fp32.

    Under bf16 autocast the logits come out in bf16; a softmax or MSE over them would lose
    the loss's low digits, so the loss is taken here, outside the model, in fp32. The same
    rules as the heads' own: span start/end cross-entropy averaged (positions outside the
    window ignored), token cross-entropy (-100 ignored), and for sequence classification
    the ``problem_type`` inferred as ``transformers`` does (and stored on the config, as it
    would be, so the saved model says the same).
    """
    if "start_positions" in batch:
        start, end = out.start_logits.float(), out.end_logits.float()                # (B, T)
        outside = start.size(1)
        return (F.cross_entropy(start, batch["start_positions"].view(-1).clamp(0, outside), ignore_index=outside)
                + F.cross_entropy(end, batch["end_positions"].view(-1).clamp(0, outside), ignore_index=outside)) / 2
    logits, labels = out.logits.float(), batch["labels"]
    if logits.dim() == 3:                                                             # (B, T, C): tokens
        return F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)
    config, num_labels = model.config, int(model.config.num_labels)
    if config.problem_type is None:
        config.problem_type = ("regression" if num_labels == 1 else "single_label_classification"
                               if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.float().squeeze())
        return F.mse_loss(logits, labels.float())
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def forward_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], precision: str = "auto") -> torch.Tensor:
    """The training loss of ``batch``: the forward under the autocast ``precision`` resolves to
    on the model's device (TF32 on CUDA), the loss in fp32 (:func:`fp32_loss`).

    Resolved at every call: the CPU probe is measured once per process, the rest are flags.
    """
    inputs = {k: v for k, v in batch.items() if k not in TARGET_KEYS}
    device = next(model.parameters()).device
    enable_tf32()
    with autocast(device, resolve_precision(precision, device)):
        out = model(**inputs)
    return fp32_loss(model, out, batch)


def subsample(examples: Sequence[T], max_examples: int | None, seed: int) -> list[T]:
    """At most ``max_examples`` examples, drawn without replacement by ``seed``, in file order."""
    if max_examples is None or len(examples) <= max_examples:
        return list(examples)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(examples), size=max_examples, replace=False))
    return [examples[i] for i in keep]


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, bucket_batches: int = BUCKET_BATCHES
) -> list[list[int]]:
    """One epoch of batches (lists of indices) whose members have similar lengths.

    The indices are shuffled, cut into buckets of ``batch_size * bucket_batches``,
    each bucket is sorted by length and cut into batches, and the batches are
    shuffled, all with ``rng``. Every index appears exactly once.
    """
    order = rng.permutation(len(lengths))
    bucket = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket].tolist(), key=lambda i: lengths[i])
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def longest_first_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Prediction batches (index lists) in decreasing length, so each needs little padding;
    callers put the outputs back in input order by index."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


_LAYER_RE = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def parameter_depth(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise LR decay: embeddings 0, layer i → i+1, else n+2.

    ``embeddings_project`` (the embedding→hidden projection ELECTRA-small uses)
    counts as embeddings, as in the ELECTRA code; the classification head and
    anything else outside the encoder gets the top depth (full learning rate).
    """
    match = _LAYER_RE.search(name)
    if match:
        return int(match.group(1)) + 1
    if ".embeddings" in f".{name}":
        return 0
    # ELECTRA's run_finetuning puts the task head at n + 2, one level above the top layer's
    # n, so even the top encoder layer is decayed once relative to the head.
    return num_layers + 2


def layerwise_lr_groups(
    model: torch.nn.Module, lr: float, layer_decay: float, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with ELECTRA's layer-wise learning-rate decay.

    As in ELECTRA's fine-tuning code, with ``n`` encoder layers: the head gets
    ``lr``, encoder layer ``i`` (0-based) gets ``lr * layer_decay**(n + 1 - i)``,
    the embeddings ``lr * layer_decay**(n + 2)``.
    LayerNorm weights and biases get no weight decay. Each group carries ``depth``
    and ``param_names`` for inspection.
    """
    num_layers = int(model.config.num_hidden_layers)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = parameter_depth(name, num_layers)
        decay = not any(key in name for key in NO_DECAY)
        group = groups.get((depth, decay))
        if group is None:
            group = groups[(depth, decay)] = {
                "params": [],
                "param_names": [],
                "depth": depth,
                "lr": lr * layer_decay ** (num_layers + 2 - depth),
                "weight_decay": weight_decay if decay else 0.0,
            }
        group["params"].append(param)
        group["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up from 0 over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""

    # LambdaLR scales each group's own initial lr, so the layer-wise ratios are kept.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(warmup_steps, total_steps))


def train_loop(
    model: torch.nn.Module,
    lengths: Sequence[int],
    make_batch: Callable[[list[int]], dict[str, torch.Tensor]],
    *,
    lr: float,
    layer_decay: float,
    weight_decay: float,
    adam_eps: float,
    epochs: float,
    batch_size: int,
    warmup_fraction: float,
    seed: int,
    device: torch.device,
    logger: MetricLogger,
    name: str,
    progress: bool = False,
    log_prefix: str = "",
    precision: str = "auto",
) -> dict[str, Any]:
    """The one fine-tuning loop (GLUE, QA and NER share it): ELECTRA's recipe.

    AdamW over layer-wise learning-rate groups (head at ``lr``, each layer below
    ``layer_decay`` times the one above), linear warm-up over ``warmup_fraction``
    of the steps then linear decay to zero, clipping at ``MAX_GRAD_NORM``, and
    length-grouped batches (``lengths[i]`` of example i) that ``make_batch(indices)``
    turns into model inputs with their labels, padded to the batch's longest.
    ``epochs`` may be fractional. Logs ``train_loss`` and the head's ``lr`` every
    ``LOG_EVERY`` steps (``log_prefix.`` first when given). ``precision``: :func:`forward_loss`'s.

    Returns ``{"steps", "train_loss" (mean over the last epoch's steps: less noisy
    than one batch), "losses" (per step), "curve" (the logged points)}``.
    """
    from tqdm.auto import tqdm

    model.train()
    groups = layerwise_lr_groups(model, lr, layer_decay, weight_decay)
    head_group = max(range(len(groups)), key=lambda i: groups[i]["depth"])
    optimizer = torch.optim.AdamW(groups, lr=lr, eps=adam_eps, betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(len(lengths) / batch_size)
    total_steps = max(1, math.ceil(epochs * steps_per_epoch))
    scheduler = linear_schedule(optimizer, int(warmup_fraction * total_steps), total_steps)
    rng = np.random.default_rng(seed)
    loss_key, lr_key = (f"{log_prefix}.{key}" if log_prefix else key for key in ("train_loss", "lr"))

    losses: list[float] = []
    curve: list[dict[str, float]] = []
    step = 0
    # A bar on a terminal; elsewhere (DVC, CI, a worker's log) a line every few seconds.
    on_terminal = progress and sys.stderr.isatty()
    bar = tqdm(total=total_steps, desc=f"finetune {name}", disable=not on_terminal, unit="step")
    step_log = StepLog(f"finetune {name}", total_steps, enabled=not on_terminal)
    try:
        while step < total_steps:
            for batch_idx in length_grouped_batches(lengths, batch_size, rng):
                if step >= total_steps:
                    break
                batch = {k: v.to(device) for k, v in make_batch(batch_idx).items()}
                loss = forward_loss(model, batch, precision)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{name}: train loss became {loss.item()} at step {step + 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                lr_now = optimizer.param_groups[head_group]["lr"]
                optimizer.step()
                scheduler.step()
                step += 1
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                step_log.update(step, loss=losses[-1])
                if step % LOG_EVERY == 0 or step == total_steps:
                    window = losses[-LOG_EVERY:]
                    curve.append({"step": step, "train_loss": sum(window) / len(window), "lr": lr_now})
                    logger.log_metrics({loss_key: curve[-1]["train_loss"], lr_key: lr_now}, step)
    finally:
        bar.close()
    tail = losses[-steps_per_epoch:]
    return {"steps": step, "train_loss": sum(tail) / len(tail), "losses": losses, "curve": curve}


def pad_id(tokenizer: Any) -> int:
    """The id batches are padded with (0 when the tokenizer has no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def pad_inputs(features: Sequence[Mapping[str, Sequence[int]]], pad: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``token_type_ids`` and ``attention_mask`` of a batch, each ``(batch, longest)``:
    padded to the batch's own longest feature (dynamic padding). Each kind adds its labels."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad, dtype=torch.long)        # (B, T)
    token_type_ids = torch.zeros((len(features), width), dtype=torch.long)       # (B, T)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)       # (B, T)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[row, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
        token_type_ids[row, :n] = torch.tensor(f["token_type_ids"], dtype=torch.long)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}


def save_finetuned(model: torch.nn.Module, tokenizer: Any, folder: Path) -> Path:
    """Save model + tokenizer to ``folder`` (eval mode), swapped into place only once complete."""
    model.eval()
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder
