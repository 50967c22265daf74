"""``scheduler="dask"``: our graphs on a real dask.distributed cluster, with our events.

One ``distributed.LocalCluster`` (``dask_cluster`` in conftest.py) serves the module;
it is made before any leak-check baseline.  Its client is *not* the default, so each
test picks the cluster explicitly: ``client.as_current()`` or ``dask_address``.
"""

from __future__ import annotations

import threading
import time

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import pytest
from distributed import Client

import notebook_sched as ns
from notebook_sched.debug import rerun_task
from notebook_sched.diagnostics.profiler import Profiler
from notebook_sched.events import Observer
from notebook_sched.failure import RerunOutcome
from notebook_sched.interop import dask_backend
from notebook_sched.plan import Planner

from .conftest import leak_check
from .workloads import parse

pytestmark = [
    pytest.mark.timeout(120),
    # dashboard_address=None still serves the scheduler's HTTP routes (on loopback);
    # another cluster on this machine may hold the default port.
    pytest.mark.filterwarnings("ignore:Port 8787 is already in use"),
]


@pytest.fixture(scope="module")
def client(dask_cluster):
    with Client(dask_cluster, set_as_default=False) as client:
        client.wait_for_workers(2)
        with client.as_current():  # starts the client's lazy helper threads before baselines
            assert ns.get({"a": np.ones(3), "b": (np.sum, "a")}, "b", scheduler="dask") == 3
        yield client


@pytest.fixture
def on_cluster(client):
    """The cluster's client is current; a leak check around the test; configs restored."""
    saved = ns.config.snapshot()
    with client.as_current(), leak_check():
        yield client
    ns.config.set(**saved)


class Recorder(Observer):
    """Every event, in arrival order (they arrive on the calling thread)."""

    def __init__(self):
        self.events: list[tuple] = []
        self.threads: set = set()

    def graph_started(self, run):
        self.events.append(("graph_started", run.scheduler, run.tasks))

    def task_started(self, key, worker):
        self.threads.add(threading.get_ident())
        self.events.append(("started", key, worker))

    def task_finished(self, key, worker, start, stop):
        self.events.append(("finished", key, worker, start, stop))

    def task_failed(self, key, worker, error):
        self.events.append(("failed", key, worker, type(error).__name__))

    def graph_finished(self, run, error):
        self.events.append(("graph_finished", None if error is None else type(error).__name__))

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def scale_rows(rows, factor):
    kept = [r for r in rows if r]
    return len(kept) / factor


def graph():
    return {
        "a": 1,
        "b": (inc, "a"),
        "c": "b",  # alias
        "d": (sum, ["a", "b", (inc, "c")]),  # nested task in a list
        ("x", 0): (add, "a", 10),
        ("x", 1): (add, ("x", 0), "d"),
        "data": (sorted, {3, 1, 2}),  # literals, also ones Dask would walk, stay data
        "table": (dict.get, {"a": "b"}, "a"),
    }


def test_results_match_sync(on_cluster):
    keys = ["c", "d", [("x", 1)], "b", "data", "table"]
    assert ns.get(graph(), keys, scheduler="dask") == ns.get(graph(), keys, scheduler="sync")


def test_same_key_names_in_later_and_concurrent_runs_stay_apart(on_cluster):
    assert ns.get({"x": 1, "y": (inc, "x")}, "y", scheduler="dask") == 2
    assert ns.get({"x": 5, "y": (inc, "x")}, "y", scheduler="dask") == 6
    results = {}

    def run(n):
        with on_cluster.as_current():
            results[n] = ns.get({"x": n, "y": (inc, "x")}, "y", scheduler="dask")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: n + 1 for n in range(4)}


