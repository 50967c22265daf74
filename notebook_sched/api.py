"""The public entry points: ``get`` (Dask's contract) and ``compute``.

``get`` resolves the scheduler (per-call keyword, else the config), fills in the
config's ``num_workers``/``pool`` unless given, attaches observers contributed by
the layers above (progress, failure handling: see :func:`add_run_hook`), and calls
the backend.  Everything else lives in the backends and the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from . import config
from .schedulers import capabilities, resolve

__all__ = ["get", "compute", "add_run_hook"]

# Options a backend understands; Dask-specific ones it may pass along are ignored.
# Unknown names are an error here (a typo should not pass silently); Dask's compute()
# goes through interop.dask_get, which drops them as Dask's get functions do.
OPTIONS = ("num_workers", "pool", "observers", "progress", "rerun", "worker_timeout")
_DASK_OPTIONS = frozenset(
    {
        "optimize_graph",
        "traverse",
        "rerun_exceptions_locally",
        "callbacks",
        "cache",
        "get_id",
        "pack_exception",
        "raise_exception",
        "chunksize",
        "func_dumps",
        "func_loads",
    }
)

# Layers above (progress bars, failure reruns) wrap runs through these hooks:
# hook(call, backend_name, options) -> result, where call() runs the graph.
_run_hooks: list[Callable[..., Any]] = []


def add_run_hook(hook: Callable[..., Any]) -> None:
    """Wrap every ``get``: ``hook(call, backend, options)`` must return ``call()``'s result."""
    if hook not in _run_hooks:
        _run_hooks.append(hook)


def get(dsk: Any, keys: Any, scheduler: Any = None, **options: Any) -> Any:
    """Compute ``keys`` from graph ``dsk`` and return their results.

    ``keys`` is one key or a nested list of keys (answered as nested tuples).
    ``scheduler`` is a name (``"sync"``, ``"threads"``, ``"processes"``...), a
    ``concurrent.futures.Executor`` or a get function; None uses the config.
    Options: ``num_workers``, ``pool``, ``observers`` (a list of
    :class:`~notebook_sched.events.Observer`), ``progress``, ``rerun``,
    ``worker_timeout`` (processes: seconds a busy worker may stay silent).
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
    if scheduler is None:
        scheduler = config.get("scheduler")
    backend, backend_get = resolve(scheduler)
    for name in ("num_workers", "pool"):
        if options.get(name) is None:
            options[name] = config.get(name)
    for name in ("progress", "rerun", "worker_timeout"):
        options.setdefault(name, config.get(name))
    config._validate("worker_timeout", options["worker_timeout"])
    if options.get("rerun") not in config.RERUN_CHOICES:
        config._validate("rerun", options.get("rerun"))

    # Our backends (and get functions marked ``takes_observers``, such as
    # ``Client.get``) take observers; a foreign get function knows Dask's options only.
    ours = isinstance(scheduler, (str, Executor)) or getattr(scheduler, "takes_observers", False)

    def call() -> Any:
        __tracebackhide__ = True
        # Read the options only now: run hooks may add observers (a progress bar).
        if ours:
            names = ("num_workers", "pool", "observers")
            backend_options = {name: options.get(name) for name in names}
            if capabilities(backend).worker_timeout:  # processes, auto
                backend_options["worker_timeout"] = options["worker_timeout"]
        else:
            backend_options = {
                name: options[name] for name in ("num_workers", "pool") if options[name] is not None
            }
        return backend_get(dsk, keys, **backend_options)

    run = call
    for hook in reversed(_run_hooks):
        run = _wrap(hook, run, backend, options)
    return run()


def _wrap(hook, inner, backend, options):
    def run_with_hook() -> Any:
        __tracebackhide__ = True
        return hook(inner, backend, options)

    return run_with_hook


def compute(*args: Any, scheduler: Any = None, traverse: bool = True, **options: Any) -> tuple:
    """Compute several delayed objects (or anything with ``__dask_graph__``) at once.

    Shared parts of their graphs run once.  Plain values pass through unchanged;
    lists, tuples and dicts of delayed objects are computed inside when ``traverse``.
    Returns a tuple with one result per argument.
    """
    from .delayed import collect_graph

    graph, keys, rebuild = collect_graph(args, traverse=traverse)
    if not keys:
        return tuple(args)
    results = get(graph, keys, scheduler=scheduler, **options)
    return rebuild(results)
