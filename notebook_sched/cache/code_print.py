"""Prints of callables: everything in code that can change what a call returns.

*The user's own code* (functions and classes defined in ``__main__``, a notebook cell,
an ``exec``'d namespace, or a ``.py`` file outside the standard library and
site-packages) is printed by content, in two steps:

1. a *unit* is one function or class on its own: its normalised code (bytecode,
   constants with nested code objects, names, argument counts, flags, exception
   table; never file names, line numbers, comments or formatting), its defaults and
   keyword defaults, closure cell values, the globals its code (and nested code) loads
   (``LOAD_GLOBAL``/``LOAD_NAME`` read with ``dis``, memoized per code object), the
   attributes it reads of the user's own modules (``helpers.parse_row``: so a module
   edited and ``importlib.reload``\\ ed is seen), ``__wrapped__`` and the function's
   ``__dict__``; for a class, its bases, methods, properties and class attributes.
   Other user code met on the way is not printed inside the unit: it is recorded as
   an *edge* (and stands in the unit by its name);
2. the *print* of a function is its unit and every unit reachable over edges, in
   breadth-first order.  Mutual recursion and self-reference are just edges to a
   unit already seen, so cycles need no special case, and a unit's content never
   depends on which function reached it (it can be memoized).

*Installed code* (standard library, site-packages, builtins, ``notebook_sched``
itself) counts by module, qualified name and the package's version, never by code
(``installed.py`` draws the line and finds the versions).
Partials add their arguments, bound methods their ``self`` (by content), callable
objects their class and pickled state, wrappers their ``__wrapped__``.

A print is a list of labelled parts (``("function clean", d)``, ``("helper
parse_row", d)``, ``("global THRESHOLD", d)``, ``("closure scale", d)``, ``("default
sep", d)``) for ``explain``, and the digest over them.  What cannot be fingerprinted
(a global that is a lock) gives a reason instead, naming where it was found.
"""

from __future__ import annotations

import dis
import functools
import sys
import types
import weakref
from typing import Any, NamedTuple

from .installed import display_name, is_user_module, library_token, version_of
from .value_print import Uncacheable, ValuePrinter, digest_of

__all__ = ["CallablePrint", "CodePrinter", "display_name"]


class CallablePrint(NamedTuple):
    digest: bytes | None
    reason: str | None
    parts: tuple[tuple[str, bytes], ...]
    name: str  # the qualified name shown to the user


_SALT = f"notebook_sched-cache-1|{sys.implementation.cache_tag}".encode()
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM"})
_CLASS_SKIP = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__doc__",
        "__qualname__",
        "__firstlineno__",
        "__static_attributes__",
        "__annotations__",
        "__dataclass_fields__",
        "__dataclass_params__",
        "__orig_bases__",
        "__parameters__",
        "_abc_impl",
        "__slotnames__",  # copyreg caches it on the class at the first pickle
    }
)
_MODULE_DEPTH = 3  # pkg.sub.mod.attr: how deep attributes of user modules are followed
_MISSING = digest_of(b"missing name")


def _is_unit(obj: Any) -> bool:
    return isinstance(obj, types.FunctionType | type) and is_user_module(obj.__module__)


# -- code objects ---------------------------------------------------------------------


class _CodeInfo(NamedTuple):
    digest: bytes
    global_names: tuple[str, ...]
    attr_names: frozenset[str]


_code_memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _code_info(code: types.CodeType) -> _CodeInfo:
    known = _code_memo.get(code)
    if known is not None:
        return known
    globals_seen: dict[str, None] = {}
    attrs: set[str] = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in _GLOBAL_OPS:
            globals_seen[instruction.argval] = None
        elif instruction.opname in _ATTR_OPS:
            attrs.add(instruction.argval)
    consts = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner = _code_info(const)
            consts.append(b"C" + inner.digest)
            globals_seen.update(dict.fromkeys(inner.global_names))
            attrs |= inner.attr_names
        else:
            consts.append(b"K" + _const_bytes(const))
    head = repr(
        (
            code.co_name,
            code.co_argcount,
            code.co_posonlyargcount,
            code.co_kwonlyargcount,
            code.co_flags,
            code.co_names,
            code.co_varnames,
            code.co_freevars,
            code.co_cellvars,
        )
    ).encode()
    table = getattr(code, "co_exceptiontable", b"")
    digest = digest_of(b"\0".join([_SALT, head, code.co_code, table, *consts]))
    info = _CodeInfo(digest, tuple(globals_seen), frozenset(attrs))
    _code_memo[code] = info
    return info


