"""The graph-run state machine shared by every local backend, and the run envelope.

:class:`RunState` is a pure object: it knows which tasks are ready, records results,
releases intermediate results, and never touches a thread, a process or a clock.
Backends drive it:

* ``sync`` pops a ready task, runs it, calls :meth:`RunState.finish`, repeat;
* ``threads`` does the same from several threads under one lock, and a thread that
  makes a task ready usually runs it next itself (no queue hop);
* ``processes`` pops batches, ships them to worker processes, and feeds the results
  back; it :meth:`claims <RunState.claim_chain>` linear chains so a whole chain
  travels in one message and stays in one worker.

State, all indexed by task number (see :class:`~notebook_sched.graph.CompiledGraph`):

``ready``     a stack of runnable tasks; the top is the next to run.  Newly ready tasks
              are pushed on top in priority order, so work continues depth-first
              where it just produced data (memory-friendly, cache-friendly).
``waiting``   per task, how many of its dependencies are unfinished.
``holders``   per task, how many unfinished tasks still read its result (+1 for
              requested outputs); at zero the result is dropped.
``values``    per task, its result (None once released).
``claimed``   per task, 1 when a backend took it as part of a chain; it is then not
              pushed to ``ready`` when it becomes runnable.
``tick``      None, or a callable that ``finish`` calls every ``TICK_TASKS`` finished
              tasks, last: the run's :class:`~notebook_sched.heap_trim.HeapTrimmer`,
              which hands released results' memory back to the system (it reads the
              clock; this object still does not).

:func:`execute_graph` is the envelope every backend shares: normalise the graph,
plan (the run's planners may substitute known results and hook results, see
``plan.py``; skipped when there are none), compile (cull, validate, order), emit
``graph_started``, run the driver, emit ``graph_finished``, tell the planners, and
pack the requested results as nested tuples.  The driver gets the run's
:class:`~notebook_sched.reporter.Reporter`, the only way a backend emits task events
and records failures.  :func:`compile_planned` is the plan-and-compile stage alone,
for ``Client.compute``, which submits a graph without waiting for it.

Literals and aliases are not tasks: they are not reported to observers (no
``task_*`` event; ``RunInfo.task_keys`` leaves them out, so progress totals and Dask's
callbacks count only real work), and backends run them in the caller.  Dask's
``DataNode`` (a literal: ``dask.delayed(obj)``) and ``Alias`` arrive as graph nodes;
:func:`settle_literals` turns them into ``VALUE``/``ALIAS`` specs (duck-typed: a node
without dependencies that carries ``value``, a node whose only dependency is its
``target``), so the data stays in the caller and ``delayed(obj).compute() is obj``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from . import config
from .events import RunInfo, dispatcher
from .graph import (
    ALIAS,
    NODE,
    VALUE,
    CompiledGraph,
    compile_graph,
    flatten_keys,
    to_mapping,
)
from .heap_trim import TICK_TASKS, HeapTrimmer
from .plan import Plan
from .reporter import UNKNOWN, Reporter, task_failure
from .task_runner import run_spec, run_task
from .tracebacks import task_runner

TICK_MASK = TICK_TASKS - 1

task_runner(run_spec)  # tracebacks shown here: the frames below run_spec are the task's
task_runner(run_task)  # ... and below run_task, which runs a call itself (sync's loop)

__all__ = [
    "RunState",
    "run_spec",
    "execute_graph",
    "compile_planned",
    "task_failure",
    "Reporter",
    "UNKNOWN",
    "check_workers",
    "check_positive",
]


class RunState:
    """Ready/waiting/release bookkeeping of one run.  Not thread-safe: callers lock."""

    __slots__ = (
        "graph",
        "ready",
        "waiting",
        "holders",
        "values",
        "claimed",
        "remaining",
        "tick",
        "_deps",
        "_dependents",
        "_priority",
    )

    def __init__(self, graph: CompiledGraph):
        self.graph = graph
        deps = graph.deps
        n = len(deps)
        self._deps = deps
        self._dependents = graph.dependents
        self._priority = graph.priority
        self.waiting = [len(d) for d in deps]
        holders = [len(users) for users in graph.dependents]
        for out in graph.outputs:
            holders[out] += 1  # requested results are never released
        self.holders = holders
        self.values: list = [None] * n
        self.claimed = bytearray(n)
        ready = [i for i in range(n) if not deps[i]]
        ready.sort(key=self._priority.__getitem__, reverse=True)
        self.ready = ready
        self.remaining = n
        self.tick: Callable[[], None] | None = None  # called every TICK_TASKS finishes

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def finish(self, i: int, value: Any) -> None:
        """Record the result of task ``i``; release inputs; push tasks it made ready."""
        values = self.values
        values[i] = value
        remaining = self.remaining - 1
        self.remaining = remaining
        holders = self.holders
        for d in self._deps[i]:
            left = holders[d] - 1
            holders[d] = left
            if not left:
                values[d] = None
        users = self._dependents[i]
        if users:
            waiting = self.waiting
            claimed = self.claimed
            newly = []
            for u in users:
                left = waiting[u] - 1
                waiting[u] = left
                if not left and not claimed[u]:
                    newly.append(u)
            if newly:
                if len(newly) > 1:
                    newly.sort(key=self._priority.__getitem__, reverse=True)
                self.ready.extend(newly)
        if not remaining & TICK_MASK and self.tick is not None:
            self.tick()  # last, the state whole: the trimmer returns the released memory

    def claim_chain(
        self, i: int, shippable: Callable[[int], bool], limit: int = 1 << 62
    ) -> list[int]:
        """Task ``i`` and the linear chain that continues from it, claimed as one unit.

        A chain continues to ``j = chain_next[i]`` when ``j``'s only input is ``i`` and
        ``i``'s only reader is ``j``; ``shippable(j)`` lets the backend stop early, and
        at most ``limit`` tasks are claimed (the rest of the chain becomes ready later,
        when the last claimed task finishes).
        """
        chain = [i]
        nxt = self.graph.chain_next
        claimed = self.claimed
        j = nxt[i]
        while j >= 0 and len(chain) < limit and not claimed[j] and shippable(j):
            claimed[j] = 1
            chain.append(j)
            j = nxt[j]
        return chain


Driver = Callable[[CompiledGraph, RunState, Reporter], None]


def execute_graph(
    dsk: Any,
    keys: Any,
    driver: Driver,
    backend: str,
    *,
    observers=None,
    workers: int = 1,
    planners=None,
) -> Any:
    """Compile ``dsk`` for ``keys``, run it with ``driver`` and pack the results.

    ``driver(graph, state, reporter)`` must leave every requested output in
    ``state.values`` or raise; it reports tasks through ``reporter`` (``reporter.py``).
    ``planners`` (``plan.Planner``s) may substitute known results before compiling
    and hook results as they finish (see ``plan.py``).
    """
    __tracebackhide__ = True
    mapping = to_mapping(dsk)
    if type(mapping) is not dict:
        mapping = dict(mapping)  # one materialisation: HighLevelGraph lookups are slow
    flat = flatten_keys(keys)
    if not planners:
        graph = compile_graph(mapping, flat)
        return _run(graph, keys, flat, driver, backend, observers, workers, None)
    plan, graph = compile_planned(mapping, flat, planners)
    error = None
    try:
        return _run(graph, keys, flat, driver, backend, observers, workers, plan)
    except BaseException as exc:
        error = exc
        raise
    finally:
        plan.finished(graph, error)


def compile_planned(mapping: dict, flat: list, planners) -> tuple[Plan, CompiledGraph]:
    """The plan stage and compile: ask ``planners`` for known results, compile with
    them, collect their result hooks.  If this fails, the planners are told."""
    __tracebackhide__ = True
    plan = Plan(planners)
    try:
        graph = compile_graph(mapping, flat, plan.ask(mapping, flat))
        plan.prepare(graph)
    except BaseException as exc:
        plan.finished(None, exc)
        raise
    return plan, graph


def _run(graph, keys, flat, driver, backend, observers, workers, plan) -> Any:
    """Emit the run's events around ``driver`` and pack the results."""
    __tracebackhide__ = True
    events = dispatcher(observers)
    kinds = settle_literals(graph)
    skipped = not_tasks(kinds) if events else ()
    aliases: list = []
    if skipped:
        keys_of = graph.keys
        literals = {keys_of[i] for i in skipped if kinds[i] == VALUE}
        aliases = [keys_of[i] for i in skipped if kinds[i] == ALIAS]
        events = events.skipping(literals, set(aliases))
    run = None
    if events.graph_started or events.graph_finished:
        task_keys = graph.keys
        if skipped:
            skip = set(skipped)
            task_keys = [k for i, k in enumerate(task_keys) if i not in skip]
        run = RunInfo(backend, flat, task_keys, workers)
        if aliases:
            run.extra["aliases"] = aliases  # for observers with reports_aliases
        if plan is not None:
            run.extra["substituted"] = plan.substituted(graph)
        if events.graph_started:
            events.graph_started(run)
    state = RunState(graph)
    trimmer = HeapTrimmer.for_run() if config.get("trim_memory") else None
    state.tick = trimmer
    try:
        if state.remaining:  # nothing requested (get(dsk, []) or [[], []]): no driver
            driver(graph, state, Reporter(graph, events, backend, state.values, run))
    except BaseException as exc:
        if events.graph_finished:
            events.graph_finished(run, exc)
        raise
    if trimmer is not None:
        trimmer.finished()
    if events.graph_finished:
        events.graph_finished(run, None)
    return pack_results(keys, graph, state.values)


