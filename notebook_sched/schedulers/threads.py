"""The threaded backend: worker threads share one RunState under one lock.

For NumPy, pandas and other code that releases the GIL.  Each run starts its own
``num_workers`` threads (default: the number of CPUs) and joins them, so a task may
itself call ``get`` without waiting on a shared pool (no nested-compute deadlock; a
nested run does not count in the budget either, see ``_budget.py``).

How work flows::

    worker thread:   lock -> record last result, pop next ready -> unlock -> run task
                       ^                                                      |
                       +------------------------------------------------------+

A thread that finishes a task records it and pops the top of the ready stack in the
same critical section; tasks it made ready are on top, so it usually continues with
them itself: no queue, no hand-off.  Idle threads wait on a condition and are woken
only when ready work exceeds what the running threads will take.

The calling thread only waits.  A failed task is reported at once: the task's own
exception with its live traceback, plus a note.  Whatever a task raises counts,
``BaseException``s included (``SystemExit``, ``KeyboardInterrupt`` raised by the
task, ``GeneratorExit``), and a worker thread signals the caller in a ``finally``,
so no exception can leave the caller waiting.  On a failure and on KeyboardInterrupt
the caller stops the run, raises an asynchronous ``TaskCancelled`` in threads that
are inside a task (pure-Python work stops at its next bytecode; a blocking C call
finishes first), and returns within a few hundred milliseconds.

Tasks see the caller's ``contextvars`` (as under Dask): each worker thread runs its
whole loop inside its own copy of the caller's context, taken once per run, so there
is no per-task cost.  A task that sets a variable changes only its thread's copy
(later tasks on the same thread see it; the caller never does).

**Sharing with other runs.**  Each run is a member of the process-wide worker budget
(``_budget.py``).  Alone (the usual case) nothing changes: the loop reads one flag
per task.  While background jobs or other computes run beside it, its threads take a
budget slot before each task and give it back after, so all runs together keep at
most ``num_workers`` tasks busy, the foreground's first and the jobs' in turn; a
thread that gets no slot waits for one outside the run's lock.

When ``pool=`` is a ``concurrent.futures`` executor or a ``multiprocessing`` pool,
the executor backend runs the graph instead (see ``executor.py``).
"""

from __future__ import annotations

import contextvars
import ctypes
import threading
import time
from typing import Any

from ..engine import Reporter, check_workers, execute_graph
from ..measure import THREAD
from ..task_runner import Failed, TaskCancelled, TaskRunner
from ._blas import limited_native_threads
from ._budget import BACKGROUND, BUDGET, IN_TASK, Member
from .on_pool import get_on_pool

__all__ = ["get", "TaskCancelled"]

BACKEND = "threads"
INTERRUPT_GRACE = 0.3  # seconds to let cancelled threads unwind before returning


def get(
    dsk: Any,
    keys: Any,
    *,
    num_workers: int | None = None,
    pool=None,
    observers=None,
    planners=None,
    **options: Any,
) -> Any:
    """Compute ``keys`` of ``dsk`` on ``num_workers`` threads (Dask's ``get`` contract)."""
    if pool is not None:
        return get_on_pool(dsk, keys, pool, observers, planners)
    workers = check_workers(num_workers)

    def drive(graph, state, report):
        _Run(graph, state, report, workers, member).drive()

    # The run's account in the process-wide budget, shared with jobs (_budget.py).
    with BUDGET.join(workers, BACKGROUND.get()) as member:
        return execute_graph(
            dsk, keys, drive, BACKEND, observers=observers, workers=workers, planners=planners
        )


