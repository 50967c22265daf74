"""The task-graph spec: parsing, validation, culling and ordering.  Pure data, no I/O.

A graph is a mapping ``key -> value`` in the Dask specification:

* a tuple whose first element is callable is a task: ``(add, "x", 1)``;
* a value that *names a key* is a reference to that key's result (a top-level value
  that only names a key is an *alias*).  Dask's rule decides what names a key
  (``dask._task_spec.convert_legacy_task``): an instance of ``str``, ``int``,
  ``float`` or ``tuple`` (so also ``bool`` and NumPy's float and str scalars) that
  is a key of the graph.  ``bytes``, ``None`` and other hashables never name a key,
  even when the graph has such a key: they are data;
* a Dask ``TaskRef`` (duck-typed: a ``TaskRef`` class in its MRO, or
  ``__dask_future__``) names its ``.key``;
* lists, tuples that are not tasks, sets and frozensets are walked (``(sum, ["a",
  "b"])``, ``("x", "float64") -> (1, "float64")``), tasks may nest; dicts are not
  walked (Dask does not look inside them either);
* anything else (numbers, strings that are not keys, dicts, arrays) is literal data;
* a duck-typed Dask ``GraphNode`` (anything with ``.dependencies`` that is called with a
  ``{dependency key: value}`` dict) computes itself.  Dask 2026 collections produce these.

One deliberate difference from Dask: a top-level tuple whose head is plain data that
is not a key and holds none (a number, a string, a list of plain values), followed by
keys (``(f(x), "a")``), is refused with an error showing ``(f, x, "a")``, because it
is almost always a function called too early.

:func:`compile_graph` turns the part of a graph needed for some keys into a
:class:`CompiledGraph`: integer indices instead of keys, a tuple of dependency indices
per task, the dependents, and one compact *spec* per task telling the engine how to run
it.  Everything here is iterative, so a chain of a million tasks compiles without
touching the recursion limit, and nesting inside one task (3,000 levels of lists or
tasks) is walked and evaluated with explicit stacks too.

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
dependencies in argument order (for a Dask ``Task`` too: ``node_dependencies`` reads
its arguments, not its dependency set, whose order follows the hash seed).  It is the
order a sequential program would use, so running ready tasks in this order (last-ready
first) finishes one branch of a reduction before starting the next and keeps few
intermediate results alive.  The same walk finds cycles.
"""

from __future__ import annotations

import difflib
import gc
import itertools
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from .graph_walk import (
    NO_KEY,
    NONE_TYPE,
    PLAIN_TYPES,
    REF_TYPES,
    WALKED,
    evaluate,
    is_graph_node,
    names_key,
    needs_walk,
    node_dependencies,
    taskref_key,
)

