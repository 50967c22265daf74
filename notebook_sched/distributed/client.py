"""``Client``, ``Future`` and ``as_completed``: the futures API over a LocalCluster.

A :class:`Future` names a task by its *key*; its result stays on the worker that
computed it until ``result()``/``gather`` brings it here.  Each client counts the live
Future objects per key (``_refs``) and shares one :class:`_FutureState` per key
between them; the scheduler holds one reference per (client, key), taken with the
first Future and dropped with the last, which frees the data on the workers.  A
request and the reference it creates are posted to the scheduler as one function, so
a quick task cannot finish and be forgotten before the client holds it.

Who runs what:

* client threads: ``submit``, ``gather`` and friends post functions to the scheduler
  and wait on their own ``Waiter``; values are unpickled here, never on the I/O thread;
* the scheduler's I/O thread updates ``_FutureState`` (status, event) and runs the
  internal callbacks (``as_completed`` queues);
* one callback thread per client (started on first use) runs the user's
  ``add_done_callback`` functions, so a slow callback never stalls the scheduler.

**The result cache** (``compute(..., cache=...)``) sees the graph through the plan
stage as ``get`` does: hits are substituted before the tasks are added, and the
workers call the store hooks.  With the memory tier only, the cache lives here, so
the results of a compute's hooked tasks (``CompiledGraph.home``, intermediates
included) come back as they finish, as a ``get`` run's do: the I/O thread only queues
them, still packed (``_home``), and :meth:`Client._take_home` unpacks them and calls
their hooks, on the callback thread and, so that nothing is pending when it returns,
in ``result()``/``gather`` and at the start of the next ``compute`` or ``get``.  So a compute
rerun straight after ``result()`` is all hits.  Chosen over refusing ``cache=`` for
futures: the same graph computed twice is what the cache is for, whichever API
started it; the price is one transfer per hooked result, as on ``get``.

``_lock`` guards ``_refs``, ``_states`` and ``status``; ``_FutureState.lock`` guards its
callback list; ``_home_lock`` is held while home results are handed to their hooks
(so a caller that takes it knows every result queued before has been handed over).
"""

from __future__ import annotations

import queue
import threading
import uuid
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any

from .. import config
from ..engine import compile_planned
from ..graph import CALL, compile_graph, first, to_mapping
from ..plan import RunRequest, call_home, planners_for
from ..reporter import key_failure
from . import protocol
from .arguments import build_call, collect_futures, rebuild
from .cluster import LocalCluster
from .defaults import default_cluster
from .future import CANCELLED, ERROR, Future, _FutureState
from .run import BACKEND, ask, fetch, rebuild_error, run_graph
from .state import CancelledError

__all__ = ["Client", "Future", "as_completed", "CancelledError", "current_client"]