class _Run:
    """One threaded run.  ``cond`` guards every field below and the RunState."""

    def __init__(self, graph, state, report: Reporter, workers: int, member: Member):
        self.graph = graph
        self.state = state
        self.report = report
        self.cond = threading.Condition(threading.Lock())
        self.done = threading.Event()
        self.stop = False  # set on failure or interrupt: take no new task
        self.failure = None  # the first TaskFailure
        self.error = None  # an exception outside any task (observer, internal)
        self.idle = 0  # threads waiting on cond
        self.in_task: dict[int, bool] = {}  # thread ident -> currently inside a task
        self.workers = min(workers, max(1, len(graph)))
        self.member = member  # takes a budget slot per task while other runs exist
        # Tasks running now, for the budget (list() copies the values atomically).
        in_task = self.in_task
        member.running = lambda: list(in_task.values()).count(True)

    def drive(self) -> None:
        __tracebackhide__ = True
        with limited_native_threads(self.workers):
            self._drive()

    def _drive(self) -> None:
        __tracebackhide__ = True
        # One copy of the caller's context per thread: a context runs in one thread.
        threads = [
            threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._work, f"thread-{n}"),
                name=f"notebook_sched-thread-{n}",
                daemon=True,
            )
            for n in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        try:
            self.done.wait()
        except BaseException:
            self._cancel(threads)
            raise
        if self.failure is not None:
            self._cancel(threads)  # stop the other tasks now, as an interrupt does
            raise self.failure.exception
        if self.error is not None:
            self._cancel(threads)
            raise self.error
        for thread in threads:
            thread.join()

    def _cancel(self, threads: list) -> None:
        with self.cond:
            self.stop = True
            self.cond.notify_all()
            running = [ident for ident, busy in self.in_task.items() if busy]
        for ident in running:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(TaskCancelled)
            )
        deadline = time.monotonic() + INTERRUPT_GRACE
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self, name: str) -> None:
        __tracebackhide__ = True
        IN_TASK.set(True)  # this thread's context: a compute started here is nested
        try:
            self._loop(name)
        except TaskCancelled:
            pass  # the run was interrupted or failed; the caller already raised
        except BaseException as exc:  # our own bookkeeping or an observer failed
            with self.cond:
                if self.error is None and self.failure is None:
                    self.error = exc
                self.stop = True
                self.cond.notify_all()
        finally:
            # A thread leaves only when the run is complete or stopped: either way
            # the caller must wake, whatever happened above.
            self.done.set()

    def _loop(self, name: str) -> None:
        """Take tasks and run them through this thread's TaskRunner.  What a task
        raises comes back as :class:`Failed`; what the reporter raises (an observer
        that propagates its errors) is not a task's and ends the run in ``_work``."""
        __tracebackhide__ = True
        graph, state, report, cond = self.graph, self.state, self.report, self.cond
        specs, keys, values = graph.specs, graph.keys, state.values
        ready = state.ready
        finish = state.finish
        started, finished = report.started, report.finished
        done = report.key_done
        timed = report.timed
        report.worker_started(name)
        ident = threading.get_ident()
        runner = TaskRunner(
            THREAD,
            hooks=graph.on_result,
            keys=keys,
            measure=bool(report.task_measured),
            timed=timed,
        )
        run = runner.run_timed if (timed or runner.measuring) else runner.run
        in_task = self.in_task
        member = self.member
        holding = False  # this thread holds a budget slot (only while capped)
        i = -1
        value = None
        while True:
            with cond:
                if holding and i >= 0:  # the slot of the task just run
                    member.give()
                    holding = False
                if i >= 0:
                    finish(i, value)
                    value = None
                    if done:
                        done(keys[i])
                    if not state.remaining:
                        self.done.set()
                        cond.notify_all()
                        member.wake()
                        return
                while True:
                    if self.stop:
                        return
                    if ready:  # marked first: a run joining now counts it (_budget.py)
                        in_task[ident] = True
                        if member.capped and not holding:  # a slot per task now
                            in_task[ident] = False  # not counted twice while it asks
                            if not member.try_take():
                                i = -1
                                break
                            in_task[ident] = True
                            holding = True
                        i = ready.pop()
                        break
                    if holding:  # a slot waited for, and no task left for it
                        member.give()
                        holding = False
                    if not state.remaining:
                        return
                    self.idle += 1
                    cond.wait()
                    self.idle -= 1
                if ready and self.idle:
                    cond.notify(min(self.idle, len(ready)))
            if i < 0:
                holding = member.take()  # no slot for this run now: wait for its turn
                continue
            if timed:
                started(i, name)
            value = run(i, specs[i], values)
            in_task[ident] = False
            if type(value) is Failed:
                self._task_failed(i, value.exc, name)
                return
            if runner.record is not None:
                report.measured(runner.record, name)
            if timed:
                finished(i, name, runner.start, runner.stop, False)  # task_done: under the lock

    def _task_failed(self, i: int, exc: BaseException, name: str) -> None:
        with self.cond:
            if isinstance(exc, TaskCancelled) and self.stop:
                return  # cancelled by the caller, not a failure of the task
            if self.failure is None and not self.stop:
                self.failure = self.report.failed(i, exc, name, emit=False)
            self.stop = True
            self.cond.notify_all()
        self.report.emit_failed(i, name, exc)
        self.done.set()
