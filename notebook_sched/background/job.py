"""The :class:`Job`: a ``concurrent.futures.Future`` around one run on a job thread.

See the package docstring (``background/__init__.py``) for the design: settings captured at
submit, the job thread in a copy of the submitting context, cancelling through the
interrupt path (:class:`JobCancelled` is a ``KeyboardInterrupt``), failures kept for
``job.debug()``.  :class:`JobList` is the table ``ns.jobs()`` returns.
"""

from __future__ import annotations

import contextvars
import ctypes
import itertools
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import _base as _futures
from typing import Any

from .. import config
from .. import failure as _failure
from ..events import Observer
from ..schedulers import _budget
from .runners import runners

__all__ = ["Job", "JobCancelled", "JobList", "RUNNING_JOB"]

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

RUNNING_JOB: contextvars.ContextVar[Job | None] = contextvars.ContextVar(
    "notebook_sched_job", default=None
)


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
        if isinstance(scheduler, str):
            self.backend = scheduler
        else:  # an executor or a get function
            self.backend = getattr(scheduler, "__name__", type(scheduler).__name__)
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
        from ..debug.rerun import RerunUnavailable, rerun_graph, rerun_task

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
        if thread is not None:
            _wake_cluster_run(thread.ident, self.name)
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
        runners.run(self, context)

    def _run(self) -> None:
        self._thread = threading.current_thread()
        if not self.set_running_or_notify_cancel():
            self._ran.set()
            return
        _budget.BACKGROUND.set(True)
        RUNNING_JOB.set(self)
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
            from ..api import get

            return get(target, keys, **options)
        if kind == "call":  # a %%schedule --background cell: its computes read the config
            with config.set(**keys):
                return target()
        from ..lazy import compute

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


def _async_raise(ident: int | None, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``ident`` at its next bytecode (None: clear)."""
    if ident is None:
        return
    obj = ctypes.py_object(exc_type) if exc_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), obj)


def _forget_failure(previous: Any, exc: BaseException) -> None:
    """A worker killed to cancel a job is not a failure to debug: put back the last
    failure as it was before the job (unless another run failed meanwhile)."""
    _failure.forget_failure(getattr(exc, "__notebook_sched_failure__", None), previous)


def _kill_busy_workers(ident: int | None) -> None:
    """Kill the process workers busy with runs of thread ``ident`` (wakes its runner;
    the interrupt path then replaces them).  No pool started: nothing to kill."""
    pool_module = sys.modules.get("notebook_sched.schedulers._pool")
    if pool_module is not None:
        pool_module.kill_busy_workers(ident)


def _wake_cluster_run(ident: int | None, name: str) -> None:
    """Wake the local-cluster run thread ``ident`` waits for: it releases its tasks,
    which the workers cancel.  No cluster run ever made: nothing to wake."""
    run_module = sys.modules.get("notebook_sched.distributed.run")
    if run_module is not None:
        run_module.wake_run(ident, f"job {name!r} was cancelled")


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
