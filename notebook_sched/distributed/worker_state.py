"""The cluster worker's state machine: a pure object, no threads, sockets or clocks.

:class:`WorkerMachine` is to a worker process what ``SchedulerState`` is to the
scheduler.  The threads of ``worker.py`` and ``transfers.py`` feed it *stimuli* under
the worker's one lock and apply the *instructions* it returns: wake the executors or
the fetcher, queue a reply for the sender thread (under the lock, so replies keep the
order of the state changes that made them), and, after the lock is released, send
finished tasks and errors to the scheduler or interrupt a slot.  The clock is an
argument (``now``), so tests drive it with plain calls and asserts.

Stimuli (:meth:`WorkerMachine.handle` takes any of them; the executor's hot path
calls :meth:`~WorkerMachine.next_task` and :meth:`~WorkerMachine.task_finished`
directly, to build no stimulus object per task)::

    Compute(items, now)      from the scheduler: tasks to run here
    Release(tids)            forget these tasks (cancel them) and their home data
    Steal(tids)              give back those not started -> Reply(("stolen", tids))
    Where(items)             an input we wait for is held by worker wid
    Peers(items)             addresses of the other workers
    TaskFinished(...)        an executor ran a task (value or error)
    FetchFailed(wid, tids, now)      a peer did not answer: try again later
    Fetched(items, missing, errors)  a peer answered (values already unpickled)

State:

``data``     tid -> value: results computed here (*home* data, freed when the
             scheduler says ``release``) and *copies* fetched from peers.
``copies``   tid -> how many local tasks still read that copy; at zero it is dropped.
``tasks``    tid -> :class:`Task` assigned here and not finished (waiting for inputs,
             ready, or running).  ``missing`` counts inputs not yet in ``data``.
``waiters``  input tid -> tasks waiting for it (produced here, or fetched).
``ready``    heap of ``(priority, tid)``: lowest first, so a reduction finishes one
             branch before starting the next.
``running``  per executor slot, the task it runs (None: idle).
``outbox``   finished tasks not yet reported; flushed when the worker runs out of
             ready work, every FLUSH_SECONDS, or at MAX_BATCH.  Many small tasks thus
             cost one message, and a task made ready here runs without a round trip.
``to_fetch`` wid -> input tids to get from that peer; ``fetching`` those asked for.
``retries``  ``(due, wid, tids)`` of failed fetches to try again, after a growing
             delay (up to MAX_FETCH_DELAY), as long as the input is still wanted and
             no ``where`` named another holder: a transient failure never leaves a
             task waiting for an input that nobody will send.

Why this is not :class:`~notebook_sched.engine.RunState`: a RunState owns a whole
compiled graph (dense indices, every task known up front, each task run once, every
input in one ``values`` list).  A worker sees a moving part of the cluster's graph:
tasks arrive in batches with sparse cluster-wide ids (dicts, not lists); their inputs
may live on other workers and arrive as reference-counted *copies*; the scheduler
cancels, steals and - after another worker died - sends a task again (a copy fetched
earlier then becomes the home copy).  What is the same is the counting: a task waits
for ``missing`` inputs, readers are woken when an input appears, and the ready queue
is ordered by the graph's priority (a heap here, since tasks arrive out of order).
"""

from __future__ import annotations

import heapq
from typing import Any, NamedTuple

from ..measure import sizeof

__all__ = [
    "WorkerMachine",
    "Task",
    "FLUSH_SECONDS",
    "MAX_BATCH",
    "MAX_FETCH_DELAY",
    "Compute",
    "Release",
    "Steal",
    "Where",
    "Peers",
    "TaskFinished",
    "FetchFailed",
    "Fetched",
    "WAKE_EXECUTORS",
    "WAKE_FETCHER",
    "Reply",
    "SendDone",
    "SendError",
    "Interrupt",
]

FLUSH_SECONDS = 0.01
MAX_BATCH = 4096
MAX_FETCH_DELAY = 2.0  # between attempts to fetch from a peer that did not answer


# -- stimuli ---------------------------------------------------------------------------
class Compute(NamedTuple):
    items: list  # (tid, spec, dep tids, priority, ((dep, holder wid), ...), send_back)
    now: float


class Release(NamedTuple):
    tids: list


class Steal(NamedTuple):
    tids: list


