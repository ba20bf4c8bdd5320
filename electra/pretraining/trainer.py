"""Stage ``pretrain``: one linear training loop for ELECTRA (or the MLM baseline).

Read :func:`pretrain` top to bottom: build, resume, loop, export. Below it, the pieces
it calls: the train step, the evaluation, the metrics window, the non-finite policy.
The data stream lives in ``batches.py``, checkpoints and resume in ``checkpoint.py``,
data parallelism in ``distributed.py``, FLOP accounting in ``flops.py``.

Output layout (``pretrain.output_dir``)::

    discriminator/      ElectraForPreTraining + tokenizer (save_pretrained)
    generator/          ElectraForMaskedLM + tokenizer
    checkpoints/        step-0000100/{model.safetensors,trainer_state.pt} (resume)
    snapshots/          step-NNNNNNN/: the discriminator at each of pretrain.snapshot_steps
    history.csv         the logged curve (for ``dvc plots``): training columns, and the
                        validation's (``val_*``: loss, replaced-token AUC, information
                        gain, generator perplexity, effective rank, ...) at each log step
    metrics.json        final train and validation numbers (for ``dvc metrics``)
    result.json         what the later stages need (paths, hashes, numbers; ``collapse``)

Re-running the same command after a kill resumes from the newest checkpoint
whose configuration matches; the data order and masking are functions of the
step, so the resumed run sees exactly what the uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from electra.core.config import PretrainConfig
from electra.core.files import atomic_dir, atomic_open, read_json, sha256_tree, write_json
from electra.core.logs import StepLog
from electra.core.runtime import autocast, enable_tf32, linear_warmup_decay, resolve_precision
from electra.core.tracking import MetricLogger, NullLogger
from electra.data.packed import PackedDataset
from electra.pretraining.batches import BatchPrefetcher, make_batch, token_count, training_batches
from electra.pretraining.checkpoint import CheckpointFolder, Checkpointer, Resumed, resume_key
from electra.pretraining.corpus import check_corpus_size, corpus_tokens
from electra.pretraining.distributed import (Distributed, any_rank, barrier, global_mean_loss, gradient_sync,
                                             place_process, run_compiled, wrap_for_training)
from electra.pretraining.dropout import sdpa_backend
from electra.pretraining.flops import PeakFlops, device_peak_flops, training_flops_per_token
from electra.pretraining.learning import ValidationProbe, collapse_warning
from electra.pretraining.model import ElectraPretrainer

log = logging.getLogger(__name__)

# The pretraining schedule: warm-up then linear decay to 0 at max_steps.
linear_schedule = linear_warmup_decay

# With on_nonfinite: skip, this many non-finite steps in a row mean divergence: stop.
MAX_CONSECUTIVE_SKIPS = 10


def pretrain(cfg: PretrainConfig, logger: MetricLogger | None = None, progress: bool = True) -> dict:
    """Pretrain ELECTRA on the packed examples in ``cfg.input_dir``; save both models.

    Resumes from the newest matching checkpoint in ``{output_dir}/checkpoints``.
    Returns paths, hashes and final metrics.
    """
    # 1. Build: the data, this process's device, the model, its optimizer and schedule.
    run = build_run(cfg, logger or NullLogger())
    checkpointer = Checkpointer(CheckpointFolder(run.out_dir / "checkpoints", cfg.keep_checkpoints),
                                resume_key(cfg, run.data_hash), run.model, run.optimizer, run.scheduler, run.device)

    # 2. Resume from the newest checkpoint of this configuration, or start clean.
    resumed = checkpointer.resume()
    if resumed is None:
        if run.ctx.is_main:
            # Checkpoints of another configuration would be resumed by mistake later
            # (or outrank ours in rotation): a fresh start removes them.
            checkpointer.folder.clear()
        torch.manual_seed(cfg.seed + run.ctx.rank)  # dropout draws from the global RNG: one stream per rank
    step, history = (resumed.step, resumed.history) if resumed else (0, [])

    # 3. Loop: one optimizer step per iteration; snapshots, log rows and checkpoints on their schedules.
    started = time.time()
    policy = NonFinitePolicy(cfg.on_nonfinite, checkpointer.folder)
    window = MetricsWindow(run.flops_per_token, run.peak_flops)
    pin = run.device.type == "cuda"
    with stop_on_sigterm() as stop, \
            contextlib.closing(training_batches(run.train_set, cfg, run.rows, run.pad_id, step, pin)) as batches:
        ticker = Progress(cfg.max_steps, step, progress, run.ctx.is_main)
        while step < cfg.max_steps:
            grad_norm = train_step(run, batches, step, window, policy)
            step += 1
            if step in cfg.snapshot_steps and run.ctx.is_main:
                save_snapshot(run, step)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                history.append(log_step(run, window, step, policy.skipped, grad_norm))
            ticker.update(step, history)
            # Ranks agree on stopping at log steps only (a collective is a host sync); alone, at once.
            stopping = any_rank(stop.is_set(), run.ctx) if run.ctx.world == 1 or step % cfg.log_every == 0 else False
            if step % cfg.checkpoint_every == 0 or stopping:
                rng = checkpointer.gather_rng()   # every rank's RNG: a collective, before the rank test
                if run.ctx.is_main:
                    checkpointer.save(step, history, rng)
                barrier(run.ctx)
                if stopping:
                    raise SystemExit(f"pretrain: stopped by SIGTERM at step {step}; checkpoint saved, rerun to resume")
        ticker.close()

    # 4. Export: a last checkpoint; then rank 0 validates, saves both models and the results.
    rng = checkpointer.gather_rng()
    if run.ctx.is_main and checkpointer.folder.latest_step() != step:
        checkpointer.save(step, history, rng)
    train_seconds = time.time() - started
    barrier(run.ctx)
    if not run.ctx.is_main:
        return {"output_dir": str(run.out_dir), "rank": run.ctx.rank, "steps": step}
    validation = final_validation(run, history, step)
    collapse = collapse_warning(validation, cfg.model.hidden_size)
    if collapse:
        log.warning("pretrain: %s", collapse)
    hashes = export_models(run)
    metrics = write_curves(run.out_dir, history, validation, step)
    result = {**_result(run, step, hashes, metrics, resumed, train_seconds), "collapse": collapse}
    write_json(run.out_dir / "result.json", result)
    return result


@dataclass
class Run:
    """What the loop works with, built once by :func:`build_run`."""

    cfg: PretrainConfig
    ctx: Distributed
    device: torch.device
    autocast_dtype: torch.dtype | None     # None: fp32
    tokenizer: Any
    train_set: PackedDataset
    valid_set: PackedDataset | None
    data_hash: str | None                  # the tokenized data's content hash
    model: ElectraPretrainer               # checkpoints and exports read this one
    step_model: torch.nn.Module            # what the step calls: model under DDP and/or compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    flops_per_token: float
    peak_flops: PeakFlops                  # MFU's denominators: datasheet peak, measured matmul
    logger: MetricLogger
    sdpa: str = ""                         # which SDPA kernel attention gets (logged, in result.json)

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def rows(self) -> range:
        return self.ctx.rows(self.cfg.batch_size)

    def autocast(self) -> torch.autocast:
        return autocast(self.device, self.autocast_dtype)


def build_run(cfg: PretrainConfig, logger: MetricLogger) -> Run:
    """Data, device, model, optimizer and schedule, in the order that fixes the initial weights.

    The weights are drawn right after ``torch.manual_seed(cfg.seed)``: anything that draws
    from the global RNG must come after the model (the matmul benchmark does).
    """
    tokenizer, train_set, valid_set, summary = _load_data(cfg)
    ctx, device = place_process(cfg.device, cfg.batch_size)
    enable_tf32()   # CUDA: fp32 matmuls outside autocast on tensor cores; no-op on a CPU
    autocast_dtype = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    model = ElectraPretrainer(
        cfg.model, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id, special_token_ids=list(tokenizer.all_special_ids),
        objective=cfg.objective, mask_prob=cfg.mask_prob, mask_token_prob=cfg.mask_token_prob,
        temperature=cfg.temperature, generator_weight=cfg.generator_weight,
        discriminator_weight=cfg.discriminator_weight, max_predictions=cfg.max_predictions_per_seq,
    ).to(device)
    model.train()
    step_model = wrap_for_training(model, ctx, device, run_compiled(cfg, device))
    optimizer = build_optimizer(model, cfg, device)
    flops_per_token = training_flops_per_token(cfg.model, train_set.max_seq_length, len(tokenizer),
                                               cfg.mask_prob, cfg.objective)
    peak_flops = device_peak_flops(device, autocast_dtype or torch.float32)
    heads = cfg.model.num_heads
    sdpa = sdpa_backend(device, autocast_dtype, heads, cfg.model.hidden_size // heads, cfg.model.dropout)
    if ctx.is_main:
        log.info("pretrain: attention on SDPA %s; torch.compile %s", sdpa, "on" if run_compiled(cfg, device) else "off")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(cfg.warmup_steps, cfg.max_steps))
    return Run(cfg, ctx, device, autocast_dtype, tokenizer, train_set, valid_set, summary.get("content_hash"),
               model, step_model, optimizer, scheduler, flops_per_token, peak_flops,
               # rank 0 logs, checkpoints and exports
               logger if ctx.is_main else NullLogger(), sdpa)


def _load_data(cfg: PretrainConfig) -> tuple[Any, PackedDataset, PackedDataset | None, dict]:
    """The tokenizer, the packed splits and the summary ``electra tokenize`` wrote."""
    from transformers import AutoTokenizer

    input_dir = Path(cfg.input_dir)
    tokenizer_dir = input_dir / "tokenizer"
    if not tokenizer_dir.exists():
        raise FileNotFoundError(f"{tokenizer_dir}: not found; run `electra tokenize` first")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train_set = PackedDataset(input_dir, "train")
    try:
        valid_set = PackedDataset(input_dir, "validation")
    except FileNotFoundError:
        valid_set = None
    summary = read_json(input_dir / "summary.json")
    # Before anything is built: a schedule that would read this corpus dozens of times stops here.
    check_corpus_size(cfg, corpus_tokens(summary, len(train_set), train_set.max_seq_length),
                      train_set.max_seq_length)
    if train_set.max_seq_length > cfg.model.max_position_embeddings:
        raise ValueError(
            f"{input_dir}: examples are {train_set.max_seq_length} tokens long but "
            f"pretrain.model.max_position_embeddings is {cfg.model.max_position_embeddings}"
        )
    return tokenizer, train_set, valid_set, summary


def build_optimizer(model: torch.nn.Module, cfg: PretrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only (not LayerNorm, biases)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():  # shared tensors are listed once
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
        # One fused kernel over all parameters (CUDA and, since torch 2.4, CPU): ~3x
        # faster than the per-tensor-list default at ELECTRA-Small on this CPU.
        fused=device.type in ("cuda", "cpu"),
    )


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[threading.Event]:
    """An event that SIGTERM sets: the loop checkpoints at the next step boundary, then exits.

    The previous handler is back on the way out. Only the main thread may install a
    handler; elsewhere (a worker thread) the event is never set.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def train_step(run: Run, batches: BatchPrefetcher, step: int, window: MetricsWindow,
               policy: NonFinitePolicy) -> torch.Tensor:
    """One optimizer step over ``grad_accum_steps`` micro-batches; returns the gradient norm.

    The host reads back one flag per step (is everything finite?) and nothing else: the
    metrics stay on the device until the window's log row, the token count comes from the
    host batch, and the step has static shapes (tests/pretraining/test_static_step.py
    counts the syncs). A non-finite step goes to ``policy`` before the optimizer can
    change a weight with it.
    """
    cfg, ctx = run.cfg, run.ctx
    run.optimizer.zero_grad(set_to_none=True)
    finite = torch.ones((), dtype=torch.bool, device=run.device)
    for micro in range(cfg.grad_accum_steps):
        host_batch = batches.next((step, micro))
        tokens = token_count(host_batch) * ctx.world                   # numpy, on the host: no sync
        batch = {k: v.to(run.device, non_blocking=True) for k, v in host_batch.items()}  # with row_keys
        with gradient_sync(run.step_model, ctx, last_micro=micro == cfg.grad_accum_steps - 1):
            with run.autocast():
                out = run.step_model(**batch)
            loss = (global_mean_loss(out, ctx, cfg.generator_weight, cfg.discriminator_weight)
                    if ctx.world > 1 else out.loss)
            (loss / cfg.grad_accum_steps).backward()
        finite &= torch.isfinite(loss.detach())
        window.add(step_metrics(out), tokens)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.max_grad_norm)
    finite &= torch.isfinite(grad_norm)
    if policy.allows_step(bool(finite), step, loss.detach(), grad_norm):  # the one host sync per step
        run.optimizer.step()
    else:
        # Skip this batch: no optimizer step; the schedule and the data order move on.
        window.drop(cfg.grad_accum_steps)
        run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    return grad_norm


