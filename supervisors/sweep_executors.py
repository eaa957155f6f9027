"""Where a sweep's backtests run: a local process pool (the default, every core), a Dask
cluster (``--dask ADDRESS``) or a Ray cluster (``--ray ADDRESS``), through each one's own
client; no scheduler of ours.

Every executor runs the same function (:func:`supervisors.sweep.evaluate`) on the same jobs
with the same candles, which it ships to its workers once (the pool's initializer, Dask's
``scatter(broadcast=True)``, Ray's object store), and yields ``(index, outcome)`` as each
backtest finishes. The sweep puts outcomes back in job order, so the result does not
depend on which worker finished first. Workers of a remote cluster need limitline
installed (the same version): they import the function by name.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from exchange.candles import Candle

#: Candles of the sweep, in a pool worker (set once by the pool's initializer).
_worker_candles: Sequence[Candle] = ()


class Executor(Protocol):
    name: str

    def run(self, function: Callable[[Any, Sequence[Candle]], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """``function(job, candles)`` for every job; ``(index into jobs, result)`` as each ends."""
        ...

    def close(self) -> None: ...


class ExecutorUnavailable(RuntimeError):
    """The cluster named on the command line cannot be used (not installed, not reachable)."""


def _init_worker(candles: Sequence[Candle]) -> None:
    global _worker_candles
    _worker_candles = candles


def _call_in_worker(function: Callable[[Any, Sequence[Candle]], Any], job: Any) -> Any:
    return function(job, _worker_candles)


class LocalPool:
    """A process pool on this machine, ``workers`` processes (default: every core). Started
    with ``spawn``, so a worker never inherits the parent's threads or locks."""

    name = "local"

    def __init__(self, candles: Sequence[Candle], workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=(candles,),
        )

    def run(self, function: Callable[[Any, Sequence[Candle]], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        futures = {self._pool.submit(_call_in_worker, function, job): i for i, job in enumerate(jobs)}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class DaskCluster:
    """A Dask cluster through ``distributed.Client``: ``address`` like ``tcp://host:8786``
    (a running scheduler), or ``local`` for a cluster of this machine's cores started for the
    sweep. The candles are scattered to every worker once."""

    name = "dask"

    def __init__(self, candles: Sequence[Candle], address: str | Any) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise ExecutorUnavailable("--dask: the distributed package is not installed") from None
        self._own_cluster = None
        try:
            if address == "local":
                from distributed import LocalCluster

                self._own_cluster = LocalCluster(processes=True, dashboard_address=None)
                address = self._own_cluster
            self.client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as error:
            raise ExecutorUnavailable(f"--dask {address}: cannot reach the scheduler ({error})") from None
        [self._candles] = self.client.scatter([candles], broadcast=True)

    def run(self, function: Callable[[Any, Sequence[Candle]], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        futures = self.client.map(function, list(jobs), candles=self._candles, pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        for future, result in as_completed(futures, with_results=True):
            yield index[future.key], result

    def close(self) -> None:
        self.client.close()
        if self._own_cluster is not None:
            self._own_cluster.close()


class RayCluster:
    """A Ray cluster through ``ray.init(address)``: ``ray://host:10001``, ``auto`` (the
    cluster this machine belongs to) or ``local`` (a cluster started for the sweep). The
    candles go into Ray's object store once. Ray is optional: ``pip install -e ".[ray]"``."""

    name = "ray"

    def __init__(self, candles: Sequence[Candle], address: str) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorUnavailable('--ray: Ray is not installed; pip install -e ".[ray]" (or use --dask)') from None
        self._ray = ray
        try:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ExecutorUnavailable(f"--ray {address}: cannot connect ({error})") from None
        self._candles = ray.put(candles)
        self._remote: dict[Callable[..., Any], Any] = {}

    def run(self, function: Callable[[Any, Sequence[Candle]], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        remote = self._remote.setdefault(function, self._ray.remote(function))
        pending = {remote.remote(job, self._candles): i for i, job in enumerate(jobs)}
        waiting = list(pending)
        while waiting:
            done, waiting = self._ray.wait(waiting, num_returns=1)
            for ref in done:
                yield pending[ref], self._ray.get(ref)

    def close(self) -> None:
        self._ray.shutdown()


def open_executor(candles: Sequence[Candle], dask: str | None = None, ray: str | None = None,
                  workers: int | None = None) -> Executor:
    """The executor the command line asks for: Dask, Ray, else the local pool."""
    if dask is not None and ray is not None:
        raise ExecutorUnavailable("give --dask or --ray, not both")
    if dask is not None:
        return DaskCluster(candles, dask)
    if ray is not None:
        return RayCluster(candles, ray)
    return LocalPool(candles, workers)
