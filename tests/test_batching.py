"""The batch-sizing policy of the process backends (``schedulers/_batching.py``), with
plain numbers: no process, no pipe."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from notebook_sched.schedulers._batching import (
    BATCH_BYTES,
    BATCH_RESULTS,
    FIRST_BATCH,
    BatchSizer,
    tasks_by_time,
)


def sizer(deps: list[tuple], workers: int = 2) -> BatchSizer:
    return BatchSizer(SimpleNamespace(deps=deps), workers)


def fill(s: BatchSizer, tasks: list[int]) -> int:
    """How many of ``tasks`` one batch takes (the loop the backends run)."""
    held = taken = 0
    for task in tasks:
        if s.full(held):
            break
        held += s.task_bytes(task)
        taken += 1
    return taken


def test_time_rule_before_and_after_tasks_are_timed():
    s = sizer([()] * 10)
    assert s.max_tasks(ready=1000) == FIRST_BATCH
    s.observe([(0, 1, 0.0, 0.001), (1, 1, 0.0, 0.001)])  # 1 ms tasks: 20 in 20 ms
    assert s.max_tasks(ready=1000) == 20
    assert s.max_tasks(ready=12) == 3  # half a worker's share of the ready tasks
    assert tasks_by_time(None, 64, 1) == 1 and tasks_by_time(1e-9, 64) == 64


def test_tasks_that_move_nothing_are_batched_by_time_alone():
    s = sizer([()] * 2000)
    s.observe([(i, i, 0.0, 1e-6) for i in range(100)])
    assert fill(s, list(range(2000))) == 2000


def test_tasks_that_move_arrays_go_a_few_at_a_time():
    np = pytest.importorskip("numpy")
    block = np.zeros(1 << 17)  # 1 MiB results, each read by one task
    n = 64
    s = sizer([()] * n + [(i,) for i in range(n)])
    s.observe([(i, block, 0.0, 1e-5) for i in range(n)])  # cheap: time would take all
    assert s.max_tasks(ready=n) == 16  # the time rule alone (the share caps it)
    assert fill(s, list(range(n, 2 * n))) == BATCH_RESULTS // 2  # input + result each
    # results smaller than the byte floor still go a few at a time
    small = np.zeros(1 << 13)  # 64 KiB
    s = sizer([()] * n + [(i,) for i in range(n)])
    s.observe([(i, small, 0.0, 1e-5) for i in range(n)])
    assert fill(s, list(range(n, 2 * n))) == BATCH_BYTES // (2 * small.nbytes)


def test_a_task_larger_than_the_budget_still_goes_alone():
    np = pytest.importorskip("numpy")
    s = sizer([(), (0,), (0,)])
    s.note(0, np.zeros(4 << 20))  # 32 MiB input
    assert fill(s, [1, 2]) == 1


def test_opaque_results_count_as_their_share_of_the_message():
    class Opaque:  # no nbytes: its size is only known from the pickled message
        pass

    s = sizer([()] * 4 + [(0, 1)])
    s.received(4 << 20)
    s.observe([(i, Opaque(), 0.0, 0.001) for i in range(4)])
    assert s.sizes[:4] == [1 << 20] * 4
    assert s.input_bytes(4) == 2 << 20
    s.observe([(2, Opaque(), 0.0, 0.001)])  # no message size given: the shallow size
    assert 0 < s.sizes[2] < 1024


def test_an_empty_report_teaches_nothing():
    s = sizer([()] * 2)
    s.received(1000)
    s.observe([])
    assert s.mean_seconds is None and s.mean_bytes == 0


def keyed_sizer(keys: list, deps: list[tuple]) -> BatchSizer:
    return BatchSizer(SimpleNamespace(deps=deps, keys=keys), 2)


def test_result_sizes_are_learned_per_layer():
    """Many small results must not hide a layer of large ones (the anomaly's shape)."""
    np = pytest.importorskip("numpy")
    block = np.zeros(1 << 13)  # 64 KiB
    keys = [("block", i) for i in range(8)] + [("mean", i) for i in range(8)] + [("new", 0)]
    s = keyed_sizer(keys, [()] * 17)
    s.observe([(0, block, 0.0, 1e-5)])
    for i in [*range(8, 16)] * 2:  # one small result per message: the overall mean falls
        s.observe([(i, 1.5, 0.0, 1e-5)])
    assert s.mean_bytes < 1024
    assert s.result_bytes(1) == block.nbytes  # the blocks' layer still says 256 KiB
    assert fill(s, list(range(1, 8))) == BATCH_BYTES // block.nbytes
    assert s.result_bytes(16) == block.nbytes  # a layer not seen yet: the largest
    assert s.result_bytes(9) < 1024


def test_a_chain_costs_its_inputs_and_its_last_result():
    np = pytest.importorskip("numpy")
    keys = [("in", 0), ("head", 0), ("tail", 0)]
    s = keyed_sizer(keys, [(), (0,), (1,)])
    s.note(0, np.zeros(1000))
    s.observe([(1, None, 0.0, 1e-5), (2, np.zeros(3000), 0.0, 1e-5)])  # head stays there
    assert s.chain_bytes((1, 2)) == 8000 + 24000
