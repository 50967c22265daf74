"""Settings: global, scoped with ``with`` (restored on error), overridden per call, env."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import notebook_sched as ns
from notebook_sched import config


def where(_):
    return threading.current_thread().name


def graph():
    return {"x": 1, "who": (where, "x")}


@pytest.fixture(autouse=True)
def _restore():
    saved = config.snapshot()
    yield
    config.set(**saved)


def test_global_set_changes_the_default():
    config.set(scheduler="sync")
    assert config.get("scheduler") == "sync"
    assert ns.get(graph(), "who") == threading.current_thread().name


def test_scoped_set_restores_also_on_error():
    config.set(scheduler="threads", num_workers=3)
    with pytest.raises(RuntimeError):
        with config.set(scheduler="single-threaded", num_workers=1):
            assert config.get("scheduler") == "sync"  # aliases become canonical names
            assert ns.get(graph(), "who") == threading.current_thread().name
            raise RuntimeError("boom")
    assert config.get("scheduler") == "threads"
    assert config.get("num_workers") == 3


def test_per_call_keyword_wins_over_config():
    with config.set(scheduler="sync"):
        assert ns.get(graph(), "who", scheduler="threads").startswith("notebook_sched-thread")


def test_pool_setting_is_used_by_threads(no_leaks):
    with ThreadPoolExecutor(2, thread_name_prefix="mypool") as pool:
        with config.set(scheduler="threads", pool=pool):
            assert ns.get(graph(), "who").startswith("mypool")


def test_executor_as_scheduler(no_leaks):
    with ThreadPoolExecutor(1, thread_name_prefix="exec") as pool:
        assert ns.get(graph(), "who", scheduler=pool).startswith("exec")


def test_get_callable_as_scheduler():
    calls = []

    def my_get(dsk, keys, **kwargs):
        calls.append(kwargs)
        return ns.get(dsk, keys, scheduler="sync")

    assert ns.get(graph(), "who", scheduler=my_get) == threading.current_thread().name
    assert calls == [{}]


def test_bad_settings_are_rejected_and_change_nothing():
    before = config.snapshot()
    with pytest.raises(ValueError, match="Unknown scheduler 'thread'"):
        config.set(scheduler="thread", num_workers=2)
    with pytest.raises(KeyError, match="the settings are"):
        config.set(schedular="threads")
    with pytest.raises(TypeError, match="concurrent.futures.Executor"):
        config.set(pool=4)
    with pytest.raises(ValueError, match="rerun must be one of"):
        config.set(rerun="sometimes")
    assert config.snapshot() == before
    with pytest.raises(KeyError):
        config.get("nope")


def test_subscribers_hear_changes():
    heard = []

    def listener(name, value):
        heard.append((name, value))

    config.subscribe(listener)
    try:
        with config.set(scheduler="processes"):
            pass
    finally:
        config.unsubscribe(listener)
    assert heard == [("scheduler", "processes"), ("scheduler", config.get("scheduler"))]


@pytest.mark.parametrize(
    ("value", "expected"), [("sync", "sync"), ("multiprocessing", "processes")]
)
def test_environment_variable_sets_the_default(value, expected):
    env = dict(os.environ, NOTEBOOK_SCHED_SCHEDULER=value)
    out = subprocess.run(
        [sys.executable, "-c", "import notebook_sched as ns; print(ns.config.get('scheduler'))"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_bad_environment_variable_is_explained():
    env = dict(os.environ, NOTEBOOK_SCHED_SCHEDULER="gpu")
    out = subprocess.run(
        [sys.executable, "-c", "import notebook_sched"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode != 0
    assert "NOTEBOOK_SCHED_SCHEDULER='gpu' is not valid" in out.stderr


def test_get_functions_marked_takes_observers_receive_them():
    from notebook_sched.events import Observer

    received = []

    def my_get(dsk, keys, observers=None, **kwargs):
        received.append(observers)
        return ns.get(dsk, keys, scheduler="sync", observers=observers)

    my_get.takes_observers = True
    watcher = Observer()
    assert ns.get({"a": 1}, "a", scheduler=my_get, observers=[watcher]) == 1
    assert received and watcher in received[0]


@pytest.mark.timeout(20)
def test_the_first_use_callback_runs_once_and_other_threads_wait_for_it(monkeypatch):
    started, release, waited = threading.Event(), threading.Event(), threading.Event()
    calls = []

    def slow_callback():
        calls.append(1)
        started.set()
        release.wait(5)
        config.get("scheduler")  # re-entered from the callback: no deadlock, no rerun

    monkeypatch.setattr(config, "_first_use", slow_callback)
    first = threading.Thread(target=config.activate)
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=lambda: (config.activate(), waited.set()))
    second.start()
    assert not waited.wait(0.2)  # the second thread waits while the callback runs
    release.set()
    first.join(5)
    second.join(5)
    assert waited.is_set() and calls == [1]
    config.activate()
    assert calls == [1]


def _in_order(*steps):
    """Run ``steps`` (callables) one after the other, each on its own thread's turn:
    ``("A", f)`` runs ``f`` on thread A; the threads keep their contexts between turns."""
    import queue

    queues = {name: queue.Queue() for name, _ in steps}
    done = queue.Queue()

    def worker(name):
        while (step := queues[name].get()) is not None:
            try:
                done.put(("ok", step()))
            except BaseException as exc:  # handed to the test thread
                done.put(("error", exc))

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in queues]
    for thread in threads:
        thread.start()
    results = []
    try:
        for name, step in steps:
            queues[name].put(step)
            kind, value = done.get(timeout=30)
            if kind == "error":
                raise value
            results.append(value)
    finally:
        for q in queues.values():
            q.put(None)
        for thread in threads:
            thread.join(10)
    return results


def test_interleaved_scopes_on_two_threads_restore_exactly_what_they_changed():
    assert config.get("scheduler") == "threads"
    scopes = {}

    def enter(name, **settings):
        def step():
            scopes[name] = config.set(**settings)
            scopes[name].__enter__()
            return config.get("scheduler")

        return step

    def leave(name):
        def step():
            scopes[name].__exit__(None, None, None)
            return config.get("scheduler")

        return step

    seen = _in_order(
        ("A", enter("A", scheduler="sync")),
        ("B", enter("B", scheduler="processes")),
        ("A", lambda: config.get("scheduler")),  # A's scope is A's own
        ("A", leave("A")),
        ("B", lambda: config.get("scheduler")),
        ("B", leave("B")),
    )
    assert seen == ["sync", "processes", "sync", "threads", "processes", "threads"]
    assert config.get("scheduler") == "threads"


def test_a_scope_is_the_threads_own_and_a_plain_set_is_global():
    with config.set(scheduler="sync"):
        seen_elsewhere = _in_order(("other", lambda: config.get("scheduler")))
        assert config.get("scheduler") == "sync"
        config.set(num_workers=3, scheduler="processes")  # plain: global, kept after
        assert _in_order(("other", lambda: config.get("num_workers"))) == [3]
        assert config.get("scheduler") == "processes"  # over this thread's scope too
        with config.set(scheduler="threads"):
            assert config.get("scheduler") == "threads"
        assert config.get("scheduler") == "processes"
    assert seen_elsewhere == ["threads"]
    assert (config.get("num_workers"), config.get("scheduler")) == (3, "processes")


def test_scopes_closed_out_of_order_in_one_thread_restore_exactly():
    outer = config.set(scheduler="sync", num_workers=2)
    outer.__enter__()
    inner = config.set(scheduler="processes")
    inner.__enter__()
    outer.__exit__(None, None, None)  # e.g. an ExitStack closed in the wrong order
    assert (config.get("scheduler"), config.get("num_workers")) == ("processes", None)
    inner.__exit__(None, None, None)
    assert (config.get("scheduler"), config.get("num_workers")) == ("threads", None)


def test_a_set_closed_without_entering_restores_the_global_value():
    scope = config.set(scheduler="sync")  # what a %%schedule cell does
    assert _in_order(("other", lambda: config.get("scheduler"))) == ["sync"]
    scope.__exit__(None, None, None)
    assert config.get("scheduler") == "threads"


def test_our_scope_interleaved_with_dask_config_set():
    dask_config = pytest.importorskip("dask.config")
    before = dask_config.get("scheduler", None)
    ours = config.set(scheduler="sync")
    ours.__enter__()
    theirs = dask_config.set(scheduler="processes")
    theirs.__enter__()
    ours.__exit__(None, None, None)
    assert dask_config.get("scheduler") == "processes"  # Dask's scope is still open
    assert config.get("scheduler") == "threads"
    theirs.__exit__(None, None, None)
    import dask

    assert dask.delayed(sum)([1, 2]).compute() == 3  # through the retired value: cleans up
    assert dask_config.get("scheduler", None) is before
    # The other order: Dask's scope opened first and closed first.
    theirs = dask_config.set(scheduler="processes")
    theirs.__enter__()
    ours = config.set(scheduler="sync")
    ours.__enter__()
    theirs.__exit__(None, None, None)
    ours.__exit__(None, None, None)
    assert dask_config.get("scheduler", None) is before
    assert config.get("scheduler") == "threads"
