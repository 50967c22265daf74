"""``dask.callbacks.Callback`` hooks fed from our events.

Dask's local schedulers call five hooks per run, each of every active callback
(``Callback.active`` plus the ``callbacks=`` passed to ``compute``)::

    start(dsk)                                   before the run
    start_state(dsk, state)                      once the run's state exists
    pretask(key, dsk, state)                     before each task
    posttask(key, result, dsk, state, worker_id) after each task
    finish(dsk, state, errored)                  at the end, also on error

:class:`DaskCallbacks` is an :class:`~notebook_sched.events.Observer` that calls them
from ``graph_started``, ``task_started``, ``task_finished`` and ``graph_finished``, so
``dask.diagnostics.ProgressBar``, ``Profiler``, ``ResourceProfiler`` and
``CacheProfiler`` work on every backend of ours.  Differences from Dask, by design of
our event protocol:

* ``state`` holds what Dask documents and its diagnostics read: ``dependencies`` and
  ``dependents`` (``{key: set of keys}``, literals included, as Dask's
  ``start_state`` builds them), ``waiting`` (tasks not started), ``running``,
  ``finished``, ``ready`` (always empty: we do not report readiness), ``released``
  (always empty: releases are not events) and ``cache`` (the graph's literal values,
  as Dask starts it; results are not added).
* ``posttask`` gets the task's real result where the task ran in this process
  (``sync``, ``threads``, the caller's share of ``auto``): the observer is also a
  :class:`~notebook_sched.plan.Planner` whose per-task result hooks (:class:`_Tap`)
  hand the value over right before ``task_finished``.  Where a task ran in another
  process the result is not here and ``posttask`` gets ``None``; callbacks known to
  *use* the result (``dask.cache.Cache``, ``dask.diagnostics.CacheProfiler``) are
  therefore refused up front on backends with worker processes (:func:`check_backend`),
  naming what to use instead, rather than fed a ``None`` they would store.
* ``start(dsk)`` runs in the plan stage, before the graph compiles, on Dask's view of
  the graph: a callback that replaces tasks by known values there (``Cache``) gets
  those keys substituted, so their tasks and what only they need do not run.
* ``worker_id`` is our worker name (``"thread-0"``, ``"process-1"``, a worker
  address under ``dask``) rather than a thread ident.

Literal values are not tasks and are not reported; aliases are (Dask runs an alias as
a task, and its tests count them), though our own observers do not hear of them.
``dsk`` is the graph as Dask's schedulers show it to callbacks: legacy tuples
converted to Dask's ``Task``/``DataNode`` objects (Dask's own converter; the graph
as given when that is unavailable).

As in Dask, an exception in a callback propagates and aborts the compute
(``propagates_errors``; our own observers are switched off with a warning instead).

Dask calls the hooks from one thread; ours come from worker threads under
``threads``, so every hook runs under one lock.  As in Dask, the callbacks apply to
the outermost compute only: ``Callback.active`` is emptied while the run lasts
(``dask.callbacks.local_callbacks``), so a compute inside a task does not report.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any

from ..events import Observer, RunInfo
from ..graph import ALIAS, NODE, VALUE
from ..plan import Planner

__all__ = ["DaskCallbacks", "check_backend"]

# Callbacks whose posttask uses the task's result (by class name and module, so Dask
# is not imported to ask).
_RESULT_READERS = {("dask.cache", "Cache"), ("dask.diagnostics.profile", "CacheProfiler")}


def result_readers(callbacks: list[tuple]) -> list[str]:
    """Names of the callbacks in ``callbacks`` known to read each task's result."""
    found = []
    for callback in callbacks:
        owner = getattr(callback[3], "__self__", None)  # the bound _posttask
        cls = type(owner)
        if any((c.__module__, c.__name__) in _RESULT_READERS for c in cls.__mro__):
            found.append(f"{cls.__module__}.{cls.__name__}")
    return found


