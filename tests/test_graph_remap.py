"""``graph.remap_spec``: the one function that rewrites a spec's references."""

from __future__ import annotations

import operator

from notebook_sched.engine import run_spec
from notebook_sched.graph import ALIAS, CALL, EXPR, VALUE, compile_graph, remap_spec


class Node:
    """A duck-typed Dask GraphNode."""

    def __init__(self, *deps):
        self.dependencies = frozenset(deps)

    def __call__(self, values):
        return sum(values.values())


def test_every_kind_is_remapped_through_the_table():
    table = {0: 10, 1: 11}
    assert remap_spec((CALL, operator.add, (None, 1), ((0, 1),)), table) == (
        CALL,
        operator.add,
        (None, 1),
        ((0, 11),),
    )
    assert remap_spec((ALIAS, 0), table) == (ALIAS, 10)
    assert remap_spec((EXPR, ["a", "b"], {"a": 0, "b": 1}), table) == (
        EXPR,
        ["a", "b"],
        {"a": 10, "b": 11},
    )
    assert remap_spec((VALUE, 5), table) == (VALUE, 5)
    shifted = remap_spec((CALL, operator.add, (None, None), ((0, 0), (1, 1))), range(7, 9))
    assert shifted[3] == ((0, 7), (1, 8))


def test_compiled_specs_refer_to_indices_and_run():
    dsk = {
        "a": 1,
        "b": (operator.add, "a", 1),
        "c": "b",
        "d": (sum, ["a", "b", (operator.mul, "c", 2)]),
        "e": Node("a", "d"),
    }
    graph = compile_graph(dsk, ["e"])
    values = [None] * len(graph)
    for i in sorted(range(len(graph)), key=graph.priority.__getitem__):
        values[i] = run_spec(graph.specs[i], values)
    index = graph.index
    assert graph.specs[index["c"]] == (ALIAS, index["b"])
    assert graph.specs[index["d"]][2] == {k: index[k] for k in ("a", "b", "c")}
    assert graph.specs[index["e"]][2] == {k: index[k] for k in ("a", "d")}
    assert values[index["e"]] == 1 + (1 + 2 + 4)
