"""The one task path: how every loop runs a task, wherever it runs.

Every loop that runs tasks (``sync``'s two, each ``threads`` thread, ``auto``'s threads
and inline tasks, a thread-pool executor's jobs, a process worker's batches and a
foreign executor's payloads, a cluster worker's executor threads, a dask.distributed
worker's ``run_task``) runs each task through this module, and keeps for itself only
*where* the task runs and *how* its result travels::

    loop --run / run_timed(task, spec, values)--> TaskRunner
             execute(spec, values)     run_spec here; run_job in a process worker
             BaseException  --------> Failed(exc)   (the loop reports or ships it)
             on_result hook(value)     the plan's per-task hook, where the task ran;
                                       a hook that raises only warns
             sampled? clocks, meter -> Measurement    (runner.record)

* **Failures** are values, not exceptions: :meth:`TaskRunner.run` returns a
  :class:`Failed` holding whatever the task raised, ``SystemExit``, ``KeyboardInterrupt``
  and a backend's own cancellation included, with its live traceback.  So anything a
  loop sees *raised* is not the task's (an observer's, a callback's, the loop's own):
  a loop never blames a task for it.
* **Sampling** (the ``task_measured`` hook): every task that took ``LONG_TASK``
  seconds or more is followed by a measured one; otherwise one task in
  ``SAMPLE_EVERY`` is.  The countdown lives here only (``TaskRunner.skip``); a loop
  whose measuring happens elsewhere (an executor's job) asks :meth:`TaskRunner.due`
  and tells :meth:`TaskRunner.note`.
* **Measuring** makes one :class:`~notebook_sched.measure.Measurement`: on a caller
  thread the thread's CPU clock and run-queue time (read only after a long task: the
  1-in-256 samples of short tasks have no starvation worth the 4 µs), in another
  process that process's :class:`~notebook_sched.measure.TaskMeter` (its GIL probe
  too).  The record's ``key`` is the task number and ``worker`` empty until the
  reporter names them.
* **Result hooks**: ``CompiledGraph.on_result`` is None (no cost) or maps a task
  number to ``hook(value)``, called right after the task succeeds, in the process
  where it ran, before its result goes anywhere.

**Cost.**  A loop that nobody listens to calls :func:`run_task` (the spec, in a
``try``): one call per task over running the spec itself.  :meth:`TaskRunner.run_timed`
reads two clocks per task only when someone wants times; a sample costs ~8 µs.

This module imports only the graph's spec format and ``measure`` (clocks, sizes),
so a spawned process worker and a dask.distributed worker import it cheaply.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

from .gil import run_queue_seconds
from .graph import ALIAS, CALL, EXPR, VALUE, evaluate
from .measure import LONG_TASK, Measurement, result_nbytes

__all__ = [
    "SAMPLE_EVERY",
    "LONG_TASK",
    "Failed",
    "TaskCancelled",
    "TaskRunner",
    "Measurement",
    "run_spec",
    "run_task",
    "skip_after",
    "call_hook",
]

SAMPLE_EVERY = 256  # one short task in this many is measured
NEVER = 1 << 62  # a countdown that never reaches a sample


def skip_after(wall: float, every: int = SAMPLE_EVERY, long_task: float = LONG_TASK) -> int:
    """Tasks to leave unmeasured after a measured task that took ``wall`` seconds."""
    return 0 if wall >= long_task else every


class TaskCancelled(BaseException):
    """Raised asynchronously inside a running task whose run, or result, nobody wants
    any more (``threads`` and ``auto`` on a failure or interrupt, a cluster worker
    whose task was released).  A runner returns it as :class:`Failed` like anything
    else; the loop that cancelled knows it is not the task's failure."""


class Failed:
    """What a task raised, as :func:`run_task` returns it (never a task's result)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __repr__(self) -> str:
        return f"<Failed {type(self.exc).__name__}>"


def run_spec(spec: tuple, values: Any) -> Any:
    """Run one compiled task in this process, reading inputs from ``values``."""
    __tracebackhide__ = True
    kind = spec[0]
    if kind == CALL:
        slots = spec[3]
        if slots:
            args = list(spec[2])
            for pos, dep in slots:
                args[pos] = values[dep]
            return spec[1](*args)
        return spec[1](*spec[2])
    if kind == VALUE:
        return spec[1]
    if kind == ALIAS:
        return values[spec[1]]
    refs = {k: values[d] for k, d in spec[2].items()}
    if kind == EXPR:
        return evaluate(spec[1], refs)
    return spec[1](refs)  # a Dask GraphNode


def run_task(spec: tuple, values: Any) -> Any:
    """Run one compiled task: its value, or :class:`Failed` with whatever it raised.

    A call (the common spec) runs here without going through :func:`run_spec`: one
    Python call less per task in ``sync``'s loop (both are task runners for
    ``tracebacks``: the frames below them are the task's)."""
    __tracebackhide__ = True
    try:
        if spec[0] == CALL:
            slots = spec[3]
            if not slots:
                return spec[1](*spec[2])
            args = list(spec[2])
            for pos, dep in slots:
                args[pos] = values[dep]
            return spec[1](*args)
        return run_spec(spec, values)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt...: all the task's
        return Failed(exc)


def invoke_hook(hook: Callable[..., Any], value: Any, seconds: float | None = None) -> None:
    """``hook(value, seconds)`` for a hook whose ``timed`` attribute is true, else
    ``hook(value)``: the one place that knows the two hook signatures."""
    if getattr(hook, "timed", False):
        hook(value, seconds)
    else:
        hook(value)