def check_backend(callbacks: list[tuple], backend: str, in_worker_processes: bool) -> None:
    """Refuse, before anything runs, callbacks that need results a backend keeps in
    other processes."""
    readers = result_readers(callbacks)
    if readers and in_worker_processes:
        raise ValueError(
            f"{readers[0]} reads every task's result, which the {backend!r} scheduler "
            f"computes in other processes and does not bring back. Use it with "
            f"scheduler='threads' or 'sync', or use notebook_sched's own result cache, "
            f"which works on every backend: compute(..., cache='memory') or "
            f"ns.config.set(cache='disk')."
        )


def dask_view(mapping: Mapping) -> Mapping:
    """The graph as Dask's schedulers hand it to callbacks (``Task``/``DataNode``)."""
    try:
        from dask._task_spec import convert_legacy_graph
    except ImportError:  # a Dask without it: the graph as given
        return mapping
    try:
        return convert_legacy_graph(mapping)
    except Exception:  # a graph Dask cannot convert still runs on ours
        return mapping


_GONE = object()


def _alias_target(specs: list, deps: list, i: int) -> int | None:
    """The task an alias stands for: an ``ALIAS`` spec, or Dask's ``Alias`` node (still
    a node when planners see the graph; the engine settles it later)."""
    spec = specs[i]
    if spec[0] == ALIAS:
        return spec[1]
    if spec[0] == NODE and len(deps[i]) == 1:
        target = getattr(spec[1], "target", _GONE)
        if target is not _GONE and spec[2].get(target) == deps[i][0]:
            return deps[i][0]
    return None


def _literal(spec: tuple, deps: tuple) -> Any:
    """A literal's value (a ``VALUE`` spec or Dask's ``DataNode``), else ``_GONE``."""
    if spec[0] == VALUE:
        return spec[1]
    node = spec[1]
    if spec[0] == NODE and not deps and hasattr(node, "value") and hasattr(node, "typ"):
        return node.value
    return _GONE


def literal_values(dsk: Mapping) -> dict:
    """``{key: value}`` of the graph's ``DataNode`` literals: Dask's initial cache."""
    return {
        key: node.value
        for key, node in dsk.items()
        if hasattr(node, "typ") and hasattr(node, "value") and not node.dependencies
    }


_taps: dict[int, DaskCallbacks] = {}  # token -> the observer its _Tap hooks feed
_tokens = itertools.count(1)


class _Tap:
    """Result hook of one task: hands the value to its observer, in the caller only."""

    __slots__ = ("token", "task", "owner")

    def __init__(self, token: int, task: int, owner: int):
        self.token, self.task, self.owner = token, task, owner

    def __reduce__(self):
        return (_Tap, (self.token, self.task, self.owner))

    def __call__(self, value: Any, seconds: float | None = None) -> None:
        if os.getpid() != self.owner:
            return  # another process: the value stays there (see check_backend)
        observer = _taps.get(self.token)
        if observer is not None:
            observer.results[self.task] = value


