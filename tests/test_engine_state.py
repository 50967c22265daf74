"""The run state machine, tested as a pure object: no threads, no processes."""

from __future__ import annotations

import operator

from notebook_sched.engine import RunState, run_spec
from notebook_sched.graph import compile_graph

from .helpers import LONG_CHAIN


def drain(dsk, outputs):
    """Run a graph step by step, returning the order and the live values after each step."""
    graph = compile_graph(dsk, outputs)
    state = RunState(graph)
    order, live = [], []
    while state.ready:
        i = state.ready.pop()
        state.finish(i, run_spec(graph.specs[i], state.values))
        order.append(graph.keys[i])
        live.append(sum(v is not None for v in state.values))
    assert state.done
    return graph, state, order, live


def tree(leaves):
    dsk = {("l", 0, i): (operator.pos, i) for i in range(leaves)}
    level, n = 0, leaves
    while n > 1:
        for i in range(n // 2):
            dsk[("l", level + 1, i)] = (operator.add, ("l", level, 2 * i), ("l", level, 2 * i + 1))
        n //= 2
        level += 1
    return dsk, ("l", level, 0)


def test_tree_reduction_keeps_few_results_alive():
    dsk, root = tree(1024)
    graph, state, order, live = drain(dsk, [root])
    assert state.values[graph.index[root]] == sum(range(1024))
    # Depth-first order: at most one pending result per tree level, plus the new one.
    assert max(live) <= 12


def test_intermediate_results_are_released_and_outputs_kept():
    dsk = {"a": 1, "b": (operator.add, "a", 1), "c": (operator.add, "b", 1)}
    graph, state, _, _ = drain(dsk, ["c", "a"])
    values = {graph.keys[i]: v for i, v in enumerate(state.values)}
    assert values == {"a": 1, "b": None, "c": 3}


def test_newly_ready_task_runs_next():
    dsk = {
        "a": 1,
        "b": 2,
        "a2": (operator.neg, "a"),
        "b2": (operator.neg, "b"),
        "out": (operator.add, "a2", "b2"),
    }
    _, _, order, _ = drain(dsk, ["out"])
    assert order == ["a", "a2", "b", "b2", "out"]


def test_claim_chain_takes_linear_successors():
    dsk = {
        "x0": 0,
        **{f"x{i + 1}": (operator.neg, f"x{i}") for i in range(5)},
        "y": (operator.add, "x5", "x2"),
    }
    graph = compile_graph(dsk, ["y"])
    state = RunState(graph)
    start = state.ready.pop()
    chain = state.claim_chain(start, lambda j: True)
    # x2 is read by x3 and by y: the chain x0 -> x1 -> x2 stops there.
    assert [graph.keys[i] for i in chain] == ["x0", "x1", "x2"]
    for i in chain:
        state.finish(i, run_spec(graph.specs[i], state.values))
    assert [graph.keys[i] for i in state.ready] == ["x3"]  # claimed x1, x2 never appeared


def test_a_long_task_chain_state():
    n = LONG_CHAIN
    dsk = {"x0": 0, **{f"x{i + 1}": (operator.add, f"x{i}", 1) for i in range(n)}}
    graph = compile_graph(dsk, [f"x{n}"])
    state = RunState(graph)
    while state.ready:
        i = state.ready.pop()
        state.finish(i, run_spec(graph.specs[i], state.values))
    assert state.values[graph.index[f"x{n}"]] == n
