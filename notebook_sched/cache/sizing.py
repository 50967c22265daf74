"""How many bytes a result holds, for the memory tier's budget (``cache_max_bytes``).

The memory tier evicts by the real size of what it keeps, so the estimate follows the
data, not Python's object headers: NumPy arrays (and anything with an integer
``nbytes``: xarray, pyarrow, memoryviews) count their buffer; pandas objects count
``memory_usage(deep=True)`` (the strings of an object column included); strings and
bytes their length; small containers their items, recursively to a bounded depth and
breadth.  Anything else gets ``sys.getsizeof``: cheap, and an underestimate only for
objects that hide their data (those are rare among task results, and a wrong guess
costs at most an early or late eviction, never a wrong answer).

The estimate runs once per stored result, so it must stay cheap for the 10,000-task
graph of small results: scalars and short strings take one type check.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["memory_size"]

MAX_ITEMS = 1000  # containers longer than this are sampled: the first items, scaled
MAX_DEPTH = 3
_SCALARS = (int, float, bool, complex, type(None))


def memory_size(value: Any, depth: int = 0) -> int:
    """A cheap estimate of the bytes ``value`` keeps alive (at least 1)."""
    typ = type(value)
    if typ in _SCALARS:
        return 32
    if typ is str or typ is bytes or typ is bytearray:
        return len(value) + 49
    pandas_size = _pandas_size(value, typ)
    if pandas_size is not None:
        return pandas_size
    nbytes = getattr(value, "nbytes", None)
    if type(nbytes) is int and nbytes >= 0:
        return nbytes + 96
    if depth < MAX_DEPTH and typ in (list, tuple, set, frozenset, dict):
        return _container_size(value, typ, depth)
    try:
        return max(sys.getsizeof(value), 1)
    except TypeError:  # a C type that refuses (rare)
        return 64


def _pandas_size(value: Any, typ: type) -> int | None:
    module = typ.__module__
    if not module.startswith("pandas"):
        return None
    usage = getattr(value, "memory_usage", None)
    if usage is None:
        return None
    try:
        size = usage(deep=True)
    except Exception:
        return None
    total = getattr(size, "sum", None)  # a DataFrame answers per column
    return int(total()) if total is not None else int(size)


def _container_size(value: Any, typ: type, depth: int) -> int:
    items = value.items() if typ is dict else value
    head = sys.getsizeof(value)
    count = len(value)
    total = 0
    for n, item in enumerate(items):
        if n == MAX_ITEMS:
            return head + total * count // n  # the sample, scaled to the whole
        if typ is dict:
            total += memory_size(item[0], depth + 1) + memory_size(item[1], depth + 1)
        else:
            total += memory_size(item, depth + 1)
    return head + total
