"""A local cluster: futures, results that stay in worker processes, a live status.

::

    from notebook_sched import LocalCluster, Client, as_completed

    with LocalCluster(n_workers=2) as cluster, Client(cluster) as client:
        x = client.submit(load, "a.csv")          # runs on a worker, stays there
        y = client.submit(clean, x)               # runs where x is
        y.result()                                # only now does data come back
        client.get(dsk, "out")                    # Dask's get contract
        cluster.workers                           # what each worker is doing

``scheduler="distributed"`` runs any graph on the newest Client, or on a default
cluster started on first use.  Modules: ``protocol`` (authenticated messages),
``state`` (the scheduler's pure state machine), ``scheduler`` (its I/O thread),
``worker`` (the worker process), ``cluster``, ``client``, ``run`` (a ``get``),
``backend`` (the registry entry).  Nothing here is imported by ``import
notebook_sched``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LocalCluster",
    "WorkerInfo",
    "Client",
    "Future",
    "as_completed",
    "KilledWorker",
    "CancelledError",
]

_LAZY = {
    "LocalCluster": "cluster",
    "WorkerInfo": "cluster",
    "Client": "client",
    "Future": "client",
    "as_completed": "client",
    "KilledWorker": "state",
    "CancelledError": "state",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
