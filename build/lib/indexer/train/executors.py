"""Where the expensive build stages run: local processes (the default) or a Dask cluster.

A stage calls :meth:`Executor.map` with a module-level function, one ``shared`` argument
every task reads (sent once per worker) and an iterable of per-task payloads. Payloads are
drawn lazily, a few tasks in flight per worker, so neither the driver nor a worker ever
holds more than those; results come back in task order, whatever order they finished in,
so what a stage computes does not depend on where it ran.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from ..errors import QacError

P = TypeVar("P")
R = TypeVar("R")
TaskFn = Callable[[Any, Any], Any]

# Tasks in flight per worker: enough to keep every worker busy while results travel back.
IN_FLIGHT_PER_WORKER = 2
LOCAL_CLUSTER = re.compile(r"local(?::(\d+))?")

# The shared argument of the current local map, inherited by forked workers.
_SHARED: dict[str, Any] = {}


class ExecutorError(QacError):
    """The executor cannot be set up: Dask missing, or its scheduler unreachable."""


class Executor(Protocol):
    """Runs the tasks of a build stage somewhere."""

    @property
    def workers(self) -> int:
        """How many tasks can run at once."""
        ...

    def map(
        self,
        fn: Callable[[Any, P], R],
        payloads: Iterable[P],
        shared: Any = None,
        on_result: Callable[[R], Any] | None = None,
    ) -> list[R]:
        """``[fn(shared, p) for p in payloads]``, computed by the workers.

        ``on_result`` is called in the driver with each result as it arrives (for progress).
        """
        ...


def _call_shared(fn: TaskFn, payload: Any) -> Any:
    return fn(_SHARED["value"], payload)


class LocalExecutor:
    """Tasks in this process (``workers=1``) or in forked worker processes.

    Forked workers inherit ``shared`` instead of receiving a copy; a fresh pool per map, so
    each stage's workers see its own shared state and give their memory back after it.
    """

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._workers = workers

    @property
    def workers(self) -> int:
        return self._workers

    def map(
        self,
        fn: Callable[[Any, P], R],
        payloads: Iterable[P],
        shared: Any = None,
        on_result: Callable[[R], Any] | None = None,
    ) -> list[R]:
        results: dict[int, R] = {}

        def finished(i: int, result: R) -> None:
            results[i] = result
            if on_result is not None:
                on_result(result)

        if self._workers == 1:
            for i, payload in enumerate(payloads):
                finished(i, fn(shared, payload))
            return [results[i] for i in range(len(results))]
        _SHARED["value"] = shared
        try:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=self._workers, mp_context=ctx) as pool:
                pending: dict[Future[Any], int] = {}
                window = IN_FLIGHT_PER_WORKER * self._workers
                for i, payload in enumerate(payloads):
                    pending[pool.submit(_call_shared, fn, payload)] = i
                    while len(pending) >= window:
                        _drain(pending, finished)
                while pending:
                    _drain(pending, finished)
        finally:
            _SHARED.clear()
        return [results[i] for i in range(len(results))]


def _drain(pending: dict[Future[Any], int], finished: Callable[[int, Any], None]) -> None:
    """Wait for at least one pending future and hand on every finished one."""
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for fut in done:
        finished(pending.pop(fut), fut.result())


class DaskExecutor:
    """Tasks on the workers of a Dask ``distributed.Client``.

    ``shared`` is broadcast once to every worker; each payload is scattered to one worker
    and its task runs there, so no worker receives the data of tasks it does not run.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    @property
    def workers(self) -> int:
        info = self.client.scheduler_info()
        return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))

    def map(
        self,
        fn: Callable[[Any, P], R],
        payloads: Iterable[P],
        shared: Any = None,
        on_result: Callable[[R], Any] | None = None,
    ) -> list[R]:
        from distributed import as_completed

        client = self.client
        [shared_f] = client.scatter([shared], broadcast=True, hash=False)
        window = IN_FLIGHT_PER_WORKER * self.workers
        index: dict[str, int] = {}
        results: dict[int, R] = {}
        queue = as_completed(with_results=False)
        todo: Iterator[tuple[int, P]] = enumerate(payloads)

        def submit_next() -> bool:
            for i, payload in todo:
                [data] = client.scatter([payload], hash=False)  # in a list: the payload stays whole
                fut = client.submit(fn, shared_f, data, key=f"qac-{fn.__name__}-{i}-{uuid.uuid4().hex}")
                index[fut.key] = i
                queue.add(fut)
                return True
            return False

        try:
            while len(index) < window and submit_next():
                pass
            for fut in queue:
                result = fut.result()
                results[index.pop(fut.key)] = result
                if on_result is not None:
                    on_result(result)
                submit_next()
        finally:
            queue.clear()  # drops the futures of unfinished tasks after an error: Dask cancels them
        return [results[i] for i in range(len(results))]


def _dask_client(spec: str, default_workers: int) -> tuple[Any, Any]:
    """A connected ``distributed.Client`` for ``spec``, and the LocalCluster it owns (or None)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ExecutorError(
            "--dask needs the optional Dask packages: pip install 'qac[dask]' (dask and distributed)"
        ) from exc
    local = LOCAL_CLUSTER.fullmatch(spec)
    if local:
        n = int(local.group(1) or default_workers)
        if n < 1:
            raise ExecutorError(f"--dask local:N needs N >= 1, got {spec!r}")
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        return Client(cluster), cluster
    if "://" not in spec:
        raise ExecutorError(f"--dask wants a scheduler address like tcp://HOST:8786 or local[:N], got {spec!r}")
    try:
        return Client(spec), None
    except (OSError, TimeoutError) as exc:
        raise ExecutorError(f"cannot reach the Dask scheduler at {spec}: {exc}") from exc


@contextmanager
def open_executor(dask: str | None, workers: int) -> Iterator[Executor]:
    """The executor a build runs its stages on: ``workers`` local processes when ``dask`` is
    None, else a Dask cluster: ``tcp://HOST:PORT`` (an existing scheduler) or ``local[:N]``
    (an in-process ``LocalCluster`` of N single-threaded worker processes, default ``workers``).

    Raises :class:`ExecutorError` before anything runs when Dask is missing or unreachable.
    """
    if dask is None:
        yield LocalExecutor(workers)
        return
    client, cluster = _dask_client(dask, workers)
    try:
        yield DaskExecutor(client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
