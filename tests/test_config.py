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
