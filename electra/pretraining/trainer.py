"""Stage ``pretrain``: one linear training loop for ELECTRA (or the MLM baseline).

Output layout (``pretrain.output_dir``)::

    discriminator/      ElectraForPreTraining + tokenizer (save_pretrained)
    generator/          ElectraForMaskedLM + tokenizer
    checkpoints/        step-0000100/{model.safetensors,trainer_state.pt} (resume)
    snapshots/          step-NNNNNNN/: the discriminator at each of pretrain.snapshot_steps
    history.csv         the logged training curve (for ``dvc plots``)
    metrics.json        final train and validation numbers (for ``dvc metrics``)
    result.json         what the later stages need (paths, hashes, numbers)

Re-running the same command after a kill resumes from the newest checkpoint
whose configuration matches; the data order and masking are functions of the
step, so the resumed run sees exactly what the uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from electra.core.config import PretrainConfig
from electra.core.files import atomic_dir, atomic_open, read_json, sha256_tree, write_json
from electra.core.logs import StepLog
from electra.pretraining.model import ElectraPretrainer, matmul_flops_per_s, training_flops_per_token
from electra.core.runtime import linear_warmup_decay, resolve_device, resolve_precision, tune_cpu_allocator
from electra.data.tokenize import PackedDataset
from electra.core.tracking import MetricLogger, NullLogger

# Fields that change how the run is observed, not what it computes: a checkpoint
# written under other values of these can still be resumed.
_RESUME_NEUTRAL = {"input_dir", "output_dir", "compile", "on_nonfinite", "nproc_per_node", "log_every", "checkpoint_every", "keep_checkpoints", "eval_batches", "device", "snapshot_steps"}


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun launch (world 1 when launched plainly)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Distributed:
    """Join the process group that torchrun describes in the environment (nccl on GPU, gloo on CPU)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    ctx = Distributed(world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return ctx


def row_generators(step: int, micro: int, batch_size: int, accum_steps: int, seed: int,
                   rows: range, device: torch.device) -> list[torch.Generator]:
    """One generator per example, seeded by its position in the data stream.

    Masking and replacement sampling then depend on the example alone, not on the
    process or micro-batch it lands in: N data-parallel ranks reproduce a single
    process, and a resumed run reproduces the uninterrupted one.
    """
    first = (step * accum_steps + micro) * batch_size
    return [torch.Generator(device=device).manual_seed((seed * 1_000_003 + first + i) % (2**63 - 1)) for i in rows]


def _resume_key(cfg: PretrainConfig, data_hash: str | None) -> dict:
    """What a checkpoint must share with this run to be resumed: the config and the data."""
    key = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _RESUME_NEUTRAL}
    key["data_hash"] = data_hash
    return key


def batch_indices(step: int, micro: int, batch_size: int, accum_steps: int, n_examples: int, seed: int) -> np.ndarray:
    """Example indices of micro-batch ``micro`` of optimizer step ``step``.

    The order is a seeded permutation per epoch, so any step's batch can be
    recomputed from the step alone (exact resume without saving loader state).
    """
    first = (step * accum_steps + micro) * batch_size
    positions = np.arange(first, first + batch_size)
    epochs, offsets = np.divmod(positions, n_examples)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        where = epochs == epoch
        out[where] = _permutation(int(epoch), n_examples, seed)[offsets[where]]
    return out


_PERM_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(epoch: int, n: int, seed: int) -> np.ndarray:
    key = (epoch, n, seed)
    if key not in _PERM_CACHE:
        if len(_PERM_CACHE) > 4:
            _PERM_CACHE.clear()
        _PERM_CACHE[key] = np.random.default_rng([seed, epoch]).permutation(n)
    return _PERM_CACHE[key]


def load_batch(dataset: PackedDataset, indices: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Read rows (in stream order) at the full packed length, on the host.

    The padding columns are kept: per-row random draws are sized by the row length,
    so a width that depended on the other rows in the batch would change an
    example's masking with its batch mates (and break data-parallel equivalence).
    Packed examples are nearly all full-length, so trimming would rarely save work.
    """
    ids, types = dataset.get(indices)
    return {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy((ids != pad_id).astype(np.int64)),
    }


def make_batch(dataset: PackedDataset, indices: np.ndarray, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """:func:`load_batch` moved to ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in load_batch(dataset, indices, pad_id).items()}


