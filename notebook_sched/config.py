"""Settings that pick and tune the scheduler: global, scoped with ``with``, or per call.

::

    import notebook_sched as ns
    ns.config.set(scheduler="threads")                 # global, from now on
    with ns.config.set(scheduler="processes", num_workers=2):
        ...                                            # only inside the block
    ns.get(dsk, "x", scheduler="sync")                 # only this call

Names:

``scheduler``    a backend name or alias (``sync``, ``threads``, ``processes``...), a
                 ``concurrent.futures.Executor``, or a get-callable.  The environment
                 variable ``NOTEBOOK_SCHED_SCHEDULER`` sets the default (``threads``).
``num_workers``  threads or processes per run; None means one per CPU.
``pool``         an executor the ``threads``/``processes`` backends run tasks on: a
                 ``concurrent.futures.Executor`` or a ``multiprocessing.pool.Pool`` /
                 ``ThreadPool``.
``progress``     True, False, or None for automatic (on in notebooks, off in scripts).
``rerun``        ``"auto"``, ``"always"`` or ``"never"``: rerun a task that failed in
                 another process locally, so a debugger lands in its frame.
``dask_address`` the address of a dask.distributed scheduler for the ``dask`` backend.
``advise``       measure runs (a sample of tasks' CPU, the GIL) so that
                 ``notebook_sched.advise()`` can say which scheduler suits them: None
                 (automatic) measures whenever progress is shown and, after a compute
                 of over ``ADVICE_AFTER`` seconds that another backend would run 1.3x
                 faster, shows one line of advice under the bar (once per kind of
                 graph); True measures every run; False never measures.
``worker_timeout`` seconds a worker process may go without a sign of life (heartbeat)
                 before it is taken for hung, killed and replaced; None turns the
                 check off.  A worker busy in a long task still sends heartbeats, so
                 only a stopped or wedged worker (SIGSTOP, a C deadlock holding the
                 GIL, a machine deep in swap) reaches it.  Default 30 s.
``trim_memory``  give the memory of freed results back to the system while a
                 graph runs and when it ends (glibc's ``malloc_trim``, at most 1% of
                 the run's time; see ``heap_trim.py``).  Default True.
``cache``        the result cache: False (the default: nothing is hashed or kept),
                 True or ``"memory"`` (this session, in memory), ``"disk"`` (memory
                 plus a folder under the user's cache directory), or a folder (a
                 path string other than those names, or an ``os.PathLike``).
``cache_max_bytes`` / ``cache_disk_max_bytes``  the size bounds of the memory and
                 the disk tiers, in bytes (default 2 GiB and 10 GiB; least recently
                 used entries go first).

``set`` changes the values at once (like ``dask.config.set``).  Used as a context
manager, the change belongs to the ``with`` block of the thread (the ``contextvars``
context) that entered it: ``__enter__`` takes the global values back and keeps the
change in a stack of scopes in a ``ContextVar``, so ``get`` sees it in that thread
(and in the tasks of a ``pool=``/executor thread pool, which run in a copy of the
caller's context) and nowhere else, and ``__exit__`` removes exactly that scope,
whatever other threads set or in what order scopes end.  (Between ``set(...)`` and
``__enter__`` the change is global for a few bytecodes: ``set`` cannot know earlier
that it is a scope.)  A plain ``set`` (not a ``with``) stays global, seen by every
thread, and also overrides the scopes open in its own thread (the picker, or
``%schedule``, inside a ``with`` block: the change shows at once and stays after the
block).  A ``set`` closed without being entered (``%%schedule`` cells do this) puts
back the global values it changed, the ones still as it left them.  Observers
registered with :func:`subscribe` hear every change (the picker widget
stays in sync with ``%schedule`` this way).  *Mirrors* registered with
:func:`add_mirror` copy a change into another library's settings and are undone when
the scope that made it ends (Dask's default scheduler follows ours this way; a
subscriber cannot do it, since it cannot tell the end of a scope from a new change).

This module is the bottom layer: it imports nothing from the package.  The values it
checks itself are plain (``progress``, ``rerun``, ``advise``, ``worker_timeout``,
``trim_memory``, ``cache`` and its sizes); the scheduler names, pools and worker
counts are checked by the layer that owns them,
which registers its check with :func:`register_validator` (the scheduler registry,
when it is imported).  The package root registers, with :func:`on_first_use`, the one
callback that brings those layers in before the first ``set``/``get``, so a bad name
fails at once with the list of valid ones, and a script that only imports the
package loads none of them.  :func:`activate` runs it, once: the package's only
run-once guard (the root calls it too, on the first use of a lazy name).
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "set",
    "get",
    "subscribe",
    "unsubscribe",
    "add_mirror",
    "register_validator",
    "on_first_use",
    "activate",
    "validate",
    "DEFAULTS",
    "ENV_SCHEDULER",
]

ENV_SCHEDULER = "NOTEBOOK_SCHED_SCHEDULER"

DEFAULTS: dict[str, Any] = {
    "scheduler": "threads",
    "num_workers": None,
    "pool": None,
    "progress": None,
    "rerun": "auto",
    "dask_address": None,
    "worker_timeout": 30.0,
    "advise": None,
    "trim_memory": True,
    "cache": False,
    "cache_max_bytes": 2 * 1024**3,
    "cache_disk_max_bytes": 10 * 1024**3,
}

CACHE_NAMES = ("memory", "disk")  # besides True/False; any other string is a folder

RERUN_CHOICES = ("auto", "always", "never")
# Settings whose values the layer that owns them checks (register_validator): the
# scheduler registry checks names, executors and pools; the engine worker counts.
_OWNED = ("scheduler", "num_workers", "pool")

# Guards _values, _subscribers, _mirrors and _validators.
_lock = threading.RLock()
_values: dict[str, Any] = dict(DEFAULTS)
_subscribers: list[Callable[[str, Any], None]] = []
# mirror(changes) -> an undo callable, or None when it has nothing to undo.
_mirrors: list[Callable[[dict[str, Any]], Callable[[], None] | None]] = []
_validators: dict[str, Callable[[Any], Any]] = {}
_MISSING = object()
# This context's open ``with`` scopes, innermost last: (the scope, its changes).  A
# tuple, replaced (never mutated), so a copied context keeps its own.
_scopes: contextvars.ContextVar[tuple] = contextvars.ContextVar(
    "notebook_sched_config_scopes", default=()
)
# The one run-once guard of the package: the callback registered with on_first_use
# runs once, before the first set/get (activate).  _activation_lock serialises it
# (re-entered by the callback itself); _activating is True while it runs, so other
# threads wait for it instead of passing the fast check.
_first_use: Callable[[], None] | None = None
_activating = False
_activation_lock = threading.RLock()


def register_validator(name: str, check: Callable[[Any], Any]) -> None:
    """Let the layer that owns setting ``name`` check its values: ``check(value)``
    returns the value to store (a name in canonical form) or raises, saying what is
    accepted.  None (the "automatic" value) is never passed to it."""
    with _lock:
        _validators[name] = check


def on_first_use(callback: Callable[[], None] | None) -> None:
    """Call ``callback()`` once, before the first ``set``/``get``/``snapshot`` (the
    package root registers the layers above this way; see ``notebook_sched/__init__``)."""
    global _first_use
    _first_use = callback


def activate() -> None:
    """Run the first-use callback if it has not run (once; other threads wait until it
    has run).  ``set``/``get`` call this; so does the package root on the first use of
    a lazy name or ``%load_ext``."""
    global _first_use, _activating
    if _first_use is None and not _activating:
        return
    with _activation_lock:
        callback, _first_use = _first_use, None
        if callback is not None:
            _activating = True
            try:
                callback()
            finally:
                _activating = False


def validate(name: str, value: Any) -> Any:
    """``value`` checked for setting ``name`` (in canonical form), or an error saying
    what is accepted: what ``set`` stores, for callers that take the same values per
    call (``get(..., cache=...)``, ``LocalCluster(worker_timeout=...)``)."""
    if name not in DEFAULTS:
        raise KeyError(
            f"Unknown setting {name!r}; the settings are: {', '.join(sorted(DEFAULTS))}."
        )
    if value is not None and name in _OWNED:
        activate()
        check = _validators.get(name)
        if check is not None:
            return check(value)
    if name == "progress" and value not in (None, True, False):
        raise ValueError(f"progress must be True, False or None (automatic); got {value!r}.")
    if name == "worker_timeout" and value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(
                f"worker_timeout must be a positive number of seconds or None (no check); "
                f"got {value!r}. Use e.g. worker_timeout=60."
            )
    if name == "advise" and value not in (None, True, False):
        raise ValueError(f"advise must be True, False or None (automatic); got {value!r}.")
    if name == "trim_memory" and not isinstance(value, bool):
        raise ValueError(f"trim_memory must be True or False; got {value!r}.")
    if name == "cache":
        return _check_cache(value)
    if name in ("cache_max_bytes", "cache_disk_max_bytes"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"{name} must be a number of bytes (an int, 0 or more); got {value!r}. "
                f"Use e.g. {name}=4 * 1024**3 for 4 GiB."
            )
    if name == "rerun" and value not in RERUN_CHOICES:
        choices = ", ".join(map(repr, RERUN_CHOICES))
        raise ValueError(f"rerun must be one of {choices}; got {value!r}.")
    return value


def _check_cache(value: Any) -> Any:
    if value is True or value is False:
        return value
    if isinstance(value, os.PathLike):
        return value
    if isinstance(value, str) and value.strip():
        return value
    raise ValueError(
        f"cache must be False (off), True or 'memory' (in memory), 'disk' (memory and "
        f"the user's cache folder) or a folder path; got {value!r}."
    )


class set:  # noqa: N801 - named like dask.config.set on purpose
    """Change settings now; used as a context manager, only inside the block, in the
    thread (context) that entered it, and restored on exit (see the module docstring)."""

    def __init__(self, **settings: Any):
        activate()
        checked = {name: validate(name, value) for name, value in settings.items()}
        with _lock:
            self._previous = {name: _values[name] for name in checked}
            _values.update(checked)
            mirrors = list(_mirrors)
        self._changes = checked
        self._scoped = False
        self._closed = False
        # Until __enter__ (if ever) says this is a scope, it is a plain set: this
        # context's open scopes show its values too.
        self._scopes_before = scopes = _scopes.get()
        if scopes:
            self._scopes_set = tuple(
                (scope, {**changes, **{n: v for n, v in checked.items() if n in changes}})
                for scope, changes in scopes
            )
            _scopes.set(self._scopes_set)
        _notify(checked)
        undos = (mirror(checked) for mirror in mirrors)
        self._undo = [undo for undo in undos if undo is not None]

    def __enter__(self) -> set:
        # The change becomes this context's: the global values go back (those still as
        # __init__ left them: another thread may have set one since).
        with _lock:
            _restore_global(self._changes, self._previous)
        scopes = _scopes.get()
        if scopes and scopes is getattr(self, "_scopes_set", None):
            scopes = self._scopes_before
        _scopes.set((*scopes, (self, self._changes)))
        self._scoped = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._closed:
            return
        self._closed = True
        if self._scoped:
            _scopes.set(tuple(entry for entry in _scopes.get() if entry[0] is not self))
        else:
            with _lock:
                _restore_global(self._changes, self._previous)
        _notify({name: get(name) for name in self._changes})
        for undo in reversed(self._undo):
            undo()

    def __repr__(self) -> str:
        return f"<config.set changes={self._changes!r} previous={self._previous!r}>"


def _restore_global(changes: dict[str, Any], previous: dict[str, Any]) -> None:
    """Put back the global values of ``changes`` that still are as they were set."""
    for name, value in changes.items():
        if _values[name] is value:
            _values[name] = previous[name]


def _scoped_value(name: str) -> Any:
    for _scope, changes in reversed(_scopes.get()):
        if name in changes:
            return changes[name]
    return _MISSING


def get(name: str, default: Any = _MISSING) -> Any:
    """The current value of setting ``name``."""
    activate()
    value = _scoped_value(name)
    if value is not _MISSING:
        return value
    with _lock:
        if name in _values:
            return _values[name]
    if default is not _MISSING:
        return default
    raise KeyError(f"Unknown setting {name!r}; the settings are: {', '.join(sorted(DEFAULTS))}.")


def snapshot() -> dict[str, Any]:
    """All settings, as a new dict."""
    activate()
    with _lock:
        values = dict(_values)
    for _scope, changes in _scopes.get():
        values.update(changes)
    return values


def subscribe(callback: Callable[[str, Any], None]) -> None:
    """Call ``callback(name, value)`` after every change of a setting."""
    with _lock:
        if callback not in _subscribers:
            _subscribers.append(callback)


def unsubscribe(callback: Callable[[str, Any], None]) -> None:
    with _lock:
        if callback in _subscribers:
            _subscribers.remove(callback)


def add_mirror(mirror: Callable[[dict[str, Any]], Callable[[], None] | None]) -> None:
    """Call ``mirror(changes)`` on every ``set``; the undo it returns runs when the
    ``with`` block ends (a ``set`` not used as a context manager is never undone)."""
    with _lock:
        if mirror not in _mirrors:
            _mirrors.append(mirror)


def _notify(changes: dict[str, Any]) -> None:
    with _lock:
        subscribers = list(_subscribers)
    for name, value in changes.items():
        for callback in subscribers:
            callback(name, value)


def load_environment() -> None:
    """Take the default scheduler from ``NOTEBOOK_SCHED_SCHEDULER`` (the package root
    calls this once at import, after the scheduler registry registered its check)."""
    name = os.environ.get(ENV_SCHEDULER)
    if name:
        check = _validators.get("scheduler")
        try:
            value = check(name) if check is not None else name
        except ValueError as exc:
            raise ValueError(f"{ENV_SCHEDULER}={name!r} is not valid: {exc}") from None
        with _lock:
            _values["scheduler"] = value
