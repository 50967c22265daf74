"""The cache opt-out marker, kept apart so a worker that runs a marked task imports
nothing more (``fingerprint`` re-exports it).

A callable whose ``__notebook_sched_cache__`` attribute is False is never cached:
``delayed(f, cache=False)`` wraps ``f`` in :class:`NotCached`, and a user may set the
attribute on a function of their own.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPT_OUT_ATTRIBUTE", "NotCached"]

OPT_OUT_ATTRIBUTE = "__notebook_sched_cache__"


class NotCached:
    """Wraps a callable so that its tasks are never cached; calls go straight through."""

    __slots__ = ("func",)
    __notebook_sched_cache__ = False

    def __init__(self, func: Any):
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    @property
    def __name__(self) -> str:  # keys, reprs and prints name the wrapped function
        return getattr(self.func, "__name__", type(self.func).__name__)

    def __reduce__(self):
        return NotCached, (self.func,)

    def __repr__(self) -> str:
        return f"NotCached({self.func!r})"