def _const_bytes(const: Any) -> bytes:
    """A code constant (None, numbers, str, bytes, tuples, frozensets), seed-independent."""
    if type(const) is tuple:
        return b"(" + b",".join(_const_bytes(c) for c in const) + b")"
    if type(const) is frozenset:
        return b"{" + b",".join(sorted(_const_bytes(c) for c in const)) + b"}"
    if type(const) is float or type(const) is complex:
        return f"{type(const).__name__}:{const.hex() if type(const) is float else const!r}".encode()
    return f"{type(const).__name__}:{const!r}".encode()


# -- units ----------------------------------------------------------------------------


class _Unit:
    """One function or class of the user's, on its own (see the module docstring)."""

    __slots__ = ("obj", "module", "namespace", "entries", "edges", "reason")

    def __init__(self, obj: Any):
        self.obj = obj
        self.module = getattr(obj, "__module__", None) or "?"
        self.namespace = id(getattr(obj, "__globals__", None))
        self.entries: list[tuple[str, str, bytes]] = []  # (kind, name, digest)
        self.edges: list[Any] = []  # user code this unit reaches
        self.reason: tuple[str, str, str] | None = None  # (kind, name, what it is)


class CodePrinter:
    """Prints of callables (and, through :attr:`values`, of values) for one run.

    Units and prints are memoized by identity for the run (the objects are kept alive,
    so ids are not reused); code digests are memoized for the process (code objects
    are immutable).
    """

    def __init__(self) -> None:
        self.values = ValuePrinter(self.callable_digest, self.module_digest)
        self._units: dict[int, _Unit] = {}
        self._prints: dict[int, tuple[Any, CallablePrint]] = {}
        self._active: set[int] = set()  # prints being taken: a re-entry is a self-reference

    # -- hooks for the value printer ---------------------------------------------

    def callable_digest(self, obj: Any, refs: list | None) -> bytes:
        """A callable met inside a value; user code inside user code becomes an edge.

        While a unit is being built (``refs`` is its edge list) no full print is taken:
        one could reach the half-built unit.  Methods, wrappers and bound builtins are
        taken apart instead, so the user code inside them still becomes edges.
        """
        if _is_unit(obj):
            if refs is None:
                printed = self.print_of(obj)
                if printed.digest is None:
                    raise Uncacheable(f"{printed.name}, which cannot be cached ({printed.reason})")
                return printed.digest
            refs.append(obj)
            return _unit_token(obj)
        if refs is None:
            printed = self.print_of(obj)
            if printed.digest is None:
                raise Uncacheable(f"{printed.name}, which cannot be cached ({printed.reason})")
            return printed.digest
        values = self.values
        if isinstance(obj, types.MethodType):
            func = self.callable_digest(obj.__func__, refs)
            return digest_of(b"method" + func + values.digest(obj.__self__, refs))
        if isinstance(obj, types.FunctionType | type):
            return library_token(obj)
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None and wrapped is not obj:
            state = {k: v for k, v in getattr(obj, "__dict__", {}).items() if k != "__wrapped__"}
            cls = self.callable_digest(type(obj), refs)
            inner = self.callable_digest(wrapped, refs)
            return digest_of(b"wrapper" + cls + inner + values.digest(state, refs))
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType | type):
            return digest_of(b"bound" + library_token(obj) + values.digest(owner, refs))
        return library_token(obj)

    def module_digest(self, module: types.ModuleType) -> bytes:
        if is_user_module(module.__name__):
            raise Uncacheable(
                f"the module {module.__name__} (a module's state cannot be fingerprinted: "
                f"pass the values the task needs instead)"
            )
        name = module.__name__
        return digest_of(f"module|{name}|{version_of(name)}".encode())  # its package's version

    # -- prints ---------------------------------------------------------------------

    def print_of(self, obj: Any) -> CallablePrint:
        """The print of a callable used as a task's function (memoized for the run)."""
        known = self._prints.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1]
        if id(obj) in self._active:
            name = display_name(obj)
            return CallablePrint(None, f"{name} refers to itself through its state", (), name)
        self._active.add(id(obj))
        try:
            printed = self._print(obj)
        except Uncacheable as exc:
            printed = CallablePrint(None, str(exc), (), display_name(obj))
        except Exception as exc:  # the object's own code failed (__reduce__, __getattr__...)
            detail = f"{type(exc).__name__}: {exc}"[:200]
            reason = f"fingerprinting {display_name(obj)} failed ({detail})"
            printed = CallablePrint(None, reason, (), display_name(obj))
        finally:
            self._active.discard(id(obj))
        self._prints[id(obj)] = (obj, printed)
        return printed

    def _print(self, obj: Any) -> CallablePrint:
        name = display_name(obj)
        if _is_unit(obj):
            return self._unit_print(obj)
        values = self.values
        if isinstance(obj, functools.partial):
            inner = self.print_of(obj.func)
            if inner.digest is None:
                return inner
            parts = list(inner.parts)
            parts += [
                (f"partial argument {i}", values.digest(a)) for i, a in enumerate(obj.args, 1)
            ]
            parts += [(f"partial keyword {k}", values.digest(v)) for k, v in obj.keywords.items()]
            return _finish(parts, inner.name)
        if isinstance(obj, types.MethodType):
            inner = self.print_of(obj.__func__)
            if inner.digest is None:
                return inner
            return _finish([*inner.parts, ("bound self", self._bound(obj.__self__))], inner.name)
        if isinstance(obj, types.FunctionType | type):
            return _finish([(_head_label(obj, name), library_token(obj))], name)
        owner = getattr(obj, "__self__", None)
        if isinstance(obj, types.BuiltinFunctionType | types.MethodWrapperType):
            parts = [(f"function {name}", library_token(obj))]
            if owner is not None and not isinstance(owner, types.ModuleType):
                parts.append(("bound self", self._bound(owner)))
            return _finish(parts, name)
        if isinstance(obj, types.WrapperDescriptorType | types.MethodDescriptorType):
            return _finish([(f"function {name}", library_token(obj))], name)
        return self._object_print(obj, name)

    def _bound(self, owner: Any) -> bytes:
        try:
            return self.values.digest(owner)
        except Uncacheable as exc:
            raise Uncacheable(f"its bound object is {exc}") from None

    def _object_print(self, obj: Any, name: str) -> CallablePrint:
        """A callable object: its class, its state, and what it wraps."""
        cls = self.print_of(type(obj))
        if cls.digest is None:
            return cls
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None and wrapped is not obj:
            inner = self.print_of(wrapped)
            if inner.digest is None:
                return inner
            state = {k: v for k, v in getattr(obj, "__dict__", {}).items() if k != "__wrapped__"}
            parts = [*inner.parts, (f"wrapper {display_name(type(obj))}", cls.digest)]
            parts.append(("wrapper state", self.values.digest(state)))
            return _finish(parts, inner.name)
        try:
            state = self.values._pickled(obj, None)
        except Uncacheable as exc:
            raise Uncacheable(f"the callable object {name} is {exc}") from None
        if _is_unit(type(obj)):  # the user's class: its parts, for explain
            return _finish([*cls.parts, ("callable object", state)], name)
        return _finish([(f"function {name}", digest_of(cls.digest + state))], name)

    def _unit_print(self, top: Any) -> CallablePrint:
        """The unit of ``top`` and every unit it reaches, in breadth-first order."""
        order = [top]
        seen = {id(top)}
        index = 0
        while index < len(order):
            for edge in self._unit(order[index]).edges:
                if id(edge) not in seen:
                    seen.add(id(edge))
                    order.append(edge)
            index += 1
        top_unit = self._units[id(top)]
        parts: list[tuple[str, bytes]] = []
        labels: set[str] = set()
        for position, obj in enumerate(order):
            unit = self._units[id(obj)]
            shown = _shown_name(unit, top_unit)
            for kind, entry_name, digest in unit.entries:
                label = _label(kind, entry_name, unit, shown, position, top_unit)
                if kind == "global" and (label, digest) in parts:
                    continue  # the same global read by two functions: one part
                parts.append((_unique(label, labels), digest))
            if unit.reason is not None:
                kind, entry_name, what = unit.reason
                label = _label(kind, entry_name, unit, shown, position, top_unit)
                where = "" if position == 0 or kind == "code" else f", read by {shown},"
                return CallablePrint(None, f"{label}{where} is {what}", (), display_name(top))
        return _finish(parts, display_name(top))

    def _unit(self, obj: Any) -> _Unit:
        known = self._units.get(id(obj))
        if known is not None:
            return known
        unit = _Unit(obj)
        self._units[id(obj)] = unit
        try:
            if isinstance(obj, type):
                self._class_entries(obj, unit)
            else:
                self._function_entries(obj, unit)
        except _EntryError as exc:
            unit.reason = exc.args
        return unit

    def _entry(self, unit: _Unit, kind: str, name: str, value: Any) -> None:
        try:
            digest = self.values.digest(value, unit.edges)
        except Uncacheable as exc:
            raise _EntryError(kind, name, str(exc)) from None
        unit.entries.append((kind, name, digest))

    def _function_entries(self, fn: types.FunctionType, unit: _Unit) -> None:
        code = fn.__code__
        info = _code_info(code)
        unit.entries.append(("code", "", info.digest))
        defaults = fn.__defaults__ or ()
        first = code.co_argcount - len(defaults)
        for name, value in zip(code.co_varnames[first : code.co_argcount], defaults, strict=True):
            self._entry(unit, "default", name, value)
        for name, value in (fn.__kwdefaults__ or {}).items():
            self._entry(unit, "default", name, value)
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later)
                unit.entries.append(("closure", name, _MISSING))
                continue
            self._entry(unit, "closure", name, value)
        self._global_entries(fn, info, unit)
        extra = {k: v for k, v in vars(fn).items() if k != "__wrapped__"}
        if extra:
            self._entry(unit, "attributes", "", extra)
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None:
            self._entry(unit, "wrapped", "", wrapped)

    def _global_entries(self, fn: types.FunctionType, info: _CodeInfo, unit: _Unit) -> None:
        namespace = fn.__globals__
        builtins = namespace.get("__builtins__", {})
        if isinstance(builtins, types.ModuleType):
            builtins = vars(builtins)
        for name in info.global_names:
            if name in namespace:
                self._global(unit, name, namespace[name], info.attr_names, 0)
            elif name not in builtins:
                unit.entries.append(("global", name, _MISSING))

    def _global(self, unit: _Unit, name: str, value: Any, attrs: frozenset, depth: int) -> None:
        if not isinstance(value, types.ModuleType) or not is_user_module(value.__name__):
            self._entry(unit, "global", name, value)
            return
        # The user's module: the attributes this code reads of it (helpers.parse_row).
        unit.entries.append(("global", name, digest_of(b"module " + value.__name__.encode())))
        if depth >= _MODULE_DEPTH:
            return
        content = vars(value)
        for attr in sorted(attrs):
            if attr in content:
                self._global(unit, f"{name}.{attr}", content[attr], attrs, depth + 1)

    def _class_entries(self, cls: type, unit: _Unit) -> None:
        bases = [self._class_base(base, unit) for base in cls.__bases__]
        names = sorted(name for name in vars(cls) if name not in _CLASS_SKIP)
        head = f"class {cls.__qualname__}|{names}".encode()
        unit.entries.append(("code", "", digest_of(b"\0".join([_SALT, head, *bases]))))
        for name, attr in sorted(vars(cls).items()):
            if name in _CLASS_SKIP:
                continue
            if isinstance(attr, staticmethod | classmethod):
                attr = attr.__func__
            elif isinstance(attr, property):
                attr = (attr.fget, attr.fset, attr.fdel)
            self._entry(unit, "attribute", name, attr)

    def _class_base(self, base: type, unit: _Unit) -> bytes:
        if base is object:
            return b"object"
        try:
            return self.values.digest(base, unit.edges)
        except Uncacheable as exc:
            raise _EntryError("base", base.__qualname__, str(exc)) from None


