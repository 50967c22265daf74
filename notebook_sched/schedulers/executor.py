"""Run a graph on any ``concurrent.futures.Executor`` the user supplies.

Used for ``scheduler=<executor>`` and for ``pool=`` on the threads and processes
backends: thread pools, ``ProcessPoolExecutor``, loky's reusable executor, or any
third-party executor.  The calling thread keeps the RunState and submits one job
per future (format in ``_worker.py``), keeping about two jobs per executor worker
in flight.  For every executor that is not a thread pool the jobs are cloudpickled
first, so lambdas and notebook-defined functions travel, and results come back
cloudpickled too.

``multiprocessing.pool.Pool`` and ``ThreadPool`` are accepted too (Dask accepts
them): :func:`as_executor` wraps them in :class:`PoolExecutor`, whose ``submit`` is
``apply_async``.  Thread pools (``ThreadPoolExecutor``, ``ThreadPool``) get plain
jobs, each run in a copy of the caller's ``contextvars`` context, as Dask does.

The executor belongs to the user: on KeyboardInterrupt or failure the run cancels
the futures that have not started and returns; tasks already running in a foreign
executor finish there (we cannot kill its workers).
"""

from __future__ import annotations

import contextvars
import os
import pickle
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from typing import Any

import cloudpickle

from ..engine import execute_graph, run_spec, task_failure
from ..errors import load_exception
from ..events import Dispatcher
from ..failure import RemoteTraceback
from ..graph import ALIAS, VALUE
from ._worker import run_payload

__all__ = ["get", "as_executor", "PoolExecutor"]


class PoolExecutor(Executor):
    """A ``multiprocessing.pool.Pool`` (or ``ThreadPool``) seen as an Executor."""

    def __init__(self, pool: Any):
        self.pool = pool
        self._max_workers = getattr(pool, "_processes", None) or os.cpu_count() or 1
        self.threads = isinstance(pool, sys.modules["multiprocessing.pool"].ThreadPool)

    def __repr__(self) -> str:
        return f"<PoolExecutor of {self.pool!r}>"

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()

        # These run in the pool's result-handler thread, which must not see an error
        # (a future we cancelled meanwhile refuses a result).
        def set_result(value: Any) -> None:
            if future.set_running_or_notify_cancel():
                future.set_result(value)

        def set_exception(exc: BaseException) -> None:
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)

        self.pool.apply_async(fn, args, kwargs, callback=set_result, error_callback=set_exception)
        return future


def as_executor(pool: Any) -> Executor:
    """``pool`` as an Executor: executors as they are, multiprocessing pools wrapped."""
    if isinstance(pool, Executor):
        return pool
    mp_pool = sys.modules.get("multiprocessing.pool")
    if mp_pool is not None and isinstance(pool, mp_pool.Pool):
        return PoolExecutor(pool)
    raise TypeError(
        f"pool must be a concurrent.futures.Executor (e.g. ThreadPoolExecutor(4)) or a "
        f"multiprocessing.pool.Pool / ThreadPool; got {type(pool).__name__}: {pool!r}."
    )


def in_threads(executor: Executor) -> bool:
    """True when ``executor`` runs jobs in this process's threads (no pickling)."""
    return isinstance(executor, ThreadPoolExecutor) or getattr(executor, "threads", False)


def get(dsk: Any, keys: Any, *, executor: Any, observers=None, **options: Any) -> Any:
    """Compute ``keys`` of ``dsk`` with tasks submitted to ``executor`` (or a pool)."""
    executor = as_executor(executor)
    backend = f"executor:{type(getattr(executor, 'pool', executor)).__name__}"
    width = getattr(executor, "_max_workers", None) or os.cpu_count() or 1

    def drive(graph, state, events):
        _ExecutorRun(graph, state, events, executor, backend, width).drive()

    return execute_graph(dsk, keys, drive, backend, observers=observers, workers=width)


class _ExecutorRun:
    def __init__(self, graph, state, events: Dispatcher, executor, backend: str, width: int):
        self.graph = graph
        self.state = state
        self.events = events
        self.executor = executor
        self.backend = backend
        self.pickled = not in_threads(executor)
        self.max_in_flight = 2 * width
        self.in_flight: dict = {}  # future -> task

    def drive(self) -> None:
        try:
            self._loop()
        except BaseException:
            for future in self.in_flight:
                future.cancel()
            raise

    def _loop(self) -> None:
        from .processes import make_job

        state, graph, events = self.state, self.graph, self.events
        specs, keys, values = graph.specs, graph.keys, state.values
        while state.remaining:
            while state.ready and len(self.in_flight) < self.max_in_flight:
                i = state.ready.pop()
                if events.task_started:
                    events.task_started(keys[i], self.backend)
                if specs[i][0] in (VALUE, ALIAS):
                    start = time.time()
                    state.finish(i, run_spec(specs[i], values))
                    if events.task_finished:
                        events.task_finished(keys[i], self.backend, start, time.time())
                    if events.task_done:
                        events.task_done(keys[i])
                    continue
                payload = [make_job(i, specs[i], values, None, True)]
                if self.pickled:
                    payload = self._pickle(i, payload)
                if self.pickled:
                    future = self.executor.submit(run_payload, payload)
                else:
                    run_here = contextvars.copy_context().run
                    announce = events.worker_started
                    future = self.executor.submit(run_here, _announced, announce, payload)
                self.in_flight[future] = i
            if not self.in_flight:
                continue
            done, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                task = self.in_flight.pop(future)
                self._collect(task, future.result())

    def _pickle(self, task: int, payload: list) -> bytes:
        try:
            return cloudpickle.dumps(payload, protocol=5)
        except Exception as exc:
            from .processes import TaskPicklingError

            raise TaskPicklingError(
                f"Task {self.graph.keys[task]!r} cannot be sent to the executor's worker "
                f"processes: {type(exc).__name__}: {exc}. Use picklable functions and data, "
                f"or a thread pool."
            ) from exc

    def _collect(self, task: int, outcome: Any) -> None:
        if isinstance(outcome, bytes):
            outcome = pickle.loads(outcome)
        keys, events = self.graph.keys, self.events
        if outcome[0] == "R":
            for t, value, start, stop in outcome[1]:
                self.state.finish(t, value)
                if events.task_finished:
                    events.task_finished(keys[t], self.backend, start, stop)
                if events.task_done:
                    events.task_done(keys[t])
            return
        if outcome[0] == "U":
            from .processes import TaskPicklingError

            raise TaskPicklingError(
                f"The result of task {keys[outcome[2]]!r} cannot be sent back from the "
                f"executor's worker process ({outcome[3]}); return picklable data."
            )
        _, _, failed_task, exc, tb_text, _ = outcome
        if failed_task < 0:  # its job could not be unpickled in the executor's worker
            failed_task = task
        if isinstance(exc, bytes):
            exc = load_exception(exc)
            exc.__cause__ = RemoteTraceback(tb_text)
        task_failure(
            self.graph, self.state.values, failed_task, exc, self.backend, self.backend, tb_text
        )
        if events.task_failed:
            events.task_failed(keys[failed_task], self.backend, exc)
        raise exc


def _announced(worker_started, payload):
    """Run jobs in a thread-pool thread after telling observers which thread it is."""
    if worker_started:
        import threading

        worker_started(threading.current_thread().name)
    return run_payload(payload)
