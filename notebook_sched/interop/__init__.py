"""Dask interoperability, both ways.

Dask collections on our schedulers (``dask_collections.py``)
    Dask's ``compute`` hands a custom scheduler an expression object (or a graph) and
    the keys; :func:`dask_get` materialises it with ``__dask_graph__()`` and runs it
    through :func:`notebook_sched.get`, so run hooks (progress bar, local rerun of
    failures) apply.  Graph values are legacy tuples mixed with Dask ``Task``,
    ``Alias`` and ``DataNode`` objects, which ``graph.py`` runs through their public,
    duck-typed interface.  Our scopes also set Dask's default: every
    ``config.set(scheduler=...)`` (``%schedule``, ``%%schedule``, the picker) puts
    ``partial(dask_get, scheduler=name)`` in ``dask.config`` "scheduler" and, when its
    ``with`` block ends, Dask's previous value back (a config *mirror*, see
    ``config.add_mirror``).  ``dask.callbacks.Callback`` hooks (``ProgressBar``,
    ``Profiler`` of ``dask.diagnostics``) are fed from our events (``callbacks.py``).

Our graphs on dask.distributed (``dask_backend.py``)
    ``scheduler="dask"`` runs a graph on a ``distributed`` cluster: the active
    ``distributed.Client``, or a client connected to ``config.set(dask_address=...)``.
    Workers report task start/finish/failure through ``Worker.log_event``; the caller
    turns them into our events, and a failed task's inputs are gathered from the
    cluster for the local rerun.

Nothing here imports Dask until it is used: :func:`install` (called by the package
root on first use, before the first ``config`` change or ``get``; never at ``import
notebook_sched``) only registers the ``dask`` backend (its module loads when chosen)
and the config mirror, which imports ``dask.config`` on the first scheduler change,
and only when Dask is installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["install", "register_dask_backend", "dask_get"]

_installed = False


def install() -> None:
    """Register the ``dask`` backend and the Dask config mirror (cheap: Dask is
    imported on first use)."""
    global _installed
    if _installed:
        return
    from .. import config
    from .mirror import mirror_scheduler

    register_dask_backend()
    config.add_mirror(mirror_scheduler)
    _installed = True


def register_dask_backend() -> None:
    """Make ``scheduler="dask"`` select ``dask_backend.get`` (loaded when chosen)."""
    from ..schedulers import Capabilities, register_backend

    register_backend(
        "dask",
        "notebook_sched.interop.dask_backend",
        (),
        "a dask.distributed cluster: the active Client, or --address tcp://host:8786",
        Capabilities(uses_worker_processes=True),
    )


def __getattr__(name: str) -> Any:
    if name == "dask_get":
        from .dask_collections import dask_get

        return dask_get
    raise AttributeError(f"module 'notebook_sched.interop' has no attribute {name!r}")