class _EntryError(Exception):
    """(kind, name, what it is): an entry of a unit that cannot be fingerprinted."""


def _unit_token(obj: Any) -> bytes:
    return digest_of(f"unit|{obj.__module__}|{display_name(obj)}".encode())


def _head_label(obj: Any, name: str) -> str:
    return f"class {name}" if isinstance(obj, type) else f"function {name}"


def _shown_name(unit: _Unit, top: _Unit) -> str:
    name = display_name(unit.obj)
    return name if unit.module == top.module else f"{unit.module}.{name}"


def _label(kind: str, name: str, unit: _Unit, shown: str, position: int, top: _Unit) -> str:
    """The part's label as ``explain`` shows it (see ``fingerprint.explain``)."""
    if kind == "code":
        return _head_label(unit.obj, shown) if position == 0 else f"helper {shown}"
    if kind == "global":
        return (
            f"global {name}" if unit.namespace == top.namespace else f"global {unit.module}.{name}"
        )
    suffix = "" if position == 0 else f" of {shown}"
    if kind == "attributes":
        return f"attributes{suffix or ' of the function'}"
    if kind == "wrapped":
        return f"__wrapped__{suffix or ' of the function'}"
    if kind == "attribute" or kind == "base":
        return f"{kind} {name}{suffix or ''}"
    return f"{kind} {name}{suffix}"


def _unique(label: str, labels: set[str]) -> str:
    if label in labels:
        count = 2
        while f"{label} #{count}" in labels:
            count += 1
        label = f"{label} #{count}"
    labels.add(label)
    return label


def _finish(parts: list[tuple[str, bytes]], name: str) -> CallablePrint:
    digest = digest_of(b"".join(label.encode() + b"\0" + d for label, d in parts))
    return CallablePrint(digest, None, tuple(parts), name)
