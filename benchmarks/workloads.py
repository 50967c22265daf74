"""Graph builders shared by every benchmark: plain dicts in the Dask spec.

Every task calls an importable function (``operator.pos``, ``operator.add``, ``sum``
or a function of this module), so both our process backend and Dask's pickle tasks by
reference and the comparison measures scheduling, not pickling of closures.

Each builder returns ``Workload(name, graph, key, expected)``; ``expected`` is the
answer, so a harness can check that each scheduler computed the right thing.
NumPy is imported inside the task functions only: worker processes that unpickle the
pure-Python tasks do not pay for it.
"""

from __future__ import annotations

import operator
from collections.abc import Hashable
from typing import Any, NamedTuple

__all__ = [
    "Workload",
    "independent",
    "chain",
    "tree_reduction",
    "OVERHEAD_GRAPHS",
    "numpy_sort_tasks",
    "python_loop_tasks",
    "sleep_tasks",
    "mixed_tasks",
    "array_tree",
    "numpy_task",
    "python_task",
    "make_leaf",
]


class Workload(NamedTuple):
    name: str
    graph: dict
    key: Hashable
    expected: Any


# -- scheduling overhead: tasks that do (almost) nothing ------------------------------


def independent(n: int = 10_000) -> Workload:
    """``n`` independent no-op tasks and one task summing them all."""
    graph: dict = {("x", i): (operator.pos, i) for i in range(n)}
    graph["total"] = (sum, [("x", i) for i in range(n)])
    return Workload(f"independent {n:,} + sum", graph, "total", n * (n - 1) // 2)


def chain(n: int = 10_000) -> Workload:
    """A linear chain of ``n`` tasks, each reading the previous one."""
    graph: dict = {("c", 0): (operator.pos, 1)}
    for i in range(1, n):
        graph[("c", i)] = (operator.pos, ("c", i - 1))
    return Workload(f"chain {n:,}", graph, ("c", n - 1), 1)


def tree_reduction(leaves: int = 8192) -> Workload:
    """A binary tree of ``operator.add`` over ``leaves`` tasks (a power of two)."""
    if leaves & (leaves - 1):
        raise ValueError(f"leaves must be a power of two; got {leaves}")
    graph: dict = {("t", 0, i): (operator.pos, i) for i in range(leaves)}
    level, width = 0, leaves
    while width > 1:
        for i in range(width // 2):
            graph[("t", level + 1, i)] = (
                operator.add,
                ("t", level, 2 * i),
                ("t", level, 2 * i + 1),
            )
        level, width = level + 1, width // 2
    return Workload(f"tree {leaves:,} leaves", graph, ("t", level, 0), leaves * (leaves - 1) // 2)


OVERHEAD_GRAPHS = (independent, chain, tree_reduction)


# -- parallel speed-up: tasks of ~20-50 ms -----------------------------------------------


def numpy_task(seed: int, n: int, rounds: int) -> float:
    """Fill and sort ``rounds`` arrays of ``n`` float64 (8 bytes each): releases the GIL."""
    import numpy as np

    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(rounds):
        values = rng.random(n)
        values.sort()
        total += float(values[n // 2])
    return total


def python_task(seed: int, n: int) -> int:
    """A pure-Python loop summing ``n`` ints: holds the GIL throughout."""
    total = 0
    for i in range(n):
        total += i ^ seed
    return total


def _gather(name: str, func, args_of, tasks: int) -> Workload:
    graph: dict = {(name, i): (func, *args_of(i)) for i in range(tasks)}
    graph["total"] = (sum, [(name, i) for i in range(tasks)])
    return Workload(f"{tasks} x {func.__name__}", graph, "total", None)


def numpy_sort_tasks(tasks: int = 64, n: int = 1 << 20, rounds: int = 4) -> Workload:
    """``tasks`` independent NumPy tasks (fill + sort 8 MB arrays) and a sum."""
    return _gather("np", numpy_task, lambda i: (i, n, rounds), tasks)


def python_loop_tasks(tasks: int = 64, n: int = 1_000_000) -> Workload:
    """``tasks`` independent pure-Python loops and a sum."""
    return _gather("py", python_task, lambda i: (i, n), tasks)


def sleep_task(seed: int, seconds: float) -> int:
    """Waits, as a task reading a file or a socket does: no CPU, no GIL."""
    import time

    time.sleep(seconds)
    return seed


def sleep_tasks(tasks: int = 64, seconds: float = 0.025) -> Workload:
    """``tasks`` independent sleeps and a sum."""
    return _gather("io", sleep_task, lambda i: (i, seconds), tasks)


def mixed_tasks(tasks: int = 64, n: int = 1 << 20, rounds: int = 4, loop: int = 1_000_000):
    """Half NumPy tasks, half pure-Python tasks (interleaved), and a sum: the demo's mix."""
    graph: dict = {}
    for i in range(tasks // 2):
        graph[("np", i)] = (numpy_task, i, n, rounds)
        graph[("py", i)] = (python_task, i, loop)
    graph["total"] = (sum, list(graph))
    return Workload(f"{tasks} mixed NumPy + Python", graph, "total", None)


def numpy_array_task(seed: int, n: int, rounds: int):
    """Like :func:`numpy_task`, but the sorted array (``n`` float64) is the result."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = rng.random(n)
    for _ in range(rounds - 1):
        values.sort()
        values = values + rng.random(n)
    values.sort()
    return values


def checksum(arrays: list, counts: list) -> float:
    """The arrays' medians summed, plus the loops' totals: what the mix with data returns."""
    return float(sum(float(a[len(a) // 2]) for a in arrays)) + float(sum(counts))


def mixed_data_tasks(
    tasks: int = 64, n: int = 1 << 20, rounds: int = 4, loop: int = 1_000_000
) -> Workload:
    """The mix where data moves: NumPy tasks make 8 MB arrays that one final task reads.

    On processes every array is pickled home and out again (16 MB of copies per array,
    about 20 ms on this machine, as long as the task): the case ``auto`` exists for,
    keeping the NumPy tasks and their data in the caller and sending only the
    pure-Python loops to the process pool."""
    graph: dict = {}
    for i in range(tasks // 2):
        graph[("np", i)] = (numpy_array_task, i, n, rounds)
        graph[("py", i)] = (python_task, i, loop)
    graph["total"] = (
        checksum,
        [("np", i) for i in range(tasks // 2)],
        [("py", i) for i in range(tasks // 2)],
    )
    return Workload(f"{tasks} mixed, arrays moving", graph, "total", None)


# -- memory: a tree reduction over large arrays ---------------------------------------


def make_leaf(i: int, n: int):
    """An array of ``n`` float64 all equal to ``i`` (its pages are touched)."""
    import numpy as np

    leaf = np.empty(n)
    leaf.fill(float(i))
    return leaf


def array_tree(leaves: int = 64, n: int = 1 << 20) -> Workload:
    """Pairwise ``np.add`` up a binary tree over ``leaves`` arrays made by tasks."""
    import numpy as np

    graph: dict = {("leaf", 0, i): (make_leaf, i, n) for i in range(leaves)}
    level, width = 0, leaves
    while width > 1:
        for i in range(width // 2):
            graph[("leaf", level + 1, i)] = (
                np.add,
                ("leaf", level, 2 * i),
                ("leaf", level, 2 * i + 1),
            )
        level, width = level + 1, width // 2
    return Workload(
        f"array tree {leaves} x {n * 8 // 2**20} MB",
        graph,
        ("leaf", level, 0),
        float(leaves * (leaves - 1) // 2),
    )
