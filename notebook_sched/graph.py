"""The task-graph spec: parsing, validation, culling and ordering.  Pure data, no I/O.

A graph is a mapping ``key -> value`` in the Dask specification:

* a tuple whose first element is callable is a task: ``(add, "x", 1)``;
* a hashable value that is a key of the graph is a reference to that key's result
  (a top-level value that is only a key is an *alias*);
* lists are walked recursively (``(sum, ["a", "b"])``), tasks may nest;
* anything else (numbers, strings that are not keys, dicts, sets, arrays) is literal data;
* a duck-typed Dask ``GraphNode`` (anything with ``.dependencies`` that is called with a
  ``{dependency key: value}`` dict) computes itself.  Dask 2026 collections produce these.

:func:`compile_graph` turns the part of a graph needed for some keys into a
:class:`CompiledGraph`: integer indices instead of keys, a tuple of dependency indices
per task, the dependents, and one compact *spec* per task telling the engine how to run
it.  Everything here is iterative, so a chain of a million tasks compiles without
touching the recursion limit.

Spec kinds (``spec[0]``):

``CALL``   ``(CALL, func, args, slots)``: ``func(*args)`` after ``args[pos] = value of dep``
           for every ``(pos, dep)`` in ``slots``.  The fast path: one flat call whose
           arguments are keys or plain literals.
``VALUE``  ``(VALUE, literal)``.
``ALIAS``  ``(ALIAS, dep)``: the result of another task.
``EXPR``   ``(EXPR, expression, {key: dep})``: nested tasks and lists, evaluated by
           :func:`evaluate` with the dependencies' values.
``NODE``   ``(NODE, graph_node, {key: dep})``: ``graph_node({key: value})``.

Ordering is a depth-first post-order walk from the requested keys, visiting a task's
dependencies in argument order.  It is the order a sequential program would use, so
running ready tasks in this order (last-ready first) finishes one branch of a reduction
before starting the next and keeps few intermediate results alive.  The same walk finds
cycles.
"""

from __future__ import annotations

import difflib
import gc
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

__all__ = [
    "CALL",
    "VALUE",
    "ALIAS",
    "EXPR",
    "NODE",
    "GraphError",
    "CycleError",
    "CompiledGraph",
    "compile_graph",
    "evaluate",
    "flatten_keys",
    "is_task",
    "is_graph_node",
    "key_split",
    "to_mapping",
]

CALL, VALUE, ALIAS, EXPR, NODE = range(5)


class GraphError(ValueError):
    """The graph cannot run as written; the message names the key and the fix."""


class CycleError(GraphError, RuntimeError):
    """The graph has a cycle.  Also a RuntimeError, which is what Dask raises."""


def is_task(value: Any) -> bool:
    """True for ``(callable, *args)`` tuples."""
    return type(value) is tuple and len(value) > 0 and callable(value[0])


def is_graph_node(value: Any) -> bool:
    """True for Dask ``GraphNode``-like objects: callable with a ``dependencies`` set."""
    return (
        type(value) not in _PLAIN_TYPES
        and hasattr(value, "dependencies")
        and callable(value)
        and not isinstance(value, type)
    )


_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None), tuple, list, dict, set})


def _is_key(value: Any, dsk: Mapping) -> bool:
    try:
        return value in dsk
    except TypeError:  # unhashable values are data
        return False


def key_split(key: Hashable) -> str:
    """The name part of a key, as Dask's ``key_split``: ``('sum-ab12', 3) -> 'sum'``."""
    if type(key) is tuple and key:
        key = key[0]
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    if not isinstance(key, str):
        return str(key)
    words = key.split("-")
    kept = [words[0]]
    for word in words[1:]:
        if len(word) >= 8 and all(c in "0123456789abcdef" for c in word):
            break  # a token
        if word.isdigit():
            break
        kept.append(word)
    return "-".join(kept)


def to_mapping(dsk: Any) -> Mapping:
    """Accept a Mapping, a HighLevelGraph, or anything with ``__dask_graph__()``."""
    if isinstance(dsk, Mapping):
        return dsk
    graph_method = getattr(dsk, "__dask_graph__", None)
    if graph_method is not None:
        graph = graph_method()
        if isinstance(graph, Mapping):
            return graph
    raise TypeError(
        f"A task graph must be a mapping of key -> task, or have __dask_graph__(); "
        f"got {type(dsk).__name__}: {_short_repr(dsk)}"
    )


