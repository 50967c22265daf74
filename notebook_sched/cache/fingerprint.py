"""Fingerprints of the tasks of a graph, and why a task missed.  Pure code, no storage.

A task's digest chains: ``H(its function's print, its literal arguments' content, its
dependencies' digests)``.  So a hit on a task never needs the content of an
intermediate result, and an edit anywhere upstream changes every digest downstream.
The prints of functions and values come from ``code_print`` and ``value_print`` (see
their docstrings for what is covered); this module walks the graph:

* in dependency order with an explicit stack (depth-first post-order from the
  requested keys, dependencies in argument order), so a 1,000,000-task chain needs no
  recursion, and a cycle marks its tasks uncacheable (the engine reports the cycle);
* graph values as the engine reads them (``graph.py``): ``(func, *args)`` tuples,
  nested tasks and lists, references by Dask's key rule, Dask ``GraphNode``\\ s
  (``Task``, ``DataNode``, ``Alias``, ``TaskRef``; duck-typed), aliases and literals.
  A reference inside an argument stands for "dependency number i", so an argument's
  part changes only when the argument does, and a dependency's change shows as that
  dependency;
* ``apply``-style heads (ours, Dask's) are seen through: the function and the
  arguments are those of the call they make.  In a Dask ``Task`` only ``TaskRef``\\ s
  and nested nodes refer to keys (as Dask reads it), and a fused task's subgraph
  (``_execute_subgraph``) is hashed with its keys renamed by position, so Dask's
  random ``finalize-…`` key does not change the digest;
* an uncacheable task still names its dependencies, so everything upstream of it is
  fingerprinted (and may hit);
* one :class:`~.code_print.CodePrinter` per call: a function used by 10,000 tasks is
  printed once, an array passed to 100 tasks hashed once.

Opting out: a task whose function has ``__notebook_sched_cache__ = False``
(``delayed(f, cache=False)`` wraps ``f`` in :class:`NotCached`), a task Dask built with
``pure=False`` (Dask's mark of it is a random ``uuid4`` key; it is also Dask's default
for ``dask.delayed``, so ``dask.delayed(f, pure=True)`` is how a Dask user opts in),
and whatever the caller's ``opt_out`` predicate names.

Limits (said to users as "what is not seen"): names looked up dynamically
(``globals()[name]``, ``getattr(module, computed_name)``), what a task reads from
files, clocks or random state (opt out with ``cache=False``), and installed code
edited in place without a version change.  None of these is guessed around: they are
the documented boundary, as for Bazel's undeclared inputs.

``identity`` names a task across runs whose keys are random: the function's name and
the key's name part (``key_split``, with the indices of a tuple key), numbered
``#2``, ``#3`` ... in walk order when several tasks share it.
"""

from __future__ import annotations

import gc
import re
import struct
import types
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from ..graph import is_graph_node, is_task, key_split, names_key
from ..graph_walk import NO_KEY, taskref_key
from .code_print import CallablePrint, CodePrinter, is_user_module
from .optout import OPT_OUT_ATTRIBUTE, NotCached
from .value_print import Uncacheable, digest_of

__all__ = ["TaskPrint", "graph_fingerprints", "explain", "OPT_OUT_ATTRIBUTE", "NotCached"]


class TaskPrint(NamedTuple):
    """The fingerprint of one task.

    ``digest`` is None when the task cannot be cached, and ``reason`` then says why
    ("argument 2 is a socket").  ``parts`` are the labelled component digests that
    :func:`explain` compares (``("function clean", d)``, ``("helper parse_row", d)``,
    ``("global THRESHOLD", d)``, ``("argument 1", d)``, ``("dependency 'load'", d)``
    ...).  ``identity`` names the task stably across runs whose keys are random.
    """

    digest: bytes | None
    reason: str | None
    parts: tuple[tuple[str, bytes], ...]
    identity: str


