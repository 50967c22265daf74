"""The default local clusters: started on first use, resized beside, retired when idle.

``scheduler="distributed"`` (``backend.py``) and ``Client()`` with no cluster
(``client.py``) both use the shared default :class:`LocalCluster`, started on first
use (``num_workers`` workers, default one per CPU), reused by later calls, and closed
at interpreter exit.  This module keeps that bookkeeping and imports neither of
them: each entry's client is made by whoever runs on it (``backend.get`` passes
``make_client``), so ``client -> defaults <- backend -> client`` has no cycle.

Asking for a different ``num_workers`` starts a cluster of the new size *beside* the
current one, which becomes the default: a cluster is never closed under runs of other
threads.  Each default cluster counts the runs in flight on it (``_Default.runs``);
an older one is *retired* - closed as soon as its last run ends, or at once when it
is idle.  A cluster handed out by :func:`default_cluster` (``Client()`` with no
cluster) is never retired: its client may use it at any time; :func:`shutdown`
closes it.

``_lock`` guards ``_defaults`` and each entry's ``client``, ``runs`` and ``retired``.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Any

from .cluster import LocalCluster

__all__ = ["acquire", "release", "default_cluster", "shutdown", "current_cluster"]


class _Default:
    __slots__ = ("cluster", "client", "runs", "retired", "shared")

    def __init__(self, cluster: LocalCluster):
        self.cluster = cluster
        self.client: Any = None  # the Client runs use, made by the first (acquire)
        self.runs = 0  # get() calls running on it now
        self.retired = False  # an other size became the default: close when idle
        self.shared = False  # handed out to a user Client: never retired


_lock = threading.Lock()
_defaults: list[_Default] = []  # newest (the default) last


def _entry(n_workers: int | None) -> tuple[_Default, list[_Default]]:
    """(Under ``_lock``) the default of ``n_workers`` workers, started if needed, and
    the entries that became idle and retired (to close outside the lock)."""
    _defaults[:] = [d for d in _defaults if d.cluster.status == "running"]
    newest = _defaults[-1] if _defaults else None
    if newest is not None and n_workers in (None, newest.cluster.n_workers):
        return newest, []
    same = [d for d in _defaults if d.cluster.n_workers == n_workers]
    if same:  # an older cluster of that size is still running: make it the default again
        entry = same[-1]
        _defaults.remove(entry)
        entry.retired = False
    else:
        entry = _Default(LocalCluster(n_workers=n_workers))
    idle = []
    for old in _defaults:
        if not old.shared:
            old.retired = True
            if old.runs == 0:
                idle.append(old)
    for old in idle:
        _defaults.remove(old)
    _defaults.append(entry)
    return entry, idle


def _close(entries: list[_Default]) -> None:
    for entry in entries:
        if entry.client is not None:
            entry.client.close()
        entry.cluster.close()


def default_cluster(n_workers: int | None = None) -> LocalCluster:
    """The shared local cluster (of ``n_workers`` workers, when given), started as
    needed; it is never closed under the caller (only by :func:`shutdown`)."""
    with _lock:
        entry, idle = _entry(n_workers)
        entry.shared = True
    _close(idle)
    return entry.cluster


def acquire(n_workers: int | None, make_client: Callable[[LocalCluster], Any]) -> _Default:
    """Count a run on the default cluster of ``n_workers``; its ``client`` is made with
    ``make_client(cluster)`` the first time.  Pair with :func:`release`."""
    with _lock:
        entry, idle = _entry(n_workers)
        entry.runs += 1
        if entry.client is None:
            entry.client = make_client(entry.cluster)
    _close(idle)
    return entry


def release(entry: _Default) -> None:
    """The run counted by :func:`acquire` ended: close the cluster if it was retired."""
    with _lock:
        entry.runs -= 1
        done = entry.retired and entry.runs == 0
        if done and entry in _defaults:
            _defaults.remove(entry)
    if done:
        _close([entry])


def discard(entry: _Default) -> None:
    """Close ``entry``'s cluster now (it cannot work any more: its socket folder is
    gone); runs still counted on it end with their own errors."""
    with _lock:
        if entry in _defaults:
            _defaults.remove(entry)
    _close([entry])


def shutdown() -> None:
    """Close every default cluster (at exit, or to free their processes now)."""
    with _lock:
        entries = list(_defaults)
        _defaults.clear()
    _close(entries)


def current_cluster() -> LocalCluster | None:
    """The default cluster if it runs (for leak checks and status views)."""
    with _lock:
        running = [d.cluster for d in _defaults if d.cluster.status == "running"]
    return running[-1] if running else None


atexit.register(shutdown)
