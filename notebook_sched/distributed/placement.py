"""Where tasks run: the placement half of the scheduler state (pure, no I/O).

A part of :class:`~notebook_sched.distributed.state.SchedulerState` (the shared
fields are listed in ``state_core.py``), driven by ``dispatch()`` after every batch
of stimuli.

* Tasks without inputs (roots) wait in ``root_heap`` (priority order) and go out in
  *chunks*: each worker with room takes a contiguous run of the heap, up to
  ``queue_target`` tasks per thread, where ``queue_target`` holds ~50 ms of work at
  the measured mean task time (FIRST_QUEUE before anything was measured).  A worker
  gets more only when half its queue is done, so messages stay large.  Contiguous
  chunks keep the leaves of a subtree on one worker.
* When a task is assigned, each dependent whose inputs are all on that worker and
  read by that dependent only (chains, in-trees) is assigned there too, at once
  (*eager*), in the same message: no round trip per task, and a linear chain stays
  on one worker.  The worker holds it until its inputs exist.  Fan-outs are not
  followed (that would pile a wide graph onto one worker), nor are reductions of
  more than EAGER_MAX_INPUTS inputs.
* Any other task becomes ready once its inputs are in memory and goes to the worker
  with the lowest estimated start: its queued work plus the time to fetch the input
  bytes it lacks (BANDWIDTH, LATENCY per input), so it runs where most of its input
  bytes are unless that worker is much busier.  The compute operation lists the
  inputs to fetch and who holds them; workers fetch from each other directly.
* Paused workers (over their memory limit) get nothing - unless every worker is
  paused and idle, where waiting would hang the computation.
* Work stealing: when the root queue is empty and a worker is idle, the busiest
  worker is asked (``steal``) to give back half of its unstarted root tasks that no
  task there waits for; it answers with those it had not started (``stolen``), and
  they are placed again.  Task times that vary a lot thus do not leave a worker idle
  while another has a queue.
"""

from __future__ import annotations

import heapq
import itertools

from .state_core import StateCore
from .stimuli import TasksStolen, stimulus_entry
from .tasks import MEMORY, PROCESSING, QUEUED, WAITING, TaskState, WorkerState

__all__ = ["Placement"]

TARGET_QUEUE_SECONDS = 0.05  # work per worker thread the root queue keeps in flight
TASK_OVERHEAD = 2e-5  # seconds of bookkeeping per task, added to measured run times
MAX_QUEUE = 8192
BANDWIDTH = 1e9  # bytes/s between local workers, for placement estimates
LATENCY = 1e-4  # seconds per input fetched from another worker
EAGER_MAX_INPUTS = 32  # a dependent with more inputs never follows them eagerly
STEAL_SCAN = 2048  # queued tasks of a busy worker examined per steal attempt


