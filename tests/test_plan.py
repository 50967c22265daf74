"""The graph seam (``plan.py``): planners substitute known results before compiling,
hook results as they finish, and hear when the run ends, on every backend.

A substituted task's upstream is a task that raises if it runs, so a backend that
ran it fails the test wherever the task would have run (thread, process, cluster).
"""

from __future__ import annotations

import operator
import os
import sys
import types
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

import notebook_sched as ns
from notebook_sched import api, config
from notebook_sched.engine import execute_graph
from notebook_sched.events import Observer
from notebook_sched.graph import GraphError
from notebook_sched.plan import Planner
from notebook_sched.schedulers import sync

pytestmark = pytest.mark.timeout(60)


class MustNotRun(Exception):
    pass


def boom():
    raise MustNotRun("an upstream task of a substituted result ran")


def inc(x):
    return x + 1


# "y" is known (10): "x" (which raises) must be culled; "v" still runs for "w".
GRAPH = {
    "x": (boom,),
    "y": (inc, "x"),
    "z": (inc, "y"),
    "v": (inc, 1),
    "w": (operator.add, "v", "y"),
}


class Fake(Planner):
    """Knows ``known``; records what it saw and when it was told the run ended."""

    def __init__(self, known=None, hooks=None):
        self.known = known or {}
        self.hooks = hooks or {}  # key -> hook
        self.seen = []
        self.ends = []

    def plan(self, graph, keys):
        self.seen.append((dict(graph), list(keys)))
        return self.known

    def prepare(self, graph):
        return {graph.index[k]: hook for k, hook in self.hooks.items() if k in graph.index}

    def finished(self, graph, error):
        self.ends.append((graph, error))


_pools: dict = {}


def scheduler_for(name: str):
    if name == "thread-pool":
        return _pools.setdefault(name, ThreadPoolExecutor(2))
    if name == "process-pool":
        return _pools.setdefault(name, ProcessPoolExecutor(1))
    return name


@pytest.fixture(scope="module", autouse=True)
def _close_pools():
    yield
    for pool in _pools.values():
        pool.shutdown(wait=True)
    _pools.clear()


