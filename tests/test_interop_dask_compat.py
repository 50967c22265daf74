"""Dask's scheduler contract on our backends: the incompatibilities of issue 13.

Each test names the item it covers.  Dask's own scheduler is the reference wherever
it can be run in the same test.
"""

from __future__ import annotations

import contextvars
import multiprocessing.pool
import os
import warnings
from functools import partial

import dask
import dask.bag as db
import pytest
from dask.callbacks import Callback
from dask.diagnostics import Profiler

import notebook_sched as ns
from notebook_sched.events import Observer
from notebook_sched.interop import dask_get
from notebook_sched.schedulers import _pool

from .conftest import leak_check

pytestmark = pytest.mark.timeout(120)

LOCAL = ["sync", "threads", "processes"]


def on(backend):
    return partial(dask_get, scheduler=backend)


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def worker_pid(_=None):
    return os.getpid()


@pytest.fixture(autouse=True)
def _dask_config_restored():
    """Tests change Dask's config in ``with`` scopes only; our global sets mirror Dask's
    "scheduler", which is put back here."""
    saved_ns = ns.config.snapshot()
    saved = dask.config.config.get("scheduler", _MISSING)
    yield
    ns.config.set(**saved_ns)
    dask.config.config.pop("scheduler", None)
    if saved is not _MISSING:
        dask.config.config["scheduler"] = saved


_MISSING = object()


@pytest.fixture(scope="module", autouse=True)
def _warm_pool():
    ns.get({"a": 1, "b": (abs, "a")}, "b", scheduler="processes", num_workers=2)


# -- item 1: unknown keywords from Dask -----------------------------------------------


@pytest.mark.parametrize("backend", LOCAL)
def test_unknown_compute_keywords_are_ignored_as_dask_does(backend):
    x = dask.delayed(inc)(1)
    assert x.compute(bogus_keyword=10) == 2  # Dask's own default, the reference
    assert x.compute(scheduler=on(backend), bogus_keyword=10, initializer=None) == 2
    assert x.compute(scheduler=on(backend), start_callback=print, num_workers=2) == 2


def test_direct_get_stays_strict_and_says_where_keywords_are_ignored():
    with pytest.raises(TypeError, match="bogus") as info:
        ns.get({"a": 1}, "a", bogus=1)
    assert "dask_get" in str(info.value)


# -- item 3: our scopes do not change how Dask plans ----------------------------------


def bag_groupby(**compute):
    b = db.from_sequence([(i % 3, i) for i in range(12)], npartitions=3)
    grouped = b.groupby(0, npartitions=2)
    return grouped.npartitions, sorted((k, sorted(v)) for k, v in grouped.compute(**compute))


def test_bag_groupby_and_shuffle_setting_unchanged_before_during_and_after_our_scopes():
    import pandas as pd
    from dask.dataframe import from_pandas

    from notebook_sched.graph import key_split

    df = from_pandas(pd.DataFrame({"a": range(30), "b": range(30)}), npartitions=3)

    def observed():
        return (
            dask.config.get("dataframe.shuffle.method", None),
            bag_groupby(scheduler="sync"),
            dask.delayed(inc)(1).compute(scheduler="sync"),
            sorted({key_split(k) for k in dict(df.shuffle("a").__dask_graph__())}),  # the plan
            len(df.shuffle("a").compute(scheduler="sync")),
        )

    before = observed()
    assert before[1][0] == 2  # npartitions honoured (Dask's disk shuffle for bags)
    for backend in ("sync", "threads", "processes"):
        with ns.config.set(scheduler=backend):
            assert observed() == before
            assert bag_groupby() == before[1]  # Dask's default is ours here
        assert observed() == before
    ns.config.set(scheduler="threads")  # a global set, never undone
    assert observed() == before


def test_dataframe_shuffle_runs_on_our_backends_without_a_client():
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    df = dd.from_pandas(pd.DataFrame({"a": range(30), "b": range(30)}), npartitions=3)
    want = df.shuffle("a").compute(scheduler="sync").sort_values("a")
    for backend in LOCAL:
        got = df.shuffle("a").compute(scheduler=on(backend)).sort_values("a")
        assert got.equals(want), backend
        with ns.config.set(scheduler=backend):
            assert df.shuffle("a").compute().sort_values("a").equals(want)


def test_p2p_shuffle_graph_is_refused_with_the_fix():
    from dask._task_spec import DataNode

    class P2PBarrierTask(DataNode):  # Dask's type name is what is checked
        pass

    import distributed  # noqa: F401 - P2P graphs are looked for once it is imported

    graph = {"x": 1, "shuffle-barrier-ab": P2PBarrierTask("shuffle-barrier-ab", 1)}
    with pytest.raises(RuntimeError, match="dataframe.shuffle.method") as info:
        on("sync")(graph, "x")
    assert "'shuffle-barrier-ab'" in str(info.value)