def test_events_carry_worker_addresses_and_times(on_cluster, dask_cluster):
    recorder = Recorder()
    before = time.time()
    ns.get(graph(), [("x", 1), "c"], scheduler="dask", observers=[recorder])
    after = time.time()
    tasks = {"b", "d", ("x", 0), ("x", 1)}  # "a" (a literal) and "c" (an alias) are not
    assert recorder.events[0] == ("graph_started", "dask", len(tasks))
    assert recorder.events[-1] == ("graph_finished", None)
    started, finished = recorder.of("started"), recorder.of("finished")
    assert {e[1] for e in started} == {e[1] for e in finished} == tasks
    workers = set(dask_cluster.scheduler_info["workers"])
    assert {e[2] for e in finished} <= workers
    position = {(e[0], e[1]): n for n, e in enumerate(recorder.events)}
    for _, key, _, start, stop in finished:
        assert before <= start <= stop <= after
        assert position["started", key] < position["finished", key]
    assert recorder.threads == {threading.get_ident()}  # hooks run on the calling thread


def test_profiler_and_task_done_counts(on_cluster):
    dsk = {f"load-{i}": (inc, i) for i in range(20)}
    dsk["total"] = (sum, [f"load-{i}" for i in range(20)])
    with Profiler() as prof:
        assert ns.get(dsk, "total", scheduler="dask") == sum(range(1, 21))
    assert len(prof.records) == 21
    assert {r.worker for r in prof.records} <= set(on_cluster.nthreads())
    assert [row.prefix for row in prof.summary().rows] and prof.summary().rows[0].count


def test_failure_records_inputs_from_the_cluster_and_reruns_in_the_task_frame(on_cluster):
    dsk = {"rows": [1, 0, 3], "factor": 0, "scale-7": (scale_rows, "rows", "factor")}
    dsk["after"] = (inc, "scale-7")
    recorder = Recorder()
    with pytest.raises(ZeroDivisionError) as info:
        ns.get(dsk, "after", scheduler="dask", observers=[recorder], rerun="always")
    failure = ns.last_failure()
    assert failure.backend == "dask" and failure.key == "scale-7"
    assert failure.inputs == {"rows": [1, 0, 3], "factor": 0}
    assert failure.worker in on_cluster.nthreads()
    assert "in scale_rows" in failure.remote_traceback
    assert "_remote.py" not in failure.remote_traceback  # our wrapper's frames left out
    assert failure.extra["rerun"] is RerunOutcome.SAME_ERROR
    tb = info.value.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_name == "scale_rows"  # where %debug lands
    assert tb.tb_frame.f_locals["kept"] == [1, 3]
    assert any("failed on the 'dask' scheduler" in n for n in info.value.__notes__)
    assert recorder.of("failed") == [("failed", "scale-7", failure.worker, "ZeroDivisionError")]
    assert recorder.events[-1] == ("graph_finished", "ZeroDivisionError")
    assert isinstance(rerun_task(failure), ZeroDivisionError)
    # The cluster keeps nothing of ours once the run is over, failed or not.
    assert ns.get({"x": 1, "y": (inc, "x")}, "y", scheduler="dask") == 2
    assert wait_until(lambda: not on_cluster.run_on_scheduler(task_count))


def task_count(dask_scheduler=None):
    return len(dask_scheduler.tasks)


def wait_until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_without_a_rerun_the_workers_traceback_is_the_cause(on_cluster):
    with pytest.raises(ZeroDivisionError) as info:
        ns.get({"a": 0, "b": (scale_rows, [1], "a")}, "b", scheduler="dask", rerun="never")
    assert "in scale_rows" in str(info.value.__cause__)
    assert ns.last_failure().inputs == {"a": 0}


def test_intermediate_results_are_released_while_the_graph_runs(on_cluster):
    def slow_chunk(i):
        time.sleep(0.05)
        return np.full(1000, i, dtype=float)

    dsk = {f"chunk-{i}": (slow_chunk, i) for i in range(8)}
    dsk.update({f"sum-{i}": (np.sum, f"chunk-{i}") for i in range(8)})
    dsk["total"] = (sum, [f"sum-{i}" for i in range(8)])
    peak = []

    class Watch(Observer):
        def task_finished(self, key, worker, start, stop):
            if key == "sum-7":
                peak.append(on_cluster.run_on_scheduler(held_chunks))

    assert ns.get(dsk, "total", scheduler="dask", observers=[Watch()]) == 1000 * sum(range(8))
    assert peak and peak[0] < 8  # chunks already summed were let go


