"""What ``notebook_sched.cache_info()`` shows: the last cached run, and why tasks missed.

:class:`RunStats` is filled by the planner of one run (``plan.py``): per needed task
of the graph, whether it was a hit (and from which tier), a miss or uncacheable, with
its fingerprint and the fingerprint of the task with the same *identity* in the run
before (the fingerprinter's stable name for a task whose key is random).
:class:`CacheInfo` is the public view of it plus the tiers' sizes: counts as
attributes, a text and an HTML repr, and :meth:`CacheInfo.explain`, one line per task
from the fingerprinter's ``explain``.

Kept small on purpose: the planner stores references (the prints it made anyway), and
text is produced only when someone asks.
"""

from __future__ import annotations

import html
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunStats", "CacheInfo", "HIT_MEMORY", "HIT_DISK", "MISS", "UNCACHEABLE", "NOT_RUN"]

HIT_MEMORY, HIT_DISK, MISS, UNCACHEABLE = "hit (memory)", "hit (disk)", "miss", "uncacheable"
NOT_RUN = "not run"  # needed only by tasks that hit: culled


@dataclass
class RunStats:
    """Per-task outcome of one cached run (filled by the planner)."""

    setting: Any = None
    status: dict = field(default_factory=dict)  # key -> HIT_MEMORY/HIT_DISK/MISS/UNCACHEABLE
    prints: dict = field(default_factory=dict)  # key -> TaskPrint of this run
    earlier: tuple = ()  # the {key: TaskPrint} of the runs before, oldest first
    hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    uncacheable: int = 0
    written: int = 0  # disk entries written by the caller (workers write theirs unseen)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"


class CacheInfo:
    """The last cached run's counts and the tiers' sizes; ``explain(key)`` says why.

    ``hits``, ``misses``, ``uncacheable``: tasks of the last run served from the cache,
    computed and stored, computed and not storable.  ``memory_entries`` /
    ``memory_bytes``, ``disk_entries`` / ``disk_bytes`` (None without a disk tier) and
    ``disk_folder`` describe the tiers now.
    """

    def __init__(self, stats: RunStats | None, memory: tuple[int, int, int], disk: Any):
        self._stats = stats or RunStats()
        self.hits = self._stats.hits
        self.disk_hits = self._stats.disk_hits
        self.misses = self._stats.misses
        self.uncacheable = self._stats.uncacheable
        self.memory_entries, self.memory_bytes, self.memory_max_bytes = memory
        self.disk_folder, self.disk_entries, self.disk_bytes = disk
        self._indexes: dict[int, dict] = {}

    def explain(self, key: Hashable) -> str:
        """One line: why task ``key`` of the last run hit, recomputed or was not cached."""
        stats = self._stats
        key = _plain(key)
        new = stats.prints.get(key)
        status = stats.status.get(key, NOT_RUN if new is not None else None)
        if status is None:
            if not stats.prints:
                return "no cached run yet: compute with cache=True (or 'disk') first"
            return f"{key!r} was not a task of the last cached run"
        if status == NOT_RUN and new is not None and new.digest is None:
            status = UNCACHEABLE
        if status in (HIT_MEMORY, HIT_DISK):
            return f"{key!r}: {status}: nothing it depends on changed"
        if status == NOT_RUN:
            return f"{key!r}: not run: only tasks that were cache hits needed it"
        from .fingerprint import explain

        if new is None:
            return f"{key!r}: {status}"
        if new.digest is None:  # "uncacheable: <why>", not "uncacheable: not cacheable: ..."
            return f"{key!r}: {UNCACHEABLE}: {new.reason}"
        return f"{key!r}: {status}: {explain(self._previous(new.identity), new)}"

    def _previous(self, identity: str) -> Any:
        """The latest earlier fingerprint of the task named ``identity``, or None (each
        earlier run is indexed by identity once, when first asked)."""
        earlier = self._stats.earlier
        for n in range(len(earlier) - 1, -1, -1):
            index = self._indexes.get(n)
            if index is None:
                index = self._indexes[n] = {p.identity: p for p in earlier[n].values()}
            found = index.get(identity)
            if found is not None:
                return found
        return None

    def __repr__(self) -> str:
        line = (
            f"cache: {self.hits} hits"
            + (f" ({self.disk_hits} from disk)" if self.disk_hits else "")
            + f", {self.misses} misses, {self.uncacheable} uncacheable in the last run; "
            f"memory {self.memory_entries} entries, {_bytes(self.memory_bytes)} "
            f"of {_bytes(self.memory_max_bytes)}"
        )
        if self.disk_folder is not None:
            line += (
                f"; disk {self.disk_entries} entries, {_bytes(self.disk_bytes)} "
                f"in {self.disk_folder}"
            )
        return line

    def _repr_html_(self) -> str:
        rows = [
            ("hits", f"{self.hits}" + (f" ({self.disk_hits} from disk)" if self.disk_hits else "")),
            ("misses", str(self.misses)),
            ("uncacheable", str(self.uncacheable)),
            (
                "memory tier",
                f"{self.memory_entries} entries, {_bytes(self.memory_bytes)} "
                f"of {_bytes(self.memory_max_bytes)}",
            ),
        ]
        if self.disk_folder is not None:
            rows.append(
                (
                    "disk tier",
                    f"{self.disk_entries} entries, {_bytes(self.disk_bytes)} in "
                    f"<code>{html.escape(self.disk_folder)}</code>",
                )
            )
        body = "".join(
            f"<tr><th style='text-align:left'>{name}</th>"
            f"<td style='text-align:left'>{value}</td></tr>"
            for name, value in rows
        )
        return (
            "<div><b>notebook_sched cache</b> (last run; "
            "<code>.explain(key)</code> says why a task recomputed)"
            f"<table>{body}</table></div>"
        )


def _plain(key: Any) -> Hashable:
    """A key, or the key of a ``Delayed`` (ours or Dask's) given instead."""
    if type(key) in (str, tuple, int, float, bytes):
        return key
    inner = getattr(key, "key", None)
    return inner if inner is not None else key