# -- item 4: contextvars --------------------------------------------------------------

VAR: contextvars.ContextVar = contextvars.ContextVar("VAR", default="unset")


def read_var(_=None):
    return VAR.get()


def test_threads_tasks_see_the_callers_context_and_do_not_leak_into_it():
    def set_var(_):
        VAR.set("set in a task")
        return VAR.get()

    token = VAR.set("caller")
    try:
        dsk = {f"r{i}": (read_var, i) for i in range(20)}
        dsk["s"] = (set_var, 0)
        with leak_check():
            got = ns.get(dsk, sorted(dsk), scheduler="threads", num_workers=4)
        reads = [v for k, v in zip(sorted(dsk), got, strict=True) if k != "s"]
        assert set(reads) <= {"caller", "set in a task"} and "caller" in reads
        assert VAR.get() == "caller"
        # Dask's reference behaviour, and ours through Dask's compute:
        x = dask.delayed(read_var)(1)
        assert x.compute(scheduler="threads") == "caller"
        assert x.compute(scheduler=on("threads")) == "caller"
        with ThreadPoolExecutorCtx(2) as pool:
            assert ns.get({"a": (read_var, 1)}, "a", pool=pool) == "caller"
    finally:
        VAR.reset(token)


def ThreadPoolExecutorCtx(n):
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(n)


# -- item 5: multiprocessing pools ----------------------------------------------------


def test_threads_accept_a_multiprocessing_thread_pool():
    dsk = {"a": (inc, 1), "b": (add, "a", 10), "c": (read_var, "b")}
    with multiprocessing.pool.ThreadPool(2) as pool:
        assert ns.get(dsk, ["a", "b"], scheduler="threads", pool=pool) == (2, 12)
        x = dask.delayed(add)(dask.delayed(inc)(1), 10)
        assert x.compute(scheduler=on("threads"), pool=pool) == 12
        assert x.compute(scheduler="threads", pool=pool) == 12  # Dask's reference
        with ns.config.set(pool=pool):
            assert ns.get(dsk, "b", scheduler="threads") == 12


def test_processes_accept_a_multiprocessing_pool():
    dsk = {"a": (inc, 1), "b": (add, "a", 10), "pid": (worker_pid, "a")}
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool_pids = {p.pid for p in pool._pool}
        b, pid = ns.get(dsk, ["b", "pid"], scheduler="processes", pool=pool)
        assert b == 12 and pid in pool_pids


def test_pool_setting_rejects_other_objects_naming_what_is_accepted():
    with pytest.raises(TypeError, match="multiprocessing.pool.Pool"):
        ns.config.set(pool=object())


# -- item 6: an input that fails to unpickle ------------------------------------------


class FailsToLoad:
    def __getstate__(self):
        return {"x": 1}

    def __setstate__(self, state):
        raise ValueError("this object refuses to be unpickled")


def test_unloadable_input_is_the_tasks_error_and_the_worker_survives():
    pids = {w.process.pid for w in _pool._pool.workers}
    # One task: no other batch is in flight, so no worker is busy when it fails (a
    # worker busy with a failed run is replaced by design).
    dsk = {"bad": (worker_pid, FailsToLoad()), "after": (inc, "bad")}
    with pytest.raises(ValueError, match="refuses to be unpickled") as info:
        ns.get(dsk, "after", scheduler="processes", num_workers=2, rerun="never")
    assert any("'bad'" in note for note in info.value.__notes__)
    assert pids == {w.process.pid for w in _pool._pool.workers}  # none replaced
    assert ns.get({"p": (worker_pid, 1)}, "p", scheduler="processes", num_workers=2) in pids
    # Dask's reference: the ValueError reaches the caller too.
    with pytest.raises(ValueError, match="refuses"):
        dask.delayed(worker_pid)(FailsToLoad()).compute(scheduler="processes")


def test_unloadable_input_on_a_process_executor_names_the_task():
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        with pytest.raises(ValueError, match="refuses") as info:
            ns.get({"bad": (worker_pid, FailsToLoad())}, "bad", scheduler=pool, rerun="never")
        assert any("'bad'" in note for note in info.value.__notes__)


# -- item 7: literals and aliases are not tasks ---------------------------------------


class Recorder(Observer):
    def __init__(self):
        self.totals = []
        self.started = []
        self.done = []

    def graph_started(self, run):
        self.totals.append(sorted(map(str, run.task_keys)))

    def task_started(self, key, worker):
        self.started.append(key)

    def task_done(self, key):
        self.done.append(key)