class Placement(StateCore):
    """Placement methods of SchedulerState (see the module docstring).

    Offers ``_ready``, ``_measured``, ``dispatch``; writes ``root_heap``,
    ``ready_deps``, ``mean_seconds``, ``queue_target`` and the workers' ``processing``."""

    def _measured(self, mean: float) -> None:
        """Workers reported tasks taking ``mean`` seconds: size the root queues."""
        self.mean_seconds = (
            mean if self.mean_seconds is None else 0.7 * self.mean_seconds + 0.3 * mean
        )
        target = int(TARGET_QUEUE_SECONDS / (self.mean_seconds + TASK_OVERHEAD))
        self.queue_target = max(2, min(MAX_QUEUE, target))

    def _ready(self, ts: TaskState) -> None:
        ts.state = QUEUED
        if ts.deps or ts.pinned is not None:
            self.ready_deps.append(ts)
        else:
            heapq.heappush(self.root_heap, (ts.priority, ts.tid, ts))

    def dispatch(self) -> None:
        """Assign ready tasks to workers (call after every batch of stimuli)."""
        if not self.workers:
            return
        if self.ready_deps:
            pending, self.ready_deps = self.ready_deps, []
            for ts in pending:
                if ts.state != QUEUED:
                    continue
                worker = self._decide_worker(ts)
                if worker is None:
                    self.ready_deps.append(ts)
                else:
                    self._assign(ts, worker)
        if self.root_heap:
            self._dispatch_roots()
        elif len(self.workers) > 1:
            self._balance()

    def _accepting(self) -> list:
        workers = [w for w in self.workers.values() if not w.paused]
        if not workers and not any(w.processing for w in self.workers.values()):
            # Every worker is over its memory limit and idle: waiting would hang.
            workers = list(self.workers.values())
        return workers

    def _dispatch_roots(self) -> None:
        heap = self.root_heap
        target = self.queue_target
        while heap:
            open_workers = [
                w
                for w in self._accepting()
                if len(w.processing) * 2 <= target * w.nthreads or not w.processing
            ]
            if not open_workers:
                return
            open_workers.sort(key=lambda w: len(w.processing))
            share = -(-len(heap) // len(open_workers))
            progressed = False
            for worker in open_workers:
                room = min(share, target * worker.nthreads - len(worker.processing))
                while room > 0 and heap:
                    ts = heapq.heappop(heap)[2]
                    if ts.state != QUEUED:
                        continue
                    room -= self._assign(ts, worker)
                    progressed = True
            if not progressed:
                return

    def _balance(self) -> None:
        """Work stealing: when a worker is idle, ask the busiest worker to give back
        half of the root tasks it has not started (it answers with ``stolen``)."""
        idle = [w for w in self.workers.values() if not w.processing and not w.paused]
        if not idle:
            return
        victim = max(self.workers.values(), key=lambda w: len(w.processing))
        if victim.stealing or len(victim.processing) <= victim.nthreads:
            return
        sample = itertools.islice(victim.processing, STEAL_SCAN)  # bounded work per call
        stealable = [ts for ts in sample if not ts.deps and not _feeds(ts, victim)]
        if len(stealable) < 2:
            return
        stealable.sort(key=lambda ts: ts.priority, reverse=True)  # those it would run last
        victim.stealing = True
        for ts in stealable[: len(stealable) // 2]:
            self._emit(victim, "steal", ts.tid)

    @stimulus_entry(TasksStolen)
    def handle_stolen(self, wid: int, tids: list) -> None:
        """Worker ``wid`` gave back ``tids`` (unstarted): place them again."""
        victim = self.workers.get(wid)
        if victim is None:
            return
        victim.stealing = False
        for tid in tids:
            ts = self.tasks.get(tid)
            if ts is not None and ts.state == PROCESSING and ts.worker is victim:
                victim.processing.discard(ts)
                ts.worker = None
                self._ready(ts)

    def _decide_worker(self, ts: TaskState) -> WorkerState | None:
        pinned = ts.pinned
        if pinned is not None and pinned.wid in self.workers:
            return pinned
        candidates = self._accepting()
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        held: dict = {}
        count: dict = {}
        total = 0
        for dep in ts.deps:
            holder = dep.worker
            total += dep.nbytes
            if holder is not None:
                held[holder] = held.get(holder, 0) + dep.nbytes
                count[holder] = count.get(holder, 0) + 1
        per_task = (self.mean_seconds or 0.0) + TASK_OVERHEAD
        ndeps = len(ts.deps)
        best = None
        best_cost = 0.0
        for worker in candidates:
            cost = (
                len(worker.processing) * per_task / worker.nthreads
                + (total - held.get(worker, 0)) / BANDWIDTH
                + (ndeps - count.get(worker, 0)) * LATENCY
            )
            if best is None or cost < best_cost:
                best, best_cost = worker, cost
        return best

    def _assign(self, ts: TaskState, worker: WorkerState) -> int:
        """Send ``ts`` to ``worker``, with the dependents that can follow it there
        without a round trip.  Returns how many tasks were assigned."""
        emit = self._emit
        processing = worker.processing
        assigned = 0
        ts.state = PROCESSING
        stack = [ts]
        while stack:
            t = stack.pop()
            t.worker = worker
            processing.add(t)
            assigned += 1
            remote = ()
            deps = t.deps
            if deps:
                remote = tuple(
                    [
                        (d.tid, d.worker.wid)
                        for d in deps
                        if d.state == MEMORY and d.worker is not worker
                    ]
                )
            item = (t.tid, t.spec, tuple([d.tid for d in deps]), t.priority, remote, t.send_back)
            if t.hook is not None:
                item = (*item, t.hook)  # (key, hook): run where the task runs
            emit(worker, "compute", item)
            for user in t.dependents:
                if user.state == WAITING and user.pinned is None and _follows(user, worker):
                    user.state = PROCESSING
                    stack.append(user)
        return assigned


def _feeds(ts: TaskState, worker: WorkerState) -> bool:
    """True when a task assigned to ``worker`` waits there for ``ts``."""
    return any(user.worker is worker and user.state == PROCESSING for user in ts.dependents)


def _follows(user: TaskState, worker: WorkerState) -> bool:
    """True when every input of ``user`` is on ``worker`` and read by ``user`` only.

    Wide reductions (more than EAGER_MAX_INPUTS inputs) wait for their inputs at the
    scheduler instead: checking them on every assignment would be quadratic."""
    if len(user.deps) > EAGER_MAX_INPUTS:
        return False
    for dep in user.deps:
        if dep.worker is not worker or len(dep.dependents) != 1:
            return False
        if dep.state != PROCESSING and dep.state != MEMORY:
            return False
    return True
