"""One conformance suite, every backend: same graphs, same answers, same failures.

Each scheduler in BACKENDS runs Dask's own ``GetFunctionTestMixin`` and the cases
below.  Executors passed as ``scheduler=`` (a thread pool, a process pool, loky) run
the same suite.
"""

from __future__ import annotations

import operator
import random
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial

import dask.local
import numpy as np
import pytest
from dask.utils_test import GetFunctionTestMixin

import notebook_sched as ns
from notebook_sched.events import Observer
from notebook_sched.failure import RemoteTraceback

from .conftest import leak_check

BACKENDS = ["sync", "threads", "processes", "auto", "distributed"]
EXECUTORS = ["thread-pool", "process-pool", "loky"]

_executors: dict = {}


def scheduler_for(name: str):
    """A scheduler value: a backend name, or a shared executor created on first use."""
    if name in BACKENDS:
        return name
    if name not in _executors:
        if name == "thread-pool":
            _executors[name] = ThreadPoolExecutor(2)
        elif name == "process-pool":
            _executors[name] = ProcessPoolExecutor(2)
        else:
            import loky

            _executors[name] = loky.get_reusable_executor(max_workers=2)
    return _executors[name]


@pytest.fixture(scope="module", autouse=True)
def _close_executors():
    yield
    for executor in _executors.values():
        executor.shutdown(wait=True)
    _executors.clear()


ALL = BACKENDS + EXECUTORS


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def boom(x):
    denominator = x - x
    return x / denominator


def nested_get(n):
    """A task that itself computes a graph on the default scheduler."""
    return ns.get({"a": n, "b": (inc, "a")}, "b")


def nested_get_on(n, scheduler):
    return ns.get({"a": n, "b": (inc, "a")}, "b", scheduler=scheduler)


# Dask's own conformance tests, once per backend.
for _name in BACKENDS:
    globals()[f"TestDaskGetContract_{_name}"] = type(
        f"TestDaskGetContract_{_name}",
        (GetFunctionTestMixin,),
        {"get": staticmethod(partial(ns.get, scheduler=_name))},
    )


@pytest.fixture(params=ALL)
def scheduler(request):
    value = scheduler_for(request.param)  # shared executors live for the module
    if request.param in EXECUTORS:
        # start all their workers before the leak baseline
        for future in [value.submit(time.sleep, 0.2) for _ in range(2)]:
            future.result()
    with leak_check():
        yield value


def test_nested_tasks_lists_and_aliases(scheduler):
    dsk = {
        "a": 1,
        "b": (inc, "a"),
        "c": "b",  # alias
        "d": "c",  # alias of an alias
        "e": (sum, ["a", "b", (inc, "c"), [1, 2][0]]),
        "f": [(inc, "a"), ["b", "d"]],
        ("x", 0): (add, "a", 10),
        ("x", 1): (add, ("x", 0), "e"),
    }
    got = ns.get(dsk, ["c", "d", "e", "f", ("x", 1)], scheduler=scheduler)
    assert got == (2, 2, 7, [2, [2, 2]], 18)


def test_literals_stay_literal(scheduler):
    dsk = {
        "k": 5,
        "dict": (lambda d: sorted(d.items()), {"a": "k", "b": 2}),  # dicts are data
        "set": (len, {1, 2, 3}),  # unhashable data
        "array": (np.sum, np.arange(4)),
        "string": (add, "not-a-key", "!"),
        "tuple": (lambda t: t, (1, "k")),  # keys inside tuple arguments are read (Dask 2026)
        "bytes": (lambda b: b, b"k"),  # bytes never name a key (Dask's rule)
    }
    names = ["dict", "set", "array", "string", "tuple", "bytes"]
    got = ns.get(dsk, names, scheduler=scheduler)
    assert got == ([("a", "k"), ("b", 2)], 3, 6, "not-a-key!", (1, 5), b"k")


class FakeGraphNode:
    """Duck-typed like Dask's GraphNode: ``dependencies`` and ``__call__(values)``."""

    def __init__(self, func, *deps):
        self.func = func
        self.dependencies = frozenset(deps)
        self.order = deps

    def __call__(self, values):
        return self.func(*[values[d] for d in self.order])


def test_duck_typed_graph_nodes(scheduler):
    dsk = {"a": 2, "b": FakeGraphNode(inc, "a"), "c": FakeGraphNode(add, "a", "b"), "d": (inc, "c")}
    assert ns.get(dsk, "d", scheduler=scheduler) == 6


def test_dask_array_graph(scheduler):
    da = pytest.importorskip("dask.array")
    x = da.arange(100, chunks=10)
    y = (x * 2 + 1).sum()
    graph = y.__dask_graph__()
    keys = y.__dask_keys__()
    expected = dask.local.get_sync(dict(graph), keys)
    assert ns.get(graph, keys, scheduler=scheduler) == expected
    assert ns.get(y, keys, scheduler=scheduler) == expected


def random_dag(seed: int, size: int = 300):
    rng = random.Random(seed)
    dsk = {}
    for i in range(size):
        if i < 10 or rng.random() < 0.1:
            dsk[f"t{i}"] = rng.randint(0, 100)
            continue
        deps = rng.sample(range(i), k=min(i, rng.randint(1, 3)))
        args = [f"t{d}" for d in deps]
        if rng.random() < 0.2:
            dsk[f"t{i}"] = (sum, args)
        elif len(args) >= 2:
            dsk[f"t{i}"] = (add, args[0], (operator.mul, args[1], 2))
        else:
            dsk[f"t{i}"] = (inc, args[0])
    return dsk


