"""GLUE fine-tuning of the pretrained discriminator with ELECTRA's recipe.

For every task in ``cfg.tasks`` the discriminator is loaded as an
``ElectraForSequenceClassification`` (a fresh classification head; STS-B is a
one-output regression) and trained with AdamW, layer-wise learning-rate decay,
linear warm-up then linear decay to zero, and gradient clipping at 1.0.
Batches are padded only to their own longest sequence and drawn from
length-sorted buckets so that little compute goes to padding.

Outputs, per task and seed: ``{output_dir}/{task}/seed-{seed}/model/`` (model +
tokenizer, swapped into place only once complete); per task
``{output_dir}/{task}/result.json``. Each task writes only its own folder, so the
tasks fan out (Prefect ``.map``, DVC ``foreach``); a run over all tasks adds
``{output_dir}/summary.json``.
"""

from __future__ import annotations

import math
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from electra.core.config import FinetuneConfig
from electra.core.files import atomic_dir, write_json
from electra.tasks.glue import Example, TaskSpec, get_task, read_task, task_file
from electra.core.logs import StepLog, expected_new_head
from electra.core.runtime import linear_warmup_decay, resolve_device
from electra.core.tracking import MetricLogger, NullLogger

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
    ``batch_size`` for ``task`` (its ``task_overrides`` entry wins)."""
    override = cfg.task_overrides.get(task)
    settings = {"epochs": cfg.epochs, "lr": cfg.lr, "max_train_examples": cfg.max_train_examples,
                "max_seq_length": cfg.max_seq_length, "batch_size": cfg.batch_size}
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
) -> dict[str, Any]:
    """The one fine-tuning loop (GLUE, QA and NER share it): ELECTRA's recipe.

    AdamW over layer-wise learning-rate groups (head at ``lr``, each layer below
    ``layer_decay`` times the one above), linear warm-up over ``warmup_fraction``
    of the steps then linear decay to zero, clipping at ``MAX_GRAD_NORM``, and
    length-grouped batches (``lengths[i]`` of example i) that ``make_batch(indices)``
    turns into model inputs with their labels, padded to the batch's longest.
    ``epochs`` may be fractional. Logs ``train_loss`` and the head's ``lr`` every
    ``LOG_EVERY`` steps (prefixed with ``log_prefix.`` when given).

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
                loss = model(**batch).loss
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


def save_finetuned(model: torch.nn.Module, tokenizer: Any, folder: Path) -> Path:
    """Save model + tokenizer to ``folder`` (eval mode), swapped into place only once complete."""
    model.eval()
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


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
    with expected_new_head("the classifier head of a fine-tuning run"):
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


def _check_inputs(cfg: FinetuneConfig, tasks: Sequence[str] | None = None) -> dict[str, str]:
    """Fail before any training when a task cannot run, rather than after the first one.

    Returns the GLUE tasks that have no train split here (QNLI), with the reason:
    they are skipped and reported as evaluation-only, not trained.
    """
    if not Path(cfg.model_dir).is_dir():
        raise FileNotFoundError(
            f"{cfg.model_dir}: pretrained discriminator not found (run the pretrain stage first)"
        )
    skipped: dict[str, str] = {}
    for task in cfg.tasks if tasks is None else tasks:
        if task == "qa":
            files = [cfg.qa_file] + ([cfg.qa_dev_file] if cfg.qa_dev_file else [])
        elif task == "ner":
            files = [cfg.ner_train_file, cfg.ner_dev_file]
        else:
            path = task_file(cfg.data_dir, task, "train")
            if not path.is_file():
                skipped[task] = f"{path} does not exist: no train split, evaluation-only here"
            continue
        for file in files:
            if not Path(file).is_file():
                raise FileNotFoundError(f"{file}: data file for task {task!r} not found (finetune params)")
    return skipped


def qa_splits(cfg: FinetuneConfig) -> tuple[list, list, str]:
    """QA train and dev examples, and how the dev set was made (said in the report)."""
    from electra.tasks.qa import read_squad, split_by_article

    examples = read_squad(cfg.qa_file)
    if cfg.qa_dev_file:
        return examples, read_squad(cfg.qa_dev_file), f"dev = {cfg.qa_dev_file}"
    train, dev = split_by_article(examples, cfg.qa_dev_fraction, cfg.seed)
    titles = len({ex.title for ex in dev})
    return train, dev, (f"{cfg.qa_file} split by article (no article in both): {len(train)} train / "
                        f"{len(dev)} dev questions, {titles} dev articles, seed {cfg.seed}")


def ner_splits(cfg: FinetuneConfig) -> tuple[list, list, list[str]]:
    """NER train and dev sentences and the label list (from the train file)."""
    from electra.tasks.ner import label_list, read_conll

    train = read_conll(cfg.ner_train_file)
    dev = read_conll(cfg.ner_dev_file)
    return train, dev, label_list(train)


