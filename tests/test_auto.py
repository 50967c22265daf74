"""The ``auto`` scheduler: GIL-holding prefixes to processes, the rest on threads, in
one graph, with every contract the other backends keep (the conformance suite runs it
too: tests/test_conformance.py).
"""

from __future__ import annotations

import operator
import os
import signal
import threading
import time
import traceback

import numpy as np
import pytest

import notebook_sched as ns
from notebook_sched.diagnostics.profiler import Profiler
from notebook_sched.failure import RemoteTraceback
from notebook_sched.schedulers import _pool
from notebook_sched.schedulers.auto import router

from .helpers import LONG_CHAIN
from .workloads import fetch, parse, progress, python_loop

# The pool runs (as after any processes compute): these graphs are too small to start
# it (Router.worth_starting); the tests at the end start from no pool.
pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("pool_running", "no_leaks")]


@pytest.fixture(autouse=True)
def fresh_router():
    router().forget()
    yield
    router().forget()


MATRIX = np.random.default_rng(2).random((400, 400))


def matmul(i):
    """BLAS: releases the GIL."""
    for _ in range(3):
        MATRIX @ MATRIX
    return i


def failing_parse(i):
    parse(i)
    if i == 9:
        denominator = i - i
        return i / denominator
    return i


def mixed(n=12):
    dsk = {("parse", i): (parse, i) for i in range(n)}
    dsk.update({("matmul", i): (matmul, i) for i in range(n)})
    dsk.update({("fetch", i): (fetch, i) for i in range(n)})
    dsk["total"] = (sum, [k for k in dsk if k[0] != "parse"])
    dsk["parsed"] = (sum, [("parse", i) for i in range(n)])
    return dsk


def workers_by_prefix(profiler: Profiler) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for record in sorted(profiler.records, key=lambda r: r.start):
        key = record.key
        out.setdefault(key[0] if isinstance(key, tuple) else key, []).append(record.worker)
    return out


def test_mixed_graph_routes_by_prefix_within_one_run():
    dsk = mixed()
    expected = ns.get(dsk, ["total", "parsed"], scheduler="sync")
    with Profiler() as profiler:
        assert ns.get(dsk, ["total", "parsed"], scheduler="auto", num_workers=2) == expected
    where = workers_by_prefix(profiler)
    # parse starts on threads (measured), then moves to processes in the same run.
    assert where["parse"][0].startswith("thread-")
    assert any(w.startswith("process-") for w in where["parse"]), where["parse"]
    assert where["parse"][-1].startswith("process-")
    assert all(w.startswith("thread-") for w in where["matmul"]), where["matmul"]
    assert all(w.startswith("thread-") for w in where["fetch"]), where["fetch"]
    reasons = router().reasons
    assert "processes" in reasons["parse"] and "holds the GIL" in reasons["parse"]
    assert reasons["matmul"].endswith("threads")
    # The next run knows: parse goes straight to processes.
    with Profiler() as again:
        ns.get(dsk, "parsed", scheduler="auto", num_workers=2)
    assert all(w.startswith("process-") for w in workers_by_prefix(again)["parse"])


