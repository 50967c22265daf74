"""notebook_sched: run Dask-style task graphs from Jupyter.

Four backends execute the same graphs with the same results (``sync``, ``threads``,
``processes``; a local cluster comes with ``distributed``), chosen by name per call,
in a ``with config.set(...)`` block, or globally.  Progress, profiling and debugging
are observers of one event protocol (``notebook_sched.events``).

The package imports little: backends, cloudpickle and anything notebook-related load
on first use, so ``import notebook_sched`` is cheap in scripts and worker processes.
"""

from __future__ import annotations

from typing import Any

from . import config, events
from .api import compute, get
from .delayed import Delayed, delayed
from .diagnostics import install_run_hooks as _install_run_hooks
from .failure import TaskFailure, last_failure
from .graph import CycleError, GraphError
from .interop import install as _install_interop

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
    "__version__",
]

_LAZY = {
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
}

# Progress bars and local reruns of failed tasks plug into every get (cheap to load).
_install_run_hooks()
# Dask's default scheduler follows config.set(scheduler=...) (Dask loads on first change).
_install_interop()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext notebook_sched``: the %schedule magics and failure rendering."""
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

        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        return module if attribute is None else getattr(module, attribute)
    raise AttributeError(f"module 'notebook_sched' has no attribute {name!r}")
