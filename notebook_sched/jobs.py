"""Background jobs: ``submit`` a compute, keep working, collect the result later.

::

    job = ns.submit(total)              # returns at once; the graph compiles in the job
    job.done(), job.result(timeout=10)  # a concurrent.futures.Future
    await job                           # in a cell (IPython's top-level await)
    job.cancel()                        # stops it within ~0.5 s, nothing left running
    ns.jobs()                           # this session's jobs, with an HTML table
    ns.cancel_all()

A :class:`Job` is a ``concurrent.futures.Future`` (CPython's state machine: pending,
running, cancelled, finished; ``wait``, ``as_completed`` and ``add_done_callback``
work) around one ordinary ``get`` run on a thread of ours, and awaitable through
``asyncio.wrap_future``.  Nothing here schedules tasks: the job thread calls the
backend's public ``get`` like any cell would.

* **Settings are captured at submit**: the resolved config (``config.snapshot()``,
  so a ``with config.set(...)`` scope in force counts, whether scopes are global or
  per context) and the call's keywords become explicit options of the job's ``get``;
  a mapping graph is copied (shallow), so later edits of the user's dict do not reach
  the job.  ``submit`` does nothing else: a 10,000-task graph returns in microseconds
  and is compiled in the job thread.
* **The job thread runs in a copy of the submitting context**: ipykernel keeps the
  cell's parent header in a context variable, so what the job's tasks print (on its
  own thread under ``sync``, on the threads backend's workers, which copy the caller's
  context) goes to the submitting cell, not to whatever cell runs now.  The copy also
  sets ``_pool.BACKGROUND``: the job's share of the process pool yields to a
  foreground compute, and jobs share what is left fairly (``schedulers/_pool.py``).
* **Cancelling reuses the interrupt path.**  :class:`JobCancelled` is a
  ``KeyboardInterrupt``; every backend already stops cleanly on one (drops unstarted
  tasks, replaces busy process workers, stops threads: tests/test_interrupts.py).
  ``cancel()`` makes the job's observer raise it at the next task event (a task
  boundary on any thread), raises it asynchronously in the job thread (a pure-Python
  task under ``sync``, a runner waiting on worker pipes), and, if the run has not
  stopped after ``KILL_AFTER`` seconds, kills the job's busy process workers so the
  runner wakes (they would be replaced by the interrupt path anyway).
* **Failures** keep the backend's record (``job.failure()``); the job's run does not
  rerun a remote failure itself (``rerun="never"``): ``job.debug()`` does it on the
  caller's thread, so ``%debug`` lands in the task's frame.
* **The stop button** interrupts the main thread only, so jobs go on; kernel shutdown
  and interpreter exit cancel every job (``atexit``, before the pool's own hook).

The progress view (``diagnostics/job_view.py``) is created on the submitting thread
(the cell, in a notebook) and updated by one ticker thread that only sets traits.
"""

from __future__ import annotations

import atexit
import contextvars
import ctypes
import itertools
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import _base as _futures
from typing import Any

from . import config
from . import failure as _failure
from .events import Observer
from .schedulers import _pool  # first: its atexit hook must run after ours (LIFO)

__all__ = ["Job", "JobCancelled", "submit", "jobs", "cancel_all", "JobList"]

PENDING, RUNNING, FINISHED, FAILED, CANCELLED = (
    "pending",
    "running",
    "finished",
    "failed",
    "cancelled",
)
CANCEL_WAIT = 0.5  # seconds cancel() waits for the run to stop
KILL_AFTER = 0.1  # then busy process workers of the job are killed to wake its runner

_ids = itertools.count(1)
_registry_lock = threading.Lock()  # guards _registry
_registry: list[Job] = []


class JobCancelled(KeyboardInterrupt):
    """Stops a job's run; backends treat it as the interrupt it subclasses."""


