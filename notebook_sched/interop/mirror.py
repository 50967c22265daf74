"""Dask's default scheduler follows ours, within the same scopes.

``config.set(scheduler=NAME)`` (which ``%schedule``, ``%%schedule`` and the picker all
call) runs :func:`mirror_scheduler`, which sets ``dask.config`` "scheduler" to
``functools.partial(dask_get, scheduler=NAME)``: a callable, which
``dask.base.get_scheduler`` uses as the get function as it is (a string would name one
of Dask's own schedulers).  So a plain ``arr.sum().compute()`` runs through
:func:`notebook_sched.get`, with our progress bar and local reruns.  The undo it
returns (``dask.config.set``'s own ``__exit__``) puts Dask's previous values back when
our scope ends; a global ``config.set`` is never undone, like ours.

Dask dataframe shuffles: unless ``dataframe.shuffle.method`` is set, the mirror picks
``"tasks"`` for the same scope.  Dask would otherwise choose ``"p2p"`` whenever a
``distributed.Client`` exists (it needs dask.distributed's own scheduler and worker
extensions) or ``"disk"`` (which needs one shared disk); ``"tasks"`` runs anywhere.

This module is imported by ``import notebook_sched``; it imports ``dask.config`` only
on the first scheduler change, and only when Dask is installed.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["mirror_scheduler", "dask_scheduler_for", "dask_installed"]

SHUFFLE = "dataframe.shuffle.method"

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

    settings = {"scheduler": dask_scheduler_for(changes["scheduler"])}
    if dask.config.get(SHUFFLE, None) is None:
        settings[SHUFFLE] = "tasks"
    scope = dask.config.set(settings)
    return functools.partial(scope.__exit__, None, None, None)
