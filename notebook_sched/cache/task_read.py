"""Reading one graph value into what its fingerprint is made of.  Pure code, no storage.

``fingerprint.py`` walks the graph and chains the digests; this module reads each value
it meets into a :class:`TaskEntry`: the function's print and parts, the arguments'
digests, the keys it reads (its dependencies, in the order the arguments name them) and,
when it cannot be cached, why.  The seam between the two is that an entry does not
know its dependencies' digests: the walk adds them once they are known.

* graph values as the engine reads them (``graph.py``): ``(func, *args)`` tuples,
  nested tasks and lists, references by Dask's key rule, Dask ``GraphNode``\\ s
  (``Task``, ``DataNode``, ``Alias``, ``TaskRef``; duck-typed), aliases and literals.
  A reference inside an argument stands for "dependency number i"
  (:data:`REF_DIGESTS`), so an argument's part changes only when the argument does;
* ``apply``-style heads (ours, Dask's) are seen through: the function and the
  arguments are those of the call they make.  In a Dask ``Task`` only ``TaskRef``\\ s
  and nested nodes refer to keys (as Dask reads it), and a fused task's subgraph
  (``_execute_subgraph``) is hashed with its keys renamed by position;
* an uncacheable value still names its dependencies (``_dependencies``, found without
  hashing), so the walk fingerprints what is upstream of it;
* :class:`TaskReader` holds one :class:`~.code_print.CodePrinter` per walk and
  remembers the last task's function, so a run of tasks calling one function prints
  it once and takes the fast path (``_simple_call``) for scalar and reference
  arguments.
"""

from __future__ import annotations

import re
import struct
import types
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from ..graph import is_graph_node, is_task, names_key
from ..graph_walk import NO_KEY, taskref_key
from .code_print import CallablePrint, CodePrinter
from .installed import is_user_module
from .optout import OPT_OUT_ATTRIBUTE
from .value_print import Uncacheable, digest_of

__all__ = ["TaskEntry", "TaskReader", "OptOut", "DATA", "ALIAS", "CALL", "REF_DIGESTS"]

OptOut = Callable[[Hashable, Any], "str | None"]

