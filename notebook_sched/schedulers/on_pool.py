"""``pool=`` given to ``threads`` or ``processes``: the graph runs on that executor.

An executor or a ``multiprocessing`` pool passed as ``pool=`` runs the graph through
``executor.py``.  This lives beside the backends, not in the registry
(``schedulers/__init__``), since the registry names the backends and the backends
import this: no module imports the one that names it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_pool", "get_on_pool"]


def check_pool(pool: Any) -> Any:
    """Refuse a ``pool=`` value that is not a pool, saying what ``pool`` takes."""
    if callable(getattr(pool, "submit", None)) or callable(getattr(pool, "apply_async", None)):
        return pool
    hint = ""
    if isinstance(pool, str):
        hint = f" To choose a backend, pass scheduler={pool!r}."
    elif isinstance(pool, int) and not isinstance(pool, bool):
        hint = f" To set the number of workers, pass num_workers={pool}."
    try:
        shown = repr(pool)[:60]
    except Exception:
        shown = f"<{type(pool).__name__} object>"
    raise TypeError(
        f"pool must be a concurrent.futures.Executor (ThreadPoolExecutor, "
        f"ProcessPoolExecutor, loky's executor) or a multiprocessing pool; got "
        f"{type(pool).__name__}: {shown}.{hint}"
    )


def get_on_pool(dsk: Any, keys: Any, pool: Any, observers=None, planners=None) -> Any:
    """Run the graph on ``pool`` (an executor or multiprocessing pool) through
    ``executor.py``, so no backend imports another."""
    from .executor import get as executor_get

    check_pool(pool)
    return executor_get(dsk, keys, executor=pool, observers=observers, planners=planners)