_kind = itemgetter(0)


def settle_literals(graph: CompiledGraph) -> bytes:
    """Make Dask ``DataNode``/``Alias`` specs plain ``VALUE``/``ALIAS`` ones (in place);
    return every task's spec kind, one byte each."""
    kinds = bytes(map(_kind, graph.specs))
    if NODE not in kinds:
        return kinds
    specs, deps = graph.specs, graph.deps
    settled = bytearray(kinds)
    at = kinds.find(NODE)
    while at >= 0:
        spec = _settled(specs[at], deps[at])
        if spec is not None:
            specs[at] = spec
            settled[at] = spec[0]
        at = kinds.find(NODE, at + 1)
    return bytes(settled)


def not_tasks(kinds: bytes) -> list[int]:
    """Indices of the literals and aliases, which are not reported as tasks."""
    if VALUE not in kinds and ALIAS not in kinds:
        return []
    return [i for i, kind in enumerate(kinds) if kind == VALUE or kind == ALIAS]


def _settled(spec: tuple, deps: tuple) -> tuple | None:
    node = spec[1]
    if not deps:
        if hasattr(node, "value") and hasattr(node, "typ"):  # Dask's DataNode
            return (VALUE, node.value)
        return None
    target = getattr(node, "target", _NO_TARGET)
    if len(deps) == 1 and target is not _NO_TARGET and spec[2].get(target) == deps[0]:
        return (ALIAS, deps[0])  # Dask's Alias
    return None


_NO_TARGET = object()


def pack_results(keys: Any, graph: CompiledGraph, values: list) -> Any:
    """Results shaped like ``keys``: a key gives a value, a list gives a tuple."""
    index = graph.index
    if not isinstance(keys, list):
        return values[index[keys]]

    def pack(item: Any) -> Any:
        if isinstance(item, list):
            return tuple(pack(sub) for sub in item)
        return values[index[item]]

    return pack(keys)


def check_positive(name: str, value: int | None, default: int) -> int:
    """Validate a count option such as ``num_workers``; None means ``default``."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a positive integer; got {value!r}. "
            f"Use e.g. {name}=4, or None for the default ({default})."
        )
    return value


def check_workers(num_workers: int | None) -> int:
    """Validate ``num_workers``; None means one per CPU."""
    return check_positive("num_workers", num_workers, os.cpu_count() or 1)
