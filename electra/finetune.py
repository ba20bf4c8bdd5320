"""GLUE fine-tuning of the pretrained discriminator with ELECTRA's recipe.

For every task in ``cfg.tasks`` the discriminator is loaded as an
``ElectraForSequenceClassification`` (a fresh classification head; STS-B is a
one-output regression) and trained with AdamW, layer-wise learning-rate decay,
linear warm-up then linear decay to zero, and gradient clipping at 1.0.
Batches are padded only to their own longest sequence and drawn from
length-sorted buckets so that little compute goes to padding.

Outputs, per task: ``{output_dir}/{task}/model/`` (model + tokenizer, swapped
into place only once complete) and ``{output_dir}/{task}/result.json``; plus
``{output_dir}/summary.json``.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from electra.config import FinetuneConfig
from electra.files import atomic_dir, write_json
from electra.glue import Example, TaskSpec, get_task, read_task, task_file
from electra.runtime import linear_warmup_decay, resolve_device
from electra.tracking import MetricLogger, NullLogger

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
    """Effective ``epochs``, ``lr`` and ``max_train_examples`` for ``task`` (overrides win)."""
    override = cfg.task_overrides.get(task)
    settings = {"epochs": cfg.epochs, "lr": cfg.lr, "max_train_examples": cfg.max_train_examples}
    if override is not None:
        for key in settings:
            value = getattr(override, key)
            if value is not None:
                settings[key] = value
    return settings


def subsample(examples: Sequence[Example], max_examples: int | None, seed: int) -> list[Example]:
    """At most ``max_examples`` examples, drawn without replacement by ``seed``, in file order."""
    if max_examples is None or len(examples) <= max_examples:
        return list(examples)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(examples), size=max_examples, replace=False))
    return [examples[i] for i in keep]


def encode(tokenizer: Any, examples: Sequence[Example], max_seq_length: int) -> list[dict[str, list[int]]]:
    """Tokenise examples (pairs as ``[CLS] a [SEP] b [SEP]``), truncated, not padded."""
    if not examples:
        return []
    texts_a = [ex.text_a for ex in examples]
    pair = examples[0].text_b is not None
    texts_b = [ex.text_b or "" for ex in examples] if pair else None
    enc = tokenizer(
        texts_a,
        texts_b,
        truncation=True,
        max_length=max_seq_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    return [
        {"input_ids": ids, "token_type_ids": types}
        for ids, types in zip(enc["input_ids"], enc["token_type_ids"], strict=True)
    ]


def collate(features: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest sequence (dynamic padding)."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(features), width), dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[row, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
        token_type_ids[row, :n] = torch.tensor(f["token_type_ids"], dtype=torch.long)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}


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


def _labels_tensor(spec: TaskSpec, examples: Sequence[Example]) -> torch.Tensor:
    if spec.is_regression:
        return torch.tensor([float(ex.label) for ex in examples], dtype=torch.float32)
    return torch.tensor([int(ex.label) for ex in examples], dtype=torch.long)


def _load_model(cfg: FinetuneConfig, spec: TaskSpec):
    from transformers import ElectraForSequenceClassification

    if spec.is_regression:
        label_kwargs: dict[str, Any] = {"num_labels": 1, "problem_type": "regression"}
    else:
        assert spec.labels is not None
        label_kwargs = {
            "num_labels": spec.num_labels,
            "problem_type": "single_label_classification",
            "id2label": dict(enumerate(spec.labels)),
            "label2id": {label: i for i, label in enumerate(spec.labels)},
        }
    return ElectraForSequenceClassification.from_pretrained(
        cfg.model_dir,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        # None would fall back to hidden_dropout_prob anyway; explicit beats a stale pretrain value.
        classifier_dropout=cfg.dropout,
        # Fine-tune in fp32 whatever dtype the checkpoint was saved in.
        dtype=torch.float32,
        **label_kwargs,
    )


def _check_inputs(cfg: FinetuneConfig) -> None:
    """Fail before any training when a task cannot run, rather than after the first one."""
    if not Path(cfg.model_dir).is_dir():
        raise FileNotFoundError(
            f"{cfg.model_dir}: pretrained discriminator not found (run the pretrain stage first)"
        )
    for task in cfg.tasks:
        path = task_file(cfg.data_dir, task, "train")
        if not path.is_file():
            raise ValueError(
                f"GLUE task {task!r} is evaluation-only here: {path} does not exist "
                f"(its train split is not in the data); remove it from finetune.tasks"
            )


def _finetune_task(
    cfg: FinetuneConfig, task: str, logger: MetricLogger, progress: bool, device: torch.device
) -> dict[str, Any]:
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    spec = get_task(task)
    settings = task_settings(cfg, task)
    started = time.perf_counter()
    # Reseed per task so one task's result does not depend on which tasks ran before it.
    seed_everything(cfg.seed)

    train = subsample(read_task(cfg.data_dir, task, "train"), settings["max_train_examples"], cfg.seed)
    if not train:
        raise ValueError(f"{task_file(cfg.data_dir, task, 'train')}: no training examples")
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_dir)
    features = encode(tokenizer, train, cfg.max_seq_length)
    lengths = [len(f["input_ids"]) for f in features]
    labels = _labels_tensor(spec, train)

    model = _load_model(cfg, spec).to(device)
    model.train()
    groups = layerwise_lr_groups(model, settings["lr"], cfg.layer_decay, cfg.weight_decay)
    head_group = max(range(len(groups)), key=lambda i: groups[i]["depth"])
    optimizer = torch.optim.AdamW(groups, lr=settings["lr"], eps=cfg.adam_eps, betas=(0.9, 0.999))

    steps_per_epoch = math.ceil(len(features) / cfg.batch_size)
    total_steps = max(1, math.ceil(settings["epochs"] * steps_per_epoch))
    warmup_steps = int(cfg.warmup_fraction * total_steps)
    scheduler = linear_schedule(optimizer, warmup_steps, total_steps)
    rng = np.random.default_rng(cfg.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    losses: list[float] = []
    step = 0
    bar = tqdm(total=total_steps, desc=f"finetune {task}", disable=not progress, unit="step")
    try:
        while step < total_steps:
            for batch_idx in length_grouped_batches(lengths, cfg.batch_size, rng):
                if step >= total_steps:
                    break
                batch = collate([features[i] for i in batch_idx], pad_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                batch_labels = labels[batch_idx].to(device)
                loss = model(**batch, labels=batch_labels).loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{task}: train loss became {loss.item()} at step {step + 1}")
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
                if step % LOG_EVERY == 0 or step == total_steps:
                    window = losses[-LOG_EVERY:]
                    logger.log_metrics(
                        {f"{task}.train_loss": sum(window) / len(window), f"{task}.lr": lr_now}, step
                    )
    finally:
        bar.close()

    # "Final" loss = mean over the last epoch's worth of steps: less noisy than one batch.
    tail = losses[-steps_per_epoch:]
    train_loss = sum(tail) / len(tail)

    task_dir = Path(cfg.output_dir) / task
    model_dir = task_dir / "model"
    model.eval()
    with atomic_dir(model_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    seconds = time.perf_counter() - started
    result = {
        "task": task,
        "train_examples": len(train),
        "steps": step,
        "epochs": settings["epochs"],
        "lr": settings["lr"],
        "batch_size": cfg.batch_size,
        "max_seq_length": cfg.max_seq_length,
        "train_loss": train_loss,
        "seconds": seconds,
        "model_dir": str(model_dir),
        "num_labels": spec.num_labels,
        "seed": cfg.seed,
        "device": str(device),
    }
    write_json(task_dir / "result.json", result)
    return result


def finetune(cfg: FinetuneConfig, logger: MetricLogger | None = None, progress: bool = True) -> dict:
    """Fine-tune the pretrained discriminator on every task in ``cfg.tasks``.

    Writes ``{output_dir}/{task}/model/`` (model + tokenizer, via ``save_pretrained``),
    ``{output_dir}/{task}/result.json`` and ``{output_dir}/summary.json``. Logs
    ``{task}.train_loss`` and ``{task}.lr`` to ``logger`` every few steps.
    Raises ValueError before training anything if a task has no train split
    (QNLI is evaluation-only here).

    Returns ``{"tasks": {task: {"model_dir", "train_loss", "seconds"}}, "output_dir"}``.
    """
    logger = logger or NullLogger()
    _check_inputs(cfg)
    device = resolve_device(cfg.device)
    output_dir = Path(cfg.output_dir)
    tasks: dict[str, dict[str, Any]] = {}
    result_paths: dict[str, str] = {}
    for task in cfg.tasks:
        result = _finetune_task(cfg, task, logger, progress, device)
        tasks[task] = {
            "model_dir": result["model_dir"],
            "train_loss": result["train_loss"],
            "seconds": result["seconds"],
        }
        result_paths[task] = str(output_dir / task / "result.json")
    write_json(output_dir / "summary.json", {"tasks": list(cfg.tasks), "results": result_paths})
    return {"tasks": tasks, "output_dir": str(output_dir)}


def predict_loaded(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    batch_size: int,
    max_seq_length: int,
    device: torch.device,
) -> np.ndarray:
    """:func:`predict` for a model and tokenizer already in memory (model already on ``device``)."""
    num_labels = int(model.config.num_labels)
    regression = model.config.problem_type == "regression" or num_labels == 1
    if not examples:
        return np.zeros((0,) if regression else (0, num_labels), dtype=np.float32)
    features = encode(tokenizer, examples, max_seq_length)
    # Longest first, so batches need little padding; outputs are put back in input order.
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros((len(features), num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = {k: v.to(device) for k, v in collate([features[i] for i in idx], pad_id).items()}
                logits = model(**batch).logits.float().cpu().numpy()
                out[idx] = logits
    finally:
        model.train(was_training)
    return out[:, 0] if regression else out


def predict(
    model_dir: str | Path,
    examples: Sequence[Example],
    batch_size: int = 64,
    max_seq_length: int = 128,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Outputs of the fine-tuned model in ``model_dir`` for ``examples``, in input order.

    Classification: logits of shape ``(n, num_labels)``. Regression (STS-B): scores
    of shape ``(n,)``. Batched with dynamic padding, in eval mode, without gradients.
    """
    from transformers import AutoTokenizer, ElectraForSequenceClassification

    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: fine-tuned model not found (run the finetune stage first)")
    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = ElectraForSequenceClassification.from_pretrained(path, dtype=torch.float32).to(dev)
    return predict_loaded(model, tokenizer, examples, batch_size, max_seq_length, dev)