def _finetune_glue(
    cfg: FinetuneConfig, task: str, seed: int, run_dir: Path, logger: MetricLogger, progress: bool,
    device: torch.device,
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    spec = get_task(task)
    settings = task_settings(cfg, task)
    started = time.perf_counter()
    # Reseed per task and seed so one run's result does not depend on which ran before it.
    seed_everything(seed)

    # The training subset is the same for every seed: the seeds measure fine-tuning noise.
    train = subsample(read_task(cfg.data_dir, task, "train"), settings["max_train_examples"], cfg.seed)
    if not train:
        raise ValueError(f"{task_file(cfg.data_dir, task, 'train')}: no training examples")
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_dir)
    features = encode(tokenizer, train, settings["max_seq_length"])
    lengths = [len(f["input_ids"]) for f in features]
    labels = _labels_tensor(spec, train)

    model = _load_model(cfg, spec).to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def make_batch(idx: list[int]) -> dict[str, torch.Tensor]:
        return {**collate([features[i] for i in idx], pad_id), "labels": labels[idx]}

    batch_size = settings["batch_size"]
    trained = train_loop(
        model, lengths, make_batch, lr=settings["lr"], layer_decay=cfg.layer_decay,
        weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps, epochs=settings["epochs"], batch_size=batch_size,
        warmup_fraction=cfg.warmup_fraction, seed=seed, device=device, logger=logger, name=task, progress=progress,
    )

    model_dir = save_finetuned(model, tokenizer, run_dir / "model")
    return {
        "train_examples": len(train),
        "steps": trained["steps"],
        "epochs": settings["epochs"],
        "lr": settings["lr"],
        "batch_size": batch_size,
        "max_seq_length": settings["max_seq_length"],
        "train_loss": trained["train_loss"],
        "curve": trained["curve"],
        "seconds": time.perf_counter() - started,
        "model_dir": str(model_dir),
        "num_labels": spec.num_labels,
    }


def _finetune_qa(cfg: FinetuneConfig, seed: int, run_dir: Path, logger: MetricLogger, progress: bool,
                 device: torch.device) -> dict[str, Any]:
    from electra.tasks.qa import train_qa

    settings = task_settings(cfg, "qa")
    train, _, _ = qa_splits(cfg)
    train = subsample(train, settings["max_train_examples"], cfg.seed)
    result = train_qa(
        cfg.model_dir, train, run_dir, lr=settings["lr"], layer_decay=cfg.layer_decay,
        epochs=settings["epochs"], batch_size=settings["batch_size"], max_seq_length=settings["max_seq_length"],
        doc_stride=cfg.doc_stride, warmup_fraction=cfg.warmup_fraction, weight_decay=cfg.weight_decay,
        adam_eps=cfg.adam_eps, dropout=cfg.dropout, seed=seed, device=device, logger=logger,
        log_prefix="", progress=progress,
    )
    return {**result, "epochs": settings["epochs"], "lr": settings["lr"], "batch_size": settings["batch_size"],
            "max_seq_length": settings["max_seq_length"], "doc_stride": cfg.doc_stride}


def _finetune_ner(cfg: FinetuneConfig, seed: int, run_dir: Path, logger: MetricLogger, progress: bool,
                  device: torch.device) -> dict[str, Any]:
    from electra.tasks.ner import train_ner

    settings = task_settings(cfg, "ner")
    train, _, labels = ner_splits(cfg)
    train = subsample(train, settings["max_train_examples"], cfg.seed)
    result = train_ner(
        cfg.model_dir, train, labels, run_dir, lr=settings["lr"], layer_decay=cfg.layer_decay,
        epochs=settings["epochs"], batch_size=settings["batch_size"], max_seq_length=settings["max_seq_length"],
        warmup_fraction=cfg.warmup_fraction, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps,
        dropout=cfg.dropout, seed=seed, device=device, logger=logger, log_prefix="", progress=progress,
    )
    return {**result, "epochs": settings["epochs"], "lr": settings["lr"], "batch_size": settings["batch_size"],
            "max_seq_length": settings["max_seq_length"]}


def task_kind(task: str) -> str:
    """``"glue"``, ``"qa"`` or ``"ner"``."""
    return task if task in ("qa", "ner") else "glue"


def seeds_of(cfg: FinetuneConfig) -> list[int]:
    """The fine-tuning seeds: ``seed, seed + 1, ...`` (``seeds`` of them)."""
    return [cfg.seed + i for i in range(cfg.seeds)]


