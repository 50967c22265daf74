"""``last_failure()`` reads as a report: the task as a call with its literal arguments."""

from __future__ import annotations

import pytest

import notebook_sched as ns
from notebook_sched.debug import describe_call, failure_html, format_failure

pytestmark = pytest.mark.timeout(60)


def invert(x):
    return 1 / (x - 3)


def test_literal_arguments_are_shown_not_inputs_none():
    with pytest.raises(ZeroDivisionError):
        ns.get({"a": (invert, 3)}, "a", scheduler="sync")
    failure = ns.last_failure()
    assert describe_call(failure) == "invert(3)"
    text = format_failure(failure)
    assert "  task:   invert(3)" in text and "inputs: none (the task reads" not in text
    assert "<code>invert(3)</code>" in failure_html(failure)


def test_keys_stay_keys_and_keyword_arguments_show():
    @ns.delayed
    def scaled(a, b, scale=1):
        return a / b * scale

    base = ns.delayed(1, name="base")
    with pytest.raises(ZeroDivisionError):
        scaled(base, 0, scale=2).compute(scheduler="threads")
    failure = ns.last_failure()
    assert describe_call(failure) == f"scaled({base.key!r}, 0, scale=2)"
    assert failure.inputs == {base.key: 1}


def test_the_failed_element_of_a_map_is_named(no_leaks):
    from notebook_sched import Client, LocalCluster

    with LocalCluster(n_workers=1) as cluster, Client(cluster) as client:
        futures = client.map(invert, [1, 2, 3, 4])
        with pytest.raises(ZeroDivisionError):
            client.gather(futures)
    assert describe_call(ns.last_failure()) == "invert(3)"
