"""Dask's default scheduler follows ours, within the same scopes.

``config.set(scheduler=NAME)`` (which ``%schedule``, ``%%schedule`` and the picker all
call) runs :func:`mirror_scheduler`, which sets ``dask.config`` "scheduler" to
``functools.partial(dask_get, scheduler=NAME)``: a callable, which
``dask.base.get_scheduler`` uses as the get function as it is (a string would name one
of Dask's own schedulers).  So a plain ``arr.sum().compute()`` runs through
:func:`notebook_sched.get`, with our progress bar and local reruns.  The undo it
returns (``dask.config.set``'s own ``__exit__``) puts Dask's previous values back when
our scope ends; a global ``config.set`` is never undone, like ours.

Dask's settings are process-global and its scopes put back what they saw on entry, so
scopes of the two libraries interleaved (ours opened, Dask's opened, ours closed,
Dask's closed) would leave our value in Dask's config after both ended.  So the value
we set is a :class:`MirroredScheduler` that knows the value it replaced: our undo puts
that back only when Dask still holds ours (else a Dask scope opened since is in
force, and stays so); when the Dask scope then ends and puts our now *retired* value
back, the first compute through it puts the replaced value back in Dask's config and
runs on it (``None``, Dask's default, runs on ``dask.threaded.get``).

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


def dask_scheduler_for(scheduler: Any, replaced: Any = None) -> Any:
    """The value for ``dask.config`` "scheduler" that runs on our ``scheduler``."""
    if scheduler is None:
        return None  # Dask's own default
    from .dask_collections import dask_get

    mirrored = MirroredScheduler(dask_get, scheduler=scheduler)
    mirrored.replaced = replaced
    return mirrored


class MirroredScheduler(functools.partial):
    """``partial(dask_get, scheduler=...)``: Dask's get function while our setting is
    mirrored into ``dask.config``, with the value it replaced there."""

    replaced: Any = None  # Dask's value before ours
    retired = False  # our scope ended while a Dask scope above it was open

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        if not self.retired:
            return super().__call__(dsk, keys, **kwargs)
        import dask.config

        if dask.config.get("scheduler", None) is self:
            dask.config.set(scheduler=self.replaced)
        replaced = self.replaced
        if replaced is None or isinstance(replaced, str):
            from dask.base import get_scheduler
            from dask.threaded import get as threaded_get

            replaced = get_scheduler(scheduler=replaced) or threaded_get
        return replaced(dsk, keys, **kwargs)

    def __repr__(self) -> str:
        state = " retired" if self.retired else ""
        return f"<notebook_sched scheduler {self.keywords.get('scheduler')!r}{state}>"


def mirror_scheduler(changes: dict[str, Any]) -> Callable[[], None] | None:
    """Config mirror: copy a scheduler change into ``dask.config``; return its undo."""
    if "scheduler" not in changes or not dask_installed():
        return None
    import dask.config

    replaced = dask.config.get("scheduler", None)
    ours = dask_scheduler_for(changes["scheduler"], replaced)
    scope = dask.config.set(scheduler=ours)
    return functools.partial(_undo, scope, ours)


def _undo(scope: Any, ours: Any) -> None:
    """Put Dask's value back if Dask still holds ours; else retire ours."""
    import dask.config

    if ours is None or dask.config.get("scheduler", None) is ours:
        scope.__exit__(None, None, None)
    else:
        ours.retired = True