__all__ = [
    "first",
    "CALL",
    "VALUE",
    "ALIAS",
    "EXPR",
    "NODE",
    "GraphError",
    "CycleError",
    "CompiledGraph",
    "Known",
    "compile_graph",
    "closest_keys",
    "evaluate",
    "flatten_keys",
    "is_task",
    "is_graph_node",
    "names_key",
    "key_split",
    "remap_spec",
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


def _is_key(value: Any, dsk: Mapping) -> bool:
    """True when ``value`` is a key of ``dsk`` (any hashable: requested keys)."""
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


def flatten_keys(keys: Any) -> list:
    """The requested keys in order.  A list is a (nested) list of keys; anything else a key.

    Sets, dicts and iterators are refused: their order (or one-shot nature) would make
    the shape of the answer a guess.
    """
    if not isinstance(keys, list):
        _check_key_argument(keys)
        return [keys]
    flat: list = []
    stack = [iter(keys)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            _check_key_argument(item)
            flat.append(item)
        else:
            stack.pop()
    return flat


def _check_key_argument(keys: Any) -> None:
    if isinstance(keys, (set, frozenset, dict)) or (
        hasattr(keys, "__next__") and not isinstance(keys, REF_TYPES)
    ):
        raise TypeError(
            f"keys must be a key or a (nested) list of keys, not a {type(keys).__name__} "
            f"({_short_repr(keys, 60)}): pass a key or a list of keys, e.g. "
            f"get(dsk, ['a', 'b']) or get(dsk, list(keys))."
        )


class CompiledGraph:
    """The needed part of a graph, indexed by integers.

    ``keys[i]`` is the key of task ``i``; ``deps[i]`` the distinct tasks it reads;
    ``dependents[i]`` the tasks that read it; ``specs[i]`` how to run it (see module
    docstring); ``priority[i]`` its rank in the memory-friendly order (lower runs
    first); ``outputs`` the indices of the requested keys, in request order;
    ``chain_next[i]`` the task that continues a linear chain from ``i`` (its only
    dependent, which has no other dependency), or -1; ``source`` the mapping it was
    compiled from (the caller's, also when a planner substituted results).

    ``on_result`` is None or ``{task index: hook}``: the task runner calls
    ``hook(value)`` in the process where task ``i`` ran, right after it succeeded
    (an exception in a hook only warns).  Planners fill it (``plan.py``); a hook must
    be picklable, since it travels with its task to worker processes.  ``home``: None
    or the hooks whose ``home`` is true, which want the result in the caller too (a
    backend running the task elsewhere sends it back and calls ``plan.call_home``).

    The structure (keys, deps, order) does not change once built; before the run
    starts, the engine may still rewrite specs in place (``engine.settle_literals``
    turns Dask's literal nodes into ``VALUE``/``ALIAS``) and set ``on_result``.
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
        "on_result",
        "home",
    )

    def __init__(self, keys, index, deps, dependents, specs, priority, outputs, source):
        self.on_result: dict | None = None
        self.home: dict | None = None
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


def _called_too_early(key: Hashable, value: tuple) -> GraphError:
    head = value[0]
    name = _short_repr(key, 200)
    args = ", ".join(_short_repr(a, 30) for a in value[1:])
    return GraphError(
        f"Task {name} is a tuple whose first element is not a function but "
        f"{_short_repr(head, 40)} (of type {type(head).__name__}), and it refers to other keys, "
        f"so it looks like a task whose function was called while building the graph.\n"
        f"Probably you wrote something like:\n"
        f"    dsk[{name}] = (f(x), {args})   # incorrect! f ran now, not in the graph\n"
        f"Instead, put the function itself first and its arguments after it:\n"
        f"    dsk[{name}] = (f, x, {args})   # correct\n"
        f"(A tuple that is meant as plain data must not contain keys of the graph.)"
    )


def remap_spec(spec: tuple, table: Any) -> tuple:
    """``spec`` with every dependency reference ``d`` replaced by ``table[d]``.

    The one place that knows where each spec kind keeps its references (the slots of
    ``CALL``, the target of ``ALIAS``, the ``{key: ref}`` of ``EXPR``/``NODE``).
    ``table`` is anything indexable: ``compile_graph`` maps keys to indices with its
    ``index`` dict, the cluster turns indices into task ids (a ``range`` shifts them by
    a run's base), the dask backend renumbers them to positions among a task's inputs.
    """
    kind = spec[0]
    if kind == CALL:
        return (CALL, spec[1], spec[2], tuple([(pos, table[d]) for pos, d in spec[3]]))
    if kind == ALIAS:
        return (ALIAS, table[spec[1]])
    if kind == EXPR or kind == NODE:
        return (kind, spec[1], {key: table[d] for key, d in spec[2].items()})
    return spec  # VALUE: no references


class Known:
    """A result known before the run (a planner's), standing in for its task's value:
    compiled as a ``VALUE`` whatever the result looks like (a key, a tuple...)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"Known({_short_repr(self.value, 60)})"


def _parse(key: Hashable, value: Any, dsk: Mapping) -> tuple[tuple, list]:
    """Classify one graph value: returns ``(spec with keys, dependency keys)``.

    The spec still names dependencies by key (``EXPR``/``NODE`` as ``{key: key}``);
    :func:`compile_graph` maps them to indices with :func:`remap_spec`.
    The rule follows Dask's ``convert_legacy_task`` (see the module docstring).
    """
    typ = type(value)
    if typ is Known:
        return (VALUE, value.value), []
    if typ is tuple and value and callable(value[0]):
        slots = []
        for pos, arg in enumerate(value[1:]):
            if names_key(arg, dsk) and not (type(arg) is tuple and arg and callable(arg[0])):
                slots.append((pos, arg))
            elif needs_walk(arg, dsk):
                return _parse_expression(key, value, dsk)
        return (CALL, value[0], value[1:], slots), [k for _, k in slots]
    if is_graph_node(value):
        node_deps = node_dependencies(value)
        for dep in node_deps:
            if not _is_key(dep, dsk):
                raise _missing_dependency(key, dep, dsk)
        return (NODE, value, {dep: dep for dep in node_deps}), node_deps
    if names_key(value, dsk) and value != key:  # names_key first: arrays compare elementwise
        return (ALIAS, value), [value]
    ref = taskref_key(value)
    if ref is not NO_KEY:
        if not _is_key(ref, dsk):
            raise _missing_dependency(key, ref, dsk)
        return (ALIAS, ref), [ref]
    if typ is list:
        return _parse_expression(key, value, dsk)
    if isinstance(value, WALKED) and needs_walk(value, dsk):
        if typ is tuple:
            head = value[0]
            if (
                not needs_walk(head, dsk)  # plain data, even a list: what f(x) returns
                and not names_key(head, dsk)
                and any(names_key(item, dsk) for item in value[1:])
            ):
                raise _called_too_early(key, value)
        return _parse_expression(key, value, dsk)
    return (VALUE, value), []


def _parse_expression(key: Hashable, expr: Any, dsk: Mapping) -> tuple[tuple, list]:
    """Dependencies of a nested task/list expression, found without recursion."""
    found: dict = {}  # insertion-ordered: dependencies in reading order
    stack = [expr]
    while stack:
        item = stack.pop()
        typ = type(item)
        if typ is tuple and item and callable(item[0]):
            stack.extend(reversed(item[1:]))
        elif names_key(item, dsk):
            found[item] = None
        elif isinstance(item, WALKED):
            stack.extend(reversed(item) if typ is not set and typ is not frozenset else item)
        elif typ not in PLAIN_TYPES:
            ref = taskref_key(item)
            if ref is not NO_KEY:
                if not _is_key(ref, dsk):
                    raise _missing_dependency(key, ref, dsk)
                found[ref] = None
            elif is_graph_node(item):
                for dep in node_dependencies(item):
                    if not _is_key(dep, dsk):
                        raise _missing_dependency(key, dep, dsk)
                    found[dep] = None
    dep_keys = list(found)
    return (EXPR, expr, {dep: dep for dep in dep_keys}), dep_keys


def _missing_dependency(key: Hashable, dep: Any, dsk: Mapping) -> GraphError:
    name, dep_name = _short_repr(key, 200), _short_repr(dep, 200)
    return GraphError(
        f"Task {name} depends on {dep_name}, which is not in the graph. "
        f"Add a task for {dep_name} or compute from a graph that has it"
        f"{_did_you_mean(dep, dsk)}."
    )


MAX_KEYS_SCANNED = 200_000  # a "did you mean" hint must stay cheap on huge graphs


def closest_keys(texts: Iterable[str], keys: Iterable, n: int = 3) -> dict[str, list[str]]:
    """For each of ``texts``, up to ``n`` string keys most like it, best first.

    The one "did you mean" of the package: :mod:`difflib`'s similarity (as Python's
    own suggestions for names), over at most ``MAX_KEYS_SCANNED`` keys; a key equal
    to the text is not a suggestion."""
    names = [k for k in itertools.islice(keys, MAX_KEYS_SCANNED) if isinstance(k, str)]
    return {
        text: [m for m in difflib.get_close_matches(text, names, n=n + 1) if m != text][:n]
        for text in texts
    }


def _did_you_mean(key: Any, keys: Iterable) -> str:
    if not isinstance(key, str):
        return ""
    close = closest_keys([key], keys)[key]
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def missing_key_error(key: Any, dsk: Mapping) -> KeyError:
    sample = ", ".join(_short_repr(k, 40) for k in list(dsk)[:5])
    more = ", ..." if len(dsk) > 5 else ""
    return KeyError(
        f"{_short_repr(key, 200)} is not a key of the graph{_did_you_mean(key, dsk)}; "
        f"ask for one of its keys ({sample}{more})"
    )


def compile_graph(dsk: Mapping, output_keys: list, known: Mapping | None = None) -> CompiledGraph:
    """Cull ``dsk`` to what ``output_keys`` need, validate it, and index it.

    Raises KeyError for a requested key that is not in the graph and GraphError for
    a cycle, a missing dependency or a task whose function was called too early,
    before any task runs.  Indices are handed out as keys are discovered, so one
    breadth-first pass parses every needed value and maps its references.

    ``known`` (``{key: result}``, e.g. a cache's hits) makes those keys literal
    values: their tasks do not run and what only they needed is culled.  Keys of
    ``known`` that are not in ``dsk`` are ignored.  ``source`` stays ``dsk``.
    """
    source = dsk
    if known:
        dsk = _with_known(dsk, known)
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
        for key in keys:  # grows as dependencies are discovered: a breadth-first pass
            value = dsk[key]
            slots = _flat_call_slots(value, dsk)
            if slots is not None:  # the fast path: its slots are mapped here, no remap_spec
                if not slots:
                    specs.append((CALL, value[0], value[1:], ()))
                    deps.append(())
                    continue
                mapped = []
                for arg_pos, dep in slots:
                    d = index.get(dep)
                    if d is None:
                        d = index[dep] = len(keys)
                        keys.append(dep)
                    mapped.append((arg_pos, d))
                specs.append((CALL, value[0], value[1:], tuple(mapped)))
                if len(mapped) == 1:
                    deps.append((mapped[0][1],))
                elif len(mapped) == 2:
                    one, two = mapped[0][1], mapped[1][1]
                    deps.append((one, two) if one != two else (one,))
                else:
                    deps.append(tuple(dict.fromkeys([d for _, d in mapped])))
                continue
            spec, dep_keys = _parse(key, value, dsk)
            dep_idx = []
            for dep in dep_keys:
                d = index.get(dep)
                if d is None:
                    d = index[dep] = len(keys)
                    keys.append(dep)
                dep_idx.append(d)
            specs.append(remap_spec(spec, index))
            deps.append(tuple(dep_idx) if len(dep_idx) < 2 else tuple(dict.fromkeys(dep_idx)))

        n = len(keys)
        dependents: list = [[] for _ in range(n)]
        for i, task_deps in enumerate(deps):
            for d in task_deps:
                dependents[d].append(i)
        outputs = [index[k] for k in output_keys]
        priority = _postorder(keys, deps, outputs)
    finally:
        if gc_was_enabled:
            gc.enable()
    return CompiledGraph(keys, index, deps, dependents, specs, priority, outputs, source)


def _flat_call_slots(value: Any, dsk: Mapping) -> list | None:
    """``[(argument position, key)]`` of a flat call of keys and common literals, or None
    for anything else, which goes to :func:`_parse` (the same rule in full;
    ``test_graph_properties`` checks that they agree)."""
    if type(value) is not tuple or not value or not callable(value[0]):
        return None
    slots = []
    for arg_pos, arg in enumerate(value[1:]):
        typ = type(arg)
        if typ is str or typ is int or typ is float or typ is bool:
            if arg in dsk:
                slots.append((arg_pos, arg))
        elif typ is tuple:
            try:
                known = arg in dsk
            except TypeError:
                return None
            if not known or (arg and callable(arg[0])):
                return None
            slots.append((arg_pos, arg))
        elif typ is not bytes and typ is not NONE_TYPE and typ is not dict:
            return None
    return slots


def _with_known(dsk: Mapping, known: Mapping) -> dict:
    """A copy of ``dsk`` where the keys of ``known`` hold :class:`Known` results."""
    merged = dict(dsk)
    for key, value in known.items():
        if _is_key(key, merged):
            merged[key] = Known(value)
    return merged


def _postorder(keys: list, deps: list, roots: list) -> list:
    """Rank tasks in depth-first post-order from ``roots``; raise CycleError on a cycle.

    Iterative (no recursion over depth): a stack of ``(task, iterator over its
    dependencies)``; a dependency with no dependencies of its own is ranked at once
    instead of being pushed (half the tasks of a tree, all the leaves of a fan-in)."""
    n = len(keys)
    rank = [0] * n
    color = bytearray(n)  # 0 unseen, 1 on the current path, 2 done
    counter = 0
    for root in roots:
        if color[root]:
            continue
        color[root] = 1
        stack = [(root, iter(deps[root]))]
        while stack:
            node, pending = stack[-1]
            for dep in pending:
                state = color[dep]
                if state == 0:
                    below = deps[dep]
                    if below:
                        color[dep] = 1
                        stack.append((dep, iter(below)))
                        break
                    color[dep] = 2
                    rank[dep] = counter
                    counter += 1
                elif state == 1:
                    path = [task for task, _ in stack]
                    raise _cycle_error(keys, path[path.index(dep) :] + [dep])
            else:
                stack.pop()
                color[node] = 2
                rank[node] = counter
                counter += 1
    return rank


CYCLE_SHOWN = 5  # keys shown at each end of a long cycle


def _cycle_error(keys: list, cycle: list) -> CycleError:
    # ``cycle`` runs from a task to the task it depends on; show it as "needs" arrows.
    if len(cycle) > 2 * CYCLE_SHOWN + 1:
        head = " -> ".join(_short_repr(keys[i], 60) for i in cycle[:CYCLE_SHOWN])
        tail = " -> ".join(_short_repr(keys[i], 60) for i in cycle[-CYCLE_SHOWN:])
        hidden = len(cycle) - 2 * CYCLE_SHOWN
        shown = f"{head} -> ... ({hidden} more keys) ... -> {tail} ({len(cycle) - 1} keys in all)"
    else:
        shown = " -> ".join(_short_repr(keys[i], 60) for i in cycle)
    return CycleError(
        f"The graph has a cycle: {shown} (each key needs the next one). "
        f"A task cannot depend on its own result; break the cycle by removing one of "
        f"these references or by giving one of the tasks a different input."
    )


def first(results: Any) -> Any:
    """``results[0]``: the ``__dask_postcompute__`` of a collection that is one key's
    value (``Delayed``), by which the layers below it recognise one without its type."""
    return results[0]
