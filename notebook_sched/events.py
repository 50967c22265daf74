"""The event protocol every backend emits: a class of optional no-op hooks.

Progress bars, the profiler and the debugger are *observers*: subclasses of
:class:`Observer` that override the hooks they care about.  Every backend calls the
same hooks in the same order for each run::

    graph_started(run)                       once, before any task
    worker_started(worker)                   once per worker thread, on that thread
    task_started(key, worker)                per task, before task_finished/task_failed
    task_finished(key, worker, start, stop)  per successful task; times from time.time()
    task_done(key)                           per successful task, the cheapest hook
    task_measured(record)                    a sample of successful tasks, measured:
                                             one measure.Measurement
    task_failed(key, worker, error)          per failed task
    graph_finished(run, error)               once; error is None on success

``worker`` is a short name such as ``"sync"``, ``"thread-1"``, ``"process-0"`` or
``"caller"`` (literals and aliases, and tasks a backend runs inline in the calling
thread).  Under ``threads`` the task hooks run on worker threads, so an observer that
keeps state must guard it (a lock or atomic appends).  Under ``processes`` they run in
the calling process; ``task_started`` fires when the worker receives the task.  On a
thread-pool executor (``scheduler=ThreadPoolExecutor(...)``) ``task_started`` runs on
the pool thread as the task starts; on a process executor, whose workers cannot call
back, it fires in the caller when the task's result arrives, just before
``task_finished`` (``task_failed``); under ``distributed`` and ``dask`` it fires when the
cluster says the task started or, at the latest, just before ``task_finished``.

Backends emit through the engine's one reporter (``reporter.py``), which also builds
the :class:`~notebook_sched.failure.TaskFailure` of a failed task, so every backend
keeps the same order and names.

``task_done`` exists for counters such as progress bars: no clock is read for it, and
an observer may set it to a C-level callable (``self.task_done = keys.append``), which
the backends then call directly, so counting costs a few tens of nanoseconds per task.
``worker_started`` fires once per run on each worker thread (of ``threads``, ``auto``
and thread-pool executors) so an observer can set thread-local state once, e.g.
route output to the cell that started the run.

Literal values and aliases in a graph are not tasks: no task hook fires for them and
``RunInfo.task_keys`` leaves them out (an observer whose ``reports_aliases`` is True,
the adapter of Dask's callbacks, still hears of aliases, since Dask runs and reports
them as tasks; ``RunInfo.extra["aliases"]`` lists them).  Results a planner knew
before the run (a cache's hits, see ``plan.py``) are literals of that run: no task
hook fires for them, and ``RunInfo.extra["substituted"]`` lists their keys, so a
progress view can count them as done at once.

Register an observer globally with :func:`register` / :func:`unregister`, for a
block with ``with observer:``, or for one call with ``get(..., observers=[obs])``.
Emitting is cheap when nobody listens: backends ask :func:`dispatcher` once per run
and skip every hook that no observer overrides.  A hook that raises is reported with
a warning and switched off for the rest of the run, so a broken view cannot lose a
computation; an observer whose ``propagates_errors`` is True (the adapter of Dask's
callbacks, whose contract is that an error in a callback aborts the compute) has its
exceptions raised instead.
"""

from __future__ import annotations

import threading
import types
import warnings
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .measure import Measurement

__all__ = ["Observer", "RunInfo", "register", "unregister", "observers", "dispatcher"]


@dataclass
class RunInfo:
    """What a graph run is about: handed to ``graph_started`` and ``graph_finished``."""

    scheduler: str
    keys: list  # the requested keys, flattened
    task_keys: list  # every task key that will run
    workers: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def tasks(self) -> int:
        return len(self.task_keys)

    def __repr__(self) -> str:
        return f"<RunInfo scheduler={self.scheduler!r} tasks={self.tasks} workers={self.workers}>"


class Observer:
    """Base class of event listeners.  Override only the hooks you need."""

    propagates_errors = False  # True: an exception in a hook aborts the run
    reports_aliases = False  # True: task events of aliases too (Dask's callbacks)

    def graph_started(self, run: RunInfo) -> None:
        """A graph is about to run."""

    def task_started(self, key: Hashable, worker: str) -> None:
        """A task started on ``worker``."""

    def task_finished(self, key: Hashable, worker: str, start: float, stop: float) -> None:
        """A task succeeded; ``start``/``stop`` are ``time.time()`` seconds."""

    def task_done(self, key: Hashable) -> None:
        """A task succeeded (no times: the cheapest hook, for counters)."""

    def task_measured(self, record: Measurement) -> None:
        """A *sample* of successful tasks, measured where they ran, as one
        :class:`~notebook_sched.measure.Measurement`: ``key``, ``worker``, ``where`` (the
        kind of place: caller, thread, process, cluster, dask), wall times, the CPU
        seconds of the thread that ran it, its seconds runnable without a CPU, the
        bytes of its result where cheap to know (``measure.result_nbytes``), and, for
        tasks that ran in another process (``record.remote``), the busy-GIL share a
        probe in that process saw (``measure.TaskMeter``); None where not known.  The
        task runner (``task_runner.py``) measures every task that follows one over
        ``measure.LONG_TASK`` and one in ``task_runner.SAMPLE_EVERY`` of the others, so
        listening costs ~1% on graphs of no-op tasks."""

    def worker_started(self, worker: str) -> None:
        """A worker thread started; called on that thread."""

    def task_failed(self, key: Hashable, worker: str, error: BaseException) -> None:
        """A task raised ``error``."""

    def graph_finished(self, run: RunInfo, error: BaseException | None) -> None:
        """The graph run ended, with ``error`` if it failed or was interrupted."""

    def __enter__(self):
        register(self)
        return self

    def __exit__(self, *exc_info) -> None:
        unregister(self)


