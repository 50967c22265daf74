"""The small delayed API."""

from __future__ import annotations

import operator

import pytest

import notebook_sched as ns
from notebook_sched import delayed


@delayed
def inc(x):
    return x + 1


def combine(a, b, *, scale=1):
    return (a + b) * scale


def test_decorated_and_wrapped_functions():
    x = inc(1)
    y = delayed(combine)(x, 10, scale=2)
    assert y.compute(scheduler="sync") == 24
    assert isinstance(y, ns.Delayed)
    assert y.key.startswith("combine-")
    graph = y.__dask_graph__()
    assert set(graph) == {x.key, y.key}
    assert ns.get(graph, y.key, scheduler="sync") == 24


def test_containers_of_delayed_become_dependencies():
    parts = [inc(i) for i in range(3)]
    packed = delayed(lambda d: d)(
        {"list": parts, "tuple": tuple(parts), "set": {parts[0]}, "plain": 5}
    )
    assert packed.compute(scheduler="threads") == {
        "list": [1, 2, 3],
        "tuple": (1, 2, 3),
        "set": {1},
        "plain": 5,
    }


def test_wrapping_values_and_operators():
    v = delayed(10)
    expr = (v + 5) * 2 - inc(0)
    assert expr.compute(scheduler="sync") == 29
    assert (-v).compute(scheduler="sync") == -10
    assert (3 - v).compute(scheduler="sync") == -7
    assert delayed([1, 2, 3])[1].compute(scheduler="sync") == 2


def test_attributes_and_methods():
    text = delayed("a,b,c")
    assert text.split(",").compute(scheduler="sync") == ["a", "b", "c"]
    assert text.upper().compute(scheduler="sync") == "A,B,C"


def test_explicit_key_and_name():
    x = inc(1, dask_key_name="my-key")
    assert x.key == "my-key"
    loader = delayed(operator.add, name="load")
    assert loader(1, 2).key.startswith("load-")


def test_compute_several_shares_work():
    calls = []

    @delayed
    def counted(x):
        calls.append(x)
        return x

    base = counted(1)
    a, b, c = ns.compute(inc(base), inc(inc(base)), "untouched", scheduler="sync")
    assert (a, b, c) == (2, 3, "untouched")
    assert calls == [1]


def test_compute_traverses_containers():
    got = ns.compute([inc(1), inc(2)], {"k": inc(3)}, scheduler="sync")
    assert got == ([2, 3], {"k": 4})


def test_truth_and_iteration_are_errors():
    with pytest.raises(TypeError, match="not known until it is computed"):
        bool(inc(1))
    with pytest.raises(TypeError, match="cannot be iterated"):
        list(inc(1))


def test_long_delayed_chain_builds_linearly():
    x = delayed(0)
    for _ in range(20_000):
        x = inc(x)
    assert x.compute(scheduler="sync") == 20_000


def test_literal_tuple_with_callable_stays_data():
    value = delayed((len, "abc"))
    assert value.compute(scheduler="sync") == (len, "abc")


def test_task_like_tuple_argument_stays_data():
    assert delayed(lambda t: t)((len, "abc")).compute(scheduler="processes") == (len, "abc")