def held_chunks(dask_scheduler=None):
    return sum(
        1 for ts in dask_scheduler.tasks.values() if ts.state == "memory" and "chunk" in ts.key[0]
    )


def test_dask_collections_run_there_through_our_config(on_cluster):
    x = da.random.RandomState(0).random((200, 200), chunks=(50, 50))
    bag = db.from_sequence(range(30), npartitions=4).map(inc).sum()
    want = dask.compute((x + x.T).mean(axis=0).sum(), x @ x.T, bag, scheduler="sync")
    recorder = Recorder()
    with recorder, ns.config.set(scheduler="dask"):
        got = dask.compute((x + x.T).mean(axis=0).sum(), x @ x.T, bag)
    assert got[0] == want[0] and np.allclose(got[1], want[1]) and got[2] == want[2]
    assert recorder.events[0][:2] == ("graph_started", "dask")


def test_address_setting_connects_its_own_client(dask_cluster, client):
    saved = ns.config.snapshot()
    try:
        with ns.config.set(scheduler="dask", dask_address=dask_cluster.scheduler_address):
            assert ns.get(graph(), "d") == 6
            first = dask_backend.current_client()
            assert first is not client and first.scheduler.address == dask_cluster.scheduler_address
            assert ns.get(graph(), "d") == 6
            assert dask_backend.current_client() is first  # one client per address, reused
    finally:
        ns.config.set(**saved)


def test_no_cluster_is_an_error_that_names_the_fixes(client):
    with pytest.raises(RuntimeError, match="no distributed.Client is active") as info:
        ns.get({"a": 1}, "a", scheduler="dask")
    assert "dask_address=" in str(info.value) and "--address" in str(info.value)


def test_unreachable_address_names_it(client, monkeypatch):
    monkeypatch.setattr(dask_backend, "CONNECT_TIMEOUT", "1s")
    with ns.config.set(dask_address="tcp://127.0.0.1:1"), pytest.raises(OSError) as info:
        ns.get({"a": 1}, "a", scheduler="dask")
    assert "tcp://127.0.0.1:1" in str(info.value) and "dask scheduler" in str(info.value)


def test_interrupt_cancels_what_has_not_run(on_cluster):
    def slow(x):
        time.sleep(0.3)
        return x

    dsk = {f"s-{i}": (slow, i) for i in range(40)}
    dsk["all"] = (sum, [f"s-{i}" for i in range(40)])
    timer = threading.Timer(0.5, lambda: _interrupt_main())
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ns.get(dsk, "all", scheduler="dask")
    assert time.monotonic() - started < 2.0
    timer.join()
    assert wait_until(lambda: not on_cluster.run_on_scheduler(task_count), timeout=5)
    assert ns.get({"x": 1, "y": (inc, "x")}, "y", scheduler="dask") == 2


def _interrupt_main():
    import _thread

    _thread.interrupt_main()


def python_loop(i):
    return parse(i, n=600_000)  # pure Python, ~20 ms: holds the GIL of its worker


def nap(i):
    time.sleep(0.03)  # waits
    return np.full(1000, i)  # 8,000 bytes out


def test_advice_measures_tasks_in_the_dask_workers(on_cluster):
    dsk = {("python_loop", i): (python_loop, i) for i in range(8)}
    dsk.update({("nap", i): (nap, i) for i in range(8)})
    with ns.Advisor() as advisor:
        ns.get(dsk, list(dsk), scheduler="dask")
    advice = advisor.advice()
    rows = {row.prefix: row for row in advice.rows}
    assert rows["python_loop"].verdict == "holds-gil", advice
    assert rows["nap"].verdict == "waits", advice
    assert rows["nap"].bytes_out == 8 * 8000, advice
    for row in rows.values():
        assert row.ran_on == "dask" and row.cpu is not None and row.gil_busy is not None
    assert advice.recommendation is not None, advice