def finetune_task(cfg: FinetuneConfig, task: str, logger: MetricLogger | None = None, progress: bool = True,
                  device: Any = None) -> dict[str, Any]:
    """Fine-tune the pretrained discriminator on one task, once per seed.

    Writes ``{output_dir}/{task}/seed-{seed}/model/`` (model + tokenizer) and
    ``.../result.json`` per run, and ``{output_dir}/{task}/result.json``: every seed's
    result, with ``model_dir`` = the first seed's model (the one registered: fixed in
    advance, never the best on dev). A GLUE task without a train split here (QNLI) is
    not trained: its ``result.json`` says ``skipped`` and why. Each seed is a nested run
    under ``logger`` with its loss curve. Returns the task's ``result.json`` content.

    One task writes only under its own folder, so tasks can run in parallel (the Prefect
    fan-out, the ``finetune@<task>`` DVC stages) and in any order.
    """
    if task not in cfg.tasks:
        raise ValueError(f"task {task!r} is not in finetune.tasks ({', '.join(cfg.tasks)})")
    logger = logger or NullLogger()
    task_dir = Path(cfg.output_dir) / task
    skipped = _check_inputs(cfg, [task])
    if task in skipped:
        summary: dict[str, Any] = {"task": task, "kind": task_kind(task), "skipped": skipped[task]}
        write_json(task_dir / "result.json", summary)
        return summary
    device = device if device is not None else resolve_device(cfg.device)
    runs: dict[str, dict[str, Any]] = {}
    for seed in seeds_of(cfg):
        run_dir = task_dir / f"seed-{seed}"
        with logger.child(f"{task}/seed-{seed}", {"task": task, "seed": str(seed)}) as run_logger:
            kind = task_kind(task)
            if kind == "glue":
                result = _finetune_glue(cfg, task, seed, run_dir, run_logger, progress, device)
            elif kind == "qa":
                result = _finetune_qa(cfg, seed, run_dir, run_logger, progress, device)
            else:
                result = _finetune_ner(cfg, seed, run_dir, run_logger, progress, device)
        result = {"task": task, "seed": seed, "device": str(device), **result}
        write_json(run_dir / "result.json", result)
        runs[str(seed)] = result
    first = runs[str(seeds_of(cfg)[0])]
    summary = {
        "task": task,
        "kind": task_kind(task),
        "seeds": seeds_of(cfg),
        "model_dir": first["model_dir"],
        "max_seq_length": first["max_seq_length"],
        "train_loss": float(np.median([r["train_loss"] for r in runs.values()])),
        "seconds": sum(r["seconds"] for r in runs.values()),
        "runs": runs,
    }
    write_json(task_dir / "result.json", summary)
    return summary


def finetune_results(finetune_dir: str | Path, tasks: Sequence[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """The per-task ``result.json`` files under ``finetune_dir``: (trained tasks, skipped tasks with why).

    Raises FileNotFoundError naming the first task that has not been fine-tuned.
    """
    from electra.core.files import read_json

    trained: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for task in tasks:
        path = Path(finetune_dir) / task / "result.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no fine-tuned models for {task!r} (run the finetune stage first)")
        result = read_json(path)
        if "skipped" in result:
            skipped[task] = result["skipped"]
        else:
            trained[task] = result
    return trained, skipped


def finetune(cfg: FinetuneConfig, logger: MetricLogger | None = None, progress: bool = True,
             tasks: Sequence[str] | None = None) -> dict:
    """Fine-tune the pretrained discriminator on ``tasks`` (default: every task in ``cfg.tasks``).

    Each task is :func:`finetune_task`. All inputs are checked before the first task
    trains. A run over every task also writes ``{output_dir}/summary.json``.

    Returns ``{"tasks": {task: {"model_dir", "train_loss", "seconds"}}, "skipped", "output_dir"}``.
    """
    chosen = list(tasks) if tasks is not None else list(cfg.tasks)
    unknown = [t for t in chosen if t not in cfg.tasks]
    if unknown:
        raise ValueError(f"tasks {unknown} are not in finetune.tasks ({', '.join(cfg.tasks)})")
    _check_inputs(cfg, chosen)
    device = resolve_device(cfg.device)
    output_dir = Path(cfg.output_dir)
    done: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for task in chosen:
        summary = finetune_task(cfg, task, logger, progress, device)
        if "skipped" in summary:
            skipped[task] = summary["skipped"]
        else:
            done[task] = {k: summary[k] for k in ("model_dir", "train_loss", "seconds")}
    if tasks is None:
        write_json(output_dir / "summary.json", {
            "tasks": list(done), "skipped": skipped, "seeds": seeds_of(cfg),
            "results": {t: str(output_dir / t / "result.json") for t in done},
        })
    return {"tasks": done, "skipped": skipped, "output_dir": str(output_dir)}


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
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros((len(features), num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for idx in longest_first_batches([len(f["input_ids"]) for f in features], batch_size):
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