class NonFinitePolicy:
    """What a step with a non-finite loss or gradient does (``pretrain.on_nonfinite``).

    ``stop``: raise before the optimizer step, naming the checkpoint a rerun resumes from.
    ``skip``: drop the batch, unless more than :data:`MAX_CONSECUTIVE_SKIPS` steps in a
    row were non-finite: that is divergence, and it stops as ``stop`` does.
    """

    def __init__(self, mode: str, checkpoints: CheckpointFolder) -> None:
        self.mode = mode
        self.checkpoints = checkpoints
        self.skipped = 0        # steps skipped by this process (the log's skipped_steps)
        self.consecutive = 0

    def allows_step(self, finite: bool, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """True when the optimizer may step; False to skip the batch; raises to stop."""
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        if self.mode == "stop" or self.consecutive > MAX_CONSECUTIVE_SKIPS:
            raise FloatingPointError(self._message(step, float(loss), float(grad_norm)))
        self.skipped += 1
        return False

    def _message(self, step: int, loss: float, grad_norm: float) -> str:
        """Why pretraining stopped, where it can resume from, and what to change."""
        saved = self.checkpoints.list()
        where = f"the last checkpoint is {saved[-1]}" if saved else "no checkpoint was written yet"
        reason = (f"{self.consecutive} non-finite steps in a row (on_nonfinite: skip)" if self.mode == "skip"
                  else f"loss {loss}, gradient norm {grad_norm}")
        return (f"pretrain: non-finite loss or gradient at step {step} ({reason}); stopped before the optimizer "
                f"step, so no weight was changed by it; {where}, and a rerun resumes from it. Lower pretrain.lr, "
                "raise pretrain.warmup_steps, use pretrain.precision: fp32, or set pretrain.on_nonfinite: skip.")


def step_metrics(out) -> dict[str, torch.Tensor]:
    """The step's metrics as 0-d tensors on the device.

    They are read back once per log window (:func:`average`), not per step: each
    ``.item()`` would make the host wait for the GPU.
    """
    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return num.float() / den.float().clamp(min=1)

    metrics = {
        "loss": out.loss.detach(),
        "generator_loss": out.generator_loss.detach(),
        "generator_accuracy": ratio(out.generator_correct, out.masked_count),
    }
    if out.is_replaced is not None:
        # Sums over [B, L] (both are False at padding): static shapes, no boolean indexing.
        labels, preds = out.is_replaced, out.disc_predictions
        true_positives = (labels & preds).sum()
        metrics.update(
            discriminator_loss=out.discriminator_loss.detach(),
            discriminator_accuracy=ratio(((labels == preds) & out.active).sum(), out.active_count),
            discriminator_precision=ratio(true_positives, preds.sum()),
            discriminator_recall=ratio(true_positives, labels.sum()),
            replaced_fraction=ratio(labels.sum(), out.active_count),
        )
    return metrics


def average(rows: list[dict[str, torch.Tensor | float]]) -> dict[str, float]:
    """Mean of each metric over the rows (tensors or floats), with one device-to-host transfer."""
    if not rows:
        return {}
    keys = list(rows[0])
    table = torch.stack([torch.stack([torch.as_tensor(row[k], dtype=torch.float64) for k in keys])
                         for row in rows])                                   # [rows, metrics]
    return dict(zip(keys, table.mean(dim=0).tolist()))


class MetricsWindow:
    """The micro-steps since the last log row: their metrics (device tensors) and the tokens
    they processed, which give the throughput and the model FLOPs utilisation."""

    def __init__(self, flops_per_token: float, peak_flops: PeakFlops) -> None:
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.reset()

    def reset(self) -> None:
        self.rows: list[dict[str, torch.Tensor]] = []
        self.tokens = 0
        self.start = time.time()

    def add(self, metrics: dict[str, torch.Tensor], tokens: int) -> None:
        self.rows.append(metrics)
        self.tokens += tokens

    def drop(self, n: int) -> None:
        """Forget the metrics of the last ``n`` micro-steps (a skipped step); their tokens still took time."""
        del self.rows[-n:]

    def row(self, step: int, lr: float, skipped: int, grad_norm: torch.Tensor) -> dict[str, float]:
        """The log row for the window ending at ``step``."""
        tokens_per_s = self.tokens / max(1e-9, time.time() - self.start)
        return {"step": step, **average(self.rows), "lr": lr, "skipped_steps": skipped,
                "grad_norm": float(grad_norm), "tokens_per_s": tokens_per_s,
                # Model FLOPs utilisation against the chip's datasheet peak where known (else
                # the measured matmul rate), and against the measured rate; padding is no work.
                "mfu": tokens_per_s * self.flops_per_token / self.peak_flops.denominator,
                "mfu_measured": tokens_per_s * self.flops_per_token / self.peak_flops.measured}


def log_window(run: Run, window: MetricsWindow, step: int, skipped: int, grad_norm: torch.Tensor) -> dict[str, float]:
    """Close the window: its row goes to the tracker (and is returned for the history)."""
    row = window.row(step, run.scheduler.get_last_lr()[0], skipped, grad_norm)
    run.logger.log_metrics({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)
    window.reset()
    return row


def log_step(run: Run, window: MetricsWindow, step: int, skipped: int, grad_norm: torch.Tensor) -> dict[str, float]:
    """The log row at ``step``: the training window's, then (rank 0) the validation's as ``val_*`` columns.

    Validation leaves the training streams alone: it masks and samples with its own
    generator, and in eval mode dropout draws nothing from the global RNG, so the
    training curve is the one a run without it draws (the golden-curve test pins that).
    """
    row = log_window(run, window, step, skipped, grad_norm)
    validation = validate(run) if run.ctx.is_main else {}
    if validation:
        run.logger.log_metrics({f"validation/{k}": v for k, v in validation.items()}, step=step)
        row.update({f"{VALIDATION_PREFIX}{k}": v for k, v in validation.items()})
    window.reset()   # the validation's time is not training throughput
    return row


class Progress:
    """A bar on a terminal; elsewhere (DVC, CI, a worker's log) a line every few seconds."""

    def __init__(self, total: int, start: int, progress: bool, is_main: bool) -> None:
        from tqdm import tqdm

        on_terminal = progress and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=start, desc="pretrain", unit="step", disable=not on_terminal)
        self.lines = StepLog("pretrain", total, start=start, enabled=is_main and not on_terminal)

    def update(self, step: int, history: list[dict[str, float]]) -> None:
        """``step`` is done; show the newest logged loss and throughput."""
        last = history[-1] if history else None
        if last is not None:
            self.bar.set_postfix(loss=f"{last.get('loss', float('nan')):.3f}", refresh=False)
        self.bar.update(1)
        if last is not None:
            self.lines.update(step, loss=last.get("loss"), tokens_per_s=last.get("tokens_per_s"))

    def close(self) -> None:
        self.bar.close()


def save_snapshot(run: Run, step: int) -> None:
    """The discriminator as it is at ``step`` (``electra compare`` fine-tunes each)."""
    with atomic_dir(run.out_dir / "snapshots" / f"step-{step:07d}") as tmp:
        run.model.discriminator_for_export().save_pretrained(tmp)
        run.tokenizer.save_pretrained(tmp)


# The validation's columns in history.csv: val_loss, val_replaced_auc, ...
VALIDATION_PREFIX = "val_"


@torch.no_grad()
def validate(run: Run) -> dict[str, float]:
    """Objective and learning metrics on the first ``eval_batches`` validation batches.

    The same batches, masking and replacements every time (a generator seeded afresh),
    so successive log steps measure the model, not the draw. Besides the training
    metrics it gives the learning metrics of ``learning.py``: replaced-token AUC and
    information gain at non-pad, non-special positions, the generator's perplexity, and
    the exported encoder's effective rank and mean token cosine over non-pad tokens.
    """
    cfg, dataset = run.cfg, run.valid_set
    if dataset is None or cfg.eval_batches == 0 or len(dataset) == 0:
        return {}
    run.model.eval()
    rng = torch.Generator(device=run.device).manual_seed(cfg.seed + 1)
    rows, probe = [], ValidationProbe(cfg.model.hidden_size)
    for b in range(cfg.eval_batches):
        idx = np.arange(b * cfg.batch_size, min(len(dataset), (b + 1) * cfg.batch_size))
        if len(idx) == 0:
            break
        batch = make_batch(dataset, idx, run.pad_id, run.device)
        with run.autocast():
            out = run.model(**batch, generator=rng)
        rows.append(step_metrics(out))
        # [CLS] and [SEP] are never replaced: scoring them would inflate the AUC for free.
        probe.add(out, scored=out.active & ~run.model.special_mask(batch["input_ids"]))
    run.model.train()
    return {**average(rows), **probe.metrics()}


def final_validation(run: Run, history: list[dict[str, float]], step: int) -> dict[str, float]:
    """The validation of the exported weights: the last log row's when it is of ``step``
    (every run logs its last step), else (a history without them) measured now and logged."""
    last = history[-1] if history else {}
    if last.get("step") == step and any(k.startswith(VALIDATION_PREFIX) for k in last):
        return {k[len(VALIDATION_PREFIX):]: v for k, v in last.items() if k.startswith(VALIDATION_PREFIX)}
    validation = validate(run)
    if validation:
        run.logger.log_metrics({f"validation/{k}": v for k, v in validation.items()}, step=step)
    return validation


def export_models(run: Run) -> dict[str, str]:
    """Save both models with the tokenizer, each folder swapped in only when complete; their hashes."""
    run.model.eval()
    exports = {"discriminator": run.model.discriminator_for_export(), "generator": run.model.generator}
    hashes = {}
    for name, module in exports.items():
        with atomic_dir(run.out_dir / name) as tmp:
            module.save_pretrained(tmp)
            run.tokenizer.save_pretrained(tmp)
        hashes[name] = sha256_tree(run.out_dir / name)
        run.logger.log_artifacts(str(run.out_dir / name), name)
    return hashes


def write_curves(out_dir: Path, history: list[dict[str, float]], validation: dict[str, float], step: int) -> dict:
    """``history.csv`` (every log row) and ``metrics.json`` (the last rows' mean, validation); the metrics."""
    with atomic_open(out_dir / "history.csv", "w", newline="", encoding="utf-8") as handle:
        fields = sorted({k for row in history for k in row}, key=lambda k: (k != "step", k))
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
    last = history[-1] if history else {}
    final_train = average([{k: v for k, v in r.items() if k != "step" and not k.startswith(VALIDATION_PREFIX)}
                           for r in history[-3:]]) if history else {}
    metrics = {
        "train": final_train,
        "validation": validation,
        "steps": step,
        "tokens_per_s": last.get("tokens_per_s", float("nan")),
    }
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def _result(run: Run, step: int, hashes: dict[str, str], metrics: dict, resumed: Resumed | None,
            train_seconds: float) -> dict:
    """``result.json``: what the later stages need (paths, hashes, numbers)."""
    out_dir = run.out_dir
    return {
        "output_dir": str(out_dir),
        "discriminator_dir": str(out_dir / "discriminator"),
        "generator_dir": str(out_dir / "generator"),
        "hashes": hashes,
        "objective": run.cfg.objective,
        "steps": step,
        "resumed_from": str(resumed.path) if resumed else None,
        "train_seconds": round(train_seconds, 3),
        "precision": str(run.autocast_dtype).replace("torch.", "") if run.autocast_dtype else "fp32",
        "flops_per_token": run.flops_per_token,
        "matmul_flops_per_s": run.peak_flops.measured,
        "peak_flops_per_s": run.peak_flops.table,
        "device_name": run.peak_flops.device_name,
        "device": str(run.device),
        "sdpa_backend": run.sdpa,
        "compiled": run_compiled(run.cfg, run.device),
        "world_size": run.ctx.world,
        "tokenize_hash": run.data_hash,
        "final": metrics,
    }
