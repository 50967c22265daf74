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
cluster started on first use.  Modules, each opening with its design note:

``protocol``   authenticated, framed messages; out-of-band buffers; sizes
``listener``   accepting connections: one thread, capped handshakes, floods survived
``sockdir``    the private socket directory: short paths, SIGTERM, stale sweeps
``tasks``      the scheduler's records (task and worker states)
``stimuli``    the typed stimuli of the scheduler's state, the stimulus log
``state_core`` the fields the parts of the scheduler's state share; ``handle``
``state``      the scheduler's pure state machine: stimuli in, instructions out
``placement``  where tasks run (chunks of roots, eager chains, locality)
``gathers``    results requested by the client
``recovery``   lost workers: recompute, retry, KilledWorker, what cannot be remade
``scheduler``  the I/O thread around the state; heartbeats and worker_timeout
``worker_state`` the worker's pure state machine (WorkerMachine): stimuli in,
               instructions out
``worker``     the worker process: threads and sockets around its WorkerMachine
               (``transfers``: data to and from other workers)
``cluster``    LocalCluster: processes, secret, replacement of dead and hung workers
``future``     Future and the per-key state its copies share
``arguments``  futures inside ``submit`` arguments: one walk over nested values
``client``     Client, as_completed (imports ``future`` and ``arguments``)
``run``        one ``get`` on the cluster, events in the caller's thread; ``ask``
``defaults``   the default clusters: started on first use, resized, retired
``backend``    ``scheduler="distributed"`` (registered by the package root on first use)

Nothing here is imported by ``import notebook_sched``.
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
