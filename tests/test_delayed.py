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


class _Scale:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return x * self.factor

    def apply(self, x):
        return x * self.factor


def test_tasks_are_named_after_the_function_as_dask_funcname():
    """Classes, builtins, partials, methods and callables give ``<name>-<token>`` keys."""
    import functools

    cases = {
        "str": ns.delayed(str)(5),
        "int": ns.delayed(functools.partial(int, base=2))("11"),
        "split": ns.delayed(operator.methodcaller("split", ","))("a,b"),
        "_Scale": ns.delayed(_Scale(3))(2),
        "apply": ns.delayed(_Scale(3).apply)(2),
        "lambda": ns.delayed(lambda x: x)(1),
        "dict": ns.delayed(dict)(a=1),
    }
    for name, value in cases.items():
        assert ns.graph.key_split(value.key) == name, (name, value.key)
    # One task each: the function is part of the task, not a constant of its own.
    assert len(cases["str"].__dask_graph__()) == 1
    assert ns.compute(*cases.values(), scheduler="sync") == ("5", 3, ["a", "b"], 6, 6, 1, {"a": 1})


def test_delayed_class_counts_one_task_in_progress():
    from notebook_sched.events import Observer

    seen = []

    class Runs(Observer):
        def graph_started(self, run):
            seen.append(list(run.task_keys))

    value = ns.delayed(str)(7)
    assert value.compute(scheduler="sync", observers=[Runs()]) == "7"
    assert [[ns.graph.key_split(k) for k in keys] for keys in seen] == [["str"]]


def test_persist_keeps_the_result_as_data():
    calls = []

    def record(x):
        calls.append(x)
        return [x, "not-a-key"]

    kept = ns.delayed(record)(2).persist(scheduler="sync")
    assert isinstance(kept, ns.Delayed) and kept.key.startswith("record-")
    assert (kept + [3]).compute(scheduler="sync") == [2, "not-a-key", 3]
    assert kept.compute(scheduler="threads") == [2, "not-a-key"]
    assert calls == [2]  # computed once, by persist
    assert kept.dask[kept.key] != (record, 2)


@pytest.mark.parametrize("name", ["visualise", "_repr_html_", "_ipython_display_"])
def test_dask_and_private_names_are_attribute_errors(name):
    value = ns.delayed(sum)([1, 2])
    with pytest.raises(AttributeError, match=name):
        getattr(value, name)
    assert not hasattr(value, name)


def test_visualize_draws_the_graph_with_matplotlib(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [inc(i) for i in range(3)]
    total = delayed(sum)(parts)
    target = tmp_path / "graph.png"
    ax = total.visualize(str(target), engine="matplotlib")
    try:
        labels = sorted(t.get_text() for t in ax.texts if t.get_text())
        assert labels == ["inc", "inc", "inc", "sum"]
        arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
        assert len(arrows) == 3  # one per input of sum
        assert ax.get_title().startswith("4 tasks, 0 data")
        assert target.stat().st_size > 1000
    finally:
        plt.close(ax.figure)
    with pytest.raises(ValueError, match="engine"):
        total.visualize(engine="dot")