class _Tracker(Observer):
    """Counts the job's tasks and raises :class:`JobCancelled` at the next task
    event once the job is being cancelled (a task boundary on whatever thread)."""

    def __init__(self, job: Job):
        self.job = job
        self.total = 0
        self.finished: list = []  # list.append is atomic: counted from any thread
        self.failed_key: Any = None

    def graph_started(self, run: Any) -> None:
        self.total += len(run.task_keys)

    def task_done(self, key: Any) -> None:
        self.finished.append(None)
        if self.job._stopping:
            raise JobCancelled(f"job {self.job.name!r} was cancelled")

    def task_failed(self, key: Any, worker: str, error: BaseException) -> None:
        if self.failed_key is None:
            self.failed_key = key

    @property
    def done(self) -> int:
        return len(self.finished)


class Job(Future):
    """A compute running in the background (see the module docstring)."""

    def __init__(self, work: tuple, options: dict, name: str | None):
        super().__init__()
        self.id = next(_ids)
        self.name = name or f"job-{self.id}"
        self.options = options  # the settings captured at submit
        scheduler = options.get("scheduler")
        self.backend = scheduler if isinstance(scheduler, str) else type(scheduler).__name__
        self.submitted = time.time()
        self.started: float | None = None
        self.stopped: float | None = None
        self.tracker = _Tracker(self)
        self.view: Any = None  # set by submit when progress is shown
        self._work = work
        self._stopping = False
        self._thread: threading.Thread | None = None  # the runner, once it took the job
        self._ran = threading.Event()  # set when the run has stopped (or never started)
        self._run_lock = threading.Lock()  # guards _in_run (async exceptions)
        self._in_run = False

    # -- state ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        with self._condition:
            state = self._state
            if state in (_futures.CANCELLED, _futures.CANCELLED_AND_NOTIFIED):
                return CANCELLED
            if state == _futures.FINISHED:
                return FAILED if self._exception is not None else FINISHED
            return RUNNING if state == _futures.RUNNING else PENDING

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.stopped or time.time()) - self.started

    @property
    def progress(self) -> tuple[int, int]:
        """``(tasks done, tasks in all)``; the total is 0 until the graph is compiled."""
        return self.tracker.done, self.tracker.total

    def failure(self) -> Any:
        """The failed task's record (``TaskFailure``, as ``last_failure()``), or None."""
        if self.state != FAILED:
            return None
        return getattr(self._exception, "__notebook_sched_failure__", None)

    def debug(self) -> None:
        """Rerun the failed task here, with its recorded inputs, so the error rises in
        the task's frame (``%debug`` lands there); without recorded inputs the job's
        graph reruns on ``sync``.  Prints a note when the rerun does not fail."""
        __tracebackhide__ = True
        from .debug.rerun import RerunUnavailable, rerun_graph, rerun_task

        failure = self.failure()
        if failure is None:
            raise RuntimeError(
                f"job {self.name!r} has no failed task to rerun (it is {self.state}); "
                f"job.exception() shows an error that did not come from a task."
            )
        try:
            again = rerun_task(failure)
        except RerunUnavailable:
            rerun_graph(failure)  # an error rises from the task's frame
            again = None
        if again is None:
            print(
                f"notebook_sched: task {failure.key!r} of job {self.name!r} ran without error "
                f"here; its failure ({type(failure.exception).__name__} on {failure.backend!r}) "
                f"depends on where it ran. job.failure() still describes it."
            )
            return
        raise again

    # -- control ----------------------------------------------------------------------
    def cancel(self) -> bool:
        """Stop the job: True unless it had already finished (see the module docstring)."""
        with self._condition:
            if self._state == _futures.FINISHED:
                return False
        if super().cancel():  # not started yet: it never will
            self._closed()
            return True
        self._stopping = True
        self._interrupt_runner()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            if not self._ran.wait(KILL_AFTER):
                _kill_busy_workers(thread.ident)
                self._ran.wait(max(0.0, CANCEL_WAIT - KILL_AFTER))
        # A threads task inside a long C call stops at its end (as on an interrupt);
        # the job is cancelled for the caller now either way.
        self._set_cancelled()
        return True

    def _interrupt_runner(self) -> None:
        """Under ``sync`` the running task is the job thread's own code: interrupt it
        there, as a kernel interrupt would (other backends' runners only wait, and are
        stopped by the tracker at the next task event or by the worker kill)."""
        with self._run_lock:
            thread = self._thread
            if (
                self._in_run
                and self.backend == "sync"
                and thread is not None
                and thread is not threading.current_thread()
            ):
                _async_raise(thread.ident, JobCancelled)

    def __await__(self):
        import asyncio

        return asyncio.wrap_future(self).__await__()

    # -- the job thread ---------------------------------------------------------------
    def _start(self, context: contextvars.Context) -> None:
        _runners.run(self, context)

    def _run(self) -> None:
        self._thread = threading.current_thread()
        if not self.set_running_or_notify_cancel():
            self._ran.set()
            return
        _pool.BACKGROUND.set(True)
        _RUNNING.set(self)
        self.started = time.time()
        previous = _failure.last_failure()
        try:
            try:
                with self._run_lock:
                    self._in_run = True
                value = self._execute()
            finally:
                with self._run_lock:
                    self._in_run = False
                    _async_raise(threading.get_ident(), None)  # drop one not yet raised
        except BaseException as exc:
            self.stopped = time.time()
            if self._stopping:
                _forget_failure(previous, exc)
                self._set_cancelled()
            else:
                self.set_exception(exc)
        else:
            self.stopped = time.time()
            if self._stopping:
                self._set_cancelled()
            else:
                self.set_result(value)
        finally:
            self._work = None  # the graph and inputs; the result stays until dropped
            self._ran.set()
            self._closed()

    def _execute(self) -> Any:
        __tracebackhide__ = True
        kind, target, keys, extra = self._work
        options = {**self.options, **extra}
        options["observers"] = [*(options.get("observers") or ()), self.tracker]
        if kind == "graph":
            from .api import get

            return get(target, keys, **options)
        if kind == "call":  # a %%schedule --background cell: its computes read the config
            with config.set(**keys):
                return target()
        from .delayed import compute

        results = compute(*target, **options)
        return results[0] if len(target) == 1 else results

    def _set_cancelled(self) -> None:
        # A running Future cannot be cancelled through the public API: set the state
        # the way Future.cancel and set_running_or_notify_cancel do together.
        with self._condition:
            if self._state in (_futures.FINISHED, _futures.CANCELLED_AND_NOTIFIED):
                return
            self.stopped = self.stopped or time.time()
            self._state = _futures.CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()

    def _closed(self) -> None:
        view = self.view
        if view is not None:
            view.job_ended(self)

    # -- display ----------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<Job {self.name!r} {self.backend} {self.describe()}>"

    def describe(self) -> str:
        """State, time and, when finished, the result's type: ``finished in 1.2s: int``."""
        state = self.state
        done, total = self.progress
        if state == FINISHED:
            return f"finished in {self.elapsed:.1f}s: {type(self.result(0)).__name__}"
        if state == FAILED:
            exc = self._exception
            return f"failed after {self.elapsed:.1f}s: {type(exc).__name__}: {exc}"
        if state == CANCELLED:
            return f"cancelled after {self.elapsed:.1f}s ({done}/{total} tasks)"
        if state == RUNNING:
            return f"running {done}/{total} tasks, {self.elapsed:.1f}s"
        return "pending"

    def _repr_html_(self) -> str | None:
        # While it runs the cell's bar is the live view; a table row would go stale.
        return JobList([self])._repr_html_() if self.done() else None


