"""Run a graph on any ``concurrent.futures.Executor`` the user supplies.

Used for ``scheduler=<executor>`` and for ``pool=`` on the threads and processes
backends: thread pools, ``ProcessPoolExecutor``, loky's reusable executor, or any
third-party executor.  The calling thread keeps the RunState and submits one job
per future (format in ``_worker.py``), keeping about two jobs per executor worker
in flight.  For every executor that is not a thread pool the jobs are cloudpickled
first, so lambdas and notebook-defined functions travel, and results come back
cloudpickled too.

The executor belongs to the user: on KeyboardInterrupt or failure the run cancels
the futures that have not started and returns; tasks already running in a foreign
executor finish there (we cannot kill its workers).
"""

from __future__ import annotations

import os
import pickle
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ThreadPoolExecutor, wait
from typing import Any

import cloudpickle

from ..engine import execute_graph, run_spec, task_failure
from ..errors import load_exception
from ..events import Dispatcher
from ..failure import RemoteTraceback
from ..graph import ALIAS, VALUE
from ._worker import run_payload

__all__ = ["get"]


def get(dsk: Any, keys: Any, *, executor: Executor, observers=None, **options: Any) -> Any:
    """Compute ``keys`` of ``dsk`` with tasks submitted to ``executor``."""
    backend = f"executor:{type(executor).__name__}"
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
        self.pickled = not isinstance(executor, ThreadPoolExecutor)
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
                if not self.pickled and events.worker_started:
                    future = self.executor.submit(_announced, events.worker_started, payload)
                else:
                    future = self.executor.submit(run_payload, payload)
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
    import threading

    worker_started(threading.current_thread().name)
    return run_payload(payload)
