"""Run hooks: a hook reads a RunRequest and returns what it adds; it can be removed."""

from __future__ import annotations

import pytest

import notebook_sched as ns
from notebook_sched import api
from notebook_sched.events import Observer

GRAPH = {"a": 1, "b": (abs, "a")}


class Seen(Observer):
    def __init__(self):
        self.finished = []

    def task_finished(self, key, worker, start, stop):
        self.finished.append(key)


def test_a_hook_adds_observers_and_a_wrapper_for_one_run_and_can_be_removed():
    ns.config.get("scheduler")  # first use: the package's own hooks are registered
    requests, calls = [], []
    seen = Seen()

    def around(call):
        calls.append("before")
        result = call()
        calls.append(("after", result))
        return result

    def hook(request):
        requests.append(request)
        return api.Additions(observers=(seen,), around=around)

    remove = api.add_run_hook(hook)
    try:
        assert api.add_run_hook(hook) is not None and api._run_hooks.count(hook) == 1
        assert ns.get(GRAPH, "b", scheduler="sync", rerun="never") == 1
    finally:
        remove()
    assert hook not in api._run_hooks
    assert ns.get(GRAPH, "b", scheduler="sync") == 1  # not asked any more
    assert len(requests) == 1 and calls == ["before", ("after", 1)]
    assert seen.finished == ["b"]
    request = requests[0]
    assert request.backend == "sync" and request.options["rerun"] == "never"
    with pytest.raises(TypeError):
        request.options["rerun"] = "always"  # read-only: hooks do not edit the run


def test_observers_of_the_caller_come_first_and_are_not_changed():
    mine = Seen()
    theirs = Seen()
    order = []

    class Order(Observer):
        def __init__(self, name):
            self.name = name

        def graph_started(self, info):
            order.append(self.name)

    def hook(request):
        return api.Additions(observers=(theirs, Order("hook")))

    observers = [mine, Order("caller")]
    remove = api.add_run_hook(hook)
    try:
        ns.get(GRAPH, "b", scheduler="sync", observers=observers)
    finally:
        api.remove_run_hook(hook)
        remove()  # removing twice is harmless
    assert order == ["caller", "hook"]
    assert mine.finished == theirs.finished == ["b"]
    assert len(observers) == 2  # the caller's list is not extended in place


def test_wrappers_nest_in_registration_order_the_first_outermost():
    trace = []

    def hook(name):
        def around(call):
            trace.append(f"{name} in")
            try:
                return call()
            finally:
                trace.append(f"{name} out")

        def ask(request):
            return api.Additions(around=around)

        ask.__name__ = name
        return ask

    first, second = hook("first"), hook("second")
    api.add_run_hook(first)
    api.add_run_hook(second)
    try:
        ns.get(GRAPH, "b", scheduler="sync")
    finally:
        api.remove_run_hook(first)
        api.remove_run_hook(second)
    assert trace == ["first in", "second in", "second out", "first out"]


def test_a_hook_that_adds_nothing_returns_none():
    asked = []

    def hook(request):
        asked.append(request.backend)
        return None

    with_hook = api.add_run_hook(hook)
    try:
        assert ns.get(GRAPH, "b", scheduler="sync") == 1
    finally:
        with_hook()
    assert asked == ["sync"]