class _Runners:
    """The job threads: ``submit`` hands a job to an idle runner through a queue, so it
    never waits for a thread to start (``Thread.start`` waits until the new thread runs,
    tens of ms on a loaded machine).  A runner that takes a job starts a spare if none
    is idle, and a runner idle for ``IDLE_EXIT`` seconds exits (nothing lingers)."""

    IDLE_EXIT = 1.0

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()  # guards idle, count
        self.idle = 0  # runners waiting on the queue
        self.count = 0

    def run(self, job: Job, context: contextvars.Context) -> None:
        with self.lock:  # put under the lock: an idle runner leaves only on an empty queue
            self.queue.put((job, context))
            start = self.idle == 0
            if start:
                self.idle += 1  # the new runner counts as idle until it takes a job
        if start:
            self._spawn()

    def _spawn(self) -> None:
        with self.lock:
            self.count += 1
            number = self.count
        thread = threading.Thread(
            target=self._loop, name=f"notebook_sched-jobs-{number}", daemon=True
        )
        thread.start()

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                job, context = self.queue.get(timeout=self.IDLE_EXIT)
            except queue.Empty:
                with self.lock:
                    if self.queue.empty():
                        self.idle -= 1
                        return
                continue
            with self.lock:
                self.idle -= 1
                spare = self.idle == 0
                if spare:
                    self.idle += 1
            if spare:
                self._spawn()  # so the next submit finds a runner waiting
            me.name = f"notebook_sched-{job.name}"
            context.run(job._run)
            me.name = "notebook_sched-jobs-idle"
            with self.lock:
                self.idle += 1


