"""Dask collections on our schedulers: the get function Dask calls.

Dask 2026's ``compute`` optimises the collections into one expression and calls the
scheduler as ``get(expr, keys, **kwargs)``; older paths pass a ``HighLevelGraph`` or a
dict.  :func:`dask_get` accepts all of them (``__dask_graph__()`` materialises an
expression), honours Dask's callbacks, and runs the graph through
:func:`notebook_sched.get`, so our run hooks apply: the progress bar, output routing
and the local rerun of failed tasks.  Graph values are legacy tuples, ``Task``,
``Alias`` and ``DataNode`` objects; ``graph.py`` runs the latter through their public
interface (``.dependencies``, called with ``{dependency: value}``), so no private Dask
module is needed.

Three ways in, one path:

* ``x.compute(scheduler=notebook_sched.get)`` (no Dask callbacks: ``get`` is Dask-agnostic),
* ``x.compute(scheduler=partial(dask_get, scheduler="processes"))``, and the same
  callable set as Dask's default by our config scopes (``mirror.py``),
* ``notebook_sched.compute(x)``, which merges the collections' own graphs
  (``__dask_graph__``/``__dask_keys__``/``__dask_postcompute__``) without Dask's
  optimisation pass; the results are the same.

Keywords: Dask forwards every ``compute(**kwargs)`` keyword to the scheduler, and its
own get functions accept and ignore what they do not use (``initializer=``,
``start_callback=``, ``bogus_keyword=``...).  :func:`dask_get` does the same: it keeps
the options :func:`notebook_sched.get` knows and drops the rest (a direct
``notebook_sched.get`` call stays strict, so a typo there is an error).  Dask's own
``num_workers`` and ``pool`` settings (``dask.config.set(num_workers=2)``) apply when
neither the call nor our config sets them.
"""

from __future__ import annotations

import sys
from concurrent.futures import Executor
from typing import Any

from .. import config
from ..api import OPTIONS, get
from ..graph import to_mapping
from ..schedulers import capabilities, resolve

__all__ = ["dask_get", "active_callbacks"]


def active_callbacks(callbacks: Any = None) -> list[tuple]:
    """Dask's callback 5-tuples for this run: ``callbacks=`` or ``Callback.active``."""
    module = sys.modules.get("dask.callbacks")
    if module is None:  # nobody could have registered one
        return []
    if callbacks is None:
        return list(module.Callback.active)
    if not isinstance(callbacks, list | tuple | set):
        callbacks = [callbacks]
    return [module.normalize_callback(cb) for cb in callbacks]


def materialise(dsk: Any) -> dict:
    mapping = to_mapping(dsk)
    return mapping if type(mapping) is dict else dict(mapping)


def prepare(dsk: Any) -> dict:
    """One pass over a graph from Dask, materialised: a P2P shuffle is refused (only
    dask.distributed's scheduler runs one), and Dask's legacy quoted data
    ``(literal(data),)`` becomes a ``DataNode``, so it stays in the caller as Dask
    keeps it (``dask.delayed(obj, traverse=False).compute()`` holds ``obj`` itself)."""
    mapping = materialise(dsk)
    p2p_possible = "distributed" in sys.modules
    quoted: dict = {}
    for key, value in mapping.items():
        typ = type(value)
        if typ is tuple:
            if len(value) == 1 and type(value[0]).__name__ == "literal":
                quoted[key] = value[0]
        elif p2p_possible and typ.__name__ == "P2PBarrierTask":
            raise p2p_error(key)
    if quoted:
        from dask.task_spec import DataNode

        mapping = dict(mapping)  # Dask's (or the caller's) dict stays as it was
        for key, lit in quoted.items():
            mapping[key] = DataNode(key, lit())
    return mapping


def p2p_error(key: Any) -> RuntimeError:
    return RuntimeError(
        f"Task {key!r} is the barrier of a dask.distributed P2P shuffle, which only "
        f"dask.distributed's own scheduler can run (Dask picks 'p2p' when a "
        f"distributed.Client exists). Either compute on the Client "
        f"(x.compute(scheduler=client)), or shuffle with tasks on our schedulers: "
        f"dask.config.set({{'dataframe.shuffle.method': 'tasks'}})."
    )


def dask_setting(name: str) -> Any:
    """Dask's own ``num_workers``/``pool`` setting, or None (Dask not imported: None)."""
    dask_config = sys.modules.get("dask.config")
    return None if dask_config is None else dask_config.get(name, None)


def dask_get(dsk: Any, keys: Any, scheduler: Any = None, **kwargs: Any) -> Any:
    """Dask's get contract on our schedulers: ``dask_get(expr_or_graph, keys, ...)``.

    ``scheduler`` is one of ours (a name, an executor, a get function; None for the
    config).  ``callbacks=`` and active ``dask.callbacks.Callback`` objects are fed
    from our events (see ``callbacks.py``); other keywords go to
    :func:`notebook_sched.get` (``num_workers``, ``pool``, ``observers``, ...).
    """
    given = kwargs.pop("callbacks", None)
    kwargs = {name: value for name, value in kwargs.items() if name in OPTIONS}
    if isinstance(kwargs.get("cache"), dict):
        del kwargs["cache"]  # Dask's get functions' cache=: a dict of results, not ours
    for name in ("num_workers", "pool"):
        if kwargs.get(name) is None and config.get(name) is None:
            kwargs[name] = dask_setting(name)
    callbacks = active_callbacks(given)
    mapping = prepare(dsk)  # one materialisation, shared by the run and the hooks
    if not callbacks:
        return get(mapping, keys, scheduler=scheduler, **kwargs)
    from dask.callbacks import Callback

    from .callbacks import DaskCallbacks, check_backend, dask_view

    effective = config.get("scheduler") if scheduler is None else scheduler
    backend = resolve(effective)[0]
    check_backend(callbacks, backend, capabilities(backend).uses_worker_processes)
    observer = DaskCallbacks(callbacks, dask_view(mapping))
    observers = [*(kwargs.pop("observers", None) or ()), observer]
    if _takes_planners(effective):  # the observer's plan stage: start(), results
        kwargs["planners"] = [*(kwargs.get("planners") or ()), observer]
    if given is not None:
        return get(mapping, keys, scheduler=scheduler, observers=observers, **kwargs)
    # As dask.callbacks.local_callbacks: the outermost compute owns the global ones.
    saved, Callback.active = Callback.active, set()
    try:
        return get(mapping, keys, scheduler=scheduler, observers=observers, **kwargs)
    finally:
        Callback.active = saved


def _takes_planners(scheduler: Any) -> bool:
    """As ``api.get`` decides: our backends by name or executor, and get functions
    marked ``takes_observers`` (``Client.get``)."""
    return isinstance(scheduler, str | Executor) or getattr(scheduler, "takes_observers", False)
