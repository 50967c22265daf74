"""Fingerprints of the tasks of a graph, and why a task missed.  Pure code, no storage.

A task's digest chains: ``H(function print, literal arguments' content, dependencies'
digests)``, so a hit never needs the content of an intermediate result.  Computed in
dependency order with an explicit stack (a 1,000,000-task chain is fine); a task that
reads an uncacheable one is uncacheable.

(skeleton: the interface cachestore codes against; filled in next.)
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, NamedTuple

__all__ = ["TaskPrint", "graph_fingerprints", "explain", "OPT_OUT_ATTRIBUTE", "NotCached"]

# A callable with this attribute set to False (``@ns.delayed(cache=False)`` wraps the
# function in :class:`NotCached`, which has it) makes its tasks uncacheable.
OPT_OUT_ATTRIBUTE = "__notebook_sched_cache__"


class TaskPrint(NamedTuple):
    """The fingerprint of one task.

    ``digest`` is None when the task cannot be cached, and ``reason`` then says why
    ("argument 2 is a socket").  ``parts`` are the labelled component digests that
    :func:`explain` compares (``("function clean", d)``, ``("helper parse_row", d)``,
    ``("global THRESHOLD", d)``, ``("argument 1", d)``, ``("dependency 'load-3'", d)``
    ...).  ``identity`` names the task stably across runs whose keys are random: the
    function's qualified name and the key's name part (``key_split``), plus the
    task's position among its siblings of the same name when needed.
    """

    digest: bytes | None
    reason: str | None
    parts: tuple[tuple[str, bytes], ...]
    identity: str


class NotCached:
    """Wraps a callable so that its tasks are never cached (``delayed(f, cache=False)``)."""

    __slots__ = ("func",)
    __notebook_sched_cache__ = False

    def __init__(self, func: Any):
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __reduce__(self):
        return NotCached, (self.func,)

    def __repr__(self) -> str:
        return f"NotCached({self.func!r})"


def graph_fingerprints(
    mapping: dict, keys: list, *, opt_out: Any = None
) -> dict[Hashable, TaskPrint]:
    """A :class:`TaskPrint` for every task needed for ``keys`` (literals included).

    ``mapping`` is a normalised graph (key -> task tuple / literal / Dask GraphNode);
    ``keys`` the flat requested keys.  ``opt_out`` is an optional predicate
    ``opt_out(key, task) -> str | None`` returning a reason to leave a task uncached.
    """
    raise NotImplementedError("skeleton: filled in next")


def explain(old: TaskPrint | None, new: TaskPrint) -> str:
    """One line: why ``new`` missed (what changed since ``old``), or why it is uncacheable."""
    raise NotImplementedError("skeleton: filled in next")