def test_at_most_num_workers_tasks_at_once():
    dsk = mixed(8)
    with Profiler() as profiler:
        ns.get(dsk, ["total", "parsed"], scheduler="auto", num_workers=2)
    edges = sorted(
        [(r.start, 1) for r in profiler.records] + [(r.stop, -1) for r in profiler.records]
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    # Process tasks' times come from the workers' clocks: allow one of overlap slack.
    assert peak <= 3, f"{peak} tasks overlapped with num_workers=2"


def test_a_large_input_keeps_pure_python_on_threads():
    big = np.zeros(40_000_000, dtype=np.uint8)  # 40 MB: moving it costs more than a task

    def scan(data, i):
        return parse(i) + int(data[i])

    dsk = {"big": (np.copy, big)}
    dsk.update({("scan", i): (scan, "big", i) for i in range(8)})
    dsk["total"] = (sum, [("scan", i) for i in range(8)])
    with Profiler() as profiler:
        assert ns.get(dsk, "total", scheduler="auto", num_workers=2) == sum(
            parse(i) for i in range(8)
        )
    assert all(w.startswith("thread-") for w in workers_by_prefix(profiler)["scan"])
    assert "costs more" in router().reasons["scan"]


def test_a_failure_in_a_process_task_is_its_own_type_with_the_remote_traceback():
    dsk = {("failing_parse", i): (failing_parse, i) for i in range(12)}
    with pytest.raises(ZeroDivisionError) as info:
        ns.get(dsk, list(dsk), scheduler="auto", num_workers=2, rerun="never")
    failure = ns.last_failure()
    assert failure.key == ("failing_parse", 9)
    if failure.worker.startswith("process-"):
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "x / denominator" in info.value.__cause__.text or "denominator" in str(
            info.value.__cause__.text
        )
    assert ns.get({"a": (operator.add, 1, 2)}, "a", scheduler="auto") == 3


def test_a_failure_in_a_thread_task_keeps_live_frames():
    def boom(x):
        denominator = x - x
        return x / denominator

    with pytest.raises(ZeroDivisionError) as info:
        ns.get({"x": 3, "bad": (boom, "x")}, "bad", scheduler="auto")
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "boom"
    assert "'auto'" in "\n".join(info.value.__notes__)


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_base_exceptions_in_tasks_end_the_compute(error):
    def raiser():
        raise error

    with pytest.raises(type(error)):
        ns.get({"a": (raiser,), "b": (fetch, 1)}, ["a", "b"], scheduler="auto")
    assert ns.get({"a": (operator.add, 1, 2)}, "a", scheduler="auto") == 3


def test_interrupt_returns_within_half_a_second_and_the_next_compute_works():
    ns.get({"warm": (parse, 1)}, "warm", scheduler="processes", num_workers=2)
    progress.clear()
    dsk = {("python_loop", i): (python_loop, i) for i in range(6)}
    dsk.update({("parse", i): (parse, i, 3_000_000) for i in range(6)})
    timer = threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ns.get(dsk, list(dsk), scheduler="auto", num_workers=2)
    elapsed = time.monotonic() - start - 0.8
    timer.join()
    assert elapsed < 0.5, f"control came back {elapsed:.2f} s after the interrupt"
    time.sleep(0.3)
    seen = len(progress)
    time.sleep(0.4)
    assert len(progress) == seen, "thread tasks kept computing after the interrupt"
    assert ns.get({"a": (operator.add, 1, 2)}, "a", scheduler="auto") == 3
    assert _pool._pool is not None


def nested_auto(i):
    return ns.get({"a": i, "b": (parse, "a")}, "b", scheduler="auto")


def test_nested_auto_computes_do_not_wait_on_the_pool():
    router().observe("parse", 0.01, 0.01, 1.0, samples=4)  # parse is known to hold the GIL
    dsk = {("nested_auto", i): (nested_auto, i) for i in range(4)}
    assert ns.get(dsk, list(dsk), scheduler="auto", num_workers=2) == tuple(
        parse(i) for i in range(4)
    )


def test_empty_and_literal_graphs():
    assert ns.get({"a": 1}, [], scheduler="auto") == ()
    assert ns.get({"a": 1, "b": "a"}, ["a", "b"], scheduler="auto") == (1, 1)


@pytest.mark.timeout(300)
def test_long_task_chain():
    n = LONG_CHAIN
    dsk = {"x0": 0}
    dsk.update({f"x{i + 1}": (operator.add, f"x{i}", 1) for i in range(n)})
    assert ns.get(dsk, f"x{n}", scheduler="auto") == n


def test_pool_is_refused_for_auto():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="takes no pool"):
        ns.get({"a": 1}, "a", scheduler="auto", pool=pool)