OptOut = Callable[[Hashable, Any], "str | None"]
_UUID_TAIL = re.compile(r"-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_pack_q = struct.Struct("<q").pack
_ARG_LABELS = [f"argument {i}" for i in range(1, 65)]
_ARG_LABEL_BYTES = [label.encode() for label in _ARG_LABELS]
_DATA, _ALIAS, _CALL = b"data", b"alias", b"call"
_HEX = "0123456789abcdef"
_NO_HEAD = object()


class _Entry(NamedTuple):
    """A task read once: what its digest is made of, before its dependencies are known."""

    kind: bytes
    name: str  # the function's name ("" for data and aliases)
    parts: tuple[tuple[str, bytes], ...]  # the function's and the arguments'
    deps: list  # distinct dependency keys, in the order the arguments name them
    reason: str | None
    body: bytes = b""  # what the digest hashes, but the dependencies' digests


def graph_fingerprints(
    mapping: dict, keys: list, *, opt_out: OptOut | None = None
) -> dict[Hashable, TaskPrint]:
    """A :class:`TaskPrint` for every task needed for ``keys`` (literal values included).

    ``mapping`` is a normalised graph (key -> task tuple, literal, or Dask GraphNode);
    ``keys`` the flat requested keys.  ``opt_out(key, value)`` may return a reason to
    leave a task uncached.  A requested key missing from the graph gets an uncacheable
    print (the engine reports the missing key); so do the tasks of a cycle.
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()  # many small tuples: as in graph.compile_graph, no quadratic GC passes
    try:
        return _walk(mapping, keys, opt_out)
    finally:
        if gc_was_enabled:
            gc.enable()


def _walk(mapping: dict, keys: list, opt_out: OptOut | None) -> dict[Hashable, TaskPrint]:
    reader = _Reader(mapping, opt_out)
    prints: dict[Hashable, TaskPrint] = {}
    entries: dict[Hashable, _Entry] = {}
    roots: dict[Hashable, tuple[str, str]] = {}  # uncacheable key -> (where, why) at the root
    names: dict[Hashable, str] = {}
    seen_identities: dict[str, int] = {}
    name_parts: dict[str, str] = {}  # the name part of the tuple keys' first element
    stack = list(reversed(keys))
    while stack:
        key = stack[-1]
        if key in prints:
            stack.pop()
            continue
        entry = entries.pop(key, None) if entries else None
        if entry is None:
            entry = reader.read(key)
            if entry.deps:
                missing = [dep for dep in entry.deps if dep not in prints]
                if missing:
                    entries[key] = entry  # back to it once its dependencies are done
                    stack.extend(reversed(missing))
                    continue
        elif not all(map(prints.__contains__, entry.deps)):
            entry = _Entry(entry.kind, entry.name, (), [], "it is part of a cycle")
        stack.pop()
        name = names[key] = _shown_key(key, name_parts)
        base = f"{entry.name or entry.kind.decode()}|{name}"
        count = seen_identities.get(base, 0) + 1
        seen_identities[base] = count
        identity = base if count == 1 else f"{base}#{count}"
        if entry.reason is None and not entry.deps:  # most tasks of a wide graph
            prints[key] = TaskPrint(digest_of(entry.body), None, entry.parts, identity)
        else:
            prints[key] = _finish(key, entry, identity, prints, names, roots)
    return prints


def _finish(key, entry: _Entry, identity: str, prints: dict, names: dict, roots: dict) -> TaskPrint:
    if entry.reason is not None:
        roots[key] = (names[key], entry.reason)
        return TaskPrint(None, entry.reason, entry.parts, identity)
    if not entry.deps:
        return TaskPrint(digest_of(entry.body), None, entry.parts, identity)
    digests = [entry.body]
    parts = list(entry.parts)
    labels: dict[str, int] = {}  # how many dependencies show under each name
    for dep in entry.deps:
        printed = prints[dep]
        if printed.digest is None:
            where, why = roots[dep]
            shown = names[dep]
            if printed.reason == why:  # the dependency is where the trouble is
                reason = f"depends on '{shown}', which is uncacheable: {why}"
            else:
                reason = f"depends on '{shown}', which is uncacheable (upstream, '{where}': {why})"
            roots[key] = roots[dep]
            return TaskPrint(None, reason, entry.parts, identity)
        label = "dependency '" + names[dep] + "'"
        count = labels[label] = labels.get(label, 0) + 1
        parts.append((label if count == 1 else f"{label} #{count}", printed.digest))
        digests.append(printed.digest)
    return TaskPrint(digest_of(b"".join(digests)), None, tuple(parts), identity)


def _shown_key(key: Hashable, memo: dict | None = None) -> str:
    """A key's name without its random part: ``inc-1a2b…`` -> inc, ``('x-…', 3)`` -> x-3.

    ``memo`` keeps the name part of tuple keys' first elements (shared by a whole
    collection's chunks) for one walk."""
    if type(key) is tuple and key:
        head = key[0]
        if memo is not None and type(head) is str:
            part = memo.get(head)
            if part is None:
                part = memo[head] = _name_part(head)
            if len(key) == 2:
                return part + "-" + str(key[1])
            return "-".join([part, *map(str, key[1:])])
        return "-".join([_name_part(head), *map(str, key[1:])])
    return _name_part(key)


def _name_part(key: Any) -> str:
    """``graph.key_split`` for one key, with a fast path for the common string keys."""
    if type(key) is not str:
        return key_split(key)
    if "-" not in key:
        return key
    words = key.split("-")
    kept = words[0]
    for word in words[1:]:
        if (len(word) >= 8 and not word.strip(_HEX)) or word.isdigit():
            break  # a token or a number: the rest is not the name
        kept = f"{kept}-{word}"
    return kept


class _Reader:
    """Reads graph values into :class:`_Entry` (function print, argument parts, deps)."""

    def __init__(self, mapping: dict, opt_out: OptOut | None):
        self.mapping = mapping
        self.opt_out = opt_out
        self.code = CodePrinter()
        self.values = self.code.values
        self._heads: dict[tuple[int, int], tuple] = {}
        self._last_head: Any = None
        self._last: tuple = (False, None, None)
        self._simple_head: Any = _NO_HEAD  # the last head that _simple_call may take

    def read(self, key: Hashable) -> _Entry:
        try:
            value = self.mapping[key]
        except (KeyError, TypeError):
            return _Entry(_DATA, "", (), [], "it is not in the graph")
        if type(value) is tuple and value and value[0] is self._simple_head:
            entry = self._simple_call(key, value)
            if entry is not None:
                return entry
        try:
            return self._read(key, value)
        except Exception as exc:  # a value's own code failed (__reduce__, __getattr__...)
            detail = f"{type(exc).__name__}: {exc}"[:200]
            reason = f"fingerprinting it failed ({detail})"
            return _Entry(_DATA, "", (), self._dependencies(value), reason)

    def _read(self, key: Hashable, value: Any) -> _Entry:
        mapping = self.mapping
        if is_task(value):
            return self._call(key, value, value[0], value[1:], None)
        if is_graph_node(value):
            return self._node(key, value)
        target = taskref_key(value)
        if target is NO_KEY and names_key(value, mapping):
            target = value
        if target is not NO_KEY:
            return _Entry(_ALIAS, "", (), [target], None, _ALIAS)
        deps: list = []
        try:
            digest = self._expression(value, deps, {})
        except Uncacheable as exc:
            return _Entry(_DATA, "", (), self._dependencies(value), f"its value is {exc}")
        return _Entry(_DATA, "", (("value", digest),), deps, None, _DATA + digest)

    def _node(self, key: Hashable, node: Any) -> _Entry:
        cls = type(node).__name__
        if cls == "Alias" and hasattr(node, "target"):
            return _Entry(_ALIAS, "", (), [node.target], None, _ALIAS)
        if cls == "DataNode" and hasattr(node, "value"):
            try:
                digest = self.values.digest(node.value)
            except Uncacheable as exc:
                return _Entry(_DATA, "", (), [], f"its value is {exc}")
            return _Entry(_DATA, "", (("value", digest),), [], None, _DATA + digest)
        if all(hasattr(node, a) for a in ("func", "args", "kwargs")):
            return self._call(key, node, node.func, node.args, node.kwargs, node=True)
        reason = f"it is a graph node of type {cls}, not a Task"
        return _Entry(_DATA, "", (), self._dependencies(node), reason)

    def _call(
        self, key, value, head: Any, args: tuple, kwargs: dict | None, node: bool = False
    ) -> _Entry:
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
            return _Entry(_CALL, name, (), self._dependencies(value), reason)
        parts = list(printed.parts)
        body = [_CALL, printed.digest]
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
            return _Entry(_CALL, name, (), self._dependencies(value), f"{label} is {exc}")
        if node:  # what Dask says it reads, should an argument hide it from the walk
            unseen = [dep for dep in getattr(value, "dependencies", ()) if dep not in index]
            deps.extend(sorted(unseen, key=repr))
        return _Entry(_CALL, name, tuple(parts), deps, None, b"".join(body))

    def _simple_call(self, key: Hashable, value: tuple) -> _Entry | None:
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
        body = [_CALL, printed.digest]
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
                arg_digest = _REF_DIGESTS[len(deps)]
                deps.append(arg)
            else:
                arg_digest = digest(arg)
            parts.append((_ARG_LABELS[position], arg_digest))
            body += (_ARG_LABEL_BYTES[position], arg_digest)
        return _Entry(_CALL, printed.name, tuple(parts), deps, None, b"".join(body))

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
                return _REF_DIGESTS[position]
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


_REF_DIGESTS = [_ref_digest(position) for position in range(64)]


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


# -- explain ----------------------------------------------------------------------------


def explain(old: TaskPrint | None, new: TaskPrint) -> str:
    """One line: why ``new`` missed (which part changed since ``old``), or why it is
    uncacheable."""
    if new.digest is None:
        return f"not cacheable: {new.reason}"
    if old is None:
        return "not seen before"
    if old.digest is None:
        return f"not cacheable before ({old.reason}); cacheable now"
    if old.digest == new.digest:
        return (
            "unchanged: the same fingerprint as before "
            "(its result was not kept: evicted, or not worth storing)"
        )
    before = dict(old.parts)
    now = dict(new.parts)
    old_head = _head(old.parts)
    new_head = _head(new.parts)
    if old_head and new_head and old_head != new_head:
        return (
            f"the task now calls {new_head.split(' ', 1)[1]} instead of {old_head.split(' ', 1)[1]}"
        )
    changes = [
        f"{_phrase(label)} changed"
        for label, d in new.parts
        if label in before and before[label] != d
    ]
    changes += [f"{_phrase(label)} is new" for label, _ in new.parts if label not in before]
    changes += [f"{_phrase(label)} is no longer used" for label in before if label not in now]
    if not changes:
        return "the order of its parts changed"
    if len(changes) == 1:
        return changes[0]
    return f"{changes[0]} (and {len(changes) - 1} more: {', '.join(changes[1:4])})"


def _head(parts: tuple) -> str | None:
    for label, _ in parts:
        if label.startswith(("function ", "class ")):
            return label
    return None


def _phrase(label: str) -> str:
    if label.startswith(("function ", "class ")):
        return f"the {label}"
    if label.startswith("closure "):
        return f"closure variable {label[len('closure ') :]}"
    return label
