"""notebook_sched: run Dask-style task graphs from Jupyter.

Four backends execute the same graphs with the same results (``sync``, ``threads``,
``processes``; a local cluster comes with ``distributed``), chosen by name per call,
in a ``with config.set(...)`` block, or globally.  Progress, profiling and debugging
are observers of one event protocol (``notebook_sched.events``).

This module is the package root, above every layer, and the one place that wires
them together; it does so on first use, not at import.  ``import notebook_sched``
loads only the bottom layers (``config``, ``events``, ``failure``, ``graph``),
reads ``NOTEBOOK_SCHED_SCHEDULER`` (a bad value fails the import, naming the valid
ones) and registers one callback with ``config``.  Everything else loads when first
asked for, through the module ``__getattr__``: the API (``get``, ``compute``,
``delayed``), the backends, cloudpickle and anything notebook-related.  The first
use (a public name other than the bottom ones, the first ``config.set``/``get``,
``%load_ext``) runs :func:`_activate` once (``config.activate`` is the one guard),
which lets the layers above register themselves: the scheduler registry's checks of
config values, the backends above it (the local cluster, named here since
``distributed`` stands beside ``schedulers`` and imports none of it; ``dask``,
registered by ``interop``), the run hooks of ``debug`` (local rerun of a failed task)
and ``diagnostics`` (progress, advice), the Dask config mirror of ``interop``, and
the plan hook that loads the result cache when a run asks for it.  So a worker
process, which imports this package only to unpickle a job, runs none of it.
"""

from __future__ import annotations

import os
from typing import Any

from . import config, events
from .failure import TaskFailure, last_failure
from .graph import CycleError, GraphError

__version__ = "0.1.0"

__all__ = [
    "get",
    "compute",
    "delayed",
    "Delayed",
    "config",
    "events",
    "schedulers",
    "last_failure",
    "TaskFailure",
    "GraphError",
    "CycleError",
    "WorkerDiedError",
    "picker",
    "progress",
    "Profiler",
    "Advisor",
    "advise",
    "load_ipython_extension",
    "unload_ipython_extension",
    "LocalCluster",
    "Client",
    "Future",
    "as_completed",
    "cache_info",
    "cache_clear",
    "submit",
    "jobs",
    "cancel_all",
    "__version__",
]

_LAZY = {
    "get": ("notebook_sched.api", "get"),
    "compute": ("notebook_sched.lazy", "compute"),
    "delayed": ("notebook_sched.lazy", "delayed"),
    "Delayed": ("notebook_sched.lazy", "Delayed"),
    "schedulers": ("notebook_sched.schedulers", None),
    "WorkerDiedError": ("notebook_sched.errors", "WorkerDiedError"),
    "picker": ("notebook_sched.ipython.picker", "picker"),
    "progress": ("notebook_sched.diagnostics.hooks", "progress"),
    "Profiler": ("notebook_sched.diagnostics.profiler", "Profiler"),
    "Advisor": ("notebook_sched.diagnostics.advice", "Advisor"),
    "advise": ("notebook_sched.diagnostics.advice", "advise"),
    "LocalCluster": ("notebook_sched.distributed.cluster", "LocalCluster"),
    "Client": ("notebook_sched.distributed.client", "Client"),
    "Future": ("notebook_sched.distributed.client", "Future"),
    "as_completed": ("notebook_sched.distributed.client", "as_completed"),
    "cache_info": ("notebook_sched.cache.session", "cache_info"),
    "cache_clear": ("notebook_sched.cache.session", "cache_clear"),
    "submit": ("notebook_sched.background", "submit"),
    "jobs": ("notebook_sched.background", "jobs"),
    "cancel_all": ("notebook_sched.background", "cancel_all"),
}


def _activate() -> None:
    """Let the layers above register themselves: ``config``'s first-use callback, so it
    runs once (``config.activate`` is the package's one run-once guard).

    The failure hook is registered before the progress and advice hooks, so it wraps
    them: a failed task's bar turns red before the task is rerun here."""
    from . import debug, diagnostics, interop
    from .plan import add_plan_hook

    _register_backends()
    debug.install()
    diagnostics.install()
    interop.install()  # the Dask config mirror
    add_plan_hook(_cache_planner)


def _cache_planner(request: Any) -> Any:
    """Plan hook: the result cache's planner for a run whose ``cache`` option is on.

    The cache package is imported only then (its ``plan_hook(request)`` returns its
    planner or None), so a run with ``cache=False`` loads none of it."""
    if request.options.get("cache", False) is False:
        return None
    from .cache import plan_hook

    return plan_hook(request)


def _register_backends() -> None:
    """The backends above the registry: the local cluster (named here, since
    ``distributed`` stands beside ``schedulers`` and imports none of it) and ``dask``
    (registered by ``interop``).  Importing the registry registers config's checks."""
    from .interop import register_dask_backend
    from .schedulers import Capabilities, register_backend

    register_backend(
        "distributed",
        "notebook_sched.distributed.backend",
        ("local-distributed",),
        "a local cluster: futures, data that stays in worker processes, a live status",
        Capabilities(uses_worker_processes=True),
    )
    register_dask_backend()


def _load_environment() -> None:
    if os.environ.get(config.ENV_SCHEDULER):
        _register_backends()  # every name may be given, nothing else is loaded
    config.load_environment()


config.on_first_use(_activate)
_load_environment()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext notebook_sched``: the %schedule magics and failure rendering."""
    config.activate()
    from .ipython import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .ipython import unload_ipython_extension as unload

    unload(ipython)


def __dir__() -> list[str]:
    """Tab completion and ``dir(ns)`` list the public names, the lazy ones included."""
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        config.activate()
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
        globals()[name] = value  # looked up here once, then an ordinary attribute
        return value
    raise AttributeError(f"module 'notebook_sched' has no attribute {name!r}")