def call_hook(hook: Callable[..., Any], value: Any, key: Any, seconds: float | None = None) -> None:
    """Call a result hook; what it raises becomes a RuntimeWarning naming the task.

    A hook whose ``timed`` attribute is true gets the task's run time too,
    ``hook(value, seconds)`` (the result cache writes an entry only for a task slower
    than loading it); others get ``hook(value)``."""
    try:
        invoke_hook(hook, value, seconds)
    except Exception as exc:
        warnings.warn(
            f"the result hook {hook!r} of task {key!r} raised {type(exc).__name__}: {exc}; "
            f"the task's result is kept and the run goes on",
            RuntimeWarning,
            stacklevel=2,
        )


class TaskRunner:
    """Runs the tasks of one loop (one thread): see the module docstring.

    ``where``: the kind of place the tasks run (``measure.CALLER``, ``THREAD``,
    ``PROCESS``, ``CLUSTER``, ``DASK``), copied into each record.  ``execute``: how a
    task runs here (``run_spec(spec, values)``; a process worker's ``run_job(job,
    produced)``).  ``hooks``: ``{task: hook}`` (``CompiledGraph.on_result``) or None;
    ``keys``: task number -> key, to name a hook that raised.  ``measure``: sample
    tasks (``every=0``: measure every task); ``timed``: every task's start and stop
    are wanted (``task_started``/``task_finished`` listeners).  ``meter``: the
    process's :class:`~notebook_sched.measure.TaskMeter` when the task runs in a
    worker process (its GIL probe), else None (the caller's probe does the GIL).
    ``run_queue``: False to never read the thread's run-queue time (4 µs).

    After :meth:`run_timed`: ``start``/``stop`` (``time.time()``, when timed or
    sampled) and ``record`` (a :class:`Measurement` for a sampled success, else None).
    """

    __slots__ = (
        "where",
        "execute",
        "hooks",
        "keys",
        "every",
        "skip",
        "timed",
        "meter",
        "queued",
        "read_queue",
        "start",
        "stop",
        "record",
    )

    def __init__(
        self,
        where: str,
        *,
        execute: Callable[[Any, Any], Any] = run_spec,
        hooks: dict | None = None,
        keys: Any = None,
        measure: bool = False,
        every: int = SAMPLE_EVERY,
        timed: bool = False,
        meter: Any = None,
        run_queue: bool = True,
    ):
        self.where = where
        self.execute = execute
        self.hooks = hooks  # None, or a dict (perhaps one its owner fills as it goes)
        self.keys = keys
        self.every = every
        self.skip = 0 if measure else NEVER
        self.timed = timed
        self.meter = meter
        self.read_queue = run_queue  # False: never read run-queue time (nobody wants it)
        self.queued = run_queue  # read run-queue time: only after a long task
        self.start = self.stop = 0.0
        self.record: Measurement | None = None

    @property
    def measuring(self) -> bool:
        return self.skip < NEVER // 2

    def due(self) -> bool:
        """Is the next task a sample?  Counts it (for loops that measure elsewhere)."""
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def note(self, wall: float) -> None:
        """A sample that :meth:`due` chose took ``wall`` seconds: set the countdown."""
        self.skip = skip_after(wall, self.every)

    def run(self, task: int, spec: Any, values: Any) -> Any:
        """Run ``task`` untimed: its value or :class:`Failed`; its hook on success."""
        __tracebackhide__ = True
        hooks = self.hooks
        if hooks is not None and task in hooks:
            return self._run_hooked(task, spec, values)
        try:
            return self.execute(spec, values)
        except BaseException as exc:  # everything the task raised is its own
            return Failed(exc)

    def _run_hooked(self, task: int, spec: Any, values: Any) -> Any:
        """:meth:`run` for a task with a result hook: timed (two clock reads), since a
        hook may want the run time (``call_hook``)."""
        __tracebackhide__ = True
        start = time.perf_counter()
        try:
            value = self.execute(spec, values)
        except BaseException as exc:
            return Failed(exc)
        seconds = time.perf_counter() - start
        call_hook(self.hooks[task], value, self._key(task), seconds)
        return value

    def run_timed(self, task: int, spec: Any, values: Any) -> Any:
        """:meth:`run`, timed when ``timed`` and measured when the sample is due."""
        __tracebackhide__ = True
        self.record = None
        if self.skip > 0:
            self.skip -= 1
            if not self.timed:
                return self.run(task, spec, values)
            self.start = time.time()
            value = self.run(task, spec, values)
            self.stop = time.time()
            return value
        return self._measured(task, spec, values)

    def _measured(self, task: int, spec: Any, values: Any) -> Any:
        __tracebackhide__ = True
        meter = self.meter
        if meter is not None:
            began = meter.begin()
            start = began[1]
        else:
            queued = self.queued
            cpu0 = time.thread_time()
            queue0 = run_queue_seconds() if queued else 0.0
            start = time.time()
        try:
            value = self.execute(spec, values)
        except BaseException as exc:
            self.stop = time.time()
            self.start = start
            return Failed(exc)
        stop = time.time()
        self.start, self.stop = start, stop
        if meter is not None:
            self.record = meter.end(began, value, stop, task, self.where)
        else:
            cpu = time.thread_time() - cpu0
            starved = run_queue_seconds() - queue0 if queued else None
            nbytes = result_nbytes(value)
            self.record = Measurement(task, "", self.where, start, stop, cpu, starved, nbytes, None)
        self.skip = skip = skip_after(stop - start, self.every)
        self.queued = self.read_queue and not skip
        hooks = self.hooks
        if hooks is not None:
            hook = hooks.get(task)
            if hook is not None:
                call_hook(hook, value, self._key(task), stop - start)
        return value

    def _key(self, task: int) -> Any:
        keys = self.keys
        if keys is None:
            return task
        try:
            return keys[task]
        except (KeyError, IndexError, TypeError):
            return task