def test_events_every_task_once_and_progress():
    from notebook_sched.events import Observer

    class Count(Observer):
        def __init__(self):
            self.started, self.finished, self.done = [], [], []

        def task_started(self, key, worker):
            self.started.append(key)

        def task_finished(self, key, worker, start, stop):
            self.finished.append(key)

        def task_done(self, key):
            self.done.append(key)

    dsk = mixed(6)
    count = Count()
    ns.get(dsk, ["total", "parsed"], scheduler="auto", num_workers=2, observers=[count])
    tasks = set(dsk)
    assert sorted(map(str, count.done)) == sorted(map(str, tasks))
    assert sorted(map(str, count.finished)) == sorted(map(str, tasks))
    assert set(count.started) == tasks


def stop_myself(i):
    os.kill(os.getpid(), signal.SIGSTOP)
    return i


def test_a_stopped_worker_process_fails_the_run_within_worker_timeout():
    from notebook_sched.schedulers.processes import WorkerHungError

    router().observe("stop_myself", 0.05, 0.05, 1.0, samples=8)  # known to hold the GIL
    dsk = {("stop_myself", i): (stop_myself, i) for i in range(2)}
    start = time.monotonic()
    with pytest.raises(WorkerHungError, match="worker_timeout=1"):
        ns.get(dsk, list(dsk), scheduler="auto", num_workers=2, worker_timeout=1.0)
    assert time.monotonic() - start < 5
    assert ns.last_failure().key[0] == "stop_myself"
    assert ns.get({"a": (operator.add, 1, 2)}, "a", scheduler="auto") == 3


def test_routing_prefix_groups_hand_numbered_keys():
    from notebook_sched.schedulers.auto_routing import routing_prefix

    assert routing_prefix("w0") == routing_prefix("w17") == "w"
    assert routing_prefix("load_3") == routing_prefix(("load_4", 0)) == "load"
    assert routing_prefix("load-3") == routing_prefix("load-ab12cd34ef") == "load"
    assert routing_prefix(17) == routing_prefix("18") == "#"
    assert routing_prefix("conv2d") == "conv2d"  # only trailing digits go


class _Overlap:
    """Counts how many tasks run at once (counted, not timed)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = self.most = 0

    def __call__(self, i):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.05)
        with self.lock:
            self.now -= 1
        return i


@pytest.mark.timeout(60)
def test_hand_numbered_keys_run_side_by_side_not_one_at_a_time(no_leaks):
    """Keys w0..w15 were sixteen new prefixes, each measured alone: the run went one
    task at a time. Grouped as one kind, all but the first run side by side."""
    overlap = _Overlap()
    dsk = {f"w{i}": (overlap, i) for i in range(16)}
    assert ns.get(dsk, list(dsk), scheduler="auto", num_workers=4) == tuple(range(16))
    assert overlap.most >= 3, f"at most {overlap.most} task(s) ran at once"


def test_a_few_gil_holding_tasks_do_not_start_the_pool():
    """12 tasks of ~12 ms free far less GIL time than starting 2 worker processes (and
    their imports: ~140 MB each once pandas is in): they stay on threads, no process
    starts, and the reason says why."""
    _pool.shutdown()
    dsk = {("parse", i): (parse, i) for i in range(12)}
    with Profiler() as profiler:
        assert ns.get(dsk, list(dsk), scheduler="auto", num_workers=2) == tuple(
            parse(i) for i in range(12)
        )
    assert all(w.startswith("thread-") for w in workers_by_prefix(profiler)["parse"])
    assert not _pool.running(2)
    assert "less than starting 2 worker processes" in router().reasons["parse"]


def test_enough_gil_holding_work_starts_the_pool_from_none():
    """40 tasks of ~60 ms: seconds of GIL time, worth starting the workers for."""
    _pool.shutdown()
    dsk = {("parse", i): (parse, i, 1_500_000) for i in range(40)}
    with Profiler() as profiler:
        assert ns.get(dsk, list(dsk), scheduler="auto", num_workers=2) == tuple(
            parse(i, 1_500_000) for i in range(40)
        )
    where = workers_by_prefix(profiler)["parse"]
    assert where[0].startswith("thread-") and where[-1].startswith("process-"), where
    assert _pool.running(2)
    assert router().reasons["parse"].endswith("processes")
