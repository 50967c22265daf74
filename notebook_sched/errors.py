"""Exceptions that cross processes, and the hints added to a failed task's exception.

**Crossing processes.**  A task's exception travels from a worker process (the
``processes`` pool, a foreign executor, a cluster worker) to the caller, who must
receive the task's *own type* so ``except NeedsArgs`` still works.  Plain pickling
fails for many real exceptions: a constructor that needs arguments
(``def __init__(self, a, b)``: unpickling calls ``cls(*args)`` with the wrong
arguments), an unpicklable attribute (a lock, an open file), a ``__reduce__`` that
raises, an exception group holding any of those.  :func:`dump_exception` therefore
tries, in order:

1. ``cloudpickle.dumps(exc)``, checked by loading it back in the worker;
2. a rebuild record, as tblib and distributed do: the class (cloudpickled by value
   when it is not importable), ``args`` and the picklable part of ``__dict__`` (other
   attributes are replaced by their repr); nested exceptions in ``args`` (exception
   groups) are recorded the same way.  The caller rebuilds it with
   ``cls.__new__(cls, *args)`` (or ``cls.__new__(cls)``), never calling ``__init__``;
3. only when even that fails, a :class:`RemoteTaskError` whose message starts with
   the original type's qualified name, so it stays visible.

Chained causes do not travel as objects (pickle drops ``__cause__``/``__context__``);
the remote traceback text, which the backends attach as the ``__cause__``, shows them.

**Hints.**  :func:`misspelled_key_note` is called only when a task has failed: it
looks for string arguments within edit distance 2 of a key of the graph ("did you
mean the key 'data'?").  Dask's rules make such strings data, so this never changes
what runs; it only explains the failure.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

__all__ = [
    "RemoteTaskError",
    "dump_exception",
    "load_exception",
    "misspelled_key_note",
    "edit_distance_at_most",
]

MAX_NESTED = 50  # nested exceptions recorded per level (exception groups)
MAX_KEYS_SCANNED = 200_000  # a failure hint must stay cheap on huge graphs


class RemoteTaskError(RuntimeError):
    """A task's exception that could not be rebuilt as its own type in the caller."""


def _cloudpickle():
    import cloudpickle

    return cloudpickle


def dump_exception(exc: BaseException) -> bytes:
    """Bytes that :func:`load_exception` turns back into ``exc``'s type (see module doc)."""
    cloudpickle = _cloudpickle()
    try:
        data = cloudpickle.dumps(exc)
        pickle.loads(data)  # exceptions with a custom __init__ often fail only here
        return data
    except Exception:
        pass
    try:
        data = cloudpickle.dumps(_Record.of(exc, 0))
        pickle.loads(data)
        return data
    except Exception as reason:
        return cloudpickle.dumps(_fallback(exc, reason))


def load_exception(data: bytes) -> BaseException:
    """The exception from :func:`dump_exception`'s bytes; never raises."""
    try:
        exc = pickle.loads(data)
    except Exception as reason:
        return RemoteTaskError(f"(the task's exception could not be unpickled: {reason})")
    if isinstance(exc, _Record):
        return exc.rebuild()
    if not isinstance(exc, BaseException):
        return RemoteTaskError(f"the task failed with a non-exception object: {exc!r}")
    return exc


def _fallback(exc: BaseException, reason: BaseException) -> RemoteTaskError:
    name = _qualname(type(exc))
    text = _safe_str(exc)
    return RemoteTaskError(
        f"{name}: {text} (the exception could not be rebuilt as {name} in the caller: "
        f"{type(reason).__name__}: {reason})"
    )


def _qualname(cls: type) -> str:
    module = getattr(cls, "__module__", "")
    qual = getattr(cls, "__qualname__", cls.__name__)
    return qual if module in ("builtins", "__main__", None, "") else f"{module}.{qual}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


def _portable(value: Any, depth: int) -> Any:
    """``value`` made picklable: exceptions become records, others their repr."""
    if isinstance(value, BaseException):
        return _Record.of(value, depth + 1)
    if isinstance(value, (list, tuple)) and any(isinstance(v, BaseException) for v in value):
        return type(value)(_portable(v, depth) for v in value[:MAX_NESTED])
    try:
        pickle.loads(_cloudpickle().dumps(value))
        return value
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unpicklable {type(value).__name__}>"


class _Record:
    """What is needed to rebuild an exception without calling its ``__init__``."""

    def __init__(self, cls: type, args: tuple, state: dict, text: str, name: str):
        self.cls = cls
        self.args = args
        self.state = state
        self.text = text
        self.name = name

    @classmethod
    def of(cls, exc: BaseException, depth: int) -> _Record:
        if depth > 10:
            return _fallback(exc, RecursionError("exceptions nested too deep"))
        args = tuple(_portable(a, depth) for a in getattr(exc, "args", ()))
        state = {}
        for name, value in getattr(exc, "__dict__", {}).items():
            state[name] = _portable(value, depth)
        return cls(type(exc), args, state, _safe_str(exc), _qualname(type(exc)))

    def rebuild(self) -> BaseException:
        args = tuple(a.rebuild() if isinstance(a, _Record) else a for a in self.args)
        args = tuple(
            type(a)(x.rebuild() if isinstance(x, _Record) else x for x in a)
            if isinstance(a, (list, tuple))
            else a
            for a in args
        )
        state = {k: v.rebuild() if isinstance(v, _Record) else v for k, v in self.state.items()}
        for make in (lambda: self.cls.__new__(self.cls, *args), lambda: self.cls.__new__(self.cls)):
            try:
                exc = make()
                break
            except Exception:
                continue
        else:
            return RemoteTaskError(f"{self.name}: {self.text}")
        try:
            exc.args = args
        except Exception:
            pass
        for name, value in state.items():
            try:
                setattr(exc, name, value)
            except Exception:
                pass
        return exc


def edit_distance_at_most(a: str, b: str, limit: int) -> bool:
    """True when the Levenshtein distance of ``a`` and ``b`` is at most ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return False
    if a == b:
        return True
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        best = i
        for j, cb in enumerate(b, 1):
            cost = previous[j - 1] + (ca != cb)
            cost = min(cost, previous[j] + 1, current[j - 1] + 1)
            current.append(cost)
            best = min(best, cost)
        if best > limit:
            return False
        previous = current
    return previous[-1] <= limit


def misspelled_key_note(strings: Iterable[str], keys: Iterable) -> str | None:
    """A note for string arguments that are one or two edits away from a key, or None."""
    wanted = [s for s in dict.fromkeys(strings) if 0 < len(s) <= 200]
    if not wanted:
        return None
    lines = []
    for text in wanted:
        for n, key in enumerate(keys):
            if n >= MAX_KEYS_SCANNED:
                break
            if type(key) is str and key != text and edit_distance_at_most(text, key, 2):
                lines.append(f"argument {text!r} is a plain string; did you mean the key {key!r}?")
                break
    return "\n".join(lines) if lines else None