class DaskCallbacks(Observer, Planner):
    """Calls Dask callback 5-tuples ``(start, start_state, pretask, posttask, finish)``."""

    propagates_errors = True
    reports_aliases = True  # Dask's schedulers run an alias as a task and report it

    def __init__(self, callbacks: list[tuple], dsk: Mapping):
        self.dsk = dsk
        self._start, self._start_state, self._pretask, self._posttask, self._finish = (
            [cb[n] for cb in callbacks if cb[n] is not None] for n in range(5)
        )
        self.state: dict[str, Any] = {}
        self.results: dict[int, Any] = {}  # task number -> result, until its posttask
        self._index: dict = {}
        self._aliases: dict[int, int] = {}
        self._readers: Counter = Counter()
        self._started = False
        self._token = next(_tokens)
        self._lock = threading.Lock()  # serialises the hooks and guards self.state

    # -- the plan stage (before compiling; see notebook_sched/plan.py) ----------------
    def plan(self, graph: Mapping, keys: list) -> dict | None:
        """Run ``start(dsk)``; keys whose value a callback replaced become known."""
        self._started = True
        if not self._start:
            return None
        before = dict(self.dsk) if isinstance(self.dsk, dict) else None
        for start in self._start:
            start(self.dsk)
        if before is None:
            return None
        return {k: v for k, v in self.dsk.items() if before.get(k, _GONE) is not v and k in graph}

    def prepare(self, graph: Any) -> dict | None:
        """Dask's ``dependencies``/``dependents``; result taps for ``posttask``."""
        keys, deps = graph.keys, graph.deps
        self._index = graph.index
        dependencies = {key: {keys[d] for d in deps[i]} for i, key in enumerate(keys)}
        dependents: dict = {key: set() for key in keys}
        for key, needs in dependencies.items():
            for dep in needs:
                dependents[dep].add(key)
        self._base_state = {"dependencies": dependencies, "dependents": dependents}
        if not self._posttask:
            return None
        _taps[self._token] = self
        owner = os.getpid()
        specs = graph.specs
        self._aliases = aliases = {}  # alias task -> the task (or literal) it stands for
        for i in range(len(keys)):
            target = _alias_target(specs, graph.deps, i)
            if target is None:
                continue
            while (further := _alias_target(specs, graph.deps, target)) is not None:
                target = further
            aliases[i] = target
            literal = _literal(specs[target], graph.deps[target])
            if literal is not _GONE:
                self.results[target] = literal
        self._readers = Counter(aliases.values())  # results kept for their aliases
        return {
            i: _Tap(self._token, i, owner)
            for i in range(len(keys))
            if i not in aliases and _literal(specs[i], graph.deps[i]) is _GONE
        }

    def _result(self, key: Hashable) -> Any:
        """The result a finished task's ``posttask`` gets (released unless an alias of
        it is still to report; an alias gets its target's)."""
        i = self._index.get(key, -1)
        target = self._aliases.get(i)
        if target is None:
            if self._readers.get(i):
                return self.results.get(i)
            return self.results.pop(i, None)
        left = self._readers[target] = self._readers[target] - 1
        return self.results.get(target) if left else self.results.pop(target, None)

    def finished(self, graph: Any, error: BaseException | None) -> None:
        _taps.pop(self._token, None)
        self.results.clear()

    def __repr__(self) -> str:
        return f"<DaskCallbacks finished={len(self.state.get('finished', ()))}>"

    def graph_started(self, run: RunInfo) -> None:
        with self._lock:
            # Our state first: if a user's hook raises, later hooks still find it.
            self.state = {
                **getattr(self, "_base_state", {}),
                "cache": literal_values(self.dsk),
                "ready": [],
                "waiting": dict.fromkeys([*run.task_keys, *run.extra.get("aliases", ())]),
                "running": set(),
                "finished": set(),
                "released": set(),
            }
            if not self._started:  # run without the plan stage (a foreign get function)
                for start in self._start:
                    start(self.dsk)
            for start_state in self._start_state:
                start_state(self.dsk, self.state)

    def task_started(self, key: Hashable, worker: str) -> None:
        with self._lock:
            self.state["waiting"].pop(key, None)
            self.state["running"].add(key)
            for pretask in self._pretask:
                pretask(key, self.dsk, self.state)

    def task_finished(self, key: Hashable, worker: str, start: float, stop: float) -> None:
        with self._lock:
            self.state["waiting"].pop(key, None)
            self.state["running"].discard(key)
            self.state["finished"].add(key)
            if self._posttask:
                value = self._result(key)
                for posttask in self._posttask:
                    posttask(key, value, self.dsk, self.state, worker)

    def task_failed(self, key: Hashable, worker: str, error: BaseException) -> None:
        with self._lock:
            self.state["running"].discard(key)

    def graph_finished(self, run: RunInfo, error: BaseException | None) -> None:
        with self._lock:
            for finish in self._finish:
                finish(self.dsk, self.state, error is not None)
