"""The pretraining batch prefetcher: same order as inline reads, errors surface, and the CPU allocator tune."""

from __future__ import annotations

import pytest
import torch

from electra.pretraining.batches import BatchPrefetcher
from electra.core.runtime import tune_cpu_allocator


def test_batches_come_in_key_order():
    keys = [(s, m) for s in range(5) for m in range(2)]
    prefetcher = BatchPrefetcher(lambda s, m: {"x": torch.tensor([s, m])}, iter(keys), depth=2)
    try:
        for key in keys:
            assert prefetcher.next(key)["x"].tolist() == list(key)
    finally:
        prefetcher.close()


def test_a_loading_error_is_raised_in_the_training_thread():
    def load(step, micro):
        if step == 2:
            raise ValueError("shard-00001.npy: truncated")
        return {"x": torch.tensor([step])}

    prefetcher = BatchPrefetcher(load, ((s, 0) for s in range(4)))
    try:
        prefetcher.next((0, 0))
        prefetcher.next((1, 0))
        with pytest.raises(ValueError, match="truncated"):
            prefetcher.next((2, 0))
    finally:
        prefetcher.close()


def test_an_out_of_order_batch_is_a_loud_bug():
    prefetcher = BatchPrefetcher(lambda s, m: {"x": torch.tensor([s])}, iter([(0, 0), (1, 0)]))
    try:
        with pytest.raises(RuntimeError, match="out of order"):
            prefetcher.next((1, 0))
    finally:
        prefetcher.close()


def test_close_stops_a_producer_blocked_on_a_full_queue():
    prefetcher = BatchPrefetcher(lambda s, m: {"x": torch.tensor([s])}, ((s, 0) for s in range(10_000)), depth=1)
    prefetcher.next((0, 0))
    prefetcher.close()
    assert not prefetcher._thread.is_alive()


def test_allocator_tune_applies_on_glibc():
    import platform

    applied = tune_cpu_allocator()
    if platform.libc_ver()[0] == "glibc":
        assert applied