# Guards _registered; readers take a snapshot tuple, so emitting never takes the lock.
_lock = threading.Lock()
_registered: tuple[Observer, ...] = ()


def register(observer: Observer) -> None:
    """Listen to every run from now on (until :func:`unregister`)."""
    global _registered
    if not isinstance(observer, Observer):
        raise TypeError(
            f"observers must subclass notebook_sched.events.Observer; got "
            f"{type(observer).__name__}. Subclass Observer and override the hooks you need."
        )
    with _lock:
        if observer not in _registered:
            _registered = _registered + (observer,)


def unregister(observer: Observer) -> None:
    global _registered
    with _lock:
        _registered = tuple(o for o in _registered if o is not observer)


def observers() -> tuple[Observer, ...]:
    """The globally registered observers."""
    return _registered


_HOOKS = (
    "graph_started",
    "worker_started",
    "task_started",
    "task_finished",
    "task_done",
    "task_measured",
    "task_failed",
    "graph_finished",
)
_C_CALLABLES = (types.BuiltinMethodType, types.BuiltinFunctionType)


class Dispatcher:
    """Calls one hook on every observer that overrides it.  Built once per run.

    ``task_started`` etc. are attributes holding a callable, or None when nobody
    listens, so a backend writes ``if ev.task_finished: ev.task_finished(...)``.
    """

    def __init__(self, listeners: Iterable[Observer], skip: tuple[set, set] | None = None):
        self.listeners = tuple(listeners)
        for hook in _HOOKS:
            bound = [getattr(o, hook) for o in self.listeners if _overrides(o, hook)]
            if skip and hook in _PER_TASK:
                bound = [
                    _Skipping(method, skip[getattr(method.__self__, "reports_aliases", False)])
                    for method in bound
                ]
            if len(bound) == 1 and isinstance(bound[0], _C_CALLABLES):
                setattr(self, hook, bound[0])  # e.g. list.append: cannot fail, call directly
            else:
                setattr(self, hook, self._fan_out(hook, bound) if bound else None)

    def __bool__(self) -> bool:
        return any(getattr(self, hook) is not None for hook in _HOOKS)

    @property
    def per_task(self) -> bool:
        """True when some observer wants a call as each task starts or ends with times.

        ``task_failed`` and ``task_done`` do not count: backends call them without
        reading clocks, so observers that only count or wait for failures stay cheap.
        """
        return bool(self.task_started or self.task_finished)

    def skipping(self, literals: set, aliases: set) -> Dispatcher:
        """A dispatcher whose per-task hooks say nothing of literals and aliases (they
        are not tasks); an observer with ``reports_aliases`` still hears of aliases
        (Dask's callbacks: Dask runs an alias as a task).  Only runs that have such
        keys pay for the check."""
        return Dispatcher(self.listeners, (literals | aliases, literals))

    def _fan_out(self, hook: str, bound: list):
        broken: set = set()

        def call(*args: Any) -> None:
            for method in bound:
                if id(method) in broken:
                    continue
                try:
                    method(*args)
                except Exception as exc:  # a view must not lose the computation
                    owner = getattr(method, "__self__", method)
                    if getattr(owner, "propagates_errors", False):
                        raise  # e.g. Dask's callbacks: Dask's contract is to raise
                    broken.add(id(method))
                    warnings.warn(
                        f"observer {owner!r} raised {exc!r} in {hook}; "
                        f"it is switched off for the rest of this run",
                        RuntimeWarning,
                        stacklevel=2,
                    )

        return call


_PER_TASK = frozenset(
    {"task_started", "task_finished", "task_done", "task_measured", "task_failed"}
)


class _Skipping:
    """An observer's per-task hook that ignores some keys (literals, aliases)."""

    __slots__ = ("call", "keys", "__self__")

    def __init__(self, call, keys: set):
        self.call = call
        self.keys = keys
        self.__self__ = getattr(call, "__self__", call)  # the observer, for warnings

    def __call__(self, key, *args) -> None:
        if key not in self.keys:
            self.call(key, *args)


def _overrides(observer: Observer, hook: str) -> bool:
    """Does ``observer`` implement ``hook`` (in its class or as an instance attribute)?"""
    if hook in getattr(observer, "__dict__", ()):
        return True
    return getattr(type(observer), hook, None) is not getattr(Observer, hook)


def dispatcher(extra: Iterable[Observer] | None = None) -> Dispatcher:
    """The dispatcher for one run: global observers plus ``extra`` (per call)."""
    listeners = list(_registered)
    if extra:
        for obs in extra:
            if not isinstance(obs, Observer):
                raise TypeError(
                    f"observers= takes Observer instances; got {type(obs).__name__}. "
                    f"Subclass notebook_sched.events.Observer."
                )
            if obs not in listeners:
                listeners.append(obs)
    return Dispatcher(listeners)
