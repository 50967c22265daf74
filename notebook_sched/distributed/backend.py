"""``scheduler="distributed"``: the registry's ``get``.

``get`` runs on the newest open :class:`Client` created by the user, if there is one
(as with dask.distributed, creating a Client makes it the default); otherwise on the
default :class:`LocalCluster` of ``defaults.py`` (started on first use, resized
beside, retired when idle), through a client of its own.  The default clusters'
bookkeeping (``default_cluster``, ``shutdown``, ``current_cluster``)
is re-exported here, where tests and leak checks look for it.
"""

from __future__ import annotations

from typing import Any

from ..engine import check_workers
from .client import Client, current_client
from .defaults import (  # noqa: F401 - re-exported
    _defaults,
    acquire,
    current_cluster,
    default_cluster,
    discard,
    release,
    shutdown,
)
from .run import SocketFolderGone

__all__ = ["get", "default_cluster", "shutdown", "current_cluster"]


def _private_client(cluster: Any) -> Client:
    return Client(cluster, set_as_default=False)


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
    """Compute ``keys`` of ``dsk`` on the local cluster (Dask's ``get`` contract).

    ``pool`` is ignored: the cluster's worker processes run the tasks."""
    if num_workers is not None:
        check_workers(num_workers)
    user = current_client()
    if user is not None:
        return user.get(dsk, keys, observers=observers, planners=planners)
    entry = acquire(num_workers, _private_client)
    try:
        return entry.client.get(dsk, keys, observers=observers, planners=planners)
    except SocketFolderGone:
        discard(entry)  # unusable: the next compute starts a new cluster
        raise
    finally:
        release(entry)
