"""What names a key, and the iterative walks over nested task expressions.  Pure data.

Split from ``graph.py`` (which re-exports what is public) so both stay small: this
module holds the one rule for which values are references, used by the compiler
(``graph._parse`` and its fast path) and by :func:`evaluate`, which runs nested
expressions in the caller and in worker processes alike.

The rule is Dask's (``dask._task_spec.convert_legacy_task``), followed exactly:

* an instance of ``str``, ``int``, ``float`` or ``tuple`` that is a key of the graph
  names that key (``True`` names the key ``1``; NumPy float and str scalars count,
  NumPy ints do not, as in Dask); ``bytes``, ``None`` and other hashables are data;
* a tuple whose head is callable is a task, even when it is also a key;
* lists, non-task tuples, sets and frozensets are walked; dicts are not;
* a ``TaskRef`` (duck-typed) names its ``.key``; a ``GraphNode`` computes itself.

Every walk uses an explicit stack: nesting depth inside one task is not limited by
the recursion limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "names_key",
    "taskref_key",
    "is_graph_node",
    "node_dependencies",
    "evaluate",
    "needs_walk",
    "NO_KEY",
    "PLAIN_TYPES",
    "NONE_TYPE",
    "REF_TYPES",
    "WALKED",
]

PLAIN_TYPES = frozenset(
    {int, float, str, bytes, bool, type(None), tuple, list, dict, set, frozenset, complex}
)


NONE_TYPE = type(None)
REF_TYPES = (str, int, float, tuple)  # what may name a key: Dask's rule (isinstance)
WALKED = (list, tuple, set, frozenset)  # containers whose items may name keys


def is_graph_node(value: Any) -> bool:
    """True for Dask ``GraphNode``-like objects: callable with a ``dependencies`` set."""
    return (
        type(value) not in PLAIN_TYPES
        and hasattr(value, "dependencies")
        and callable(value)
        and not isinstance(value, type)
    )


def node_dependencies(node: Any) -> list:
    """A ``GraphNode``'s dependency keys in argument order (first reference first).

    Dask keeps them in a frozenset, whose order follows the keys' hashes and so
    changes with ``PYTHONHASHSEED``; the depth-first order built on them would change
    with it (map_overlap's peak memory on ``sync`` moved by half).  A Dask ``Task``
    keeps its inputs in ``.args`` and ``.kwargs`` (containers such as ``List`` are
    Tasks too), so they are walked in order, without recursion, for ``TaskRef``
    objects.  A fused task (``Task(key, _execute_subgraph, {inner key: node},
    out key, ...)``, whose outer references come sorted by hash) is read from its
    output node inward, following references to inner nodes where they occur.  A
    dependency found nowhere (a node of another shape) comes last, in the order of
    its ``repr``, which does not depend on the hash seed either.
    """
    deps = node.dependencies
    if len(deps) < 2:
        return list(deps)
    found: dict = {}
    inner: dict = {}  # a fused task's inner nodes, by key
    stack = [node]
    while stack and len(found) < len(deps):
        item = stack.pop()
        typ = type(item)
        if typ is list or typ is tuple:
            stack.extend(reversed(item))
            continue
        if typ in PLAIN_TYPES:
            continue
        ref = item.key if typ is _Ref else taskref_key(item)
        if ref is not NO_KEY:
            if ref in deps:
                found[ref] = None
            elif ref in inner:
                stack.append(inner.pop(ref))  # an inner node: read it where it is used
            continue
        if not is_graph_node(item):
            continue  # data (Dask's Task looks for references only among nodes too)
        try:
            args, kwargs = getattr(item, "args", None), getattr(item, "kwargs", None)
            if args is None:  # an Alias, or a node of another shape: its references
                refs = sorted(item.dependencies, key=repr)
                stack.extend(_Ref(key) for key in reversed(refs))
                continue
        except Exception:  # an odd node: its dependencies come last, below
            continue
        if type(kwargs) is dict and kwargs:
            stack.extend(reversed(list(kwargs.values())))
        if type(args) is tuple:
            if len(args) > 1 and type(args[0]) is dict and _is_inner_key(args[1], args[0]):
                inner.update(args[0])
                stack.extend(reversed(args[2:]))
                stack.append(inner.pop(args[1]))
            else:
                stack.extend(reversed(args))
    if len(found) < len(deps):
        rest = [dep for dep in deps if dep not in found]
        found.update(dict.fromkeys(sorted(rest, key=repr)))
    return list(found)


class _Ref:
    """A reference met on a node without ``.args`` (an ``Alias``'s target)."""

    __slots__ = ("key",)

    def __init__(self, key: Any):
        self.key = key


def _is_inner_key(key: Any, subgraph: dict) -> bool:
    try:
        return key in subgraph
    except TypeError:
        return False


def names_key(value: Any, keys: Any) -> bool:
    """True when ``value``, read as a task argument or graph value, names a key of ``keys``.

    Dask's rule: an instance of str, int, float or tuple that is a key; a TaskRef
    names its ``.key`` (see :func:`taskref_key`).
    """
    if isinstance(value, REF_TYPES):
        try:
            return value in keys
        except TypeError:  # a tuple holding unhashable values
            return False
    return False


def taskref_key(value: Any) -> Any:
    """The key a Dask ``TaskRef`` (or a ``__dask_future__`` object) names, else ``NO_KEY``.

    Duck-typed so the package never imports Dask's private modules.
    """
    typ = type(value)
    if typ in PLAIN_TYPES:
        return NO_KEY
    if getattr(value, "__dask_future__", False) is True or any(
        c.__name__ == "TaskRef" for c in typ.__mro__
    ):
        try:
            return value.key
        except AttributeError:
            return NO_KEY
    return NO_KEY


class _NoKey:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<no key>"


NO_KEY = _NoKey()


# Frames of the iterative evaluator: what to rebuild once a node's items are computed.
_E_CALL, _E_LIST, _E_TUPLE, _E_SET, _E_NAMED = range(5)


def evaluate(expr: Any, refs: Mapping) -> Any:
    """Evaluate a nested task/list expression given ``{key: value}`` for its references.

    ``refs`` holds exactly the keys :func:`compile_graph` found in ``expr``, so a value
    that names one of them is replaced by its result.  Iterative: 3,000 levels of
    nesting inside one task do not touch the recursion limit.  A frame is
    ``[kind, iterator over items, computed items, extra]``; common leaves are handled
    inline, without a call.
    """
    value, frame = _eval_open(expr, refs)
    if frame is None:
        return value
    frames = [frame]
    while True:
        frame = frames[-1]
        out = frame[2]
        append = out.append
        for item in frame[1]:
            typ = type(item)
            if typ is str or typ is int or typ is float or typ is bool:
                append(refs[item] if item in refs else item)
                continue
            if typ is tuple and item and not callable(item[0]):
                try:
                    hit = item in refs
                except TypeError:
                    hit = False
                if hit:
                    append(refs[item])
                    continue
            value, child = _eval_open(item, refs)
            if child is not None:
                frames.append(child)
                break
            append(value)
        else:
            frames.pop()
            value = _eval_close(frame)
            if not frames:
                return value
            frames[-1][2].append(value)


def _eval_open(expr: Any, refs: Mapping) -> tuple[Any, list | None]:
    """``(value, None)`` for a leaf, ``(None, frame)`` for a node whose items need work."""
    typ = type(expr)
    if typ is tuple:
        if expr and callable(expr[0]):
            return None, [_E_CALL, iter(expr[1:]), [], expr[0]]
        if names_key(expr, refs):
            return refs[expr], None
        return None, [_E_TUPLE, iter(expr), [], None]
    if typ is list:
        return None, [_E_LIST, iter(expr), [], None]
    if typ is str or typ is int or typ is float or typ is bool:
        return (refs[expr] if expr in refs else expr), None
    if typ is set or typ is frozenset:
        return None, [_E_SET, iter(list(expr)), [], typ]
    if typ in PLAIN_TYPES:
        return expr, None
    if names_key(expr, refs):
        return refs[expr], None
    if isinstance(expr, tuple) and hasattr(expr, "_fields"):  # a namedtuple
        return None, [_E_NAMED, iter(expr), [], typ]
    ref = taskref_key(expr)
    if ref is not NO_KEY:
        return refs[ref], None
    if is_graph_node(expr):
        return expr({k: refs[k] for k in expr.dependencies}), None
    return expr, None


def _eval_close(frame: list) -> Any:
    kind, _items, out, extra = frame
    if kind == _E_CALL:
        return extra(*out)
    if kind == _E_LIST:
        return out
    if kind == _E_TUPLE:
        return tuple(out)
    if kind == _E_SET:
        return extra(out)
    return extra(*out)  # a namedtuple


def needs_walk(value: Any, dsk: Mapping) -> bool:
    """True when ``value`` holds a task, a reference or a graph node somewhere inside."""
    typ = type(value)
    if typ is str or typ is int or typ is float or typ is bool or typ is bytes or value is None:
        return False  # the common literals (a key here is handled by the caller)
    stack = [value]
    while stack:
        item = stack.pop()
        typ = type(item)
        if typ is tuple and item and callable(item[0]):
            return True
        if names_key(item, dsk):
            return True
        if isinstance(item, WALKED):
            stack.extend(item)
        elif typ not in PLAIN_TYPES and (taskref_key(item) is not NO_KEY or is_graph_node(item)):
            return True
    return False
