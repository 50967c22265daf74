"""Bad graphs fail before any task runs, with a message naming the key and the fix."""

from __future__ import annotations

import pytest

import notebook_sched as ns
from notebook_sched.graph import CycleError, GraphError, compile_graph, key_split

ran: list = []


def record(x):
    ran.append(x)
    return x


@pytest.fixture(autouse=True)
def _clear():
    ran.clear()


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_cycle_is_shown_as_a_path_and_nothing_runs(scheduler):
    dsk = {
        "start": (record, 1),
        "a": (record, "b"),
        "b": (record, "c"),
        "c": (record, "a"),
        "out": (sum, ["start", "a"]),
    }
    with pytest.raises(CycleError) as info:
        ns.get(dsk, "out", scheduler=scheduler)
    message = str(info.value)
    assert "'a' -> 'b' -> 'c' -> 'a'" in message
    assert "break the cycle" in message
    assert isinstance(info.value, RuntimeError)  # what Dask raises for cycles
    assert ran == []


def test_self_cycle():
    with pytest.raises(CycleError, match="'x' -> 'x'"):
        ns.get({"x": (record, "x")}, "x", scheduler="sync")


def test_function_called_too_early_shows_wrong_and_right_form():
    def f(x):
        return x * 2

    dsk = {"a": 1, "b": (f(3), "a")}  # the classic mistake: (f(x), "a") for (f, x, "a")
    with pytest.raises(GraphError) as info:
        ns.get(dsk, "b", scheduler="sync")
    message = str(info.value)
    assert "Task 'b'" in message
    assert "6 (of type int)" in message
    assert "incorrect" in message and "correct" in message
    assert "dsk['b'] = (f, x, 'a')" in message


def test_plain_tuples_without_keys_are_data():
    assert ns.get({"a": (1, 2, "zzz")}, "a", scheduler="sync") == (1, 2, "zzz")


class Node:
    def __init__(self, deps):
        self.dependencies = frozenset(deps)

    def __call__(self, values):
        return sum(values.values())


def test_graph_node_with_missing_dependency():
    with pytest.raises(GraphError, match=r"Task 'n' depends on 'mising'.*did you mean 'missing'"):
        ns.get({"missing": 1, "n": Node(["mising"])}, "n", scheduler="sync")


def test_missing_output_key_is_a_key_error_with_suggestion():
    with pytest.raises(KeyError) as info:
        ns.get({"total": 1, "x": 2}, [["totl"], "x"], scheduler="threads")
    assert "did you mean 'total'" in str(info.value)
    assert ran == []


def test_not_a_graph():
    with pytest.raises(TypeError, match="must be a mapping"):
        ns.get([("a", 1)], "a", scheduler="sync")


def test_unknown_scheduler_lists_the_valid_names():
    with pytest.raises(ValueError) as info:
        ns.get({"a": 1}, "a", scheduler="thread")
    message = str(info.value)
    for name in (
        "sync",
        "synchronous",
        "single-threaded",
        "threads",
        "threading",
        "processes",
        "multiprocessing",
    ):
        assert name in message


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="'num_wrokers'"):
        ns.get({"a": 1}, "a", num_wrokers=2)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "two", True])
def test_bad_num_workers(bad):
    with pytest.raises(ValueError, match="num_workers must be a positive integer"):
        ns.get({"a": (record, 1)}, "a", scheduler="threads", num_workers=bad)
    assert ran == []


def test_culling_and_indexing():
    dsk = {"a": 1, "b": (record, "a"), "c": (record, "b"), "unused": (record, "a")}
    graph = compile_graph(dsk, ["c"])
    assert sorted(graph.keys) == ["a", "b", "c"]
    b, c, a = graph.index["b"], graph.index["c"], graph.index["a"]
    assert graph.deps[c] == (b,) and graph.deps[b] == (a,)
    assert graph.dependents[a] == [b]
    assert graph.priority[a] < graph.priority[b] < graph.priority[c]
    assert graph.chain_next[a] == b and graph.chain_next[b] == c and graph.chain_next[c] == -1


def test_deep_graph_compiles_without_recursion():
    n = 200_000
    dsk = {"x0": 0, **{f"x{i + 1}": (record, f"x{i}") for i in range(n)}}
    graph = compile_graph(dsk, [f"x{n}"])
    assert len(graph) == n + 1


def test_key_split():
    assert key_split("sum-8f3a2b1c9d0e4f5a") == "sum"
    assert key_split(("load-csv-8f3a2b1c9d0e4f5a", 3)) == "load-csv"
    assert key_split("x") == "x"
    assert key_split(b"inc-1") == "inc"
