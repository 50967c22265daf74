"""Fingerprints of the tasks of a graph, and why a task missed.  Pure code, no storage.

A task's digest chains: ``H(its function's print, its literal arguments' content, its
dependencies' digests)``.  So a hit on a task never needs the content of an
intermediate result, and an edit anywhere upstream changes every digest downstream.
The prints of functions and values come from ``code_print`` and ``value_print`` (see
their docstrings for what is covered); this module walks the graph:

* in dependency order with an explicit stack (depth-first post-order from the
  requested keys, dependencies in argument order), so a 1,000,000-task chain needs no
  recursion, and a cycle marks its tasks uncacheable (the engine reports the cycle);
* each graph value read once by ``task_read.TaskReader`` (its docstring says how
  tuples, nested tasks, Dask ``GraphNode``\\ s, ``apply`` heads and fused subgraphs
  are read): a reference inside an argument stands for "dependency number i", so an
  argument's part changes only when the argument does, and a dependency's change
  shows as that dependency;
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
from collections.abc import Hashable
from typing import Any, NamedTuple

from ..graph import key_split
from .optout import OPT_OUT_ATTRIBUTE, NotCached
from .task_read import OptOut, TaskEntry, TaskReader
from .value_print import digest_of

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


_HEX = "0123456789abcdef"


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
    reader = TaskReader(mapping, opt_out)
    prints: dict[Hashable, TaskPrint] = {}
    entries: dict[Hashable, TaskEntry] = {}
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
            entry = TaskEntry(entry.kind, entry.name, (), [], "it is part of a cycle")
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


def _finish(
    key, entry: TaskEntry, identity: str, prints: dict, names: dict, roots: dict
) -> TaskPrint:
    if entry.reason is not None:
        roots[key] = (names[key], entry.reason)
        return TaskPrint(None, entry.reason, entry.parts, identity)
    deps = entry.deps
    if not deps:
        return TaskPrint(digest_of(entry.body), None, entry.parts, identity)
    if len(deps) == 1 and prints[deps[0]].digest is not None:  # a chain's link
        dep = prints[deps[0]].digest
        part = ("dependency '" + names[deps[0]] + "'", dep)
        return TaskPrint(digest_of(entry.body + dep), None, (*entry.parts, part), identity)
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
    if type(key) is int:
        return str(key)
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