class BatchPrefetcher:
    """Loads the batches of the coming micro-steps on a background thread.

    The memmap read and (on CUDA) the copy into pinned memory happen while the
    previous step computes, so the step only issues an asynchronous host-to-device
    copy and never waits on the disk. Batches come out in the order of ``keys``,
    exactly as reading them inline would give.
    """

    def __init__(self, load: Callable[[int, int], dict[str, torch.Tensor]], keys: Iterator[tuple[int, int]],
                 depth: int = 2, pin_memory: bool = False) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(load, keys, pin_memory),
                                        name="pretrain-prefetch", daemon=True)
        self._thread.start()

    def _produce(self, load, keys, pin_memory: bool) -> None:
        try:
            for key in keys:
                batch = load(*key)
                if pin_memory:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                if not self._put((key, batch, None)):
                    return
        except BaseException as exc:  # handed to the training thread, raised there
            self._put((None, None, exc))

    def _put(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self, expected_key: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The batch of micro-step ``expected_key`` = (step, micro)."""
        key, batch, error = self._queue.get()
        if error is not None:
            raise error
        if key != expected_key:  # a bug, never data: order is what makes resume exact
            raise RuntimeError(f"prefetcher out of order: got {key}, expected {expected_key}")
        return batch

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)


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


# The pretraining schedule: warm-up then linear decay to 0 at max_steps.
linear_schedule = linear_warmup_decay


class _Checkpointer:
    """Atomic checkpoints under ``folder``; keeps the ``keep`` newest."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder = folder
        self.keep = keep

    def list(self) -> list[Path]:
        if not self.folder.exists():
            return []
        return sorted(p for p in self.folder.glob("step-*") if (p / "trainer_state.pt").exists())

    def matching(self, resume_key: str) -> Path | None:
        """The newest checkpoint written under the same configuration, if any."""
        for path in reversed(self.list()):
            meta = path / "resume.json"
            if meta.exists() and read_json(meta).get("resume_key") == resume_key:
                return path
        return None

    def clear(self) -> None:
        """Remove every checkpoint (used when none matches: stale state must not linger)."""
        for path in self.list():
            shutil.rmtree(path, ignore_errors=True)

    def save(self, step: int, model: torch.nn.Module, state: dict) -> Path:
        from safetensors.torch import save_model

        target = self.folder / f"step-{step:07d}"
        previous = self.list()
        try:
            with atomic_dir(target) as tmp:
                write_json(tmp / "resume.json", {"step": step, "resume_key": state["resume_key"]})
                # save_model handles the tensors shared between generator and discriminator.
                save_model(model, str(tmp / "model.safetensors"))
                torch.save(state, tmp / "trainer_state.pt")
        except (OSError, RuntimeError) as exc:
            # A full disk or a quota (torch.save reports it as a RuntimeError): the half-written
            # copy is gone with its temporary folder; the older checkpoints were never touched.
            kept = f"{previous[-1]} is intact and a rerun resumes from it" if previous else "no earlier checkpoint"
            code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            raise OSError(code, f"pretrain: could not write checkpoint {target} ({why}); {kept}") from exc
        for old in self.list()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def load(self, path: Path, model: torch.nn.Module, device: torch.device) -> dict:
        from safetensors.torch import load_model

        load_model(model, str(path / "model.safetensors"), device=str(device))
        # weights_only: tensors and plain containers, no arbitrary pickled objects.
        return torch.load(path / "trainer_state.pt", map_location=device, weights_only=True)


# With on_nonfinite: skip, this many non-finite steps in a row mean divergence: stop.
MAX_CONSECUTIVE_SKIPS = 10


def _nonfinite_message(step: int, loss: float, grad_norm: float, cfg: PretrainConfig,
                       checkpointer: _Checkpointer, skips: int) -> str:
    """Why pretraining stopped, where it can resume from, and what to change."""
    saved = checkpointer.list()
    where = f"the last checkpoint is {saved[-1]}" if saved else "no checkpoint was written yet"
    reason = (f"{skips} non-finite steps in a row (on_nonfinite: skip)" if cfg.on_nonfinite == "skip"
              else f"loss {loss}, gradient norm {grad_norm}")
    return (f"pretrain: non-finite loss or gradient at step {step} ({reason}); stopped before the optimizer "
            f"step, so no weight was changed by it; {where}, and a rerun resumes from it. Lower pretrain.lr, "
            "raise pretrain.warmup_steps, use pretrain.precision: fp32, or set pretrain.on_nonfinite: skip.")


def _load_tokenizer(input_dir: Path):
    from transformers import AutoTokenizer

    tokenizer_dir = input_dir / "tokenizer"
    if not tokenizer_dir.exists():
        raise FileNotFoundError(f"{tokenizer_dir}: not found; run `electra tokenize` first")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return tokenizer


def _metrics_from(out) -> dict[str, torch.Tensor]:
    """The step's metrics as 0-d tensors on the device.

    They are read back once per log window (:func:`_average`), not per step: each
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
        active = out.active
        labels = out.is_replaced[active]
        preds = out.disc_predictions[active]
        true_positives = (labels & preds).sum()
        metrics.update(
            discriminator_loss=out.discriminator_loss.detach(),
            discriminator_accuracy=(labels == preds).float().mean(),
            discriminator_precision=ratio(true_positives, preds.sum()),
            discriminator_recall=ratio(true_positives, labels.sum()),
            replaced_fraction=labels.float().mean(),
        )
    return metrics


def _average(rows: list[dict[str, torch.Tensor | float]]) -> dict[str, float]:
    """Mean of each metric over the rows (tensors or floats), with one device-to-host transfer."""
    if not rows:
        return {}
    keys = list(rows[0])
    table = torch.stack([torch.stack([torch.as_tensor(row[k], dtype=torch.float64) for k in keys])
                         for row in rows])                                   # [rows, metrics]
    return dict(zip(keys, table.mean(dim=0).tolist()))


@torch.no_grad()
def validate(model: ElectraPretrainer, dataset: PackedDataset, cfg: PretrainConfig, pad_id: int,
             device: torch.device, autocast_dtype: torch.dtype | None) -> dict[str, float]:
    """Objective metrics on the first ``eval_batches`` validation batches, with fixed masking."""
    if cfg.eval_batches == 0 or len(dataset) == 0:
        return {}
    model.eval()
    rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    rows = []
    for b in range(cfg.eval_batches):
        idx = np.arange(b * cfg.batch_size, min(len(dataset), (b + 1) * cfg.batch_size))
        if len(idx) == 0:
            break
        batch = make_batch(dataset, idx, pad_id, device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = model(**batch, generator=rng)
        rows.append(_metrics_from(out))
    model.train()
    return _average(rows)


def _global_mean_loss(out, cfg: PretrainConfig, ctx: Distributed) -> torch.Tensor:
    """The loss as one process would compute it over the global batch.

    Each rank holds a slice; its sums are divided by the global token counts and
    scaled by the world size, because DDP averages gradients over ranks.
    """
    import torch.distributed as dist

    counts = torch.stack([out.masked_count, out.active_count]).to(out.generator_loss_sum.device, torch.float32)
    dist.all_reduce(counts)
    generator = out.generator_loss_sum / counts[0].clamp(min=1)
    if out.is_replaced is None:  # objective "mlm": the masked-LM loss alone
        return ctx.world * generator
    discriminator = out.discriminator_loss_sum / counts[1].clamp(min=1)
    return ctx.world * (cfg.generator_weight * generator + cfg.discriminator_weight * discriminator)


def _any_rank(flag: bool, ctx: Distributed) -> bool:
    if ctx.world == 1:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.all_reduce(value)
    return bool(value.item() > 0)


def _barrier(ctx: Distributed) -> None:
    if ctx.world > 1:
        import torch.distributed as dist

        dist.barrier()


class _StopRequested(Exception):
    pass


def pretrain(cfg: PretrainConfig, logger: MetricLogger | None = None, progress: bool = True) -> dict:
    """Pretrain ELECTRA on the packed examples in ``cfg.input_dir``; save both models.

    Resumes from the newest matching checkpoint in ``{output_dir}/checkpoints``.
    Returns paths, hashes and final metrics.
    """
    from tqdm import tqdm

    logger = logger or NullLogger()
    input_dir, out_dir = Path(cfg.input_dir), Path(cfg.output_dir)
    tokenizer = _load_tokenizer(input_dir)
    train_set = PackedDataset(input_dir, "train")
    try:
        valid_set = PackedDataset(input_dir, "validation")
    except FileNotFoundError:
        valid_set = None
    summary = read_json(input_dir / "summary.json")
    if train_set.max_seq_length > cfg.model.max_position_embeddings:
        raise ValueError(
            f"{input_dir}: examples are {train_set.max_seq_length} tokens long but "
            f"pretrain.model.max_position_embeddings is {cfg.model.max_position_embeddings}"
        )
    ctx = init_distributed(cfg.device)
    device = resolve_device(cfg.device)
    if ctx.world > 1:
        if cfg.batch_size % ctx.world:
            raise ValueError(f"pretrain.batch_size ({cfg.batch_size}) must divide evenly over {ctx.world} processes")
        if device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
    if device.type == "cpu":
        tune_cpu_allocator()
    if not ctx.is_main:
        logger = NullLogger()  # rank 0 logs, checkpoints and exports
    per_rank = cfg.batch_size // ctx.world
    my_rows = range(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
    autocast_dtype = resolve_precision(cfg.precision, device)
    pad_id = tokenizer.pad_token_id

    torch.manual_seed(cfg.seed)
    model = ElectraPretrainer(
        cfg.model, vocab_size=len(tokenizer), pad_token_id=pad_id, mask_token_id=tokenizer.mask_token_id,
        special_token_ids=list(tokenizer.all_special_ids), objective=cfg.objective,
        mask_prob=cfg.mask_prob, mask_token_prob=cfg.mask_token_prob, temperature=cfg.temperature,
        generator_weight=cfg.generator_weight, discriminator_weight=cfg.discriminator_weight,
    ).to(device)
    model.train()
    # The wrapped modules share parameters with ``model``; checkpoints and exports use ``model``.
    step_model = model
    if ctx.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        step_model = torch.compile(step_model)
    optimizer = build_optimizer(model, cfg, device)
    flops_per_token = training_flops_per_token(
        cfg.model, train_set.max_seq_length, len(tokenizer), cfg.mask_prob, cfg.objective
    )
    peak_flops = matmul_flops_per_s(device, autocast_dtype or torch.float32)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(cfg.warmup_steps, cfg.max_steps))

    checkpointer = _Checkpointer(out_dir / "checkpoints", cfg.keep_checkpoints)
    start_step, history, resumed_from = 0, [], None
    candidate = checkpointer.matching(repr(_resume_key(cfg, summary.get("content_hash"))))
    if candidate is not None:
        state = checkpointer.load(candidate, model, device)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu())
        start_step, history, resumed_from = int(state["step"]), list(state["history"]), str(candidate)
    elif ctx.is_main:
        # Checkpoints of another configuration would be resumed by mistake later
        # (or outrank ours in rotation): a fresh start removes them.
        checkpointer.clear()
    # Dropout draws from the global RNG: give each rank its own stream.
    if candidate is None:
        torch.manual_seed(cfg.seed + ctx.rank)

    stop = threading.Event()
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        def _on_sigterm(signum, frame):  # checkpoint at the next step boundary, then exit
            stop.set()
        previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)

    def trainer_state(step: int) -> dict:
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "resume_key": repr(_resume_key(cfg, summary.get("content_hash"))),
        }
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    started = time.time()
    window_rows: list[dict[str, float]] = []
    window_tokens, window_start = 0, time.time()
    step = start_step
    skipped_steps = consecutive_skips = 0

    def load_micro_batch(step: int, micro: int) -> dict[str, torch.Tensor]:
        idx = batch_indices(step, micro, cfg.batch_size, cfg.grad_accum_steps, len(train_set), cfg.seed)
        return load_batch(train_set, idx[my_rows.start:my_rows.stop], pad_id)

    prefetcher = BatchPrefetcher(
        load_micro_batch,
        ((s, m) for s in range(start_step, cfg.max_steps) for m in range(cfg.grad_accum_steps)),
        pin_memory=device.type == "cuda",
    )
    try:
        snapshots = set(cfg.snapshot_steps)
        # A bar on a terminal; elsewhere (DVC, CI, a worker's log) a line every few seconds.
        on_terminal = progress and sys.stderr.isatty()
        bar = tqdm(total=cfg.max_steps, initial=start_step, desc="pretrain", unit="step", disable=not on_terminal)
        step_log = StepLog("pretrain", cfg.max_steps, start=start_step, enabled=ctx.is_main and not on_terminal)
        while step < cfg.max_steps:
            optimizer.zero_grad(set_to_none=True)
            finite = torch.ones((), dtype=torch.bool, device=device)
            for micro in range(cfg.grad_accum_steps):
                host_batch = prefetcher.next((step, micro))
                window_tokens += int(host_batch["attention_mask"].sum()) * ctx.world  # on the host: no sync
                batch = {k: v.to(device, non_blocking=True) for k, v in host_batch.items()}
                generators = row_generators(step, micro, cfg.batch_size, cfg.grad_accum_steps, cfg.seed, my_rows, device)
                last_micro = micro == cfg.grad_accum_steps - 1
                sync = contextlib.nullcontext() if ctx.world == 1 or last_micro else step_model.no_sync()
                with sync:
                    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                        out = step_model(**batch, generator=generators)
                    loss = _global_mean_loss(out, cfg, ctx) if ctx.world > 1 else out.loss
                    (loss / cfg.grad_accum_steps).backward()
                finite &= torch.isfinite(loss.detach())
                window_rows.append(_metrics_from(out))
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            finite &= torch.isfinite(grad_norm)
            if not bool(finite):  # one host sync per step
                del window_rows[-cfg.grad_accum_steps:]
                consecutive_skips += 1
                if cfg.on_nonfinite == "stop" or consecutive_skips > MAX_CONSECUTIVE_SKIPS:
                    raise FloatingPointError(_nonfinite_message(step, float(loss), float(grad_norm), cfg,
                                                                checkpointer, consecutive_skips))
                # Skip this batch: no optimizer step; the schedule and the data order move on.
                skipped_steps += 1
                optimizer.zero_grad(set_to_none=True)
            else:
                consecutive_skips = 0
                optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            if step in snapshots and ctx.is_main:
                # The discriminator as it is at this step (electra compare fine-tunes each).
                with atomic_dir(out_dir / "snapshots" / f"step-{step:07d}") as tmp:
                    model.discriminator_for_export().save_pretrained(tmp)
                    tokenizer.save_pretrained(tmp)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                elapsed = max(1e-9, time.time() - window_start)
                tokens_per_s = window_tokens / elapsed
                row = {"step": step, **(_average(window_rows) if window_rows else {}),
                       "lr": scheduler.get_last_lr()[0], "skipped_steps": skipped_steps,
                       "grad_norm": float(grad_norm), "tokens_per_s": tokens_per_s,
                       # Model FLOPs utilisation against this device's measured matmul rate;
                       # padding tokens are not counted as work.
                       "mfu": tokens_per_s * flops_per_token / peak_flops}
                history.append(row)
                logger.log_metrics({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)
                bar.set_postfix(loss=f"{row.get('loss', float('nan')):.3f}")
                window_rows, window_tokens, window_start = [], 0, time.time()
            if history:
                step_log.update(step, loss=history[-1].get("loss"), tokens_per_s=history[-1].get("tokens_per_s"))
            stopping = _any_rank(stop.is_set(), ctx)
            if step % cfg.checkpoint_every == 0 or stopping:
                if ctx.is_main:
                    checkpointer.save(step, model, trainer_state(step))
                _barrier(ctx)
                if stopping:
                    raise _StopRequested()
        bar.close()
    except _StopRequested:
        raise SystemExit(f"pretrain: stopped by SIGTERM at step {step}; checkpoint saved, rerun to resume") from None
    finally:
        prefetcher.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)

    if ctx.is_main and (not checkpointer.list() or int(checkpointer.list()[-1].name.split("-")[1]) != step):
        checkpointer.save(step, model, trainer_state(step))
    train_seconds = time.time() - started
    _barrier(ctx)
    if not ctx.is_main:
        return {"output_dir": str(out_dir), "rank": ctx.rank, "steps": step}

    validation = validate(model, valid_set, cfg, pad_id, device, autocast_dtype) if valid_set else {}
    if validation:
        logger.log_metrics({f"validation/{k}": v for k, v in validation.items()}, step=step)

    # Export both models with the tokenizer, each folder swapped in only when complete.
    model.eval()
    exports = {"discriminator": model.discriminator_for_export(), "generator": model.generator}
    hashes = {}
    for name, module in exports.items():
        with atomic_dir(out_dir / name) as tmp:
            module.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        hashes[name] = sha256_tree(out_dir / name)
        logger.log_artifacts(str(out_dir / name), name)

    with atomic_open(out_dir / "history.csv", "w", newline="", encoding="utf-8") as handle:
        fields = sorted({k for row in history for k in row}, key=lambda k: (k != "step", k))
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
    last = history[-1] if history else {}
    final_train = _average([{k: v for k, v in r.items() if k != "step"} for r in history[-3:]]) if history else {}
    metrics = {
        "train": {k: v for k, v in final_train.items()},
        "validation": validation,
        "steps": step,
        "tokens_per_s": last.get("tokens_per_s", float("nan")),
    }
    write_json(out_dir / "metrics.json", metrics)
    result = {
        "output_dir": str(out_dir),
        "discriminator_dir": str(out_dir / "discriminator"),
        "generator_dir": str(out_dir / "generator"),
        "hashes": hashes,
        "objective": cfg.objective,
        "steps": step,
        "resumed_from": resumed_from,
        "train_seconds": round(train_seconds, 3),
        "precision": str(autocast_dtype).replace("torch.", "") if autocast_dtype else "fp32",
        "flops_per_token": flops_per_token,
        "matmul_flops_per_s": peak_flops,
        "device": str(device),
        "world_size": ctx.world,
        "tokenize_hash": summary.get("content_hash"),
        "final": metrics,
    }
    write_json(out_dir / "result.json", result)
    return result
