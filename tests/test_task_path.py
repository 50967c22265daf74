"""The one task path (``task_runner.py``) on every backend: what observers raise ends
the run as itself and names no task; result hooks run where the task ran, and one
that raises only warns; one sampling countdown; a task's BaseException is its own.

The ``dask`` backend's cases are in ``test_interop_dask_backend.py`` (its cluster).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial

import dask
import pytest
from dask.callbacks import Callback

import notebook_sched as ns
from notebook_sched.events import Observer
from notebook_sched.interop import dask_get
from notebook_sched.measure import CALLER, LONG_TASK, THREAD, Measurement
from notebook_sched.plan import Planner
from notebook_sched.schedulers.auto import router
from notebook_sched.task_runner import (
    SAMPLE_EVERY,
    Failed,
    TaskCancelled,
    TaskRunner,
    run_task,
)

pytestmark = pytest.mark.timeout(120)


def inc(x):
    return x + 1


def add(x, y):
    return x + y


class Boom(Exception):
    pass


_pools: dict = {}


def scheduler_for(name: str):
    return _pools.get(name, name)


@pytest.fixture(scope="module", autouse=True)
def _pools_started():
    """The executors, started (threads and process up) before any leak check."""
    _pools["thread-pool"] = ThreadPoolExecutor(2)
    _pools["process-pool"] = ProcessPoolExecutor(1)
    for pool in _pools.values():
        list(pool.map(inc, range(4)))
    yield
    for pool in _pools.values():
        pool.shutdown(wait=True)
    _pools.clear()


@pytest.fixture(autouse=True)
def _fresh_router():
    router().forget()
    yield
    router().forget()


BACKENDS = ["sync", "threads", "processes", "auto", "distributed", "thread-pool", "process-pool"]
GRAPH = {"a": (inc, 1), "b": (inc, "a"), "c": (add, "a", "b"), "d": (inc, 5)}


# -- observers' errors -----------------------------------------------------------------


class Raising(Observer):
    """Raises Boom in one hook, and, like Dask's callbacks, wants it to end the run."""

    propagates_errors = True

    def __init__(self, where: str):
        self.where = where
        self.failed: list = []

    def worker_started(self, worker):
        if self.where == "worker_started":
            raise Boom("observer failed in worker_started")

    def task_started(self, key, worker):
        if self.where == "task_started":
            raise Boom("observer failed in task_started")

    def task_finished(self, key, worker, start, stop):
        if self.where == "task_finished":
            raise Boom("observer failed in task_finished")

    def task_failed(self, key, worker, error):
        self.failed.append(key)


def _names_no_task(exc: BaseException) -> None:
    notes = getattr(exc, "__notes__", [])
    assert not any("task" in note for note in notes), notes


# worker_started fires only where tasks run on worker threads of ours.
NO_WORKER_THREAD = ("sync", "processes", "distributed", "process-pool")
OBSERVER_CASES = [
    (backend, where)
    for where in ("task_started", "task_finished", "worker_started")
    for backend in BACKENDS
    if not (where == "worker_started" and backend in NO_WORKER_THREAD)
]


@pytest.mark.parametrize(("backend", "where"), OBSERVER_CASES)
def test_an_observer_error_ends_the_run_as_itself_naming_no_task(backend, where, warm, no_leaks):
    before = ns.last_failure()
    observer = Raising(where)
    with pytest.raises(Boom) as info:
        ns.get(GRAPH, ["c", "d"], scheduler=scheduler_for(backend), observers=[observer])
    _names_no_task(info.value)
    assert observer.failed == []  # no task_failed: no task failed
    assert ns.last_failure() is before  # no failure record of an innocent task
    assert ns.get(GRAPH, "c", scheduler=scheduler_for(backend)) == 5  # and the next works


def explode(*args):
    raise Boom("callback failed")


@pytest.mark.parametrize("hook", ["pretask", "posttask"])
@pytest.mark.parametrize("backend", ["auto", "distributed", "thread-pool", "process-pool"])
def test_a_dask_callback_error_ends_the_run_on_every_backend(backend, hook, warm, no_leaks):
    # sync, threads and processes: test_interop_dask_compat.py's test of every hook.
    x = dask.delayed(add)(dask.delayed(inc)(1), 10)
    before = ns.last_failure()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "switched off" RuntimeWarning
        with Callback(**{hook: explode}), pytest.raises(Boom) as info:
            x.compute(scheduler=partial(dask_get, scheduler=scheduler_for(backend)))
    _names_no_task(info.value)
    assert ns.last_failure() is before
    assert x.compute(scheduler=partial(dask_get, scheduler=scheduler_for(backend))) == 12