class Where(NamedTuple):
    items: list  # (tid, wid)


class Peers(NamedTuple):
    items: list  # {wid: address} each


class TaskFinished(NamedTuple):
    slot: int
    task: Task
    value: Any
    error: BaseException | None
    start: float
    stop: float


class FetchFailed(NamedTuple):
    wid: int
    tids: list
    now: float  # monotonic


class Fetched(NamedTuple):
    items: list  # (tid, value), or None for one that failed to unpickle (in errors)
    missing: list  # tids the peer did not have
    errors: list  # (tid, exception)


# -- instructions ----------------------------------------------------------------------
WAKE_EXECUTORS = "wake executors"  # under the lock: ready work (or a flush) for them
WAKE_FETCHER = "wake fetcher"  # under the lock: something to fetch


class Reply(NamedTuple):
    """Under the lock: hand ``message`` to the sender thread."""

    message: tuple


class SendDone(NamedTuple):
    """After the lock: report finished tasks (``values``: results sent back)."""

    batch: list
    values: dict | None


class SendError(NamedTuple):
    """After the lock: report that task ``tid`` failed with ``exc``."""

    tid: int
    exc: BaseException


class Interrupt(NamedTuple):
    """After the lock: stop the task running in ``slot`` (it was released)."""

    slot: int


_NOTHING: tuple = ()


class Task:
    __slots__ = ("tid", "spec", "deps", "priority", "missing", "send_back", "cancelled", "started")

    def __init__(self, tid, spec, deps, priority, send_back):
        self.tid = tid
        self.spec = spec
        self.deps = deps
        self.priority = priority
        self.missing = 0
        self.send_back = send_back
        self.cancelled = False
        self.started = False  # popped from ``ready`` (a task id may be queued twice)

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "started" if self.started else "pending"
        return f"<Task {self.tid} {state} missing={self.missing}>"


