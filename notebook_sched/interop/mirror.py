"""Dask's default scheduler follows ours, within the same scopes.

``config.set(scheduler=NAME)`` (which ``%schedule``, ``%%schedule`` and the picker all
call) runs :func:`mirror_scheduler`, which sets ``dask.config`` "scheduler" to
``functools.partial(dask_get, scheduler=NAME)``: a callable, which
``dask.base.get_scheduler`` uses as the get function as it is (a string would name one
of Dask's own schedulers).  So a plain ``arr.sum().compute()`` runs through
:func:`notebook_sched.get`, with our progress bar and local reruns.  The undo it
returns (``dask.config.set``'s own ``__exit__``) puts Dask's previous values back when
our scope ends; a global ``config.set`` is never undone, like ours.

Only the scheduler is mirrored: choosing our scheduler must not change what Dask
computes or how it plans it.  (An earlier version also set
``dataframe.shuffle.method`` to ``"tasks"``; dask.bag's ``groupby`` reads the same
setting, so bags changed behaviour even under Dask's own schedulers.)  Dask's own
choice of shuffle then applies: ``"disk"`` without a ``distributed.Client``, which
our local backends run (one machine, one disk), and ``"p2p"`` when a Client exists,
which needs dask.distributed's scheduler: :func:`dask_get` stops such a graph before
it runs, with the fix (see ``dask_collections.py``).

This module is registered by ``interop.install`` on first use (see
``notebook_sched/__init__``); it imports ``dask.config`` only on the first scheduler
change, and only when Dask is installed.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["mirror_scheduler", "dask_scheduler_for", "dask_installed"]

_installed: bool | None = None


def dask_installed() -> bool:
    """True when ``import dask`` would work (checked once, without importing it)."""
    global _installed
    if _installed is None:
        _installed = "dask" in sys.modules or importlib.util.find_spec("dask") is not None
    return _installed


def dask_scheduler_for(scheduler: Any) -> Any:
    """The value for ``dask.config`` "scheduler" that runs on our ``scheduler``."""
    if scheduler is None:
        return None  # Dask's own default
    from .dask_collections import dask_get

    return functools.partial(dask_get, scheduler=scheduler)


def mirror_scheduler(changes: dict[str, Any]) -> Callable[[], None] | None:
    """Config mirror: copy a scheduler change into ``dask.config``; return its undo."""
    if "scheduler" not in changes or not dask_installed():
        return None
    import dask.config

    scope = dask.config.set(scheduler=dask_scheduler_for(changes["scheduler"]))
    return functools.partial(scope.__exit__, None, None, None)
