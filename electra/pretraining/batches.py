"""The pretraining data stream: which examples each micro-batch holds, their random
streams, reading them from the packed shards, and reading ahead on a thread.

Everything here is a function of the step: batch ``(step, micro)`` holds the same
examples, masked by the same draws, whether the run is fresh, resumed, or split over
data-parallel ranks. That is what makes resume exact without saving loader state.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch

from electra.core.config import PretrainConfig
from electra.data.packed import PackedDataset


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


def row_keys(step: int, micro: int, batch_size: int, accum_steps: int, seed: int, rows: range) -> torch.Tensor:
    """[len(rows)] int64: each example's random key, a hash of the seed and its position in the stream.

    Every draw of the step (masking, Gumbel noise) is a function of the key alone
    (``model.uniforms``), not of the process or micro-batch the example lands in: N
    data-parallel ranks reproduce a single process, and a resumed run reproduces the
    uninterrupted one. Computed on the host with numpy (uint64 arithmetic wraps).
    """
    first = (step * accum_steps + micro) * batch_size
    index = np.arange(first + rows.start, first + rows.stop, dtype=np.uint64)
    keys = _splitmix64(index ^ _splitmix64(np.array([seed % 2**64], dtype=np.uint64)))
    return torch.from_numpy(keys.view(np.int64))


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 arrays: a bijective 64-bit mixer."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def load_batch(dataset: PackedDataset, indices: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Read rows (in stream order) at the full packed length, on the host.

    The padding columns are kept: the random draws are sized by the row length, so a
    width that depended on the other rows in the batch would change an example's
    masking with its batch mates (and break data-parallel equivalence). Packed
    examples are nearly all full-length, so trimming would rarely save work.

    A batch without padding has no ``attention_mask``: the encoders then pass no mask
    to SDPA, which can take its flash kernels (a mask rules them out). Decided here,
    from numpy, so the step never asks the device.
    """
    ids, types = dataset.get(indices)
    batch = {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types)}
    real = ids != pad_id
    if not real.all():
        batch["attention_mask"] = torch.from_numpy(real.astype(np.int64))
    return batch


def token_count(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding tokens of a host batch, counted with numpy (no tensor read-back)."""
    mask = batch.get("attention_mask")
    return int(batch["input_ids"].numel() if mask is None else mask.numpy().sum())


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


def training_batches(dataset: PackedDataset, cfg: PretrainConfig, rows: range, pad_id: int, start_step: int,
                     pin_memory: bool) -> BatchPrefetcher:
    """This rank's slice (``rows`` of each global batch) of every micro-batch from
    ``start_step`` to ``cfg.max_steps``, with its examples' ``row_keys``, read ahead on a thread."""
    def load(step: int, micro: int) -> dict[str, torch.Tensor]:
        idx = batch_indices(step, micro, cfg.batch_size, cfg.grad_accum_steps, len(dataset), cfg.seed)
        batch = load_batch(dataset, idx[rows.start:rows.stop], pad_id)
        batch["row_keys"] = row_keys(step, micro, cfg.batch_size, cfg.grad_accum_steps, cfg.seed, rows)
        return batch

    keys = ((s, m) for s in range(start_step, cfg.max_steps) for m in range(cfg.grad_accum_steps))
    return BatchPrefetcher(load, keys, pin_memory=pin_memory)
