"""The processes backend holds no more results than Dask's (issue 22), counted, not timed.

The graph is an array reduction in miniature, the shape that went wrong: cheap tasks
make 256 KiB blocks, cheaper "slicing" tasks halve them, and a pairwise tree sums
them.  Cheap tasks pulled the mean task time down, so batches grew by time alone to
dozens of tasks, and 100+ blocks were out at once: held by the caller while their
readers ran, and held by a worker until its batch reported.

``Block`` counts its live instances in each process (created on unpickling too), so
the caller's peak is read directly, and each block carries the largest count its
worker had seen when it was made, passed down the tree, so the final block carries
the workers' peak.  Dask's ``processes`` scheduler (6-task chunks, 2 workers) runs the
same graph against the same bounds.
"""

from __future__ import annotations

import itertools
import os

import pytest

import notebook_sched as ns

pytestmark = pytest.mark.usefixtures("no_leaks")

LEAVES = 128
BLOCK = 256 << 10
CALLER_BOUND = 40  # blocks alive in the caller at once (Dask: 19-24; ours 99-163 before)
WORKER_BOUND = 24  # blocks alive in one worker at once (Dask: 3; ours 65-104 before)

_live = 0
_peak = 0
_run = None  # the run this process's _peak counts for


class Block:
    """A result buffer that counts the blocks alive in its process."""

    def __init__(self, size: int, worker_peak: int = 0):
        global _live, _peak
        self.payload = bytearray(size)
        _live += 1
        _peak = max(_peak, _live)
        self.worker_peak = max(worker_peak, _peak)

    def __reduce__(self):
        return _rebuild, (self.payload, self.worker_peak)  # the bytes travel

    def __del__(self):
        global _live
        _live -= 1


_runs = itertools.count(os.getpid() << 16)


def _rebuild(payload: bytearray, worker_peak: int) -> Block:
    block = Block.__new__(Block)
    global _live, _peak
    block.payload = payload
    _live += 1
    _peak = max(_peak, _live)
    block.worker_peak = worker_peak  # made elsewhere: its maker's peak, not ours
    return block


def make(i: int, run: int) -> Block:
    global _run, _peak
    if run != _run:  # a worker's first task of this run: count from now
        _run, _peak = run, _live
    return Block(BLOCK)


def half(block: Block) -> Block:
    return Block(len(block.payload) // 2, block.worker_peak)


def combine(a: Block, b: Block) -> Block:
    return Block(len(a.payload), max(a.worker_peak, b.worker_peak))


def reduction_graph() -> tuple[dict, tuple]:
    graph: dict = {}
    run = next(_runs)
    for i in range(LEAVES):
        graph[("x", i)] = (make, i, run)
        graph[("s", 0, i)] = (half, ("x", i))
    level, width = 0, LEAVES
    while width > 1:
        for i in range(width // 2):
            graph[("s", level + 1, i)] = (combine, ("s", level, 2 * i), ("s", level, 2 * i + 1))
        level, width = level + 1, width // 2
    return graph, ("s", level, 0)


def peaks(get) -> tuple[int, int]:
    """``(caller's peak, workers' peak)`` of live blocks during ``get(graph, key)``."""
    global _peak
    graph, key = reduction_graph()
    _peak = _live
    result = get(graph, key)
    return _peak, result.worker_peak


def ours(graph, key):
    return ns.get(graph, key, scheduler="processes", num_workers=2)


def test_dask_meets_the_bounds():
    multiprocessing = pytest.importorskip("dask.multiprocessing")
    caller, workers = peaks(lambda g, k: multiprocessing.get(g, k, num_workers=2))
    assert caller <= CALLER_BOUND
    assert workers <= WORKER_BOUND


@pytest.mark.parametrize("backend", ["processes"])
def test_caller_holds_few_results_on_processes(backend, warm):
    caller, _workers = peaks(ours)
    assert caller <= CALLER_BOUND


@pytest.mark.parametrize("backend", ["processes"])
def test_workers_hold_few_results_on_processes(backend, warm):
    _caller, workers = peaks(ours)
    assert workers <= WORKER_BOUND


# -- blocks read twice, beside many small results (the anomaly's shape) ----------------
# Each 256 KiB block is read by a task with a tiny result and, once its group's tiny
# results are summed, by a second task.  The many small results once pulled the one
# running mean of result sizes down to a few bytes, so batches of dozens of blocks went
# out, held by the caller until their group was done and by a worker until its batch
# ended (22-27 blocks in a worker before, 5 now; Dask 1).  Result sizes are learned per
# layer now, and a worker sends results once 256 KiB of them wait.

GROUP = 8
ANOMALY_WORKER_BOUND = 10


def count(block: Block) -> tuple[int, int]:
    """A small result: ``(1, the worker's peak so far)``."""
    return 1, block.worker_peak


def total(counts: list) -> tuple[int, int]:
    return sum(c[0] for c in counts), max(c[1] for c in counts)


def scaled(block: Block, group: tuple) -> tuple[int, int]:
    return group[0], max(block.worker_peak, group[1])


def anomaly_graph() -> tuple[dict, str]:
    graph: dict = {}
    run = next(_runs)
    outs = []
    for g in range(LEAVES // GROUP):
        members = range(g * GROUP, (g + 1) * GROUP)
        for i in members:
            graph[("x", i)] = (make, i, run)
            graph[("n", i)] = (count, ("x", i))
        graph[("t", g)] = (total, [("n", i) for i in members])
        for i in members:
            graph[("d", i)] = (scaled, ("x", i), ("t", g))
            outs.append(("d", i))
    graph["out"] = (total, outs)
    return graph, "out"


def anomaly_peaks(get) -> tuple[int, int]:
    """``(caller's peak, workers' peak)`` of live blocks on the anomaly-shaped graph."""
    global _peak
    graph, key = anomaly_graph()
    _peak = _live
    done, workers = get(graph, key)
    assert done == LEAVES * GROUP  # every block was counted in its group
    return _peak, workers


def test_dask_meets_the_bounds_on_blocks_read_twice():
    multiprocessing = pytest.importorskip("dask.multiprocessing")
    caller, workers = anomaly_peaks(lambda g, k: multiprocessing.get(g, k, num_workers=2))
    assert caller <= CALLER_BOUND
    assert workers <= ANOMALY_WORKER_BOUND


@pytest.mark.parametrize("backend", ["processes"])
def test_blocks_read_twice_stay_few_on_processes(backend, warm):
    caller, workers = anomaly_peaks(ours)
    assert caller <= CALLER_BOUND
    assert workers <= ANOMALY_WORKER_BOUND
