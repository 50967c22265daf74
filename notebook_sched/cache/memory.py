"""The memory tier: results of this session by fingerprint, least recently used out first.

One :class:`MemoryTier` per process (the caller's; worker processes never keep one).
It maps a task's fingerprint (bytes) to its result and the result's size
(:func:`~notebook_sched.cache.sizing.memory_size`); the sizes add up to at most
``max_bytes``, and storing past it drops the least recently used entries first (a
result larger than the whole budget is not kept).  A lookup that hits makes the entry
the most recent.

Results are shared, not copied: a hit returns the very object the earlier run
produced, as ``functools.lru_cache`` and ``dask.cache`` do.  Changing a cached result
in place (``arr += 1`` on a value ``compute`` returned) therefore changes what later
hits return; the README says so.

Thread-safe: ``threads`` calls :meth:`put` from its worker threads.  ``_lock`` guards
``_entries`` and ``_bytes``; a lookup takes it too (an ``OrderedDict.move_to_end`` is
not atomic with the read), which costs ~0.1 µs uncontended.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from .sizing import memory_size

__all__ = ["MemoryTier", "MISSING"]

MISSING: Any = object()  # what get() returns for a miss (None is a fine result)


class MemoryTier:
    """Results by fingerprint in memory, within ``max_bytes``; LRU eviction."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # guards _entries, _bytes and max_bytes changes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._entries

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __repr__(self) -> str:
        return f"<MemoryTier {len(self)} entries, {self._bytes:,} / {self.max_bytes:,} bytes>"

    def get(self, digest: bytes) -> Any:
        """The result stored under ``digest`` (now the most recent), or :data:`MISSING`."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return MISSING
            self._entries.move_to_end(digest)
            return entry[0]

    def put(self, digest: bytes, value: Any, size: int | None = None) -> bool:
        """Keep ``value`` under ``digest``; False when it is larger than the budget."""
        if size is None:
            size = memory_size(value)
        with self._lock:
            old = self._entries.pop(digest, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return False
            self._entries[digest] = (value, size)
            self._bytes += size
            self._evict()
        return True

    def resize(self, max_bytes: int) -> None:
        """A new budget (``cache_max_bytes`` changed); evicts down to it at once."""
        with self._lock:
            self.max_bytes = max_bytes
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _evict(self) -> None:  # with _lock held
        entries = self._entries
        while self._bytes > self.max_bytes and entries:
            _, (_, size) = entries.popitem(last=False)
            self._bytes -= size
