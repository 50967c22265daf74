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
    "__version__",
]

_LAZY = {
    "schedulers": ("notebook_sched.schedulers", None),
    "WorkerDiedError": ("notebook_sched.schedulers.processes", "WorkerDiedError"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        return module if attribute is None else getattr(module, attribute)
    raise AttributeError(f"module 'notebook_sched' has no attribute {name!r}")
