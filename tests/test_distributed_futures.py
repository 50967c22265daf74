"""The futures API of the local cluster: Client, Future, as_completed."""

from __future__ import annotations

import os
import sys
import threading
import time
import types

import numpy as np
import pytest

import notebook_sched as ns
from notebook_sched.distributed import CancelledError, Client, LocalCluster, as_completed
from notebook_sched.failure import RemoteTraceback
from notebook_sched.plan import Planner

from .helpers import wait_for


def inc(x):
    return x + 1


def add(x, y=0):
    return x + y


def boom(x):
    denominator = x - x
    return x / denominator


def slow(x, seconds=0.2):
    time.sleep(seconds)
    return x


def worker_name(*inputs):
    return os.environ["NOTEBOOK_SCHED_WORKER"]


def total(items, extra=None):
    return sum(items) + sum((extra or {}).values())


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with Client(cluster) as client:
        yield client


def test_submit_result_and_repr(client):
    future = client.submit(slow, 41, 0.2)
    assert "state=pending" in repr(future) and not future.done()
    assert future.result(timeout=10) == 41
    assert future.done() and future.status == "finished"
    assert "state=finished" in repr(future)
    assert client.submit(inc, 1, key="my-key").key == "my-key"


def test_futures_as_arguments_become_dependencies(client):
    a = client.submit(inc, 1)
    b = client.submit(add, a, y=a)  # positional and keyword
    c = client.submit(total, [a, b, 10], extra={"b": b})  # nested in lists and dicts
    assert b.result() == 4
    assert c.result() == 2 + 4 + 10 + 4


def test_same_key_is_computed_once(client):
    first = client.submit(inc, 1, key="shared")
    second = client.submit(inc, 100, key="shared")  # same key: same task, same result
    assert first.result() == second.result() == 2


def test_map_gather_and_shapes(client):
    futures = client.map(add, range(10), range(10))
    assert client.gather(futures) == [2 * i for i in range(10)]
    assert client.gather({"a": futures[1], "b": [futures[2], 7]}) == {"a": 2, "b": [4, 7]}


def test_errors_keep_their_type_remote_traceback_and_inputs(client):
    x = client.submit(inc, 2)
    bad = client.submit(boom, x, key="bad-key")
    error = bad.exception(timeout=10)
    assert isinstance(error, ZeroDivisionError)
    with pytest.raises(ZeroDivisionError) as info:
        bad.result()
    assert info.value is error
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "x / denominator" in info.value.__cause__.text
    assert "'bad-key'" in "\n".join(info.value.__notes__)
    assert "raised ZeroDivisionError" in repr(bad)
    failure = ns.last_failure()
    assert failure.key == "bad-key" and failure.backend == "distributed"
    assert failure.inputs == {x.key: 3}
    from notebook_sched.debug import rerun_task

    again = rerun_task(failure)  # the debugging layer reruns it here, with its inputs
    assert isinstance(again, ZeroDivisionError)
    dependent = client.submit(inc, bad)
    with pytest.raises(ZeroDivisionError):
        dependent.result(timeout=10)


def test_done_callbacks_and_as_completed(client):
    called = threading.Event()
    seen = []

    def callback(future):
        seen.append(future.key)
        called.set()

    quick = client.submit(slow, "quick", 0.01)
    quick.add_done_callback(callback)
    assert called.wait(10)
    assert seen == [quick.key]
    futures = [client.submit(slow, "slow", 0.6), client.submit(slow, "fast", 0.05)]
    assert [f.result() for f in as_completed(futures)] == ["fast", "slow"]
    pairs = list(as_completed(futures, with_results=True))
    assert sorted(value for _, value in pairs) == ["fast", "slow"]


def test_cancel_stops_a_running_task(client, cluster):
    future = client.submit(slow, 1, 30.0)
    wait_for(lambda: any(w.running for w in cluster.workers))
    future.cancel()
    wait_for(future.done)
    assert future.cancelled()
    with pytest.raises(CancelledError):
        future.result(timeout=5)
    wait_for(lambda: not any(w.running for w in cluster.workers), timeout=3)


def test_scatter_and_compute(client):
    data = client.scatter([np.arange(5), np.arange(3)])
    assert all(f.done() for f in data)
    assert client.submit(np.sum, data[0]).result() == 10
    named = client.scatter({"x": 5})
    assert client.submit(inc, named["x"]).result() == 6

    @ns.delayed
    def square(x):
        return x * x

    total_future = client.compute(ns.delayed(sum)([square(i) for i in range(5)]))
    assert total_future.result() == 30
    first, second = client.compute(square(3), square(4))
    assert (first.result(), second.result()) == (9, 16)


def test_compute_of_a_delayed_is_the_future_of_its_key(client):
    """A Delayed is one key's value: its future is that key, with no finalize task
    (the cluster layer recognises it by its postcompute, not by importing Delayed)."""
    d = ns.delayed(inc)(41)
    future = client.compute(d)
    assert future.key == d.key and future.result() == 42
    pair = ns.delayed(tuple)([d, d])
    other = client.compute(pair)
    assert other.key == pair.key and other.result() == (42, 42)


