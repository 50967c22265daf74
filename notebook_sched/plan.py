"""The graph seam: planners, which see a run before it compiles and its results as
they finish.

A *planner* is an object that takes part in one run.  ``engine.execute_graph`` (and
``Client.compute`` and the ``dask`` backend, which go through the same stage) call,
for each planner given with ``planners=``::

    plan(graph, keys) -> {key: value} | None     before compiling
    prepare(graph) -> {task index: hook} | None  after compiling, before any task runs
    finished(graph, error)                       once, when the run ends

``plan`` gets the normalised graph (a dict ``key -> task``: read it, never change it)
and the requested keys, flattened.  It may return results it already knows (a cache's
hits); those keys become literal values, and compiling culls what they make
unneeded: a hit on a task means none of its upstream tasks run, unless something
else that is not known needs them.  Keys that are not in the graph are ignored.
With several planners each sees the same graph; the first to know a key wins.

``prepare`` gets the :class:`~notebook_sched.graph.CompiledGraph` and may return
result hooks, ``{task index: hook}``: the task runner calls ``hook(value)`` (or
``hook(value, seconds)``, the task's run time, for a hook whose ``timed`` is true) in the
process where the task ran (a worker process, a cluster worker), right after it
succeeded; a hook that raises only warns.  Hooks must be picklable (they travel
with their tasks); two planners' hooks on one task are both called, in order.  A
task whose result was substituted does not run, so its hook is never called; nor
are hooks on literals and aliases (they are not tasks), which the engine drops.
The hooks land in ``graph.on_result``.

A hook whose ``home`` attribute is true also wants the result *in the caller* (the
result cache's memory tier lives there).  Backends that run tasks in other
processes (``processes``, ``auto``, a process executor, the local cluster, also for
``Client.compute``) send the result of such a task back even when nothing else needs
it there, and call :func:`call_home` with it when it arrives: so the hook is called in
the worker (with the run time) and again in the caller (without it).  In-process
backends call it once, in the caller.  The hooks land in ``graph.home`` too.

``finished`` is called once per planner whatever happens (success, a failed task, an
interrupt, a graph that does not compile: then ``graph`` is None), with ``error``
None on success; an exception it raises is a warning (the run's answer or its own
error stands).  An exception in ``plan`` or ``prepare`` ends the run before any
task starts: a planner turns its own expected failures (something it cannot read)
into "not known".

**What observers see.**  A substituted task is a literal of this run: no task event
fires for it and ``RunInfo.task_keys`` leaves it out (so counts of work are right),
and ``RunInfo.extra["substituted"]`` lists the substituted keys the run needed, in
graph order, so a progress view can show them as done at once, in a count of their
own.  Substituted keys the run did not need (culled by another substitution) are not
listed.

**Where planners come from.**  ``api.get`` asks the *plan hooks* (``add_plan_hook``,
like run hooks: ``hook(request) -> Planner | None``, with the :class:`RunRequest`
of the run) and passes the planners they return to the backend.  The result cache
registers its hook lazily: the package root adds a small hook that imports the cache
only for a request whose ``cache`` option is not False.  A backend that is a foreign
get function cannot take planners; ``api.get`` warns and runs without them.

With no planner the engine does nothing of this (one ``if`` per run).
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from .graph import ALIAS, VALUE, CompiledGraph
from .task_runner import invoke_hook

__all__ = [
    "Planner",
    "RunRequest",
    "Plan",
    "add_plan_hook",
    "remove_plan_hook",
    "planners_for",
    "call_home",
]


class Planner:
    """Base class of planners: override the steps you need (each is a no-op here)."""

    def plan(self, graph: Mapping, keys: list) -> Mapping | None:
        """Results known before the run, ``{key: value}``, or None."""
        return None

    def prepare(self, graph: CompiledGraph) -> Mapping[int, Callable[[Any], Any]] | None:
        """Result hooks ``{task index: hook(value)}`` for this run, or None."""
        return None

    def finished(self, graph: CompiledGraph | None, error: BaseException | None) -> None:
        """The run ended (``error`` None on success; ``graph`` None if it did not compile)."""


@dataclass(frozen=True)
class RunRequest:
    """One run, as its run hooks and plan hooks see it: the backend's name and the
    options (``num_workers``, ``pool``, ``observers``, ``progress``, ``rerun``,
    ``worker_timeout``, ``cache``) after defaults from the config; read-only."""

    backend: str
    options: Mapping[str, Any]


# The registered plan hooks: a tuple, replaced whole under _hooks_lock.
_hooks_lock = threading.Lock()
_plan_hooks: tuple[Callable[[RunRequest], Planner | None], ...] = ()


def add_plan_hook(hook: Callable[[RunRequest], Planner | None]) -> Callable[[], None]:
    """Ask ``hook(request)`` for a planner before every run (once, however often
    added); returns a function that removes it."""
    global _plan_hooks
    with _hooks_lock:
        if hook not in _plan_hooks:
            _plan_hooks = (*_plan_hooks, hook)
    return functools.partial(remove_plan_hook, hook)


def remove_plan_hook(hook: Callable[[RunRequest], Planner | None]) -> None:
    """Stop asking ``hook`` (no error if it was not registered)."""
    global _plan_hooks
    with _hooks_lock:
        _plan_hooks = tuple(h for h in _plan_hooks if h != hook)


def planners_for(request: RunRequest) -> list[Planner]:
    """The planners the plan hooks give for ``request``, in registration order."""
    found = (hook(request) for hook in _plan_hooks)
    return [check_planner(p) for p in found if p is not None]


def check_planner(planner: Any) -> Planner:
    if not isinstance(planner, Planner):
        raise TypeError(
            f"planners take notebook_sched.plan.Planner instances; got "
            f"{type(planner).__name__}. Subclass Planner and override plan/prepare/finished."
        )
    return planner


class Plan:
    """The planners of one run, driven through their three steps (see the module
    docstring).  ``known`` is the merged substitutions after :meth:`ask`."""

    __slots__ = ("planners", "known")

    def __init__(self, planners):
        self.planners = [check_planner(p) for p in planners]
        self.known: dict = {}

    def ask(self, graph: Mapping, keys: list) -> dict:
        """Every planner's known results (the first planner's value wins)."""
        known = self.known
        for planner in self.planners:
            found = planner.plan(graph, keys)
            if found:
                for key, value in found.items():
                    known.setdefault(key, value)
        return known

    def prepare(self, graph: CompiledGraph) -> None:
        """Collect the planners' result hooks into ``graph.on_result`` (tasks only)."""
        hooks: dict = dict(graph.on_result or {})
        home: dict = dict(graph.home or {})
        specs = graph.specs
        for planner in self.planners:
            for i, hook in (planner.prepare(graph) or {}).items():
                if not 0 <= i < len(specs) or specs[i][0] in (VALUE, ALIAS):
                    continue  # not a task of this run: nothing runs it
                hooks[i] = hook if i not in hooks else Both((hooks[i], hook))
                if getattr(hook, "home", False):
                    home[i] = hook if i not in home else Both((home[i], hook))
        graph.on_result = hooks or None
        graph.home = home or None

    def substituted(self, graph: CompiledGraph) -> list[Hashable]:
        """The known keys this run needed, in graph order."""
        known = self.known
        if not known:
            return []
        return [key for key in graph.keys if _is_known(key, known)]

    def finished(self, graph: CompiledGraph | None, error: BaseException | None) -> None:
        """Tell every planner the run ended; a planner that raises only warns."""
        for planner in self.planners:
            try:
                planner.finished(graph, error)
            except Exception as exc:
                warnings.warn(
                    f"planner {planner!r} raised {exc!r} in finished(); the run's outcome stands",
                    RuntimeWarning,
                    stacklevel=2,
                )