@pytest.mark.parametrize("seed", [1, 2])
def test_random_graphs_match_dask(scheduler, seed):
    dsk = random_dag(seed)
    keys = [f"t{i}" for i in range(0, 300, 7)]
    assert ns.get(dsk, keys, scheduler=scheduler) == dask.local.get_sync(dsk, keys)


def test_culling_runs_only_what_is_needed(scheduler):
    dsk = {"a": 1, "b": (inc, "a"), "never": (boom, "a")}
    assert ns.get(dsk, "b", scheduler=scheduler) == 2


def test_task_exception_keeps_its_type_and_names_the_key(scheduler):
    dsk = {"x": 3, "y": (inc, "x"), "bad": (boom, "y"), "z": (inc, "bad")}
    with pytest.raises(ZeroDivisionError) as info:
        ns.get(dsk, "z", scheduler=scheduler)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "'bad'" in notes
    failure = ns.last_failure()
    assert failure.key == "bad"
    assert failure.inputs == {"y": 4}
    assert failure.exception is info.value


@pytest.mark.parametrize("name", ["sync", "threads"])
def test_local_backends_keep_live_task_frames(name):
    with pytest.raises(ZeroDivisionError) as info:
        ns.get({"x": 3, "bad": (boom, "x")}, "bad", scheduler=name)
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "boom"
    tb = info.value.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_locals["x"] == 3
    assert tb.tb_frame.f_locals["denominator"] == 0


def test_processes_carry_the_remote_traceback():
    with pytest.raises(ZeroDivisionError) as info:
        ns.get({"x": 3, "bad": (boom, "x")}, "bad", scheduler="processes")
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in boom" in cause.text and "x / denominator" in cause.text
    assert "'processes'" in "\n".join(info.value.__notes__)


def test_nested_compute_does_not_deadlock(scheduler):
    dsk = {f"n{i}": (nested_get, i) for i in range(6)}
    dsk["total"] = (sum, [f"n{i}" for i in range(6)])
    with ns.config.set(scheduler=scheduler if isinstance(scheduler, str) else "threads"):
        assert ns.get(dsk, "total", scheduler=scheduler) == sum(range(1, 7))


@pytest.mark.parametrize("name", BACKENDS)
def test_nested_compute_on_same_backend(name, no_leaks):
    dsk = {f"n{i}": (nested_get_on, i, name) for i in range(4)}
    assert ns.get(dsk, [f"n{i}" for i in range(4)], scheduler=name) == (1, 2, 3, 4)


class Recorder(Observer):
    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.events = []

    def _add(self, *event):
        with self.lock:
            self.events.append(event)

    def graph_started(self, run):
        self._add("graph_started", run.tasks)

    def task_started(self, key, worker):
        self._add("started", key, worker)

    def task_finished(self, key, worker, start, stop):
        assert stop >= start
        self._add("finished", key, worker)

    def task_failed(self, key, worker, error):
        self._add("failed", key, worker, type(error).__name__)

    def graph_finished(self, run, error):
        self._add("graph_finished", None if error is None else type(error).__name__)


def test_every_backend_emits_the_same_events(scheduler):
    dsk = {f"leaf{i}": (inc, i) for i in range(20)}
    dsk["total"] = (sum, [f"leaf{i}" for i in range(20)])
    recorder = Recorder()
    assert ns.get(dsk, "total", scheduler=scheduler, observers=[recorder]) == sum(range(1, 21))
    events = recorder.events
    assert events[0] == ("graph_started", 21)
    assert events[-1] == ("graph_finished", None)
    started = [e[1] for e in events if e[0] == "started"]
    finished = [e[1] for e in events if e[0] == "finished"]
    assert sorted(started) == sorted(finished) == sorted(dsk)
    for key in dsk:  # each task starts before it finishes
        assert events.index(("started", key, _worker(events, key))) < events.index(
            ("finished", key, _worker(events, key))
        )


def _worker(events, key):
    return next(e[2] for e in events if e[0] == "started" and e[1] == key)


def test_failure_events(scheduler):
    recorder = Recorder()
    with pytest.raises(ZeroDivisionError):
        ns.get({"x": 1, "bad": (boom, "x")}, "bad", scheduler=scheduler, observers=[recorder])
    kinds = [e[0] for e in recorder.events]
    assert "failed" in kinds
    failed = next(e for e in recorder.events if e[0] == "failed")
    assert failed[1] == "bad" and failed[3] == "ZeroDivisionError"
    assert recorder.events[-1] == ("graph_finished", "ZeroDivisionError")


def test_global_and_scoped_observers(scheduler):
    recorder = Recorder()
    with recorder:
        ns.get({"a": (inc, 1)}, "a", scheduler=scheduler)
    ns.get({"a": (inc, 1)}, "a", scheduler=scheduler)  # after the block: not recorded
    assert [e[0] for e in recorder.events].count("graph_started") == 1


def test_delayed_on_every_backend(scheduler):
    @ns.delayed
    def square(x):
        return x * x

    parts = [square(i) for i in range(10)]
    total = ns.delayed(sum)(parts)
    assert total.compute(scheduler=scheduler) == 285
    assert ns.compute(total, parts[3], "plain", scheduler=scheduler) == (285, 9, "plain")