_runners = _Runners()


def _async_raise(ident: int | None, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``ident`` at its next bytecode (None: clear)."""
    if ident is None:
        return
    obj = ctypes.py_object(exc_type) if exc_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), obj)


def _forget_failure(previous: Any, exc: BaseException) -> None:
    """A worker killed to cancel a job is not a failure to debug: put back the last
    failure as it was before the job (unless another run failed meanwhile)."""
    record = getattr(exc, "__notebook_sched_failure__", None)
    with _failure._lock:
        if record is not None and _failure._last is record:
            _failure._last = previous


def _kill_busy_workers(ident: int | None) -> None:
    """Kill the process workers busy with runs of thread ``ident`` (wakes its runner;
    the interrupt path then replaces them)."""
    import sys

    pool_module = sys.modules.get("notebook_sched.schedulers._pool")
    pool = pool_module.current_pool() if pool_module is not None else None
    if pool is None:
        return
    with pool.cond:
        busy = [
            pool.workers[slot]
            for lease in pool.leases
            if lease.thread == ident
            for slot in lease.held
            if pool.workers[slot].outstanding
        ]
    for worker in busy:
        if worker.process.is_alive():
            worker.process.kill()


# -- the public functions ----------------------------------------------------------------
_OPTIONS = ("scheduler", "num_workers", "pool", "rerun", "worker_timeout", "cache")


def submit(*args: Any, name: str | None = None, progress: Any = None, **options: Any) -> Job:
    """Start computing in the background; returns a :class:`Job` at once.

    ``submit(x, y, ...)`` computes Delayed objects or Dask collections as
    ``compute`` does (one object gives its result, several a tuple);
    ``submit(dsk, keys)`` computes keys of a graph as ``get`` does.  Keywords are
    ``compute``'s (``scheduler=``, ``num_workers=``...); what they leave out comes
    from the config *now*.  ``progress``: None shows a bar in a notebook, True
    forces one (a text line outside), False none.  ``name`` labels the job.
    """
    if not args:
        raise TypeError(
            "submit() needs something to compute: submit(delayed_obj), submit(a, b) or "
            "submit(dsk, keys) for a graph."
        )
    if isinstance(args[0], Mapping) and not hasattr(args[0], "__dask_graph__"):
        if len(args) != 2:
            raise TypeError(
                f"submit(dsk, keys) computes keys of a graph: got {len(args)} positional "
                f"arguments. Use e.g. submit(dsk, 'z') or submit(dsk, ['y', 'z'])."
            )
        work = ("graph", dict(args[0]), args[1], {})
    else:
        work = ("compute", args, None, {})
    snapshot = config.snapshot()
    captured = {name_: snapshot[name_] for name_ in _OPTIONS if name_ in snapshot}
    captured.update({k: v for k, v in options.items() if v is not None or k not in captured})
    captured["progress"] = False  # the job has its own view
    captured.setdefault("rerun", "never")
    if captured.get("rerun") == "auto":
        captured["rerun"] = "never"  # job.debug() reruns on the caller's thread instead
    job = Job(work, captured, name)
    _show_view(job, progress)
    with _registry_lock:
        _registry.append(job)
    job._start(_job_context())
    return job


def submit_call(
    function: Any, settings: dict, *, name: str | None = None, progress: Any = None
) -> Job:
    """Run ``function()`` as a job (a ``%%schedule --background`` cell): the computes
    it makes on the job's thread use ``settings`` (a ``config.set`` scope opened in
    the job's context: its own with a per-context config) and count in its progress."""
    from .api import add_run_hook

    add_run_hook(_track_calls)  # once, however often added
    captured = {**config.snapshot(), **settings}
    options = {name_: captured[name_] for name_ in _OPTIONS if name_ in captured}
    job = Job(("call", function, settings, {}), options, name)
    _show_view(job, progress)
    with _registry_lock:
        _registry.append(job)
    job._start(_job_context())
    return job


def _job_context() -> contextvars.Context:
    return contextvars.copy_context()


_RUNNING: contextvars.ContextVar[Job | None] = contextvars.ContextVar(
    "notebook_sched_job", default=None
)


def _track_calls(request: Any) -> Any:
    """Run hook: a compute made by a call job on its own thread counts in its progress
    (and stops at its next task once the job is cancelled)."""
    job = _RUNNING.get()
    if job is None or threading.current_thread() is not job._thread:
        return None
    work = job._work
    if work is None or work[0] != "call":
        return None
    from .api import Additions

    return Additions(observers=(job.tracker,))


def _show_view(job: Job, progress: Any) -> None:
    from .environment import in_kernel

    if progress is False or (progress is None and not in_kernel()):
        return
    from .diagnostics.job_view import make_job_view

    job.view = make_job_view(job, "auto" if progress is None else progress)


class JobList(list):
    """This session's jobs, oldest first; shows as a table in a notebook."""

    def __repr__(self) -> str:
        if not self:
            return "no jobs"
        return "\n".join(f"{job.name:12} {job.backend:10} {job.describe()}" for job in self)

    def _repr_html_(self) -> str:
        import html

        rows = []
        for job in self:
            done, total = job.progress
            state = job.state
            color = {FINISHED: "#2a7", FAILED: "#c33", CANCELLED: "#888"}.get(state, "#27c")
            rows.append(
                f"<tr><td>{html.escape(job.name)}</td><td>{html.escape(job.backend)}</td>"
                f"<td style='color:{color}'>{state}</td><td>{done}/{total}</td>"
                f"<td>{job.elapsed:.1f}s</td><td>{html.escape(job.describe())}</td></tr>"
            )
        head = "".join(f"<th>{h}</th>" for h in ("name", "backend", "state", "tasks", "time", ""))
        return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def jobs() -> JobList:
    """This session's jobs (each keeps its result until you drop it: ``drop``)."""
    with _registry_lock:
        return JobList(_registry)


def drop(job: Job) -> None:
    """Forget ``job`` (cancelling it if it still runs), freeing its result."""
    job.cancel()
    with _registry_lock:
        if job in _registry:
            _registry.remove(job)


def cancel_all() -> int:
    """Cancel every running or pending job; returns how many were stopped."""
    with _registry_lock:
        running = [job for job in _registry if not job.done()]
    stopped = 0
    for job in running:
        job._stopping = True
        job._interrupt_runner()
    for job in running:
        stopped += job.cancel()
    return stopped


def _at_exit() -> None:
    """Stop every job at interpreter exit or kernel shutdown (nothing left behind)."""
    try:
        cancel_all()
    except Exception:
        pass


atexit.register(_at_exit)