class WorkerMachine:
    """The tables of one worker process (see the module docstring).  Not thread-safe:
    the worker calls it under its lock."""

    def __init__(self, nthreads: int, memory_limit: int | None = None, now: float = 0.0):
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.data: dict = {}
        # Result hooks of tasks held here (CompiledGraph.on_result), by task id, and
        # their keys (to name a hook that raised); read by the executors' TaskRunners.
        self.hooks: dict = {}
        self.hook_keys: dict = {}
        self.sizes: dict = {}
        self.bytes_held = 0
        self.paused = False
        self.copies: dict = {}
        self.tasks: dict = {}
        self.waiters: dict = {}
        self.ready: list = []
        self.running: list = [None] * nthreads
        self.outbox: list = []
        self.values: dict = {}
        self.last_flush = now  # when the outbox was last sent
        self.peers: dict = {}
        self.to_fetch: dict = {}
        self.fetching: set = set()
        self.retries: list = []
        self.fetch_attempts: dict = {}  # tid -> failed fetches so far
        self._handlers = {
            Compute: lambda s: self.compute(s.items, s.now),
            Release: lambda s: self.release(s.tids),
            Steal: lambda s: self.steal(s.tids),
            Where: lambda s: self.where(s.items),
            Peers: lambda s: self.add_peers(s.items),
            TaskFinished: lambda s: self.task_finished(*s),
            FetchFailed: lambda s: self.fetch_failed(s.wid, s.tids, s.now),
            Fetched: lambda s: self.fetched(s.items, s.missing, s.errors),
        }

    def handle(self, stimulus: NamedTuple) -> list:
        """Apply one stimulus; returns the instructions (module docstring)."""
        return list(self._handlers[type(stimulus)](stimulus))

    # -- from the scheduler ----------------------------------------------------------
    def compute(self, items: list, now: float) -> list:
        data, copies, tasks, waiters, ready = (
            self.data,
            self.copies,
            self.tasks,
            self.waiters,
            self.ready,
        )
        done_here = []
        pushed = False
        fetch = False
        for tid, spec, deps, priority, remote, send_back, *hook in items:
            if tid in data:  # a copy we fetched earlier becomes the home copy
                copies.pop(tid, None)
                done_here.append((tid, self.sizes.setdefault(tid, sizeof(data[tid]))))
                continue
            if hook:  # (key, result hook): the executor's TaskRunner calls it
                self.hook_keys[tid], self.hooks[tid] = hook[0]
            task = Task(tid, spec, deps, priority, send_back)
            tasks[tid] = task
            missing = 0
            for dep in deps:
                if dep in data:
                    if dep in copies:
                        copies[dep] += 1
                else:
                    missing += 1
                    users = waiters.get(dep)
                    if users is None:
                        waiters[dep] = [task]
                    else:
                        users.append(task)
            task.missing = missing
            if not missing:
                heapq.heappush(ready, (priority, tid))
                pushed = True
            for dep, wid in remote:
                if dep not in data and dep not in self.fetching:
                    self._want(dep, wid)
                    fetch = True
        for tid, nbytes in done_here:
            self.outbox.append((tid, nbytes, now, now))
            self._wake_users(tid)
        out = []
        if pushed or done_here:
            out.append(WAKE_EXECUTORS)
        if fetch:
            out.append(WAKE_FETCHER)
        return out

    def release(self, tids: list) -> list:
        out = []
        for tid in tids:
            task = self.tasks.pop(tid, None)
            if task is not None:
                task.cancelled = True
                self._forget_inputs(task)
                for slot, running in enumerate(self.running):
                    if running is task:
                        out.append(Interrupt(slot))
            if tid in self.data and tid not in self.copies:
                del self.data[tid]
                self.bytes_held -= self.sizes.pop(tid, 0)
        self._check_memory(out)
        return out

    def steal(self, tids: list) -> list:
        """Give back the tasks among ``tids`` that have not started (nor are awaited
        here)."""
        given = []
        for tid in tids:
            task = self.tasks.get(tid)
            if task is None or task.started or tid in self.waiters:
                continue
            del self.tasks[tid]
            task.cancelled = True
            self._forget_inputs(task)
            given.append(tid)
        return [Reply(("stolen", given))]

    def where(self, items: list) -> list:
        for tid, wid in items:
            if tid not in self.data and tid in self.waiters and tid not in self.fetching:
                self._want(tid, wid)
        return [WAKE_FETCHER]

    def add_peers(self, items: list) -> list:
        for peers in items:
            self.peers.update(peers)
        return []

    # -- executors -------------------------------------------------------------------
    def next_task(self, slot: int) -> Task | None:
        """The next ready task, now running in ``slot``; None when nothing is ready."""
        ready, tasks = self.ready, self.tasks
        while ready:
            task = tasks.get(heapq.heappop(ready)[1])
            if task is None or task.cancelled or task.started:
                continue
            task.started = True
            self.running[slot] = task
            return task
        return None

    def task_finished(
        self,
        slot: int,
        task: Task,
        value: Any,
        error: BaseException | None,
        start,
        stop,
        measured=None,
    ) -> list | tuple:
        """``task`` ran in ``slot`` from ``start`` to ``stop`` (``stop`` is now);
        ``measured``: its ``measure.Measurement`` when the worker measured it."""
        self.running[slot] = None
        if self.hooks:
            self.hooks.pop(task.tid, None)
            self.hook_keys.pop(task.tid, None)
        copies = self.copies
        for dep in task.deps:
            if dep in copies:
                self._drop_copy(dep)
        if task.cancelled:
            return _NOTHING
        if self.tasks.get(task.tid) is task:
            del self.tasks[task.tid]
        if error is not None:
            return [SendDone(*self.take_outbox(stop)), SendError(task.tid, error)]
        out: list = []
        self._store(task, value, start, stop, out, measured)
        if not (
            self.ready and len(self.outbox) < MAX_BATCH and stop - self.last_flush < FLUSH_SECONDS
        ):
            out.append(SendDone(*self.take_outbox(stop)))
        return out

    def take_outbox(self, now: float) -> tuple[list, dict | None]:
        """The finished tasks to report (and values sent back); empties the outbox."""
        batch, values = self.outbox, self.values
        self.outbox = []
        self.values = {}
        self.last_flush = now
        return batch, values or None

    def _store(
        self, task: Task, value: Any, start: float, stop: float, out: list, measured=None
    ) -> None:
        tid = task.tid
        nbytes = sizeof(value)
        self.data[tid] = value
        self.sizes[tid] = nbytes
        self.bytes_held += nbytes
        self.outbox.append((tid, nbytes, start, stop, measured))
        if task.send_back:
            self.values[tid] = value
        if self._wake_users(tid) and self.nthreads > 1:
            out.append(WAKE_EXECUTORS)
        self._check_memory(out)

    # -- transfers -------------------------------------------------------------------
    def pop_fetch(self) -> tuple[int, list, Any]:
        """``(wid, tids, address)``: the next fetch to make (``to_fetch`` is not empty)."""
        wid, tids = self.to_fetch.popitem()
        return wid, tids, self.peers.get(wid)

    def fetch_failed(self, wid: int, tids: list, now: float) -> list:
        self.fetching.difference_update(tids)
        attempt = self.fetch_attempts.get(tids[0], 0)
        for tid in tids:
            self.fetch_attempts[tid] = attempt + 1
        delay = min(MAX_FETCH_DELAY, 0.05 * 2**attempt)
        self.retries.append((now + delay, wid, tids))
        return []

    def due_retries(self, now: float) -> float | None:
        """Queue the failed fetches that are due, if still wanted and not claimed by a
        ``where``; seconds until the next one, or None."""
        if not self.retries:
            return None
        later = []
        for due, wid, tids in self.retries:
            if due > now:
                later.append((due, wid, tids))
                continue
            for tid in tids:
                if tid in self.waiters and tid not in self.data and tid not in self.fetching:
                    self._want(tid, wid)
        self.retries = later
        return min(due for due, _, _ in later) - now if later else None

    def fetched(self, items: list, missing: list, errors: list) -> list:
        out: list = []
        for item in items:
            if item is None:
                continue
            tid, value = item
            self.fetching.discard(tid)
            self.fetch_attempts.pop(tid, None)
            users = self.waiters.get(tid)
            if not users or tid in self.data:
                continue
            self.data[tid] = value
            self.copies[tid] = len(users)
            self._wake_users(tid)
        self.fetching.difference_update(missing)
        for tid, exc in errors:
            self.fetching.discard(tid)
            for user in self.waiters.pop(tid, ()):
                if self.tasks.pop(user.tid, None) is not None:
                    out.append(SendError(user.tid, exc))
        out.append(WAKE_EXECUTORS)
        return out

    def lookup(self, tids: list) -> tuple[list, list]:
        """What a peer's ``get`` asks for: ``([(tid, value)], [tids not here])``."""
        data = self.data
        return [(t, data[t]) for t in tids if t in data], [t for t in tids if t not in data]

    def lookup_requests(self, request: list) -> tuple[list, list]:
        """What the scheduler's ``send`` asks for, ``(rid, tid)`` each:
        ``([(rid, tid, value)], [(rid, tid) not here])``."""
        data = self.data
        found = [(rid, tid, data[tid]) for rid, tid in request if tid in data]
        return found, [(rid, tid) for rid, tid in request if tid not in data]

    # -- shared steps ----------------------------------------------------------------
    def _want(self, tid: int, wid: int) -> None:
        self.fetching.add(tid)
        wanted = self.to_fetch.get(wid)
        if wanted is None:
            self.to_fetch[wid] = [tid]
        else:
            wanted.append(tid)

    def _wake_users(self, tid: int) -> bool:
        """``tid`` is in ``data``: its waiting readers lose one missing input; True if
        any was waiting."""
        users = self.waiters.pop(tid, None)
        if not users:
            return False
        ready = self.ready
        for user in users:
            user.missing -= 1
            if not user.missing:
                heapq.heappush(ready, (user.priority, user.tid))
        return True

    def _forget_inputs(self, task: Task) -> None:
        """A cancelled task no longer waits for, or reads, its inputs."""
        for dep in task.deps:
            users = self.waiters.get(dep)
            if users is not None and task in users:
                users.remove(task)
                if not users:
                    del self.waiters[dep]
            elif dep in self.copies:
                self._drop_copy(dep)

    def _drop_copy(self, tid: int) -> None:
        left = self.copies[tid] - 1
        if left:
            self.copies[tid] = left
        else:
            del self.copies[tid]
            self.data.pop(tid, None)

    def _check_memory(self, out: list) -> None:
        """Pause (take no new tasks) above the memory limit."""
        if self.memory_limit is None:
            return
        paused = self.bytes_held > self.memory_limit
        if paused != self.paused:
            self.paused = paused
            out.append(Reply(("paused", paused)))
