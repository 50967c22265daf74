"""The result cache: rerun a cell, recompute only what changed, never a stale result.

::

    ns.config.set(cache="disk")      # or True / "memory", a folder path; per call too
    total.compute()                  # computes, stores each task's result
    total.compute()                  # hits: nothing runs
    ns.cache_info()                  # hits, misses, uncacheable, the tiers' sizes
    ns.cache_info().explain(key)     # why that task recomputed, in one line
    ns.cache_clear()                 # empty both tiers

The modules, bottom up (each docstring is its design note):

``optout``       the opt-out marker (``cache=False``, ``pure=False``), import-free
``value_print``  digests of values by content (arrays, pandas, containers, pickles)
``installed``    which code is the user's; installed code's versions
``code_print``   prints of callables: code, defaults, closures, globals, helpers
``task_read``    one graph value read into its parts (function, arguments, deps)
``fingerprint``  a task's fingerprint, chained through the graph, and ``explain``
``sizing``       a result's size in memory (arrays' nbytes, pandas' deep usage)
``memory``       the memory tier: LRU under ``cache_max_bytes``
``folder``       the disk tier's private folder and the key that signs its entries
``disk``         signed, atomic entries; zero-copy loads; LRU under
                 ``cache_disk_max_bytes``; written only when loading beats recomputing
``info``         what ``cache_info()`` shows
``session``      the caller's state: the memory tier, the last run, the prints before
``plan``         the planner on the engine's graph seam, and the per-task store hook

Nothing is imported here eagerly: ``import notebook_sched`` must stay cheap, and a
worker process imports only what its store hook needs (``plan``, ``disk``, ``folder``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["cache_info", "cache_clear", "plan_hook"]

_LAZY = {
    "cache_info": "session",
    "cache_clear": "session",
    "plan_hook": "plan",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'notebook_sched.cache' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
