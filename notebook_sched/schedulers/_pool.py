"""A reusable pool of spawned worker processes, one duplex pipe each.

::

    caller process                                  worker process k
    +-----------------------+   batch of jobs      +--------------------------+
    | processes.py driver   | -------------------> | _worker.worker_main      |
    |  WorkerHandle k:      |   results / error    |   run_batch: run jobs,   |
    |   conn, process,      | <------------------- |   stream results back    |
    |   current (shared)    |                      |   current = task number  |
    +-----------------------+                      +--------------------------+

Workers are started with the ``spawn`` method: safe in a kernel that already runs
threads, and the same on Linux, macOS and Windows.  Spawning re-imports the caller's
main *script* in each worker; a script that computes at import time (no
``if __name__ == "__main__":`` guard) would start workers from workers.  The pool
detects that inside the child (multiprocessing marks a bootstrapping process), exits
it quietly with MAIN_GUARD_EXIT, and the caller raises one error naming the fix.

One pool lives at a time (``acquire``), reused across computes so no call pays the
~100 ms start-up; it is replaced when ``num_workers`` changes (and no run uses it)
and shut down at exit.

**Shared fairly (leases).**  Several runs may use the pool at once (background jobs,
``background/``, beside a cell's compute): each run takes a :class:`WorkerLease`, which
looks like a pool (``workers``, ``size``, ``replace``) but lists only the workers
lent to that run.  A worker belongs to one run at a time, so a pipe never carries two
runs' batches.  Each lease is a member of the process-wide worker budget
(``_budget.py``), beside ``threads`` runs, so jobs on threads and on processes share
one ``num_workers``.  Every time a run looks at ``lease.workers`` (once per dispatch
and per message received) the pool rebalances: it reads each lease's target from the
budget (foreground runs first; background runs equal shares, the odd worker turning
round to the run that was sent fewest tasks), lends free workers to leases below
their target (and to anyone when nobody else is waiting: no worker idles while a run
has work, within the budget's capacity), and marks workers of a lease above its
target *draining*: the run sends them nothing new (``may_send``) and the worker
passes to the waiting run as soon as its batches are done (~20 ms of work, see
``processes.py``).  A run with no worker waits for one in ``lease.workers`` (in short
polls, so an interrupt or a job's cancellation gets through).  ``auto`` takes an
*exclusive* lease only when nobody else uses the pool (else it runs everything on
threads), as it always did; its run is counted in the budget as a whole.
A worker that dies or is killed after an interrupt is replaced at once in the
background (the new process boots while the user reads the error).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # registers its atexit hook first, so ours runs before it
import threading
import time

from .. import _spawn
from ..errors import MainGuardError, exit_if_bootstrapping, note_out_of_fds
from ._budget import BACKGROUND, BUDGET, WAIT_POLL
from ._worker import AT_EXIT, worker_main

__all__ = [
    "WorkerHandle",
    "WorkerPool",
    "WorkerLease",
    "acquire",
    "running",
    "shutdown",
    "MainGuardError",
    "BACKGROUND",
    "kill_busy_workers",
]
# MainGuardError and its message live in errors.py (the cluster raises them too).

_context = multiprocessing.get_context("spawn")


class WorkerHandle:
    """The caller's side of one worker: process, pipe, and what it is doing."""

    __slots__ = (
        "slot",
        "name",
        "process",
        "conn",
        "current",
        "beat",
        "last_beat",
        "last_seen",
        "outstanding",
    )

    def __init__(self, slot: int, pool_size: int = 1):
        self.slot = slot
        self.name = f"process-{slot}"
        parent_end, child_end = _context.Pipe(duplex=True)
        try:  # a failed start (no file descriptors left) leaves no pipe open
            self.current = _context.RawValue("q", -1)  # task being run, -1 when idle
            self.beat = _context.RawValue("Q", 0)  # raised by the worker's heartbeat thread
            self.process = _context.Process(
                target=worker_main,
                args=(child_end, self.current, self.name, self.beat, pool_size),
                name=f"notebook_sched-{self.name}",
                daemon=False,  # workers may start pools of their own (nested compute)
            )
            _spawn.start(self.process)
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self.last_beat = 0  # the count the caller saw last, and when (monotonic)
        self.last_seen = time.monotonic()
        self.conn = parent_end
        self.outstanding: list = []  # batch ids sent and not finished, oldest first

    def __repr__(self) -> str:
        state = "alive" if self.process.is_alive() else f"exited {self.process.exitcode}"
        return f"<WorkerHandle {self.name} pid={self.process.pid} {state}>"

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    def kill(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
        if self.process.is_alive():
            self.process.kill()
        self.process.join(2)

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``timeout``."""
        try:
            self.conn.send_bytes(_STOP)
        except OSError:
            pass
        self.process.join(timeout)
        self.kill()


_STOP = __import__("pickle").dumps(None)


class WorkerPool:
    """``size`` worker processes.  Used by one run at a time (see ``acquire``)."""

    def __init__(self, size: int):
        exit_if_bootstrapping()  # a worker importing a main script without a guard
        self.size = size
        self.workers: list[WorkerHandle] = []
        try:
            for slot in range(size):
                self.workers.append(WorkerHandle(slot, size))
        except BaseException as exc:  # stop the workers started so far
            for worker in self.workers:
                worker.kill()
            if isinstance(exc, OSError):
                note_out_of_fds(exc, "the process pool", size)
            raise
        # Guards workers, leases, owner and every lease's held/draining sets: the
        # budget's condition, so targets and held workers are read under one lock.
        self.cond = BUDGET.cond
        self.leases: list[WorkerLease] = []  # active, oldest first
        self.owner: list[WorkerLease | None] = [None] * size  # per slot

    def __repr__(self) -> str:
        return f"<WorkerPool size={self.size} workers={self.workers}>"

    def replace(self, worker: WorkerHandle) -> WorkerHandle:
        """Kill ``worker`` (if alive) and start a fresh one in its slot."""
        worker.kill()
        try:
            fresh = WorkerHandle(worker.slot, self.size)
        except OSError as exc:
            note_out_of_fds(exc, "a process-pool worker", self.size)
            raise
        with self.cond:
            self.workers[worker.slot] = fresh
        return fresh

    def replace_dead(self, lease: WorkerLease | None = None) -> None:
        """Replace dead workers that are free or ``lease``'s (not another run's)."""
        for worker in list(self.workers):
            if self.owner[worker.slot] in (None, lease) and not worker.process.is_alive():
                self.replace(worker)

    def lease(self, limit: int, exclusive: bool = False) -> WorkerLease | None:
        """A share of this pool for one run, of at most ``limit`` workers; with
        ``exclusive``, the whole pool, or None at once if another run uses it (an
        exclusive lease is ``auto``'s, counted in the budget by its run)."""
        # Joined before taking cond (the budget's own lock); an exclusive lease's
        # member is detached, so there is nothing to leave when it is refused.
        member = BUDGET.join(limit, BACKGROUND.get(), counted=not exclusive)
        with self.cond:
            if exclusive and self.leases:
                return None
            lease = WorkerLease(self, limit, exclusive, member)
            self.leases.append(lease)
        self.replace_dead(lease)
        return lease

    def release(self, lease: WorkerLease) -> None:
        with self.cond:
            if lease in self.leases:
                self.leases.remove(lease)
            for slot, owner in enumerate(self.owner):
                if owner is lease:
                    self.owner[slot] = None
            lease.held.clear()
            lease.draining.clear()
            lease.member.busy = 0
            self.cond.notify_all()
        lease.member.leave()

    def targets(self) -> tuple[dict, dict]:
        """Each lease's fair number of workers now, and the budget's targets (under
        cond): the budget's target for a lease's member; all of them for an exclusive
        lease, its limit for a nested (uncounted) one."""
        budget = BUDGET.targets()
        targets = {}
        for lease in self.leases:
            if lease.exclusive:
                return {other: (self.size if other is lease else 0) for other in self.leases}, {}
            member = lease.member
            targets[lease] = budget[member] if member.budget is not None else lease.limit
        return targets, budget

    def rebalance(self, lease: WorkerLease) -> list[WorkerHandle]:
        """``lease``'s workers after giving back and taking its share (under cond)."""
        targets, budget = self.targets()
        mine = targets.get(lease, 0)
        workers = self.workers
        gave_back = False
        for slot in list(lease.draining):  # once draining, a worker goes (no flip-flop)
            if not workers[slot].outstanding:
                lease.draining.discard(slot)
                lease.held.discard(slot)
                self.owner[slot] = None
                self.cond.notify_all()
                gave_back = True
        starving = self._starving(lease, targets, budget)
        keep = len(lease.held) - len(lease.draining)
        if starving and gave_back:
            pass  # what it gave back goes to the run waiting for it, not back to itself
        elif starving and keep > mine:
            # Give back the workers with least in flight first (they free soonest).
            in_flight = lambda slot: len(workers[slot].outstanding)  # noqa: E731
            for slot in sorted(lease.held - lease.draining, key=in_flight):
                if keep <= mine:
                    break
                if workers[slot].outstanding:
                    lease.draining.add(slot)
                else:
                    lease.held.discard(slot)
                    self.owner[slot] = None
                    self.cond.notify_all()
                keep -= 1
        elif keep < lease.limit:
            # Free workers: up to the share, or beyond it when nobody else waits, and
            # never past the budget's capacity (threads runs count there too).
            allowed = min(lease.limit if not starving else mine, self._room(lease))
            for slot, owner in enumerate(self.owner):
                if keep >= allowed:
                    break
                if owner is None:
                    self.owner[slot] = lease
                    lease.held.add(slot)
                    keep += 1
        self._account(lease, mine)
        return [workers[slot] for slot in sorted(lease.held)]

    def _starving(self, lease: WorkerLease, targets: dict, budget: dict) -> bool:
        """Does another run wait for a slot it is owed: a lease below its target, a
        threads run or an ``auto`` run of the budget (under cond)?"""
        if any(len(o.held) < targets[o] for o in self.leases if o is not lease):
            return True
        return bool(budget) and BUDGET.others_waiting(lease.member, budget)

    def _room(self, lease: WorkerLease) -> int:
        """Slots of the budget no other member holds (under cond)."""
        if lease.member.budget is None:
            return self.size
        others = sum(m.load() for m in BUDGET.members if m is not lease.member)
        return max(0, BUDGET.capacity() - others)

    def _account(self, lease: WorkerLease, target: int) -> None:
        """Tell the budget what ``lease`` holds and whether it wants more: below its
        target with every worker it holds busy (under cond)."""
        member = lease.member
        member.busy = len(lease.held)
        busy = all(self.workers[slot].outstanding for slot in lease.held)
        member.waiting = 1 if member.busy < target and busy else 0

    def shutdown(self) -> None:
        for worker in self.workers:
            try:
                worker.conn.send_bytes(_STOP)
            except OSError:
                pass
        for worker in self.workers:
            worker.stop(timeout=1.0)


class WorkerLease:
    """One run's share of the pool, used by the run as if it were the pool."""

    def __init__(self, pool: WorkerPool, limit: int, exclusive: bool, member):
        self.pool = pool
        self.limit = max(1, min(limit, pool.size))
        self.exclusive = exclusive
        self.member = member  # the run's account in the budget (_budget.py)
        self.background = member.background
        self.held: set[int] = set()  # slots lent to this run
        self.draining: set[int] = set()  # slots to give back once their batches are done
        self.broken = False  # a wait for a worker was interrupted: never wait again
        self.thread = threading.get_ident()  # the run's thread (a job cancels by it)

    def __repr__(self) -> str:
        kind = "background" if self.background else "foreground"
        return f"<WorkerLease {kind} held={sorted(self.held)} limit={self.limit}>"

    @property
    def size(self) -> int:
        return self.pool.size

    @property
    def workers(self) -> list[WorkerHandle]:
        """The workers lent to this run now (waits while it has none and no work out)."""
        pool = self.pool
        with pool.cond:
            try:
                while True:
                    workers = pool.rebalance(self)
                    if workers or self.broken:
                        return workers
                    pool.cond.wait(WAIT_POLL)
            except BaseException:
                self.broken = True  # interrupted: the run's cleanup must not wait here
                raise

    def sent(self, tasks: int) -> None:
        """Count ``tasks`` sent for the budget's turns (only this run's thread writes)."""
        self.member.served += tasks

    def may_send(self, worker: WorkerHandle) -> bool:
        """False for a worker being given back to another run."""
        return worker.slot not in self.draining

    def replace(self, worker: WorkerHandle) -> WorkerHandle:
        return self.pool.replace(worker)

    def replace_dead(self) -> None:
        self.pool.replace_dead(self)

    def release(self) -> None:
        self.pool.release(self)

    def __enter__(self) -> WorkerLease:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


# Guards _pool.  Runs hold leases on the pool (see WorkerLease).
_registry_lock = threading.Lock()
_pool: WorkerPool | None = None


def acquire(size: int) -> WorkerPool:
    """The shared pool with ``size`` workers, started or resized as needed."""
    global _pool
    with _registry_lock:
        if _pool is not None and _pool.size != size:
            with _pool.cond:
                busy = bool(_pool.leases)
            if busy:
                return _pool  # in use: share it (the lease caps this run at ``size``)
            _pool.shutdown()
            _pool = None
        if _pool is None:
            _pool = WorkerPool(size)
        return _pool


def running(size: int) -> bool:
    """True when the shared pool's ``size`` workers are already started: ``acquire``
    would start none (``auto`` weighs a pool's start before it takes one)."""
    with _registry_lock:
        return _pool is not None and _pool.size == size


def kill_busy_workers(thread_ident: int | None) -> None:
    """Kill the workers busy with runs of thread ``thread_ident`` (a cancelled background
    job: the run's interrupt path then replaces them)."""
    pool = _pool
    if pool is None or thread_ident is None:
        return
    with pool.cond:
        busy = [
            pool.workers[slot]
            for lease in pool.leases
            if lease.thread == thread_ident
            for slot in lease.held
            if pool.workers[slot].outstanding
        ]
    for worker in busy:
        if worker.process.is_alive():
            worker.process.kill()


def shutdown() -> None:
    """Stop the shared pool's workers (at exit, or to free their memory)."""
    global _pool
    with _registry_lock:
        if _pool is not None:
            _pool.shutdown()
            _pool = None


# atexit runs hooks last-registered-first: ours must stop the (non-daemon) workers
# before multiprocessing's own hook joins them, or exit would wait forever.
atexit.register(shutdown)
AT_EXIT.append(shutdown)  # a worker process leaving stops the pool a task started