_UUID_TAIL = re.compile(r"-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_pack_q = struct.Struct("<q").pack
_ARG_LABELS = [f"argument {i}" for i in range(1, 65)]
_ARG_LABEL_BYTES = [label.encode() for label in _ARG_LABELS]
DATA, ALIAS, CALL = b"data", b"alias", b"call"
_NO_HEAD = object()


class TaskEntry(NamedTuple):
    """A task read once: what its digest is made of, before its dependencies are known."""

    kind: bytes
    name: str  # the function's name ("" for data and aliases)
    parts: tuple[tuple[str, bytes], ...]  # the function's and the arguments'
    deps: list  # distinct dependency keys, in the order the arguments name them
    reason: str | None
    body: bytes = b""  # what the digest hashes, but the dependencies' digests


class TaskReader:
    """Reads graph values into :class:`TaskEntry` (function print, argument parts, deps)."""

    def __init__(self, mapping: dict, opt_out: OptOut | None):
        self.mapping = mapping
        self.opt_out = opt_out
        self.code = CodePrinter()
        self.values = self.code.values
        self._heads: dict[tuple[int, int], tuple] = {}
        self._last_head: Any = None
        self._last: tuple = (False, None, None)
        self._simple_head: Any = _NO_HEAD  # the last head that _simple_call may take

    def read(self, key: Hashable) -> TaskEntry:
        try:
            value = self.mapping[key]
        except (KeyError, TypeError):
            return TaskEntry(DATA, "", (), [], "it is not in the graph")
        if type(value) is tuple and value and value[0] is self._simple_head:
            entry = self._simple_call(key, value)
            if entry is not None:
                return entry
        try:
            return self._read(key, value)
        except Exception as exc:  # a value's own code failed (__reduce__, __getattr__...)
            detail = f"{type(exc).__name__}: {exc}"[:200]
            reason = f"fingerprinting it failed ({detail})"
            return TaskEntry(DATA, "", (), self._dependencies(value), reason)

    def _read(self, key: Hashable, value: Any) -> TaskEntry:
        mapping = self.mapping
        if is_task(value):
            return self._call(key, value, value[0], value[1:], None)
        if is_graph_node(value):
            return self._node(key, value)
        target = taskref_key(value)
        if target is NO_KEY and names_key(value, mapping):
            target = value
        if target is not NO_KEY:
            return TaskEntry(ALIAS, "", (), [target], None, ALIAS)
        deps: list = []
        try:
            digest = self._expression(value, deps, {})
        except Uncacheable as exc:
            return TaskEntry(DATA, "", (), self._dependencies(value), f"its value is {exc}")
        return TaskEntry(DATA, "", (("value", digest),), deps, None, DATA + digest)

    def _node(self, key: Hashable, node: Any) -> TaskEntry:
        cls = type(node).__name__
        if cls == "Alias" and hasattr(node, "target"):
            return TaskEntry(ALIAS, "", (), [node.target], None, ALIAS)
        if cls == "DataNode" and hasattr(node, "value"):
            try:
                digest = self.values.digest(node.value)
            except Uncacheable as exc:
                return TaskEntry(DATA, "", (), [], f"its value is {exc}")
            return TaskEntry(DATA, "", (("value", digest),), [], None, DATA + digest)
        if all(hasattr(node, a) for a in ("func", "args", "kwargs")):
            return self._call(key, node, node.func, node.args, node.kwargs, node=True)
        reason = f"it is a graph node of type {cls}, not a Task"
        return TaskEntry(DATA, "", (), self._dependencies(node), reason)

    def _call(
        self, key, value, head: Any, args: tuple, kwargs: dict | None, node: bool = False
    ) -> TaskEntry:
        func = head
        if head is self._last_head:  # tasks come in runs of one function
            is_apply, printed, reason = self._last
        else:
            is_apply = _is_apply(head)
            printed, reason = self._head(head, head)
            self._last_head, self._last = head, (is_apply, printed, reason)
            simple = not (is_apply or node or reason or self.opt_out) and printed.digest
            self._simple_head = head if simple else _NO_HEAD
        if is_apply and args and callable(args[0]):
            func, call_args = args[0], args[1] if len(args) > 1 else []
            call_kwargs = args[2] if len(args) > 2 else {}
            args = tuple(call_args) if type(call_args) is list else (call_args,)
            kwargs = _keywords(call_kwargs)
            printed, reason = self._head(head, func)
        name = printed.name
        prefix = key if type(key) is str else key[0] if type(key) is tuple and key else None
        if reason is None and (
            self.opt_out is not None or type(prefix) is str and len(prefix) > 37
        ):
            reason = self._opted_out_by_key(key, value)
        if reason is not None:
            return TaskEntry(CALL, name, (), self._dependencies(value), reason)
        parts = list(printed.parts)
        body = [CALL, printed.digest]
        deps: list = []
        index: dict = {}
        label = ""
        try:
            if node and _is_subgraph(func) and len(args) >= 3 and type(args[0]) is dict:
                digest = self.values.subgraph_digest(args[0], args[1], args[2])
                parts.append(("subgraph", digest))
                body += (b"subgraph", digest)
                args = args[3:]
            for position, arg in enumerate(args):
                if position < 64:
                    label, label_bytes = _ARG_LABELS[position], _ARG_LABEL_BYTES[position]
                else:
                    label = f"argument {position + 1}"
                    label_bytes = label.encode()
                digest = self._expression(arg, deps, index, node)
                parts.append((label, digest))
                body += (label_bytes, digest)
            for word, arg in (kwargs or {}).items():
                label = f"keyword {word}"
                digest = self._expression(arg, deps, index, node)
                parts.append((label, digest))
                body += (label.encode(), digest)
        except Uncacheable as exc:
            return TaskEntry(CALL, name, (), self._dependencies(value), f"{label} is {exc}")
        if node:  # what Dask says it reads, should an argument hide it from the walk
            unseen = [dep for dep in getattr(value, "dependencies", ()) if dep not in index]
            deps.extend(sorted(unseen, key=repr))
        return TaskEntry(CALL, name, tuple(parts), deps, None, b"".join(body))

    def _simple_call(self, key: Hashable, value: tuple) -> TaskEntry | None:
        """The common task, ``(func, *scalars and references)`` with the last task's
        function (not an apply, no opt-out), read without building the general case's
        state; the same entry as :meth:`_call` gives, or None to take the general path.
        No allocation but the entry's own parts, and no memo that outlives the run."""
        prefix = key[0] if type(key) is tuple and key else key
        if type(prefix) is str and len(prefix) > 37 or len(value) > 64:
            return None  # a key that may be Dask's pure=False uuid; many arguments
        printed = self._last[1]
        mapping = self.mapping
        digest = self.values.digest
        body = [CALL, printed.digest]
        parts = list(printed.parts)
        deps: list = []
        for position in range(len(value) - 1):
            arg = value[position + 1]
            typ = type(arg)
            if typ is not int and typ is not str and typ is not float:
                return None
            if arg in mapping:
                if arg in deps:
                    return None  # a repeated reference: the general path numbers it
                arg_digest = REF_DIGESTS[len(deps)]
                deps.append(arg)
            else:
                arg_digest = digest(arg)
            parts.append((_ARG_LABELS[position], arg_digest))
            body += (_ARG_LABEL_BYTES[position], arg_digest)
        return TaskEntry(CALL, printed.name, tuple(parts), deps, None, b"".join(body))

    def _head(self, head: Any, func: Any) -> tuple[CallablePrint, str | None]:
        """The print of a task's function and its opt-out, memoized for the run."""
        known = self._heads.get((id(head), id(func)))
        if known is not None and known[0] is head and known[1] is func:
            return known[2], known[3]
        printed = self.code.print_of(func)
        reason = printed.reason
        if getattr(func, OPT_OUT_ATTRIBUTE, True) is False or (
            getattr(head, OPT_OUT_ATTRIBUTE, True) is False
        ):
            reason = "its function opted out of the cache (cache=False)"
        self._heads[(id(head), id(func))] = (head, func, printed, reason)
        return printed, reason

    def _opted_out_by_key(self, key: Hashable, value: Any) -> str | None:
        name = key[0] if type(key) is tuple and key else key
        if type(name) is str and len(name) > 37 and name[-37] == "-" and name[-28] == "-":
            if _UUID_TAIL.search(name):
                return (
                    "Dask built it with pure=False (its key is random; Dask's default for "
                    "dask.delayed): use dask.delayed(f, pure=True) to cache it"
                )
        if self.opt_out is not None:
            return self.opt_out(key, value)
        return None

    def _dependencies(self, value: Any) -> list:
        """The keys an uncacheable task reads, found without hashing anything, so that
        the walk still fingerprints what is upstream of it (it may be cached)."""
        mapping = self.mapping
        found: dict = {}
        try:
            if is_graph_node(value):
                return sorted(value.dependencies, key=repr)
            stack = [value[1:] if is_task(value) else value]
            while stack:
                item = stack.pop()
                if names_key(item, mapping):
                    found[item] = None
                elif type(item) is tuple and item and callable(item[0]):
                    stack.extend(reversed(item[1:]))
                elif isinstance(item, list | tuple | set | frozenset):
                    stack.extend(reversed(list(item)))
                elif (target := taskref_key(item)) is not NO_KEY:
                    found[target] = None
                elif is_graph_node(item):
                    found.update(dict.fromkeys(sorted(item.dependencies, key=repr)))
        except Exception:  # the value's own code failed: nothing more is found
            pass
        return list(found)

    def _expression(self, expr: Any, deps: list, index: dict, node: bool = False) -> bytes:
        """An argument's digest; a reference stands for its dependency's number.

        ``node``: an argument of a Dask ``Task``, where only ``TaskRef``\\ s and nested
        graph nodes refer to other keys (a string or tuple that happens to be a key is
        data there, as Dask reads it).
        """
        typ = type(expr)
        if typ is int or typ is str or typ is float:
            if node or expr not in self.mapping:
                return self.values.digest(expr)
            position = index.get(expr)
            if position is None:
                position = index[expr] = len(deps)
                deps.append(expr)
            if position < 64:
                return REF_DIGESTS[position]
        out = bytearray()
        stack = [(iter((expr,)), node)]
        while stack:
            items, in_node = stack[-1]
            for item in items:
                pushed = self._item(item, out, deps, index, in_node)
                if pushed is not None:
                    stack.append(pushed)
                    break
            else:
                stack.pop()
        return digest_of(out)

    def _item(self, item: Any, out: bytearray, deps: list, index: dict, node: bool) -> Any:
        """Encode one item into ``out``; return ``(children, node mode)`` if it has any."""
        typ = type(item)
        if not node:
            if typ is tuple and item and callable(item[0]):
                out += b"T" + self._function(item[0]) + _pack_q(len(item) - 1)
                return iter(item[1:]), False
            if names_key(item, self.mapping):
                return _ref(item, out, deps, index)
            if typ is list or typ is tuple:
                out += (b"[" if typ is list else b"(") + _pack_q(len(item))
                return iter(item), False
            if typ is set or typ is frozenset:
                inner = sorted(self._expression(x, deps, index) for x in item)
                out += b"S" + _pack_q(len(inner)) + b"".join(inner)
                return None
        target = taskref_key(item)
        if target is not NO_KEY:
            return _ref(target, out, deps, index)
        if is_graph_node(item):
            return self._nested_node(item, out, deps, index)
        out += b"v" + self.values.digest(item)
        return None

    def _nested_node(self, node: Any, out: bytearray, deps: list, index: dict) -> Any:
        cls = type(node).__name__
        if cls == "Alias" and hasattr(node, "target"):
            return _ref(node.target, out, deps, index)
        if cls == "DataNode" and hasattr(node, "value"):
            out += b"v" + self.values.digest(node.value)
            return None
        if not all(hasattr(node, a) for a in ("func", "args", "kwargs")):
            raise Uncacheable(f"a graph node of type {cls}")
        words = b"".join(str(w).encode() + b"\0" for w in node.kwargs)
        out += b"N" + self._function(node.func) + _pack_q(len(node.args)) + words
        return iter((*node.args, *node.kwargs.values())), True

    def _function(self, func: Any) -> bytes:
        printed: CallablePrint = self.code.print_of(func)
        if printed.digest is None:
            raise Uncacheable(
                f"a call of {printed.name}, which cannot be cached ({printed.reason})"
            )
        if getattr(func, OPT_OUT_ATTRIBUTE, True) is False:
            raise Uncacheable(f"a call of {printed.name}, which opted out of the cache")
        return printed.digest


def _ref_digest(position: int) -> bytes:
    """An argument that is only a reference: the same digest as the walk gives it."""
    return digest_of(b"R" + _pack_q(position))


REF_DIGESTS = [_ref_digest(position) for position in range(64)]


def _ref(key: Hashable, out: bytearray, deps: list, index: dict) -> None:
    position = index.get(key)
    if position is None:
        position = index[key] = len(deps)
        deps.append(key)
    out += b"R" + _pack_q(position)
    return None


def _is_subgraph(func: Any) -> bool:
    """Dask's ``_execute_subgraph`` (a fused task), recognised by name."""
    return (
        isinstance(func, types.FunctionType)
        and func.__name__ == "_execute_subgraph"
        and not is_user_module(func.__module__)
    )


def _is_apply(head: Any) -> bool:
    """Installed ``apply(func, args, kwargs)`` helpers (ours in ``calls``, Dask's
    ``dask.utils.apply``), recognised by name: this layer does not import them."""
    return (
        isinstance(head, types.FunctionType)
        and head.__name__ in ("apply", "_apply")
        and not is_user_module(head.__module__)
    )


def _keywords(kwargs: Any) -> dict:
    """The keyword arguments of an apply: a dict, or ``(dict, [[k, v], ...])``."""
    if type(kwargs) is dict:
        return kwargs
    if is_task(kwargs) and kwargs[0] is dict and len(kwargs) == 2 and type(kwargs[1]) is list:
        pairs = kwargs[1]
        if all(type(p) in (list, tuple) and len(p) == 2 and type(p[0]) is str for p in pairs):
            return dict(pairs)
    return {"**": kwargs}
