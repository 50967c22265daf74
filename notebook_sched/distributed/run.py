"""A ``get`` on the cluster: the caller's side of one graph run.

The caller thread compiles the graph (``engine.execute_graph`` does: cull, validate,
order), posts it to the scheduler as one run (a block of task ids, see ``state.py``),
then waits on a queue that the scheduler's I/O thread fills with notices::

    ("done", ([(index, start, stop), ...], worker))   only when observers listen
    ("home", [(index, packed value)])                 results the cache keeps here
    ("data", [packed output values])                  the run is complete
    ("output", (stdout text, stderr text))            what a task printed
    ("failed", (index, (exception, traceback, worker)))
    ("cancelled", reason)

Events are emitted here, in the caller thread, so observers need not be thread-safe.
``task_started`` is emitted just before ``task_finished``, and while waiting the
caller also looks (every POLL_SECONDS) at which tasks the workers are executing right
now (shared memory), so long tasks show as running while they run.

When a task fails, its inputs are gathered from the workers (they are kept while the
failed task exists) and recorded by the run's reporter (``reporter.py``), so the debugging layer
can rerun the task locally.  Whatever happens - success, failure, KeyboardInterrupt -
the run is released at the end: its data is freed and its unfinished tasks are
cancelled on the workers.  A background job cancelled from another thread wakes the
run it waits for with a ``cancelled`` notice (``wake_run``), so the release happens at
once, not at the next notice.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..engine import UNKNOWN, execute_graph
from ..errors import load_exception
from ..failure import RemoteTraceback
from ..graph import VALUE
from ..plan import call_home
from ..task_output import write_text
from . import protocol
from .state import CancelledError

__all__ = ["run_graph", "rebuild_error", "request_ids", "Waiter", "wake_run"]

BACKEND = "distributed"
POLL_SECONDS = 0.1
INPUTS_TIMEOUT = 30.0
ALIVE_CHECK_SECONDS = 1.0

request_ids = itertools.count(1)  # ids of runs and data requests, unique per process

# The notices of the runs being waited for, by caller thread, so a background job
# cancelled from another thread can wake its run (``wake_run``).  Only the run's own
# thread adds and removes its entry (dict item operations are atomic).
_waiting: dict[int, Waiter] = {}


def wake_run(thread_ident: int | None, reason: str) -> None:
    """Stop the run that thread ``thread_ident`` waits for: it raises CancelledError
    at once and releases its tasks, which the workers then cancel (a background job's
    ``cancel()``; an interrupt of the caller's own thread needs none of this)."""
    waiter = _waiting.get(thread_ident) if thread_ident is not None else None
    if waiter is not None:
        waiter.notify("cancelled", reason)


def rebuild_error(error: tuple) -> tuple[BaseException, str, str | None]:
    """``(exception, worker name, traceback text)`` from a scheduler error record."""
    exc, traceback_text, worker = error
    if isinstance(exc, bytes | bytearray):
        exc = load_exception(bytes(exc))
    if traceback_text:
        exc.__cause__ = RemoteTraceback(traceback_text)
    return exc, worker, traceback_text


class Waiter:
    """The target of a request or run: queues notices, wakes the caller.

    ``wait`` checks every ALIVE_CHECK_SECONDS that the scheduler thread still runs, so
    a crash there raises instead of hanging the caller."""

    __slots__ = ("_queue", "_scheduler")

    def __init__(self, scheduler=None) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._scheduler = scheduler

    def notify(self, kind: str, payload: Any) -> None:
        self._queue.put((kind, payload))

    def wait(self, timeout: float | None = None) -> tuple[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = ALIVE_CHECK_SECONDS
            if deadline is not None:
                step = min(step, max(0.0, deadline - time.monotonic()))
            try:
                return self._queue.get(timeout=step)
            except queue.Empty:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no answer from the cluster within {timeout} s")
            thread = getattr(self._scheduler, "thread", None)
            if thread is not None and not thread.is_alive():
                raise RuntimeError(
                    "the cluster's scheduler thread stopped (see the log above for why); "
                    "close this cluster and start a new one"
                )
            check_socket_folder(self._scheduler)


class SocketFolderGone(RuntimeError):
    """The cluster's socket folder was removed while it ran: its workers cannot reach
    each other (or be reached) any more."""


def check_socket_folder(scheduler: Any) -> None:
    """Raise :class:`SocketFolderGone` when ``scheduler`` listens on a UNIX socket whose
    folder no longer exists (a tmp cleaner, ``rm -rf /tmp/*``): connections already
    open still work, but a worker that must reach a peer it never talked to waits
    for it forever.  Checked while a run has heard nothing for ALIVE_CHECK_SECONDS."""
    address = getattr(scheduler, "address", None)
    if not isinstance(address, str):
        return  # TCP (or no scheduler): no folder to lose
    folder = os.path.dirname(address)
    if os.path.isdir(folder):
        return
    raise SocketFolderGone(
        f"The local cluster's socket folder {folder} was removed while it ran (a "
        f"temporary-file cleaner, or rm -rf on /tmp): its workers can no longer connect "
        f"to each other. This run is stopped and the cluster closed; the next compute "
        f"with scheduler='distributed' starts a new one (a LocalCluster of your own: "
        f"close it and make a new one)."
    )


def ask(client, request: Callable[..., None], timeout: float | None) -> tuple[str, Any]:
    """Post ``request(state, rid, waiter)`` to the scheduler and wait for its answer
    ``(kind, payload)``; a wait that ends without one (timeout, interrupt) withdraws
    the request, since nobody will read the answer."""
    waiter = Waiter(client._scheduler)
    rid = next(request_ids)
    client._post(lambda state: request(state, rid, waiter))
    try:
        return waiter.wait(timeout)
    except BaseException:
        client._scheduler.post(lambda state: state.drop_request(rid))
        raise


def fetch(client, tids: list, timeout: float | None = None) -> list:
    """The values of tasks ``tids`` (any run), unpacked, in order."""
    kind, payload = ask(client, lambda state, rid, w: state.request_data(rid, tids, w), timeout)
    if kind != "data":
        raise RuntimeError(f"the inputs could not be gathered: {kind} {payload!r}")
    return [protocol.unpack(value) for value in payload]


def run_graph(client, dsk: Any, keys: Any, observers=None, planners=None) -> Any:
    """Compute ``keys`` of ``dsk`` on ``client``'s cluster (Dask's ``get`` contract)."""

    def drive(graph, state, report):
        _GraphRun(client, graph, state, report).run()

    threads = client.cluster.n_workers * client.cluster.threads_per_worker
    return execute_graph(
        dsk, keys, drive, BACKEND, observers=observers, workers=threads, planners=planners
    )


class _GraphRun:
    def __init__(self, client, graph, state, report):
        self.client = client
        self.graph = graph
        self.state = state
        self.report = report
        self.base: list = []
        self.started = bytearray(len(graph.keys)) if report.task_started else None

    def run(self) -> None:
        report = self.report
        timed = report.timed or bool(report.key_done)
        notices = Waiter(self.client._scheduler)
        run_id = next(request_ids)
        graph = self.graph
        base = self.base
        self.client._post(lambda state: base.append(state.add_run(run_id, graph, notices, timed)))
        me = threading.get_ident()
        outer = _waiting.get(me)  # a run waited for by a task of ours on this thread
        _waiting[me] = notices
        try:
            self._wait(notices)
        finally:
            if outer is None:
                _waiting.pop(me, None)
            else:
                _waiting[me] = outer
            if self.client.cluster.status == "running":
                self.client._scheduler.post(lambda state: state.release_run(run_id))

    def _wait(self, notices: Waiter) -> None:
        poll = POLL_SECONDS if self.started is not None else None
        while True:
            try:
                kind, payload = notices.wait(poll)
            except TimeoutError:
                self._poll_started()
                continue
            if kind == "done":
                self._done(*payload)
            elif kind == "home":  # results the cache keeps in this process (plan.py)
                for i, packed in payload:
                    call_home(self.graph, i, protocol.unpack(packed))
            elif kind == "data":
                values, specs = self.state.values, self.graph.specs
                for out, packed in zip(self.graph.outputs, payload, strict=True):
                    # A literal output is the caller's own object, not a copy back.
                    spec = specs[out]
                    values[out] = spec[1] if spec[0] == VALUE else protocol.unpack(packed)
                    if self.graph.home and out in self.graph.home:
                        call_home(self.graph, out, values[out])
                return
            elif kind == "output":  # what a task printed: into this thread's (cell's) streams
                write_text(*payload)
            elif kind == "failed":
                self._failed(*payload)
            elif kind == "error":  # an output failed; "failed" normally comes first
                raise rebuild_error(payload[1])[0]
            elif kind == "cancelled":
                raise CancelledError(f"the computation was cancelled: {payload}")

    def _done(self, items: list, worker: str) -> None:
        """``items``: ``(i, start, stop)``, or ``(i, start, stop, measured)`` for a task
        the worker measured (a sample: see ``worker.py``; ``measured`` is its
        ``measure.Measurement``)."""
        report = self.report
        if self.started is not None:
            for item in items:
                self._started(item[0], worker)
        if any(len(item) > 3 for item in items):
            for item in items:
                if len(item) > 3:
                    report.measured(item[3], worker)
            items = [item[:3] for item in items]
        report.finished_batch(items, worker)

    def _started(self, i: int, worker: str) -> None:
        if not self.started[i]:
            self.started[i] = 1
            self.report.started(i, worker)

    def _poll_started(self) -> None:
        if not self.base:
            return
        base = self.base[0]
        n = len(self.graph.keys)
        for worker, tid in self.client.cluster.executing():
            i = tid - base
            if 0 <= i < n:
                self._started(i, worker)

    def _failed(self, i: int, error: tuple) -> None:
        exc, worker, traceback_text = rebuild_error(error)
        inputs = UNKNOWN
        deps = self.graph.deps[i]
        if self.base:
            base = self.base[0]
            try:
                values = fetch(self.client, [base + d for d in deps], INPUTS_TIMEOUT)
                inputs = dict(zip(deps, values, strict=True))
            except Exception:
                pass  # e.g. the worker holding them died meanwhile: no local rerun
        self.report.failed(i, exc, worker, traceback_text, inputs, emit=False)
        if self.started is not None:
            self._started(i, worker)
        self.report.emit_failed(i, worker, exc)
        raise exc