def call_home(graph: CompiledGraph, i: int, value: Any) -> None:
    """Call task ``i``'s home hook with its result, arrived in the caller from another
    process (see the module docstring); a hook that raises only warns."""
    hook = graph.home.get(i) if graph.home else None
    if hook is None:
        return
    try:
        hook(value)
    except Exception as exc:
        warnings.warn(
            f"the result hook {hook!r} of task {graph.keys[i]!r} raised {exc!r} in the "
            f"caller; the task's result stands",
            RuntimeWarning,
            stacklevel=2,
        )


def _is_known(key: Hashable, known: dict) -> bool:
    try:
        return key in known
    except TypeError:
        return False


class Both:
    """Two or more result hooks on one task, called in order (picklable)."""

    __slots__ = ("hooks",)
    timed = True  # passes the task's run time on to the hooks that want it

    def __init__(self, hooks: tuple):
        flat: list = []
        for hook in hooks:
            flat.extend(hook.hooks if isinstance(hook, Both) else (hook,))
        self.hooks = tuple(flat)

    def __call__(self, value: Any, seconds: float | None = None) -> None:
        error = None
        for hook in self.hooks:  # each hook runs, whatever another one raised
            try:
                invoke_hook(hook, value, seconds)
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def __reduce__(self):
        return (Both, (self.hooks,))

    def __repr__(self) -> str:
        return f"Both({', '.join(map(repr, self.hooks))})"
