"""The caller's cache state for this session: the memory tier, the disk folders, the
last run's stats and the fingerprints of the run before (for ``explain``).

One per process, created on first use; worker processes never make one (their result
hooks write disk entries only, see ``plan.StoreResult``).  :func:`cache_info` and
:func:`cache_clear` are the public functions (``notebook_sched.cache_info()``).

``_lock`` guards the module state below it (the planner of a run on another thread,
a background job, may record its stats while a cell reads ``cache_info()``).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import deque
from typing import Any

from .. import config
from .disk import CacheWarning, clear, usage
from .folder import Folder, FolderError, folder_for, open_folder
from .info import CacheInfo, RunStats
from .memory import MemoryTier

__all__ = ["memory_tier", "disk_folder", "record_run", "remember", "cache_info", "cache_clear"]

RUNS_KEPT = 16  # how far back explain() looks for a task's previous fingerprint
_lock = threading.Lock()
_memory: MemoryTier | None = None
_folders_used: dict[str, Folder] = {}  # folders this session used, for cache_clear/info
_last: RunStats | None = None
_runs: deque = deque(maxlen=RUNS_KEPT)  # the latest runs' {key: TaskPrint}, oldest first
_refused: set[str] = set()  # folders already warned about


def memory_tier() -> MemoryTier:
    """This session's memory tier, sized by ``cache_max_bytes`` (resized when it changes)."""
    global _memory
    budget = config.get("cache_max_bytes")
    memory = _memory
    if memory is None:
        with _lock:
            if _memory is None:
                _memory = MemoryTier(budget)
            memory = _memory
    if memory.max_bytes != budget:
        memory.resize(budget)
    return memory


def disk_folder(setting: Any) -> Folder | None:
    """The opened folder of a ``cache`` setting, None for memory only.  A folder that
    cannot be used warns once and leaves the run with the memory tier."""
    path = folder_for(setting)
    if path is None:
        return None
    try:
        folder = open_folder(path)
    except FolderError as exc:
        if path not in _refused:
            _refused.add(path)
            warnings.warn(f"notebook_sched cache: {exc}; using memory only", CacheWarning, 3)
        return None
    with _lock:
        _folders_used[folder.path] = folder
    return folder


def remember(prints: dict) -> tuple:
    """Keep a run's fingerprints; return those of the runs before it, newest last.

    Nothing is indexed here (a run of 10,000 cached tasks must stay cheap): ``explain``
    looks a task's identity up in the earlier runs when someone asks."""
    with _lock:
        earlier = tuple(_runs)
        _runs.append(prints)
    return earlier


def record_run(stats: RunStats) -> None:
    global _last
    with _lock:
        _last = stats


def cache_info() -> CacheInfo:
    """The last cached run's ``hits``, ``misses``, ``uncacheable`` and the tiers' sizes.

    ``cache_info().explain(key)`` says in one line why a task of that run recomputed
    (what changed: its function, a helper, a global, an argument, a dependency...) or
    why it could not be cached."""
    with _lock:
        stats = _last
        memory = _memory
    budget = memory.max_bytes if memory is not None else config.get("cache_max_bytes")
    mem = (len(memory), memory.nbytes, budget) if memory is not None else (0, 0, budget)
    folder = _folder_of(stats)
    disk: tuple = (None, None, None)
    if folder is not None:
        disk = (folder.path, *usage(folder))
    return CacheInfo(stats, mem, disk)


def _folder_of(stats: RunStats | None) -> Folder | None:
    """The folder of the last run's setting, else of the config's (if opened already)."""
    for setting in ((stats.setting if stats else None), config.get("cache")):
        path = folder_for(setting) if setting not in (None, False) else None
        if path is not None:
            try:
                return open_folder(path)
            except FolderError:
                return None
    return None


def cache_clear(disk: bool = True) -> None:
    """Empty the memory tier and (``disk=True``) the disk folders this session used
    and the one the config names; forget the last run's stats and fingerprints.

    A disk folder loses its entries and those of older entry formats (``v1/``) that
    its key signed, with the folders that leaves empty; a file we cannot prove we
    wrote stays (``disk.remove_old_formats``).  The key stays."""
    global _last
    with _lock:
        if _memory is not None:
            _memory.clear()
        folders = dict(_folders_used)
        _last = None
        _runs.clear()
    if not disk:
        return
    configured = folder_for(config.get("cache")) if config.get("cache") else None
    if configured is not None and configured not in folders and os.path.isdir(configured):
        try:
            folders[configured] = open_folder(configured)
        except FolderError:
            pass
    for folder in folders.values():
        clear(folder)