def flatten_keys(keys: Any, dsk: Mapping) -> list:
    """The requested keys in order.  A list is a (nested) list of keys; anything else a key."""
    if not isinstance(keys, list):
        return [keys]
    flat: list = []
    stack = [iter(keys)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def evaluate(expr: Any, refs: Mapping) -> Any:
    """Evaluate a nested task/list expression given ``{key: value}`` for its references.

    Recursion here follows the nesting inside one task, never the depth of the graph.
    """
    typ = type(expr)
    if typ is tuple:
        if expr and callable(expr[0]):
            return expr[0](*[evaluate(arg, refs) for arg in expr[1:]])
    elif typ is list:
        return [evaluate(item, refs) for item in expr]
    elif is_graph_node(expr):
        return expr({k: refs[k] for k in expr.dependencies})
    try:
        if expr in refs:
            return refs[expr]
    except TypeError:
        pass
    return expr


class CompiledGraph:
    """The needed part of a graph, indexed by integers.  Immutable once built.

    ``keys[i]`` is the key of task ``i``; ``deps[i]`` the distinct tasks it reads;
    ``dependents[i]`` the tasks that read it; ``specs[i]`` how to run it (see module
    docstring); ``priority[i]`` its rank in the memory-friendly order (lower runs
    first); ``outputs`` the indices of the requested keys, in request order;
    ``chain_next[i]`` the task that continues a linear chain from ``i`` (its only
    dependent, which has no other dependency), or -1.
    """

    __slots__ = (
        "keys",
        "index",
        "deps",
        "dependents",
        "specs",
        "priority",
        "outputs",
        "chain_next",
        "source",
    )

    def __init__(self, keys, index, deps, dependents, specs, priority, outputs, source):
        self.keys = keys
        self.index = index
        self.deps = deps
        self.dependents = dependents
        self.specs = specs
        self.priority = priority
        self.outputs = outputs
        self.source = source
        output_set = set(outputs)
        chain_next = [-1] * len(keys)
        for i, users in enumerate(dependents):
            if len(users) == 1 and i not in output_set:
                user = users[0]
                if len(deps[user]) == 1:
                    chain_next[i] = user
        self.chain_next = chain_next

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"<CompiledGraph tasks={len(self.keys)} outputs={len(self.outputs)}>"

    def inputs_of(self, i: int, values: list) -> dict:
        """``{dependency key: value}`` of task ``i`` from an engine's value table."""
        return {self.keys[d]: values[d] for d in self.deps[i]}


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _called_too_early(key: Hashable, value: tuple, dsk: Mapping) -> GraphError:
    head = value[0]
    args = ", ".join(_short_repr(a, 30) for a in value[1:])
    return GraphError(
        f"Task {key!r} is a tuple whose first element is not a function but "
        f"{_short_repr(head, 40)} (of type {type(head).__name__}), and it refers to other keys, "
        f"so it looks like a task whose function was called while building the graph.\n"
        f"Probably you wrote something like:\n"
        f"    dsk[{key!r}] = (f(x), {args})   # incorrect! f ran now, not in the graph\n"
        f"Instead, put the function itself first and its arguments after it:\n"
        f"    dsk[{key!r}] = (f, x, {args})   # correct\n"
        f"(A tuple that is meant as plain data must not contain keys of the graph.)"
    )


def _parse(key: Hashable, value: Any, dsk: Mapping) -> tuple[tuple, list]:
    """Classify one graph value: returns ``(spec with keys, dependency keys)``.

    The spec still names dependencies by key; :func:`compile_graph` maps them to indices.
    """
    typ = type(value)
    if typ is tuple and value:
        if _is_key(value, dsk) and value != key:
            return (ALIAS, value), [value]
        head = value[0]
        if callable(head):
            slots = []
            flat = True
            for pos, arg in enumerate(value[1:]):
                if _is_key(arg, dsk):
                    slots.append((pos, arg))
                elif type(arg) in (list, tuple) or is_graph_node(arg):
                    flat = False
                    break
            if flat:
                return (CALL, head, value[1:], slots), [k for _, k in slots]
            return _parse_expression(value, dsk)
        if any(_is_key(item, dsk) for item in value):
            raise _called_too_early(key, value, dsk)
        return (VALUE, value), []
    if typ is list:
        return _parse_expression(value, dsk)
    if typ in _PLAIN_TYPES:
        if value != key and _is_key(value, dsk):
            return (ALIAS, value), [value]
        return (VALUE, value), []
    if is_graph_node(value):
        node_deps = list(value.dependencies)
        missing = [d for d in node_deps if not _is_key(d, dsk)]
        if missing:
            raise GraphError(
                f"Task {key!r} depends on {missing[0]!r}, which is not in the graph. "
                f"Add a task for {missing[0]!r} or compute from a graph that has it"
                f"{_did_you_mean(missing[0], dsk)}."
            )
        return (NODE, value, node_deps), node_deps
    if _is_key(value, dsk) and value != key:
        return (ALIAS, value), [value]
    return (VALUE, value), []


def _parse_expression(expr: Any, dsk: Mapping) -> tuple[tuple, list]:
    """Dependencies of a nested task/list expression, found without recursion."""
    found: dict = {}  # insertion-ordered: dependencies in reading order
    stack = [expr]
    while stack:
        item = stack.pop()
        typ = type(item)
        if typ is tuple and item and callable(item[0]):
            stack.extend(reversed(item[1:]))
        elif typ is list:
            stack.extend(reversed(item))
        elif typ is not tuple and is_graph_node(item):
            for dep in item.dependencies:
                found[dep] = None
        elif _is_key(item, dsk):
            found[item] = None
    dep_keys = list(found)
    return (EXPR, expr, dep_keys), dep_keys


def _did_you_mean(key: Any, keys: Iterable) -> str:
    if not isinstance(key, str):
        return ""
    names = [k for k in keys if isinstance(k, str)]
    close = difflib.get_close_matches(key, names, n=3)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def missing_key_error(key: Any, dsk: Mapping) -> KeyError:
    sample = ", ".join(_short_repr(k, 40) for k in list(dsk)[:5])
    more = ", ..." if len(dsk) > 5 else ""
    return KeyError(
        f"{key!r} is not a key of the graph{_did_you_mean(key, dsk)}; "
        f"ask for one of its keys ({sample}{more})"
    )


def compile_graph(dsk: Mapping, output_keys: list) -> CompiledGraph:
    """Cull ``dsk`` to what ``output_keys`` need, validate it, and index it.

    Raises KeyError for a requested key that is not in the graph and GraphError for
    a cycle, a missing dependency or a task whose function was called too early,
    before any task runs.  Indices are handed out as keys are discovered, so one
    breadth-first pass parses every needed value and maps its references.
    """
    index: dict = {}
    keys: list = []
    for key in output_keys:
        if not _is_key(key, dsk):
            raise missing_key_error(key, dsk)
        if key not in index:
            index[key] = len(keys)
            keys.append(key)

    specs: list = []
    deps: list = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of small tuples would trigger quadratic GC passes
    try:
        pos = 0
        while pos < len(keys):
            key = keys[pos]
            pos += 1
            value = dsk[key]
            spec = None
            if type(value) is tuple and value and callable(value[0]):
                # Fast path: a flat call whose arguments are keys or plain literals.
                slots = []
                for arg_pos, arg in enumerate(value[1:]):
                    typ = type(arg)
                    if typ is str or typ is tuple or typ is int or typ is bytes:
                        try:
                            known = arg in dsk
                        except TypeError:
                            known = False
                        if known:
                            slots.append((arg_pos, arg))
                        elif typ is tuple:
                            break
                    elif typ is list or is_graph_node(arg):
                        break
                else:
                    if value != key and _is_key(value, dsk):
                        spec, dep_keys = (ALIAS, value), [value]
                    else:
                        spec = (CALL, value[0], value[1:], slots)
                        dep_keys = [k for _, k in slots]
            if spec is None:
                spec, dep_keys = _parse(key, value, dsk)
            dep_idx = []
            for dep in dep_keys:
                d = index.get(dep)
                if d is None:
                    d = index[dep] = len(keys)
                    keys.append(dep)
                dep_idx.append(d)
            kind = spec[0]
            if kind == CALL:
                spec = (CALL, spec[1], spec[2], tuple((p, index[k]) for p, k in spec[3]))
            elif kind == ALIAS:
                spec = (ALIAS, dep_idx[0])
            elif kind == EXPR or kind == NODE:
                spec = (kind, spec[1], {k: index[k] for k in spec[2]})
            specs.append(spec)
            deps.append(tuple(dep_idx) if len(dep_idx) < 2 else tuple(dict.fromkeys(dep_idx)))

        n = len(keys)
        dependents: list = [[] for _ in range(n)]
        for i in range(n):
            for d in deps[i]:
                dependents[d].append(i)
        outputs = [index[k] for k in output_keys]
        priority = _postorder(keys, deps, outputs)
    finally:
        if gc_was_enabled:
            gc.enable()
    return CompiledGraph(keys, index, deps, dependents, specs, priority, outputs, dsk)


def _postorder(keys: list, deps: list, roots: list) -> list:
    """Rank tasks in depth-first post-order from ``roots``; raise CycleError on a cycle."""
    n = len(keys)
    rank = [0] * n
    color = bytearray(n)  # 0 unseen, 1 on the current path, 2 done
    counter = 0
    for root in roots:
        if color[root]:
            continue
        path = [root]
        positions = [0]
        color[root] = 1
        while path:
            node = path[-1]
            pos = positions[-1]
            node_deps = deps[node]
            if pos < len(node_deps):
                positions[-1] = pos + 1
                dep = node_deps[pos]
                state = color[dep]
                if state == 0:
                    color[dep] = 1
                    path.append(dep)
                    positions.append(0)
                elif state == 1:
                    raise _cycle_error(keys, path[path.index(dep) :] + [dep])
            else:
                path.pop()
                positions.pop()
                color[node] = 2
                rank[node] = counter
                counter += 1
    return rank


def _cycle_error(keys: list, cycle: list) -> CycleError:
    # ``cycle`` runs from a task to the task it depends on; show it as "needs" arrows.
    shown = " -> ".join(repr(keys[i]) for i in cycle)
    return CycleError(
        f"The graph has a cycle: {shown} (each key needs the next one). "
        f"A task cannot depend on its own result; break the cycle by removing one of "
        f"these references or by giving one of the tasks a different input."
    )
