"""``scheduler="distributed"``: the registry's ``get`` and the default cluster.

``get`` runs on the newest open :class:`Client` created by the user, if there is one
(as with dask.distributed, creating a Client makes it the default); otherwise on a
default :class:`LocalCluster` started on first use (``num_workers`` workers, default
one per CPU), reused by later calls, and closed at interpreter exit.

Asking for a different ``num_workers`` starts a cluster of the new size *beside* the
current one, which becomes the default: a cluster is never closed under runs of other
threads.  Each default cluster counts the runs in flight on it (``_Default.runs``);
an older one is *retired* - closed as soon as its last run ends, or at once when it
is idle.  A cluster handed out by :func:`default_cluster` (``Client()`` with no
cluster) is never retired: its client may use it at any time; :func:`shutdown`
closes it.

``_lock`` guards ``_defaults`` and each entry's ``runs`` and ``retired``.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from ..engine import check_workers
from .client import Client, current_client
from .cluster import LocalCluster

__all__ = ["get", "default_cluster", "shutdown", "current_cluster", "resident"]


class _Default:
    __slots__ = ("cluster", "client", "runs", "retired", "shared")

    def __init__(self, cluster: LocalCluster):
        self.cluster = cluster
        self.client = Client(cluster, set_as_default=False)
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


def get(
    dsk: Any,
    keys: Any,
    *,
    num_workers: int | None = None,
    pool: Any = None,
    observers=None,
    **options: Any,
) -> Any:
    """Compute ``keys`` of ``dsk`` on the local cluster (Dask's ``get`` contract).

    ``pool`` is ignored: the cluster's worker processes run the tasks."""
    if num_workers is not None:
        check_workers(num_workers)
    user = current_client()
    if user is not None:
        return user.get(dsk, keys, observers=observers)
    with _lock:
        entry, idle = _entry(num_workers)
        entry.runs += 1
    _close(idle)
    try:
        return entry.client.get(dsk, keys, observers=observers)
    finally:
        with _lock:
            entry.runs -= 1
            done = entry.retired and entry.runs == 0
            if done and entry in _defaults:
                _defaults.remove(entry)
        if done:
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


def resident() -> tuple[set[int], set[int]]:
    """Process ids and thread idents of the default clusters, which live across
    computes by design (for leak checks, like the process pool's workers)."""
    with _lock:
        clusters = [d.cluster for d in _defaults if d.cluster.status == "running"]
    pids: set[int] = set()
    idents: set[int] = set()
    for cluster in clusters:
        pids.update(cluster.pids)
        idents.update(thread.ident for thread in cluster.threads)
    return pids, idents


atexit.register(shutdown)
