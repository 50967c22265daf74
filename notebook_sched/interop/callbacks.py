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

* ``state`` holds what those diagnostics read: ``waiting`` (tasks not started),
  ``running``, ``finished``, ``ready`` (always empty: we do not report readiness),
  ``released`` (always empty: releases are not events) and ``cache`` (the graph's
  literal values, as Dask starts it; results are not added).
* ``posttask`` gets ``None`` as ``result``: our events carry no results (results
  may live in another process).  ``CacheProfiler`` with a metric of the value
  therefore measures ``None``.
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

import threading
from collections.abc import Hashable, Mapping
from typing import Any

from ..events import Observer, RunInfo

__all__ = ["DaskCallbacks"]


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


def literal_values(dsk: Mapping) -> dict:
    """``{key: value}`` of the graph's ``DataNode`` literals: Dask's initial cache."""
    return {
        key: node.value
        for key, node in dsk.items()
        if hasattr(node, "typ") and hasattr(node, "value") and not node.dependencies
    }


class DaskCallbacks(Observer):
    """Calls Dask callback 5-tuples ``(start, start_state, pretask, posttask, finish)``."""

    propagates_errors = True
    reports_aliases = True  # Dask's schedulers run an alias as a task and report it

    def __init__(self, callbacks: list[tuple], dsk: Mapping):
        self.dsk = dsk
        self._start, self._start_state, self._pretask, self._posttask, self._finish = (
            [cb[n] for cb in callbacks if cb[n] is not None] for n in range(5)
        )
        self.state: dict[str, Any] = {}
        self._lock = threading.Lock()  # serialises the hooks and guards self.state

    def __repr__(self) -> str:
        return f"<DaskCallbacks finished={len(self.state.get('finished', ()))}>"

    def graph_started(self, run: RunInfo) -> None:
        with self._lock:
            # Our state first: if a user's hook raises, later hooks still find it.
            self.state = {
                "cache": literal_values(self.dsk),
                "ready": [],
                "waiting": dict.fromkeys([*run.task_keys, *run.extra.get("aliases", ())]),
                "running": set(),
                "finished": set(),
                "released": set(),
            }
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
            for posttask in self._posttask:
                posttask(key, None, self.dsk, self.state, worker)

    def task_failed(self, key: Hashable, worker: str, error: BaseException) -> None:
        with self._lock:
            self.state["running"].discard(key)

    def graph_finished(self, run: RunInfo, error: BaseException | None) -> None:
        with self._lock:
            for finish in self._finish:
                finish(self.dsk, self.state, error is not None)
