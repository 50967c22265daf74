"""Recovery from lost workers: the failure half of the scheduler state (pure, no I/O).

A part of :class:`~notebook_sched.distributed.state.SchedulerState`, like
``placement`` and ``gathers`` (shared fields: ``state_core.py``); the state
machine's design note is in ``state.py``.

* ``remove_worker``: results held only by the dead worker are *lost* (back to
  RELEASED; readers wait again); those still needed are recomputed from their
  specs, walking back through released inputs as far as needed (iteratively).
* Tasks that were executing there get a *suspicious* mark (the worker's name and
  exit code, or why it was killed); at MAX_SUSPICIOUS the task fails with
  :class:`KilledWorker`.  A worker killed for not answering (``worker_timeout``)
  counts like one that died.
* Nothing may be left waiting for something that will never come: a lost result
  that cannot be made again (scattered data: no spec) fails with a clear error, and
  so does every task that needs it - the ones waiting, the ones whose own result
  was lost with it (``_recompute`` meets an erred input) and the ones submitted
  later (``_link``).
"""

from __future__ import annotations

from ..errors import describe_exit
from .state_core import StateCore
from .stimuli import WorkerLost, stimulus_entry
from .tasks import (
    MAX_SUSPICIOUS,
    MEMORY,
    PROCESSING,
    QUEUED,
    RELEASED,
    WAITING,
    CancelledError,
    KilledWorker,
    TaskState,
)

__all__ = ["Recovery"]


UNSTARTED = ", before it started any task it was sent"


class Recovery(StateCore):
    """Failure methods of SchedulerState (see the module docstring).

    Offers ``_recompute``, ``_mark_lost``; writes ``workers`` (removes), ``exit_codes``,
    the tasks' ``deaths``; calls ``_fail``, ``_ready``, ``_hold_inputs``, ``_settle``."""

    @stimulus_entry(WorkerLost)
    def remove_worker(
        self, wid: int, exit_code: int | None, executing: list, hung: float | None = None
    ) -> None:
        """A worker died (or was killed after ``hung`` seconds without a sign of life):
        recompute what it held and ran, blame what it was running."""
        worker = self.workers.pop(wid, None)
        if worker is None:
            return
        self.exit_codes.append((worker.name, exit_code))
        if hung is not None:
            why = f"killed after {hung:.1f} s without answering (worker_timeout)"
        else:
            why = f"exit code {exit_code} ({describe_exit(exit_code)})"
        self.outbox.pop(wid, None)
        suspects = [self.tasks.get(tid) for tid in executing]
        if not executing and hung is None and exit_code:
            # It died on its own while running none of its tasks: loading them, most
            # likely (a function whose module fails to import in a worker). Blame them
            # all, or they would be sent to one dying worker after another forever.
            suspects = list(worker.processing)
            why += UNSTARTED
        killers = []
        for ts in suspects:
            if ts is not None and ts.state == PROCESSING and ts.worker is worker:
                if ts.deaths is None:
                    ts.deaths = []
                ts.deaths.append((worker.name, why))
                if len(ts.deaths) >= MAX_SUSPICIOUS:
                    killers.append(ts)
        lost = list(worker.has)
        for ts in lost:
            self._mark_lost(ts)
        orphans = list(worker.processing)
        for ts in orphans:
            ts.state = WAITING
            ts.worker = None
            ts.waiting = sum(1 for dep in ts.deps if dep.state != MEMORY)
        for gather in self.gathers.values():  # answers the dead worker still owed
            for tid in gather.pending:
                ts = self.tasks.get(tid)
                if ts is not None and ts.state == RELEASED and gather not in (ts.gathers or ()):
                    ts.send_back = True
                    ts.gathers = (ts.gathers or []) + [gather]
        for ts in killers:
            self._fail(ts, (self._killed_error(ts), None, worker.name))
        for ts in lost:
            if ts.state == RELEASED and ts.holders > 0:
                self._recompute(ts)
        for ts in orphans:
            if ts.state == WAITING and ts.waiting == 0:
                self._ready(ts)
        for ts in lost + orphans:
            if ts.watchers and ts.state in (WAITING, QUEUED):
                for target in ts.watchers:
                    self._notify(target, "pending")

    def _mark_lost(self, ts: TaskState) -> None:
        """The result of ``ts`` (MEMORY) is gone: back to RELEASED; readers wait again."""
        worker = ts.worker
        if worker is not None:
            worker.has.discard(ts)
            worker.nbytes -= ts.nbytes
        ts.state = RELEASED
        ts.worker = None
        for user in ts.dependents:
            if user.state == WAITING:
                user.waiting += 1
            elif user.state == QUEUED:
                user.state = WAITING
                user.waiting = 1

    def _killed_error(self, ts: TaskState) -> KilledWorker:
        by_why: dict = {}  # the same exit of several workers is said once
        for name, why in ts.deaths:
            by_why.setdefault(why, []).append(name)
        deaths = "; ".join(f"{', '.join(names)}: {why}" for why, names in by_why.items())
        if all(why.endswith(UNSTARTED) for _, why in ts.deaths):
            return KilledWorker(
                f"Task {ts.key!r} was sent to {len(ts.deaths)} different workers, and each "
                f"died before it started ({deaths}). Most likely the task cannot be loaded "
                f"in a worker process: its function or an argument comes from a module "
                f"that fails to import there (each worker printed why to stderr). Run it "
                f"with scheduler='processes' to see the error, or 'sync' to run it here."
            )
        if any(why.startswith("killed after") for _, why in ts.deaths):
            cause = (
                "stops its process or blocks it without answering (a deadlock in native "
                "code holding the GIL, a signal that stops it), or crashes it"
            )
        else:
            cause = "crashes its process"
        return KilledWorker(
            f"Attempted to run task {ts.key!r} on {len(ts.deaths)} different workers, but all "
            f"those workers died while running it ({deaths}). The task probably {cause} "
            f"(a segmentation fault in native code, os._exit(), or more memory than "
            f"the machine has). To debug it, run it with scheduler='sync'."
        )

    def _recompute(self, ts: TaskState) -> None:
        """``ts`` (RELEASED, its data gone) is needed again: compute it and, first, the
        released inputs it needs.  Iterative: chains of any length."""
        stack = [ts]
        while stack:
            t = stack.pop()
            if t.state != RELEASED:
                continue
            t.state = WAITING  # also for _fail, which leaves RELEASED tasks alone
            if t.spec is None:
                error = CancelledError(
                    f"The data of {t.key!r} was lost with its worker; scattered data cannot be "
                    f"recomputed. Scatter it again."
                )
                self._fail(t, (error, None, ""))  # and its waiting dependents
                continue
            stack.extend(self._hold_inputs(t))
            self._settle(t)