@pytest.mark.parametrize("backend", [*LOCAL, "distributed"])
def test_literals_and_aliases_are_not_reported_as_tasks(backend):
    dsk = {"lit": 5, "a": (inc, "lit"), "alias": "a", "b": (add, "alias", "lit")}
    rec = Recorder()
    assert ns.get(dsk, ["b", "alias"], scheduler=backend, observers=[rec]) == (11, 6)
    assert rec.totals == [["a", "b"]]
    assert sorted(rec.started) == sorted(rec.done) == ["a", "b"]


@pytest.mark.parametrize("backend", LOCAL)
def test_dask_profiler_and_pretask_see_only_real_tasks(backend):
    dsk = {"a": 1, "b": 2, "c": (add, "a", "b"), "d": (inc, "c")}
    for get in (dask.get, on(backend)):  # Dask's reference, then ours
        with Profiler() as prof:
            assert get(dsk, "d") == 4
        assert sorted(r.key for r in prof.results) == ["c", "d"], get
        pretask = []
        with Callback(pretask=lambda key, dsk, state, seen=pretask: seen.append(key)):
            assert get(dsk, ["c", "d"]) == (3, 4)
        assert sorted(pretask) == ["c", "d"], get
    # Dask runs an alias as a task and reports it to callbacks: so do we (to Dask's
    # callbacks only; our own observers do not hear of aliases, see the test above).
    for get in (dask.get, on(backend)):
        pretask = []
        with Callback(pretask=lambda key, dsk, state, seen=pretask: seen.append(key)):
            assert get({**dsk, "e": "d"}, "e") == 4
        assert sorted(pretask) == ["c", "d", "e"], get


# -- item 8: a Dask callback that raises ----------------------------------------------


class Boom(Exception):
    pass


def explode(*args):
    raise Boom("callback failed")


@pytest.mark.parametrize("backend", LOCAL)
@pytest.mark.parametrize("hook", ["start", "start_state", "pretask", "posttask", "finish"])
def test_an_exception_in_a_dask_callback_propagates(backend, hook):
    x = dask.delayed(add)(dask.delayed(inc)(1), 10)
    with Callback(**{hook: explode}):  # Dask's reference
        with pytest.raises(Boom):
            x.compute(scheduler="sync")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "switched off" RuntimeWarning
        with leak_check(), Callback(**{hook: explode}):
            with pytest.raises(Boom):
                x.compute(scheduler=on(backend), rerun="never")
    assert x.compute(scheduler=on(backend)) == 12  # and the next compute works


# -- item 9: literal data stays in the caller -----------------------------------------


class Payload:
    pass


@pytest.mark.parametrize("backend", [*LOCAL, "distributed"])
def test_delayed_literal_is_the_callers_object(backend):
    foo = Payload()
    assert dask.delayed(foo).compute(scheduler="sync") is foo  # Dask's reference
    assert dask.delayed(foo).compute(scheduler=on(backend)) is foo


@pytest.mark.parametrize("backend", [*LOCAL, "distributed"])
def test_quoted_data_is_the_callers_object(backend):
    foo = Payload()
    data = [foo, (inc, 1)]  # Dask quotes it: a list holding a task-like tuple stays data
    for get in (dask.get, on(backend)):
        got = dask.delayed(data, traverse=False).compute(scheduler=get)
        assert got == data and got[0] is foo, get


# -- item 10: Dask's own num_workers and pool settings --------------------------------


def thread_name(_=None):
    import threading

    return threading.current_thread().name


def test_dask_num_workers_and_pool_settings_apply_when_ours_are_unset():
    widths = []

    class Width(Observer):
        def graph_started(self, run):
            widths.append(run.workers)

    x = dask.delayed(inc)(1)
    with dask.config.set(num_workers=3):
        x.compute(scheduler=on("threads"), observers=[Width()])
        with ns.config.set(num_workers=2):  # ours wins
            x.compute(scheduler=on("threads"), observers=[Width()])
    assert widths == [3, 2]
    with multiprocessing.pool.ThreadPool(1) as pool:
        with dask.config.set(pool=pool):
            name = dask.delayed(thread_name)(1).compute(scheduler=on("threads"))
        pool_threads = {t.name for t in pool._pool}
    assert name in pool_threads


def test_dask_num_workers_setting_sizes_our_threads():
    seen = []

    class Width(Observer):
        def graph_started(self, run):
            seen.append(run.workers)

    xs = [dask.delayed(inc)(i) for i in range(8)]
    with dask.config.set(num_workers=3):
        dask.compute(*xs, scheduler=on("threads"), observers=[Width()])
    dask.compute(*xs, scheduler=on("threads"), num_workers=5, observers=[Width()])
    assert seen == [3, 5]
