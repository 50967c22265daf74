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
~100 ms start-up; it is replaced when ``num_workers`` changes and shut down at exit.
A worker that dies or is killed after an interrupt is replaced at once in the
background (the new process boots while the user reads the error).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # registers its atexit hook first, so ours runs before it
import threading
import time

from ..errors import MAIN_GUARD_EXIT, MainGuardError
from ._worker import AT_EXIT, worker_main

__all__ = ["WorkerHandle", "WorkerPool", "acquire", "shutdown", "MainGuardError"]
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
        self.current = _context.RawValue("q", -1)  # task being run, -1 when idle
        self.beat = _context.RawValue("Q", 0)  # raised by the worker's heartbeat thread
        self.last_beat = 0  # the count the caller saw last, and when (monotonic)
        self.last_seen = time.monotonic()
        self.process = _context.Process(
            target=worker_main,
            args=(child_end, self.current, self.name, self.beat, pool_size),
            name=f"notebook_sched-{self.name}",
            daemon=False,  # workers may start pools of their own (nested compute)
        )
        self.process.start()
        child_end.close()
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
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # We are a worker being bootstrapped and the parent's main script is
            # computing at import time: leave quietly; the parent explains.
            raise SystemExit(MAIN_GUARD_EXIT)
        self.size = size
        self.workers = [WorkerHandle(slot, size) for slot in range(size)]
        self.lock = threading.Lock()  # held by the run using the pool

    def __repr__(self) -> str:
        return f"<WorkerPool size={self.size} workers={self.workers}>"

    def replace(self, worker: WorkerHandle) -> WorkerHandle:
        """Kill ``worker`` (if alive) and start a fresh one in its slot."""
        worker.kill()
        fresh = WorkerHandle(worker.slot, self.size)
        self.workers[worker.slot] = fresh
        return fresh

    def replace_dead(self) -> None:
        for worker in list(self.workers):
            if not worker.process.is_alive():
                self.replace(worker)

    def shutdown(self) -> None:
        for worker in self.workers:
            try:
                worker.conn.send_bytes(_STOP)
            except OSError:
                pass
        for worker in self.workers:
            worker.stop(timeout=1.0)


# Guards _pool.  A run holds its pool's own lock for its duration.
_registry_lock = threading.Lock()
_pool: WorkerPool | None = None


def acquire(size: int) -> WorkerPool:
    """The shared pool with ``size`` workers, started or resized as needed."""
    global _pool
    with _registry_lock:
        if _pool is not None and _pool.size != size:
            with _pool.lock:
                _pool.shutdown()
            _pool = None
        if _pool is None:
            _pool = WorkerPool(size)
        return _pool


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