def test_auto_with_a_raising_observer_on_its_process_side_ends(warm, no_leaks):
    router().observe("inc", 0.01, 0.01, 1.0, samples=8)  # inc holds the GIL: processes
    dsk = {("inc", i): (inc, i) for i in range(8)}
    with pytest.raises(Boom) as info:
        ns.get(
            dsk, list(dsk), scheduler="auto", num_workers=2, observers=[Raising("task_finished")]
        )
    _names_no_task(info.value)


# -- result hooks ------------------------------------------------------------------------


class Hooks(Planner):
    """Gives each of ``keys`` the result hook ``hook``."""

    def __init__(self, hook, keys):
        self.hook = hook
        self.keys = keys

    def plan(self, graph, keys):
        return None

    def prepare(self, graph):
        return {graph.index[k]: self.hook for k in self.keys if k in graph.index}

    def finished(self, graph, error):
        pass


def record_pid(path: str, value) -> None:
    """A result hook: append ``pid value`` to ``path`` (picklable by reference)."""
    with open(path, "a") as file:
        file.write(f"{os.getpid()} {value}\n")


def broken_hook(value) -> None:
    raise RuntimeError("a broken hook")


def _lines(path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    return [(int(pid), value) for pid, value in (line.split() for line in path.open())]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_result_hook_runs_once_per_task_where_the_task_ran(
    backend, tmp_path, request, warm, no_leaks
):
    path = tmp_path / "hooked"
    if backend == "auto":  # every prefix is known to hold the GIL: auto uses processes
        request.getfixturevalue("pool_running")  # (too little work to start the pool)
        for prefix in GRAPH:
            router().observe(prefix, 0.01, 0.01, 1.0, samples=8)
    hooks = Hooks(partial(record_pid, str(path)), ["a", "b", "c"])
    got = ns.get(GRAPH, ["c", "d"], scheduler=scheduler_for(backend), planners=[hooks])
    assert got == (5, 6)
    lines = _lines(path)
    assert sorted(value for _pid, value in lines) == ["2", "3", "5"]  # once each, no "d"
    pids = {pid for pid, _value in lines}
    if backend in ("processes", "auto", "distributed", "process-pool"):
        assert os.getpid() not in pids, pids  # in the worker process, not the caller
    else:
        assert pids == {os.getpid()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_raising_result_hook_only_warns_naming_the_key(backend, capfd, warm, no_leaks):
    hooks = Hooks(broken_hook, ["a"])
    in_worker = backend in ("processes", "distributed", "process-pool")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ns.get(GRAPH, ["c", "d"], scheduler=scheduler_for(backend), planners=[hooks])
    assert got == (5, 6)  # the task and the run go on
    if not in_worker:
        (warning,) = [w for w in caught if issubclass(w.category, RuntimeWarning)]
        assert "'a'" in str(warning.message) and "a broken hook" in str(warning.message)


# -- the runner on its own -----------------------------------------------------------


def test_the_runner_catches_every_base_exception_into_failed():
    for exc in (ValueError("v"), SystemExit(3), KeyboardInterrupt(), TaskCancelled()):

        def raise_it(exc=exc):
            raise exc

        out = run_task((0, raise_it, (), ()), [])  # graph.CALL == 0
        assert type(out) is Failed and out.exc is exc
        runner = TaskRunner(THREAD, measure=True, timed=True)
        out = runner.run_timed(0, (0, raise_it, (), ()), [])
        assert type(out) is Failed and out.exc is exc and runner.record is None


def test_one_countdown_samples_every_long_task_and_one_in_every_short():
    import time

    runner = TaskRunner(CALLER, measure=True)
    records = []
    for n in range(3 * SAMPLE_EVERY):
        runner.run_timed(n, (0, inc, (n,), ()), [])
        if runner.record is not None:
            records.append(runner.record)
    assert len(records) == 3  # the first, then one in SAMPLE_EVERY
    assert all(type(r) is Measurement and r.where == CALLER and r.cpu >= 0 for r in records)
    assert [r.key for r in records] == [0, SAMPLE_EVERY + 1, 2 * SAMPLE_EVERY + 2]
    slow = (0, time.sleep, (2 * LONG_TASK,), ())
    runner.run_timed(-1, slow, [])  # not due: not measured, but it was long...
    for n in range(3):  # ...which only a measured task tells: sample until one is
        runner.run_timed(n, slow, [])
    assert runner.record is not None and runner.skip == 0  # a long one: measure the next


def test_a_hook_that_raises_warns_and_the_value_stands():
    runner = TaskRunner(CALLER, hooks={0: broken_hook}, keys=["the-key"])
    with pytest.warns(RuntimeWarning, match="'the-key'.*a broken hook"):
        assert runner.run(0, (0, inc, (1,), ()), []) == 2
