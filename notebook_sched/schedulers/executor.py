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

Events follow ``events.py``, with worker names like the other backends' (``thread-0``,
``process-1``, numbered per run as the executor's threads and processes first show
up; ``caller`` for literals and aliases).  On a thread pool ``task_started`` fires on
the pool thread as the task starts, and ``worker_started`` once per thread.  A worker
process of a foreign executor cannot call back, so its task's ``task_started`` fires
in the caller when the result (or the failure) arrives, just before ``task_finished``
(or ``task_failed``): honest, if late.

The executor belongs to the user: on KeyboardInterrupt or failure the run cancels
the futures that have not started and returns; tasks already running in a foreign
executor finish there (we cannot kill its workers).
"""

from __future__ import annotations

import contextvars
import os
import pickle
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from typing import Any

import cloudpickle

from ..engine import Reporter, execute_graph
from ..errors import load_exception, unpicklable_result, unpicklable_task
from ..failure import RemoteTraceback
from ..graph import ALIAS, VALUE
from ..measure import CALLER
from ..task_runner import Failed, TaskRunner
from ._job import Results, Unpicklable, batch_hooks, make_job
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


def get(
    dsk: Any, keys: Any, *, executor: Any, observers=None, planners=None, **options: Any
) -> Any:
    """Compute ``keys`` of ``dsk`` with tasks submitted to ``executor`` (or a pool)."""
    executor = as_executor(executor)
    backend = f"executor:{type(getattr(executor, 'pool', executor)).__name__}"
    width = getattr(executor, "_max_workers", None) or os.cpu_count() or 1

    def drive(graph, state, report):
        _ExecutorRun(graph, state, report, executor, width).drive()

    return execute_graph(
        dsk, keys, drive, backend, observers=observers, workers=width, planners=planners
    )


class _ExecutorRun:
    def __init__(self, graph, state, report: Reporter, executor, width: int):
        self.graph = graph
        self.state = state
        self.report = report
        self.executor = executor
        self.pickled = not in_threads(executor)
        self.max_in_flight = 2 * width
        self.in_flight: dict = {}  # future -> task
        self.names = _WorkerNames(report)
        # Literals and aliases run here; its countdown also picks the jobs to measure
        # (in the executor's worker: ``every=0`` for those, None for the others).
        self.here = TaskRunner(
            CALLER,
            hooks=graph.on_result,
            keys=graph.keys,
            measure=bool(report.task_measured),
            timed=True,
        )

    def drive(self) -> None:
        try:
            self._loop()
        except BaseException:
            for future in self.in_flight:
                future.cancel()
            raise

    def _loop(self) -> None:
        state, graph, report, here = self.state, self.graph, self.report, self.here
        specs, values = graph.specs, state.values
        while state.remaining:
            while state.ready and len(self.in_flight) < self.max_in_flight:
                i = state.ready.pop()
                if specs[i][0] in (VALUE, ALIAS):
                    report.started(i, CALLER)
                    start = time.time()
                    value = here.run(i, specs[i], values)
                    if type(value) is Failed:  # cannot happen: a literal or an alias
                        raise value.exc
                    state.finish(i, value)
                    report.finished(i, CALLER, start, time.time())
                    continue
                payload = [make_job(i, specs[i], values, None, True)]
                every = 0 if here.measuring and here.due() else None
                hooks, keys = batch_hooks(graph, [i])
                if self.pickled:
                    job = self._pickle(i, payload)
                    future = self.executor.submit(run_payload, job, every, hooks, keys)
                else:
                    run_here = contextvars.copy_context().run
                    future = self.executor.submit(
                        run_here, _on_thread, self.names, payload, every, hooks, keys
                    )
                self.in_flight[future] = i
            if not self.in_flight:
                continue
            done, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                task = self.in_flight.pop(future)
                self._collect(task, *future.result())

    def _pickle(self, task: int, payload: list) -> bytes:
        try:
            return cloudpickle.dumps(payload, protocol=5)
        except Exception as exc:
            raise unpicklable_task(self.graph.keys[task], exc, "the executor's worker") from exc

    def _collect(self, task: int, worker: Any, outcome: Any) -> None:
        """One job's outcome: a thread pool's thread name, or a worker process's pid
        (its tasks are announced now, as their results arrive: see the module doc)."""
        report = self.report
        if self.pickled:
            worker = self.names.process(worker)
            outcome = pickle.loads(outcome)
        if type(outcome) is Results:
            for t, value, start, stop, measured in outcome.results:
                if self.pickled:
                    report.started(t, worker)
                if measured is not None:  # in the executor's worker: its CPU and GIL
                    report.measured(measured, worker)
                    self.here.note(stop - start)
                self.state.finish(t, value)
                report.finished(t, worker, start, stop)
            return
        if type(outcome) is Unpicklable:
            raise unpicklable_result(
                self.graph.keys[outcome.task], outcome.reason, "the executor's"
            )
        failed_task, exc, tb_text = outcome.task, outcome.exception, outcome.traceback
        if failed_task < 0:  # its job could not be unpickled in the executor's worker
            failed_task = task
        if self.pickled:
            exc = load_exception(exc)
            exc.__cause__ = RemoteTraceback(tb_text)
            report.started(failed_task, worker)
        report.failed(failed_task, exc, worker, tb_text)
        raise exc


class _WorkerNames:
    """Names like the other backends' (``thread-0``, ``process-1``) for the executor's
    threads and processes, numbered as this run first sees them."""

    def __init__(self, report: Reporter):
        self.report = report
        self.lock = threading.Lock()  # guards threads (pool threads name themselves)
        self.threads: dict[int, str] = {}
        self.processes: dict[int, str] = {}  # pid -> name; only the caller's thread

    def thread(self) -> str:
        """This thread's name; the first time, ``worker_started`` on it."""
        ident = threading.get_ident()
        name = self.threads.get(ident)
        if name is None:
            with self.lock:
                name = self.threads[ident] = f"thread-{len(self.threads)}"
            self.report.worker_started(name)
        return name

    def process(self, pid: int) -> str:
        name = self.processes.get(pid)
        if name is None:
            name = self.processes[pid] = f"process-{len(self.processes)}"
        return name


def _on_thread(names: _WorkerNames, payload: list, *options: Any) -> tuple[str, Any]:
    """Run jobs in a thread-pool thread: announce the task on it, then run it.  An
    observer's error (raised by ``started``) is the run's: it reaches the caller
    through the future, as itself, and names no task."""
    name = names.thread()
    names.report.started(payload[0][0], name)
    return name, run_payload(payload, *options)
