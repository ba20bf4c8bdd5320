"""Units of work run in parallel, the same way for every stage that has them.

A stage splits its input into units (ingest: one per input file; tokenize: one per
ingest shard), runs a plain function of plain values on each and merges the results in
the units' order, so its output does not depend on how many workers ran them, nor where.
By default the units go to a pool of local processes; the Prefect door can send them
to a Dask or Ray cluster instead (:func:`unit_mapper`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextvars import ContextVar
from typing import Any

UnitMapper = Callable[[Callable[[Any], dict], list[Any]], Iterator[dict]]
_unit_mapper: ContextVar[UnitMapper | None] = ContextVar("unit_mapper", default=None)


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def unit_mapper(mapper: UnitMapper) -> Iterator[None]:
    """Run the units of the stages called in this context with ``mapper(fn, jobs)``.

    ``mapper`` must yield ``fn(job)`` for each job, in the jobs' order. The output does
    not depend on it: only where and how fast the units run.
    """
    token = _unit_mapper.set(mapper)
    try:
        yield
    finally:
        _unit_mapper.reset(token)


def single_threaded_worker() -> None:
    """Set in a worker process before its first unit: one tokenizer thread, the processes
    (or cluster workers) being the parallelism."""
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def process_pool_mapper(workers: int) -> UnitMapper:
    """Units on ``workers`` local processes (in this process when one), results in job order."""

    def run(fn: Callable[[Any], dict], jobs: list[Any]) -> Iterator[dict]:
        if workers <= 1 or len(jobs) <= 1:
            yield from map(fn, jobs)
            return
        # spawn, not fork: a forked copy of a process whose tokenizer threads have run can hang.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=single_threaded_worker) as pool:
            futures = [pool.submit(fn, job) for job in jobs]
            try:
                for future in futures:
                    yield future.result()
            finally:
                for future in futures:   # a caller that stops early (max_examples) cancels the rest
                    future.cancel()

    return run


def map_units(fn: Callable[[Any], dict], jobs: list[Any], workers: int | None) -> Iterator[dict]:
    """``fn(job)`` for each job, in order: on the context's mapper, else on a process pool."""
    mapper = _unit_mapper.get() or process_pool_mapper(workers or default_workers())
    return mapper(fn, jobs)
