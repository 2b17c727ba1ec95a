"""The Dask side of a batch run: a cluster to run on, each worker set up once, tasks run.

Importing this module is what needs Dask; without it the import raises EngineMissing, one line
telling how to install it. The engine is Dask's, not a home-made one: its scheduler already
retries the tasks of a lost worker (up to `distributed.scheduler.allowed-failures` times, 3 by
default), balances tasks over workers, and starts a local cluster in about a second.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from dcomp.errors import DcompError

INSTALL_HINT = "pip install 'dcomp[cluster]'"


class EngineMissing(DcompError):
    """Dask is not installed."""


class ClusterError(DcompError):
    """No cluster to run on: the scheduler cannot be reached, or it has no workers."""


try:
    from distributed import Client, LocalCluster, WorkerPlugin, as_completed
except ImportError:
    raise EngineMissing(f"dcomp batch runs on Dask, which is not installed: {INSTALL_HINT}") from None

CONNECT_TIMEOUT_S = 20.0  # to reach a scheduler, and then for its first worker to join
PLUGIN_NAME = "dcomp-batch-setup"  # one name: a new run's setup replaces the last one's


class WorkerSetup(WorkerPlugin):
    """Run on every worker as it joins, before its first task (a worker the nanny restarts after
    losing one too): one torch thread per task slot (the cores are shared out between the
    workers; the nanny already gives OpenBLAS and OpenMP one thread each), and each method's
    weights loaded and its kernels compiled, so no task pays for them."""

    def __init__(self, methods: tuple[str, ...]):
        self.methods = methods

    def setup(self, worker) -> None:
        import torch

        from dcomp.batch.worker import warm_up

        from dcomp.blas import cap_threads

        # One thread per task: with a worker on every core, the threads mlp's encoder would
        # open around its large products only oversubscribe them (measured: 3x slower per image).
        cap_threads(1)
        torch.set_num_threads(1)
        for method in self.methods:
            warm_up(method)


@contextmanager
def connect(address: str | None, workers: int, threads_per_worker: int = 1) -> Iterator[Client]:
    """A client of the scheduler at `address`, or of a local cluster of `workers` processes
    (loopback only, no dashboard), closed on leaving."""
    if address is not None:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            client.close()
            raise ClusterError(f"the Dask scheduler at {address} has no workers "
                               f"(none joined within {CONNECT_TIMEOUT_S:.0f} s)") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def worker_count(client: Client) -> int:
    return len(client.scheduler_info()["workers"])


def set_up_workers(client: Client, methods: tuple[str, ...]) -> float:
    """Install WorkerSetup on every worker (and every worker that joins later); return the
    seconds it took, the warm-up that the run's throughput leaves out."""
    start = time.perf_counter()
    client.register_plugin(WorkerSetup(methods), name=PLUGIN_NAME)
    return time.perf_counter() - start


def tasks_taken_back(client: Client, since: float) -> int:
    """How many times the scheduler took a running task back from its worker (as when the worker
    died) since the time.time() `since`, as far back as its transition log goes (the last
    distributed.admin.low-level-log-length transitions: key, start, finish, ..., time)."""
    def count(dask_scheduler) -> int:
        return sum(1 for t in dask_scheduler.transition_log
                   if t[1] == "processing" and t[2] in ("released", "waiting") and t[-1] >= since)

    return client.run_on_scheduler(count)


def run_tasks(client: Client, function: Callable, tasks: list, *args) -> Iterator[tuple[list, object]]:
    """Submit `function(task, *args)` for every task; yield (task, its result, or the exception
    that ended it) as each finishes, in any order. Tasks still running when the caller stops
    (Ctrl-C) are cancelled."""
    futures = {client.submit(function, task, *args, pure=False): task for task in tasks}
    try:
        for future, result in as_completed(futures, with_results=True, raise_errors=False):
            yield futures.pop(future), (result[1] if future.status == "error" else result)
    finally:
        if futures:
            client.cancel(list(futures))
