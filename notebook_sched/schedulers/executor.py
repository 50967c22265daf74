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

Two ways a user's executor cannot answer, each turned into what to do:

- A compute from inside a task running on a thread of that same executor (a thread
  pool with every thread busy would wait for itself forever, as Dask does): the
  caller is one of the executor's threads, so that graph's tasks run inline, in the
  calling thread, one after the other.
- A worker process of a ``ProcessPoolExecutor`` that dies (``os._exit``, a segfault)
  breaks the whole executor: the ``BrokenExecutor`` gets a note naming the tasks that
  were running on it and the fix (a new executor, or ``scheduler="processes"``, whose
  pool replaces dead workers); so does the next compute handed the broken executor.
"""

from __future__ import annotations

import contextvars
import os
import pickle
import sys
import threading
import time
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    Executor,
    Future,
    ThreadPoolExecutor,
    wait,
)
from typing import Any

import cloudpickle

from ..engine import Reporter, execute_graph
from ..errors import load_exception, unpicklable_result, unpicklable_task
from ..failure import RemoteTraceback
from ..graph import ALIAS, VALUE
from ..measure import CALLER
from ..plan import call_home
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


# The executors (their ids) whose jobs of ours the current thread is running.
_running = threading.local()


def on_own_thread(executor: Executor) -> bool:
    """Whether the calling thread is one of ``executor``'s (a thread pool's) threads:
    running a job of ours for it, or listed among its threads."""
    pool = getattr(executor, "pool", executor)
    if id(pool) in getattr(_running, "pools", ()):
        return True
    threads = getattr(pool, "_threads", None) or getattr(pool, "_pool", None) or ()
    return threading.current_thread() in list(threads)


class InlineExecutor(Executor):
    """Runs each job at once, in the calling thread (a compute from one of the
    executor's own threads: see the module docstring)."""

    _max_workers = 1

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the job's own errors travel in its outcome
            future.set_exception(exc)
        return future


def get(
    dsk: Any, keys: Any, *, executor: Any, observers=None, planners=None, **options: Any
) -> Any:
    """Compute ``keys`` of ``dsk`` with tasks submitted to ``executor`` (or a pool)."""
    executor = as_executor(executor)
    if in_threads(executor) and on_own_thread(executor):
        executor = _Inline(executor)
    backend = f"executor:{type(getattr(executor, 'pool', executor)).__name__}"
    width = getattr(executor, "_max_workers", None) or os.cpu_count() or 1

    def drive(graph, state, report):
        _ExecutorRun(graph, state, report, executor, width).drive()

    return execute_graph(
        dsk, keys, drive, backend, observers=observers, workers=width, planners=planners
    )


class _Inline(InlineExecutor):
    """An :class:`InlineExecutor` named after the executor it stands in for."""

    threads = True

    def __init__(self, executor: Executor):
        self.pool = getattr(executor, "pool", executor)


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
                self.in_flight[self._submit(i, payload, every, hooks, keys)] = i
            if not self.in_flight:
                continue
            done, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                task = self.in_flight[future]
                try:
                    outcome = future.result()
                except BrokenExecutor as exc:
                    exc.add_note(_broken_note(self, future))
                    raise
                del self.in_flight[future]
                self._collect(task, *outcome)

    def _submit(self, task: int, payload: list, *options: Any) -> Future:
        try:
            if self.pickled:
                job = self._pickle(task, payload)
                return self.executor.submit(run_payload, job, *options)
            run_here = contextvars.copy_context().run
            pool = id(getattr(self.executor, "pool", self.executor))
            return self.executor.submit(run_here, _on_thread, self.names, pool, payload, *options)
        except BrokenExecutor as exc:
            exc.add_note(_broken_note(self, None))
            raise

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
                if self.pickled and self.graph.home:  # ran in another process
                    call_home(self.graph, t, value)
                self.state.finish(t, value)
                report.finished(t, worker, start, stop)
            return
        if type(outcome) is Unpicklable:
            bad_task, reason, _inputs = outcome.bad[0]
            raise unpicklable_result(self.graph.keys[bad_task], reason, "the executor's")
        failed_task, exc, tb_text = outcome.task, outcome.exception, outcome.traceback
        if failed_task < 0:  # its job could not be unpickled in the executor's worker
            failed_task = task
        if self.pickled:
            exc = load_exception(exc)
            exc.__cause__ = RemoteTraceback(tb_text)
            report.started(failed_task, worker)
        report.failed(failed_task, exc, worker, tb_text)
        raise exc


def _broken_note(run: _ExecutorRun, future: Future | None) -> str:
    """What broke the executor (the tasks running on it when it broke) and the fix."""
    name = type(getattr(run.executor, "pool", run.executor)).__name__
    fix = (
        f"This {name} can run nothing more: make a new one (e.g. "
        f"scheduler=concurrent.futures.ProcessPoolExecutor(4)), or use "
        f"scheduler='processes', whose pool replaces a worker that dies."
    )
    if future is None:
        return f"notebook_sched: the {name} given as scheduler is already broken. {fix}"
    keys = [run.graph.keys[t] for t in run.in_flight.values()]
    shown = ", ".join(repr(k) for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
    return (
        f"notebook_sched: a worker process of the {name} died (os._exit, a crash, the "
        f"OOM killer) while it ran one of the tasks {shown}. {fix}"
    )


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


def _on_thread(names: _WorkerNames, pool: int, payload: list, *options: Any) -> tuple[str, Any]:
    """Run jobs in a thread-pool thread: announce the task on it, then run it (marked
    as running for ``pool``, so a compute from the task on that pool runs inline).  An
    observer's error (raised by ``started``) is the run's: it reaches the caller
    through the future, as itself, and names no task."""
    name = names.thread()
    names.report.started(payload[0][0], name)
    outer = getattr(_running, "pools", frozenset())
    _running.pools = outer | {pool}
    try:
        return name, run_payload(payload, *options)
    finally:
        _running.pools = outer