def test_results_stay_on_workers_and_are_freed_with_the_future(client, cluster):
    future = client.submit(np.ones, 1_000_000)  # 8 MB
    future.result()
    holder = client.who_has([future])[future.key]
    assert holder in {w.name for w in cluster.workers}
    held = {w.name: w.bytes_held for w in cluster.workers}
    assert held[holder] >= 8_000_000
    del future
    wait_for(lambda: all(w.bytes_held < 1_000_000 for w in cluster.workers))


def test_a_dependent_runs_where_its_large_input_is(client):
    big, small = client.scatter([np.ones(5_000_000), np.ones(10)])  # placed round-robin
    places = client.who_has([big, small])
    assert places[big.key] != places[small.key]
    for _ in range(3):
        assert client.submit(worker_name, big, small, key=None).result() == places[big.key]
        assert client.submit(worker_name, small, big).result() == places[big.key]


def test_get_contract_and_default_scheduler_use_the_current_client(client, cluster):
    dsk = {"a": 1, "b": (inc, "a"), "who": (worker_name, "b")}
    assert client.get(dsk, ["b", ["a"]]) == (2, (1,))
    names = {w.name for w in cluster.workers}
    assert ns.get(dsk, "who", scheduler="distributed") in names
    assert ns.get(dsk, "who", scheduler=client.get) in names


def test_restart_cancels_futures_and_replaces_workers(cluster):
    with Client(cluster) as client:
        before = set(cluster.pids)
        pending = client.submit(slow, 1, 30.0)
        client.restart()
        assert pending.cancelled()
        assert set(cluster.pids).isdisjoint(before)
        assert len(cluster.workers) == 2
        assert client.submit(inc, 1).result(timeout=10) == 2


def test_closed_client_refuses_work(cluster):
    client = Client(cluster)
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.submit(inc, 1)


def test_long_tasks_are_reported_as_started_while_they_run(client):
    from notebook_sched.events import Observer

    class Clock(Observer):
        def __init__(self):
            self.seen = {}

        def task_started(self, key, worker):
            self.seen["started"] = (time.monotonic(), worker)

        def task_finished(self, key, worker, start, stop):
            self.seen["finished"] = (time.monotonic(), worker)

    clock = Clock()
    assert client.get({"s": (slow, 1, 0.8)}, "s", observers=[clock]) == 1
    started, finished = clock.seen["started"], clock.seen["finished"]
    assert finished[0] - started[0] > 0.4  # seen running, not only when done
    assert started[1] == finished[1] and started[1].startswith("worker-")


def test_concurrent_gets_with_the_same_keys_do_not_mix(client):
    results = {}

    def run(n):
        dsk = {"x": n, "y": (slow, "x", 0.01), "z": (add, "y", "x")}
        results[n] = [client.get(dsk, "z") for _ in range(5)]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {n: [2 * n] * 5 for n in range(4)}


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("no pickling for this one")


def _echo(value):
    return value


def test_unpicklable_inputs_and_results_name_the_key_and_the_fix(client):
    from notebook_sched.errors import TaskPicklingError

    with pytest.raises(TaskPicklingError, match=r"Task 'holds' cannot be sent to a worker"):
        ns.get({"holds": (_echo, _Unpicklable())}, "holds", scheduler="distributed")
    with pytest.raises(TaskPicklingError, match=r"cannot be sent back from its worker process"):
        ns.get({"makes": (_Unpicklable,)}, "makes", scheduler="distributed")
    assert ns.get({"ok": (_echo, 2)}, "ok", scheduler="distributed") == 2  # nothing lost


class _KnownAbove(Planner):
    """Knows the result of ``key``; hears when the futures of a compute are done."""

    def __init__(self, key, value):
        self.key, self.value = key, value
        self.ended = threading.Event()
        self.told: list = []

    def plan(self, graph, keys):
        return {self.key: self.value}

    def finished(self, graph, error):
        self.told.append(error)
        self.ended.set()


def test_compute_goes_through_the_plan_stage(client, monkeypatch):
    x = ns.delayed(boom)(1)  # would fail: its result is known, so it never runs
    y = ns.delayed(inc)(x)
    planner = _KnownAbove(x.key, 10)
    assert client.compute(y, planners=[planner]).result(timeout=30) == 11
    assert planner.ended.wait(10) and planner.told == [None]

    # cache= reaches the plan hooks as api.get's does (a stand-in cache module here).
    requests: list = []
    x = ns.delayed(boom)(3)  # new keys: the cluster reuses the named tasks it still has
    cached = _KnownAbove(x.key, 20)
    module = types.ModuleType("notebook_sched.cache")
    module.plan_hook = lambda request: requests.append(request) or cached
    monkeypatch.setitem(sys.modules, "notebook_sched.cache", module)
    monkeypatch.setattr(ns, "cache", module, raising=False)
    assert client.compute(ns.delayed(inc)(x), cache="memory").result(timeout=30) == 21
    assert requests[0].options["cache"] == "memory" and requests[0].backend == "distributed"

    failing = _KnownAbove("nothing known", None)
    with pytest.raises(ZeroDivisionError):
        client.compute(ns.delayed(boom)(2), planners=[failing]).result(timeout=30)
    assert failing.ended.wait(10) and isinstance(failing.told[0], ZeroDivisionError)
