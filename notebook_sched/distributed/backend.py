"""``scheduler="distributed"``: the registry's ``get`` and the default cluster.

``get`` runs on the newest open :class:`Client` created by the user, if there is one
(as with dask.distributed, creating a Client makes it the default); otherwise on a
default :class:`LocalCluster` started on first use (``num_workers`` workers, default
one per CPU), reused by later calls, and closed at interpreter exit.  Asking for a
different ``num_workers`` restarts the default cluster, unless a Client uses it.

``_lock`` guards ``_cluster`` and ``_client``.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from ..engine import check_workers
from .client import Client, current_client
from .cluster import LocalCluster

__all__ = ["get", "default_cluster", "shutdown", "current_cluster", "resident"]

_lock = threading.Lock()
_cluster: LocalCluster | None = None
_client: Client | None = None


def default_cluster(n_workers: int | None = None) -> LocalCluster:
    """The shared local cluster, started (or restarted with ``n_workers``) as needed."""
    global _cluster, _client
    with _lock:
        if _cluster is not None and _cluster.status != "running":
            _cluster = _client = None
        if _cluster is not None and n_workers is not None and _cluster.n_workers != n_workers:
            user = current_client()
            if user is None or user.cluster is not _cluster:
                _client.close()
                _cluster.close()
                _cluster = _client = None
        if _cluster is None:
            _cluster = LocalCluster(n_workers=n_workers)
            _client = Client(_cluster, set_as_default=False)
        return _cluster


def _default_client(n_workers: int | None) -> Client:
    user = current_client()
    if user is not None:
        return user
    default_cluster(n_workers)
    with _lock:
        return _client


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
    return _default_client(num_workers).get(dsk, keys, observers=observers)


def shutdown() -> None:
    """Close the default cluster (at exit, or to free its processes now)."""
    global _cluster, _client
    with _lock:
        cluster, client = _cluster, _client
        _cluster = _client = None
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


def current_cluster() -> LocalCluster | None:
    """The default cluster if it runs (for leak checks and status views)."""
    cluster = _cluster
    return cluster if cluster is not None and cluster.status == "running" else None


def resident() -> tuple[set[int], set[int]]:
    """Process ids and thread idents of the default cluster, which lives across
    computes by design (for leak checks, like the process pool's workers)."""
    cluster = current_cluster()
    if cluster is None:
        return set(), set()
    return set(cluster.pids), {thread.ident for thread in cluster.threads}


atexit.register(shutdown)
