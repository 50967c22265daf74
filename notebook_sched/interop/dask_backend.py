"""``scheduler="dask"``: our graphs on a dask.distributed cluster, with our events.

Which cluster: the client connected to ``config.get("dask_address")`` when that is
set (one client per address, made on first use, closed at exit; ``%%schedule dask
--address tcp://host:8786``), otherwise the active ``distributed.Client``
(``Client.current(allow_global=True)``: the one of a ``with client.as_current():``
block, else the newest client made with ``set_as_default=True``, the default).

How a run goes::

    compile_graph ---> one Dask task per task: (run_task, Packed(spec), *input keys)
                       keys ("<name>-<run token>", i): unique per run, named for the dashboard
    client.get(tasks, every key, sync=False) ---> a Future per task
    workers  --Worker.log_event("notebook_sched-<client id>", ...)-->  scheduler
             --subscribe_topic--> this client's event loop --queue--> the calling thread
    calling thread: task_started / task_finished / task_failed with the worker's
                    address and times; feeds the run's RunState, and releases a
                    task's Future once the RunState has no reader left for it (its
                    ``holders``); gathers the requested results.

Holding a Future per task (until its readers finish) is what lets a failure be
debugged: the failed task's inputs are still in the cluster, and are gathered into
its :class:`~notebook_sched.failure.TaskFailure`, so ``debug/`` reruns the task here
and ``%debug`` lands in its frame.  Results stay in the workers until then, about as
long as Dask would keep them itself.

Honest limits:

* Events arrive after the fact, by one network hop: ``task_started`` is emitted when
  the worker's start message reaches us (the task may be done by then);
  ``start``/``stop`` are the worker's own ``time.time()`` (clocks of other machines
  may differ from ours).  Results never wait for events, and if a worker's message
  is lost (the worker died) its task simply reports no event.
* A KeyboardInterrupt cancels every task that has not finished, but a task already
  running on a worker runs to its end (dask.distributed cannot stop a thread).
* A worker that dies repeatedly gives Dask's ``KilledWorker``; it is never rerun here.
* notebook_sched must be installed where the scheduler and the workers run (the
  workers call :func:`notebook_sched.interop._remote.run_task`).

``_lock`` guards ``_clients`` and ``_routers``.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import uuid
import weakref
from typing import Any

from ..engine import UNKNOWN, Reporter, execute_graph
from ..failure import RemoteTraceback
from ..graph import key_split, remap_spec
from ..measure import Measurement
from ._remote import Packed, Tag, run_task, unwrap

__all__ = ["get", "current_client", "shutdown"]

BACKEND = "dask"
TOPIC = "notebook_sched-{client}"
POLL_SECONDS = 0.1  # how often a waiting caller looks up (keeps Ctrl-C prompt)
EVENT_GRACE_SECONDS = 2.0  # results are in; how long to wait for their last events
CONNECT_TIMEOUT = "10s"

_lock = threading.Lock()
_clients: dict[str, Any] = {}  # address -> the Client we opened for it
_routers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Client -> _Router


def get(
    dsk: Any,
    keys: Any,
    *,
    num_workers: int | None = None,
    pool: Any = None,
    observers=None,
    planners=None,
    **options: Any,
) -> Any:
    """Compute ``keys`` of ``dsk`` on a dask.distributed cluster (Dask's get contract).

    ``num_workers`` and ``pool`` are ignored: the cluster's workers run the tasks."""
    client = current_client()
    workers = sum(client.nthreads().values()) or 1

    def drive(graph, state, report):
        _DaskRun(client, graph, state, report).drive()

    return execute_graph(
        dsk, keys, drive, BACKEND, observers=observers, workers=workers, planners=planners
    )


# -- which cluster ------------------------------------------------------------------


def current_client() -> Any:
    """The client a ``dask`` run uses now (see module docstring)."""
    from .. import config

    address = config.get("dask_address")
    if address:
        return _connect(address)
    from distributed import Client

    try:
        return Client.current(allow_global=True)
    except ValueError:
        raise RuntimeError(
            "scheduler='dask' needs a dask.distributed cluster, and there is none: no "
            "distributed.Client is active and no address is set. Either create a client, "
            "e.g. `from distributed import Client, LocalCluster; client = Client(LocalCluster("
            "host='127.0.0.1', dashboard_address='127.0.0.1:0'))` (a local cluster reachable "
            "from this machine only; a bare `Client()` serves its dashboard on every "
            "interface) or "
            "`Client('tcp://host:8786')`, or give the scheduler's address: "
            "notebook_sched.config.set(dask_address='tcp://host:8786'), or in a notebook "
            "`%%schedule dask --address tcp://host:8786`."
        ) from None


def _connect(address: str) -> Any:
    from distributed import Client

    with _lock:
        client = _clients.get(address)
        if client is not None and client.status in ("running", "connecting", "newly-created"):
            return client
        try:
            client = Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise type(exc)(
                f"Could not connect to the dask scheduler at {address!r} ({exc}). Start one "
                f"with `dask scheduler` and workers with `dask worker {address}`, or check "
                f"the address (config dask_address / %schedule --address)."
            ) from exc
        _clients[address] = client
        return client


def shutdown() -> None:
    """Close the clients opened for ``dask_address`` (at exit; the clusters stay up)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
        _routers.clear()
    for client in clients:
        try:
            client.close()
        except Exception:  # closing at exit: the scheduler may be gone already
            pass


atexit.register(shutdown)


# -- events from the workers ---------------------------------------------------------


class _Router:
    """Hands the events of one client's topic to the queue of the run they belong to.

    Called on the client's event-loop thread; ``lock`` guards ``runs``."""

    def __init__(self, topic: str):
        self.topic = topic
        self.lock = threading.Lock()
        self.runs: dict[str, queue.SimpleQueue] = {}

    def __call__(self, event: tuple) -> None:
        _, message = event  # (scheduler time, message)
        with self.lock:
            target = self.runs.get(message[1])
        if target is not None:
            target.put(message)

    def open(self, run: str) -> queue.SimpleQueue:
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        with self.lock:
            self.runs[run] = inbox
        return inbox

    def close(self, run: str) -> None:
        with self.lock:
            self.runs.pop(run, None)


def _router(client: Any) -> _Router:
    with _lock:
        router = _routers.get(client)
        if router is None:
            router = _routers[client] = _Router(TOPIC.format(client=client.id))
            client.subscribe_topic(router.topic, router)
    return router


# -- one run -------------------------------------------------------------------------


class _DaskRun:
    """One graph on the cluster: submit, turn worker events into ours, collect."""

    def __init__(self, client: Any, graph, state, report: Reporter):
        self.client = client
        self.graph = graph
        self.state = state
        self.report = report
        self.run = uuid.uuid4().hex[:16]
        self.router = _router(client)
        self.futures: list = []
        self.finished = bytearray(len(graph))

    def _dask_graph(self) -> tuple[dict, list]:
        graph, run, topic = self.graph, self.run, self.router.topic
        names = [f"{key_split(key)}-{run}" for key in graph.keys]
        dask_keys = [(names[i], i) for i in range(len(names))]
        tasks = {}
        measure = bool(self.report.task_measured)  # the workers measure every task then
        on_result = graph.on_result
        for i, spec in enumerate(graph.specs):
            deps = graph.deps[i]
            position = {d: j for j, d in enumerate(deps)}  # inputs arrive as arguments
            hook = on_result.get(i) if on_result else None
            packed = Packed(topic, run, i, remap_spec(spec, position), measure, hook, graph.keys[i])
            tasks[dask_keys[i]] = (run_task, packed, *[dask_keys[d] for d in deps])
        return tasks, dask_keys

    def drive(self) -> None:
        inbox = self.router.open(self.run)
        try:
            tasks, dask_keys = self._dask_graph()
            self.futures = self.client.get(tasks, dask_keys, sync=False)
            del tasks
            outputs = sorted(set(self.graph.outputs))
            for out in outputs:
                self.futures[out].add_done_callback(lambda _, out=out: inbox.put(("out", out)))
            self._wait(inbox, len(outputs))
            values = self.client.gather([self.futures[out] for out in outputs])
            for out, value in zip(outputs, values, strict=True):
                self.state.values[out] = value
        except BaseException:
            self.client.cancel([f for f in self.futures if not f.done()])
            raise
        finally:
            self.router.close(self.run)
            for future in self.futures:
                future.release()

    def _wait(self, inbox: queue.SimpleQueue, n_outputs: int) -> None:
        """Process worker events until every output is done (and its events are in)."""
        state = self.state  # its ``remaining`` counts tasks not reported finished yet
        outputs_done = 0
        deadline = None
        while state.remaining or outputs_done < n_outputs:
            try:
                message = inbox.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    return  # a worker's messages were lost; the results are complete
                continue
            kind = message[0]
            if kind == Tag.FINISHED:
                self._finished(message)
            elif kind == Tag.STARTED:
                self.report.started(message[2], message[3])
            elif kind == Tag.FAILED:
                self._failed(message)
            else:  # ("out", i): a requested result is done (or erred)
                outputs_done += 1
                if self.futures[message[1]].status == "error":
                    self._erred_without_event()
                if outputs_done == n_outputs and state.remaining:
                    deadline = time.monotonic() + EVENT_GRACE_SECONDS

    def _finished(self, message: tuple) -> None:
        _, _, i, worker, start, stop, measured = message
        if self.finished[i]:
            return  # rerun after a worker was lost: reported once
        self.finished[i] = 1
        if measured is not None:  # measured on the worker (_remote.py): CPU, bytes, its GIL
            self.report.measured(Measurement(*measured), worker)
        self.report.finished(i, worker, start, stop)
        # The run state counts readers (requested results keep one until gathered):
        # an input with none left is released, and the cluster may drop it.
        state, futures = self.state, self.futures
        state.finish(i, None)
        holders = state.holders
        for d in self.graph.deps[i]:
            if not holders[d]:
                futures[d].release()

    def _failed(self, message: tuple) -> None:
        _, _, i, worker, _, _, traceback_text = message
        exc = self.futures[i].exception()  # the task's own exception, once Dask has it
        if exc is None:
            return  # Dask retried the task (retries=...) and it succeeded
        exc = unwrap(exc)  # a SystemExit and the like travel wrapped (see _remote.py)
        self._raise(i, exc, worker, traceback_text)

    def _erred_without_event(self) -> None:
        """A result erred but no task reported raising: a worker died, or a task could
        not even start (e.g. its function did not unpickle there)."""
        from distributed import KilledWorker

        futures, deps = self.futures, self.graph.deps
        erred = [i for i, f in enumerate(futures) if f.status == "error"]
        erred_set = set(erred)
        root = next((i for i in erred if not erred_set.intersection(deps[i])), erred[0])
        exc = unwrap(futures[root].exception())
        text = None
        if not isinstance(exc, KilledWorker):
            import traceback

            tb = futures[root].traceback()
            text = "".join(traceback.format_exception(type(exc), exc, tb))
        self._raise(root, exc, "unknown worker", text)

    def _raise(self, i: int, exc: BaseException, worker: str, traceback_text: str | None):
        """Record the failure of task ``i`` with its inputs from the cluster; raise."""
        graph = self.graph
        if traceback_text is not None:
            exc.__cause__ = RemoteTraceback(traceback_text)
        deps = graph.deps[i]
        try:
            gathered = self.client.gather([self.futures[d] for d in deps]) if deps else []
        except Exception:  # an input is gone too (its worker died): no rerun possible
            inputs = UNKNOWN
        else:
            inputs = dict(zip(deps, gathered, strict=True))
        self.report.failed(i, exc, worker, traceback_text, inputs)
        raise exc