class Client:
    """Submit work to a :class:`LocalCluster` and get futures back.

    With no ``cluster``, the shared default cluster (the one ``scheduler=
    "distributed"`` uses) is started or reused.  The newest open client is the one
    ``scheduler="distributed"`` runs on.
    """

    def __init__(self, cluster: LocalCluster | None = None, *, set_as_default: bool = True):
        if cluster is None:
            cluster = default_cluster()
        if not isinstance(cluster, LocalCluster):
            raise TypeError(
                f"Client(cluster=...) takes a notebook_sched.LocalCluster; got "
                f"{type(cluster).__name__}. Use Client() for the default local cluster."
            )
        self.cluster = cluster
        self._scheduler = cluster.scheduler
        self._lock = threading.Lock()
        self._refs: dict = {}
        self._states: dict = {}
        self._callbacks: queue.SimpleQueue | None = None
        self._callback_thread: threading.Thread | None = None
        self._home: deque = deque()  # (graph, [(index, packed value)]) to hand to hooks
        self._home_lock = threading.Lock()
        self.status = "running"
        if set_as_default:
            _clients.append(weakref.ref(self))

    # -- plumbing --------------------------------------------------------------
    def _post(self, fn) -> None:
        if self.status != "running" or self.cluster.status != "running":
            raise RuntimeError(
                f"this Client is {self.status} and its cluster {self.cluster.status}; "
                f"create a new Client (and LocalCluster) to compute again"
            )
        self._scheduler.post(fn)

    def _future(self, key) -> tuple[Future, _FutureState | None]:
        """A new Future for ``key``; the state is returned when the scheduler must be told."""
        with self._lock:
            count = self._refs.get(key, 0)
            self._refs[key] = count + 1
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = _FutureState(key)
        return Future(key, self, state), (state if count == 0 else None)

    def _decref(self, key) -> None:
        with self._lock:
            count = self._refs.get(key, 0) - 1
            if count > 0:
                self._refs[key] = count
                return
            self._refs.pop(key, None)
            state = self._states.pop(key, None)
            if self.status != "running":
                return
        if self.cluster.status == "running":
            self._scheduler.post(lambda s: s.release(key, state))

    def _submit_many(self, add: Callable, keys: list) -> list[Future]:
        """Post ``add(state)`` and take references to ``keys``, as one step."""
        made = [self._future(key) for key in keys]
        new = [(key, state) for key, (_, state) in zip(keys, made, strict=True) if state]

        def run(scheduler_state) -> None:
            add(scheduler_state)
            for key, state in new:
                scheduler_state.acquire(key, state)

        self._post(run)
        return [future for future, _ in made]

    # -- submitting ------------------------------------------------------------
    def submit(self, fn: Callable, *args: Any, key=None, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker.  Futures among the arguments (also in
        lists, tuples and dicts) are replaced by their values, on the workers."""
        if not callable(fn):
            raise TypeError(
                f"submit() needs a function first; got {type(fn).__name__}. Write "
                f"client.submit(f, x) (correct), not client.submit(f(x)) (incorrect)."
            )
        key = _new_key(fn) if key is None else key
        item = (key, *build_call(fn, args, kwargs))
        return self._submit_many(lambda state: state.submit([item]), [key])[0]

    def map(self, fn: Callable, *iterables: Iterable, key=None, **kwargs: Any) -> list[Future]:
        """``submit(fn, *args, **kwargs)`` for each tuple of ``zip(*iterables)``."""
        argument_lists = list(zip(*iterables, strict=False))
        if key is None:
            keys = [_new_key(fn) for _ in argument_lists]
        else:
            keys = list(key)
        if len(keys) != len(argument_lists):
            raise ValueError(f"map: {len(keys)} keys for {len(argument_lists)} calls")
        calls = zip(keys, argument_lists, strict=True)
        items = [(k, *build_call(fn, args, kwargs)) for k, args in calls]
        return self._submit_many(lambda state: state.submit(items), keys)

    def scatter(self, data: Any, timeout: float | None = 60.0) -> Any:
        """Put local data on the workers; returns futures shaped like ``data`` (a value,
        a list or a dict)."""
        if isinstance(data, dict):
            keys, values = list(data), list(data.values())
        elif isinstance(data, list | tuple):
            keys, values = list(range(len(data))), list(data)
        else:
            keys, values = [None], [data]
        names = [f"{type(v).__name__}-{uuid.uuid4().hex}" for v in values]
        items = [(name, value, None) for name, value in zip(names, values, strict=True)]
        futures = self._submit_many(lambda state: state.scatter(items), names)
        for future in futures:
            if not future._state.event.wait(timeout):
                raise TimeoutError("scatter: the workers did not take the data in time")
        if isinstance(data, dict):
            return dict(zip(keys, futures, strict=True))
        if isinstance(data, list | tuple):
            return type(data)(futures)
        return futures[0]

    def compute(self, *collections: Any, cache: Any = None, planners=None) -> Any:
        """Start computing delayed objects (or Dask collections); returns futures.

        One argument gives one Future; several give a list.  The graph goes through
        the engine's plan stage (``plan.py``): ``planners`` and those the plan hooks
        give for ``cache`` (None: the config's) may substitute known results; they are
        told the run ended when every returned future is done."""
        self._take_home()  # the results of earlier computes are in the cache first
        graph: dict = {}
        keys = []
        for obj in collections:
            graph.update(to_mapping(obj))
            keys.append(_output_key(obj, graph))
        planners = [*(planners or ()), *_plan_hooks(cache)]
        if not planners:
            compiled = compile_graph(graph, keys)
            futures = self._submit_many(lambda state: state.add_graph(compiled), keys)
            return futures[0] if len(futures) == 1 else futures
        plan, compiled = compile_planned(graph, keys, planners)
        home = _HomeTarget(self, compiled, self._callback_queue()) if compiled.home else None
        try:
            futures = self._submit_many(lambda state: state.add_graph(compiled, home), keys)
        except BaseException as exc:
            plan.finished(compiled, exc)
            raise

        def finished(error: BaseException | None) -> None:
            self._take_home()  # the hooks have every result before the planners hear
            plan.finished(compiled, error)

        self._when_done(futures, finished)
        return futures[0] if len(futures) == 1 else futures

    def _take_home(self) -> None:
        """Hand the results that came home (``_home``) to their hooks, in arrival order
        (see the module docstring); a result that cannot be unpacked only warns."""
        if not self._home:
            return
        with self._home_lock:
            while self._home:
                try:
                    graph, found = self._home.popleft()
                except IndexError:
                    return
                for i, packed in found:
                    try:
                        value = protocol.unpack(packed)
                    except Exception as exc:
                        warnings.warn(
                            f"the result of {graph.keys[i]!r} came back for the cache but "
                            f"could not be unpacked ({exc!r}); it is not cached",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                        continue
                    call_home(graph, i, value)

    def _when_done(self, futures: list[Future], call: Callable[[Any], None]) -> None:
        """``call(error)`` once, on the callback thread, when all ``futures`` are done
        (``error``: the first failure's exception, or None)."""
        left = [len(futures)]
        errors: list = []
        lock = threading.Lock()

        def one_done(future: Future) -> None:
            state = future._state
            error = None
            if state.status == ERROR and state.error is not None:
                try:
                    error = rebuild_error(state.error)[0]
                except Exception as exc:  # an exception that cannot be rebuilt here
                    error = exc
            elif state.status == CANCELLED:
                error = CancelledError(f"{future.key!r} was cancelled")
            with lock:
                if error is not None:
                    errors.append(error)
                left[0] -= 1
                if left[0]:
                    return
            call(errors[0] if errors else None)

        for future in futures:
            self._add_callback(future, one_done)

    def get(self, dsk: Any, keys: Any, *, observers=None, planners=None, **options: Any) -> Any:
        """Dask's get contract on this cluster: ``scheduler=client.get`` works anywhere."""
        self._take_home()  # the results of earlier computes are in the cache first
        return run_graph(self, dsk, keys, observers=observers, planners=planners)

    get.takes_observers = True  # api.get passes progress bars and profilers through

    # -- results ---------------------------------------------------------------
    def gather(self, futures: Any, timeout: float | None = None) -> Any:
        """Values of futures; lists, tuples and dicts of futures keep their shape."""
        __tracebackhide__ = True
        found: list = []
        collect_futures(futures, found)
        values = self._gather_keys([f.key for f in found], timeout)
        by_key = dict(zip([f.key for f in found], values, strict=True))
        return rebuild(futures, by_key)

    def _gather_keys(self, keys: list, timeout: float | None) -> list:
        __tracebackhide__ = True
        if not keys:
            return []
        kind, payload = ask(self, lambda state, rid, w: state.request_keys(rid, keys, w), timeout)
        self._take_home()  # queued before the data came: in the cache when this returns
        if kind == "data":
            return [protocol.unpack(value) for value in payload]
        if kind == "error":
            key, error = payload
            with self._lock:
                state = self._states.get(key)
            if state is None:
                state = _FutureState(key)
                state.error = error
            raise self._exception(state)
        raise CancelledError(f"cannot get the result: {payload}")

    def _exception(self, state: _FutureState) -> BaseException:
        """The exception of a failed key, rebuilt once, annotated and recorded."""
        if state.exception is None:
            exc, worker, traceback_text = rebuild_error(state.error)
            inputs, graph = self._failure_context(state.key)
            key_failure(
                state.key,
                exc,
                BACKEND,
                worker,
                inputs=inputs,
                remote_traceback=traceback_text,
                graph=graph,
                requested_keys=[state.key] if graph is not None else None,
            )
            state.exception = exc
        return state.exception

    def _failure_context(self, key) -> tuple[dict | None, dict | None]:
        """The failed task's inputs (fetched from the workers, where an erred task keeps
        them) and, for a submitted call, a one-task graph to rerun it locally."""
        try:
            deps, graph = self._scheduler.call(lambda s: _task_graph(s, key))
            values = fetch(self, [tid for _, tid in deps], 30.0)
        except Exception:
            return None, None
        return dict(zip([k for k, _ in deps], values, strict=True)), graph

    def _add_callback(self, future: Future, fn: Callable) -> None:
        callbacks = self._callback_queue()
        future._state.add_callback(lambda: callbacks.put((fn, future)))

    def _callback_queue(self) -> queue.SimpleQueue:
        """The queue of the callback thread (started on first use): ``(fn, arg)`` items."""
        with self._lock:
            if self._callbacks is None:
                self._callbacks = queue.SimpleQueue()
                self._callback_thread = threading.Thread(
                    target=_run_callbacks,
                    args=(self._callbacks,),
                    name="notebook_sched-callbacks",
                    daemon=True,
                )
                self._callback_thread.start()
            return self._callbacks

    def cancel(self, futures: Any) -> None:
        """Stop computing ``futures`` (and what depends on them); free their data."""
        found: list = []
        collect_futures(futures, found)
        keys = [f.key for f in found]
        self._post(lambda state: state.cancel(keys))

    def who_has(self, futures: Any = None) -> dict:
        """``{key: worker name}`` of where each result is (None when not in memory)."""
        if futures is None:
            with self._lock:
                keys = list(self._refs)
        else:
            found: list = []
            collect_futures(futures, found)
            keys = [f.key for f in found]
        return self._scheduler.call(lambda state: state.who_has(keys))

    # -- life cycle ------------------------------------------------------------
    def restart(self) -> None:
        """Kill and restart the workers; every future is cancelled."""
        self.cluster.restart()

    def close(self) -> None:
        """Release this client's futures and stop its callback thread."""
        with self._lock:
            if self.status == "closed":
                return
            self.status = "closed"
            held = list(self._states.items())
            self._refs.clear()
            self._states.clear()
            callbacks, thread = self._callbacks, self._callback_thread
        if held and self.cluster.status == "running":

            def release_all(state) -> None:
                for key, future_state in held:
                    state.release(key, future_state)

            self._scheduler.post(release_all)
        if callbacks is not None:
            callbacks.put(None)
            thread.join(5)
        _clients[:] = [ref for ref in _clients if ref() not in (None, self)]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client status={self.status} futures={len(self._refs)} cluster={self.cluster!r}>"

    def _repr_html_(self) -> str:
        return f"<p>Client ({self.status}, {len(self._refs)} futures)</p>" + (
            self.cluster._repr_html_()
        )


class as_completed:  # noqa: N801 - the dask.distributed / concurrent.futures name
    """Iterate over futures in the order they finish (also failed or cancelled)."""

    def __init__(self, futures: Iterable[Future] = (), with_results: bool = False):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._left = 0
        self.with_results = with_results
        for future in futures:
            self.add(future)

    def add(self, future: Future) -> None:
        self._left += 1
        future._state.add_callback(lambda: self._queue.put(future))

    def count(self) -> int:
        return self._left

    def is_empty(self) -> bool:
        return self._left == 0

    def __iter__(self) -> as_completed:
        return self

    def __next__(self) -> Any:
        if not self._left:
            raise StopIteration
        future = self._queue.get()
        self._left -= 1
        if self.with_results:
            return future, future.result()
        return future


_clients: list = []  # weak references to open clients, newest last


def current_client() -> Client | None:
    """The newest open Client created with ``set_as_default=True``, or None."""
    for ref in reversed(_clients):
        client = ref()
        if client is not None and client.status == "running":
            if client.cluster.status == "running":
                return client
    return None


def _plan_hooks(cache: Any) -> list:
    """The plan hooks' planners for a ``Client.compute`` with ``cache``."""
    cache = config.get("cache") if cache is None else config.validate("cache", cache)
    return planners_for(RunRequest(BACKEND, MappingProxyType({"cache": cache})))


class _HomeTarget:
    """Where the scheduler sends a compute's results for the cache (``("home", ...)``
    notices, on the I/O thread): queued packed, handed over on the callback thread."""

    __slots__ = ("client", "graph", "callbacks")

    def __init__(self, client: Client, graph: Any, callbacks: queue.SimpleQueue):
        self.client = client
        self.graph = graph
        self.callbacks = callbacks

    def notify(self, kind: str, payload: Any = None) -> None:
        if kind == "home":
            self.client._home.append((self.graph, payload))
            self.callbacks.put((_take_home, self.client))


def _take_home(client: Client) -> None:
    client._take_home()


def _run_callbacks(callbacks: queue.SimpleQueue) -> None:
    while True:
        item = callbacks.get()
        if item is None:
            return
        fn, future = item
        try:
            fn(future)
        except Exception:
            import logging

            logging.getLogger("notebook_sched.distributed").exception(
                "a done-callback of %r raised", future
            )


def _task_graph(state, key) -> tuple[list, dict | None]:
    """(On the scheduler thread) ``[(input key, tid)]`` of a named task, and a graph
    ``{key: (func, *args), input key: None...}`` when it came from ``submit``."""
    ts = state.named.get(key)
    if ts is None:
        return [], None
    deps = [(dep.key, dep.tid) for dep in ts.deps]
    spec = ts.spec
    if spec is None or spec[0] != CALL:
        return deps, None
    key_of = {tid: dep_key for dep_key, tid in deps}
    args = list(spec[2])
    for pos, tid in spec[3]:
        args[pos] = key_of[tid]
    graph: dict = {dep_key: None for dep_key, _ in deps}
    graph[key] = (spec[1], *args)
    return deps, graph


def _new_key(fn: Any) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return f"{'lambda' if name == '<lambda>' else name}-{uuid.uuid4().hex}"


def _output_key(obj: Any, graph: dict) -> Any:
    """The key whose value is ``obj``'s result; adds a finalize task when needed."""
    keys = obj.__dask_keys__()
    post, extra = obj.__dask_postcompute__()
    if post is first and not extra and len(keys) == 1 and not isinstance(keys[0], list):
        return keys[0]  # one key's value (a Delayed): no finalize task
    key = f"finalize-{uuid.uuid4().hex}"
    graph[key] = (_finalize, post, list(extra), keys)
    return key


def _finalize(post: Callable, extra: list, results: Any) -> Any:
    return post(results, *extra)
