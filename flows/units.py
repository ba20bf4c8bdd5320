"""The data stages' units of work (a file to ingest, a shard to tokenize) as Prefect tasks on
a Dask cluster (``prefect.task_runner: dask``). The outputs are those of a local run."""

from __future__ import annotations

from prefect import flow, task

from electra.core.config import Params


@task(name="unit", task_run_name="{stage}.unit-{index:05d}", retries=0)
def run_unit(stage: str, index: int, fn, job) -> dict:
    """One unit of a data stage (a file to ingest, a shard to tokenize) on a cluster worker."""
    from electra.core.parallel import single_threaded_worker

    single_threaded_worker()   # the cluster's processes are the parallelism
    return fn(job)


def dask_unit_mapper(stage: str, params: Params):
    """A unit mapper (``electra.core.parallel.unit_mapper``) that runs each unit as a Prefect task
    on a Dask cluster: ``prefect.dask_address``'s scheduler, else a local cluster of
    ``prefect.dask_workers`` processes for the stage's duration. Results come back in the
    units' order, so the stage's output is the one a local run makes."""
    from prefect_dask import DaskTaskRunner

    pf = params.prefect
    runner = DaskTaskRunner(address=pf.dask_address) if pf.dask_address else DaskTaskRunner(
        cluster_kwargs={"n_workers": pf.dask_workers, "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None})

    def mapper(fn, jobs):
        @flow(name=f"{stage}-units", task_runner=runner, log_prints=True)
        def units() -> list[dict]:
            futures = [run_unit.submit(stage, index, fn, job) for index, job in enumerate(jobs)]
            return [future.result() for future in futures]

        yield from units()

    return mapper