def _probe_threads(client) -> int:
    names = client.run(lambda: [t.name for t in threading.enumerate() if "gil-probe" in t.name])
    return sum(len(found) for found in names.values())


def test_workers_measure_only_when_someone_listens(on_cluster):
    deadline = time.monotonic() + 10
    while _probe_threads(on_cluster) and time.monotonic() < deadline:
        time.sleep(0.2)  # a probe from an earlier measured run stops after 1 s idle
    assert _probe_threads(on_cluster) == 0
    slow = {("slow", i): (python_loop, i) for i in range(4)}
    seen = Recorder()  # listens to task_finished, not task_measured
    ns.get(slow, list(slow), scheduler="dask", observers=[seen])
    assert len([e for e in seen.events if e[0] == "finished"]) == 4
    assert _probe_threads(on_cluster) == 0  # nobody measured: no probe started
    with ns.Advisor():
        ns.get(slow, list(slow), scheduler="dask")
    assert _probe_threads(on_cluster) >= 1  # the same graph, measured


def _must_not_run():
    raise AssertionError("an upstream task of a known result ran on the dask cluster")


def test_planners_substitute_results_on_the_dask_backend(on_cluster):
    from notebook_sched.plan import Planner

    class Known(Planner):
        ends: list = []

        def plan(self, graph, keys):
            return {"y": 10}

        def finished(self, graph, error):
            self.ends.append(error)

    graph = {"x": (_must_not_run,), "y": (len, "x"), "z": (np.add, "y", 1)}
    planner = Known()
    assert ns.get(graph, "z", scheduler="dask", planners=[planner]) == 11
    assert planner.ends == [None]


# -- the one task path on dask workers (task_runner.py) ---------------------------------


def exit_task(x):
    raise SystemExit(f"the task exits with {x}")


def test_a_task_raising_system_exit_gives_its_own_system_exit_and_kills_no_worker(on_cluster):
    workers = set(on_cluster.scheduler_info()["workers"])
    with pytest.raises(SystemExit, match="the task exits with 1"):
        ns.get({"a": 1, "b": (exit_task, "a")}, "b", scheduler="dask", rerun="never")
    assert ns.last_failure().key == "b"
    assert set(on_cluster.scheduler_info()["workers"]) == workers  # none killed, none new
    assert ns.get({"a": 1, "b": (inc, "a")}, "b", scheduler="dask") == 2


class RaisingObserver(Observer):
    propagates_errors = True  # as Dask's callbacks: the error ends the run

    def __init__(self):
        self.failed = []

    def task_finished(self, key, worker, start, stop):
        raise KeyError("an observer failed")

    def task_failed(self, key, worker, error):
        self.failed.append(key)


def test_an_observer_error_ends_a_dask_run_as_itself_naming_no_task(on_cluster):
    before = ns.last_failure()
    observer = RaisingObserver()
    with pytest.raises(KeyError, match="an observer failed") as info:
        ns.get(graph(), "c", scheduler="dask", observers=[observer])
    assert not any("task" in note for note in getattr(info.value, "__notes__", []))
    assert observer.failed == [] and ns.last_failure() is before


def record_pid(path, value):
    import os

    with open(path, "a") as file:
        file.write(f"{os.getpid()}\n")


class HookEvery(Planner):
    def __init__(self, hook):
        self.hook = hook

    def plan(self, graph, keys):
        return None

    def prepare(self, graph):
        return {i: self.hook for i in range(len(graph.keys))}

    def finished(self, graph, error):
        pass


def test_result_hooks_run_on_the_dask_workers(on_cluster, tmp_path):
    import os
    from functools import partial

    path = tmp_path / "pids"
    hooks = HookEvery(partial(record_pid, str(path)))
    assert ns.get({"a": (inc, 1), "b": (inc, "a")}, "b", scheduler="dask", planners=[hooks]) == 3
    pids = [int(line) for line in path.read_text().split()]
    assert len(pids) == 2 and os.getpid() not in pids
