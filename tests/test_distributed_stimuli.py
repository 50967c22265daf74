"""The scheduler state's typed entry point (``handle``), worker messages as stimuli,
and the bounded stimulus log."""

from __future__ import annotations

import gc
import operator
import weakref

import pytest

from notebook_sched.distributed.protocol import pack
from notebook_sched.distributed.state import SchedulerState
from notebook_sched.distributed.stimuli import (
    LOG_SIZE,
    Acquired,
    RunAdded,
    TaskErred,
    TasksDone,
    WorkerJoined,
    WorkerPaused,
    from_worker,
    summary,
)
from notebook_sched.engine import run_spec
from notebook_sched.graph import compile_graph

from .test_distributed_state import Target


def test_a_run_driven_through_handle_alone():
    state = SchedulerState()
    state.handle(WorkerJoined(0, "w0", 1, "addr-0"))
    dsk = {"a": 1, "b": (operator.add, "a", 10), "c": (operator.mul, "b", 2)}
    graph = compile_graph(dsk, ["c"])
    target = Target()
    base = state.handle(RunAdded(7, graph, target, False))
    assert base == 0
    data: dict = {}
    for _ in range(5):
        state.dispatch()
        computes = [
            item
            for ops in state.take_outbox().values()
            for op, items in ops
            if op == "compute"
            for item in items
        ]
        done, values = [], {}
        for tid, spec, _deps, _prio, _remote, send_back in computes:
            data[tid] = run_spec(spec, data)
            done.append((tid, 8, 0.0, 0.001))
            if send_back:
                values[tid] = pack(data[tid])
        if done:
            state.handle(TasksDone(0, done, values))
        for t, kind, payload in state.take_notices():
            t.notify(kind, payload)
    assert target.data() == [22]
    kinds = [line.split("(")[0] for line in state.log]
    assert kinds[:3] == ["WorkerJoined", "RunAdded", "DataRequested"]  # add_run asks
    assert "TasksDone" in kinds


def test_public_methods_are_the_same_entries_and_are_logged():
    state = SchedulerState()
    state.add_worker(0, "w0", 1, "addr-0")
    state.handle(WorkerPaused(0, True))
    assert state.workers[0].paused
    state.set_paused(0, False)
    assert not state.workers[0].paused
    assert list(state.log) == [
        "WorkerJoined(wid=0, name='w0', nthreads=1, address='addr-0')",
        "WorkerPaused(wid=0, paused=True)",
        "WorkerPaused(wid=0, paused=False)",
    ]
    assert state.format_log(2).splitlines() == list(state.log)[-2:]
    assert SchedulerState().format_log() == "(no stimulus yet)"


def test_worker_messages_become_stimuli_and_nonsense_raises():
    assert from_worker(3, ("done", [(1, 8, 0.0, 1.0)], None)) == TasksDone(
        3, [(1, 8, 0.0, 1.0)], None
    )
    assert from_worker(3, ("error", 5, b"exc", "tb")) == TaskErred(3, 5, b"exc", "tb")
    assert from_worker(3, ("heartbeat",)) is None
    with pytest.raises(KeyError):
        from_worker(3, ("launch", 1))
    with pytest.raises(TypeError):
        from_worker(3, ("paused",))


def test_the_log_is_bounded_and_keeps_no_object_alive():
    class Watcher:
        def notify(self, kind, payload=None):
            pass

    state = SchedulerState()
    watcher = Watcher()
    alive = weakref.ref(watcher)
    state.handle(Acquired("nobody", watcher))  # unknown key: a notice, then nothing
    state.take_notices()
    del watcher
    gc.collect()
    assert alive() is None
    for n in range(LOG_SIZE + 50):
        state.set_paused(n, False)
    assert len(state.log) == LOG_SIZE
    assert state.log[-1] == f"WorkerPaused(wid={LOG_SIZE + 49}, paused=False)"


def test_a_summary_names_the_first_tasks_of_a_long_batch():
    batch = [(tid, 8, 0.0, 1.0) for tid in range(100)]
    text = summary(TasksDone(2, batch, {0: b"x" * 10_000}))
    assert text == "TasksDone(wid=2, items=[100: 0, 1, 2, 3, 4, 5, ...], values=[1: 0])"