BACKENDS = ["sync", "threads", "processes", "auto", "distributed", "thread-pool", "process-pool"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_substituted_result_culls_its_upstream_on_every_backend(backend, warm):
    planner = Fake({"y": 10})
    result = ns.get(GRAPH, ["z", "w"], scheduler=scheduler_for(backend), planners=[planner])
    assert result == (11, 12)
    ((graph, keys),) = planner.seen
    assert keys == ["z", "w"] and set(graph) == set(GRAPH)
    ((compiled, error),) = planner.ends
    assert error is None and "x" not in compiled.index  # culled, never sent anywhere


@pytest.mark.parametrize("backend", ["sync", "threads", "processes", "distributed"])
def test_a_substituted_output_is_returned_as_is(backend, warm):
    # A known value that looks like a key or a task stays a value.
    task_like = (inc, 1)
    planner = Fake({"z": task_like, "w": "x"})
    z, w = ns.get(GRAPH, ["z", "w"], scheduler=backend, planners=[planner])
    assert z == task_like and w == "x"


def test_no_planner_and_empty_answers_change_nothing():
    assert ns.get({"a": (inc, 1)}, "a", scheduler="sync", planners=[]) == 2
    planner = Fake({})
    assert ns.get({"a": (inc, 1)}, "a", scheduler="sync", planners=[planner]) == 2
    assert planner.ends[0][1] is None


class Seen(Observer):
    def __init__(self):
        self.runs = []
        self.done = []

    def graph_started(self, run):
        self.runs.append(run)

    def task_done(self, key):
        self.done.append(key)


def test_observers_see_substituted_tasks_in_their_own_list():
    seen = Seen()
    planner = Fake({"y": 10, "x": 0})  # "x" known too, but the run needs neither it nor...
    ns.get(GRAPH, ["z", "w"], scheduler="sync", planners=[planner], observers=[seen])
    (run,) = seen.runs
    assert run.extra["substituted"] == ["y"]  # ...its known value: "x" is culled
    assert sorted(run.task_keys) == ["v", "w", "z"]  # the work that runs
    assert sorted(seen.done) == ["v", "w", "z"]  # no task event for a known result


@pytest.mark.parametrize("backend", ["sync", "threads"])
def test_result_hooks_see_each_value_once_where_it_ran(backend):
    got: list = []
    hooks = {key: (lambda value, key=key: got.append((key, value))) for key in GRAPH}
    planner = Fake({"y": 10}, hooks)
    assert ns.get(GRAPH, ["z", "w"], scheduler=backend, planners=[planner]) == (11, 12)
    assert sorted(got) == [("v", 2), ("w", 12), ("z", 11)]  # not "y": it did not run


class Home:
    """A home hook (``plan.py``) that records what it is called with in the caller;
    module-level, so that plain pickle (a process executor's) can send it."""

    home = True
    got: list = []  # (key, value) seen in the caller

    def __init__(self, key, caller: int):
        self.key = key
        self.caller = caller

    def __call__(self, value):
        if os.getpid() == self.caller:
            Home.got.append((self.key, value))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_home_hook_sees_each_result_once_in_the_caller(backend, warm):
    """A hook with ``home = True`` gets every result in the caller, once: in-process
    backends call it there; the others send the result back (a chain's links too)
    and call it on arrival (their call in the worker records nothing here)."""
    Home.got.clear()
    chain = {"a": (inc, 1), "b": (inc, "a"), "c": (inc, "b"), "d": (inc, 10)}
    planner = Fake(hooks={key: Home(key, os.getpid()) for key in chain})
    result = ns.get(chain, ["c", "d"], scheduler=scheduler_for(backend), planners=[planner])
    assert result == (4, 11)
    assert sorted(Home.got) == [("a", 2), ("b", 3), ("c", 4), ("d", 11)]


def test_two_planners_hooks_on_one_task_both_run_and_a_raising_hook_only_warns():
    got: list = []

    def broken(value):
        raise RuntimeError("a broken hook")

    first = Fake(hooks={"v": broken})
    second = Fake(hooks={"v": got.append})
    with pytest.warns(RuntimeWarning, match="a broken hook"):
        assert ns.get(GRAPH, "v", scheduler="sync", planners=[first, second]) == 2
    assert got == [2]


def test_hooks_on_literals_are_dropped():
    planner = Fake({"y": 10}, {"y": print, "lit": print})
    graph = {"lit": 5, "y": (inc, "lit")}
    compiled = []

    def drive(graph, state, report):
        compiled.append(graph)
        sync._drive(graph, state, report)

    assert execute_graph(graph, "y", drive, "sync", planners=[planner]) == 10
    assert compiled[0].on_result is None  # "y" is known, a literal now: no hook
    planner = Fake(hooks={"lit": print, "y": print})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("builtins.print", lambda value: None)
        execute_graph(graph, "y", drive, "sync", planners=[planner])
    assert list(compiled[1].on_result) == [compiled[1].index["y"]]


def test_planners_hear_of_failures_interrupts_and_graphs_that_do_not_compile():
    planner = Fake()
    with pytest.raises(MustNotRun):
        ns.get(GRAPH, "z", scheduler="sync", planners=[planner], rerun="never")
    graph, error = planner.ends[0]
    assert graph is not None and isinstance(error, MustNotRun)

    planner = Fake()
    with pytest.raises(GraphError):
        ns.get({"a": (inc, "b"), "b": (inc, "a")}, "a", scheduler="sync", planners=[planner])
    assert planner.ends[0][0] is None and isinstance(planner.ends[0][1], GraphError)

    class Rude(Fake):
        def finished(self, graph, error):
            raise ValueError("stats broke")

    with pytest.warns(RuntimeWarning, match="stats broke"):
        assert ns.get(GRAPH, "v", scheduler="sync", planners=[Rude()]) == 2


def test_a_planner_that_fails_stops_the_run_before_any_task():
    class Broken(Fake):
        def plan(self, graph, keys):
            raise OSError("cannot read the cache")

    planner = Broken()
    with pytest.raises(OSError, match="cannot read"):
        ns.get(GRAPH, "z", scheduler="sync", planners=[planner])
    assert planner.ends[0][0] is None  # told, with no graph


def test_planners_must_be_planners():
    with pytest.raises(TypeError, match="Planner"):
        ns.get(GRAPH, "v", scheduler="sync", planners=[object()])


# -- the cache option ------------------------------------------------------------------


@pytest.fixture
def fake_cache(monkeypatch):
    """A stand-in ``notebook_sched.cache`` module whose plan hook records requests."""
    requests: list = []
    planner = Fake({"y": 10})

    def plan_hook(request):
        requests.append(request)
        return planner

    module = types.ModuleType("notebook_sched.cache")
    module.plan_hook = plan_hook
    monkeypatch.setitem(sys.modules, "notebook_sched.cache", module)
    monkeypatch.setattr(ns, "cache", module, raising=False)
    saved = config.snapshot()
    yield requests, planner
    config.set(**saved)


def test_cache_reaches_the_planner_per_call_and_from_the_config(fake_cache):
    requests, planner = fake_cache
    with pytest.raises(MustNotRun):  # cache=False (the default): the cache is not asked
        ns.get(GRAPH, "z", scheduler="sync", rerun="never")
    assert requests == []

    assert ns.get(GRAPH, "z", scheduler="threads", cache="memory") == 11
    assert requests[-1].options["cache"] == "memory" and requests[-1].backend == "threads"
    config.set(cache="disk")
    assert ns.get(GRAPH, "z", scheduler="sync") == 11
    assert requests[-1].options["cache"] == "disk"
    assert ns.get(GRAPH, "v", scheduler="sync", cache=False) == 2
    assert len(requests) == 2 and len(planner.ends) == 2


def test_a_foreign_get_function_warns_that_it_runs_without_planners(fake_cache):
    import dask

    with pytest.warns(RuntimeWarning, match="takes no planners"):
        assert ns.get({"a": (inc, 1)}, "a", scheduler=dask.get, cache=True) == 2


@pytest.mark.parametrize(
    "name, value",
    [("cache", 3), ("cache", None), ("cache", ""), ("cache", {}), ("cache_max_bytes", -1)],
)
def test_bad_cache_settings_are_refused(name, value):
    with pytest.raises(ValueError, match=name):
        config.set(**{name: value})


def test_cache_settings_accept_what_the_docs_say(tmp_path):
    for value in (False, True, "memory", "disk", str(tmp_path), tmp_path):
        with config.set(cache=value):
            assert config.get("cache") == value
    with config.set(cache_max_bytes=0, cache_disk_max_bytes=2**40):
        assert config.get("cache_disk_max_bytes") == 2**40
    with pytest.raises(ValueError, match="cache"):
        ns.get({"a": 1}, "a", scheduler="sync", cache=3.5)


def test_plan_hooks_are_added_once_and_removed():
    planner = Fake({"y": 10})

    def hook(request):
        return planner if request.backend == "sync" else None

    remove = api.add_plan_hook(hook)
    try:
        api.add_plan_hook(hook)
        assert ns.get(GRAPH, "z", scheduler="sync") == 11
        assert len(planner.seen) == 1
    finally:
        remove()
    with pytest.raises(MustNotRun):
        ns.get(GRAPH, "z", scheduler="sync", rerun="never")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        api.remove_plan_hook(hook)  # not registered any more: no error
