"""The public entry point ``get`` (Dask's contract), and the run and plan hooks around it.

``get`` resolves the scheduler (per-call keyword, else the config), fills in the
config's ``num_workers``/``pool``/``progress``/``rerun``/``worker_timeout``/``cache``
unless given, asks the run hooks what they add and the plan hooks for planners, and
calls the backend.  Everything else
lives in the backends and the engine (``compute`` and ``delayed``, which build graphs
and call ``get``, sit one layer up in ``lazy.py``).

Run hooks are how the layers above take part in every run without this module
knowing them (progress bars and advice from ``diagnostics``, the local rerun of a
failed task from ``debug``; each registers itself on first use).  A hook is a
callable ``hook(request) -> Additions | None``: it reads the :class:`RunRequest`
(backend name, resolved options: read-only) and returns what it adds to this run:
``observers`` (appended, in hook order, after the caller's), and ``around``, a
wrapper ``around(call) -> result`` that must return (or raise) what ``call()`` does.
Wrappers nest in registration order, the first hook's outermost, so the failure
hook sees an error after the progress bar has turned red.  No hook edits a shared
dict; :func:`add_run_hook` returns the function that removes the hook again
(:func:`remove_run_hook` does the same).  The hooks are a tuple replaced under
``_hooks_lock``, so a ``get`` on another thread reads a consistent set without a lock.

Plan hooks (:func:`add_plan_hook`, kept in ``plan.py``) are the same idea for the
graph seam: ``hook(request) -> Planner | None``.  The planners they return, after the
caller's own ``planners=``, go to the backend, which hands them to the engine
(``plan.py`` says what a planner sees).  The result cache is one: the ``cache``
option reaches it this way.  A foreign get function cannot take planners: the run
goes ahead without them, with a warning.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from . import config
from .plan import RunRequest, add_plan_hook, check_planner, planners_for, remove_plan_hook
from .schedulers import capabilities, resolve

__all__ = [
    "get",
    "add_run_hook",
    "remove_run_hook",
    "add_plan_hook",
    "remove_plan_hook",
    "RunRequest",
    "Additions",
]

# Options a backend understands; Dask-specific ones it may pass along are ignored.
# Unknown names are an error here (a typo should not pass silently); Dask's compute()
# goes through interop.dask_get, which drops them as Dask's get functions do.
OPTIONS = (
    "num_workers",
    "pool",
    "observers",
    "progress",
    "rerun",
    "worker_timeout",
    "cache",
    "planners",
)
_DASK_OPTIONS = frozenset(
    {
        "optimize_graph",
        "traverse",
        "rerun_exceptions_locally",
        "callbacks",
        "get_id",
        "pack_exception",
        "raise_exception",
        "chunksize",
        "func_dumps",
        "func_loads",
    }
)

# The registered run hooks: a tuple, replaced whole under _hooks_lock.
_hooks_lock = threading.Lock()
_run_hooks: tuple[Callable[[RunRequest], Additions | None], ...] = ()


@dataclass(frozen=True)
class Additions:
    """What a run hook adds to one run: observers, and a wrapper around the call."""

    observers: tuple = ()
    around: Callable[[Callable[[], Any]], Any] | None = None


def add_run_hook(hook: Callable[[RunRequest], Additions | None]) -> Callable[[], None]:
    """Ask ``hook(request)`` before every ``get`` (once, however often added); returns
    a function that removes it."""
    global _run_hooks
    with _hooks_lock:
        if hook not in _run_hooks:
            _run_hooks = (*_run_hooks, hook)
    return functools.partial(remove_run_hook, hook)


def remove_run_hook(hook: Callable[[RunRequest], Additions | None]) -> None:
    """Stop asking ``hook`` (no error if it was not registered)."""
    global _run_hooks
    with _hooks_lock:
        _run_hooks = tuple(h for h in _run_hooks if h != hook)


def get(dsk: Any, keys: Any, scheduler: Any = None, **options: Any) -> Any:
    """Compute ``keys`` from graph ``dsk`` and return their results.

    ``keys`` is one key or a nested list of keys (answered as nested tuples).
    ``scheduler`` is a name (``"sync"``, ``"threads"``, ``"processes"``...), a
    ``concurrent.futures.Executor`` or a get function; None uses the config.
    Options: ``num_workers``, ``pool``, ``observers`` (a list of
    :class:`~notebook_sched.events.Observer`), ``progress``, ``rerun``,
    ``worker_timeout`` (processes: seconds a busy worker may stay silent), ``cache``
    (False, True, ``"memory"``, ``"disk"`` or a folder), ``planners`` (a list of
    :class:`~notebook_sched.plan.Planner`, see ``plan.py``).
    """
    __tracebackhide__ = True  # IPython, its debugger and pytest skip our frames
    unknown = [name for name in options if name not in OPTIONS and name not in _DASK_OPTIONS]
    if unknown:
        raise TypeError(
            f"get() got unknown option {unknown[0]!r}; the options are: {', '.join(OPTIONS)}. "
            f"(notebook_sched.get is strict; Dask's compute() on our schedulers, through "
            f"notebook_sched.interop.dask_get, ignores keywords it does not use, as Dask does.)"
        )
    for name in _DASK_OPTIONS:
        options.pop(name, None)
    default = config.get("scheduler")  # (the first use: the layers above register)
    if scheduler is None:
        scheduler = default
    backend, backend_get = resolve(scheduler)
    _fill_defaults(options)
    request = RunRequest(backend, MappingProxyType(options))
    added = [a for a in (hook(request) for hook in _run_hooks) if a is not None]
    if any(a.observers for a in added):
        extra = [observer for a in added for observer in a.observers]
        options["observers"] = [*(options.get("observers") or ()), *extra]

    planners = [*map(check_planner, options.get("planners") or ()), *planners_for(request)]

    # Our backends (and get functions marked ``takes_observers``, such as
    # ``Client.get``) take observers and planners; a foreign get function knows
    # Dask's options only.
    ours = isinstance(scheduler, (str, Executor)) or getattr(scheduler, "takes_observers", False)
    if ours:
        names = ("num_workers", "pool", "observers")
        backend_options = {name: options.get(name) for name in names}
        if capabilities(backend).worker_timeout:  # processes, auto
            backend_options["worker_timeout"] = options["worker_timeout"]
        if planners:
            backend_options["planners"] = planners
    else:
        backend_options = {
            name: options[name] for name in ("num_workers", "pool") if options[name] is not None
        }
        if planners:
            warnings.warn(
                f"the get function {backend!r} takes no planners, so this run goes without "
                f"them (cache={options['cache']!r} included): use one of our schedulers "
                f"(a name, an Executor) for the result cache",
                RuntimeWarning,
                stacklevel=2,
            )

    def call() -> Any:
        __tracebackhide__ = True
        return backend_get(dsk, keys, **backend_options)

    run = call
    for addition in reversed(added):
        if addition.around is not None:
            run = functools.partial(addition.around, run)
    return run()


def _fill_defaults(options: dict) -> None:
    """The config's values for the options not given (checked: a typo fails here)."""
    for name in ("num_workers", "pool"):
        if options.get(name) is None:
            options[name] = config.get(name)
    for name in ("progress", "rerun", "worker_timeout"):
        options.setdefault(name, config.get(name))
    if options.get("cache") is None:
        options["cache"] = config.get("cache")
    else:
        options["cache"] = config.validate("cache", options["cache"])
    config.validate("worker_timeout", options["worker_timeout"])
    if options.get("rerun") not in config.RERUN_CHOICES:
        config.validate("rerun", options.get("rerun"))
